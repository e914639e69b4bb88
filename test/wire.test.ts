// The framing between toolstack and executor (src/vmm/wire.ts): frames cut
// anywhere come out whole and in order, and a large frame read in small
// pieces costs one join, not one per piece.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { encodeFrame, FrameDecoder, MAX_FRAME } from '../src/vmm/wire.js';

/** A small seeded generator (xorshift32): the same cuts on every run. */
function rng(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

void describe('FrameDecoder', () => {
  void it('frames cut at random places, one byte at a time, or many in one piece come out whole and in order', () => {
    const msgs = Array.from({ length: 200 }, (_, i) => ({ ev: 'console', vmId: i, data: new Uint8Array(i * 37 % 5000).fill(i & 0xff), big: BigInt(i) ** 5n }));
    const stream = Buffer.concat(msgs.map((m) => encodeFrame(m)));
    const random = rng(10);
    for (const cut of ['random', 'bytes', 'whole'] as const) {
      const d = new FrameDecoder();
      const out: unknown[] = [];
      for (let o = 0; o < stream.length;) {
        const n = cut === 'whole' ? stream.length : cut === 'bytes' ? 1 : 1 + Math.floor(random() * 9000);
        out.push(...d.push(Buffer.from(stream.subarray(o, o + n))));
        o += n;
      }
      assert.deepEqual(out, msgs, `cut: ${cut}`);
    }
  });

  void it('a 15 MiB frame in 64 KiB pieces decodes in well under a second', () => {
    const frame = encodeFrame({ data: new Uint8Array(15 << 20).fill(7) });
    const d = new FrameDecoder();
    const t0 = performance.now();
    let out: unknown[] = [];
    for (let o = 0; o < frame.length; o += 65536) out = out.concat(d.push(frame.subarray(o, o + 65536)));
    const ms = performance.now() - t0;
    assert.equal(out.length, 1);
    assert.equal((out[0] as { data: Uint8Array }).data.length, 15 << 20);
    // Joined at each piece it copied ~1.8 GB here (over 2 s at this host's speed).
    assert.ok(ms < 800, `decoding took ${ms.toFixed(0)} ms`);
  });

  void it('a length beyond MAX_FRAME is refused at once, before its body is read', () => {
    const head = Buffer.alloc(4);
    head.writeUInt32LE(MAX_FRAME + 1, 0);
    assert.throws(() => new FrameDecoder().push(head), /frame of 16777217 bytes exceeds the 16777216 allowed/);
  });
});
