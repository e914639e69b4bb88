// Snapshot files as a forger writes them: sections changed, checksum made anew.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { closeSync, openSync, readFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { SECTION, SNAPSHOT_END } from '../src/vmm/snapshot.js';
import { ok } from './daemon-helpers.js';
import { consoleOf, untilCount } from './vm-helpers.js';

const PAGE = 4096;
const MIB = 1 << 20;

/** A file's sections, changed by change(), with a checksum made anew. */
export function resection(file: Buffer, change: (sections: [number, Buffer][]) => [number, Buffer][]): Buffer {
  const headLen = file.readUInt32LE(12);
  const end = file.length - 40;
  const sections: [number, Buffer][] = [];
  for (let o = 16 + headLen; o < end;) {
    const len = Number(file.readBigUInt64LE(o + 8));
    sections.push([file.readUInt32LE(o), file.subarray(o + 16, o + 16 + len)]);
    o += 16 + len;
  }
  const parts: Buffer[] = [file.subarray(0, 16 + headLen)];
  for (const [type, data] of change(sections)) {
    const h = Buffer.alloc(16);
    h.writeUInt32LE(type, 0);
    h.writeBigUInt64LE(BigInt(data.length), 8);
    parts.push(h, data);
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, Buffer.from(SNAPSHOT_END, 'latin1'), createHash('sha256').update(body).digest()]);
}

/**
 * A copy of a snapshot file with fillMiB MiB of pages added (from page fromPage up) to its memory
 * section (each filled with a pattern of its number, none zero) and its
 * checksum made anew; written a piece at a time, never held whole.
 */
export function withPagesAdded(small: Buffer, out: string, fromPage: number, fillMiB: number): void {
  const headLen = small.readUInt32LE(12);
  const end = small.length - 40;
  const fd = openSync(out, 'w', 0o600);
  const hash = createHash('sha256');
  const put = (b: Buffer): void => {
    hash.update(b);
    for (let o = 0; o < b.length;) o += writeSync(fd, b, o);
  };
  try {
    put(small.subarray(0, 16 + headLen));
    for (let o = 16 + headLen; o < end;) {
      const type = small.readUInt32LE(o);
      const len = Number(small.readBigUInt64LE(o + 8));
      const body = small.subarray(o + 16, o + 16 + len);
      o += 16 + len;
      if (type !== SECTION.memory) {
        put(small.subarray(o - 16 - len, o));
        continue;
      }
      const count = (fillMiB * MIB) / PAGE;
      for (let i = 0; i < body.length; i += 4 + PAGE) {
        const p = body.readUInt32LE(i);
        assert.ok(p < fromPage || p >= fromPage + count, `the counter wrote page ${p}, where the fill goes`);
      }
      const h = Buffer.alloc(16);
      h.writeUInt32LE(type, 0);
      h.writeBigUInt64LE(BigInt(len + count * (4 + PAGE)), 8);
      put(h);
      put(body);
      // 1024 records a write.
      const batch = Buffer.alloc(1024 * (4 + PAGE));
      for (let done = 0; done < count;) {
        const n = Math.min(1024, count - done);
        for (let k = 0; k < n; k++) {
          const p = fromPage + done + k;
          const r = k * (4 + PAGE);
          batch.writeUInt32LE(p, r);
          const words = new Uint32Array(batch.buffer, batch.byteOffset + r + 4, PAGE / 4);
          words.fill((Math.imul(p, 2654435761) | 1) >>> 0);
        }
        put(batch.subarray(0, n * (4 + PAGE)));
        done += n;
      }
    }
    const sum = hash.digest();
    writeSync(fd, Buffer.from(SNAPSHOT_END, 'latin1'));
    writeSync(fd, sum);
  } finally {
    closeSync(fd);
  }
}

/** Resident set of a process, from /proc. */
export function rssMiB(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB$/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
  assert.ok(m, `no VmRSS for ${pid}`);
  return Number(m[1]) / 1024;
}

/** Guest RAM of the counter saved by saveLargeCounter, and what its file gets added. */
export const BIG_MIB = 512;
export const FILL_MIB = 300;
/** Pages added from here up: far above the counter's image, far below its stack (the top of RAM). */
export const FILL_FROM_PAGE = (16 << 20) / 4096;

/**
 * Runs a counter named "big" of BIG_MIB MiB on the daemon at socket, saves it to dir/small.snap
 * and writes dir/big.snap, that file with FILL_MIB MiB of pages added: the large restores' input.
 */
export async function saveLargeCounter(socket: string, dir: string): Promise<{ small: string; file: string; saved: string }> {
  await ok(socket, 'POST', '/v1/vms', { image: 'counter', name: 'big', memory: BIG_MIB }, 201);
  await untilCount(socket, 'big', 5);
  const small = join(dir, 'small.snap');
  await ok(socket, 'POST', '/v1/vms/big/save', { file: small });
  const saved = await consoleOf(socket, 'big');
  const file = join(dir, 'big.snap');
  withPagesAdded(readFileSync(small), file, FILL_FROM_PAGE, FILL_MIB);
  return { small, file, saved };
}
