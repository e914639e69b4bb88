// The KVM ioctl interface (linux/kvm.h, x86-64): request numbers, exit
// reasons and struct layouts. test/sys-layout.test.ts checks every number
// and offset here against the system's own <linux/kvm.h>.

const KVMIO = 0xae;
const IOC_WRITE = 1;
const IOC_READ = 2;

function io(nr: number): number {
  return (KVMIO << 8) | nr;
}
function iow(nr: number, size: number): number {
  return ((IOC_WRITE << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
}
function ior(nr: number, size: number): number {
  return ((IOC_READ << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
}
function iowr(nr: number, size: number): number {
  return (((IOC_READ | IOC_WRITE) << 30) | (size << 16) | (KVMIO << 8) | nr) >>> 0;
}

/** Struct sizes in bytes. */
export const SIZE = {
  regs: 144,
  sregs: 312,
  segment: 24,
  dtable: 16,
  userspaceMemoryRegion: 32,
  cpuid2: 8,
  cpuidEntry2: 40,
  signalMask: 4,
  guestDebug: 72,
  dirtyLog: 16,
  fpu: 416,
  xsave: 4096,
  msrs: 8,
  msrEntry: 16,
  vcpuEvents: 64,
  lapicState: 1024,
  clockData: 48,
  pitConfig: 64,
  irqLevel: 8,
} as const;

export const KVM = {
  GET_API_VERSION: io(0x00),
  CREATE_VM: io(0x01),
  CHECK_EXTENSION: io(0x03),
  GET_VCPU_MMAP_SIZE: io(0x04),
  GET_SUPPORTED_CPUID: iowr(0x05, SIZE.cpuid2),
  CREATE_VCPU: io(0x41),
  GET_DIRTY_LOG: iow(0x42, SIZE.dirtyLog),
  SET_USER_MEMORY_REGION: iow(0x46, SIZE.userspaceMemoryRegion),
  SET_TSS_ADDR: io(0x47),
  SET_IDENTITY_MAP_ADDR: iow(0x48, 8),
  CREATE_IRQCHIP: io(0x60),
  IRQ_LINE: iow(0x61, SIZE.irqLevel),
  CREATE_PIT2: iow(0x77, SIZE.pitConfig),
  RUN: io(0x80),
  GET_REGS: ior(0x81, SIZE.regs),
  SET_REGS: iow(0x82, SIZE.regs),
  GET_SREGS: ior(0x83, SIZE.sregs),
  SET_SREGS: iow(0x84, SIZE.sregs),
  GET_MSRS: iowr(0x88, SIZE.msrs),
  SET_MSRS: iow(0x89, SIZE.msrs),
  SET_SIGNAL_MASK: iow(0x8b, SIZE.signalMask),
  GET_FPU: ior(0x8c, SIZE.fpu),
  SET_FPU: iow(0x8d, SIZE.fpu),
  SET_CPUID2: iow(0x90, SIZE.cpuid2),
  SET_GUEST_DEBUG: iow(0x9b, SIZE.guestDebug),
  GET_VCPU_EVENTS: ior(0x9f, SIZE.vcpuEvents),
  SET_VCPU_EVENTS: iow(0xa0, SIZE.vcpuEvents),
  GET_TSC_KHZ: io(0xa3),
  GET_XSAVE: ior(0xa4, SIZE.xsave),
  SET_XSAVE: iow(0xa5, SIZE.xsave),
  GET_CLOCK: ior(0x7c, SIZE.clockData),
  SET_CLOCK: iow(0x7b, SIZE.clockData),
} as const;

export const CAP = {
  IRQCHIP: 0,
  PIT2: 33,
  USER_MEMORY: 3,
  SET_TSS_ADDR: 4,
  EXT_CPUID: 7,
  NR_MEMSLOTS: 10,
  SYNC_MMU: 16,
  SET_GUEST_DEBUG: 23,
  VCPU_EVENTS: 41,
  XSAVE: 55,
  GET_TSC_KHZ: 61,
  READONLY_MEM: 81,
  IMMEDIATE_EXIT: 136,
} as const;

export const EXIT = {
  UNKNOWN: 0,
  EXCEPTION: 1,
  IO: 2,
  HYPERCALL: 3,
  DEBUG: 4,
  HLT: 5,
  MMIO: 6,
  IRQ_WINDOW_OPEN: 7,
  SHUTDOWN: 8,
  FAIL_ENTRY: 9,
  INTR: 10,
  NMI: 16,
  INTERNAL_ERROR: 17,
  SYSTEM_EVENT: 24,
} as const;

export const EXIT_NAMES: Record<number, string> = Object.fromEntries(
  Object.entries(EXIT).map(([name, value]) => [value, name.toLowerCase()]),
);

export const MEM_READONLY = 2;
/** kvm_run.internal.suberror when KVM's instruction emulator gave up. */
export const INTERNAL_ERROR_EMULATION = 1;
/** kvm_pit_config.flags: port 0x61's speaker bit is KVM's dummy. */
export const PIT_SPEAKER_DUMMY = 1;
export const MEM_LOG_DIRTY_PAGES = 1;
export const GUESTDBG_ENABLE = 0x1;
export const GUESTDBG_SINGLESTEP = 0x2;

/** Offsets in struct kvm_run. */
export const RUN = {
  immediateExit: 1,
  exitReason: 8,
  // io
  ioDirection: 32,
  ioSize: 33,
  ioPort: 34,
  ioCount: 36,
  ioDataOffset: 40,
  // mmio
  mmioPhysAddr: 32,
  mmioData: 40,
  mmioLen: 48,
  mmioIsWrite: 52,
  // fail_entry
  failEntryReason: 32,
  // internal
  internalSuberror: 32,
  internalNdata: 36,
  internalData: 40,
  // debug.arch
  debugException: 32,
  debugPc: 40,
  // system_event
  systemEventType: 32,
} as const;

export const IO_OUT = 1;

/** struct kvm_regs: 18 u64 in this order. */
export const REGS = [
  'rax', 'rbx', 'rcx', 'rdx', 'rsi', 'rdi', 'rsp', 'rbp',
  'r8', 'r9', 'r10', 'r11', 'r12', 'r13', 'r14', 'r15', 'rip', 'rflags',
] as const;
export type RegName = (typeof REGS)[number];
export const REG_OFFSET = Object.fromEntries(REGS.map((r, i) => [r, i * 8])) as Record<RegName, number>;

/** struct kvm_segment offsets. */
export const SEGMENT = {
  base: 0, limit: 8, selector: 12, type: 14, present: 15, dpl: 16, db: 17, s: 18, l: 19, g: 20, avl: 21, unusable: 22,
} as const;

/** struct kvm_sregs offsets. */
export const SREGS = {
  cs: 0, ds: 24, es: 48, fs: 72, gs: 96, ss: 120, tr: 144, ldt: 168,
  gdt: 192, idt: 208, cr0: 224, cr2: 232, cr3: 240, cr4: 248, cr8: 256, efer: 264, apicBase: 272,
  interruptBitmap: 280,
} as const;
/** struct kvm_dtable offsets. */
export const DTABLE = { base: 0, limit: 8 } as const;

/** struct kvm_userspace_memory_region offsets. */
export const MEMORY_REGION = { slot: 0, flags: 4, guestPhysAddr: 8, memorySize: 16, userspaceAddr: 24 } as const;

/** struct kvm_cpuid2 / kvm_cpuid_entry2 offsets. */
export const CPUID2 = { nent: 0, entries: 8 } as const;
export const CPUID_ENTRY = { function: 0, index: 4, flags: 8, eax: 12, ebx: 16, ecx: 20, edx: 24 } as const;

/** struct kvm_msrs header and kvm_msr_entry offsets. */
export const MSRS = { nmsrs: 0, entries: 8 } as const;
export const MSR_ENTRY = { index: 0, data: 8 } as const;

/** struct kvm_dirty_log offsets. */
export const DIRTY_LOG = { slot: 0, dirtyBitmap: 8 } as const;

/** struct kvm_guest_debug offsets. */
export const GUEST_DEBUG = { control: 0 } as const;

/** struct kvm_vcpu_events: its exception part. */
export const VCPU_EVENTS = { exceptionInjected: 0, exceptionNr: 1, exceptionHasErrorCode: 2, exceptionPending: 3 } as const;

/** struct kvm_signal_mask: u32 len, then the mask bytes. */
export const SIGNAL_MASK = { len: 0, sigset: 4 } as const;
