import * as libc from '../sys/libc.js';
import { KVM, MEM_LOG_DIRTY_PAGES, MEM_READONLY, PIT_SPEAKER_DUMMY } from '../sys/kvm-api.js';
import { encodeDirtyLog, encodeIrqLevel, encodeMemoryRegion, encodePitConfig, encodeU64 } from '../sys/kvm-structs.js';
import { parkFd } from './fds.js';
import type { Kvm } from './kvm.js';
import { bitmapBytes, GuestMemory, PAGE_SIZE } from './memory.js';
import { Vcpu } from './vcpu.js';

export interface MemorySlot {
  slot: number;
  gpa: number;
  memory: GuestMemory;
  readonly: boolean;
  /** KVM logs the pages the guest writes (KVM_GET_DIRTY_LOG). */
  logDirty: boolean;
}

/** One KVM virtual machine: its fd, memory slots and vCPUs. */
export class Vm {
  readonly kvm: Kvm;
  readonly fd: number;
  private readonly slots: MemorySlot[] = [];
  private readonly vcpus: Vcpu[] = [];
  private closed = false;

  constructor(kvm: Kvm, fd: number) {
    this.kvm = kvm;
    this.fd = fd;
  }

  /**
   * Maps memory into the guest at gpa; a read-only slot turns guest writes
   * into MMIO exits; with logDirty KVM logs the pages the guest writes.
   */
  mapMemory(slot: number, gpa: number, memory: GuestMemory, readonly = false, logDirty = false): MemorySlot {
    const flags = (readonly ? MEM_READONLY : 0) | (logDirty ? MEM_LOG_DIRTY_PAGES : 0);
    const region = encodeMemoryRegion(slot, flags, gpa, memory.size, memory.hostAddress);
    libc.ioctlStruct(this.fd, KVM.SET_USER_MEMORY_REGION, region, 'KVM_SET_USER_MEMORY_REGION');
    const s = { slot, gpa, memory, readonly, logDirty };
    this.slots.push(s);
    return s;
  }

  /** Records a slot another thread of this process set up (no ioctl). */
  recordSlot(slot: number, gpa: number, memory: GuestMemory, readonly: boolean, logDirty = false): void {
    this.slots.push({ slot, gpa, memory, readonly, logDirty });
  }

  /** Wraps a vCPU that another thread of this process created. */
  adoptVcpu(fd: number, id: number, runAddress: bigint): Vcpu {
    const vcpu = new Vcpu(this, fd, id, runAddress);
    this.vcpus.push(vcpu);
    return vcpu;
  }

  /**
   * The pages of a slot written since the last call (one bit per page), and
   * the log is cleared: KVM_GET_DIRTY_LOG.
   */
  dirtyPages(slot: MemorySlot): Uint8Array {
    if (!slot.logDirty) throw new Error(`memory slot ${slot.slot} does not log the pages the guest writes`);
    const bytes = bitmapBytes(slot.memory.size);
    // KVM writes the bitmap through a pointer: it must live outside the JS heap.
    const bitmap = new GuestMemory(Math.ceil(bytes / PAGE_SIZE) * PAGE_SIZE);
    try {
      libc.ioctlStruct(this.fd, KVM.GET_DIRTY_LOG, encodeDirtyLog(slot.slot, bitmap.hostAddress), 'KVM_GET_DIRTY_LOG');
      return bitmap.bytes.slice(0, bytes);
    } finally {
      bitmap.close();
    }
  }

  /**
   * The platform a Linux kernel expects, emulated inside KVM: the PIC pair,
   * the IOAPIC and a local APIC per vCPU (KVM_CREATE_IRQCHIP, before any
   * vCPU), the 8254 PIT, and the two pages KVM needs below 4 GiB for
   * real-mode emulation on Intel (the TSS and the identity-map page).
   * Not for unikernel VMs: with an irqchip a memory slot costs far more.
   */
  createLinuxPlatform(tssGpa: number): void {
    libc.ioctl(this.fd, KVM.SET_TSS_ADDR, tssGpa, 'KVM_SET_TSS_ADDR');
    libc.ioctlStruct(this.fd, KVM.SET_IDENTITY_MAP_ADDR, encodeU64(BigInt(tssGpa + 0x3000)), 'KVM_SET_IDENTITY_MAP_ADDR');
    libc.ioctl(this.fd, KVM.CREATE_IRQCHIP, 0, 'KVM_CREATE_IRQCHIP');
    libc.ioctlStruct(this.fd, KVM.CREATE_PIT2, encodePitConfig(PIT_SPEAKER_DUMMY), 'KVM_CREATE_PIT2');
  }

  /** Drives an interrupt line of the in-kernel irqchip (KVM_IRQ_LINE). */
  setIrqLine(irq: number, high: boolean): void {
    libc.ioctlStruct(this.fd, KVM.IRQ_LINE, encodeIrqLevel(irq, high ? 1 : 0), 'KVM_IRQ_LINE');
  }

  get slotList(): readonly MemorySlot[] {
    return this.slots;
  }

  createVcpu(id = 0): Vcpu {
    const fd = parkFd(libc.ioctl(this.fd, KVM.CREATE_VCPU, id, 'KVM_CREATE_VCPU'), 'vcpu');
    let vcpu: Vcpu;
    try {
      vcpu = new Vcpu(this, fd, id);
    } catch (err) {
      libc.close(fd);
      throw err;
    }
    this.vcpus.push(vcpu);
    return vcpu;
  }

  /** Closes the vCPUs and the VM; the caller still owns (and frees) the memory. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const vcpu of this.vcpus) vcpu.close();
    libc.close(this.fd);
  }
}
