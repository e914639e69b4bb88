// One VM as the executor sees it: its KVM objects and memory (prepared ahead
// as a shell), the image loaded into it, and the vCPU loop that turns exits
// into hypercalls, parking, or an end with a stated reason.
import { Kvm } from '../kvm/kvm.js';
import { bitmapBytes, GuestMemory, PAGE_SIZE, type GuestArenas } from '../kvm/memory.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VcpuState } from '../kvm/vcpu.js';
import { Vm } from '../kvm/vm.js';
import { nonZeroPages, type Snapshot } from './snapshot.js';
import type { NetDevice } from './net.js';
import { EINTR, SysError } from '../sys/errors.js';
import { EXIT, EXIT_NAMES, IO_OUT, RUN } from '../sys/kvm-api.js';
import { patchSregs } from '../sys/kvm-structs.js';
import {
  ABI_VERSION, BOOT_INFO, BOOT_MAGIC, CMDLINE_MAX, DEVICE_PAGE_GPA, HC_PIO_BASE, HC_STRUCT, NOXS_FLAG_SHUTDOWN, NOXS_PAGE_SIZE, PLATFORM_LIGHTVM,
} from './abi.js';
import { longModeSregs, writePageTables } from './cpu.js';
import { DevicePage, type DeviceEntry } from './device-page.js';
import type { Image } from './elf.js';
import { ImageError } from './elf.js';
import { GuestFault, type ExitStatus, type VmExit } from './exit.js';
import { HYPERCALL_SLOTS, lookup, Next } from './hypercalls.js';
import {
  BOOT_INFO_GPA, CMDLINE_GPA, MAX_MEMORY, MIN_MEMORY, MIN_STACK, WARMUP_GPA, WARMUP_PORT,
} from './layout.js';

// push %rax (touches the stack page); mov $WARMUP_PORT, %dx; out %al, (%dx)
const WARMUP_CODE = new Uint8Array([0x50, 0x66, 0xba, WARMUP_PORT & 0xff, WARMUP_PORT >> 8, 0xee]);

/** A prepared shell as it crosses between threads of one process. */
export interface ShellParts {
  memSize: number;
  vmFd: number;
  vcpuFd: number;
  runAddress: bigint;
  ramAddress: bigint;
  devicePageAddress: bigint;
  tscHz: number;
  /** The pages of RAM written so far (page tables, warm-up), a bitmap as KVM's dirty log has it. */
  written: Uint8Array;
}

export interface MachineConfig {
  vmId: number;
  name: string;
  cmdline: string;
  devices: readonly DeviceEntry[];
}

/** What one call to Machine.run() ended with. */
export const Outcome = {
  /** Kicked or preempted: runnable, re-enter later. */
  Interrupted: 0,
  /** Waiting in POLL until deadlineNs. */
  Parked: 1,
  /** Ended; see Machine.exit. */
  Ended: 2,
} as const;
export type Outcome = (typeof Outcome)[keyof typeof Outcome];

const RAM_SLOT = 0;
const DEVICE_SLOT = 1;

/** The page numbers whose bits are set in a bitmap as KVM's dirty log has it. */
function pagesOf(bitmap: Uint8Array): number[] {
  const out: number[] = [];
  for (let i = 0; i < bitmap.length; i++) {
    const byte = bitmap[i]!;
    if (byte === 0) continue;
    for (let b = 0; b < 8; b++) if (byte & (1 << b)) out.push(i * 8 + b);
  }
  return out;
}

export function monotonicNs(): number {
  return Number(process.hrtime.bigint());
}

/** MSRs a snapshot keeps: the TSC (so guest time goes on from where it was) and the 64-bit syscall set. */
const SNAPSHOT_MSRS = [0x10, 0x174, 0x175, 0x176, 0x277, 0xc0000081, 0xc0000082, 0xc0000083, 0xc0000084, 0xc0000102];

/** Per-thread state shared by every machine: entry registers, TSC. */
class CpuTemplate {
  sregs: Uint8Array | undefined;
  tscHz = 0;
  msrs: number[] | undefined;
}
const templates = new WeakMap<Kvm, CpuTemplate>();

function template(kvm: Kvm): CpuTemplate {
  let t = templates.get(kvm);
  if (!t) {
    t = new CpuTemplate();
    templates.set(kvm, t);
  }
  return t;
}

export class Machine {
  readonly memSize: number;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  readonly ram: GuestMemory;
  readonly devicePage: DevicePage;
  config: MachineConfig | undefined;
  exit: VmExit | undefined;
  /** Monotonic ns at which a parked POLL times out. */
  deadlineNs = 0;
  /** Monotonic ns of the first hypercall: the boot marker. */
  firstHypercallNs = 0;
  exitCount = 0;
  /** Guest instructions from entry to the first hypercall, when counted. */
  instructionCount = 0;
  private counting = false;
  /** Called at the first hypercall: the boot marker. */
  onBoot: () => void = () => {};
  /** Network devices by device id. */
  nets: (NetDevice | undefined)[] = [];
  /** Receives what the guest writes to its console. */
  onConsole: (data: Uint8Array) => void = () => {};
  /** How long (ns) the guest must wait after writing this many console bytes (its console's rate), or 0. */
  consoleWait: (bytes: number) => number = () => 0;
  /** Parked by its console's rate, not in a POLL: a wake writes no ready set. */
  holding = false;
  private pollArg = 0;
  private readonly tscHz: number;
  private closed = false;
  /**
   * Pages of RAM written since the shell was made, by the guest (KVM's dirty
   * log, on from the start) or the host (GuestMemory's marks): what a
   * snapshot saves, resident or not.
   */
  private readonly written: Uint8Array;
  /** The same since the last migration round, while a live migration is under way. */
  private round: Uint8Array | undefined;

  /**
   * Prepares a shell: VM, memory, slots, vCPU and 64-bit entry state. With
   * parts, takes over a shell another thread of this process prepared. Its
   * RAM and device page come from the arenas when given (see GuestArena).
   */
  constructor(kvm: Kvm, memSize: number, parts?: ShellParts, arenas?: GuestArenas) {
    if (!Number.isSafeInteger(memSize) || memSize < MIN_MEMORY || memSize > MAX_MEMORY || memSize % (1024 * 1024) !== 0) {
      throw new RangeError(`memory must be a whole number of MiB from ${MIN_MEMORY / 1048576} to ${MAX_MEMORY / 1048576}, got ${memSize / 1048576} MiB`);
    }
    this.memSize = memSize;
    this.written = new Uint8Array(bitmapBytes(memSize));
    if (parts) {
      this.vm = new Vm(kvm, parts.vmFd);
      this.ram = new GuestMemory(memSize, parts.ramAddress, arenas?.ram);
      this.ram.addHostWritten(parts.written);
      this.devicePage = new DevicePage(new GuestMemory(NOXS_PAGE_SIZE, parts.devicePageAddress, arenas?.pages));
      this.vm.recordSlot(RAM_SLOT, 0, this.ram, false, true);
      this.vm.recordSlot(DEVICE_SLOT, DEVICE_PAGE_GPA, this.devicePage.memory, true);
      this.vcpu = this.vm.adoptVcpu(parts.vcpuFd, 0, parts.runAddress);
      this.tscHz = parts.tscHz;
      return;
    }
    const t = template(kvm);
    const vm = kvm.createVm();
    let ram: GuestMemory | undefined;
    let devicePage: DevicePage | undefined;
    try {
      ram = new GuestMemory(memSize, undefined, arenas?.ram);
      devicePage = new DevicePage(new GuestMemory(NOXS_PAGE_SIZE, undefined, arenas?.pages));
      // KVM logs the guest's writes from the start: a snapshot saves the pages written, not the pages resident.
      vm.mapMemory(RAM_SLOT, 0, ram, false, true);
      vm.mapMemory(DEVICE_SLOT, DEVICE_PAGE_GPA, devicePage.memory, true);
      const vcpu = vm.createVcpu(0);
      // No KVM_SET_CPUID2: our guests never execute CPUID, and KVM takes the
      // 64-bit entry state of KVM_SET_SREGS without LM in the guest's CPUID
      // (the C floor does the same). The ioctl cost ~65 µs of a ~0.8 ms boot.
      // Every signal may interrupt KVM_RUN: the executor's kick signal is
      // blocked outside the guest and so waits, pending, for the next entry.
      vcpu.setSignalMask(new Uint8Array(8));
      if (!t.sregs) {
        t.sregs = vcpu.getSregs();
        patchSregs(t.sregs, longModeSregs());
        t.tscHz = vcpu.tscKhz() * 1000;
      }
      vcpu.setSregs(t.sregs);
      writePageTables(ram, memSize);
      this.vcpu = vcpu;
    } catch (err) {
      vm.close();
      ram?.close();
      devicePage?.close();
      throw err;
    }
    this.vm = vm;
    this.ram = ram;
    this.devicePage = devicePage;
    this.tscHz = t.tscHz;
  }

  /**
   * Hands the shell over to another thread of this process: returns what
   * identifies it, and this object lets go of it without closing anything.
   */
  detach(): ShellParts {
    this.closed = true;
    // What KVM logged stays with the VM; what the host wrote goes with the parts.
    const written = this.ram.takeHostWritten();
    for (let i = 0; i < written.length; i++) written[i]! |= this.written[i]!;
    return {
      memSize: this.memSize, vmFd: this.vm.fd, vcpuFd: this.vcpu.fd, runAddress: this.vcpu.runAddress,
      ramAddress: this.ram.hostAddress, devicePageAddress: this.devicePage.memory.hostAddress, tscHz: this.tscHz, written,
    };
  }

  /**
   * Runs a few instructions in the shell so that what a vCPU's first entry
   * costs (KVM's per-run set-up, the shadow of the page tables, the stack
   * page) is paid while preparing, not on a request. Leaves the shell as it
   * was: the code and the stack slot it used are zeroed again. Returns
   * false if a signal interrupted it before the guest ran (call again).
   */
  warmUp(): boolean {
    const code = WARMUP_CODE;
    this.ram.write(WARMUP_GPA, code);
    this.vcpu.setRegs({ rip: BigInt(WARMUP_GPA), rsp: BigInt(this.memSize), rflags: 2n });
    const r = this.vcpu.enter();
    if (r === -EINTR) return false;
    const run = this.vcpu.run;
    if (r !== EXIT.IO || run.getUint16(RUN.ioPort, true) !== WARMUP_PORT) {
      throw new Error(`shell warm-up ended with exit ${r} (${EXIT_NAMES[r] ?? 'unknown'}), not the warm-up port`);
    }
    this.vcpu.completePendingIo();
    this.ram.fill(0, WARMUP_GPA, code.length);
    this.ram.fill(0, this.memSize - 8, 8);
    return true;
  }

  /** Execute phase: copies the image in, writes boot info and device page, sets registers. */
  load(image: Image, config: MachineConfig): void {
    if (image.end + MIN_STACK > this.memSize) {
      throw new ImageError(image.file, 'memory',
        `the image ends at 0x${image.end.toString(16)} and needs ${MIN_STACK >> 10} KiB of stack above it: ` +
        `${this.memSize >> 20} MiB of memory is not enough (raise the memory size)`);
    }
    const cmdline = new TextEncoder().encode(config.cmdline);
    if (cmdline.length > CMDLINE_MAX) {
      throw new ImageError(image.file, 'cmdline', `${cmdline.length} bytes is longer than the ${CMDLINE_MAX} allowed`);
    }
    this.devicePage.write({ vmId: config.vmId, name: config.name, devices: config.devices });
    const ram = this.ram;
    for (const s of image.segments) {
      ram.write(s.gpa, s.data);
      // Fresh memory is zero; only zero bss explicitly if the pages were used.
    }
    ram.write(CMDLINE_GPA, cmdline);
    ram.fill(0, CMDLINE_GPA + cmdline.length, 1);
    const b = BOOT_INFO_GPA;
    ram.setUint32(b + BOOT_INFO.magic, BOOT_MAGIC);
    ram.setUint32(b + BOOT_INFO.abiVersion, ABI_VERSION);
    ram.setBigUint64(b + BOOT_INFO.memSize, BigInt(this.memSize));
    ram.setBigUint64(b + BOOT_INFO.kernelEnd, BigInt(image.end));
    ram.setBigUint64(b + BOOT_INFO.cmdline, BigInt(CMDLINE_GPA));
    ram.setBigUint64(b + BOOT_INFO.cmdlineLen, BigInt(cmdline.length));
    ram.setBigUint64(b + BOOT_INFO.devicePage, BigInt(DEVICE_PAGE_GPA));
    ram.setBigUint64(b + BOOT_INFO.tscHz, BigInt(this.tscHz));
    ram.setBigUint64(b + BOOT_INFO.platform, BigInt(PLATFORM_LIGHTVM));
    this.vcpu.setRegs({
      rip: BigInt(image.entry),
      rsp: BigInt(this.memSize),
      rdi: BigInt(BOOT_INFO_GPA),
      rflags: 2n,
    });
    this.config = config;
  }

  /**
   * Runs the vCPU until it parks, ends, or is interrupted. control[0] != 0
   * asks the loop to come back to the executor between exits.
   */
  run(control: Int32Array): Outcome {
    const run = this.vcpu.run;
    for (;;) {
      if (Atomics.load(control, 0) !== 0) return Outcome.Interrupted;
      const r = this.vcpu.enter();
      if (r < 0) {
        if (r === -EINTR) return Outcome.Interrupted;
        return this.crash('internal-error', `KVM_RUN failed: ${new SysError('KVM_RUN', -r).code}`);
      }
      this.exitCount++;
      try {
        if (r === EXIT.IO) {
          const port = run.getUint16(RUN.ioPort, true);
          const nr = port - HC_PIO_BASE;
          const out = run.getUint8(RUN.ioDirection) === IO_OUT;
          if (!out || nr < 0 || nr >= HYPERCALL_SLOTS) {
            throw new GuestFault('stray-io',
              `${out ? 'write to' : 'read from'} I/O port 0x${port.toString(16)}, which is not a hypercall port`);
          }
          if (run.getUint8(RUN.ioSize) !== 4 || run.getUint32(RUN.ioCount, true) !== 1) {
            throw new GuestFault('bad-hypercall', `hypercall ${nr} must be one 32-bit OUT`);
          }
          const call = lookup(nr);
          if (!call) throw new GuestFault('bad-hypercall', `unknown hypercall ${nr} (port 0x${port.toString(16)})`);
          if (this.firstHypercallNs === 0) {
            this.firstHypercallNs = monotonicNs();
            if (this.counting) {
              this.counting = false;
              this.vcpu.setSingleStep(false);
            }
            this.onBoot();
          }
          const arg = run.getUint32(Number(run.getBigUint64(RUN.ioDataOffset, true)), true);
          const next = call(this, arg);
          if (next === Next.Resume) continue;
          return next === Next.Park ? Outcome.Parked : Outcome.Ended;
        }
        if (r === EXIT.DEBUG && this.counting) {
          this.instructionCount++;
          continue;
        }
        return this.otherExit(r);
      } catch (err) {
        if (err instanceof GuestFault) return this.crash(err.code, err.message);
        throw err;
      }
    }
  }

  /** Single-steps the guest from entry to its first hypercall, counting instructions. */
  countInstructions(): void {
    this.counting = true;
    this.vcpu.setSingleStep(true);
  }

  private otherExit(reason: number): Outcome {
    const run = this.vcpu.run;
    switch (reason) {
      case EXIT.MMIO: {
        const gpa = Number(run.getBigUint64(RUN.mmioPhysAddr, true));
        const write = run.getUint8(RUN.mmioIsWrite) !== 0;
        const len = run.getUint32(RUN.mmioLen, true);
        if (write && gpa >= DEVICE_PAGE_GPA && gpa < DEVICE_PAGE_GPA + NOXS_PAGE_SIZE) {
          return this.crash('device-page-write',
            `wrote ${len} bytes to its read-only device page at offset 0x${(gpa - DEVICE_PAGE_GPA).toString(16)}: refused, VM stopped`);
        }
        return this.crash('mmio', `${write ? 'wrote' : 'read'} ${len} bytes at 0x${gpa.toString(16)}, where no memory exists`);
      }
      case EXIT.SHUTDOWN:
        return this.crash('triple-fault', 'triple fault: an exception the guest could not handle (no IDT)');
      case EXIT.HLT:
        return this.crash('hlt', 'executed HLT with interrupts off, so it could never resume');
      case EXIT.FAIL_ENTRY:
        return this.crash('entry-failed',
          `the CPU refused to enter the guest (hardware reason 0x${run.getBigUint64(RUN.failEntryReason, true).toString(16)})`);
      case EXIT.INTERNAL_ERROR:
        return this.crash('internal-error', `KVM internal error, suberror ${run.getUint32(RUN.internalSuberror, true)}`);
      default:
        return this.crash('unexpected-exit', `unexpected exit reason ${reason} (${EXIT_NAMES[reason] ?? 'unknown'})`);
    }
  }

  private crash(code: GuestFault['code'], reason: string): Outcome {
    this.exit = { kind: 'crash', code, reason };
    return Outcome.Ended;
  }

  // ---- used by hypercalls ----

  /**
   * The argument struct of a hypercall, after checking it lies in RAM. Its
   * page is marked written: the call writes its results into it.
   */
  argStruct(gpa: number, size: number, call: string): DataView {
    if (gpa < PAGE_SIZE || gpa + size > this.memSize) {
      throw new GuestFault('bad-hypercall',
        `${call} argument at 0x${gpa.toString(16)} (${size} bytes) lies outside guest memory (${this.memSize >> 20} MiB)`);
    }
    return this.ram.writableView(gpa, size);
  }

  /** len bytes of guest RAM at gpa that the host writes now (marked written), bounds-checked. */
  writableGuestBytes(gpa: bigint, len: number, what: string): Uint8Array {
    const end = gpa + BigInt(len);
    if (gpa >= BigInt(PAGE_SIZE) && end <= BigInt(this.memSize)) return this.ram.writable(Number(gpa), len);
    throw new GuestFault('bad-hypercall', `${what} 0x${gpa.toString(16)}+${len} lies outside guest RAM`);
  }

  /** len bytes of guest memory at gpa (RAM or the device page) for the host to read, bounds-checked. */
  guestBytes(gpa: bigint, len: number, what: string): Uint8Array {
    const end = gpa + BigInt(len);
    if (gpa >= BigInt(PAGE_SIZE) && end <= BigInt(this.memSize)) return this.ram.bytes.subarray(Number(gpa), Number(end));
    const dev = BigInt(DEVICE_PAGE_GPA);
    if (gpa >= dev && end <= dev + BigInt(NOXS_PAGE_SIZE)) return this.devicePage.memory.bytes.subarray(Number(gpa - dev), Number(end - dev));
    throw new GuestFault('bad-hypercall', `${what} 0x${gpa.toString(16)}+${len} lies outside guest memory`);
  }

  /** Hands the guest's console output on; true if the guest must now wait (see holdFor). */
  console(data: Uint8Array): boolean {
    this.onConsole(data);
    const waitNs = this.consoleWait(data.length);
    if (waitNs <= 0) return false;
    this.holding = true;
    this.deadlineNs = monotonicNs() + waitNs;
    return true;
  }

  parkUntil(arg: number, timeoutNs: bigint): void {
    this.holding = false;
    this.pollArg = arg;
    // Clamp absurd timeouts to a year: still "forever" for the guest, but finite for the heap.
    const t = timeoutNs > 31_536_000_000_000_000n ? 31_536_000_000_000_000 : Number(timeoutNs);
    this.deadlineNs = monotonicNs() + t;
  }

  /** Ready bits of network devices with frames waiting. */
  netReady(): bigint {
    let bits = 0n;
    for (const d of this.nets) if (d?.pending) bits |= 1n << BigInt(d.id);
    return bits;
  }

  /** Ends a POLL: writes which devices are ready into the guest's struct. */
  wake(readySet: bigint): void {
    // Held for its console's rate, it waits in no POLL: nothing to answer.
    if (!this.holding) this.ram.setBigUint64(this.pollArg + HC_STRUCT.poll.readySet, readySet);
    this.holding = false;
    this.deadlineNs = 0;
  }

  /** Asks the guest to end: flags the device page; its next POLL returns at once. */
  requestShutdown(): void {
    this.devicePage.setFlags(NOXS_FLAG_SHUTDOWN);
  }

  get shutdownRequested(): boolean {
    return (this.devicePage.flags & NOXS_FLAG_SHUTDOWN) !== 0;
  }

  // ---- snapshots ----

  /**
   * What a snapshot needs of this VM. The instruction the last exit left
   * half done (the OUT of a POLL) is completed first, as KVM requires before
   * its state is read; a parked VM stays parked.
   */
  capture(pages?: number[]): { vcpu: VcpuState; devicePage: Uint8Array; memory: Uint8Array; pages: number[]; pollArg: number } {
    this.vcpu.completePendingIo();
    const t = template(this.vm.kvm);
    t.msrs ??= this.vcpu.supportedMsrs(SNAPSHOT_MSRS);
    let written: Uint8Array | undefined;
    if (!pages) {
      this.collectWritten();
      written = new Uint8Array(this.memSize / PAGE_SIZE);
      for (const p of pagesOf(this.written)) written[p] = 1;
    }
    return {
      vcpu: this.vcpu.saveState(t.msrs),
      devicePage: this.devicePage.snapshot(),
      memory: this.ram.bytes,
      pages: pages ?? nonZeroPages(this.ram.bytes, written),
      pollArg: this.pollArg,
    };
  }

  /** A live migration begins: from here dirtyPageList() gives the pages written since its last call. */
  beginRounds(): void {
    this.collectWritten();
    this.round = new Uint8Array(this.written.length);
  }

  /** The live migration is over (called off): no more rounds. */
  endRounds(): void {
    this.round = undefined;
  }

  /** Pages of RAM written, by the guest or the host, since the last call or beginRounds(); zero or not. */
  dirtyPageList(): number[] {
    if (!this.round) throw new Error('no live migration is under way: its round 0 comes first');
    this.collectWritten();
    const out = pagesOf(this.round);
    this.round.fill(0);
    return out;
  }

  /** Takes in what KVM logged of the guest's writes and what the host marked of its own. */
  private collectWritten(): void {
    const guest = this.vm.dirtyPages(this.vm.slotList.find((s) => s.slot === RAM_SLOT)!);
    const host = this.ram.takeHostWritten();
    const round = this.round;
    for (let i = 0; i < this.written.length; i++) {
      const b = guest[i]! | host[i]!;
      if (b === 0) continue;
      this.written[i]! |= b;
      if (round) round[i]! |= b;
    }
  }

  /** Puts a snapshot's memory, device page and vCPU state into this shell. */
  restore(s: Snapshot, config: MachineConfig): void {
    if (s.header.vm.memory !== this.memSize) {
      throw new Error(`snapshot of ${s.header.vm.memory / 1048576} MiB restored into a shell of ${this.memSize / 1048576} MiB`);
    }
    // A shell is not blank (page tables, warm-up): clear what was written in it that the snapshot does not have.
    this.collectWritten();
    for (const p of pagesOf(this.written)) if (!s.pages.has(p)) this.ram.fill(0, p * PAGE_SIZE, PAGE_SIZE);
    for (const [p, data] of s.pages) this.ram.write(p * PAGE_SIZE, data);
    this.devicePage.restore(s.devicePage, { vmId: config.vmId, name: config.name });
    this.vcpu.restoreState(s.vcpu);
    this.config = config;
    this.firstHypercallNs = monotonicNs();
    if (s.header.parked) {
      this.pollArg = s.header.parked.arg;
      this.deadlineNs = monotonicNs() + s.header.parked.remainingNs;
    }
  }

  halt(status: ExitStatus): void {
    this.exit = { kind: 'halt', status };
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const n of this.nets) if (n?.owned) n.close();
    this.vm.close();
    this.ram.close();
    this.devicePage.close();
  }
}
