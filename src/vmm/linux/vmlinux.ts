// The kernel inside a bzImage, decompressed by the monitor. A bzImage's
// protected-mode part is a decompressor with the kernel (vmlinux, an ELF)
// as its payload; it unpacks it at the load address and jumps to its
// startup_64 with %rsi at the zero page, the same 64-bit protocol it was
// entered by. Doing that here instead costs the host ~1 s for Debian's
// 8 MiB xz payload, where a host that runs guests slowly (one that emulates
// them: ~2 M instructions/s) would spend many minutes in the guest's xz.
// The kernel then runs at its link address: no KASLR (the decompressor's).
// A payload we cannot unpack here leaves the decompressor to do it.
import { execFileSync } from 'node:child_process';
import { gunzipSync } from 'node:zlib';
import { decompress as unzstd } from 'fzstd';
import { ImageError } from '../elf.js';
import type { BzImage } from './bzimage.js';

export interface Vmlinux {
  /** PT_LOAD segments at their physical addresses (memsz beyond the file's bytes is zero). */
  segments: { gpa: number; data: Uint8Array; memsz: number }[];
  /** Physical address of startup_64 (e_entry). */
  entry: number;
  /** How the payload was compressed. */
  format: 'gzip' | 'xz' | 'zstd';
}

const ELF_MAGIC = 0x464c457f;
const EM_X86_64 = 62;
const PT_LOAD = 1;
const hex = (n: number): string => `0x${n.toString(16)}`;

function startsWith(b: Uint8Array, magic: readonly number[]): boolean {
  return magic.every((m, i) => b[i] === m);
}

/** The payload decompressed, or undefined if it is in a format (or needs a tool) we lack. */
function decompress(payload: Uint8Array): { bytes: Uint8Array; format: Vmlinux['format'] } | undefined {
  if (startsWith(payload, [0x1f, 0x8b])) return { bytes: new Uint8Array(gunzipSync(payload)), format: 'gzip' };
  if (startsWith(payload, [0x28, 0xb5, 0x2f, 0xfd])) return { bytes: unzstd(payload), format: 'zstd' };
  if (startsWith(payload, [0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00])) {
    // The kernel's xz has the x86 BCJ filter, which the npm decoders lack: xz-utils does it.
    try {
      return { bytes: new Uint8Array(execFileSync('xz', ['-dc'], { input: payload, maxBuffer: 1 << 30, stdio: ['pipe', 'pipe', 'ignore'] })), format: 'xz' };
    } catch {
      return undefined;
    }
  }
  return undefined;
}

/** The ELF's loadable segments, each checked to lie in [lo, hi). */
function loadSegments(file: string, elf: Uint8Array, lo: number, hi: number): { segments: Vmlinux['segments']; entry: number } {
  const fail = (field: string, message: string): never => {
    throw new ImageError(file, field, `the kernel in its payload: ${message}`);
  };
  const v = new DataView(elf.buffer, elf.byteOffset, elf.byteLength);
  if (elf.length < 64 || v.getUint32(0, true) !== ELF_MAGIC || elf[4] !== 2 || elf[5] !== 1) fail('payload', 'not a 64-bit little-endian ELF');
  if (v.getUint16(18, true) !== EM_X86_64) fail('payload', `e_machine ${v.getUint16(18, true)} is not x86-64`);
  const entry = Number(v.getBigUint64(24, true));
  const phoff = Number(v.getBigUint64(32, true));
  const phentsize = v.getUint16(54, true);
  const phnum = v.getUint16(56, true);
  if (phentsize < 56 || phoff + phnum * phentsize > elf.length) fail('payload', 'program headers outside the file');
  const segments: Vmlinux['segments'] = [];
  for (let i = 0; i < phnum; i++) {
    const o = phoff + i * phentsize;
    if (v.getUint32(o, true) !== PT_LOAD) continue;
    const offset = Number(v.getBigUint64(o + 8, true));
    const gpa = Number(v.getBigUint64(o + 24, true));
    const filesz = Number(v.getBigUint64(o + 32, true));
    const memsz = Number(v.getBigUint64(o + 40, true));
    if (offset + filesz > elf.length || filesz > memsz) fail(`segment ${i}`, 'its bytes are not all in the file');
    if (gpa < lo || gpa + memsz > hi) {
      fail(`segment ${i}`, `${hex(gpa)}+${hex(memsz)} is outside the ${hex(lo)}..${hex(hi)} the setup header gives it (pref_address, init_size)`);
    }
    segments.push({ gpa, data: elf.subarray(offset, offset + filesz), memsz });
  }
  if (!segments.some((s) => entry >= s.gpa && entry < s.gpa + s.memsz)) fail('entry', `${hex(entry)} is in none of its segments`);
  return { segments, entry };
}

/** The bzImage's kernel, unpacked to load at pref_address, or undefined where only its decompressor can. */
export function extractVmlinux(image: BzImage): Vmlinux | undefined {
  if (image.payloadLength <= 4) return undefined;
  const payload = image.kernel.subarray(image.payloadOffset, image.payloadOffset + image.payloadLength);
  // Kbuild appends the unpacked size (32 bits, little-endian) to every compressed kernel.
  const tail = payload.length - 4;
  const size = new DataView(payload.buffer, payload.byteOffset + tail, 4).getUint32(0, true);
  const out = decompress(payload.subarray(0, tail));
  if (!out) return undefined;
  if (out.bytes.length !== size) {
    throw new ImageError(image.file, 'payload', `unpacks (${out.format}) to ${out.bytes.length} bytes, not the ${size} its last 4 bytes say`);
  }
  return { ...loadSegments(image.file, out.bytes, image.prefAddress, image.prefAddress + image.initSize), format: out.format };
}
