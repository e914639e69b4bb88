// The initramfs format Linux unpacks: cpio "newc" (magic 070701), each entry
// a 110-byte ASCII header, the name and the data each padded to 4 bytes,
// ended by "TRAILER!!!". Small enough to write here; the npm cpio packages
// are unmaintained stream parsers.
import { execFileSync } from 'node:child_process';

export interface CpioEntry {
  /** Path inside the image, without a leading slash ("bin/busybox"). */
  path: string;
  kind: 'file' | 'dir' | 'symlink' | 'chardev';
  mode: number;
  /** File contents, or a symlink's target. */
  data?: Buffer | string;
  /** chardev: major and minor numbers. */
  rdev?: [number, number];
}

const TYPE = { file: 0o100000, dir: 0o040000, symlink: 0o120000, chardev: 0o020000 } as const;

const pad4 = (n: number): Buffer => Buffer.alloc((4 - (n % 4)) % 4);
const hex8 = (n: number): string => n.toString(16).padStart(8, '0');

function header(ino: number, mode: number, size: number, name: string, rdev: [number, number] = [0, 0]): Buffer {
  const fields = [ino, mode, 0, 0, 1, 0, size, 0, 0, rdev[0], rdev[1], Buffer.byteLength(name) + 1, 0];
  return Buffer.from(`070701${fields.map(hex8).join('')}`, 'latin1');
}

/** The archive, uncompressed; entries are written in the order given (parents first). */
export function cpioNewc(entries: CpioEntry[]): Buffer {
  const parts: Buffer[] = [];
  let off = 0;
  const push = (b: Buffer): void => {
    parts.push(b);
    off += b.length;
  };
  const put = (ino: number, mode: number, name: string, data: Buffer, rdev?: [number, number]): void => {
    push(header(ino, mode, data.length, name, rdev));
    push(Buffer.from(`${name}\0`, 'utf8'));
    push(pad4(off));
    push(data);
    push(pad4(off));
  };
  entries.forEach((e, i) => {
    if (e.path.startsWith('/') || e.path.split('/').includes('..')) throw new Error(`initramfs entry "${e.path}": not a relative path inside the image`);
    const data = e.data === undefined ? Buffer.alloc(0) : Buffer.isBuffer(e.data) ? e.data : Buffer.from(e.data, 'utf8');
    put(i + 1, TYPE[e.kind] | (e.mode & 0o7777), e.path, e.kind === 'dir' || e.kind === 'chardev' ? Buffer.alloc(0) : data, e.rdev);
  });
  put(0, 0, 'TRAILER!!!', Buffer.alloc(0));
  return Buffer.concat(parts);
}

/**
 * The archive xz-compressed as the kernel's RD_XZ unpacks it (CRC32 check:
 * the kernel's decoder has no CRC64). xz takes a quarter off gzip -9 here;
 * Node has no xz encoder and the npm ones are native builds, so xz-utils
 * (which Debian always has, and the kernel build uses) does it.
 */
export function initramfs(entries: CpioEntry[], level = 9): Buffer {
  // the kernel allocates the whole dictionary while it unpacks: 2 MiB, not the preset's up to 64 MiB
  return execFileSync('xz', ['--check=crc32', `--lzma2=preset=${level},dict=2MiB`, '-T1', '-c'], { input: cpioNewc(entries), maxBuffer: 1 << 30 });
}
