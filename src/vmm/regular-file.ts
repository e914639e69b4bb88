// Files a caller names (snapshot, image and disk paths of the API and the
// command line) may be anything: a FIFO, a directory, a device node, a
// symlink someone planted. They are read and written here only as the regular files they
// claim to be (issue 10 F3, F4, F8). A read never blocks on a FIFO and
// does not open a device it is pointed at (opening one can have effects: a
// watchdog arms, a tape rewinds); a write never follows a link nor
// replaces what is not a regular file.
import { closeSync, constants as fsc, fstatSync, lstatSync, openSync, read, readSync, renameSync, statSync, unlinkSync, writevSync, type Stats } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { FieldError } from './field-error.js';
import { crypto } from '../sys/builtins.js';

/** A path that names something other than a regular file. */
export class NotRegularFileError extends FieldError {
  declare readonly file: string;
  constructor(file: string, readonly kind: string) {
    super('file', `is ${kind}, not a regular file`, { file, message: `${file} is ${kind}, not a regular file` });
    this.name = 'NotRegularFileError';
  }
}

/** What a file is, in words. */
export function fileKind(st: Stats): string {
  if (st.isFile()) return 'a regular file';
  if (st.isDirectory()) return 'a directory';
  if (st.isSymbolicLink()) return 'a symlink';
  if (st.isFIFO()) return 'a FIFO';
  if (st.isSocket()) return 'a socket';
  if (st.isCharacterDevice()) return 'a character device';
  if (st.isBlockDevice()) return 'a block device';
  return 'of an unknown type';
}

// O_NONBLOCK: an open of a FIFO that slipped in after the stat returns at
// once instead of waiting for a writer (the fstat then refuses it); on a
// regular file it changes nothing. O_NOCTTY: a terminal never becomes ours.
// (libuv adds O_CLOEXEC to every open.)
const OPEN_FLAGS = fsc.O_NONBLOCK | fsc.O_NOCTTY;

function mustBeRegular(file: string, st: Stats): void {
  if (!st.isFile()) throw new NotRegularFileError(file, fileKind(st));
}

/**
 * Opens a regular file (a symlink to one is followed), for reading or, with
 * 'r+', reading and writing (a disk), without ever waiting on what is not
 * one: stat first, so a device or a FIFO the path names is not opened, then fstat of what was opened, so one swapped
 * in between (the race the stat alone would lose) is refused too, its
 * open having returned at once (O_NONBLOCK). Metadata calls
 * only, none of which waits for a peer: the daemon's thread may make them.
 * The caller reads (asynchronously, on that thread) and closes.
 */
export function openRegularFile(file: string, access: 'r' | 'r+' = 'r'): { fd: number; size: number } {
  mustBeRegular(file, statSync(file));
  const fd = openSync(file, OPEN_FLAGS | (access === 'r' ? fsc.O_RDONLY : fsc.O_RDWR));
  try {
    const st = fstatSync(fd);
    mustBeRegular(file, st);
    return { fd, size: st.size };
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

const readAsync = promisify(read);

/**
 * Reads up to length bytes at position, on the thread pool, so that the
 * caller's thread answers other work meanwhile (a slow disk or a FUSE file
 * may take its time). One trip: a regular file reads short only at its end.
 * Returns how many bytes there were.
 */
export async function readAt(fd: number, buf: Buffer, length: number, position: number): Promise<number> {
  return (await readAsync(fd, buf, 0, length, position)).bytesRead;
}

/** The whole of a regular file, read synchronously (an executor's thread: it reads in its own time, never a FIFO's). */
export function readRegularFile(file: string, maxBytes = 1 << 30): Buffer {
  const { fd, size } = openRegularFile(file);
  try {
    // procfs and sysfs files say size 0 and still have content (or fail with
    // their own errno, as /proc/<pid>/mem's EIO): read those to their end.
    if (size === 0) return readToEnd(fd, maxBytes);
    const buf = Buffer.allocUnsafe(size);
    let got = 0;
    while (got < buf.length) {
      const n = readSync(fd, buf, got, buf.length - got, got);
      if (n === 0) throw new Error(`${file}: ended after ${got} of its ${buf.length} bytes (it shrank while read)`);
      got += n;
    }
    return buf;
  } finally {
    closeSync(fd);
  }
}

/** Reads until EOF, at most maxBytes + 1 bytes (so a caller sees it was too large). */
function readToEnd(fd: number, maxBytes: number): Buffer {
  const parts: Buffer[] = [];
  let got = 0;
  while (got <= maxBytes) {
    const chunk = Buffer.allocUnsafe(Math.min(64 * 1024, maxBytes + 1 - got));
    const n = readSync(fd, chunk, 0, chunk.length, got);
    if (n === 0) break;
    parts.push(chunk.subarray(0, n));
    got += n;
  }
  return Buffer.concat(parts, got);
}

/** errno and text of a failed call, with the caller's path instead of an internal one. */
function failure(file: string, what: string, err: unknown): Error {
  const e = err as NodeJS.ErrnoException;
  const out = new Error(`${file}: ${what}: ${e.code ?? e.message}${e.code ? ` (${reason(e.code)})` : ''}`) as NodeJS.ErrnoException;
  if (e.code) out.code = e.code;
  return out;
}

const REASONS: Record<string, string> = {
  ENOENT: 'no such directory', ENOTDIR: 'a part of the path is not a directory', EACCES: 'permission denied', EROFS: 'read-only file system',
  ENOSPC: 'no space left on the device', EDQUOT: 'disk quota exceeded', EIO: 'I/O error', EISDIR: 'is a directory', ENAMETOOLONG: 'name too long',
};
const reason = (code: string): string => REASONS[code] ?? 'failed';

/**
 * Writes a file whole or not at all, private (0600): a new file of a
 * random name in the target's directory, created with O_EXCL | O_NOFOLLOW
 * (nothing already there, a planted symlink or FIFO included, is opened),
 * then renamed over the target. A target that exists and is not a regular
 * file (a FIFO, a device node, a directory, a symlink) is refused, not
 * replaced. Between that check and the rename another writer of the
 * directory could put something else there: the rename then replaces that
 * name, never writes into what it named.
 * One writev per at most IOV_MAX parts; a short write goes on where it stopped.
 */
export function writeFileReplacing(file: string, parts: Buffer[]): void {
  let existing: Stats | undefined;
  try {
    existing = lstatSync(file);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw failure(file, 'cannot be looked at', err);
  }
  if (existing) mustBeRegular(file, existing);
  const dir = dirname(file);
  // Short enough for NAME_MAX whatever the target's name; hidden, and plainly temporary.
  const tmp = join(dir, `.${basename(file).slice(0, 64)}.tmp-${crypto().randomBytes(8).toString('hex')}`);
  let fd: number;
  try {
    fd = openSync(tmp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, 0o600);
  } catch (err) {
    throw failure(file, `cannot create a file in ${dir}`, err);
  }
  try {
    try {
      writeAll(fd, parts);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (err) {
    try {
      unlinkSync(tmp);
    } catch {
      // Already gone.
    }
    throw failure(file, 'cannot be written', err);
  }
}

function writeAll(fd: number, parts: Buffer[]): void {
  let left = parts.reduce((n, b) => n + b.length, 0);
  let todo = parts;
  while (left > 0) {
    // writev may write less than asked (a full disk, a signal): go on from where it stopped.
    let done = writevSync(fd, todo);
    if (done === 0) throw new Error('nothing written');
    left -= done;
    const rest: Buffer[] = [];
    for (const b of todo) {
      if (done >= b.length) done -= b.length;
      else {
        rest.push(done > 0 ? b.subarray(done) : b);
        done = 0;
      }
    }
    todo = rest;
  }
}
