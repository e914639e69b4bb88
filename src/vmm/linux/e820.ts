// The e820 map a Linux VM is given: its RAM, less the monitor's low pages,
// the hole where a PC has its EBDA, VGA and BIOS, and the noxs device page
// above RAM marked reserved (so the kernel never puts anything there).
import { DEVICE_PAGE_GPA, NOXS_PAGE_SIZE } from '../abi.js';
import { E820_RAM, E820_RESERVED } from '../boot-params.js';
import { IMAGE_BASE_GPA, LINUX_LOW_RAM_END, LINUX_LOW_RESERVED, MAX_MEMORY } from '../layout.js';

export interface E820Entry {
  addr: number;
  len: number;
  type: number;
}

export function e820Map(memSize: number): E820Entry[] {
  if (!Number.isSafeInteger(memSize) || memSize <= IMAGE_BASE_GPA || memSize > MAX_MEMORY) {
    throw new RangeError(`memory: ${memSize} bytes is not above 1 MiB and at most ${MAX_MEMORY}`);
  }
  return [
    { addr: 0, len: LINUX_LOW_RESERVED, type: E820_RESERVED },
    { addr: LINUX_LOW_RESERVED, len: LINUX_LOW_RAM_END - LINUX_LOW_RESERVED, type: E820_RAM },
    { addr: IMAGE_BASE_GPA, len: memSize - IMAGE_BASE_GPA, type: E820_RAM },
    { addr: DEVICE_PAGE_GPA, len: NOXS_PAGE_SIZE, type: E820_RESERVED },
  ];
}
