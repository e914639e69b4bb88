// Snapshot files as a forger writes them: sections changed, checksum made anew.
import { createHash } from 'node:crypto';
import { SNAPSHOT_END } from '../src/vmm/snapshot.js';

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
