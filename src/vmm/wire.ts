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

/**
 * Accumulates bytes and yields whole messages. The pieces of a frame are
 * kept as they came and joined once it is whole: joining at each piece
 * would copy a frame of n bytes read in pieces of k about n²/2k times.
 */
export class FrameDecoder {
  private chunks: Buffer[] = [];
  private bytes = 0;
  /** Body length of the frame being read, once its length word is in. */
  private need = -1;

  push(chunk: Buffer): unknown[] {
    if (chunk.length) {
      this.chunks.push(chunk);
      this.bytes += chunk.length;
    }
    const out: unknown[] = [];
    for (;;) {
      if (this.need < 0) {
        if (this.bytes < 4) break;
        const len = this.peek(4).readUInt32LE(0);
        if (len > MAX_FRAME) throw new Error(`frame of ${len} bytes exceeds the ${MAX_FRAME} allowed`);
        this.need = len;
      }
      if (this.bytes < 4 + this.need) break;
      const frame = this.take(4 + this.need);
      this.need = -1;
      out.push(deserialize(frame.subarray(4)));
    }
    return out;
  }

  /** The first n bytes held (n <= bytes), without taking them. */
  private peek(n: number): Buffer {
    const first = this.chunks[0]!;
    if (first.length >= n) return first.subarray(0, n);
    const joined = Buffer.concat(this.chunks);
    this.chunks = [joined];
    return joined.subarray(0, n);
  }

  /** Takes the first n bytes held (n <= bytes). */
  private take(n: number): Buffer {
    this.bytes -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const parts: Buffer[] = [];
    let got = 0;
    while (got < n) {
      const c = this.chunks[0]!;
      const want = n - got;
      if (c.length <= want) {
        parts.push(c);
        got += c.length;
        this.chunks.shift();
      } else {
        parts.push(c.subarray(0, want));
        this.chunks[0] = c.subarray(want);
        got = n;
      }
    }
    return Buffer.concat(parts, n);
  }
}
