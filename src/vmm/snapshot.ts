// The snapshot file of one VM (save, restore, daemon restart, migration).
//
// Layout, all integers little-endian:
//   "LVMSNAP\0"  u32 version  u32 header length  header (JSON, UTF-8)
//   sections: u32 type, u32 reserved, u64 length, then the bytes
//     1 regs, 2 sregs, 3 xsave, 4 vcpu events (KVM's own structs)
//     5 device page (4096 bytes)
//     6 memory: records of u32 page number + 4096 bytes, pages never
//       written or all zero left out
//     7 console history
//     8 device modules' state: JSON { module name: base64 } (virtio queues)
//   "LVMSEND\0"  then SHA-256 of every byte before "LVMSEND\0"
// A file of another version, or damaged anywhere, is refused whole with
// the reason: nothing is restored from it.
import { closeSync } from 'node:fs';
import type { VcpuState } from '../kvm/vcpu.js';
import { openRegularFile, readAt, readRegularFile, writeFileReplacing } from './regular-file.js';
import type { SchemaType } from './schema-type.js';
import { validateConsoleSection, validateDeviceState, validateSnapshotHeader, VmStateError, type snapshotHeader } from './vm-schema.js';
import { FieldError } from './field-error.js';
import { crypto } from '../sys/builtins.js';

export const SNAPSHOT_MAGIC = 'LVMSNAP\0';
export const SNAPSHOT_END = 'LVMSEND\0';
export const SNAPSHOT_VERSION = 1;
const PAGE = 4096;

export const SECTION = { regs: 1, sregs: 2, xsave: 3, events: 4, devicePage: 5, memory: 6, console: 7, devices: 8 } as const;

/**
 * The JSON header: the type of its schema (vm-schema.ts), which a read
 * header is checked against. msrs are [index, value] with values in hex
 * (JSON has no 64-bit integers); parked: waiting in POLL, the argument
 * struct's address and the time it had left.
 */
export type SnapshotHeader = SchemaType<typeof snapshotHeader>;

export interface Snapshot {
  header: SnapshotHeader;
  vcpu: VcpuState;
  devicePage: Uint8Array;
  /** Page number → contents. */
  pages: Map<number, Uint8Array>;
  console: Uint8Array;
  /** Each device module's saved state, by module name (none: no module had state). */
  devices?: Map<string, Uint8Array>;
}

export class SnapshotError extends FieldError {
  declare readonly file: string;
  constructor(file: string, field: string, reason: string) {
    super(field, reason, { file });
    this.name = 'SnapshotError';
  }
}

/**
 * Pages of memory worth saving: the non-zero ones among those of the map
 * (only[page] & 1: the pages written; every page if no map is given).
 * Read as 32-bit words: 64-bit ones would make a BigInt of each.
 */
export function nonZeroPages(bytes: Uint8Array, only?: Uint8Array): number[] {
  const out: number[] = [];
  const words = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >>> 2);
  const perPage = PAGE >>> 2;
  const n = bytes.byteLength / PAGE;
  for (let p = 0; p < n; p++) {
    if (only && (only[p]! & 1) === 0) continue;
    for (let i = p * perPage, end = i + perPage; i < end; i++) {
      if (words[i] !== 0) {
        out.push(p);
        break;
      }
    }
  }
  return out;
}

type SnapshotSource = Omit<Snapshot, 'pages'> & { memory: Uint8Array; pages: number[] };

export function encodeSnapshot(s: SnapshotSource): Buffer {
  return Buffer.concat(encodeSnapshotParts(s));
}

/**
 * The snapshot as a list of buffers, most of them views of guest memory:
 * written with one writev, it is never copied whole (a copy of 70 KiB costs
 * about as much here as hashing it).
 */
export function encodeSnapshotParts(s: SnapshotSource): Buffer[] {
  const parts: Buffer[] = [];
  const head = Buffer.from(JSON.stringify(s.header), 'utf8');
  const pre = Buffer.alloc(16);
  pre.write(SNAPSHOT_MAGIC, 0, 'latin1');
  pre.writeUInt32LE(SNAPSHOT_VERSION, 8);
  pre.writeUInt32LE(head.length, 12);
  parts.push(pre, head);
  const section = (type: number, chunks: Uint8Array[]): void => {
    const len = chunks.reduce((n, c) => n + c.length, 0);
    const h = Buffer.alloc(16);
    h.writeUInt32LE(type, 0);
    h.writeBigUInt64LE(BigInt(len), 8);
    parts.push(h);
    // One push each: spread as arguments, the 131072 views of a 256 MiB guest overflowed the stack.
    for (const c of chunks) parts.push(Buffer.from(c.buffer, c.byteOffset, c.byteLength));
  };
  section(SECTION.regs, [s.vcpu.regs]);
  section(SECTION.sregs, [s.vcpu.sregs]);
  section(SECTION.xsave, [s.vcpu.xsave]);
  section(SECTION.events, [s.vcpu.events]);
  section(SECTION.devicePage, [s.devicePage]);
  const mem: Uint8Array[] = [];
  // One buffer holds every page number; the pages themselves stay views.
  const numbers = Buffer.allocUnsafe(4 * s.pages.length);
  for (let i = 0; i < s.pages.length; i++) {
    const p = s.pages[i]!;
    numbers.writeUInt32LE(p, 4 * i);
    mem.push(numbers.subarray(4 * i, 4 * i + 4), s.memory.subarray(p * PAGE, (p + 1) * PAGE));
  }
  section(SECTION.memory, mem);
  section(SECTION.console, [s.console]);
  if (s.devices?.size) {
    const json = Object.fromEntries([...s.devices].map(([k, v]) => [k, Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('base64')]));
    section(SECTION.devices, [Buffer.from(JSON.stringify(json), 'utf8')]);
  }
  const hash = crypto().createHash('sha256');
  for (const part of parts) hash.update(part);
  parts.push(Buffer.from(SNAPSHOT_END, 'latin1'), hash.digest());
  return parts;
}

/**
 * Reads only the start of a snapshot file: magic, version and header. The
 * whole file is checked (checksum included) when restored, by the
 * executor's SnapshotReader (src/vmm/snapshot-reader.ts).
 * Asynchronous: the daemon's thread answers every other request meanwhile,
 * and a path that is not a regular file (a FIFO would block a read
 * forever) is refused, naming it, before anything is read (issue 10 F3).
 */
export async function readSnapshotHeader(file: string): Promise<SnapshotHeader> {
  const fail = (field: string, message: string): never => {
    throw new SnapshotError(file, field, message);
  };
  const { fd } = openRegularFile(file);
  try {
    // One read for the usual header (a few hundred bytes), a second one for a longer one.
    const first = Buffer.alloc(16 + 16384);
    const got = await readAt(fd, first, first.length, 0);
    if (got < 16) fail('file', `${got} bytes is too short to be a snapshot`);
    if (first.toString('latin1', 0, 8) !== SNAPSHOT_MAGIC) fail('magic', 'not a LightVM snapshot');
    const version = first.readUInt32LE(8);
    if (version !== SNAPSHOT_VERSION) fail('version', `snapshot version ${version}; this LightVM reads version ${SNAPSHOT_VERSION} only`);
    const len = first.readUInt32LE(12);
    if (len > 1 << 20) fail('header', `header length ${len} is implausible`);
    let head = first.subarray(16, Math.min(got, 16 + len));
    if (head.length < len && got === first.length) {
      const rest = Buffer.alloc(len - head.length);
      head = Buffer.concat([head, rest.subarray(0, await readAt(fd, rest, rest.length, got))]);
    }
    if (head.length < len) fail('header', 'the file ends inside the header: it is truncated');
    let header: unknown;
    try {
      header = JSON.parse(head.toString('utf8'));
    } catch (err) {
      return fail('header', `not valid JSON: ${(err as Error).message}`);
    }
    return checkHeader(file, header);
  } finally {
    closeSync(fd);
  }
}

/** A whole snapshot file, for decodeSnapshot: a regular file only, never a FIFO that would stop its reader (F3). */
export function readSnapshotFile(file: string): Buffer {
  return readRegularFile(file);
}

/**
 * The header, checked whole (src/vmm/vm-schema.ts: the same definitions of a
 * name, a cmdline and a device as a create's) before anything is placed
 * from it. A damaged header is refused here; the checksum, which covers it
 * too, is checked when the whole file is read.
 */
export function checkHeader(file: string, h: unknown): SnapshotHeader {
  asSnapshotError(file, () => validateSnapshotHeader(h));
  return h as SnapshotHeader;
}

/** Runs a check of vm-schema.ts; its refusal becomes this file's. */
function asSnapshotError(file: string, check: () => void): void {
  try {
    check();
  } catch (err) {
    if (err instanceof VmStateError) throw new SnapshotError(file, err.field, err.reason);
    throw err;
  }
}

export const SECTION_SIZES: Record<number, number> = { [SECTION.regs]: 144, [SECTION.sregs]: 312, [SECTION.xsave]: 4096, [SECTION.events]: 64, [SECTION.devicePage]: PAGE };

/**
 * Reads and checks a snapshot; throws SnapshotError saying what is wrong and
 * where. The pages it returns are views of buf: the caller hands buf over.
 */
export function decodeSnapshot(file: string, buf: Uint8Array): Snapshot {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  const fail = (field: string, message: string): never => {
    throw new SnapshotError(file, field, message);
  };
  if (b.length < 16 + 8 + 32) fail('file', `${b.length} bytes is too short to be a snapshot`);
  if (b.toString('latin1', 0, 8) !== SNAPSHOT_MAGIC) fail('magic', 'not a LightVM snapshot');
  const version = b.readUInt32LE(8);
  if (version !== SNAPSHOT_VERSION) fail('version', `snapshot version ${version}; this LightVM reads version ${SNAPSHOT_VERSION} only`);
  const endAt = b.length - 32 - 8;
  if (b.toString('latin1', endAt, endAt + 8) !== SNAPSHOT_END) fail('end', 'the end marker is missing: the file is truncated');
  const sum = crypto().createHash('sha256').update(b.subarray(0, endAt)).digest();
  if (!sum.equals(b.subarray(endAt + 8))) fail('checksum', 'SHA-256 does not match: the file is damaged');
  const headLen = b.readUInt32LE(12);
  if (16 + headLen > endAt) fail('header', `header length ${headLen} runs past the end of the file`);
  let parsed: unknown;
  try {
    parsed = JSON.parse(b.toString('utf8', 16, 16 + headLen));
  } catch (err) {
    return fail('header', `not valid JSON: ${(err as Error).message}`);
  }
  const header = checkHeader(file, parsed);
  const memory = header.vm.memory;
  const sections = new Map<number, Buffer>();
  let o = 16 + headLen;
  while (o < endAt) {
    if (o + 16 > endAt) fail('sections', `a section header at byte ${o} runs past the end`);
    const type = b.readUInt32LE(o);
    const len = Number(b.readBigUInt64LE(o + 8));
    if (o + 16 + len > endAt) fail(`section ${type}`, `${len} bytes at byte ${o + 16} run past the end`);
    if (sections.has(type)) fail(`section ${type}`, 'appears twice');
    sections.set(type, b.subarray(o + 16, o + 16 + len));
    o += 16 + len;
  }
  const need = (type: number, name: string): Buffer => {
    const s = sections.get(type);
    if (!s) return fail(`section ${name}`, 'missing');
    const size = SECTION_SIZES[type];
    if (size !== undefined && s.length !== size) fail(`section ${name}`, `${s.length} bytes, expected ${size}`);
    return s;
  };
  const copy = (x: Buffer): Uint8Array => new Uint8Array(x);
  const mem = need(SECTION.memory, 'memory');
  if (mem.length % (4 + PAGE) !== 0) fail('section memory', `${mem.length} bytes is not a whole number of page records`);
  const pages = new Map<number, Uint8Array>();
  const limit = memory / PAGE;
  for (let i = 0; i < mem.length; i += 4 + PAGE) {
    const p = mem.readUInt32LE(i);
    if (p >= limit) fail('section memory', `page ${p} lies outside ${memory / 1048576} MiB of memory`);
    if (pages.has(p)) fail('section memory', `page ${p} appears twice`);
    // Views of the file's bytes, not copies: restore copies each once, into guest memory.
    pages.set(p, new Uint8Array(mem.buffer, mem.byteOffset + i + 4, PAGE));
  }
  const consoleSection = sections.get(SECTION.console) ?? Buffer.alloc(0);
  asSnapshotError(file, () => validateConsoleSection(consoleSection.length));
  return {
    header,
    vcpu: {
      regs: copy(need(SECTION.regs, 'regs')),
      sregs: copy(need(SECTION.sregs, 'sregs')),
      xsave: copy(need(SECTION.xsave, 'xsave')),
      events: copy(need(SECTION.events, 'events')),
      msrs: header.msrs.map(([index, data]) => ({ index, data: BigInt(data) })),
    },
    devicePage: copy(need(SECTION.devicePage, 'device page')),
    pages,
    console: copy(consoleSection),
    devices: decodeDevices(file, header, sections.get(SECTION.devices)),
  };
}

export function decodeDevices(file: string, header: SnapshotHeader, s: Buffer | undefined): Map<string, Uint8Array> | undefined {
  if (!s) return undefined;
  let parsed: unknown;
  try {
    parsed = JSON.parse(s.toString('utf8'));
  } catch (err) {
    throw new SnapshotError(file, 'section devices', `not valid JSON: ${(err as Error).message}`);
  }
  if (typeof parsed !== 'object' || parsed === null || Array.isArray(parsed)) throw new SnapshotError(file, 'section devices', 'not an object');
  const out = new Map<string, Uint8Array>();
  for (const [k, v] of Object.entries(parsed)) {
    if (typeof v !== 'string' || !/^[A-Za-z0-9+/]*={0,2}$/.test(v)) throw new SnapshotError(file, `section devices.${k}`, 'not base64');
    const state = new Uint8Array(Buffer.from(v, 'base64'));
    let json: unknown;
    try {
      json = JSON.parse(Buffer.from(state).toString('utf8'));
    } catch (err) {
      throw new SnapshotError(file, `section devices.${k}`, `not valid JSON: ${(err as Error).message}`);
    }
    asSnapshotError(file, () => validateDeviceState(k, json, header.vm));
    out.set(k, state);
  }
  return out;
}

/**
 * Writes a snapshot whole or not at all, 0600, never through a link nor
 * over what is not a regular file (issue 10 F4, F8): src/vmm/regular-file.ts.
 */
export function writeSnapshotFile(path: string, parts: Buffer[]): void {
  writeFileReplacing(path, parts);
}
