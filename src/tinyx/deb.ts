// Unpacks a Debian package (.deb) without dpkg: an ar archive whose
// data.tar.{xz,zst,gz} holds the files. ar is a 60-byte header per member and
// nothing else, so it is read here; tar and the compressors are libraries.
import { closeSync, fstatSync, lstatSync, mkdirSync, openSync, readFileSync, readSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join, normalize } from 'node:path';
import { Readable } from 'node:stream';
import { createGunzip } from 'node:zlib';
import { decompress as unzstd } from 'fzstd';
import { extract } from 'tar-stream';
import xz from 'xz-decompress';

const { XzReadableStream } = xz;

export class DebError extends Error {
  constructor(file: string, what: string) {
    super(`${file}: ${what}`);
  }
}

interface ArMember {
  name: string;
  offset: number;
  size: number;
}

/** The members of an ar archive (the "!<arch>\n" format dpkg writes). */
export function arMembers(file: string): ArMember[] {
  const fd = openSync(file, 'r');
  try {
    const total = fstatSync(fd).size;
    const magic = Buffer.alloc(8);
    if (readSync(fd, magic, 0, 8, 0) !== 8 || magic.toString('latin1') !== '!<arch>\n') throw new DebError(file, 'not an ar archive (no "!<arch>" magic): not a .deb');
    const out: ArMember[] = [];
    const hdr = Buffer.alloc(60);
    for (let pos = 8; pos + 60 <= total;) {
      if (readSync(fd, hdr, 0, 60, pos) !== 60) break;
      if (hdr.toString('latin1', 58, 60) !== '`\n') throw new DebError(file, `ar member header at byte ${pos} is damaged`);
      const name = hdr.toString('latin1', 0, 16).trim().replace(/\/$/, '');
      const size = Number(hdr.toString('latin1', 48, 58).trim());
      if (!Number.isSafeInteger(size) || size < 0 || pos + 60 + size > total) throw new DebError(file, `ar member "${name}" has a size (${size}) past the end of the file`);
      out.push({ name, offset: pos + 60, size });
      pos += 60 + size + (size & 1);
    }
    return out;
  } finally {
    closeSync(fd);
  }
}

function memberBytes(file: string, m: ArMember): Buffer {
  const fd = openSync(file, 'r');
  try {
    const b = Buffer.alloc(m.size);
    readSync(fd, b, 0, m.size, m.offset);
    return b;
  } finally {
    closeSync(fd);
  }
}

/** A readable of the member's tar, decompressed by its suffix. */
function tarStream(file: string, m: ArMember): Readable {
  const raw = memberBytes(file, m);
  if (m.name.endsWith('.tar')) return Readable.from([raw]);
  if (m.name.endsWith('.gz')) return Readable.from([raw]).pipe(createGunzip());
  if (m.name.endsWith('.xz')) {
    const web = new XzReadableStream(new Blob([raw]).stream() as ReadableStream<Uint8Array>);
    return Readable.fromWeb(web as import('node:stream/web').ReadableStream<Uint8Array>);
  }
  if (m.name.endsWith('.zst')) {
    return Readable.from([Buffer.from(unzstd(raw))]);
  }
  throw new DebError(file, `member ${m.name}: unknown compression`);
}

/** What was unpacked: every path (relative, "usr/sbin/nginx") and its kind. */
export type Unpacked = Map<string, 'file' | 'dir' | 'symlink'>;

/**
 * Unpacks the package's data (or control) archive under `dest`. Paths that
 * would leave `dest` (absolute, "..") are refused: a package is input.
 */
export async function unpackDeb(file: string, dest: string, part: 'data' | 'control' = 'data'): Promise<Unpacked> {
  const m = arMembers(file).find((x) => x.name.startsWith(`${part}.tar`));
  if (!m) throw new DebError(file, `no ${part}.tar.* member: not a .deb`);
  const files: Unpacked = new Map();
  mkdirSync(dest, { recursive: true });
  const root = realpathSync(dest);
  const ex = extract();
  const done = new Promise<void>((resolve, reject) => {
    ex.on('entry', (h, stream, next) => {
      const rel = normalize(h.name).replace(/^(\.\/)+|^\.$/, '').replace(/\/$/, '');
      if (rel.startsWith('..') || rel.startsWith('/')) {
        reject(new DebError(file, `entry "${h.name}" leaves the package's root`));
        return;
      }
      const chunks: Buffer[] = [];
      stream.on('data', (c: unknown) => chunks.push(c as Buffer));
      stream.on('end', () => {
        try {
          const to = join(dest, rel);
          // a symlink unpacked before must not carry a later entry out of dest
          const inside = (p: string): void => {
            mkdirSync(p, { recursive: true });
            const real = realpathSync(p);
            if (real !== root && !real.startsWith(`${root}/`)) throw new DebError(file, `entry "${h.name}" goes through a symlink out of the package's root`);
          };
          if (rel === '') {
            mkdirSync(dest, { recursive: true });
          } else if (h.type === 'directory') {
            inside(to);
            files.set(rel, 'dir');
          } else if (h.type === 'symlink') {
            inside(dirname(to));
            rmSync(to, { force: true });
            symlinkSync(h.linkname!, to);
            files.set(rel, 'symlink');
          } else if (h.type === 'file' || h.type === 'contiguous-file') {
            inside(dirname(to));
            if (lstatSync(to, { throwIfNoEntry: false })?.isSymbolicLink()) rmSync(to);
            writeFileSync(to, Buffer.concat(chunks), { mode: (h.mode ?? 0o644) & 0o7777 });
            files.set(rel, 'file');
          } else if (h.type === 'link') {
            inside(dirname(to));
            writeFileSync(to, memberOf(dest, h.linkname!));
            files.set(rel, 'file');
          }
          next();
        } catch (err) {
          reject(err as Error);
        }
      });
      stream.on('error', reject);
    });
    ex.on('finish', resolve);
    ex.on('error', (e: Error) => reject(new DebError(file, `${part} archive: ${e.message}`)));
  });
  const src = tarStream(file, m);
  src.on('error', (e: Error) => ex.destroy(new DebError(file, `${m.name}: ${e.message}`)));
  src.pipe(ex);
  await done;
  return files;
}

// A hard link's target was unpacked before it (tar order).
function memberOf(dest: string, linkname: string): Buffer {
  const rel = normalize(linkname).replace(/^(\.\/)+/, '');
  if (rel.startsWith('..') || rel.startsWith('/')) throw new Error(`hard link to "${linkname}" leaves the package's root`);
  return readFileSync(join(dest, rel));
}
