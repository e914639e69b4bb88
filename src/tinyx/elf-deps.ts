// What a dynamically linked ELF64 program needs at run time: its interpreter
// (PT_INTERP) and the shared objects it names (DT_NEEDED), read from the
// file's dynamic section. Only this is read; the VMM's loader (vmm/elf.ts)
// loads static images and is not the place for it.
import { readFileSync } from 'node:fs';

export interface ElfDeps {
  /** The program interpreter ("/lib64/ld-linux-x86-64.so.2"), or null for a static program. */
  interp: string | null;
  /** DT_NEEDED sonames, in order. */
  needed: string[];
  /** DT_RUNPATH or DT_RPATH directories ($ORIGIN left as written). */
  runpath: string[];
}

const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const DT_NULL = 0n;
const DT_NEEDED = 1n;
const DT_STRTAB = 5n;
const DT_RPATH = 15n;
const DT_RUNPATH = 29n;

export class ElfDepsError extends Error {}

/** Reads the dependencies of an x86-64 ELF file; null if the file is not an ELF (a script, data). */
export function elfDeps(file: string, bytes: Buffer = readFileSync(file)): ElfDeps | null {
  if (bytes.length < 64 || bytes.readUInt32BE(0) !== 0x7f454c46) return null;
  const fail = (what: string): never => {
    throw new ElfDepsError(`${file}: ${what}`);
  };
  if (bytes[4] !== 2 || bytes[5] !== 1) fail('not a little-endian 64-bit ELF');
  const phoff = Number(bytes.readBigUInt64LE(32));
  const phentsize = bytes.readUInt16LE(54);
  const phnum = bytes.readUInt16LE(56);
  if (phentsize < 56 || phoff + phnum * phentsize > bytes.length) fail(`program headers (${phnum} at ${phoff}) lie past the end of the file`);
  const loads: { vaddr: bigint; off: bigint; filesz: bigint }[] = [];
  let dyn: { off: number; size: number } | null = null;
  let interp: string | null = null;
  for (let i = 0; i < phnum; i++) {
    const p = phoff + i * phentsize;
    const type = bytes.readUInt32LE(p);
    const off = bytes.readBigUInt64LE(p + 8);
    const vaddr = bytes.readBigUInt64LE(p + 16);
    const filesz = bytes.readBigUInt64LE(p + 32);
    if (off + filesz > BigInt(bytes.length)) fail(`segment ${i} lies past the end of the file`);
    if (type === PT_LOAD) loads.push({ vaddr, off, filesz });
    if (type === PT_DYNAMIC) dyn = { off: Number(off), size: Number(filesz) };
    if (type === PT_INTERP) interp = bytes.toString('latin1', Number(off), Number(off + filesz)).replace(/\0.*$/s, '');
  }
  if (!dyn) return { interp, needed: [], runpath: [] };
  const toOff = (vaddr: bigint): number => {
    const l = loads.find((x) => vaddr >= x.vaddr && vaddr < x.vaddr + x.filesz);
    if (!l) return fail(`address 0x${vaddr.toString(16)} is in no loaded segment`);
    return Number(vaddr - l.vaddr + l.off);
  };
  const entries: [bigint, bigint][] = [];
  for (let p = dyn.off; p + 16 <= dyn.off + dyn.size; p += 16) {
    const tag = bytes.readBigInt64LE(p);
    if (tag === DT_NULL) break;
    entries.push([tag, bytes.readBigUInt64LE(p + 8)]);
  }
  const strtab = entries.find(([t]) => t === DT_STRTAB);
  if (!strtab) return fail('a dynamic section without DT_STRTAB');
  const base = toOff(strtab[1]);
  const str = (o: bigint): string => {
    const at = base + Number(o);
    const end = bytes.indexOf(0, at);
    if (at >= bytes.length || end < 0) fail(`a dynamic string at ${o} lies past the end of the file`);
    return bytes.toString('utf8', at, end);
  };
  return {
    interp,
    needed: entries.filter(([t]) => t === DT_NEEDED).map(([, v]) => str(v)),
    runpath: entries.filter(([t]) => t === DT_RUNPATH || t === DT_RPATH).flatMap(([, v]) => str(v).split(':')).filter(Boolean),
  };
}
