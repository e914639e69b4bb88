// Network devices: a TAP device per guest NIC, frames moved by the
// NET_WRITE and NET_READ hypercalls (modules/net.ts) straight between guest
// memory and the tap (one copy, in the kernel). The executor watches the
// taps of its VMs in its epoll set: a parked VM wakes when a frame arrives.
// Bad frames from a guest (short, oversized, another source MAC) are
// dropped and counted; they end nothing.
import * as libc from '../sys/libc.js';
import { openTap, type Tap } from '../sys/tun.js';
import { disableIpv6, linkIndex, Rtnetlink } from '../sys/netlink.js';
import { DeviceConfigError } from './device-page.js';

export const ETH_HEADER = 14;

export interface NetCounters {
  txFrames: number;
  rxFrames: number;
  txDropped: number;
  rxDropped: number;
}

/** Frames held for a VM that is not running yet (just-in-time boot) at most. */
const MAX_HELD = 256;
const bounce = new Uint8Array(65536);

export class NetDevice {
  readonly counters: NetCounters = { txFrames: 0, rxFrames: 0, txDropped: 0, rxDropped: 0 };
  /** A frame arrived since the guest last asked (edge-triggered epoll). */
  pending = false;
  /** Frames read off the tap before the guest ran (a just-in-time VM's first packets): served first. */
  readonly held: Uint8Array[] = [];
  /** Last frame in or out (monotonic ns): idle VMs of a service are stopped. */
  lastTrafficNs = 0;
  /** False for a service's taps, which outlive each VM that uses them. */
  owned = true;
  /** When the tap was set up: tap, bridge port, up (for the benchmark). */
  setupNs = 0;
  private readonly mac: Uint8Array;
  private closed = false;

  private constructor(readonly id: number, readonly tap: Tap, readonly mtu: number, mac: string) {
    this.mac = new Uint8Array(mac.split(':').map((h) => parseInt(h, 16)));
  }

  get macBytes(): Uint8Array {
    return this.mac;
  }

  /** Reads every frame waiting on the tap (no guest yet); keep decides which are held for it. */
  drainTap(keep: (frame: Uint8Array) => boolean): void {
    for (;;) {
      const n = libc.read(this.tap.fd, bounce);
      if (n <= 0) return;
      const frame = bounce.slice(0, n);
      if (keep(frame) && this.held.length < MAX_HELD) this.held.push(frame);
    }
  }

  /**
   * Creates the tap, attaches it to the bridge and brings it up: one
   * ioctl and one rtnetlink message. The tap goes away with its fd.
   */
  static create(id: number, name: string, bridge: string, mtu: number, mac: string, nl: Rtnetlink, field = `net device ${id}`): NetDevice {
    const t0 = process.hrtime.bigint();
    const master = linkIndex(bridge);
    if (!master) throw new DeviceConfigError(`${field}.bridge`, `bridge "${bridge}" does not exist`);
    const tap = openTap(name);
    // The kernel says EINVAL or EOPNOTSUPP only: which setting it refused is said here.
    let step = `${field}.mtu`;
    try {
      const index = linkIndex(tap.name);
      if (mtu !== 1500) nl.setMtu(index, mtu);
      disableIpv6(tap.name);
      step = `${field}.bridge`;
      nl.attachAndUp(index, master);
    } catch (err) {
      libc.close(tap.fd);
      const what = step.endsWith('.mtu') ? `MTU ${mtu} refused for tap ${name}` : `tap ${name} cannot join "${bridge}" (is it a bridge?)`;
      throw new DeviceConfigError(step, `${what}: ${(err as Error).message}`);
    }
    const dev = new NetDevice(id, tap, mtu, mac);
    dev.setupNs = Number(process.hrtime.bigint() - t0);
    return dev;
  }

  write(frame: Uint8Array): boolean {
    if (frame.length < ETH_HEADER || frame.length > this.mtu + ETH_HEADER) {
      this.counters.txDropped++;
      return false;
    }
    // The source MAC must be the one the device page gives the guest.
    for (let i = 0; i < 6; i++) {
      if (frame[6 + i] !== this.mac[i]) {
        this.counters.txDropped++;
        return false;
      }
    }
    if (libc.write(this.tap.fd, frame) !== frame.length) {
      this.counters.txDropped++;
      return false;
    }
    this.counters.txFrames++;
    this.lastTrafficNs = Number(process.hrtime.bigint());
    return true;
  }

  /** Reads one frame into buf; its length, or -1 if none waits. A frame longer than buf is dropped. */
  read(buf: Uint8Array): number {
    for (;;) {
      const held = this.held.shift();
      const n = held ? held.length : libc.read(this.tap.fd, bounce);
      if (n <= 0) {
        this.pending = false;
        return -1;
      }
      if (n > buf.length) {
        this.counters.rxDropped++;
        continue;
      }
      buf.set(held ?? bounce.subarray(0, n));
      this.counters.rxFrames++;
      this.lastTrafficNs = Number(process.hrtime.bigint());
      return n;
    }
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.tap.fd);
  }
}
