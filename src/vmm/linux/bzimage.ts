// A bzImage, as the x86 boot protocol (Documentation/arch/x86/boot.rst)
// describes it: setup sectors with the setup header in the first one, then
// the protected-mode kernel. We never run the real-mode setup code: we need
// the header (copied into the zero page) and the protected-mode part, which
// a 64-bit boot enters at its load address + 0x200. Every check names the
// file and the header field it read.
import {
  BOOT_FLAG, DEFAULT_SETUP_SECTS, HDR_MAGIC, LOADED_HIGH, MIN_PROTOCOL_VERSION, SECTOR, SETUP_HEADER,
  SETUP_HEADER_LIMIT, XLF_KERNEL_64,
} from '../boot-params.js';
import { ImageError, MAX_IMAGE_BYTES } from '../elf.js';

export interface BzImage {
  file: string;
  /** Boot protocol version, e.g. 0x020f for 2.15. */
  version: number;
  setupSects: number;
  /** The setup header as in the file, from 0x1f1 to its end (0x202 + the byte at 0x201). */
  header: Uint8Array;
  loadflags: number;
  xloadflags: number;
  /** The protected-mode kernel: everything after the setup sectors. */
  kernel: Uint8Array;
  prefAddress: number;
  kernelAlignment: number;
  relocatable: boolean;
  /** Bytes the kernel needs from its load address while it decompresses and starts. */
  initSize: number;
  /** The longest command line it takes, without the NUL. */
  cmdlineSize: number;
  /** The highest address the initrd's last byte may have. */
  initrdAddrMax: number;
  /** Bytes of the file. */
  size: number;
  /** The compressed kernel inside the protected-mode part: its offset there and length. */
  payloadOffset: number;
  payloadLength: number;
}

const hex = (n: number | bigint): string => `0x${n.toString(16)}`;

/** Bytes of a file's start that looksLikeBzImage needs. */
export const BZIMAGE_HEAD_BYTES = 0x210;

/** True if the bytes start like a bzImage (boot flag and "HdrS"): how a kernel file is told from an ELF. */
export function looksLikeBzImage(bytes: Uint8Array): boolean {
  if (bytes.length < SETUP_HEADER.version) return false;
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return v.getUint16(SETUP_HEADER.bootFlag, true) === BOOT_FLAG && v.getUint32(SETUP_HEADER.header, true) === HDR_MAGIC;
}

export function parseBzImage(file: string, bytes: Uint8Array): BzImage {
  const fail = (field: string, message: string): never => {
    throw new ImageError(file, field, message);
  };
  if (bytes.length > MAX_IMAGE_BYTES) fail('file', `${bytes.length} bytes is more than the ${MAX_IMAGE_BYTES} allowed`);
  // The header's fields we read end with init_size (0x260 + 4).
  const least = SETUP_HEADER.initSize + 4;
  if (bytes.length < least) fail('file', `${bytes.length} bytes is too short for a bzImage's setup header (${least})`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const u8 = (o: number): number => v.getUint8(o);
  const u16 = (o: number): number => v.getUint16(o, true);
  const u32 = (o: number): number => v.getUint32(o, true);

  if (u16(SETUP_HEADER.bootFlag) !== BOOT_FLAG) fail('boot_flag', `${hex(u16(SETUP_HEADER.bootFlag))} is not ${hex(BOOT_FLAG)}: not a bzImage`);
  if (u32(SETUP_HEADER.header) !== HDR_MAGIC) fail('header', `${hex(u32(SETUP_HEADER.header))} is not "HdrS" (${hex(HDR_MAGIC)}): not a bzImage`);
  const version = u16(SETUP_HEADER.version);
  if (version < MIN_PROTOCOL_VERSION) {
    fail('version', `boot protocol ${version >> 8}.${version & 0xff} is older than 2.12, the first with a declared 64-bit entry`);
  }
  const xloadflags = u16(SETUP_HEADER.xloadflags);
  if ((xloadflags & XLF_KERNEL_64) === 0) fail('xloadflags', `${hex(xloadflags)} lacks XLF_KERNEL_64: the kernel has no 64-bit entry point`);
  const loadflags = u8(SETUP_HEADER.loadflags);
  if ((loadflags & LOADED_HIGH) === 0) fail('loadflags', `${hex(loadflags)} lacks LOADED_HIGH: a zImage, not a bzImage`);
  // The header ends where the jump at 0x200 lands: 0x202 + its 8-bit displacement.
  const headerEnd = SETUP_HEADER.header + u8(SETUP_HEADER.jump + 1);
  if (headerEnd < least || headerEnd > SETUP_HEADER_LIMIT) {
    fail('jump', `the setup header would end at ${hex(headerEnd)}, outside ${hex(least)}..${hex(SETUP_HEADER_LIMIT)}`);
  }
  const setupSects = u8(SETUP_HEADER.setupSects) || DEFAULT_SETUP_SECTS;
  const kernelOffset = (setupSects + 1) * SECTOR;
  if (kernelOffset >= bytes.length) {
    fail('setup_sects', `${setupSects} setup sectors (${kernelOffset} bytes) leave no protected-mode kernel in the file (${bytes.length} bytes)`);
  }
  const kernel = bytes.subarray(kernelOffset);
  const syssize = u32(SETUP_HEADER.syssize) * 16;
  if (syssize === 0 || syssize > kernel.length) {
    fail('syssize', `${syssize} bytes of protected-mode code is not within the ${kernel.length} the file has after the setup sectors`);
  }
  const payloadOffset = u32(SETUP_HEADER.payloadOffset);
  const payloadLength = u32(SETUP_HEADER.payloadLength);
  if (payloadOffset + payloadLength > kernel.length) {
    fail('payload_offset', `payload ${hex(payloadOffset)} + payload_length ${hex(payloadLength)} runs past the protected-mode kernel (${hex(kernel.length)} bytes)`);
  }
  const initSize = u32(SETUP_HEADER.initSize);
  if (initSize < kernel.length) fail('init_size', `${hex(initSize)} is smaller than the protected-mode kernel (${hex(kernel.length)} bytes)`);
  const pref = v.getBigUint64(SETUP_HEADER.prefAddress, true);
  if (pref < 0x100000n || pref >= 1n << 32n) fail('pref_address', `${hex(pref)} is not between 1 MiB and 4 GiB`);
  const prefAddress = Number(pref);
  const relocatable = u8(SETUP_HEADER.relocatableKernel) !== 0;
  const kernelAlignment = u32(SETUP_HEADER.kernelAlignment);
  if (relocatable) {
    if (kernelAlignment === 0 || (kernelAlignment & (kernelAlignment - 1)) !== 0) {
      fail('kernel_alignment', `${hex(kernelAlignment)} is not a power of two`);
    }
    if (prefAddress % kernelAlignment !== 0) fail('pref_address', `${hex(prefAddress)} is not aligned to kernel_alignment ${hex(kernelAlignment)}`);
  }
  const cmdlineSize = u32(SETUP_HEADER.cmdlineSize);
  if (cmdlineSize === 0) fail('cmdline_size', 'is 0: the kernel takes no command line');
  const initrdAddrMax = u32(SETUP_HEADER.initrdAddrMax);
  if (initrdAddrMax < 0x100000) fail('initrd_addr_max', `${hex(initrdAddrMax)} is below 1 MiB`);
  return {
    file, version, setupSects, header: bytes.slice(SETUP_HEADER.setupSects, headerEnd), loadflags, xloadflags, kernel,
    prefAddress, kernelAlignment, relocatable, initSize, cmdlineSize, initrdAddrMax, size: bytes.length, payloadOffset, payloadLength,
  };
}
