// A guest-virtual address to guest-physical, through the guest's own 4-level
// page tables (CR3): how the monitor reads the instruction a Linux guest
// stopped at. 1 GiB and 2 MiB pages are followed; undefined where nothing
// is mapped or the tables leave RAM.
const PRESENT = 1n;
const LARGE = 0x80n;
const ADDR = 0x000ffffffffff000n;
const SHIFTS = [39n, 30n, 21n, 12n] as const;

export function guestPhysical(ram: Uint8Array, cr3: bigint, va: bigint): number | undefined {
  const v = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
  let table = cr3 & ADDR;
  for (let level = 0; level < 4; level++) {
    const at = Number(table + ((va >> SHIFTS[level]!) & 0x1ffn) * 8n);
    if (at + 8 > ram.length) return undefined;
    const e = v.getBigUint64(at, true);
    if ((e & PRESENT) === 0n) return undefined;
    if ((level === 1 || level === 2) && (e & LARGE) !== 0n) {
      const size = 1n << SHIFTS[level]!;
      return Number((e & ADDR & ~(size - 1n)) + (va & (size - 1n)));
    }
    table = e & ADDR;
  }
  return Number(table + (va & 0xfffn));
}
