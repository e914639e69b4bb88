import { statSync } from 'node:fs';
import { ImageError, parseElf, type Image, MAX_IMAGE_BYTES } from './elf.js';
import { fileKind, NotRegularFileError, readRegularFile } from './regular-file.js';
import { crypto } from '../sys/builtins.js';

/**
 * Parsed images, keyed by path and revalidated by size and mtime, so that
 * running an image again only copies its segments.
 */
export class ImageCache {
  private readonly cache = new Map<string, { key: string; image: Image; sha256?: string }>();
  constructor(private readonly capacity = 64) {}

  /** SHA-256 of an image file (the identity a snapshot records), null if it cannot be read. */
  sha256(path: string): string | null {
    try {
      this.get(path);
      const hit = this.cache.get(path)!;
      hit.sha256 ??= crypto().createHash('sha256').update(readRegularFile(path)).digest('hex');
      return hit.sha256;
    } catch {
      return null;
    }
  }

  get(path: string): Image {
    let st;
    try {
      st = statSync(path);
    } catch (err) {
      throw new ImageError(path, 'file', (err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : String(err));
    }
    if (!st.isFile()) throw new ImageError(path, 'file', `is ${fileKind(st)}, not a regular file`);
    if (st.size > MAX_IMAGE_BYTES) throw new ImageError(path, 'file', `${st.size} bytes is more than the ${MAX_IMAGE_BYTES} allowed`);
    const key = `${st.size}:${st.mtimeMs}:${st.ino}`;
    const hit = this.cache.get(path);
    if (hit && hit.key === key) {
      this.cache.delete(path);
      this.cache.set(path, hit);
      return hit.image;
    }
    let bytes: Uint8Array;
    try {
      // Never a FIFO or a device swapped in after the stat: its open would wait, or have effects (readRegularFile).
      bytes = new Uint8Array(readRegularFile(path, MAX_IMAGE_BYTES));
    } catch (err) {
      if (err instanceof NotRegularFileError) throw new ImageError(path, 'file', `is ${err.kind}, not a regular file`);
      // A read error says its errno only (EIO from /proc/self/mem): the path and field go with it.
      throw new ImageError(path, 'file', `cannot be read: ${(err as Error).message}`);
    }
    if (bytes.length > MAX_IMAGE_BYTES) throw new ImageError(path, 'file', `${bytes.length} bytes is more than the ${MAX_IMAGE_BYTES} allowed`);
    const image = parseElf(path, bytes);
    this.cache.set(path, { key, image });
    if (this.cache.size > this.capacity) this.cache.delete(this.cache.keys().next().value!);
    return image;
  }
}
