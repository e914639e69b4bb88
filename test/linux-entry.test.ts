// The CPU state for the Linux 64-bit entry, checked without KVM the way the
// CPU would read it: the page tables walked from CR3 for addresses across
// the first 4 GiB, the GDT's descriptors read at the selectors the segment
// registers hold (boot.rst: __BOOT_CS 0x10, __BOOT_DS 0x18, flat), and the
// monitor's other low pages and RAM above 64 KiB left alone.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import { writePageTables } from '../src/vmm/cpu.js';
import { linuxSregs, writeLinuxEntryTables } from '../src/vmm/linux/entry.js';

const MIB = 1024 * 1024;
const GIB = 1024 * MIB;

/** The physical address of va under 4-level paging as the CPU walks it, or undefined if not present. */
function walk(mem: GuestMemory, cr3: bigint, va: number): number | undefined {
  const v = mem.view;
  const entry = (table: bigint, index: number): bigint => v.getBigUint64(Number(table & 0xffffffffff000n) + index * 8, true);
  const a = BigInt(va);
  const pml4e = entry(cr3, Number((a >> 39n) & 511n));
  if ((pml4e & 1n) === 0n) return undefined;
  const pdpte = entry(pml4e, Number((a >> 30n) & 511n));
  if ((pdpte & 1n) === 0n || (pdpte & 0x80n) !== 0n) return undefined; // no 1 GiB pages expected
  const pde = entry(pdpte, Number((a >> 21n) & 511n));
  if ((pde & 1n) === 0n) return undefined;
  assert.ok((pde & 2n) !== 0n, `0x${va.toString(16)} writable`);
  if ((pde & 0x80n) === 0n) return undefined; // a 4 KiB table: not what the Linux map uses
  return Number((pde & 0xfffffffe00000n) | (a & 0x1fffffn));
}

void describe('Linux 64-bit entry state (no KVM)', () => {
  void it('identity-maps the first 4 GiB from CR3, over a shell\'s unikernel tables, touching only the reserved low pages', () => {
    const mem = new GuestMemory(32 * MIB);
    try {
      writePageTables(mem, 32 * MIB);
      mem.fill(0xaa, 0x6000, 4096); // the xenstore ring page
      mem.fill(0x55, 0x10000, 16 * MIB); // RAM the kernel, zero page and command line use
      writeLinuxEntryTables(mem);
      const cr3 = linuxSregs().cr3!;
      for (const va of [0, 0x1000, 0x10000, 0x20000, MIB, 16 * MIB + 0x200, 32 * MIB - 1, GIB + 12345, 3 * GIB - 1, 0xc0000000, 0xfffff000]) {
        assert.equal(walk(mem, cr3, va), va, `0x${va.toString(16)}`);
      }
      assert.equal(walk(mem, cr3, 4 * GIB), undefined, '4 GiB and up not mapped');
      assert.ok(mem.bytes.subarray(0x6000, 0x7000).every((b) => b === 0xaa), 'xenstore ring page untouched');
      assert.ok(mem.bytes.subarray(0x10000, 0x10000 + 16 * MIB).every((b) => b === 0x55), 'RAM above 64 KiB untouched');
    } finally {
      mem.close();
    }
  });

  void it('loads CS with a flat 64-bit code descriptor at 0x10 and DS/ES/SS with flat data at 0x18, in long mode with paging', () => {
    const mem = new GuestMemory(4 * MIB);
    try {
      writeLinuxEntryTables(mem);
      const s = linuxSregs();
      const seg = s.segments!;
      assert.equal(seg.cs!.selector, 0x10);
      for (const r of ['ds', 'es', 'ss'] as const) assert.equal(seg[r]!.selector, 0x18, r);
      const desc = (sel: number): bigint => mem.view.getBigUint64(Number(s.gdt!.base) + sel, true);
      assert.ok(0x18 + 7 <= s.gdt!.limit, 'GDT limit covers __BOOT_DS');
      const cs = desc(0x10);
      const ds = desc(0x18);
      // limit 19:0 all ones with G set (4 GiB), base 31:0 zero
      const flat = (d: bigint): boolean => (d & 0xffffn) === 0xffffn && ((d >> 48n) & 0xfn) === 0xfn && ((d >> 55n) & 1n) === 1n
        && ((d >> 16n) & 0xffffffn) === 0n && (d >> 56n) === 0n;
      assert.ok(flat(cs) && flat(ds), 'both 4 GiB flat');
      assert.equal(Number((cs >> 40n) & 0xffn), 0x9b, 'code: present, execute/read');
      assert.equal(Number((cs >> 53n) & 1n), 1, 'code: 64-bit (L)');
      assert.equal(Number((ds >> 40n) & 0xffn), 0x93, 'data: present, read/write');
      assert.equal(seg.cs!.type, 0xb);
      assert.equal(seg.cs!.l, 1);
      assert.equal(seg.ds!.type, 0x3);
      assert.ok((s.cr0! & (1n << 31n)) !== 0n && (s.cr0! & 1n) !== 0n, 'CR0.PG and PE');
      assert.ok((s.cr4! & (1n << 5n)) !== 0n, 'CR4.PAE');
      assert.equal(s.efer! & 0x500n, 0x500n, 'EFER.LME and LMA');
    } finally {
      mem.close();
    }
  });
});
