// virtio-console (virtio 1.x, 5.3), one port, no multiport: what the guest
// puts on the transmit queue is its console output, the same stream as
// CONSOLE_WRITE and under the same per-VM bound: past its console's rate
// the device stops taking chains and the guest waits (parked), the rest
// served after the wait. input() puts host bytes into the buffers the guest
// posted on the receive queue, and the device's POLL ready bit says so
// (unless the driver asked for no notifications). Input that finds no
// posted buffer waits, up to MAX_PENDING bytes; more is refused.
import { CONSOLE_WRITE_MAX } from '../abi.js';
import type { DeviceBus, VmContext } from '../devices.js';
import type { DeviceEntry } from '../device-page.js';
import { GuestFault } from '../exit.js';
import { VIRTIO_CONSOLE, VIRTIO_ID } from './abi.js';
import { VirtioMmio, type VirtioDevice } from './mmio.js';
import type { VirtQueue } from './queue.js';

/** Host input held for a guest that has not posted buffers for it. */
export const CONSOLE_INPUT_PENDING_MAX = 64 * 1024;

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

  /** out hands output on and says how long (ns) the guest must now wait for its console's rate, or 0. */
  constructor(private readonly out: (data: Uint8Array) => number) {}

  /** Serves the queue; on transmit, until the console's rate says wait: how long (ns), or 0. */
  notify(q: VirtQueue, index: number): number {
    if (index === VIRTIO_CONSOLE.RX) {
      this.fill();
      return 0;
    }
    let served = false;
    let waitNs = 0;
    // The chain that crosses the rate is served whole: at most one chain (CONSOLE_WRITE_MAX) past it.
    for (let c = q.pop(); c; c = waitNs > 0 ? undefined : q.pop()) {
      if (c.writable.length) throw new GuestFault('virtio', `${this.transport.name}: transmit chain ${c.head} has device-writable buffers`);
      const len = c.readable.reduce((s, b) => s + b.length, 0);
      if (len > CONSOLE_WRITE_MAX) throw new GuestFault('virtio', `${this.transport.name}: transmit chain ${c.head} of ${len} bytes exceeds ${CONSOLE_WRITE_MAX}`);
      for (const b of c.readable) if (b.length) waitNs = Math.max(waitNs, this.out(b));
      q.push(c.head, 0);
      served = true;
    }
    if (served) this.transport.signalUsed(q);
    return waitNs;
  }

  /** Input not yet taken by the guest, in bytes. */
  get pendingInput(): number {
    return this.pendingBytes;
  }

  /**
   * Host input for the guest: into its posted receive buffers now, or when
   * it posts some. All or nothing: false (nothing taken) if it would hold
   * more than CONSOLE_INPUT_PENDING_MAX bytes the guest has not read.
   */
  input(data: Uint8Array): boolean {
    if (this.pendingBytes + data.length > CONSOLE_INPUT_PENDING_MAX) return false;
    this.pending.push(data.slice());
    this.pendingBytes += data.length;
    this.fill();
    return true;
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

/**
 * Gives host input to a VM's (first) virtio-console, whole or not at all;
 * why not, if it was not taken: the VM has no such device, or the guest has
 * left too much input unread.
 */
export function consoleInput(bus: DeviceBus, data: Uint8Array): { name: string; message: string } | undefined {
  const dev = bus.modules.find((m): m is VirtioMmio => m instanceof VirtioMmio && m.device instanceof ConsoleDevice)?.device as ConsoleDevice | undefined;
  if (!dev) {
    return { name: 'NoConsoleDevice', message: 'it has no virtio-console device (a "console" entry in its devices) to take input: the hypercall console is output only' };
  }
  if (dev.input(data)) return undefined;
  return {
    name: 'ConsoleInputFull',
    message: `its console input holds ${dev.pendingInput} bytes the guest has not read yet; ${data.length} more would pass the ${CONSOLE_INPUT_PENDING_MAX} allowed: try again later`,
  };
}
