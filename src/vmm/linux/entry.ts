// The CPU state the 64-bit boot protocol asks for (boot.rst, "64-bit Boot
// Protocol"): long mode with paging; identity mapping of at least the
// kernel's init_size, the zero page and the command line (we map the whole
// first 4 GiB with 2 MiB pages, so that also covers MMIO a kernel probes);
// a GDT with flat __BOOT_CS (0x10, execute/read) and __BOOT_DS (0x18,
// read/write), CS and DS/ES/SS loaded with them; interrupts off; %rsi the
// zero page. Written over a prepared shell's unikernel tables, in the
// monitor's reserved low 64 KiB; the unikernel entry is left as it was.
import type { SregsPatch, Segment } from '../../sys/kvm-structs.js';
import { longModeSregs } from '../cpu.js';
import { GDT_GPA, LINUX_LOW_RESERVED, PD_RAM_GPA, PDPT_GPA, PML4_GPA } from '../layout.js';
import type { GuestWrites } from './load.js';

export const BOOT_CS = 0x10;
export const BOOT_DS = 0x18;
/** KVM wants a usable TSS selector; the kernel loads its own before it needs one. */
const BOOT_TR = 0x20;
/** The GiBs of identity map, one page directory each from PD_RAM_GPA. */
export const LINUX_MAPPED_GIB = 4;

const PTE_P = 1n;
const PTE_W = 2n;
const PTE_PS = 0x80n;
const MIB2 = 2 * 1024 * 1024;

/** Null, null, __BOOT_CS (flat 64-bit code), __BOOT_DS (flat data): the selectors boot.rst names. */
export const LINUX_GDT = [0n, 0n, 0x00af9b000000ffffn, 0x00cf93000000ffffn] as const;

if (PD_RAM_GPA + LINUX_MAPPED_GIB * 4096 > LINUX_LOW_RESERVED) throw new Error('layout: Linux page directories overrun the reserved low pages');

/** The identity map, as the bytes of the PML4, PDPT and page directories. */
function tables(): { pml4: Uint8Array; pdpt: Uint8Array; pds: Uint8Array } {
  const pml4 = new Uint8Array(4096);
  const pdpt = new Uint8Array(4096);
  const pds = new Uint8Array(LINUX_MAPPED_GIB * 4096);
  new DataView(pml4.buffer).setBigUint64(0, BigInt(PDPT_GPA) | PTE_P | PTE_W, true);
  const p = new DataView(pdpt.buffer);
  const d = new DataView(pds.buffer);
  for (let g = 0; g < LINUX_MAPPED_GIB; g++) p.setBigUint64(g * 8, BigInt(PD_RAM_GPA + g * 4096) | PTE_P | PTE_W, true);
  for (let i = 0; i < LINUX_MAPPED_GIB * 512; i++) d.setBigUint64(i * 8, BigInt(i * MIB2) | PTE_P | PTE_W | PTE_PS, true);
  return { pml4, pdpt, pds };
}
// Built on the first Linux VM, not at import: the unikernel run path loads this module too.
let built: ReturnType<typeof tables> | undefined;

/** Writes the Linux entry's GDT and identity map over whatever the shell had there. */
export function writeLinuxEntryTables(ram: GuestWrites): void {
  built ??= tables();
  ram.write(PML4_GPA, built.pml4);
  ram.write(PDPT_GPA, built.pdpt);
  ram.write(PD_RAM_GPA, built.pds);
  const gdt = new Uint8Array(LINUX_GDT.length * 8);
  const v = new DataView(gdt.buffer);
  LINUX_GDT.forEach((e, i) => v.setBigUint64(i * 8, e, true));
  ram.write(GDT_GPA, gdt);
}

/** Special registers for the Linux 64-bit entry: long mode as for unikernels, the protocol's selectors. */
export function linuxSregs(): SregsPatch {
  const base = longModeSregs();
  const seg = base.segments!;
  const code: Segment = { ...seg.cs!, selector: BOOT_CS };
  const data: Segment = { ...seg.ds!, selector: BOOT_DS };
  const tr: Segment = { ...seg.tr!, selector: BOOT_TR };
  return {
    ...base,
    segments: { cs: code, ds: data, es: data, fs: data, gs: data, ss: data, tr },
    gdt: { base: BigInt(GDT_GPA), limit: LINUX_GDT.length * 8 - 1 },
  };
}
