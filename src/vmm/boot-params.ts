// Linux's x86 boot protocol: struct boot_params (the "zero page") and the
// setup header inside it, as Documentation/arch/x86/boot.rst and
// zero-page.rst give them. Mirrored from guest/include/lightvm/boot_params.h
// (the C side, read by our test guest); test/boot-params-abi.test.ts
// compiles that header and checks every value below.

/** Fields of struct boot_params outside the setup header (offsets in the page). */
export const BOOT_PARAMS = {
  size: 4096,
  extRamdiskImage: 0x0c0,
  extRamdiskSize: 0x0c4,
  extCmdLinePtr: 0x0c8,
  e820Entries: 0x1e8,
  sentinel: 0x1ef,
  hdr: 0x1f1,
  e820Table: 0x2d0,
} as const;

/** The setup header's fields, as offsets in boot_params (and in the bzImage's first sector). */
export const SETUP_HEADER = {
  setupSects: 0x1f1,
  rootFlags: 0x1f2,
  syssize: 0x1f4,
  ramSize: 0x1f8,
  vidMode: 0x1fa,
  rootDev: 0x1fc,
  bootFlag: 0x1fe,
  jump: 0x200,
  header: 0x202,
  version: 0x206,
  realmodeSwtch: 0x208,
  startSysSeg: 0x20c,
  kernelVersion: 0x20e,
  typeOfLoader: 0x210,
  loadflags: 0x211,
  setupMoveSize: 0x212,
  code32Start: 0x214,
  ramdiskImage: 0x218,
  ramdiskSize: 0x21c,
  bootsectKludge: 0x220,
  heapEndPtr: 0x224,
  extLoaderVer: 0x226,
  extLoaderType: 0x227,
  cmdLinePtr: 0x228,
  initrdAddrMax: 0x22c,
  kernelAlignment: 0x230,
  relocatableKernel: 0x234,
  minAlignment: 0x235,
  xloadflags: 0x236,
  cmdlineSize: 0x238,
  hardwareSubarch: 0x23c,
  hardwareSubarchData: 0x240,
  payloadOffset: 0x248,
  payloadLength: 0x24c,
  setupData: 0x250,
  prefAddress: 0x258,
  initSize: 0x260,
  handoverOffset: 0x264,
  kernelInfoOffset: 0x268,
} as const;

/** First byte past the room boot_params has for the setup header (edd_mbr_sig_buffer follows). */
export const SETUP_HEADER_LIMIT = 0x290;

/** One entry of e820_table: packed, 20 bytes. */
export const E820_ENTRY = { size: 20, addr: 0, len: 8, type: 16 } as const;
export const E820_MAX_ENTRIES = 128;
export const E820_RAM = 1;
export const E820_RESERVED = 2;

/** "HdrS" read as a little-endian 32-bit number. */
export const HDR_MAGIC = 0x53726448;
export const BOOT_FLAG = 0xaa55;
/** loadflags: the protected-mode code is loaded at 0x100000 or above (a bzImage). */
export const LOADED_HIGH = 0x01;
/** loadflags: heap_end_ptr is valid (only for the real-mode setup code, which we never run). */
export const CAN_USE_HEAP = 0x80;
/** xloadflags: the kernel has the 64-bit entry point at its load address + 0x200. */
export const XLF_KERNEL_64 = 0x01;
/** Where the 64-bit entry point is, from the protected-mode kernel's load address. */
export const ENTRY_64_OFFSET = 0x200;
/** The first protocol version with xloadflags, hence a declared 64-bit entry (2.12). */
export const MIN_PROTOCOL_VERSION = 0x020c;
/** type_of_loader for a boot loader without an assigned id. */
export const LOADER_UNDEFINED = 0xff;
/** Sectors of setup code when setup_sects is 0 (old kernels). */
export const DEFAULT_SETUP_SECTS = 4;
export const SECTOR = 512;
