// The zero page (struct boot_params) a 64-bit boot hands the kernel in %rsi:
// zeroed, the kernel's own setup header copied in, then what a boot loader
// fills: loader type, command line, initrd, and the e820 map.
import {
  BOOT_PARAMS, CAN_USE_HEAP, E820_ENTRY, E820_MAX_ENTRIES, LOADER_UNDEFINED, SETUP_HEADER,
} from '../boot-params.js';
import type { BzImage } from './bzimage.js';
import type { E820Entry } from './e820.js';
import type { LinuxPlacement } from './placement.js';

const lo32 = (n: number): number => n >>> 0;
const hi32 = (n: number): number => Math.floor(n / 2 ** 32);

export function buildZeroPage(image: BzImage, place: LinuxPlacement, e820: readonly E820Entry[]): Uint8Array {
  if (e820.length > E820_MAX_ENTRIES) throw new RangeError(`e820: ${e820.length} entries is more than the ${E820_MAX_ENTRIES} the zero page holds`);
  const page = new Uint8Array(BOOT_PARAMS.size);
  const v = new DataView(page.buffer);
  page.set(image.header, BOOT_PARAMS.hdr);
  v.setUint8(SETUP_HEADER.typeOfLoader, LOADER_UNDEFINED);
  // No real-mode setup code runs, so there is no setup heap to declare.
  v.setUint8(SETUP_HEADER.loadflags, image.loadflags & ~CAN_USE_HEAP);
  v.setUint32(SETUP_HEADER.cmdLinePtr, lo32(place.cmdlineGpa), true);
  v.setUint32(BOOT_PARAMS.extCmdLinePtr, hi32(place.cmdlineGpa), true);
  v.setUint32(SETUP_HEADER.ramdiskImage, lo32(place.initrdGpa), true);
  v.setUint32(BOOT_PARAMS.extRamdiskImage, hi32(place.initrdGpa), true);
  v.setUint32(SETUP_HEADER.ramdiskSize, lo32(place.initrdSize), true);
  v.setUint32(BOOT_PARAMS.extRamdiskSize, hi32(place.initrdSize), true);
  v.setUint8(BOOT_PARAMS.e820Entries, e820.length);
  e820.forEach((e, i) => {
    const o = BOOT_PARAMS.e820Table + i * E820_ENTRY.size;
    v.setBigUint64(o + E820_ENTRY.addr, BigInt(e.addr), true);
    v.setBigUint64(o + E820_ENTRY.len, BigInt(e.len), true);
    v.setUint32(o + E820_ENTRY.type, e.type, true);
  });
  return page;
}
