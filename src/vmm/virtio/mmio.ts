// The virtio-mmio transport (virtio 1.x, 4.2, version 2): one device's
// register window, the device status handshake, feature negotiation, queue
// set-up and the config space; a device (block, console) supplies its
// features, config bytes and what a queue notify does. A register access
// of the wrong width, or out of the handshake's order, ends the VM with the
// reason: a driver that does it is broken, and nothing it set up is trusted.
import { Next, type DeviceModule, type VmContext } from '../devices.js';
import { GuestFault } from '../exit.js';
import {
  LVM_VIRTIO_MMIO_BASE, LVM_VIRTIO_MMIO_SIZE, LVM_VIRTIO_QUEUE_MAX, VIRTIO_F_VERSION_1, VIRTIO_MMIO, VIRTIO_STATUS,
  VIRTIO_VENDOR_LIGHTVM, VIRTQ_AVAIL,
} from './abi.js';
import { VirtQueue, type QueueState } from './queue.js';
import type { DeviceEntry } from '../device-page.js';

/** What a virtio device adds to the transport. */
export interface VirtioDevice {
  readonly deviceId: number;
  /** Feature bits beyond VERSION_1. */
  readonly features: bigint;
  readonly queueCount: number;
  /** The config space, as the driver reads it. */
  readonly config: Uint8Array;
  /**
   * The driver made buffers available on queue q (served before the guest
   * resumes); returns 0, or how long (ns) the guest must wait first: a
   * device whose output counts against the VM's console rate (console)
   * may serve part, and is called again after the wait for the rest.
   */
  notify(q: VirtQueue, index: number): number;
}

export interface VirtioState {
  status: number;
  driverFeatures: string;
  queues: QueueState[];
  interrupt: number;
}

/** Gives each virtio device of a configuration (block, console) its MMIO window, in order; others unchanged. */
export function placeVirtio(devices: readonly DeviceEntry[]): DeviceEntry[] {
  let n = 0;
  return devices.map((d) => (d.type === 'block' || d.type === 'console' ? { ...d, backend: LVM_VIRTIO_MMIO_BASE + LVM_VIRTIO_MMIO_SIZE * n++ } : d));
}

export class VirtioMmio implements DeviceModule {
  readonly queues: VirtQueue[];
  private status = 0;
  private deviceFeaturesSel = 0;
  private driverFeaturesSel = 0;
  private driverFeatures = 0n;
  private queueSel = 0;
  private interrupt = 0;
  private readonly offered: bigint;

  constructor(
    readonly name: string,
    private readonly vm: VmContext,
    /** The device's noxs id: its bit in POLL's ready set. */
    readonly id: number,
    readonly base: number,
    readonly device: VirtioDevice,
    private readonly onClose: () => void,
  ) {
    this.offered = device.features | (1n << BigInt(VIRTIO_F_VERSION_1));
    this.queues = Array.from({ length: device.queueCount }, (_, i) => new VirtQueue(vm.guest, `${name} queue ${i}`, LVM_VIRTIO_QUEUE_MAX));
    vm.bus.mmio(base, LVM_VIRTIO_MMIO_SIZE, name, (offset, data, len, write) => this.access(offset, data, len, write));
  }

  private fault(reason: string): never {
    throw new GuestFault('virtio', `${this.name}: ${reason}`);
  }

  private access(offset: number, data: Uint8Array, len: number, write: boolean): Next {
    if (offset >= VIRTIO_MMIO.CONFIG) {
      const at = offset - VIRTIO_MMIO.CONFIG;
      if (write) this.fault(`wrote ${len} bytes at config offset 0x${at.toString(16)}: its config space is read-only`);
      data.fill(0, 0, len);
      if (at < this.device.config.length) data.set(this.device.config.subarray(at, Math.min(at + len, this.device.config.length)));
      return Next.Resume;
    }
    if (len !== 4 || offset % 4 !== 0) this.fault(`${len}-byte access at register 0x${offset.toString(16)}: registers are 32-bit and aligned`);
    const v = new DataView(data.buffer, data.byteOffset, 4);
    if (write) {
      const value = v.getUint32(0, true);
      // A notify may hold the guest (its console's rate); other writes never do.
      if (offset === VIRTIO_MMIO.QUEUE_NOTIFY) return this.queueNotify(value);
      this.write(offset, value);
    } else {
      v.setUint32(0, this.read(offset), true);
    }
    return Next.Resume;
  }

  private read(offset: number): number {
    const q = this.queues[this.queueSel];
    switch (offset) {
      case VIRTIO_MMIO.MAGIC_VALUE: return VIRTIO_MMIO.MAGIC;
      case VIRTIO_MMIO.VERSION: return VIRTIO_MMIO.VERSION_2;
      case VIRTIO_MMIO.DEVICE_ID: return this.device.deviceId;
      case VIRTIO_MMIO.VENDOR_ID: return VIRTIO_VENDOR_LIGHTVM;
      case VIRTIO_MMIO.DEVICE_FEATURES:
        return this.deviceFeaturesSel > 1 ? 0 : Number((this.offered >> BigInt(32 * this.deviceFeaturesSel)) & 0xffffffffn);
      case VIRTIO_MMIO.QUEUE_NUM_MAX: return q ? q.max : 0;
      case VIRTIO_MMIO.QUEUE_READY: return q?.ready ? 1 : 0;
      case VIRTIO_MMIO.INTERRUPT_STATUS: return this.interrupt;
      case VIRTIO_MMIO.STATUS: return this.status;
      case VIRTIO_MMIO.CONFIG_GENERATION: return 0;
      default: return 0;
    }
  }

  private write(offset: number, value: number): void {
    const q = (): VirtQueue => {
      if (!(this.status & VIRTIO_STATUS.FEATURES_OK)) this.fault(`queue register 0x${offset.toString(16)} written before FEATURES_OK`);
      const queue = this.queues[this.queueSel];
      if (!queue) this.fault(`queue ${this.queueSel} selected, but the device has ${this.queues.length}`);
      return queue;
    };
    const low = (old: bigint): bigint => (old & ~0xffffffffn) | BigInt(value);
    const high = (old: bigint): bigint => (old & 0xffffffffn) | (BigInt(value) << 32n);
    switch (offset) {
      case VIRTIO_MMIO.DEVICE_FEATURES_SEL: this.deviceFeaturesSel = value; return;
      case VIRTIO_MMIO.DRIVER_FEATURES_SEL: this.driverFeaturesSel = value; return;
      case VIRTIO_MMIO.DRIVER_FEATURES:
        if (this.status & VIRTIO_STATUS.FEATURES_OK) this.fault('driver features written after FEATURES_OK');
        if (this.driverFeaturesSel > 1) return;
        this.driverFeatures = (this.driverFeatures & ~(0xffffffffn << BigInt(32 * this.driverFeaturesSel))) |
          (BigInt(value) << BigInt(32 * this.driverFeaturesSel));
        return;
      case VIRTIO_MMIO.QUEUE_SEL: this.queueSel = value; return;
      case VIRTIO_MMIO.QUEUE_NUM: q().setSize(value); return;
      case VIRTIO_MMIO.QUEUE_READY:
        if (value) q().activate();
        else q().reset();
        return;
      case VIRTIO_MMIO.QUEUE_DESC_LOW: q().desc = low(q().desc); return;
      case VIRTIO_MMIO.QUEUE_DESC_HIGH: q().desc = high(q().desc); return;
      case VIRTIO_MMIO.QUEUE_DRIVER_LOW: q().avail = low(q().avail); return;
      case VIRTIO_MMIO.QUEUE_DRIVER_HIGH: q().avail = high(q().avail); return;
      case VIRTIO_MMIO.QUEUE_DEVICE_LOW: q().used = low(q().used); return;
      case VIRTIO_MMIO.QUEUE_DEVICE_HIGH: q().used = high(q().used); return;
      case VIRTIO_MMIO.INTERRUPT_ACK: this.interrupt &= ~value; return;
      case VIRTIO_MMIO.STATUS: this.setStatus(value); return;
      default:
        this.fault(`wrote 0x${value.toString(16)} to register 0x${offset.toString(16)}, which is read-only or does not exist`);
    }
  }

  /** The handshake: ACKNOWLEDGE, DRIVER, FEATURES_OK (if the features are ours), DRIVER_OK; 0 resets. */
  private setStatus(value: number): void {
    if (value === 0) {
      this.reset();
      return;
    }
    if ((value & this.status) !== this.status) this.fault(`status 0x${value.toString(16)} clears bits of 0x${this.status.toString(16)} (only 0 resets)`);
    const added = value & ~this.status;
    if (added & VIRTIO_STATUS.FEATURES_OK) {
      const extra = this.driverFeatures & ~this.offered;
      // Not accepted: FEATURES_OK stays clear, which the driver reads back (3.1.1).
      if (extra !== 0n || !(this.driverFeatures & (1n << BigInt(VIRTIO_F_VERSION_1)))) value &= ~VIRTIO_STATUS.FEATURES_OK;
    }
    if ((added & VIRTIO_STATUS.DRIVER_OK) && !(value & VIRTIO_STATUS.FEATURES_OK)) this.fault('DRIVER_OK set without FEATURES_OK');
    this.status = value;
  }

  private queueNotify(index: number): Next {
    if (!(this.status & VIRTIO_STATUS.DRIVER_OK)) this.fault(`queue ${index} notified before DRIVER_OK`);
    const q = this.queues[index];
    if (!q?.ready) this.fault(`queue ${index} notified, which is not ${q ? 'ready' : 'one of its queues'}`);
    // A wait for the console's rate: the rest of the queue is served after it (if still ready).
    const more = (): number => (q.ready ? this.device.notify(q, index) : 0);
    return this.vm.hold(this.device.notify(q, index), more);
  }

  /** After the device put chains on q's used ring: the used-buffer bit, unless the driver asked for none. */
  signalUsed(q: VirtQueue): void {
    const flags = this.vm.guest.ram.view.getUint16(Number(q.avail) + VIRTQ_AVAIL.FLAGS, true);
    if (!(flags & VIRTQ_AVAIL.F_NO_INTERRUPT)) this.interrupt |= 1;
  }

  private reset(): void {
    this.status = 0;
    this.driverFeatures = 0n;
    this.deviceFeaturesSel = this.driverFeaturesSel = this.queueSel = 0;
    this.interrupt = 0;
    for (const q of this.queues) q.reset();
  }

  /** Negotiated feature bit n. */
  has(bit: number): boolean {
    return (this.driverFeatures & (1n << BigInt(bit))) !== 0n;
  }

  ready(): bigint {
    return this.interrupt ? 1n << BigInt(this.id) : 0n;
  }

  save(): Uint8Array {
    const s: VirtioState = {
      status: this.status, driverFeatures: `0x${this.driverFeatures.toString(16)}`, queues: this.queues.map((q) => q.save()), interrupt: this.interrupt,
    };
    return new TextEncoder().encode(JSON.stringify(s));
  }

  restore(state: Uint8Array): void {
    const s = JSON.parse(new TextDecoder().decode(state)) as VirtioState;
    if (s.queues.length !== this.queues.length) this.fault(`saved with ${s.queues.length} queues, restored with ${this.queues.length}`);
    this.status = s.status;
    this.driverFeatures = BigInt(s.driverFeatures);
    this.interrupt = s.interrupt;
    s.queues.forEach((qs, i) => this.queues[i]!.restore(qs));
  }

  close(): void {
    this.onClose();
  }
}
