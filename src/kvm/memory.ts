import * as libc from '../sys/libc.js';
import { GuestAddressError } from './errors.js';

export const PAGE_SIZE = 4096;

const MIB = 1024 * 1024;
/** The largest single view of memory koffi makes. */
const MAX_ARENA_BYTES = 4096 * MIB;
/** Shared state words: [0] lock, [1] where the next search starts. */
const LOCK = 0;
const CURSOR = 1;

/** What another thread of this process needs to use an arena. */
export interface ArenaShare {
  base: bigint;
  bytes: number;
  unit: number;
  state: SharedArrayBuffer;
}

/**
 * One large mapping from which the guest memory of many VMs is carved.
 *
 * Why: a view of memory is an ArrayBuffer, and V8 counts every ArrayBuffer's
 * bytes as external memory. An executor that makes a 4 MiB view per VM
 * pushes V8 past its external-memory limit every ~16 VMs, and each time it
 * runs a full collection over a heap that grows with the VMs held (measured:
 * a quarter of an executor thread's CPU, and as much again in GC helper
 * threads). An arena is one view per thread, made once; each VM's memory is
 * a window on it, which costs V8 nothing.
 *
 * The mapping is anonymous, read-write and MAP_NORESERVE, so untouched
 * pages cost nothing and it stays one VMA (KVM_CREATE_VM walks every VMA of
 * the process). Threads of one process share it; a lock word in shared
 * memory guards the map of which MiB are in use. Released memory is given
 * back to the kernel at once (MADV_DONTNEED): the next VM reads zeros.
 */
export class GuestArena {
  readonly base: bigint;
  /** Its size, and the grain it hands out (whole units). */
  readonly bytes: number;
  readonly unit: number;
  private readonly units: number;
  private readonly state: SharedArrayBuffer;
  private readonly words: Int32Array;
  /** One byte per unit: 1 in use, 0 free. */
  private readonly used: Uint8Array;
  private readonly buffer: ArrayBuffer;
  private readonly owner: boolean;
  private closed = false;

  private constructor(share: ArenaShare, owner: boolean) {
    this.base = share.base;
    this.bytes = share.bytes;
    this.unit = share.unit;
    this.units = share.bytes / share.unit;
    this.state = share.state;
    this.words = new Int32Array(share.state, 0, 2);
    this.used = new Uint8Array(share.state, 8, this.units);
    this.buffer = libc.view(share.base, share.bytes);
    this.owner = owner;
  }

  /**
   * Reserves a new arena (address space only: nothing is touched) of bytes,
   * handed out in units: by default 4 GiB in MiB, for guest RAM.
   */
  static create(bytes = MAX_ARENA_BYTES, unit = MIB): GuestArena {
    if (bytes > MAX_ARENA_BYTES || bytes % unit !== 0 || unit % PAGE_SIZE !== 0) {
      throw new RangeError(`an arena is whole pages and at most ${MAX_ARENA_BYTES / MIB} MiB, handed out in whole units (${bytes} / ${unit})`);
    }
    const p = libc.mmap(bytes, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE);
    try {
      return new GuestArena({ base: libc.address(p), bytes, unit, state: new SharedArrayBuffer(8 + bytes / unit) }, true);
    } catch (err) {
      libc.munmap(p, bytes);
      throw err;
    }
  }

  /** The arena another thread of this process created. */
  static attach(share: ArenaShare): GuestArena {
    return new GuestArena(share, false);
  }

  get share(): ArenaShare {
    return { base: this.base, bytes: this.bytes, unit: this.unit, state: this.state };
  }

  /** Takes size bytes (whole units); undefined if no room is left or size is not whole units. */
  allocate(size: number): bigint | undefined {
    if (this.closed || size <= 0 || size % this.unit !== 0 || size > this.bytes) return undefined;
    const n = size / this.unit;
    this.lock();
    try {
      // First fit from where the last search ended: constant work while the
      // arena has room, since memory is released roughly in order.
      const start = this.words[CURSOR]!;
      for (let pass = 0; pass < 2; pass++) {
        let run = 0;
        const from = pass === 0 ? start : 0;
        const to = pass === 0 ? this.units : Math.min(this.units, start + n);
        for (let i = from; i < to; i++) {
          run = this.used[i] ? 0 : run + 1;
          if (run === n) {
            const first = i - n + 1;
            this.used.fill(1, first, i + 1);
            this.words[CURSOR] = (i + 1) % this.units;
            return this.base + BigInt(first * this.unit);
          }
        }
      }
      return undefined;
    } finally {
      this.unlock();
    }
  }

  /** Gives memory back: its pages go to the kernel now, its MiB to the next VM. */
  release(address: bigint, size: number): void {
    const first = this.unitOf(address, size);
    libc.madvise(address, size, libc.MADV_DONTNEED);
    this.lock();
    this.used.fill(0, first, first + size / this.unit);
    this.unlock();
  }

  contains(address: bigint, size: number): boolean {
    return address >= this.base && address + BigInt(size) <= this.base + BigInt(this.bytes);
  }

  /** The arena's view of [address, address + size). */
  window(address: bigint, size: number): { bytes: Uint8Array; view: DataView } {
    const offset = Number(address - this.base);
    return { bytes: new Uint8Array(this.buffer, offset, size), view: new DataView(this.buffer, offset, size) };
  }

  /** Unmaps the arena (its creator, once nothing in it is used any more). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.owner) libc.munmap(this.base, this.bytes);
  }

  private unitOf(address: bigint, size: number): number {
    if (!this.contains(address, size) || size % this.unit !== 0 || (address - this.base) % BigInt(this.unit) !== 0n) {
      throw new RangeError(`0x${address.toString(16)} (+${size}) is not memory of this arena`);
    }
    return Number(address - this.base) / this.unit;
  }

  private lock(): void {
    // Held only for a short scan of the map: wait (woken by unlock) while another thread holds it.
    while (Atomics.compareExchange(this.words, LOCK, 0, 1) !== 0) Atomics.wait(this.words, LOCK, 1, 1);
  }

  private unlock(): void {
    Atomics.store(this.words, LOCK, 0);
    Atomics.notify(this.words, LOCK, 1);
  }
}

/** Bytes of a bitmap with one bit per page of size bytes (KVM's dirty log: whole 64-bit words). */
export function bitmapBytes(size: number): number {
  return Math.ceil(size / PAGE_SIZE / 64) * 8;
}

/** What another thread needs to use an executor's arenas. */
export interface ArenasShare {
  ram: ArenaShare;
  pages: ArenaShare;
}

/**
 * An executor's two arenas: guest RAM (4 GiB in MiB) and single pages such
 * as device pages (64 MiB in pages). A page mapped on its own is a VMA of
 * its own, and KVM_CREATE_VM locks every VMA of the process.
 */
export class GuestArenas {
  private constructor(readonly ram: GuestArena, readonly pages: GuestArena) {}

  static create(): GuestArenas {
    const ram = GuestArena.create();
    try {
      return new GuestArenas(ram, GuestArena.create(64 * MIB, PAGE_SIZE));
    } catch (err) {
      ram.close();
      throw err;
    }
  }

  static attach(share: ArenasShare): GuestArenas {
    return new GuestArenas(GuestArena.attach(share.ram), GuestArena.attach(share.pages));
  }

  get share(): ArenasShare {
    return { ram: this.ram.share, pages: this.pages.share };
  }

  close(): void {
    this.ram.close();
    this.pages.close();
  }
}

/**
 * Anonymous host memory that backs guest RAM. MAP_NORESERVE: only pages the
 * guest or the host touches cost anything. Every access is bounds-checked.
 * It comes from an arena when one is given and has room, else from a
 * mapping of its own.
 *
 * The host writes guest memory only through write, fill, setUint32,
 * setBigUint64 and writable, which mark the pages written in a bitmap of
 * its own (takeHostWritten). KVM's dirty log sees the guest's writes only;
 * a snapshot or a migration round that copies what was written needs both.
 */
export class GuestMemory {
  readonly size: number;
  readonly hostAddress: bigint;
  /** Zero-copy view of the whole region, for reading (writes go through write & co.); invalid after close(). */
  readonly bytes: Uint8Array;
  readonly view: DataView;
  private readonly ptr: libc.Pointer | bigint;
  private closed = false;
  /** Pages the host wrote since the last takeHostWritten(): bit p % 8 of byte p / 8, as in KVM's dirty log. */
  private hostWritten: Uint8Array;

  private readonly arena: GuestArena | undefined;

  /**
   * hostAddress: memory another thread of this process mapped or took from
   * the arena (ownership moves here).
   */
  constructor(size: number, hostAddress?: bigint, arena?: GuestArena) {
    if (!Number.isSafeInteger(size) || size <= 0 || size % PAGE_SIZE !== 0) {
      throw new RangeError(`guest memory size must be a positive multiple of ${PAGE_SIZE}, got ${size}`);
    }
    this.size = size;
    this.hostWritten = new Uint8Array(bitmapBytes(size));
    const address = hostAddress ?? arena?.allocate(size);
    if (address !== undefined && arena?.contains(address, size)) {
      this.arena = arena;
      this.ptr = address;
      this.hostAddress = address;
      ({ bytes: this.bytes, view: this.view } = arena.window(address, size));
      return;
    }
    this.ptr = address ?? libc.mmap(size, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_PRIVATE | libc.MAP_ANONYMOUS | libc.MAP_NORESERVE);
    this.hostAddress = address ?? libc.address(this.ptr);
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

  /** Copies data in at offset. */
  write(offset: number, data: Uint8Array): void {
    this.writable(offset, data.length).set(data);
  }

  fill(value: number, offset: number, len: number): void {
    this.writable(offset, len).fill(value);
  }

  setUint32(offset: number, value: number): void {
    this.markWritten(offset, 4);
    this.view.setUint32(offset, value, true);
  }

  setBigUint64(offset: number, value: bigint): void {
    this.markWritten(offset, 8);
    this.view.setBigUint64(offset, value, true);
  }

  /**
   * A window on [offset, offset+len) that the caller fills now (a read(2)
   * into it, a hypercall's results): its pages are marked written.
   */
  writable(offset: number, len: number): Uint8Array {
    this.markWritten(offset, len);
    return this.bytes.subarray(offset, offset + len);
  }

  /** The same as a DataView. */
  writableView(offset: number, len: number): DataView {
    this.markWritten(offset, len);
    return new DataView(this.bytes.buffer, this.bytes.byteOffset + offset, len);
  }

  /** The pages the host wrote since the last call (a bitmap as KVM's dirty log has it); starts a new one. */
  takeHostWritten(): Uint8Array {
    const taken = this.hostWritten;
    this.hostWritten = new Uint8Array(taken.length);
    return taken;
  }

  /** Adds pages written elsewhere (another thread wrote this memory before it was handed over). */
  addHostWritten(bitmap: Uint8Array): void {
    if (bitmap.length !== this.hostWritten.length) throw new RangeError(`a written-page bitmap of ${bitmap.length} bytes for ${this.size} bytes of memory`);
    for (let i = 0; i < bitmap.length; i++) this.hostWritten[i]! |= bitmap[i]!;
  }

  private markWritten(offset: number, len: number): void {
    this.check(offset, len);
    if (len === 0) return;
    const last = Math.floor((offset + len - 1) / PAGE_SIZE);
    for (let p = Math.floor(offset / PAGE_SIZE); p <= last; p++) this.hostWritten[p >>> 3]! |= 1 << (p & 7);
  }

  /** Gives pages back to the kernel: they read as zero afterwards. */
  discard(offset = 0, len = this.size): void {
    this.check(offset, len);
    if (len === 0) return;
    libc.madvise(this.hostAddress + BigInt(offset), len, libc.MADV_DONTNEED);
  }

  /** Bytes of this memory the host has actually backed with pages. */
  residentBytes(): number {
    return libc.residentPages(this.hostAddress, this.size) * PAGE_SIZE;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.arena) this.arena.release(this.hostAddress, this.size);
    else libc.munmap(this.ptr, this.size);
  }
}
