// Where the monitor puts things in guest-physical memory. Low memory holds
// what the monitor builds (page tables, GDT, boot info); the image starts at
// 1 MiB; the stack grows down from the top of RAM; the noxs device page sits
// at a fixed address above RAM (DEVICE_PAGE_GPA in the ABI).

export const PAGE = 0x1000;
/** Page 0 stays unmapped in the guest's page tables: a NULL access faults. */
export const GDT_GPA = 0x1000;
export const BOOT_INFO_GPA = 0x1800;
export const CMDLINE_GPA = 0x1c00;
/** A few instructions a prepared shell runs once, ahead of any request. */
export const WARMUP_GPA = 0x1f00;
/** The port the warm-up code ends with (not a hypercall port). */
export const WARMUP_PORT = 0x4ff;
export const PML4_GPA = 0x2000;
export const PDPT_GPA = 0x3000;
/** Page table for the first 2 MiB (4 KiB pages, page 0 absent). */
export const PT0_GPA = 0x4000;
/** Page directory that maps the device page (with one 2 MiB page). */
export const PD_DEVICE_GPA = 0x5000;
/** The xenstore ring page of a VM with a xenstore device (the device entry's backend tells the guest). */
export const XENSTORE_RING_GPA = 0x6000;
/** Page directories for RAM, one per GiB, from here up. */
export const PD_RAM_GPA = 0x8000;
export const MAX_RAM_GIB = 3;
export const IMAGE_BASE_GPA = 0x100000;

export const MIN_MEMORY = 2 * 1024 * 1024;
export const MAX_MEMORY = MAX_RAM_GIB * 1024 * 1024 * 1024;
/** Room kept free between the image and the top of RAM for the stack. */
export const MIN_STACK = 64 * 1024;

// A Linux VM (bzImage, 64-bit boot protocol) uses the same low pages for
// its entry GDT and page tables; the monitor's low 64 KiB is reserved in its
// e820 map (Linux keeps the first 64 KiB to itself anyway). The zero page
// and the command line sit just above, in RAM the kernel copies them out of.
/** End of the monitor's low pages in a Linux VM's e820 map. */
export const LINUX_LOW_RESERVED = 0x10000;
export const LINUX_ZERO_PAGE_GPA = 0x10000;
export const LINUX_CMDLINE_GPA = 0x20000;
/** Longest command line the monitor gives a Linux kernel (its cmdline_size may say less); the NUL follows. */
export const LINUX_CMDLINE_MAX = 0xffff;
/** End of conventional low memory in the e820 map (the EBDA and BIOS area above it are not RAM). */
export const LINUX_LOW_RAM_END = 0x9fc00;
