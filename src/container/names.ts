// VM names for containers. Container ids are up to 64 hex characters and
// unique only per namespace (containerd) or state root (an OCI runtime); VM
// names are at most 63 characters, unique per daemon.
import { createHash } from 'node:crypto';

/** "c-" and 24 hex digits of sha256("<scope>/<id>"): fixed length, one per container. */
export function vmNameFor(scope: string, id: string): string {
  return `c-${createHash('sha256').update(`${scope}/${id}`).digest('hex').slice(0, 24)}`;
}
