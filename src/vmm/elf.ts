// A loader for static ELF64 x86-64 images: validates everything it reads and
// says precisely what is wrong and where. Written here rather than taken
// from a library: it needs only program headers, and every check is ours.
import { DEVICE_PAGE_GPA } from './abi.js';
import { IMAGE_BASE_GPA } from './layout.js';
import { FieldError } from './field-error.js';

/** A malformed or unloadable image: names the file and the offending field. */
export class ImageError extends FieldError {
  declare readonly file: string;
  constructor(file: string, field: string, reason: string) {
    super(field, reason, { file });
    this.name = 'ImageError';
  }
}

export interface Segment {
  /** Guest-physical address of the first byte. */
  gpa: number;
  /** Bytes taken from the file (p_filesz of them). */
  data: Uint8Array;
  /** Bytes in memory; those past data.length are zero. */
  memsz: number;
  flags: number;
}

export interface Image {
  file: string;
  entry: number;
  segments: Segment[];
  /** First page-aligned address past every segment. */
  end: number;
  /** Bytes of the file. */
  size: number;
}

const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_TLS = 7;
const PF_X = 1;
const EM_X86_64 = 62;
const ET_EXEC = 2;
const MAX_PHNUM = 64;
/** Largest image file we accept. */
export const MAX_IMAGE_BYTES = 256 * 1024 * 1024;

const hex = (n: bigint | number): string => `0x${n.toString(16)}`;

export function parseElf(file: string, bytes: Uint8Array): Image {
  const fail = (field: string, message: string): never => {
    throw new ImageError(file, field, message);
  };
  if (bytes.length > MAX_IMAGE_BYTES) fail('file', `${bytes.length} bytes is more than the ${MAX_IMAGE_BYTES} allowed`);
  if (bytes.length < EHDR_SIZE) fail('file', `${bytes.length} bytes is too short for an ELF header (${EHDR_SIZE})`);
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);

  if (v.getUint32(0, false) !== 0x7f454c46) fail('e_ident', 'not an ELF file (bad magic)');
  const cls = v.getUint8(4);
  if (cls !== 2) fail('e_ident[EI_CLASS]', `class ${cls} is not ELFCLASS64 (2)`);
  const data = v.getUint8(5);
  if (data !== 1) fail('e_ident[EI_DATA]', `encoding ${data} is not little-endian (1)`);
  if (v.getUint8(6) !== 1) fail('e_ident[EI_VERSION]', `version ${v.getUint8(6)} is not 1`);
  const type = v.getUint16(16, true);
  if (type !== ET_EXEC) fail('e_type', `type ${type} is not ET_EXEC (2): LightVM runs static executables`);
  const machine = v.getUint16(18, true);
  if (machine !== EM_X86_64) fail('e_machine', `machine ${machine} is not EM_X86_64 (62)`);
  const entry = v.getBigUint64(24, true);
  const phoff = v.getBigUint64(32, true);
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize !== PHDR_SIZE) fail('e_phentsize', `${phentsize} is not ${PHDR_SIZE}`);
  if (phnum === 0) fail('e_phnum', 'no program headers');
  if (phnum > MAX_PHNUM) fail('e_phnum', `${phnum} program headers is more than ${MAX_PHNUM}`);
  if (phoff + BigInt(phnum * PHDR_SIZE) > BigInt(bytes.length)) {
    fail('e_phoff', `program headers at ${hex(phoff)} run past the end of the file (${bytes.length} bytes)`);
  }

  const segments: Segment[] = [];
  const limit = BigInt(DEVICE_PAGE_GPA);
  for (let i = 0; i < phnum; i++) {
    const o = Number(phoff) + i * PHDR_SIZE;
    const ptype = v.getUint32(o, true);
    const where = `program header ${i}`;
    if (ptype === PT_INTERP || ptype === PT_DYNAMIC) fail(where, 'dynamic linking is not supported: link the image statically');
    if (ptype === PT_TLS) fail(where, 'thread-local storage is not supported');
    if (ptype !== PT_LOAD) continue;
    const flags = v.getUint32(o + 4, true);
    const offset = v.getBigUint64(o + 8, true);
    const paddr = v.getBigUint64(o + 24, true);
    const filesz = v.getBigUint64(o + 32, true);
    const memsz = v.getBigUint64(o + 40, true);
    if (filesz > memsz) fail(`${where}: p_filesz`, `${hex(filesz)} is larger than p_memsz ${hex(memsz)}`);
    if (offset + filesz > BigInt(bytes.length)) {
      fail(`${where}: p_offset`, `${hex(offset)} + p_filesz ${hex(filesz)} runs past the end of the file (${bytes.length} bytes)`);
    }
    if (paddr < BigInt(IMAGE_BASE_GPA)) {
      fail(`${where}: p_paddr`, `${hex(paddr)} is below ${hex(IMAGE_BASE_GPA)}, where the monitor keeps page tables and boot data`);
    }
    if (memsz > limit || paddr + memsz > limit) {
      fail(`${where}: p_memsz`, `segment ${hex(paddr)} + ${hex(memsz)} runs past ${hex(limit)}, the top of loadable memory`);
    }
    if (memsz === 0n) continue;
    segments.push({
      gpa: Number(paddr),
      data: bytes.slice(Number(offset), Number(offset + filesz)),
      memsz: Number(memsz),
      flags,
    });
  }
  if (segments.length === 0) fail('program headers', 'no loadable (PT_LOAD) segment');

  const sorted = [...segments].sort((a, b) => a.gpa - b.gpa);
  for (let i = 1; i < sorted.length; i++) {
    const prev = sorted[i - 1]!;
    const cur = sorted[i]!;
    if (cur.gpa < prev.gpa + prev.memsz) {
      fail('program headers', `segments at ${hex(prev.gpa)} (+${hex(prev.memsz)}) and ${hex(cur.gpa)} overlap`);
    }
  }
  const e = Number(entry);
  if (!segments.some((s) => (s.flags & PF_X) !== 0 && e >= s.gpa && e < s.gpa + s.memsz)) {
    fail('e_entry', `${hex(entry)} is not inside any executable segment`);
  }
  const last = sorted[sorted.length - 1]!;
  const end = Math.ceil((last.gpa + last.memsz) / 4096) * 4096;
  return { file, entry: e, segments: sorted, end, size: bytes.length };
}
