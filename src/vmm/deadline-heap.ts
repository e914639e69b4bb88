// A binary min-heap of parked VMs keyed by deadline, with O(log n) removal:
// the executor never scans all of its VMs to find the next one to wake.

export interface HeapItem {
  deadlineNs: number;
  /** Position in the heap, -1 when not in it. */
  heapIndex: number;
}

export class DeadlineHeap<T extends HeapItem> {
  private readonly items: T[] = [];

  get size(): number {
    return this.items.length;
  }

  peek(): T | undefined {
    return this.items[0];
  }

  push(item: T): void {
    item.heapIndex = this.items.length;
    this.items.push(item);
    this.up(item.heapIndex);
  }

  pop(): T | undefined {
    const top = this.items[0];
    if (top) this.remove(top);
    return top;
  }

  remove(item: T): void {
    const i = item.heapIndex;
    if (i < 0) return;
    const last = this.items.pop()!;
    item.heapIndex = -1;
    if (i < this.items.length) {
      this.items[i] = last;
      last.heapIndex = i;
      this.down(i);
      this.up(last.heapIndex);
    }
  }

  private up(i: number): void {
    const items = this.items;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (items[p]!.deadlineNs <= items[i]!.deadlineNs) break;
      this.swap(i, p);
      i = p;
    }
  }

  private down(i: number): void {
    const items = this.items;
    for (;;) {
      const l = 2 * i + 1;
      const r = l + 1;
      let m = i;
      if (l < items.length && items[l]!.deadlineNs < items[m]!.deadlineNs) m = l;
      if (r < items.length && items[r]!.deadlineNs < items[m]!.deadlineNs) m = r;
      if (m === i) return;
      this.swap(i, m);
      i = m;
    }
  }

  private swap(a: number, b: number): void {
    const items = this.items;
    const x = items[a]!;
    const y = items[b]!;
    items[a] = y;
    items[b] = x;
    x.heapIndex = b;
    y.heapIndex = a;
  }
}
