// A snapshot file read in bounded steps (issue 10 F13). Reading a whole
// file into one Buffer before placing it froze an executor's other VMs for
// the whole read and hash (~1 s for 300 MB) and held the file's bytes beside
// the guest's copy of them. Here each step() reads at most one chunk into a
// buffer reused for the whole file, hashes it and places its pages (through
// the caller's place(), straight into guest memory), so the caller can run
// other guests between steps; nothing of the file is kept after the last.
//
// The result is the same as decodeSnapshot's on the same bytes: a file
// damaged anywhere is refused whole. Pages are placed before the checksum
// is known, so the caller places them into memory no guest runs on yet and
// throws that memory away if the file is refused. A defect in the layout
// found part way is kept until the end: a file whose checksum fails is
// refused for its checksum first, as decodeSnapshot does.
import type { Hash } from 'node:crypto';
import { closeSync, readSync } from 'node:fs';
import { openRegularFile } from './regular-file.js';
import { checkHeader, decodeDevices, SECTION, SECTION_SIZES, SNAPSHOT_END, SNAPSHOT_MAGIC, SNAPSHOT_VERSION, SnapshotError, type Snapshot, type SnapshotHeader } from './snapshot.js';
import { validateConsoleSection, VmStateError } from './vm-schema.js';
import { crypto } from '../sys/builtins.js';

const PAGE = 4096;
const RECORD = 4 + PAGE;
/** Bytes read per step: a few milliseconds of reading, hashing and copying. */
export const RESTORE_CHUNK = 4 << 20;
/** Largest device-module section held (its JSON): a VM's modules' queues take a few KiB. */
const DEVICES_SECTION_MAX = 1 << 20;

type Place = (page: number, data: Uint8Array) => void;

/** Where the parse of the sections stands between two chunks. */
type At =
  | { kind: 'head'; got: number }
  | { kind: 'memory'; left: number; got: number }
  | { kind: 'body'; type: number; left: number; keep: Buffer | undefined; got: number };

export class SnapshotReader {
  readonly header: SnapshotHeader;
  private fd: number | undefined;
  private readonly endAt: number;
  private readonly sum: Buffer;
  private readonly hash: Hash = crypto().createHash('sha256');
  private readonly chunk: Buffer;
  /** Next byte of the file to read, and where the sections begin. */
  private pos = 0;
  private readonly sectionsAt: number;
  private at: At = { kind: 'head', got: 0 };
  private readonly head = Buffer.alloc(16);
  private readonly record = Buffer.alloc(RECORD);
  private readonly sections = new Map<number, Buffer | undefined>();
  private readonly seen: Uint8Array;
  private defect: SnapshotError | undefined;
  private place: Place | undefined;

  /** Opens file and checks its start (magic, version, header) and its end marker. */
  constructor(readonly file: string, chunkBytes = RESTORE_CHUNK) {
    // A FIFO or a device would block this thread, and every VM on it: regular files only (F3).
    const { fd, size } = openRegularFile(file);
    this.fd = fd;
    try {
      if (size < 16 + 8 + 32) this.fail('file', `${size} bytes is too short to be a snapshot`);
      const pre = this.read(0, 16);
      if (pre.toString('latin1', 0, 8) !== SNAPSHOT_MAGIC) this.fail('magic', 'not a LightVM snapshot');
      const version = pre.readUInt32LE(8);
      if (version !== SNAPSHOT_VERSION) this.fail('version', `snapshot version ${version}; this LightVM reads version ${SNAPSHOT_VERSION} only`);
      this.endAt = size - 32 - 8;
      const tail = this.read(this.endAt, 40);
      if (tail.toString('latin1', 0, 8) !== SNAPSHOT_END) this.fail('end', 'the end marker is missing: the file is truncated');
      this.sum = tail.subarray(8);
      const headLen = pre.readUInt32LE(12);
      if (16 + headLen > this.endAt) this.fail('header', `header length ${headLen} runs past the end of the file`);
      let parsed: unknown;
      try {
        parsed = JSON.parse(this.read(16, headLen).toString('utf8'));
      } catch (err) {
        this.fail('header', `not valid JSON: ${(err as Error).message}`);
      }
      this.header = checkHeader(file, parsed);
      this.sectionsAt = 16 + headLen;
      this.seen = new Uint8Array(this.header.vm.memory / PAGE);
      this.chunk = Buffer.allocUnsafe(chunkBytes);
    } catch (err) {
      this.close();
      throw err;
    }
  }

  /** Bytes of the file read so far, of those before its checksum. */
  get progress(): { read: number; total: number } {
    return { read: this.pos, total: this.endAt };
  }

  /**
   * Reads, hashes and places one chunk. place(page, data) gets each page
   * (data is valid during the call only). Returns the snapshot, its pages
   * placed (its pages map is empty), once the file is read whole and its
   * checksum matches; undefined while some is left. Throws SnapshotError
   * for a file that is not whole or not well formed; the reader is then closed.
   */
  step(place: Place): Snapshot | undefined {
    if (this.fd === undefined) throw new Error(`${this.file}: the snapshot reader is closed`);
    this.place = place;
    try {
      const want = Math.min(this.chunk.length, this.endAt - this.pos);
      const got = want > 0 ? readSync(this.fd, this.chunk, 0, want, this.pos) : 0;
      if (want > 0 && got === 0) this.fail('file', `ends at byte ${this.pos}: it shrank while read`);
      const bytes = this.chunk.subarray(0, got);
      this.hash.update(bytes);
      const from = this.pos;
      this.pos += got;
      if (!this.defect) this.parse(bytes, from);
      if (this.pos < this.endAt) return undefined;
      return this.finish();
    } catch (err) {
      this.close();
      throw err;
    } finally {
      this.place = undefined;
    }
  }

  close(): void {
    if (this.fd === undefined) return;
    closeSync(this.fd);
    this.fd = undefined;
  }

  private fail(field: string, message: string): never {
    throw new SnapshotError(this.file, field, message);
  }

  private read(at: number, len: number): Buffer {
    const b = Buffer.alloc(len);
    if (readSync(this.fd!, b, 0, len, at) < len) this.fail('file', `ends inside the ${len} bytes at byte ${at}: it is truncated`);
    return b;
  }

  /** Takes the bytes of the file from byte `from` on; a defect is kept, and the rest only hashed. */
  private parse(bytes: Buffer, from: number): void {
    let i = Math.max(0, this.sectionsAt - from);
    try {
      while (i < bytes.length) i = this.take(bytes, i, from + i);
    } catch (err) {
      if (!(err instanceof SnapshotError)) throw err;
      this.defect = err;
    }
  }

  /** Takes what it can at bytes[i] (file offset o); returns where it stopped. */
  private take(bytes: Buffer, i: number, o: number): number {
    const at = this.at;
    const n = bytes.length - i;
    if (at.kind === 'head') {
      if (at.got === 0 && o + 16 > this.endAt) this.fail('sections', `a section header at byte ${o} runs past the end`);
      const k = Math.min(16 - at.got, n);
      bytes.copy(this.head, at.got, i, i + k);
      at.got += k;
      if (at.got === 16) this.open(o + k - 16);
      return i + k;
    }
    if (at.kind === 'memory') {
      if (at.got === 0) {
        // Whole records in this chunk: placed from it, not copied first.
        let j = i;
        for (; j + RECORD <= bytes.length && at.left > 0; j += RECORD, at.left -= RECORD) this.page(bytes.readUInt32LE(j), bytes.subarray(j + 4, j + RECORD));
        if (at.left === 0) this.at = { kind: 'head', got: 0 };
        if (j > i || at.left === 0) return j;
      }
      // A record split between two chunks.
      const k = Math.min(RECORD - at.got, n);
      bytes.copy(this.record, at.got, i, i + k);
      at.got += k;
      if (at.got === RECORD) {
        this.page(this.record.readUInt32LE(0), this.record.subarray(4));
        at.got = 0;
        at.left -= RECORD;
        if (at.left === 0) this.at = { kind: 'head', got: 0 };
      }
      return i + k;
    }
    const k = Math.min(at.left, n);
    if (at.keep) bytes.copy(at.keep, at.got, i, i + k);
    at.got += k;
    at.left -= k;
    if (at.left === 0) this.at = { kind: 'head', got: 0 };
    return i + k;
  }

  /** A section's header is read (it began at file offset o): what its body is. */
  private open(o: number): void {
    const type = this.head.readUInt32LE(0);
    const len = Number(this.head.readBigUInt64LE(8));
    if (o + 16 + len > this.endAt) this.fail(`section ${type}`, `${len} bytes at byte ${o + 16} run past the end`);
    if (this.sections.has(type)) this.fail(`section ${type}`, 'appears twice');
    if (type === SECTION.memory) {
      if (len % RECORD !== 0) this.fail('section memory', `${len} bytes is not a whole number of page records`);
      this.sections.set(type, undefined);
      this.at = len === 0 ? { kind: 'head', got: 0 } : { kind: 'memory', left: len, got: 0 };
      return;
    }
    // Sections of known use are kept (each bounded before it is); others are only hashed.
    const size = SECTION_SIZES[type];
    const known = size !== undefined || type === SECTION.console || type === SECTION.devices;
    if (type === SECTION.console) this.schema(() => validateConsoleSection(len));
    if (type === SECTION.devices && len > DEVICES_SECTION_MAX) this.fail('section devices', `${len} bytes is more than ${DEVICES_SECTION_MAX}`);
    if (size !== undefined && len !== size) this.fail(`section ${NAMES[type]}`, `${len} bytes, expected ${size}`);
    const keep = known ? Buffer.alloc(len) : undefined;
    this.sections.set(type, keep);
    this.at = len === 0 ? { kind: 'head', got: 0 } : { kind: 'body', type, left: len, keep, got: 0 };
  }

  private page(p: number, data: Uint8Array): void {
    if (p >= this.seen.length) this.fail('section memory', `page ${p} lies outside ${this.header.vm.memory / 1048576} MiB of memory`);
    if (this.seen[p]) this.fail('section memory', `page ${p} appears twice`);
    this.seen[p] = 1;
    this.place!(p, data);
  }

  /** Runs a check of vm-schema.ts; its refusal becomes this file's. */
  private schema(check: () => void): void {
    try {
      check();
    } catch (err) {
      if (err instanceof VmStateError) this.fail(err.field, err.reason);
      throw err;
    }
  }

  private finish(): Snapshot {
    this.close();
    if (!this.hash.digest().equals(this.sum)) this.fail('checksum', 'SHA-256 does not match: the file is damaged');
    if (this.defect) throw this.defect;
    if (this.at.kind !== 'head' || this.at.got !== 0) this.fail('sections', 'the last section runs past the end');
    const need = (type: number): Buffer => {
      const s = this.sections.get(type);
      if (!this.sections.has(type)) this.fail(`section ${NAMES[type]}`, 'missing');
      return s ?? Buffer.alloc(0);
    };
    need(SECTION.memory);
    const header = this.header;
    return {
      header,
      vcpu: {
        regs: new Uint8Array(need(SECTION.regs)),
        sregs: new Uint8Array(need(SECTION.sregs)),
        xsave: new Uint8Array(need(SECTION.xsave)),
        events: new Uint8Array(need(SECTION.events)),
        msrs: header.msrs.map(([index, data]) => ({ index, data: BigInt(data) })),
      },
      devicePage: new Uint8Array(need(SECTION.devicePage)),
      pages: new Map(),
      console: new Uint8Array(this.sections.get(SECTION.console) ?? Buffer.alloc(0)),
      devices: decodeDevices(this.file, header, this.sections.get(SECTION.devices)),
    };
  }
}

const NAMES: Record<number, string> = {
  [SECTION.regs]: 'regs', [SECTION.sregs]: 'sregs', [SECTION.xsave]: 'xsave', [SECTION.events]: 'events',
  [SECTION.devicePage]: 'device page', [SECTION.memory]: 'memory', [SECTION.console]: 'console', [SECTION.devices]: 'devices',
};
