// virtio-console (virtio 1.x, 5.3), one port, no multiport: what the guest
// puts on the transmit queue is its console output, the same stream as
// CONSOLE_WRITE; input() puts host bytes into the buffers the guest posted
// on the receive queue, and the device's POLL ready bit says so (unless the
// driver asked for no notifications). Input that finds no posted buffer
// waits, up to MAX_PENDING bytes; beyond that it is dropped and counted.
import { CONSOLE_WRITE_MAX } from '../abi.js';
import type { VmContext } from '../devices.js';
import type { DeviceEntry } from '../device-page.js';
import { GuestFault } from '../exit.js';
import { VIRTIO_CONSOLE, VIRTIO_ID } from './abi.js';
import { VirtioMmio, type VirtioDevice } from './mmio.js';
import type { VirtQueue } from './queue.js';

const MAX_PENDING = 64 * 1024;

export class ConsoleDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID.CONSOLE;
  readonly features = 0n;
  readonly queueCount = 2;
  /** cols, rows, max_nr_ports, emerg_wr: nothing offered, all zero. */
  readonly config = new Uint8Array(12);
  transport!: VirtioMmio;
  /** Input not yet taken by the guest. */
  private pending: Uint8Array[] = [];
  private pendingBytes = 0;
  dropped = 0;

  constructor(private readonly out: (data: Uint8Array) => void) {}

  notify(q: VirtQueue, index: number): void {
    if (index === VIRTIO_CONSOLE.RX) {
      this.fill();
      return;
    }
    let served = false;
    for (let c = q.pop(); c; c = q.pop()) {
      if (c.writable.length) throw new GuestFault('virtio', `${this.transport.name}: transmit chain ${c.head} has device-writable buffers`);
      const len = c.readable.reduce((s, b) => s + b.length, 0);
      if (len > CONSOLE_WRITE_MAX) throw new GuestFault('virtio', `${this.transport.name}: transmit chain ${c.head} of ${len} bytes exceeds ${CONSOLE_WRITE_MAX}`);
      for (const b of c.readable) if (b.length) this.out(b);
      q.push(c.head, 0);
      served = true;
    }
    if (served) this.transport.signalUsed(q);
  }

  /** Host input for the guest: into its posted receive buffers now, or when it posts some. */
  input(data: Uint8Array): void {
    if (this.pendingBytes + data.length > MAX_PENDING) {
      this.dropped += data.length;
      return;
    }
    this.pending.push(data.slice());
    this.pendingBytes += data.length;
    this.fill();
  }

  private fill(): void {
    const q = this.transport.queues[VIRTIO_CONSOLE.RX]!;
    if (!q.ready || !this.pending.length) return;
    let served = false;
    while (this.pending.length) {
      const c = q.pop();
      if (!c) break;
      let written = 0;
      for (const b of c.writable) {
        while (b.length > written && this.pending.length) {
          const head = this.pending[0]!;
          const n = Math.min(head.length, b.length - written);
          b.set(head.subarray(0, n), written);
          written += n;
          if (n === head.length) this.pending.shift();
          else this.pending[0] = head.subarray(n);
          this.pendingBytes -= n;
        }
        if (!this.pending.length) break;
      }
      q.push(c.head, written);
      served = true;
    }
    if (served) this.transport.signalUsed(q);
  }
}

/** Sets up virtio-console for a 'console' entry of the device page (placed: backend is its window). */
export function setUpConsole(vm: VmContext, d: DeviceEntry): VirtioMmio {
  const dev = new ConsoleDevice((data) => vm.console(data));
  dev.transport = new VirtioMmio(`virtio-console.${d.id}`, vm, d.id, d.backend!, dev, () => {});
  return dev.transport;
}
