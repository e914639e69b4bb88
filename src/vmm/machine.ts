// One VM as the executor sees it: its KVM objects and memory (prepared ahead
// as a shell), the image loaded into it, and the vCPU loop that turns exits
// into hypercalls, parking, or an end with a stated reason.
import { Kvm } from '../kvm/kvm.js';
import { bitmapBytes, GuestMemory, PAGE_SIZE, type GuestArenas } from '../kvm/memory.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { VcpuState } from '../kvm/vcpu.js';
import { Vm } from '../kvm/vm.js';
import { nonZeroPages, type Snapshot } from './snapshot.js';
import { EINTR, SysError } from '../sys/errors.js';
import { EXIT, EXIT_NAMES, INTERNAL_ERROR_EMULATION, IO_OUT, RUN } from '../sys/kvm-api.js';
import { patchSregs, sregsField } from '../sys/kvm-structs.js';
import {
  ABI_VERSION, BOOT_INFO, BOOT_MAGIC, CMDLINE_MAX, DEVICE_PAGE_GPA, HC_PIO_BASE, NOXS_PAGE_SIZE, PLATFORM_LIGHTVM,
} from './abi.js';
import { longModeSregs, writePageTables } from './cpu.js';
import { DevicePage, type DevicePageContents } from './device-page.js';
import type { VmConfig } from './vm-schema.js';
import type { Image } from './elf.js';
import type { BzImage } from './linux/bzimage.js';
import { writeLinuxEntryTables, linuxSregs } from './linux/entry.js';
import { guestPhysical } from './linux/guest-page-walk.js';
import { loadLinux } from './linux/load.js';
import type { Vmlinux } from './linux/vmlinux.js';
import { ImageError } from './elf.js';
import { GuestFault, type VmExit } from './exit.js';
import { DeviceBus, HYPERCALL_SLOTS, Next, type DeviceModule, type VmContext } from './devices.js';
import { GuestAccess } from './guest-access.js';
import { CoreModule } from './modules/core.js';
import { NoxsModule } from './modules/noxs.js';
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

/** What a Machine is given of its VM's configuration (vm-schema.ts): the device page's contents and the command line. */
export type MachineConfig = DevicePageContents & Pick<VmConfig, 'cmdline'>;

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

/** What a Linux VM's shell has beyond a unikernel's (see Vm.createLinuxPlatform). */
export interface LinuxShell {
  /** KVM_SET_CPUID2's argument (see linux/cpuid.ts). */
  cpuid: Uint8Array;
}

/** The three pages KVM's TSS takes and its identity-map page, in a Linux VM, below the LAPIC and IOAPIC. */
export const LINUX_TSS_GPA = 0xfffbc000;

const INT3 = 0xcc;
const BP_VECTOR = 3;
const FWAIT = 0x9b;

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

export class Machine implements VmContext {
  readonly memSize: number;
  readonly vm: Vm;
  readonly vcpu: Vcpu;
  readonly ram: GuestMemory;
  readonly devicePage: DevicePage;
  config: MachineConfig | undefined;
  exit: VmExit | undefined;
  /** Monotonic ns of the first hypercall: the boot marker. */
  firstHypercallNs = 0;
  exitCount = 0;
  /** Guest instructions from entry to the first hypercall, when counted. */
  instructionCount = 0;
  private counting = false;
  /** Called at the first hypercall: the boot marker. */
  onBoot: () => void = () => {};
  /** Receives what the guest writes to its console. */
  onConsole: (data: Uint8Array) => void = () => {};
  /** How long (ns) the guest must wait after writing this many console bytes (its console's rate), or 0. */
  consoleWait: (bytes: number) => number = () => 0;
  /** Its device modules and the exits they own (set up by load or restore). */
  readonly bus = new DeviceBus();
  readonly guest: GuestAccess;
  private core: CoreModule | undefined;
  private noxs: NoxsModule | undefined;
  /** KVM's buffer for the data of an MMIO exit. */
  private readonly mmioData: Uint8Array;
  private readonly tscHz: number;
  /** A Linux VM: port I/O and MMIO where no device is are ignored, as on a PC, instead of ending it. */
  private readonly linux: boolean;
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
  constructor(kvm: Kvm, memSize: number, parts?: ShellParts, arenas?: GuestArenas, linux?: LinuxShell) {
    if (!Number.isSafeInteger(memSize) || memSize < MIN_MEMORY || memSize > MAX_MEMORY || memSize % (1024 * 1024) !== 0) {
      throw new RangeError(`memory must be a whole number of MiB from ${MIN_MEMORY / 1048576} to ${MAX_MEMORY / 1048576}, got ${memSize / 1048576} MiB`);
    }
    this.memSize = memSize;
    this.linux = linux !== undefined;
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
      this.guest = new GuestAccess(this.ram, this.devicePage.memory);
      this.mmioData = this.runBytes(RUN.mmioData, 8);
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
      // The irqchip comes before any vCPU (KVM's rule).
      if (linux) vm.createLinuxPlatform(LINUX_TSS_GPA);
      const vcpu = vm.createVcpu(0);
      if (linux) vcpu.setCpuid(linux.cpuid);
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
    this.guest = new GuestAccess(this.ram, this.devicePage.memory);
    this.mmioData = this.runBytes(RUN.mmioData, 8);
  }

  private runBytes(offset: number, len: number): Uint8Array {
    const run = this.vcpu.run;
    return new Uint8Array(run.buffer, run.byteOffset + offset, len);
  }

  get vmId(): number {
    return this.config?.vmId ?? 0;
  }

  /** Sets up the modules every VM has: core (console, time, poll, halt) and noxs (the device page). */
  private setUpBase(config: MachineConfig): void {
    this.config = config;
    this.noxs = this.bus.add(new NoxsModule(this, this.devicePage));
    const noxs = this.noxs;
    this.core = this.bus.add(new CoreModule(this, {
      console: (data) => this.console(data),
      halt: (status) => {
        this.exit = { kind: 'halt', status };
      },
      shutdownRequested: () => noxs.shutdownRequested,
    }, monotonicNs));
  }

  /** Hands the guest's console output on; how long (ns) it must now wait for its console's rate, or 0. */
  console(data: Uint8Array): number {
    this.onConsole(data);
    return this.consoleWait(data.length);
  }

  /** Parks the guest for its console's rate (see CoreModule.hold). */
  hold(waitNs: number, then?: () => number): Next {
    return this.core ? this.core.hold(waitNs, then) : Next.Resume;
  }

  /** Parked by its console's rate, not in a POLL (a snapshot restores it runnable). */
  get holding(): boolean {
    return this.core?.holding ?? false;
  }

  /** Adds a device module of this VM's configuration (net, block, ...). */
  add<M extends DeviceModule>(m: M): M {
    return this.bus.add(m);
  }

  /** A module of this VM by name. */
  module(name: string): DeviceModule | undefined {
    return this.bus.module(name);
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
    this.setUpBase(config);
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
  }

  /**
   * Execute phase for a bzImage (64-bit boot protocol): kernel, command line,
   * initrd and zero page into RAM, the protocol's GDT and identity map over
   * the shell's unikernel tables, and entry at load address + 0x200 with
   * %rsi at the zero page. Only Linux VMs pay the extra KVM_SET_SREGS.
   * Checked on a real vCPU (the kvm box) by test/linux-boot.test.ts.
   */
  loadBzImage(image: BzImage, config: MachineConfig, initrd?: { file: string; bytes: Uint8Array }, vmlinux?: Vmlinux): void {
    this.devicePage.write({ vmId: config.vmId, name: config.name, devices: config.devices });
    this.setUpBase(config);
    const entry = loadLinux(this.ram, image, { cmdline: config.cmdline, initrd: initrd?.bytes, initrdFile: initrd?.file, vmlinux });
    writeLinuxEntryTables(this.ram);
    const sregs = this.vcpu.getSregs();
    patchSregs(sregs, linuxSregs());
    this.vcpu.setSregs(sregs);
    this.vcpu.setRegs({ rip: BigInt(entry.rip), rsi: BigInt(entry.rsi), rflags: 2n });
  }

  /**
   * Runs the vCPU until it parks, ends, or is interrupted. control[0] != 0
   * asks the loop to come back to the executor between exits.
   */
  run(control: Int32Array): Outcome {
    const run = this.vcpu.run;
    // A device's work that its console's rate held back comes first.
    try {
      if (this.core?.resumeHeld() === Next.Park) return Outcome.Parked;
    } catch (err) {
      if (err instanceof GuestFault) return this.crash(err.code, err.message);
      throw err;
    }
    for (;;) {
      if (Atomics.load(control, 0) !== 0) return Outcome.Interrupted;
      const failed = this.bus.failure;
      if (failed) return this.crash(failed.code, failed.message);
      const r = this.vcpu.enter();
      if (r < 0) {
        if (r === -EINTR) return Outcome.Interrupted;
        return this.crash('internal-error', `KVM_RUN failed: ${new SysError('KVM_RUN', -r).code}`);
      }
      this.exitCount++;
      try {
        let next: Next;
        if (r === EXIT.IO) {
          const port = run.getUint16(RUN.ioPort, true);
          const nr = port - HC_PIO_BASE;
          const out = run.getUint8(RUN.ioDirection) === IO_OUT;
          if (out && nr >= 0 && nr < HYPERCALL_SLOTS) next = this.hypercall(nr, port);
          else next = this.portIo(port, out);
        } else if (r === EXIT.MMIO) {
          next = this.mmio();
        } else if (r === EXIT.DEBUG && this.counting) {
          this.instructionCount++;
          continue;
        } else {
          if (this.linux && r === EXIT.INTERNAL_ERROR && this.emulateForLinux()) continue;
          return this.otherExit(r);
        }
        if (next === Next.Resume) continue;
        return next === Next.Park ? Outcome.Parked : Outcome.Ended;
      } catch (err) {
        if (err instanceof GuestFault) return this.crash(err.code, err.message);
        throw err;
      }
    }
  }

  private hypercall(nr: number, port: number): Next {
    const run = this.vcpu.run;
    if (run.getUint8(RUN.ioSize) !== 4 || run.getUint32(RUN.ioCount, true) !== 1) {
      throw new GuestFault('bad-hypercall', `hypercall ${nr} must be one 32-bit OUT`);
    }
    const call = this.bus.call(nr, port);
    if (this.firstHypercallNs === 0) {
      this.firstHypercallNs = monotonicNs();
      if (this.counting) {
        this.counting = false;
        this.vcpu.setSingleStep(false);
      }
      this.onBoot();
    }
    return call(run.getUint32(Number(run.getBigUint64(RUN.ioDataOffset, true)), true));
  }

  /** Port I/O other than a hypercall: to the module that owns the port. */
  private portIo(port: number, out: boolean): Next {
    const dev = this.bus.pioAt(port);
    if (!dev && this.linux) return this.absentIo(out);
    if (!dev) {
      throw new GuestFault('stray-io', `${out ? 'write to' : 'read from'} I/O port 0x${port.toString(16)}, which is not a hypercall port`);
    }
    const run = this.vcpu.run;
    const size = run.getUint8(RUN.ioSize);
    const count = run.getUint32(RUN.ioCount, true);
    if (count !== 1) throw new GuestFault('stray-io', `string I/O (${count} times) at port 0x${port.toString(16)}: not supported`);
    return dev.handler(port, this.runBytes(Number(run.getBigUint64(RUN.ioDataOffset, true)), size), size, out);
  }

  /** An access where no memory is: to the module that owns the address. */
  private mmio(): Next {
    const run = this.vcpu.run;
    const gpa = Number(run.getBigUint64(RUN.mmioPhysAddr, true));
    const write = run.getUint8(RUN.mmioIsWrite) !== 0;
    const len = run.getUint32(RUN.mmioLen, true);
    const dev = this.bus.mmioAt(gpa);
    if (!dev && this.linux) {
      if (!write) this.mmioData.fill(0xff);
      return Next.Resume;
    }
    if (!dev) throw new GuestFault('mmio', `${write ? 'wrote' : 'read'} ${len} bytes at 0x${gpa.toString(16)}, where no memory exists`);
    return dev.handler(gpa - dev.base, this.mmioData, len, write);
  }

  /**
   * An instruction KVM could not emulate, done here when we can: int3
   * (which some hosts' KVM lacks, and Linux's boot self-test runs) is a #BP
   * delivered past it, as the CPU delivers it; fwait goes on past it. True
   * if the guest may go on.
   */
  private emulateForLinux(): boolean {
    if (this.vcpu.run.getUint32(RUN.internalSuberror, true) !== INTERNAL_ERROR_EMULATION) return false;
    const regs = this.vcpu.getRegs();
    const at = guestPhysical(this.ram.bytes, sregsField(this.vcpu.getSregs(), 'cr3'), regs.rip);
    const op = at === undefined ? undefined : this.ram.bytes[at];
    if (op === INT3) {
      this.vcpu.setRegs({ ...regs, rip: regs.rip + 1n });
      this.vcpu.injectException(BP_VECTOR);
      return true;
    }
    // fwait: waits for the x87 unit, which here has nothing in flight (the
    // monitor cannot see its pending exceptions: taken as none).
    if (op === FWAIT) {
      this.vcpu.setRegs({ ...regs, rip: regs.rip + 1n });
      return true;
    }
    return false;
  }

  /** Linux probes ports where a PC may have a device: none here reads all ones, a write goes nowhere. */
  private absentIo(out: boolean): Next {
    const run = this.vcpu.run;
    if (!out) {
      const size = run.getUint8(RUN.ioSize);
      const count = run.getUint32(RUN.ioCount, true);
      this.runBytes(Number(run.getBigUint64(RUN.ioDataOffset, true)), size * count).fill(0xff);
    }
    return Next.Resume;
  }

  /** Single-steps the guest from entry to its first hypercall, counting instructions. */
  countInstructions(): void {
    this.counting = true;
    this.vcpu.setSingleStep(true);
  }

  private otherExit(reason: number): Outcome {
    const run = this.vcpu.run;
    switch (reason) {
      case EXIT.SHUTDOWN:
        return this.crash('triple-fault', 'triple fault: an exception the guest could not handle (no IDT)');
      case EXIT.HLT:
        return this.crash('hlt', 'executed HLT with interrupts off, so it could never resume');
      case EXIT.FAIL_ENTRY:
        return this.crash('entry-failed',
          `the CPU refused to enter the guest (hardware reason 0x${run.getBigUint64(RUN.failEntryReason, true).toString(16)})`);
      case EXIT.INTERNAL_ERROR:
        return this.crash('internal-error', `KVM internal error, suberror ${run.getUint32(RUN.internalSuberror, true)}` +
          `${run.getUint32(RUN.internalSuberror, true) === INTERNAL_ERROR_EMULATION ? ' (emulation failure)' : ''} at rip 0x${this.vcpu.getRegs().rip.toString(16)}`);
      default:
        return this.crash('unexpected-exit', `unexpected exit reason ${reason} (${EXIT_NAMES[reason] ?? 'unknown'})`);
    }
  }

  private crash(code: GuestFault['code'], reason: string): Outcome {
    this.exit = { kind: 'crash', code, reason };
    return Outcome.Ended;
  }

  // ---- used by the executor ----

  /** Monotonic ns at which a parked POLL times out. */
  get deadlineNs(): number {
    return this.core?.deadlineNs ?? 0;
  }

  /** Ready bits of the VM's devices (POLL's ready set). */
  readySet(): bigint {
    return this.bus.ready();
  }

  /** Ends a POLL: writes which devices are ready into the guest's struct. */
  wake(readySet: bigint): void {
    this.core?.wake(readySet);
  }

  /** Asks the guest to end: flags the device page; its next POLL returns at once. */
  requestShutdown(): void {
    this.noxs?.requestShutdown();
  }

  // ---- snapshots ----

  /**
   * What a snapshot needs of this VM. The instruction the last exit left
   * half done (the OUT of a POLL) is completed first, as KVM requires before
   * its state is read; a parked VM stays parked.
   */
  capture(pages?: number[]): {
    vcpu: VcpuState; devicePage: Uint8Array; memory: Uint8Array; pages: number[]; pollArg: number; devices: Map<string, Uint8Array>;
  } {
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
      pollArg: this.core?.pollArg ?? 0,
      devices: this.saveDevices(),
    };
  }

  /** The state of each module that has some (its requests are served at their exit: none is in flight). */
  saveDevices(): Map<string, Uint8Array> {
    const out = new Map<string, Uint8Array>();
    for (const m of this.bus.modules) if (m.save) out.set(m.name, m.save());
    return out;
  }

  /** Gives each module its saved state; once the modules of the VM's configuration are set up. */
  restoreDevices(saved: Map<string, Uint8Array> | undefined): void {
    for (const [name, state] of saved ?? []) {
      const m = this.bus.module(name);
      if (!m?.restore) throw new Error(`the snapshot holds the state of device ${name}, which this VM's configuration lacks`);
      m.restore(state);
    }
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
    this.checkSize(s.header.vm.memory);
    // A shell is not blank (page tables, warm-up): clear what was written in it that the snapshot does not have.
    this.collectWritten();
    for (const p of pagesOf(this.written)) if (!s.pages.has(p)) this.ram.fill(0, p * PAGE_SIZE, PAGE_SIZE);
    for (const [p, data] of s.pages) this.ram.write(p * PAGE_SIZE, data);
    this.restoreState(s, config);
  }

  /**
   * A restore in steps begins: every page the shell wrote is cleared, and
   * placePage() then puts the snapshot's in, before restoreState().
   */
  beginRestore(memory: number): void {
    this.checkSize(memory);
    this.collectWritten();
    for (const p of pagesOf(this.written)) this.ram.fill(0, p * PAGE_SIZE, PAGE_SIZE);
  }

  placePage(page: number, data: Uint8Array): void {
    this.ram.write(page * PAGE_SIZE, data);
  }

  /** What a snapshot holds besides its pages: device page, vCPU, the parked POLL. */
  restoreState(s: Snapshot, config: MachineConfig): void {
    this.devicePage.restore(s.devicePage, { vmId: config.vmId, name: config.name });
    this.vcpu.restoreState(s.vcpu);
    this.setUpBase(config);
    this.firstHypercallNs = monotonicNs();
    if (s.header.parked) this.core!.parkAgain(s.header.parked.arg, s.header.parked.remainingNs);
  }

  private checkSize(memory: number): void {
    if (memory !== this.memSize) throw new Error(`snapshot of ${memory / 1048576} MiB restored into a shell of ${this.memSize / 1048576} MiB`);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    try {
      this.bus.close();
    } finally {
      this.vm.close();
      this.ram.close();
      this.devicePage.close();
    }
  }
}
