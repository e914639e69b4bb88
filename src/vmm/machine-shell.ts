// A new shell, prepared ahead of any request: a VM, its RAM and device page
// mapped (KVM logging the guest's writes), its vCPU in 64-bit entry state
// over the page tables; a Linux VM's also gets its irqchip and CPUID.
import type { Kvm } from '../kvm/kvm.js';
import { GuestMemory, type GuestArenas } from '../kvm/memory.js';
import type { Vcpu } from '../kvm/vcpu.js';
import type { Vm } from '../kvm/vm.js';
import { patchSregs } from '../sys/kvm-structs.js';
import { DEVICE_PAGE_GPA, NOXS_PAGE_SIZE } from './abi.js';
import { longModeSregs, writePageTables } from './cpu.js';
import { DevicePage } from './device-page.js';

/** What a Linux VM's shell has beyond a unikernel's (see Vm.createLinuxPlatform). */
export interface LinuxShell {
  /** KVM_SET_CPUID2's argument (see linux/cpuid.ts). */
  cpuid: Uint8Array;
}

/** The three pages KVM's TSS takes and its identity-map page, in a Linux VM, below the LAPIC and IOAPIC. */
export const LINUX_TSS_GPA = 0xfffbc000;

export const RAM_SLOT = 0;
export const DEVICE_SLOT = 1;

/** Per-thread state shared by every machine: entry registers, TSC. */
export class CpuTemplate {
  sregs: Uint8Array | undefined;
  tscHz = 0;
  msrs: number[] | undefined;
}
const templates = new WeakMap<Kvm, CpuTemplate>();

export function template(kvm: Kvm): CpuTemplate {
  let t = templates.get(kvm);
  if (!t) {
    t = new CpuTemplate();
    templates.set(kvm, t);
  }
  return t;
}

/** What a new shell is made of. */
export interface NewShell {
  vm: Vm;
  vcpu: Vcpu;
  ram: GuestMemory;
  devicePage: DevicePage;
  tscHz: number;
}

/** Prepares a shell of memSize bytes; frees what it made if a step fails. */
export function newShell(kvm: Kvm, memSize: number, arenas?: GuestArenas, linux?: LinuxShell): NewShell {
  const t = template(kvm);
  const vm = kvm.createVm();
  let ram: GuestMemory | undefined;
  let vcpu: Vcpu;
  let devicePage: DevicePage | undefined;
  try {
    ram = new GuestMemory(memSize, undefined, arenas?.ram);
    devicePage = new DevicePage(new GuestMemory(NOXS_PAGE_SIZE, undefined, arenas?.pages));
    // KVM logs the guest's writes from the start: a snapshot saves the pages written, not the pages resident.
    vm.mapMemory(RAM_SLOT, 0, ram, false, true);
    vm.mapMemory(DEVICE_SLOT, DEVICE_PAGE_GPA, devicePage.memory, true);
    // The irqchip comes before any vCPU (KVM's rule).
    if (linux) vm.createLinuxPlatform(LINUX_TSS_GPA);
    vcpu = vm.createVcpu(0);
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
  } catch (err) {
    vm.close();
    ram?.close();
    devicePage?.close();
    throw err;
  }
  return { vm, vcpu, ram, devicePage, tscHz: t.tscHz };
}
