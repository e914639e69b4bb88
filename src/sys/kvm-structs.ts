// Encoders and decoders for the KVM structs the monitor fills in, so that
// struct offsets stay in src/sys.
import {
  CPUID2, CPUID_ENTRY, DIRTY_LOG, DTABLE, MEMORY_REGION, MSR_ENTRY, MSRS, REG_OFFSET, REGS, SEGMENT, SIGNAL_MASK, SIZE, SREGS,
  type RegName,
} from './kvm-api.js';

export type Regs = Record<RegName, bigint>;

export function encodeRegs(regs: Partial<Regs>, buf = new Uint8Array(SIZE.regs)): Uint8Array {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const name of REGS) {
    const value = regs[name];
    if (value !== undefined) v.setBigUint64(REG_OFFSET[name], value, true);
  }
  return buf;
}

export function decodeRegs(buf: Uint8Array): Regs {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out = {} as Regs;
  for (const name of REGS) out[name] = v.getBigUint64(REG_OFFSET[name], true);
  return out;
}

export interface Segment {
  base: bigint;
  limit: number;
  selector: number;
  type: number;
  present: number;
  dpl: number;
  db: number;
  s: number;
  l: number;
  g: number;
}

export type SegmentName = 'cs' | 'ds' | 'es' | 'fs' | 'gs' | 'ss' | 'tr' | 'ldt';

export interface SregsPatch {
  segments?: Partial<Record<SegmentName, Segment>>;
  gdt?: { base: bigint; limit: number };
  idt?: { base: bigint; limit: number };
  cr0?: bigint;
  cr3?: bigint;
  cr4?: bigint;
  efer?: bigint;
}

/** Writes the given fields into a kvm_sregs buffer (read first with KVM_GET_SREGS). */
export function patchSregs(buf: Uint8Array, patch: SregsPatch): void {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  for (const [name, seg] of Object.entries(patch.segments ?? {}) as [SegmentName, Segment][]) {
    const o = SREGS[name];
    v.setBigUint64(o + SEGMENT.base, seg.base, true);
    v.setUint32(o + SEGMENT.limit, seg.limit, true);
    v.setUint16(o + SEGMENT.selector, seg.selector, true);
    v.setUint8(o + SEGMENT.type, seg.type);
    v.setUint8(o + SEGMENT.present, seg.present);
    v.setUint8(o + SEGMENT.dpl, seg.dpl);
    v.setUint8(o + SEGMENT.db, seg.db);
    v.setUint8(o + SEGMENT.s, seg.s);
    v.setUint8(o + SEGMENT.l, seg.l);
    v.setUint8(o + SEGMENT.g, seg.g);
    v.setUint8(o + SEGMENT.avl, 0);
    v.setUint8(o + SEGMENT.unusable, 0);
  }
  for (const table of ['gdt', 'idt'] as const) {
    const t = patch[table];
    if (!t) continue;
    v.setBigUint64(SREGS[table] + DTABLE.base, t.base, true);
    v.setUint16(SREGS[table] + DTABLE.limit, t.limit, true);
  }
  for (const reg of ['cr0', 'cr3', 'cr4', 'efer'] as const) {
    const value = patch[reg];
    if (value !== undefined) v.setBigUint64(SREGS[reg], value, true);
  }
}

export function sregsField(buf: Uint8Array, reg: 'cr0' | 'cr2' | 'cr3' | 'cr4' | 'efer'): bigint {
  return new DataView(buf.buffer, buf.byteOffset, buf.byteLength).getBigUint64(SREGS[reg], true);
}

export function encodeMemoryRegion(
  slot: number, flags: number, guestPhysAddr: number, size: number, userspaceAddr: bigint,
): Uint8Array {
  const buf = new Uint8Array(SIZE.userspaceMemoryRegion);
  const v = new DataView(buf.buffer);
  v.setUint32(MEMORY_REGION.slot, slot, true);
  v.setUint32(MEMORY_REGION.flags, flags, true);
  v.setBigUint64(MEMORY_REGION.guestPhysAddr, BigInt(guestPhysAddr), true);
  v.setBigUint64(MEMORY_REGION.memorySize, BigInt(size), true);
  v.setBigUint64(MEMORY_REGION.userspaceAddr, userspaceAddr, true);
  return buf;
}

export interface CpuidEntry {
  function: number;
  index: number;
  flags: number;
  eax: number;
  ebx: number;
  ecx: number;
  edx: number;
}

export function cpuidBuffer(capacity: number): Uint8Array {
  const buf = new Uint8Array(SIZE.cpuid2 + capacity * SIZE.cpuidEntry2);
  new DataView(buf.buffer).setUint32(CPUID2.nent, capacity, true);
  return buf;
}

export function decodeCpuid(buf: Uint8Array): CpuidEntry[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const n = v.getUint32(CPUID2.nent, true);
  const out: CpuidEntry[] = [];
  for (let i = 0; i < n; i++) {
    const o = CPUID2.entries + i * SIZE.cpuidEntry2;
    out.push({
      function: v.getUint32(o + CPUID_ENTRY.function, true),
      index: v.getUint32(o + CPUID_ENTRY.index, true),
      flags: v.getUint32(o + CPUID_ENTRY.flags, true),
      eax: v.getUint32(o + CPUID_ENTRY.eax, true),
      ebx: v.getUint32(o + CPUID_ENTRY.ebx, true),
      ecx: v.getUint32(o + CPUID_ENTRY.ecx, true),
      edx: v.getUint32(o + CPUID_ENTRY.edx, true),
    });
  }
  return out;
}

export function encodeCpuid(entries: readonly CpuidEntry[]): Uint8Array {
  const buf = cpuidBuffer(entries.length);
  const v = new DataView(buf.buffer);
  entries.forEach((e, i) => {
    const o = CPUID2.entries + i * SIZE.cpuidEntry2;
    v.setUint32(o + CPUID_ENTRY.function, e.function, true);
    v.setUint32(o + CPUID_ENTRY.index, e.index, true);
    v.setUint32(o + CPUID_ENTRY.flags, e.flags, true);
    v.setUint32(o + CPUID_ENTRY.eax, e.eax, true);
    v.setUint32(o + CPUID_ENTRY.ebx, e.ebx, true);
    v.setUint32(o + CPUID_ENTRY.ecx, e.ecx, true);
    v.setUint32(o + CPUID_ENTRY.edx, e.edx, true);
  });
  return buf;
}

/** struct kvm_pit_config: flags, then padding. */
export function encodePitConfig(flags: number): Uint8Array {
  const buf = new Uint8Array(SIZE.pitConfig);
  new DataView(buf.buffer).setUint32(0, flags, true);
  return buf;
}

/** struct kvm_irq_level: the line (a GSI) and its level. */
export function encodeIrqLevel(irq: number, level: number): Uint8Array {
  const buf = new Uint8Array(SIZE.irqLevel);
  const v = new DataView(buf.buffer);
  v.setUint32(0, irq, true);
  v.setUint32(4, level, true);
  return buf;
}

/** A u64 as an ioctl's by-pointer argument. */
export function encodeU64(value: bigint): Uint8Array {
  const buf = new Uint8Array(8);
  new DataView(buf.buffer).setBigUint64(0, value, true);
  return buf;
}

/** A kvm_msrs buffer asking for (or setting) these MSRs. */
export function encodeMsrs(entries: readonly { index: number; data: bigint }[]): Uint8Array {
  const buf = new Uint8Array(SIZE.msrs + entries.length * SIZE.msrEntry);
  const v = new DataView(buf.buffer);
  v.setUint32(MSRS.nmsrs, entries.length, true);
  entries.forEach((e, i) => {
    const o = MSRS.entries + i * SIZE.msrEntry;
    v.setUint32(o + MSR_ENTRY.index, e.index, true);
    v.setBigUint64(o + MSR_ENTRY.data, e.data, true);
  });
  return buf;
}

export function decodeMsrs(buf: Uint8Array, count: number): { index: number; data: bigint }[] {
  const v = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const out: { index: number; data: bigint }[] = [];
  for (let i = 0; i < count; i++) {
    const o = MSRS.entries + i * SIZE.msrEntry;
    out.push({ index: v.getUint32(o + MSR_ENTRY.index, true), data: v.getBigUint64(o + MSR_ENTRY.data, true) });
  }
  return out;
}

/** struct kvm_dirty_log for a slot, pointing at a bitmap held in this process. */
export function encodeDirtyLog(slot: number, bitmapAddress: bigint): Uint8Array {
  const buf = new Uint8Array(SIZE.dirtyLog);
  const v = new DataView(buf.buffer);
  v.setUint32(DIRTY_LOG.slot, slot, true);
  v.setBigUint64(DIRTY_LOG.dirtyBitmap, bitmapAddress, true);
  return buf;
}

/** struct kvm_signal_mask holding the kernel's 8-byte sigset. */
export function encodeSignalMask(sigset: Uint8Array): Uint8Array {
  const buf = new Uint8Array(SIGNAL_MASK.sigset + 8);
  new DataView(buf.buffer).setUint32(SIGNAL_MASK.len, 8, true);
  buf.set(sigset.subarray(0, 8), SIGNAL_MASK.sigset);
  return buf;
}
