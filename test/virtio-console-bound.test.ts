// virtio-console under the VM's console bound, at the device model (no
// vCPU: this test is the guest's driver, writing its rings into real guest
// memory and its registers through the VM's bus, as its MMIO exits would).
// Output on the transmit queue spends the same per-VM rate as CONSOLE_WRITE:
// past it the notify holds the guest (parked for the wait) with the rest of
// the queue unserved, and each wait's end serves more. Host input goes into
// the buffers posted on the receive queue, whole or refused.
import assert from 'node:assert/strict';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import { HC, HC_STRUCT, NOXS_PAGE_SIZE } from '../src/vmm/abi.js';
import { CONSOLE_BURST, CONSOLE_RATE, ConsoleRate } from '../src/vmm/console-rate.js';
import { DeviceBus, Next, type VmContext } from '../src/vmm/devices.js';
import { GuestAccess } from '../src/vmm/guest-access.js';
import { CoreModule } from '../src/vmm/modules/core.js';
import {
  LVM_VIRTIO_MMIO_BASE, VIRTIO_CONSOLE, VIRTIO_MMIO, VIRTIO_STATUS, VIRTQ_AVAIL, VIRTQ_DESC, VIRTQ_DESC_F, VIRTQ_USED, VIRTQ_USED_ELEM,
} from '../src/vmm/virtio/abi.js';
import { CONSOLE_INPUT_PENDING_MAX, consoleInput, setUpConsole } from '../src/vmm/virtio/console.js';

const QSIZE = 8;
const CHAIN = 64 * 1024;
/** Where the driver keeps each queue's rings, and its buffers. */
const RINGS = [0x10000, 0x14000];
const BUFS = 0x40000;

/** One VM's device model without its vCPU: bus, guest memory, the core module and the console's rate on a clock the test moves. */
class DeviceVm implements VmContext {
  readonly vmId = 1;
  readonly bus = new DeviceBus();
  readonly ram = new GuestMemory(4 << 20);
  private readonly page = new GuestMemory(NOXS_PAGE_SIZE);
  readonly guest = new GuestAccess(this.ram, this.page);
  nowNs = 1e12;
  readonly rate = new ConsoleRate(this.nowNs);
  output = 0;
  readonly core = this.bus.add(new CoreModule(this, {
    console: (data) => this.console(data),
    halt: () => {},
    shutdownRequested: () => false,
  }, () => this.nowNs));

  console(data: Uint8Array): number {
    this.output += data.length;
    return this.rate.spend(data.length, this.nowNs);
  }

  hold(waitNs: number, then?: () => number): Next {
    return this.core.hold(waitNs, then);
  }

  close(): void {
    this.bus.close();
    this.ram.close();
    this.page.close();
  }
}

/** The guest's side of the device: the handshake, its queues, its buffers. */
class Driver {
  private readonly avail = [0, 0];

  constructor(private readonly vm: DeviceVm) {}

  reg(offset: number, value?: number): Next | number {
    const r = this.vm.bus.mmioAt(LVM_VIRTIO_MMIO_BASE)!;
    const data = new Uint8Array(8);
    const v = new DataView(data.buffer);
    if (value === undefined) {
      r.handler(offset, data, 4, false);
      return v.getUint32(0, true);
    }
    v.setUint32(0, value, true);
    return r.handler(offset, data, 4, true);
  }

  setUp(): void {
    const S = VIRTIO_STATUS;
    this.reg(VIRTIO_MMIO.STATUS, S.ACKNOWLEDGE | S.DRIVER);
    this.reg(VIRTIO_MMIO.DRIVER_FEATURES_SEL, 1);
    this.reg(VIRTIO_MMIO.DRIVER_FEATURES, 1);
    this.reg(VIRTIO_MMIO.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK);
    for (const q of [VIRTIO_CONSOLE.RX, VIRTIO_CONSOLE.TX]) {
      const at = RINGS[q]!;
      this.reg(VIRTIO_MMIO.QUEUE_SEL, q);
      this.reg(VIRTIO_MMIO.QUEUE_NUM, QSIZE);
      this.reg(VIRTIO_MMIO.QUEUE_DESC_LOW, at);
      this.reg(VIRTIO_MMIO.QUEUE_DRIVER_LOW, at + 0x1000);
      this.reg(VIRTIO_MMIO.QUEUE_DEVICE_LOW, at + 0x2000);
      this.reg(VIRTIO_MMIO.QUEUE_READY, 1);
    }
    this.reg(VIRTIO_MMIO.STATUS, S.ACKNOWLEDGE | S.DRIVER | S.FEATURES_OK | S.DRIVER_OK);
  }

  /** Makes n one-buffer chains available on queue q (descriptors 0..n-1, each len bytes at its own place). */
  offer(q: number, n: number, len: number, flags = 0): void {
    const ram = this.vm.ram;
    const at = RINGS[q]!;
    for (let k = 0; k < n; k++) {
      const d = at + k * VIRTQ_DESC.size;
      ram.setBigUint64(d + VIRTQ_DESC.addr, BigInt(BUFS + q * QSIZE * CHAIN + k * CHAIN));
      ram.view.setUint32(d + VIRTQ_DESC.len, len, true);
      ram.view.setUint16(d + VIRTQ_DESC.flags, flags, true);
      ram.view.setUint16(at + 0x1000 + VIRTQ_AVAIL.RING + 2 * (this.avail[q]! % QSIZE), k, true);
      this.avail[q]!++;
    }
    ram.view.setUint16(at + 0x1000 + VIRTQ_AVAIL.IDX, this.avail[q]!, true);
  }

  used(q: number): number {
    return this.vm.ram.view.getUint16(RINGS[q]! + 0x2000 + VIRTQ_USED.IDX, true);
  }

  /** The k-th used element of queue q: [descriptor id, bytes written]. */
  usedElem(q: number, k: number): [number, number] {
    const e = RINGS[q]! + 0x2000 + VIRTQ_USED.RING + (k % QSIZE) * VIRTQ_USED_ELEM.size;
    return [this.vm.ram.view.getUint32(e + VIRTQ_USED_ELEM.id, true), this.vm.ram.view.getUint32(e + VIRTQ_USED_ELEM.len, true)];
  }

  buffer(q: number, k: number, len: number): Buffer {
    return Buffer.from(this.vm.ram.bytes.subarray(BUFS + q * QSIZE * CHAIN + k * CHAIN, BUFS + q * QSIZE * CHAIN + k * CHAIN + len));
  }
}

void describe('virtio-console under the console bound (device model)', () => {
  let vm: DeviceVm;
  let drv: Driver;
  beforeEach(() => {
    vm = new DeviceVm();
    vm.bus.add(setUpConsole(vm, { type: 'console', id: 3, backend: LVM_VIRTIO_MMIO_BASE } as never));
    drv = new Driver(vm);
    drv.setUp();
  });
  afterEach(() => vm.close());

  void it('a notify of 512 KiB serves the burst and holds the guest; each wait\'s end serves more, at the rate', () => {
    drv.offer(VIRTIO_CONSOLE.TX, QSIZE, CHAIN);
    const t0 = vm.nowNs;
    assert.equal(drv.reg(VIRTIO_MMIO.QUEUE_NOTIFY, VIRTIO_CONSOLE.TX), Next.Park, 'the notify held the guest');
    // The burst (4 chains) and the chain that crossed it: the rest waits.
    assert.equal(drv.used(VIRTIO_CONSOLE.TX), CONSOLE_BURST / CHAIN + 1);
    assert.equal(vm.output, CONSOLE_BURST + CHAIN);
    assert.ok(vm.core.holding, 'held for the rate, not in a POLL');
    let waits = 0;
    while (vm.core.deadlineNs) {
      const wait = vm.core.deadlineNs - vm.nowNs;
      assert.ok(wait > 0 && wait <= Math.ceil((CHAIN * 1e9) / CONSOLE_RATE), `a wait of ${wait} ns`);
      vm.nowNs = vm.core.deadlineNs;
      vm.core.wake(0n);
      // What the machine does before it enters the guest again.
      const next = vm.core.resumeHeld();
      // Never ahead of the rate by more than the burst and one chain.
      assert.ok(vm.output <= CONSOLE_BURST + CHAIN + ((vm.nowNs - t0) * CONSOLE_RATE) / 1e9, `${vm.output} bytes by ${vm.nowNs - t0} ns`);
      if (next === Next.Resume) break;
      assert.ok(++waits < 20, 'the queue never drained');
    }
    assert.equal(drv.used(VIRTIO_CONSOLE.TX), QSIZE, 'every chain used before the guest resumes');
    assert.equal(vm.output, QSIZE * CHAIN);
    // 512 KiB at 1 MiB/s after a 256 KiB burst: 0.25 s of the guest's time.
    assert.equal(vm.nowNs - t0, Math.ceil(((QSIZE * CHAIN - CONSOLE_BURST) * 1e9) / CONSOLE_RATE));
    assert.equal(vm.rate.throttledNs >= vm.nowNs - t0, true);
  });

  void it('CONSOLE_WRITE and the virtio-console spend one rate', () => {
    drv.offer(VIRTIO_CONSOLE.TX, CONSOLE_BURST / CHAIN, CHAIN);
    assert.equal(drv.reg(VIRTIO_MMIO.QUEUE_NOTIFY, VIRTIO_CONSOLE.TX), Next.Resume, 'the burst itself needs no wait');
    // The hypercall console's next write, the same instant, waits for the bytes the virtio-console took.
    const arg = 0x30000;
    vm.ram.setBigUint64(arg + HC_STRUCT.consoleWrite.data, BigInt(BUFS));
    vm.ram.setBigUint64(arg + HC_STRUCT.consoleWrite.len, 1024n);
    assert.equal(vm.bus.call(HC.CONSOLE_WRITE, 0x500 + HC.CONSOLE_WRITE)(arg), Next.Park);
    assert.equal(vm.core.deadlineNs - vm.nowNs, Math.ceil((1024 * 1e9) / CONSOLE_RATE));
  });

  void it('a queue made not ready during the wait is not served after it', () => {
    drv.offer(VIRTIO_CONSOLE.TX, QSIZE, CHAIN);
    assert.equal(drv.reg(VIRTIO_MMIO.QUEUE_NOTIFY, VIRTIO_CONSOLE.TX), Next.Park);
    const served = drv.used(VIRTIO_CONSOLE.TX);
    drv.reg(VIRTIO_MMIO.STATUS, 0);
    vm.nowNs = vm.core.deadlineNs;
    vm.core.wake(0n);
    assert.equal(vm.core.resumeHeld(), Next.Resume);
    assert.equal(vm.output, served * CHAIN, 'nothing more was taken from a reset device');
  });

  void it('host input: whole or refused, into the receive buffers the guest posted, with the device ready', () => {
    const enc = (s: string): Uint8Array => new TextEncoder().encode(s);
    // Nothing posted yet: it waits, bounded.
    assert.equal(consoleInput(vm.bus, enc('hello\n')), undefined);
    assert.equal(vm.bus.ready(), 0n, 'nothing delivered yet');
    drv.offer(VIRTIO_CONSOLE.RX, 2, 256, VIRTQ_DESC_F.WRITE);
    assert.equal(drv.reg(VIRTIO_MMIO.QUEUE_NOTIFY, VIRTIO_CONSOLE.RX), Next.Resume);
    assert.equal(drv.used(VIRTIO_CONSOLE.RX), 1);
    assert.deepEqual(drv.usedElem(VIRTIO_CONSOLE.RX, 0), [0, 6]);
    assert.equal(drv.buffer(VIRTIO_CONSOLE.RX, 0, 6).toString(), 'hello\n');
    assert.equal(vm.bus.ready(), 1n << 3n, 'the device (id 3) is ready');
    // With a buffer posted it goes in at once.
    assert.equal(consoleInput(vm.bus, enc('again')), undefined);
    assert.deepEqual(drv.usedElem(VIRTIO_CONSOLE.RX, 1), [1, 5]);
    assert.equal(drv.buffer(VIRTIO_CONSOLE.RX, 1, 5).toString(), 'again');
    // No buffer left: input waits up to CONSOLE_INPUT_PENDING_MAX bytes, then is refused whole.
    const big = new Uint8Array(CONSOLE_INPUT_PENDING_MAX - 10);
    assert.equal(consoleInput(vm.bus, big), undefined);
    const refused = consoleInput(vm.bus, enc('eleven byte'));
    assert.equal(refused?.name, 'ConsoleInputFull');
    assert.match(refused!.message, /holds 65526 bytes the guest has not read yet; 11 more would pass the 65536 allowed/);
    assert.equal(consoleInput(vm.bus, enc('ten bytes!')), undefined, 'what still fits is taken');
  });

  void it('a VM without a virtio-console takes no input, and says why', () => {
    const bare = new DeviceVm();
    try {
      const r = consoleInput(bare.bus, new Uint8Array(1));
      assert.equal(r?.name, 'NoConsoleDevice');
      assert.match(r!.message, /no virtio-console device/);
    } finally {
      bare.close();
    }
  });
});
