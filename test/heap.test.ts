// DeadlineHeap: the executor's parked VMs by deadline, with O(log n) removal.
// Random pushes, pops and removals against a sorted reference.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { DeadlineHeap, type HeapItem } from '../src/vmm/deadline-heap.js';

interface Item extends HeapItem {
  id: number;
}

/** A small deterministic PRNG (mulberry32), so that a failure can be replayed from its seed. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const byDeadline = (a: Item, b: Item): number => a.deadlineNs - b.deadlineNs;

void describe('DeadlineHeap', () => {
  void it('starts empty', () => {
    const h = new DeadlineHeap<Item>();
    assert.equal(h.size, 0);
    assert.equal(h.peek(), undefined);
    assert.equal(h.pop(), undefined);
  });

  void it('pops in deadline order, and marks popped items as out of the heap', () => {
    const h = new DeadlineHeap<Item>();
    const deadlines = [50, 10, 40, 30, 20, 60, 0];
    deadlines.forEach((d, id) => h.push({ id, deadlineNs: d, heapIndex: -1 }));
    assert.equal(h.size, deadlines.length);
    const out: number[] = [];
    for (let it = h.pop(); it; it = h.pop()) {
      assert.equal(it.heapIndex, -1);
      out.push(it.deadlineNs);
    }
    assert.deepEqual(out, [...deadlines].sort((a, b) => a - b));
    assert.equal(h.size, 0);
  });

  void it('keeps every equal deadline (none lost or duplicated)', () => {
    const h = new DeadlineHeap<Item>();
    const items = Array.from({ length: 20 }, (_, id) => ({ id, deadlineNs: 7, heapIndex: -1 }));
    for (const it of items) h.push(it);
    h.remove(items[3]!);
    h.remove(items[19]!);
    const ids: number[] = [];
    for (let it = h.pop(); it; it = h.pop()) ids.push(it.id);
    assert.deepEqual(ids.sort((a, b) => a - b), items.map((i) => i.id).filter((i) => i !== 3 && i !== 19));
  });

  void it('removing an item that is not in the heap changes nothing', () => {
    const h = new DeadlineHeap<Item>();
    const a: Item = { id: 1, deadlineNs: 5, heapIndex: -1 };
    const b: Item = { id: 2, deadlineNs: 3, heapIndex: -1 };
    h.push(a);
    h.remove(b);
    assert.equal(h.size, 1);
    h.remove(a);
    h.remove(a);
    assert.equal(h.size, 0);
    assert.equal(a.heapIndex, -1);
  });

  void it('removing the last item and the top keeps order', () => {
    const h = new DeadlineHeap<Item>();
    const items = [5, 1, 9, 3, 7].map((d, id) => ({ id, deadlineNs: d, heapIndex: -1 }));
    for (const it of items) h.push(it);
    h.remove(h.peek()!); // 1
    const last = items.reduce((a, b) => (a.heapIndex > b.heapIndex ? a : b));
    h.remove(last);
    const rest = items.filter((i) => i.deadlineNs !== 1 && i !== last).map((i) => i.deadlineNs).sort((a, b) => a - b);
    const out: number[] = [];
    for (let it = h.pop(); it; it = h.pop()) out.push(it.deadlineNs);
    assert.deepEqual(out, rest);
  });

  for (const seed of [1, 2, 3, 42, 1234]) {
    void it(`random pushes, pops and removals match a sorted reference (seed ${seed})`, () => {
      const random = rng(seed);
      const h = new DeadlineHeap<Item>();
      let reference: Item[] = [];
      let nextId = 0;
      for (let step = 0; step < 5000; step++) {
        const r = random();
        if (r < 0.5 || reference.length === 0) {
          // Few distinct deadlines, so that ties are common.
          const it: Item = { id: nextId++, deadlineNs: Math.floor(random() * 200), heapIndex: -1 };
          h.push(it);
          reference.push(it);
        } else if (r < 0.75) {
          const victim = reference[Math.floor(random() * reference.length)]!;
          h.remove(victim);
          assert.equal(victim.heapIndex, -1, `step ${step}: removed item still has an index`);
          reference = reference.filter((x) => x !== victim);
        } else {
          const top = h.pop();
          const min = Math.min(...reference.map((x) => x.deadlineNs));
          assert.ok(top, `step ${step}: pop of a non-empty heap returned nothing`);
          assert.equal(top.deadlineNs, min, `step ${step}: popped ${top.deadlineNs}, the earliest is ${min}`);
          assert.ok(reference.includes(top), `step ${step}: popped an item that was not in the heap`);
          reference = reference.filter((x) => x !== top);
        }
        assert.equal(h.size, reference.length, `step ${step}: size`);
        if (reference.length) assert.equal(h.peek()!.deadlineNs, Math.min(...reference.map((x) => x.deadlineNs)), `step ${step}: peek`);
        // Every item in the heap knows its place; every other item knows it is out.
        for (const x of reference) assert.ok(x.heapIndex >= 0 && x.heapIndex < h.size, `step ${step}: item ${x.id} index ${x.heapIndex}`);
      }
      const drained: Item[] = [];
      for (let it = h.pop(); it; it = h.pop()) drained.push(it);
      assert.deepEqual(drained.map((x) => x.deadlineNs), [...reference].sort(byDeadline).map((x) => x.deadlineNs));
      assert.deepEqual(new Set(drained), new Set(reference));
    });
  }

  void it('indices are distinct: no two items claim the same slot', () => {
    const random = rng(99);
    const h = new DeadlineHeap<Item>();
    const items = Array.from({ length: 300 }, (_, id) => ({ id, deadlineNs: Math.floor(random() * 1000), heapIndex: -1 }));
    for (const it of items) h.push(it);
    for (const it of items.filter((_, i) => i % 3 === 0)) h.remove(it);
    const live = items.filter((_, i) => i % 3 !== 0);
    assert.deepEqual(new Set(live.map((x) => x.heapIndex)).size, live.length);
    assert.deepEqual([...new Set(live.map((x) => x.heapIndex))].sort((a, b) => a - b), live.map((_, i) => i));
  });
});
