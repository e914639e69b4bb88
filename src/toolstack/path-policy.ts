// Which host files a daemon's API may have it read or write: those under a
// few directories it was configured with. The daemon runs as root; without
// this, any caller of its socket could have it save a snapshot over
// /etc/shadow or boot /etc/passwd as a disk. The in-process library is not
// confined: its user acts with their own rights.
//
// A path is judged by its real path (symlinks resolved), and the real path
// is what the daemon then opens, so that a symlink inside a root that points
// out of it is refused, not followed. What remains is a race: someone who
// may write inside a root can swap a directory on that real path for a
// symlink between the check and the open. Closing it needs every open to
// walk the path itself (openat2 with RESOLVE_BENEATH); until then, allow
// only directories that untrusted users cannot write in.
import { realpathSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { DeviceEntry } from '../vmm/device-page.js';
import { FieldError } from '../vmm/field-error.js';

/** A path outside every allowed root; field names the request's field. */
export class PathRefusedError extends FieldError {
  constructor(field: string, message: string) {
    super(field, message, { message });
    this.name = 'PathRefusedError';
  }
}

/**
 * The real path of `path`: of the file if it exists, else of its nearest
 * existing ancestor with the rest appended (a save target that does not
 * exist yet).
 */
export function realOf(path: string): string {
  let rest = '';
  // Not normalized first: "link/.." is the parent of the link's target, as open() sees it.
  let p = isAbsolute(path) ? path : `${process.cwd()}/${path}`;
  for (;;) {
    try {
      const real = realpathSync.native(p);
      // What follows a missing directory cannot be opened: taken as written.
      return rest ? resolve(real, rest) : real;
    } catch {
      const up = dirname(p);
      if (up === p) return resolve(path);
      rest = rest ? join(basename(p), rest) : basename(p);
      p = up;
    }
  }
}

/** Whether `real` is `root` or lies under it (a name such as "..x" inside it included). */
export function inside(root: string, real: string): boolean {
  const rel = relative(root, real);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel));
}

export interface PathRoot {
  dir: string;
  /** Where the root comes from, for errors: "runtime directory", "--allow-path". */
  what: string;
  /** Skipped if missing (the built-in images before a build) rather than refused. */
  optional?: boolean;
}

export class PathPolicy {
  /** The allowed directories, symlinks resolved (once, at start). */
  readonly roots: readonly string[];

  constructor(roots: readonly PathRoot[]) {
    const out: string[] = [];
    for (const r of roots) {
      let real: string;
      try {
        real = realpathSync.native(r.dir);
      } catch (err) {
        if (r.optional) continue;
        throw new Error(`${r.what} ${r.dir}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such directory' : (err as Error).message}`, { cause: err });
      }
      if (!statSync(real).isDirectory()) throw new Error(`${r.what} ${r.dir}: not a directory`);
      if (!out.includes(real)) out.push(real);
    }
    this.roots = out;
  }

  /**
   * The real path of `path` if it lies inside a root; else throws
   * PathRefusedError naming the field, the path and the roots. Where a
   * symlink leads is not said: the caller may not be allowed to know.
   */
  check(path: string, field: string, what = ''): string {
    const real = realOf(path);
    if (this.roots.some((root) => inside(root, real))) return real;
    const how = real === resolve(path) ? 'is' : 'leads (through a symlink)';
    throw new PathRefusedError(field, `${field}: ${what}${path} ${how} outside the directories this daemon may use ` +
      `(${this.roots.join(', ')}): start it with --allow-path DIR to add one`);
  }

  /** The devices, each block device's disk checked and named by its real path. */
  checkDevices(devices: readonly DeviceEntry[], what = ''): DeviceEntry[] {
    return devices.map((d, i) => d.type === 'block' && typeof d.path === 'string' && d.path
      ? { ...d, path: this.check(d.path, `devices.${i}.path`, what) }
      : d);
  }
}
