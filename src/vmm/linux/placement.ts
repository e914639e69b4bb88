// Where a bzImage's parts go in a VM's RAM: the protected-mode kernel at its
// pref_address (with init_size bytes free from there, where it decompresses),
// the command line and zero page in low memory, and the initrd as high as
// initrd_addr_max and RAM allow (the kernel's own choice for bootloaders),
// above the kernel's init_size. Refusals name the file and what is short.
import { ENTRY_64_OFFSET } from '../boot-params.js';
import { ImageError } from '../elf.js';
import { LINUX_CMDLINE_GPA, LINUX_CMDLINE_MAX, LINUX_ZERO_PAGE_GPA, PAGE } from '../layout.js';
import type { BzImage } from './bzimage.js';

export interface LinuxPlacement {
  kernelGpa: number;
  /** The 64-bit entry point: kernelGpa + 0x200. */
  entry: number;
  zeroPageGpa: number;
  cmdlineGpa: number;
  /** 0 without an initrd. */
  initrdGpa: number;
  initrdSize: number;
}

const MIB = 1024 * 1024;
const hex = (n: number): string => `0x${n.toString(16)}`;

/** cmdlineBytes without the NUL; initrd is the initrd's file name and size, if there is one. */
export function placeLinux(image: BzImage, memSize: number, cmdlineBytes: number, initrd?: { file: string; size: number }): LinuxPlacement {
  const limit = Math.min(image.cmdlineSize, LINUX_CMDLINE_MAX);
  if (cmdlineBytes > limit) {
    throw new ImageError(image.file, 'cmdline', `${cmdlineBytes} bytes is longer than the ${limit} the kernel takes (cmdline_size ${image.cmdlineSize})`);
  }
  const kernelGpa = image.prefAddress;
  const kernelEnd = kernelGpa + image.initSize;
  if (kernelEnd > memSize) {
    throw new ImageError(image.file, 'memory',
      `the kernel needs ${hex(image.initSize)} bytes (init_size) from ${hex(kernelGpa)} (pref_address), up to ${Math.ceil(kernelEnd / MIB)} MiB: ` +
      `${memSize / MIB} MiB of memory is not enough`);
  }
  let initrdGpa = 0;
  const initrdSize = initrd?.size ?? 0;
  if (initrd && initrdSize > 0) {
    const top = Math.min(memSize, image.initrdAddrMax + 1);
    initrdGpa = Math.floor((top - initrdSize) / PAGE) * PAGE;
    if (initrdGpa < kernelEnd) {
      throw new ImageError(initrd.file, 'memory',
        `the initrd (${initrdSize} bytes) does not fit between the kernel's end at ${hex(kernelEnd)} and ${hex(top)} ` +
        `(RAM or the kernel's initrd_addr_max ${hex(image.initrdAddrMax)}): raise the memory size`);
    }
  }
  return {
    kernelGpa, entry: kernelGpa + ENTRY_64_OFFSET, zeroPageGpa: LINUX_ZERO_PAGE_GPA, cmdlineGpa: LINUX_CMDLINE_GPA, initrdGpa, initrdSize,
  };
}
