// A split virtqueue (virtio 1.x, 2.7) as the device side sees it: the
// descriptor table, the available ring the driver fills and the used ring
// the device returns chains on. Every address and index the guest gives is
// checked: a queue outside its RAM, a chain that loops or is longer than the
// queue, a buffer outside RAM end that VM (a GuestFault), nothing else.
import { GuestFault } from '../exit.js';
import type { GuestAccess } from '../guest-access.js';
import { VIRTQ_AVAIL, VIRTQ_DESC, VIRTQ_DESC_F, VIRTQ_USED, VIRTQ_USED_ELEM } from './abi.js';

/** One request: its buffers as views of guest RAM, the device-readable ones first. */
export interface Chain {
  head: number;
  readable: Uint8Array[];
  writable: Uint8Array[];
}

/** What a snapshot keeps of a queue (the rings themselves are in guest RAM). */
export interface QueueState {
  size: number;
  ready: boolean;
  desc: string;
  avail: string;
  used: string;
  lastAvail: number;
}

export class VirtQueue {
  size = 0;
  ready = false;
  desc = 0n;
  avail = 0n;
  used = 0n;
  /** The next available-ring entry this device takes. */
  lastAvail = 0;
  private view: DataView | undefined;

  constructor(private readonly g: GuestAccess, readonly what: string, readonly max: number) {}

  private fault(reason: string): never {
    throw new GuestFault('virtio', `${this.what}: ${reason}`);
  }

  /** QueueNum: a power of two up to max. */
  setSize(n: number): void {
    if (this.ready) this.fault('QueueNum written while the queue is ready');
    if (n === 0 || n > this.max || (n & (n - 1)) !== 0) this.fault(`queue size ${n} is not a power of two in 1..${this.max}`);
    this.size = n;
  }

  /** QueueReady = 1: the three areas must lie in RAM, aligned as the spec says. */
  activate(): void {
    if (this.size === 0) this.fault('made ready before its size (QueueNum) was set');
    const areas: [string, bigint, number, number][] = [
      ['descriptor table', this.desc, VIRTQ_DESC.size * this.size, 16],
      ['available ring', this.avail, VIRTQ_AVAIL.RING + 2 * this.size + 2, 2],
      ['used ring', this.used, VIRTQ_USED.RING + VIRTQ_USED_ELEM.size * this.size + 2, 4],
    ];
    for (const [name, gpa, len, align] of areas) {
      if (!this.g.inRam(gpa, len)) this.fault(`its ${name} at 0x${gpa.toString(16)} (${len} bytes) lies outside guest RAM`);
      if (gpa % BigInt(align) !== 0n) this.fault(`its ${name} at 0x${gpa.toString(16)} is not ${align}-byte aligned`);
    }
    const ram = this.g.ram.bytes;
    this.view = new DataView(ram.buffer, ram.byteOffset, ram.byteLength);
    this.ready = true;
  }

  reset(): void {
    this.size = 0;
    this.ready = false;
    this.desc = this.avail = this.used = 0n;
    this.lastAvail = 0;
    this.view = undefined;
  }

  /** The next chain the driver made available, or undefined if none. */
  pop(): Chain | undefined {
    const v = this.view;
    if (!v) return undefined;
    const avail = Number(this.avail);
    const idx = v.getUint16(avail + VIRTQ_AVAIL.IDX, true);
    const waiting = (idx - this.lastAvail) & 0xffff;
    if (waiting === 0) return undefined;
    if (waiting > this.size) this.fault(`available index ${idx} is ${waiting} ahead of the device, more than the queue's ${this.size}`);
    const head = v.getUint16(avail + VIRTQ_AVAIL.RING + 2 * (this.lastAvail % this.size), true);
    this.lastAvail = (this.lastAvail + 1) & 0xffff;
    return this.walk(v, head);
  }

  private walk(v: DataView, head: number): Chain {
    const chain: Chain = { head, readable: [], writable: [] };
    const table = Number(this.desc);
    let i = head;
    for (let n = 0; ; n++) {
      if (i >= this.size) this.fault(`descriptor ${i} is past the end of the queue (${this.size})`);
      if (n >= this.size) this.fault(`the chain from descriptor ${head} is longer than the queue (${this.size}): it loops`);
      const d = table + VIRTQ_DESC.size * i;
      const addr = v.getBigUint64(d + VIRTQ_DESC.addr, true);
      const len = v.getUint32(d + VIRTQ_DESC.len, true);
      const flags = v.getUint16(d + VIRTQ_DESC.flags, true);
      if (flags & VIRTQ_DESC_F.INDIRECT) this.fault(`descriptor ${i} is indirect, a feature this device does not offer`);
      if (!this.g.inRam(addr, len)) this.fault(`descriptor ${i}'s buffer 0x${addr.toString(16)}+${len} lies outside guest RAM`);
      // A device-writable buffer is marked written now: the device fills it before the guest resumes.
      if (flags & VIRTQ_DESC_F.WRITE) chain.writable.push(this.g.ram.writable(Number(addr), len));
      else if (chain.writable.length) this.fault(`descriptor ${i} is device-readable after a device-writable one`);
      else chain.readable.push(this.g.ram.bytes.subarray(Number(addr), Number(addr) + len));
      if (!(flags & VIRTQ_DESC_F.NEXT)) return chain;
      i = v.getUint16(d + VIRTQ_DESC.next, true);
    }
  }

  /** Returns a chain to the driver: written bytes were put in its writable buffers. */
  push(head: number, written: number): void {
    const ram = this.g.ram;
    const used = Number(this.used);
    const idx = this.view!.getUint16(used + VIRTQ_USED.IDX, true);
    const e = used + VIRTQ_USED.RING + VIRTQ_USED_ELEM.size * (idx % this.size);
    ram.setUint32(e + VIRTQ_USED_ELEM.id, head);
    ram.setUint32(e + VIRTQ_USED_ELEM.len, written);
    // The element before the index: a driver that sees the index finds it whole.
    ram.writableView(used + VIRTQ_USED.IDX, 2).setUint16(0, (idx + 1) & 0xffff, true);
  }

  save(): QueueState {
    return {
      size: this.size, ready: this.ready, desc: `0x${this.desc.toString(16)}`, avail: `0x${this.avail.toString(16)}`,
      used: `0x${this.used.toString(16)}`, lastAvail: this.lastAvail,
    };
  }

  restore(s: QueueState): void {
    this.reset();
    this.size = s.size;
    this.desc = BigInt(s.desc);
    this.avail = BigInt(s.avail);
    this.used = BigInt(s.used);
    if (s.ready) this.activate();
    this.lastAvail = s.lastAvail;
  }
}
