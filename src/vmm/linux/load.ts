// Writes a bzImage's boot into a VM's RAM (the kernel, command line, initrd
// and zero page, where placeLinux put them) and says where to enter: the
// 64-bit entry with %rsi at the zero page.
import type { BzImage } from './bzimage.js';
import { e820Map } from './e820.js';
import { placeLinux, type LinuxPlacement } from './placement.js';
import { buildZeroPage } from './zero-page.js';

/** The part of guest memory a Linux boot writes through (GuestMemory has it). */
export interface GuestWrites {
  readonly size: number;
  write(offset: number, data: Uint8Array): void;
  fill(value: number, offset: number, len: number): void;
}

export interface LinuxBoot {
  initrdFile?: string;
  initrd?: Uint8Array;
  cmdline: string;
}

export interface LinuxEntry {
  rip: number;
  rsi: number;
  placement: LinuxPlacement;
}

export function loadLinux(ram: GuestWrites, image: BzImage, boot: LinuxBoot): LinuxEntry {
  const cmdline = new TextEncoder().encode(boot.cmdline);
  const initrd = boot.initrd && boot.initrd.length > 0 ? { file: boot.initrdFile ?? 'initrd', size: boot.initrd.length } : undefined;
  const place = placeLinux(image, ram.size, cmdline.length, initrd);
  ram.write(place.kernelGpa, image.kernel);
  ram.write(place.cmdlineGpa, cmdline);
  ram.fill(0, place.cmdlineGpa + cmdline.length, 1);
  if (initrd && boot.initrd) ram.write(place.initrdGpa, boot.initrd);
  ram.write(place.zeroPageGpa, buildZeroPage(image, place, e820Map(ram.size)));
  return { rip: place.entry, rsi: place.zeroPageGpa, placement: place };
}
