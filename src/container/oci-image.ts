// An OCI image archive holding one unikernel: an OCI layout (oci-layout,
// index.json, blobs) plus docker-archive's manifest.json, in one tar, so that
// `podman load`, `docker load` and `ctr image import` all take it. One
// uncompressed layer with the ELF at /unikernel.elf; the ENTRYPOINT points at it.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { checkElf } from './bundle.js';

const BLOCK = 512;

/** One ustar entry (a regular file, or a directory when the name ends in /) and its data, padded to the block size. */
function tarEntry(name: string, data: Uint8Array, mode: number, mtime: number): Buffer {
  if (Buffer.byteLength(name) > 99) throw new Error(`tar: entry name "${name}" is longer than 99 bytes`);
  const h = Buffer.alloc(BLOCK);
  const octal = (v: number, width: number, at: number): void => void h.write(`${v.toString(8).padStart(width - 1, '0')}\0`, at, 'ascii');
  h.write(name, 0, 'utf8');
  octal(mode, 8, 100);
  octal(0, 8, 108);
  octal(0, 8, 116);
  octal(data.length, 12, 124);
  octal(mtime, 12, 136);
  h.write('        ', 148, 'ascii');
  h.write(name.endsWith('/') ? '5' : '0', 156, 'ascii');
  h.write('ustar\0', 257, 'ascii');
  h.write('00', 263, 'ascii');
  h.write('root', 265, 'ascii');
  h.write('root', 297, 'ascii');
  let sum = 0;
  for (const b of h) sum += b;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 'ascii');
  const pad = (BLOCK - (data.length % BLOCK)) % BLOCK;
  return Buffer.concat([h, data, Buffer.alloc(pad)]);
}

export function tar(entries: { name: string; data: Uint8Array; mode?: number }[], mtime = 0): Buffer {
  return Buffer.concat([...entries.map((e) => tarEntry(e.name, e.data, e.mode ?? 0o644, mtime)), Buffer.alloc(2 * BLOCK)]);
}

const sha256 = (b: Uint8Array): string => createHash('sha256').update(b).digest('hex');

export interface ImageBuild {
  /** The unikernel's host path. */
  kernel: string;
  /** NAME:TAG, e.g. lightvm/hello:1 (docker.io/ is what ctr and docker show it under). */
  tag: string;
  /** Default guest command line (the image's CMD). */
  cmd?: string[];
  /** Where the file goes in the rootfs and the ENTRYPOINT (default /unikernel.elf). */
  path?: string;
}

/** The archive's bytes, and the digests in it. */
export function buildImage(b: ImageBuild): { archive: Buffer; manifestDigest: string; ref: string } {
  if (!/^[a-z0-9]+([._-][a-z0-9]+)*(\/[a-z0-9]+([._-][a-z0-9]+)*)*:[\w][\w.-]{0,127}$/.test(b.tag)) {
    throw new Error(`-t: "${b.tag}" is not NAME:TAG (lower-case name parts separated by /, a tag of letters, digits, _ . -)`);
  }
  checkElf(b.kernel, `image: ${b.kernel}`);
  const path = b.path ?? '/unikernel.elf';
  if (!/^(\/[\w.-]+)+$/.test(path) || path.split('/').some((p) => p === '..')) throw new Error(`path: "${path}" is not an absolute path of plain names`);
  const parts = path.slice(1).split('/');
  const dirs = parts.slice(0, -1).map((_, i) => ({ name: `${parts.slice(0, i + 1).join('/')}/`, data: new Uint8Array(0), mode: 0o755 }));
  const layer = tar([...dirs, { name: path.slice(1), data: readFileSync(b.kernel), mode: 0o755 }]);
  const layerDigest = sha256(layer);
  const config = Buffer.from(JSON.stringify({
    architecture: 'amd64',
    os: 'linux',
    config: { Entrypoint: [path], ...(b.cmd?.length ? { Cmd: b.cmd } : {}), Labels: { 'org.lightvm.kernel': path } },
    rootfs: { type: 'layers', diff_ids: [`sha256:${layerDigest}`] },
    history: [{ created_by: 'lightvm image build' }],
  }));
  const configDigest = sha256(config);
  const manifest = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: `sha256:${configDigest}`, size: config.length },
    layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar', digest: `sha256:${layerDigest}`, size: layer.length }],
  }));
  const manifestDigest = sha256(manifest);
  const [name, tagPart] = [b.tag.slice(0, b.tag.lastIndexOf(':')), b.tag.slice(b.tag.lastIndexOf(':') + 1)];
  const ref = `${name.includes('/') && name.split('/')[0]!.includes('.') ? '' : 'docker.io/'}${name.includes('/') ? '' : 'library/'}${name}:${tagPart}`;
  const index = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    manifests: [{
      mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: `sha256:${manifestDigest}`, size: manifest.length,
      annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': tagPart },
    }],
  }));
  const dockerManifest = Buffer.from(JSON.stringify([{
    Config: `blobs/sha256/${configDigest}`, RepoTags: [b.tag], Layers: [`blobs/sha256/${layerDigest}`],
  }]));
  const archive = tar([
    { name: 'oci-layout', data: Buffer.from(JSON.stringify({ imageLayoutVersion: '1.0.0' })) },
    { name: 'index.json', data: index },
    { name: 'manifest.json', data: dockerManifest },
    { name: `blobs/sha256/${layerDigest}`, data: layer },
    { name: `blobs/sha256/${configDigest}`, data: config },
    { name: `blobs/sha256/${manifestDigest}`, data: manifest },
  ]);
  return { archive, manifestDigest: `sha256:${manifestDigest}`, ref };
}
