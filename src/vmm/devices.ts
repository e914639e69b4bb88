// The device model: a VM's devices are modules, set up for that VM from
// its configuration (as Solo5 hvt's modules and kvmtool's device registry
// are). A module registers with its VM's bus what it owns: hypercalls, port
// and MMIO ranges, fds the executor watches for it, and its snapshot
// section; it is closed with the VM. Machine.run dispatches each exit to its
// owner; an exit nobody owns ends that VM with the reason. The modules a VM
// has are its attack surface: without a net module, NET_* are unknown calls.
import { HC } from './abi.js';
import { GuestFault } from './exit.js';
import type { GuestAccess } from './guest-access.js';

/** What the vCPU loop does after an exit was handled. */
export const Next = {
  /** Re-enter the guest at once. */
  Resume: 0,
  /** The guest waits: park it until its deadline or a device is ready. */
  Park: 1,
  /** The guest is done. */
  Halt: 2,
} as const;
export type Next = (typeof Next)[keyof typeof Next];

/** A hypercall: reads its argument struct at a guest-physical address. */
export type Hypercall = (arg: number) => Next;

/**
 * An MMIO access inside a module's range. offset is from the range's base;
 * data is KVM's 8-byte buffer: a write's bytes, or where a read's go.
 */
export type MmioHandler = (offset: number, data: Uint8Array, len: number, write: boolean) => Next;

/** Port I/O inside a module's range (not the hypercall ports). */
export type PioHandler = (port: number, data: Uint8Array, size: number, out: boolean) => Next;

export interface Watch {
  fd: number;
  events: number;
  /** Runs on the executor's thread when fd is ready; true if the VM should wake (a POLL ready bit). */
  onReady: () => boolean;
}

/** What a VM offers its modules. */
export interface VmContext {
  readonly vmId: number;
  readonly guest: GuestAccess;
  readonly bus: DeviceBus;
  /** The VM's console output (CONSOLE_WRITE, virtio-console); how long (ns) the guest should now wait for its console's rate, or 0. */
  console(data: Uint8Array): number;
  /** The guest waits waitNs for its console's rate (no wait if 0); then() runs before it resumes and may ask for another wait. */
  hold(waitNs: number, then?: () => number): Next;
}

export interface DeviceModule {
  readonly name: string;
  /** POLL ready bits of the module's devices (bit = device id). */
  ready?(): bigint;
  /** The module's state for a snapshot or a migration stream (in-flight work completed first). */
  save?(): Uint8Array;
  /** Takes back what save() gave, in a new VM of the same configuration. */
  restore?(state: Uint8Array): void;
  /** Frees what the module holds (fds, files); the VM is gone. */
  close(): void;
}

/** Slots for hypercall numbers: ports HC_PIO_BASE .. HC_PIO_BASE + 63. */
export const HYPERCALL_SLOTS = 64;

const HC_NAMES: Record<number, string> = Object.fromEntries(Object.entries(HC).map(([k, v]) => [v, k]));

interface Range<H> {
  base: number;
  size: number;
  owner: string;
  handler: H;
}

/** One VM's exits and the modules that own them. */
export class DeviceBus {
  private readonly calls: (Hypercall | undefined)[] = new Array<Hypercall | undefined>(HYPERCALL_SLOTS).fill(undefined);
  private readonly callOwners: string[] = [];
  private readonly mmioRanges: Range<MmioHandler>[] = [];
  private readonly pioRanges: Range<PioHandler>[] = [];
  readonly watches: Watch[] = [];
  readonly modules: DeviceModule[] = [];
  /** Set by a module outside any exit (a watched fd said so): the VM ends with it before it runs again. */
  failure: GuestFault | undefined;

  /** Ends the VM from a watch's onReady, where no exit is being handled to throw from (the watch then wakes it). */
  fail(f: GuestFault): void {
    this.failure ??= f;
  }

  add<M extends DeviceModule>(m: M): M {
    if (this.modules.some((x) => x.name === m.name)) throw new Error(`device module ${m.name} is set up twice`);
    this.modules.push(m);
    return m;
  }

  module(name: string): DeviceModule | undefined {
    return this.modules.find((m) => m.name === name);
  }

  hypercall(nr: number, owner: string, fn: Hypercall): void {
    if (!Number.isInteger(nr) || nr < 0 || nr >= HYPERCALL_SLOTS) throw new RangeError(`${owner}: hypercall ${nr} is not in 0..${HYPERCALL_SLOTS - 1}`);
    if (this.calls[nr]) throw new Error(`hypercall ${nr} is claimed by ${this.callOwners[nr]} and ${owner}`);
    this.calls[nr] = fn;
    this.callOwners[nr] = owner;
  }

  mmio(base: number, size: number, owner: string, handler: MmioHandler): void {
    claim(this.mmioRanges, { base, size, owner, handler }, 'MMIO');
  }

  pio(base: number, size: number, owner: string, handler: PioHandler): void {
    claim(this.pioRanges, { base, size, owner, handler }, 'port');
  }

  watch(w: Watch): void {
    this.watches.push(w);
  }

  /** The call behind hypercall nr; a GuestFault if this VM has none. */
  call(nr: number, port: number): Hypercall {
    const fn = this.calls[nr];
    if (fn) return fn;
    const abi = HC_NAMES[nr];
    throw new GuestFault('bad-hypercall', `unknown hypercall ${nr} (port 0x${port.toString(16)})` +
      (abi ? `: ${abi} is not a call of this VM (it has no such device)` : ''));
  }

  mmioAt(gpa: number): Range<MmioHandler> | undefined {
    return find(this.mmioRanges, gpa);
  }

  pioAt(port: number): Range<PioHandler> | undefined {
    return find(this.pioRanges, port);
  }

  /** POLL ready bits of every module. */
  ready(): bigint {
    let bits = 0n;
    for (const m of this.modules) if (m.ready) bits |= m.ready();
    return bits;
  }

  /** Closes every module, the last set up first; one that fails does not keep the others open. */
  close(): void {
    let first: unknown;
    for (const m of this.modules.splice(0).reverse()) {
      try {
        m.close();
      } catch (err) {
        first ??= err;
      }
    }
    if (first !== undefined) throw first instanceof Error ? first : new Error(String(first));
  }
}

function claim<H>(ranges: Range<H>[], r: Range<H>, kind: string): void {
  const clash = ranges.find((x) => r.base < x.base + x.size && x.base < r.base + r.size);
  if (clash) {
    throw new Error(`${r.owner}: ${kind} range 0x${r.base.toString(16)}+0x${r.size.toString(16)} overlaps ${clash.owner}'s`);
  }
  ranges.push(r);
}

function find<H>(ranges: Range<H>[], at: number): Range<H> | undefined {
  for (const r of ranges) if (at >= r.base && at < r.base + r.size) return r;
  return undefined;
}
