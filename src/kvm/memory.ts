import * as libc from '../sys/libc.js';
import { GuestAddressError } from './errors.js';

export const PAGE_SIZE = 4096;

/**
 * Anonymous host memory that backs guest RAM. MAP_NORESERVE: only pages the
 * guest or the host touches cost anything. Every access is bounds-checked.
 */
export class GuestMemory {
  readonly size: number;
  readonly hostAddress: bigint;
  /** Zero-copy view of the whole region; invalid after close(). */
  readonly bytes: Uint8Array;
  readonly view: DataView;
  private readonly ptr: libc.Pointer | bigint;
  private closed = false;

  /** hostAddress: memory another thread of this process mapped (ownership moves here). */
  constructor(size: number, hostAddress?: bigint) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`guest memory size must be a positive multiple of ${PAGE_SIZE}, got ${size}`);
    }
    this.size = size;
    this.ptr = hostAddress ?? libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE);
    this.hostAddress = hostAddress ?? libc.address(this.ptr);
    const ab = libc.view(this.ptr, size);
    this.bytes = new Uint8Array(ab);
    this.view = new DataView(ab);
  }

  /** True if [gpa, gpa+len) lies inside this memory (offsets from its start). */
  contains(offset: number, len: number): boolean {
    return Number.isSafeInteger(offset) && Number.isSafeInteger(len) && offset >= 0 && len >= 0 && offset + len <= this.size;
  }

  check(offset: number, len: number): void {
    if (!this.contains(offset, len)) throw new GuestAddressError(offset, len, this.size);
  }

  /** A zero-copy window on [offset, offset+len), bounds-checked. */
  slice(offset: number, len: number): Uint8Array {
    this.check(offset, len);
    return this.bytes.subarray(offset, offset + len);
  }

  /** Gives pages back to the kernel: they read as zero afterwards. */
  discard(offset = 0, len = this.size): void {
    this.check(offset, len);
    if (len === 0) return;
    libc.madvise(this.hostAddress + BigInt(offset), len, libc.MADV_DONTNEED);
  }

  /** Which pages the host has backed (touched at least once), one flag per page. */
  residentMap(): Uint8Array {
    return libc.residentMap(this.hostAddress, this.size);
  }

  /** Bytes of this memory the host has actually backed with pages. */
  residentBytes(): number {
    return libc.residentPages(this.hostAddress, this.size) * PAGE_SIZE;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.ptr, this.size);
  }
}
