import { EINTR, SysError } from '../sys/errors.js';
import * as libc from '../sys/libc.js';
import { KVM, RUN, SIZE, GUESTDBG_ENABLE, GUESTDBG_SINGLESTEP, VCPU_EVENTS } from '../sys/kvm-api.js';
import { encodeRegs, decodeRegs, decodeMsrs, encodeMsrs, encodeSignalMask, type Regs } from '../sys/kvm-structs.js';

/** A vCPU's state as KVM's own structs: stable across kernels of one architecture. */
export interface VcpuState {
  regs: Uint8Array;
  sregs: Uint8Array;
  xsave: Uint8Array;
  events: Uint8Array;
  msrs: { index: number; data: bigint }[];
}
import type { Vm } from './vm.js';

/** One virtual CPU: its fd and the shared kvm_run page. */
export class Vcpu {
  readonly vm: Vm;
  readonly fd: number;
  readonly id: number;
  /** The kvm_run page, read after every KVM_RUN. */
  readonly run: DataView;
  readonly runBytes: Uint8Array;
  private readonly runPtr: libc.Pointer | bigint;
  private closed = false;

  /** runAddress: the kvm_run mapping, when another thread of this process made it. */
  constructor(vm: Vm, fd: number, id: number, runAddress?: bigint) {
    this.vm = vm;
    this.fd = fd;
    this.id = id;
    this.runPtr = runAddress ?? libc.mmap(vm.kvm.vcpuMmapSize, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd);
    const ab = libc.view(this.runPtr, vm.kvm.vcpuMmapSize);
    this.run = new DataView(ab);
    this.runBytes = new Uint8Array(ab);
  }

  /** Enters the guest; returns the exit reason, or -errno (EINTR when kicked). */
  enter(): number {
    const r = libc.ioctlRaw(this.fd, KVM.RUN);
    return r < 0 ? r : this.run.getUint32(RUN.exitReason, true);
  }

  get exitReason(): number {
    return this.run.getUint32(RUN.exitReason, true);
  }

  /**
   * Finishes an instruction left half done by the last exit (an I/O port
   * access), without entering the guest again: KVM_RUN with immediate_exit.
   * Needed before the registers are changed or saved.
   */
  completePendingIo(): void {
    this.run.setUint8(RUN.immediateExit, 1);
    const r = libc.ioctlRaw(this.fd, KVM.RUN);
    this.run.setUint8(RUN.immediateExit, 0);
    if (r < 0 && r !== -EINTR) throw new SysError('KVM_RUN', -r, 'completing pending I/O');
  }

  getRegs(): Regs {
    const buf = new Uint8Array(SIZE.regs);
    libc.ioctlStruct(this.fd, KVM.GET_REGS, buf, 'KVM_GET_REGS');
    return decodeRegs(buf);
  }

  setRegs(regs: Partial<Regs>): void {
    libc.ioctlStruct(this.fd, KVM.SET_REGS, encodeRegs(regs), 'KVM_SET_REGS');
  }

  getSregs(): Uint8Array {
    const buf = new Uint8Array(SIZE.sregs);
    libc.ioctlStruct(this.fd, KVM.GET_SREGS, buf, 'KVM_GET_SREGS');
    return buf;
  }

  setSregs(buf: Uint8Array): void {
    libc.ioctlStruct(this.fd, KVM.SET_SREGS, buf, 'KVM_SET_SREGS');
  }

  setCpuid(cpuid2: Uint8Array): void {
    libc.ioctlStruct(this.fd, KVM.SET_CPUID2, cpuid2, 'KVM_SET_CPUID2');
  }

  /** Delivers exception nr (one without an error code) at the next entry: KVM_SET_VCPU_EVENTS. */
  injectException(nr: number): void {
    const ev = new Uint8Array(SIZE.vcpuEvents);
    libc.ioctlStruct(this.fd, KVM.GET_VCPU_EVENTS, ev, 'KVM_GET_VCPU_EVENTS');
    ev[VCPU_EVENTS.exceptionInjected] = 1;
    ev[VCPU_EVENTS.exceptionNr] = nr;
    ev[VCPU_EVENTS.exceptionHasErrorCode] = 0;
    ev[VCPU_EVENTS.exceptionPending] = 0;
    libc.ioctlStruct(this.fd, KVM.SET_VCPU_EVENTS, ev, 'KVM_SET_VCPU_EVENTS');
  }

  /** The signal mask in force while this vCPU runs guest code. */
  setSignalMask(sigset: Uint8Array): void {
    libc.ioctlStruct(this.fd, KVM.SET_SIGNAL_MASK, encodeSignalMask(sigset), 'KVM_SET_SIGNAL_MASK');
  }

  /** Single-step mode: every guest instruction exits with KVM_EXIT_DEBUG. */
  setSingleStep(on: boolean): void {
    const buf = new Uint8Array(SIZE.guestDebug);
    new DataView(buf.buffer).setUint32(0, on ? GUESTDBG_ENABLE | GUESTDBG_SINGLESTEP : 0, true);
    libc.ioctlStruct(this.fd, KVM.SET_GUEST_DEBUG, buf, 'KVM_SET_GUEST_DEBUG');
  }

  /** Everything KVM holds for this vCPU, as its own structs (see VcpuState). */
  saveState(msrIndices: readonly number[]): VcpuState {
    const get = (req: number, size: number, name: string): Uint8Array => {
      const buf = new Uint8Array(size);
      libc.ioctlStruct(this.fd, req, buf, name);
      return buf;
    };
    const msrBuf = encodeMsrs(msrIndices.map((index) => ({ index, data: 0n })));
    const n = libc.ioctlStruct(this.fd, KVM.GET_MSRS, msrBuf, 'KVM_GET_MSRS');
    return {
      regs: get(KVM.GET_REGS, SIZE.regs, 'KVM_GET_REGS'),
      sregs: get(KVM.GET_SREGS, SIZE.sregs, 'KVM_GET_SREGS'),
      xsave: get(KVM.GET_XSAVE, SIZE.xsave, 'KVM_GET_XSAVE'),
      events: get(KVM.GET_VCPU_EVENTS, SIZE.vcpuEvents, 'KVM_GET_VCPU_EVENTS'),
      msrs: decodeMsrs(msrBuf, n),
    };
  }

  /** Puts back what saveState took (on this or another vCPU, in this or another process). */
  restoreState(s: VcpuState): void {
    libc.ioctlStruct(this.fd, KVM.SET_SREGS, s.sregs, 'KVM_SET_SREGS');
    libc.ioctlStruct(this.fd, KVM.SET_REGS, s.regs, 'KVM_SET_REGS');
    libc.ioctlStruct(this.fd, KVM.SET_XSAVE, s.xsave, 'KVM_SET_XSAVE');
    const n = libc.ioctlStruct(this.fd, KVM.SET_MSRS, encodeMsrs(s.msrs), 'KVM_SET_MSRS');
    if (n !== s.msrs.length) throw new Error(`KVM_SET_MSRS set ${n} of ${s.msrs.length} MSRs (MSR 0x${s.msrs[n]?.index.toString(16)} refused)`);
    libc.ioctlStruct(this.fd, KVM.SET_VCPU_EVENTS, s.events, 'KVM_SET_VCPU_EVENTS');
  }

  /** Which of these MSRs KVM lets this vCPU read (the others are left out of a save). */
  supportedMsrs(candidates: readonly number[]): number[] {
    return candidates.filter((index) => {
      const buf = encodeMsrs([{ index, data: 0n }]);
      return libc.ioctlStruct(this.fd, KVM.GET_MSRS, buf, 'KVM_GET_MSRS') === 1;
    });
  }

  tscKhz(): number {
    return libc.ioctl(this.fd, KVM.GET_TSC_KHZ, 0, 'KVM_GET_TSC_KHZ');
  }

  get runAddress(): bigint {
    return typeof this.runPtr === 'bigint' ? this.runPtr : libc.address(this.runPtr);
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.munmap(this.runPtr, this.vm.kvm.vcpuMmapSize);
    libc.close(this.fd);
  }
}
