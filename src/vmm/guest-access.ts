// Checked access to one VM's guest-physical memory, as its device modules
// see it: every pointer and length a guest gives is checked here, and a bad
// one ends only that VM, with a stated reason (a GuestFault). What the host
// writes goes through GuestMemory's writers, which mark the pages written.
import type { GuestMemory } from '../kvm/memory.js';
import { PAGE_SIZE } from '../kvm/memory.js';
import { DEVICE_PAGE_GPA, NOXS_PAGE_SIZE } from './abi.js';
import { GuestFault } from './exit.js';

export class GuestAccess {
  readonly memSize: number;

  constructor(readonly ram: GuestMemory, readonly devicePage: GuestMemory) {
    this.memSize = ram.size;
  }

  /** True if [gpa, gpa + len) lies in RAM above page 0. */
  inRam(gpa: bigint | number, len: number): boolean {
    const g = BigInt(gpa);
    return g >= BigInt(PAGE_SIZE) && g + BigInt(len) <= BigInt(this.memSize);
  }

  /** The argument struct of a hypercall, after checking it lies in RAM. */
  argStruct(gpa: number, size: number, call: string): DataView {
    if (gpa < PAGE_SIZE || gpa + size > this.memSize) {
      throw new GuestFault('bad-hypercall',
        `${call} argument at 0x${gpa.toString(16)} (${size} bytes) lies outside guest memory (${this.memSize >> 20} MiB)`);
    }
    // Marked written: the call writes its results into it.
    return this.ram.writableView(gpa, size);
  }

  /** len bytes of guest RAM at gpa that the host writes now (marked written), bounds-checked. */
  writableBytes(gpa: bigint, len: number, what: string): Uint8Array {
    if (this.inRam(gpa, len)) return this.ram.writable(Number(gpa), len);
    throw new GuestFault('bad-hypercall', `${what} 0x${gpa.toString(16)}+${len} lies outside guest RAM`);
  }

  /** len bytes of guest memory at gpa (RAM or the device page) for the host to read, bounds-checked. */
  bytes(gpa: bigint, len: number, what: string): Uint8Array {
    if (this.inRam(gpa, len)) return this.ram.bytes.subarray(Number(gpa), Number(gpa) + len);
    const end = gpa + BigInt(len);
    const dev = BigInt(DEVICE_PAGE_GPA);
    if (gpa >= dev && end <= dev + BigInt(NOXS_PAGE_SIZE)) return this.devicePage.bytes.subarray(Number(gpa - dev), Number(end - dev));
    throw new GuestFault('bad-hypercall', `${what} 0x${gpa.toString(16)}+${len} lies outside guest memory`);
  }
}
