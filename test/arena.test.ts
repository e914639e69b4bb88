// The guest-memory arena: VMs' RAM carved from one mapping, shared by the
// threads of a process. Windows must never overlap, released memory must
// come back zeroed, a full arena must fall back to a mapping of its own, and
// a guest whose RAM is not at the arena's start must see its own memory.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Worker } from 'node:worker_threads';
import { Kvm } from '../src/kvm/kvm.js';
import { GuestArena, GuestArenas, GuestMemory } from '../src/kvm/memory.js';
import { parseElf } from '../src/vmm/elf.js';
import { Machine, Outcome } from '../src/vmm/machine.js';
import { guestImage } from './helpers.js';

const MIB = 1 << 20;

void describe('guest memory arena', () => {
  let arena: GuestArena;
  before(() => {
    arena = GuestArena.create();
  });
  after(() => {
    arena.close();
  });

  void it('hands out windows that do not overlap, each seeing only its own bytes', () => {
    const ms = [4, 1, 8, 4].map((mib) => new GuestMemory(mib * MIB, undefined, arena));
    try {
      const ranges = ms.map((m) => [m.hostAddress, m.hostAddress + BigInt(m.size)] as const).sort((a, b) => (a[0] < b[0] ? -1 : 1));
      for (let i = 1; i < ranges.length; i++) assert.ok(ranges[i]![0] >= ranges[i - 1]![1], 'two windows overlap');
      ms.forEach((m, i) => m.bytes.fill(i + 1));
      ms.forEach((m, i) => {
        assert.equal(m.bytes.length, m.size);
        assert.equal(m.bytes[0], i + 1);
        assert.equal(m.bytes[m.size - 1], i + 1);
        assert.equal(m.view.getUint8(m.size - 1), i + 1);
        assert.ok(arena.contains(m.hostAddress, m.size), 'not from the arena');
      });
    } finally {
      for (const m of ms) m.close();
    }
  });

  void it('gives released memory back zeroed, and reuses it', () => {
    const a = new GuestMemory(2 * MIB, undefined, arena);
    const offset = Number(a.hostAddress - arena.base);
    a.bytes.fill(0xab);
    a.close();
    // All of it in one window: only possible if everything was given back.
    const all = new GuestMemory(4096 * MIB, undefined, arena);
    try {
      assert.equal(all.hostAddress, arena.base, 'the arena was not free again');
      assert.ok(all.bytes.subarray(offset, offset + 2 * MIB).every((b) => b === 0), 'released memory came back with its old contents');
    } finally {
      all.close();
    }
  });

  void it('falls back to a mapping of its own when full or when the size is not whole MiB', () => {
    const all = new GuestMemory(4096 * MIB, undefined, arena);
    const extra = new GuestMemory(MIB, undefined, arena);
    const odd = new GuestMemory(8192, undefined, GuestArena.create());
    try {
      assert.ok(arena.contains(all.hostAddress, all.size));
      assert.ok(!arena.contains(extra.hostAddress, extra.size), 'a full arena handed out more');
      extra.bytes[MIB - 1] = 5;
      assert.equal(extra.bytes[MIB - 1], 5);
      odd.bytes[8191] = 6;
      assert.equal(odd.bytes[8191], 6);
    } finally {
      all.close();
      extra.close();
      odd.close();
    }
    assert.equal(arena.allocate(4096 * MIB) !== undefined, true, 'the whole arena is free again');
    arena.release(arena.base, 4096 * MIB);
  });

  void it('is shared with another thread: its allocations and ours never collide, and it sees our bytes', async () => {
    const mine = Array.from({ length: 50 }, () => new GuestMemory(MIB, undefined, arena));
    mine[0]!.bytes[123] = 77;
    // From source: the worker registers the TypeScript loader itself.
    const src = new URL('../src/kvm/memory.ts', import.meta.url).href;
    const code = `
      const { workerData, parentPort } = await import('node:worker_threads');
      (await import('tsx/esm/api')).register();
      const { GuestArena } = await import(${JSON.stringify(src)});
      const a = GuestArena.attach(workerData.share);
      const got = [];
      for (let i = 0; i < 50; i++) got.push(a.allocate(${MIB}));
      const seen = a.window(workerData.first, ${MIB}).bytes[123];
      parentPort.postMessage({ got, seen });`;
    const w = new Worker(code, { eval: true, workerData: { share: arena.share, first: mine[0]!.hostAddress } });
    const { got, seen } = await new Promise<{ got: bigint[]; seen: number }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    try {
      assert.equal(seen, 77, 'the other thread does not see our bytes');
      const addresses = new Set([...mine.map((m) => m.hostAddress), ...got]);
      assert.equal(addresses.size, 100, 'two threads were given the same memory');
    } finally {
      for (const m of mine) m.close();
      for (const g of got) arena.release(g, MIB);
    }
  });

  void it('hands out single pages from a page arena', () => {
    const pages = GuestArena.create(64 * MIB, 4096);
    try {
      const ps = Array.from({ length: 3 }, () => new GuestMemory(4096, undefined, pages));
      assert.deepEqual(ps.map((p) => Number(p.hostAddress - pages.base)), [0, 4096, 8192]);
      ps[1]!.bytes.fill(9);
      assert.equal(ps[0]!.bytes[4095], 0);
      assert.equal(ps[2]!.bytes[0], 0);
      for (const p of ps) p.close();
      assert.throws(() => GuestArena.create(8 * 1024 * MIB), /at most 4096 MiB/);
    } finally {
      pages.close();
    }
  });

  void it('a guest whose RAM is not at the start of the arena reads and writes its own memory, and its device page', () => {
    const kvm = Kvm.open();
    const file = guestImage('noxs-dump');
    const image = parseElf(file, new Uint8Array(readFileSync(file)));
    const arenas = GuestArenas.create();
    const machines = [0, 1, 2].map(() => new Machine(kvm, 4 * MIB, undefined, arenas));
    try {
      for (const [i, m] of machines.entries()) {
        assert.ok(arenas.ram.contains(m.ram.hostAddress, m.ram.size));
        assert.ok(arenas.pages.contains(m.devicePage.memory.hostAddress, 4096));
        let out = '';
        m.onConsole = (d) => (out += Buffer.from(d).toString());
        m.load(image, { vmId: i + 1, name: `arena-${i}`, cmdline: '', devices: [] });
        const control = new Int32Array(new SharedArrayBuffer(8));
        let outcome: number = Outcome.Interrupted;
        for (let n = 0; n < 100 && outcome === Outcome.Interrupted; n++) outcome = m.run(control);
        assert.equal(outcome, Outcome.Ended);
        assert.deepEqual(m.exit, { kind: 'halt', status: 0 }, `VM ${i}: ${JSON.stringify(m.exit)}`);
        assert.match(out, new RegExp(`arena-${i}`), `VM ${i} read another VM's device page: ${out}`);
      }
    } finally {
      for (const m of machines) m.close();
      arenas.close();
      kvm.close();
    }
  });
});
