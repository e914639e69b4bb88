// Writes a bzImage's boot into a VM's RAM (the kernel, command line, initrd
// and zero page, where placeLinux put them) and says where to enter: the
// 64-bit entry with %rsi at the zero page.
import type { BzImage } from './bzimage.js';
import { e820Map } from './e820.js';
import { placeLinux, type LinuxPlacement } from './placement.js';
import type { Vmlinux } from './vmlinux.js';
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
  /** The kernel already unpacked (vmlinux.ts): loaded instead of the decompressor, and entered at its startup_64. */
  vmlinux?: Vmlinux;
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
  if (boot.vmlinux) for (const s of boot.vmlinux.segments) ram.write(s.gpa, s.data);
  else ram.write(place.kernelGpa, image.kernel);
  ram.write(place.cmdlineGpa, cmdline);
  ram.fill(0, place.cmdlineGpa + cmdline.length, 1);
  if (initrd && boot.initrd) ram.write(place.initrdGpa, boot.initrd);
  ram.write(place.zeroPageGpa, buildZeroPage(image, place, e820Map(ram.size)));
  return { rip: boot.vmlinux?.entry ?? place.entry, rsi: place.zeroPageGpa, placement: place };
}
