// 64-bit entry state built by the monitor: identity page tables, a flat
// GDT, and the special registers of long mode. The guest never runs real or
// protected mode code on the LightVM path.
import type { GuestMemory } from '../kvm/memory.js';
import type { SregsPatch, Segment } from '../sys/kvm-structs.js';
import { DEVICE_PAGE_GPA } from './abi.js';
import {
  GDT_GPA, PD_DEVICE_GPA, PD_RAM_GPA, PDPT_GPA, PML4_GPA, PT0_GPA,
} from './layout.js';

const PTE_P = 1n;
const PTE_W = 2n;
const PTE_PS = 0x80n;
const GIB = 1024 * 1024 * 1024;
const MIB2 = 2 * 1024 * 1024;

const CR0_PE = 1n << 0n;
const CR0_MP = 1n << 1n;
const CR0_ET = 1n << 4n;
const CR0_NE = 1n << 5n;
const CR0_WP = 1n << 16n;
const CR0_AM = 1n << 18n;
const CR0_PG = 1n << 31n;
const CR4_PAE = 1n << 5n;
const EFER_LME = 1n << 8n;
const EFER_LMA = 1n << 10n;

export const CODE_SELECTOR = 0x8;
export const DATA_SELECTOR = 0x10;
const TSS_SELECTOR = 0x18;

// Flat 64-bit code and data descriptors.
const GDT = [0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn];

// The first 2 MiB in 4 KiB pages, page 0 left out so NULL faults.
// Identical for every VM: built once, copied with one memcpy.
const pt0 = (() => {
  const t = new Uint8Array(4096);
  const v = new DataView(t.buffer);
  for (let i = 1; i < 512; i++) v.setBigUint64(i * 8, BigInt(i * 4096) | PTE_P | PTE_W, true);
  return t;
})();

/** Writes the page tables and GDT for memSize bytes of RAM into guest memory. */
export function writePageTables(mem: GuestMemory, memSize: number): void {
  mem.write(PT0_GPA, pt0);
  mem.setBigUint64(PML4_GPA, BigInt(PDPT_GPA) | PTE_P | PTE_W);
  const gibs = Math.ceil(memSize / GIB);
  for (let g = 0; g < gibs; g++) {
    const pd = PD_RAM_GPA + g * 4096;
    mem.setBigUint64(PDPT_GPA + g * 8, BigInt(pd) | PTE_P | PTE_W);
    const first = g * 512;
    const last = Math.min(first + 512, Math.ceil(memSize / MIB2));
    for (let i = first; i < last; i++) {
      const entry = i === 0 ? BigInt(PT0_GPA) | PTE_P | PTE_W : BigInt(i * MIB2) | PTE_P | PTE_W | PTE_PS;
      mem.setBigUint64(pd + (i - first) * 8, entry);
    }
  }
  // The device page: writable in the guest's page tables on purpose, so that
  // a write reaches KVM's read-only memory slot and is reported, not faulted.
  // One 2 MiB page maps it (a page table for it would be one more page per
  // VM); the rest of that 2 MiB has no memory slot, and an access there is
  // an MMIO exit that ends the VM.
  const dev = DEVICE_PAGE_GPA;
  mem.setBigUint64(PDPT_GPA + Math.floor(dev / GIB) * 8, BigInt(PD_DEVICE_GPA) | PTE_P | PTE_W);
  mem.setBigUint64(PD_DEVICE_GPA + Math.floor((dev % GIB) / MIB2) * 8, BigInt(dev - (dev % MIB2)) | PTE_P | PTE_W | PTE_PS);
  GDT.forEach((d, i) => mem.setBigUint64(GDT_GPA + i * 8, d));
}

function segment(selector: number, type: number, l: number, db: number): Segment {
  return { base: 0n, limit: 0xffffffff, selector, type, present: 1, dpl: 0, db, s: 1, l, g: 1 };
}

/** Special registers for direct entry in 64-bit mode. */
export function longModeSregs(): SregsPatch {
  const code = segment(CODE_SELECTOR, 0xb, 1, 0);
  const data = segment(DATA_SELECTOR, 0x3, 0, 1);
  // KVM insists on a usable busy TSS; the guest never switches privilege.
  const tr: Segment = { base: 0n, limit: 0x67, selector: TSS_SELECTOR, type: 0xb, present: 1, dpl: 0, db: 0, s: 0, l: 0, g: 0 };
  return {
    segments: { cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr },
    gdt: { base: BigInt(GDT_GPA), limit: GDT.length * 8 - 1 },
    idt: { base: 0n, limit: 0 },
    cr0: CR0_PE | CR0_MP | CR0_ET | CR0_NE | CR0_WP | CR0_AM | CR0_PG,
    cr3: BigInt(PML4_GPA),
    cr4: CR4_PAE,
    efer: EFER_LME | EFER_LMA,
  };
}
