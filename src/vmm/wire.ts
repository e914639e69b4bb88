// Framing for messages on a stream socket between a toolstack and an
// executor process: a 32-bit little-endian length, then a V8-serialized
// value (structured clone: Uint8Array and bigint survive the trip).
import { deserialize, serialize } from 'node:v8';

/** Largest frame either side accepts. */
export const MAX_FRAME = 16 << 20;

export function encodeFrame(msg: unknown): Buffer {
  const body = serialize(msg);
  const frame = Buffer.allocUnsafe(4 + body.length);
  frame.writeUInt32LE(body.length, 0);
  body.copy(frame, 4);
  return frame;
}

/** Accumulates bytes and yields whole messages. */
export class FrameDecoder {
  private buf: Buffer = Buffer.alloc(0);

  push(chunk: Buffer): unknown[] {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const out: unknown[] = [];
    while (this.buf.length >= 4) {
      const len = this.buf.readUInt32LE(0);
      if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes exceeds the ${MAX_FRAME} allowed`);
      if (this.buf.length < 4 + len) break;
      out.push(deserialize(this.buf.subarray(4, 4 + len)));
      this.buf = this.buf.subarray(4 + len);
    }
    return out;
  }
}
