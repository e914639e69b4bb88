// noxs: the per-VM device page. Lower level first, in this test's own thread:
// a Machine with the device page a config describes, a guest that writes into
// it, and the page unchanged afterwards. Then validation of device configs
// through the Host.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError, type DeviceEntry } from '../src/index.js';
import { Kvm } from '../src/kvm/kvm.js';
import {
  ABI_VERSION, BOOT_INFO, BOOT_MAGIC, DEVICE_PAGE_GPA, NOXS_DEVICE, PLATFORM_LIGHTVM, NOXS_HEADER, NOXS_MAGIC, NOXS_NAME_MAX, NOXS_PAGE_SIZE, NOXS_VERSION, noxsDeviceOffset,
} from '../src/vmm/abi.js';
import { parseElf } from '../src/vmm/elf.js';
import { BOOT_INFO_GPA } from '../src/vmm/layout.js';
import { Machine, Outcome, type MachineConfig } from '../src/vmm/machine.js';
import { guestImage, liveVms, openFds } from './helpers.js';

const DEVICES: DeviceEntry[] = [
  { type: 'net', id: 3, backend: 0x1234, mac: '02:00:00:00:00:2a', mtu: 1500, ipv4: { addr: '10.0.0.2', netmask: '255.255.255.0', gateway: '10.0.0.1' } },
  { type: 'block', id: 7, mac: 'AA:BB:CC:DD:EE:FF' },
];
const CONFIG: MachineConfig = { vmId: 77, name: 'devpage-vm', cmdline: '', devices: DEVICES };

function loadImage(name: string): ReturnType<typeof parseElf> {
  const file = guestImage(name);
  return parseElf(file, new Uint8Array(readFileSync(file)));
}

/** Runs a machine to its end on this thread; Parked must not happen for these guests. */
function runToEnd(m: Machine): void {
  const control = new Int32Array(new SharedArrayBuffer(8));
  for (let i = 0; i < 1000; i++) {
    const outcome = m.run(control);
    if (outcome === Outcome.Ended) return;
    assert.equal(outcome, Outcome.Interrupted, 'the guest parked (POLL), which it never does');
  }
  assert.fail('the guest did not end after 1000 interruptions');
}

void describe('device page, at the Machine level', () => {
  let kvm: Kvm;
  before(() => {
    kvm = Kvm.open();
  });
  after(() => {
    kvm.close();
  });

  void it('holds what the config says, in the layout of abi.h', () => {
    const m = new Machine(kvm, 4 << 20);
    try {
      m.load(loadImage('noop'), CONFIG);
      const page = m.devicePage.snapshot();
      assert.equal(page.length, NOXS_PAGE_SIZE);
      const v = new DataView(page.buffer);
      assert.equal(v.getUint32(NOXS_HEADER.magic, true), NOXS_MAGIC);
      assert.equal(v.getUint16(NOXS_HEADER.version, true), NOXS_VERSION);
      assert.equal(v.getUint16(NOXS_HEADER.deviceCount, true), 2);
      const generation = v.getUint32(NOXS_HEADER.generation, true);
      assert.ok(generation > 0 && generation % 2 === 0, `generation ${generation} should be even and non-zero`);
      assert.equal(v.getBigUint64(NOXS_HEADER.vmId, true), 77n);
      const name = page.subarray(NOXS_HEADER.name, NOXS_HEADER.name + NOXS_NAME_MAX);
      assert.equal(Buffer.from(name.subarray(0, 10)).toString(), 'devpage-vm');
      assert.ok(name.subarray(10).every((b) => b === 0), 'name is NUL-padded');

      const d0 = noxsDeviceOffset(0);
      assert.equal(v.getUint16(d0 + NOXS_DEVICE.type, true), 2);
      assert.equal(v.getUint32(d0 + NOXS_DEVICE.id, true), 3);
      assert.equal(v.getBigUint64(d0 + NOXS_DEVICE.backend, true), 0x1234n);
      assert.deepEqual([...page.subarray(d0 + NOXS_DEVICE.mac, d0 + NOXS_DEVICE.mac + 6)], [2, 0, 0, 0, 0, 0x2a]);
      assert.equal(v.getUint16(d0 + NOXS_DEVICE.mtu, true), 1500);
      // Network byte order: the first octet first in memory.
      assert.deepEqual([...page.subarray(d0 + NOXS_DEVICE.ipv4Addr, d0 + NOXS_DEVICE.ipv4Addr + 4)], [10, 0, 0, 2]);
      assert.deepEqual([...page.subarray(d0 + NOXS_DEVICE.ipv4Netmask, d0 + NOXS_DEVICE.ipv4Netmask + 4)], [255, 255, 255, 0]);
      assert.deepEqual([...page.subarray(d0 + NOXS_DEVICE.ipv4Gateway, d0 + NOXS_DEVICE.ipv4Gateway + 4)], [10, 0, 0, 1]);

      const d1 = noxsDeviceOffset(1);
      assert.equal(v.getUint16(d1 + NOXS_DEVICE.type, true), 3);
      assert.equal(v.getUint32(d1 + NOXS_DEVICE.id, true), 7);
      assert.deepEqual([...page.subarray(d1 + NOXS_DEVICE.mac, d1 + NOXS_DEVICE.mac + 6)], [0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff]);
      assert.equal(v.getUint16(d1 + NOXS_DEVICE.mtu, true), 0, 'no mtu given: 0');
      // Nothing past the last device.
      assert.ok(page.subarray(noxsDeviceOffset(2)).every((b) => b === 0));
    } finally {
      m.close();
    }
  });

  void it('a guest write into the page stops the VM and leaves the page unchanged, byte for byte', () => {
    const fds = openFds();
    const m = new Machine(kvm, 4 << 20);
    try {
      m.load(loadImage('devpage-write'), CONFIG);
      let console = '';
      m.onConsole = (data) => {
        console += Buffer.from(data).toString();
      };
      const before = m.devicePage.snapshot();
      runToEnd(m);
      const exit = m.exit;
      assert.ok(exit?.kind === 'crash', `ended with ${JSON.stringify(exit)}`);
      assert.equal(exit.code, 'device-page-write');
      assert.match(exit.reason, /wrote 1 bytes to its read-only device page at offset 0x10\b/);
      assert.equal(console, 'writing\n');
      const afterRun = m.devicePage.snapshot();
      assert.deepEqual(afterRun, before);
      // Offset 0x10 is vm_id: still 77, not the guest's 0x5a.
      assert.equal(new DataView(afterRun.buffer).getBigUint64(NOXS_HEADER.vmId, true), 77n);
    } finally {
      m.close();
    }
    assert.deepEqual(openFds(), fds, 'the machine\'s descriptors are closed');
  });

  void it('runs hello to its end with the console and boot marker reported', () => {
    const m = new Machine(kvm, 2 << 20);
    try {
      m.load(loadImage('hello'), { ...CONFIG, devices: [] });
      const chunks: string[] = [];
      m.onConsole = (data) => chunks.push(Buffer.from(data).toString());
      runToEnd(m);
      assert.deepEqual(m.exit, { kind: 'halt', status: 0 });
      assert.deepEqual(chunks, ['Hello from LightVM!\n']);
      assert.ok(m.firstHypercallNs > 0);
      assert.equal(m.exitCount, 2);
    } finally {
      m.close();
    }
  });

  void it('writes the boot info the guest finds through rdi: its memory, image end, command line and device page', () => {
    const m = new Machine(kvm, 6 << 20);
    try {
      const image = loadImage('hello');
      m.load(image, { ...CONFIG, cmdline: 'a b=c' });
      const v = m.ram.view;
      const b = BOOT_INFO_GPA;
      assert.equal(v.getUint32(b + BOOT_INFO.magic, true), BOOT_MAGIC);
      assert.equal(v.getUint32(b + BOOT_INFO.abiVersion, true), ABI_VERSION);
      assert.equal(v.getBigUint64(b + BOOT_INFO.memSize, true), 6n << 20n);
      assert.equal(v.getBigUint64(b + BOOT_INFO.kernelEnd, true), BigInt(image.end));
      assert.equal(v.getBigUint64(b + BOOT_INFO.devicePage, true), BigInt(DEVICE_PAGE_GPA));
      assert.equal(v.getBigUint64(b + BOOT_INFO.platform, true), BigInt(PLATFORM_LIGHTVM));
      const cmdline = Number(v.getBigUint64(b + BOOT_INFO.cmdline, true));
      assert.equal(v.getBigUint64(b + BOOT_INFO.cmdlineLen, true), 5n);
      assert.equal(Buffer.from(m.ram.bytes.subarray(cmdline, cmdline + 6)).toString('latin1'), 'a b=c\0');
      // The image's bytes are where its program headers put them.
      for (const s of image.segments) assert.deepEqual(m.ram.bytes.subarray(s.gpa, s.gpa + s.data.length), s.data);
      const regs = m.vcpu.getRegs();
      assert.equal(regs.rip, BigInt(image.entry));
      assert.equal(regs.rdi, BigInt(BOOT_INFO_GPA));
      assert.equal(regs.rsp, 6n << 20n);
    } finally {
      m.close();
    }
  });
});

void describe('device page configuration through a Host', () => {
  let host: Host;
  before(async () => {
    host = await Host.start({ executors: 1 });
  });
  after(async () => {
    await host.close();
  });

  async function refused(devices: DeviceEntry[], name?: string): Promise<VmCreateError> {
    const err = await host.create({ image: 'noop', devices, name }).then(
      async (vm) => {
        await vm.destroy();
        return undefined;
      },
      (e: unknown) => e,
    );
    assert.ok(err instanceof VmCreateError, `expected a VmCreateError, got ${String(err)}`);
    assert.equal(err.kind, 'DeviceConfigError');
    return err;
  }

  void it('a bad MAC names devices[i].mac', async () => {
    for (const mac of ['02:00:00:00:00', '02:00:00:00:00:0g', '0200.0000.0001', '02:00:00:00:00:001', '']) {
      const e = await refused([{ type: 'net', id: 0, mac: '02:00:00:00:00:01' }, { type: 'net', id: 1, mac }]);
      assert.equal(e.field, 'devices.1.mac', `mac "${mac}"`);
      assert.match(e.message, /is not a MAC address/);
    }
    assert.equal((await refused([{ type: 'net', id: 0, mac: 'zz:00:00:00:00:01' }])).field, 'devices.0.mac');
  });

  void it('a duplicate id names the second device', async () => {
    const e = await refused([{ type: 'net', id: 4 }, { type: 'block', id: 9 }, { type: 'net', id: 4 }]);
    assert.equal(e.field, 'devices.2.id');
    assert.match(e.message, /id 4 is used twice/);
  });

  void it('ids outside 0..62 (bit 63 of a POLL ready set is POLL_CONTROL) are refused', async () => {
    for (const id of [-1, 1.5, 63, 64, 1000]) {
      const e = await refused([{ type: 'net', id }]);
      assert.equal(e.field, 'devices.0.id', `id ${id}`);
    }
  });

  void it('63 devices are one too many; 62 fit', async () => {
    const many = (n: number): DeviceEntry[] => Array.from({ length: n }, (_, i) => ({ type: 'net' as const, id: i }));
    const e = await refused(many(63));
    assert.equal(e.field, 'devices');
    assert.match(e.message, /63 devices is more than the 62/);
    const vm = await host.create({ image: 'noop', devices: many(62) });
    assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
  });

  void it('a name of 64 bytes is too long; 63 fit', async () => {
    const e = await refused([], 'x'.repeat(64));
    assert.equal(e.field, 'name');
    assert.match(e.message, /longer than 63 bytes/);
    // Bytes, not characters: 32 two-byte characters are 64 bytes.
    assert.equal((await refused([], 'é'.repeat(32))).field, 'name');
    const vm = await host.create({ image: 'noop', name: 'y'.repeat(63) });
    assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
  });

  void it('bad types, MTUs and IPv4 addresses name their field', async () => {
    const bad = async (d: Record<string, unknown>, field: string): Promise<void> => {
      const e = await refused([{ type: 'net', id: 0, ...d } as DeviceEntry]);
      assert.equal(e.field, field, JSON.stringify(d));
    };
    await bad({ type: 'tty' }, 'devices.0.type');
    await bad({ mtu: 67 }, 'devices.0.mtu');
    await bad({ mtu: 65536 }, 'devices.0.mtu');
    await bad({ ipv4: { addr: '10.0.0.256', netmask: '255.0.0.0' } }, 'devices.0.ipv4.addr');
    await bad({ ipv4: { addr: '10.0.0.1', netmask: '255.0.0' } }, 'devices.0.ipv4.netmask');
    await bad({ ipv4: { addr: '10.0.0.1', netmask: '255.0.0.0', gateway: 'x' } }, 'devices.0.ipv4.gateway');
  });

  void it('nothing is left registered after refused configs', () => {
    assert.equal(liveVms(host), 0);
  });
});
