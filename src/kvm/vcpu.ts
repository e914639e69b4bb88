import { EINTR, SysError } from '../sys/errors.js';
import * as libc from '../sys/libc.js';
import { KVM, RUN, SIZE, GUESTDBG_ENABLE, GUESTDBG_SINGLESTEP } from '../sys/kvm-api.js';
import { encodeRegs, decodeRegs, encodeSignalMask, type Regs } from '../sys/kvm-structs.js';
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
