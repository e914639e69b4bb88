// Booting the guest images on real KVM through the library API, and the
// same images under QEMU (PVH entry) when QEMU is installed.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { qemuBoot, which } from '../src/bench/peers.js';
import { Host, type CreateOptions, type VirtualMachine, type VmExit } from '../src/index.js';
import { guestImage, liveVms, sleep, tempDir, waitFor } from './helpers.js';

const DAYS = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
const MONTHS = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October',
  'November', 'December'];

void describe('booting images on KVM', () => {
  let host: Host;
  before(async () => {
    host = await Host.start({ executors: 2 });
  });
  after(async () => {
    await host.close();
  });

  /** Creates a VM, waits for its end; returns the VM, its exit and the wall time in ms. */
  async function boot(options: CreateOptions): Promise<{ vm: VirtualMachine; exit: VmExit; ms: number }> {
    const t0 = performance.now();
    const vm = await host.create(options);
    const exit = await vm.exited;
    return { vm, exit, ms: performance.now() - t0 };
  }

  void it('noop exits 0 with no output, after exactly one exit (HALT)', async () => {
    const { vm, exit } = await boot({ image: 'noop' });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    assert.equal(vm.consoleText(), '');
    assert.equal(vm.exitCount, 1);
    assert.equal(vm.state, 'exited');
  });

  void it('hello prints its greeting with one console write, then halts', async () => {
    const { vm, exit } = await boot({ image: 'hello' });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    assert.equal(vm.consoleText(), 'Hello from LightVM!\n');
    assert.equal(vm.exitCount, 2, 'CONSOLE_WRITE + HALT');
  });

  void it('reports timings in the order of a VM\'s life, and booted before exit', async () => {
    const vm = await host.create({ image: 'hello' });
    const bootNs = await vm.booted;
    await vm.exited;
    await vm.freed;
    const t = vm.timings!;
    assert.equal(bootNs, t.bootNs);
    const order = [t.requestNs, t.shellNs, t.loadedNs, t.bootNs, t.endNs, t.destroyedNs];
    for (let i = 1; i < order.length; i++) assert.ok(order[i - 1]! <= order[i]!, `timings out of order: ${order.join(' ')}`);
    assert.ok(t.requestNs > 0);
  });

  void it('daytime prints the current UTC date and time', async () => {
    const before = Date.now();
    const { vm, exit } = await boot({ image: 'daytime' });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    const text = vm.consoleText();
    assert.match(text, /^[A-Z][a-z]+day, [A-Z][a-z]+ \d{1,2}, \d{4} \d{2}:\d{2}:\d{2}-UTC\n$/);
    const m = /^(\w+), (\w+) (\d+), (\d+) (\d+):(\d+):(\d+)-UTC\n$/.exec(text)!;
    const month = MONTHS.indexOf(m[2]!);
    assert.ok(month >= 0, `unknown month ${m[2]}`);
    const when = Date.UTC(Number(m[4]), month, Number(m[3]), Number(m[5]), Number(m[6]), Number(m[7]));
    assert.ok(Math.abs(when - before) < 60_000, `guest says ${text.trim()}, host says ${new Date(before).toISOString()}`);
    assert.equal(m[1], DAYS[new Date(when).getUTCDay()], 'weekday matches the date');
  });

  void it('echo-cmdline sees the command line byte for byte, up to 512 bytes', async () => {
    for (const cmdline of ['hello world  x=1 "quoted"', '', 'é∑ unicode ✓', 'c'.repeat(512)]) {
      const { vm, exit } = await boot({ image: 'echo-cmdline', cmdline });
      assert.deepEqual(exit, { kind: 'halt', status: 0 });
      assert.equal(vm.consoleText(), `cmdline=[${cmdline}]\n`);
    }
  });

  void it('boots with the smallest and the largest memory, and sizes between', async () => {
    for (const memoryMiB of [2, 3, 1023, 1024, 1025, 3072]) {
      const { vm, exit } = await boot({ image: 'hello', memoryMiB });
      assert.deepEqual(exit, { kind: 'halt', status: 0 }, `${memoryMiB} MiB`);
      assert.equal(vm.consoleText(), 'Hello from LightVM!\n');
      assert.equal(vm.memoryMiB, memoryMiB);
    }
  });

  void it('exit-status exits with the number on its command line', async () => {
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '42' })).exit, { kind: 'halt', status: 42 });
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '-7' })).exit, { kind: 'halt', status: -7 });
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '300' })).exit, { kind: 'halt', status: 300 });
    assert.deepEqual((await boot({ image: 'exit-status' })).exit, { kind: 'halt', status: 3 }, 'its default');
    // All 64 bits, exactly: beyond 2^53 a double would round (0x7fffffffffffffff to 2^63).
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '9223372036854775807' })).exit, { kind: 'halt', status: '9223372036854775807' });
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '9007199254740993' })).exit, { kind: 'halt', status: '9007199254740993' });
    assert.deepEqual((await boot({ image: 'exit-status', cmdline: '9007199254740991' })).exit, { kind: 'halt', status: 9007199254740991 });
  });

  void it('noxs-dump reads its devices from the device page', async () => {
    // A block device is a virtio-blk disk now: it needs a file behind it.
    const { dir, cleanup } = tempDir('noxs-disk');
    const disk = join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(4096));
    const { vm, exit } = await boot({
      image: 'noxs-dump',
      name: 'dumper',
      devices: [
        { type: 'net', id: 0, mac: '02:00:00:00:00:01', mtu: 1500 },
        { type: 'block', id: 5, mac: 'de:ad:BE:ef:00:ff', mtu: 9000, path: disk },
      ],
    }).finally(cleanup);
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    const lines = vm.consoleText().split('\n');
    assert.equal(lines[0], `vm ${vm.id} dumper`);
    assert.equal(lines[1], 'dev 0 type 2 mac 02:00:00:00:00:01 mtu 1500');
    assert.equal(lines[2], 'dev 5 type 3 mac de:ad:be:ef:00:ff mtu 9000');
    const g = /^generation (\d+)$/.exec(lines[3]!);
    assert.ok(g, `no generation line in ${JSON.stringify(vm.consoleText())}`);
    assert.equal(Number(g[1]) % 2, 0, 'the generation is even once the page is whole');
    assert.ok(Number(g[1]) > 0);
    assert.equal(lines.length, 5);
    assert.equal(lines[4], '');
  });

  void it('noxs-dump: a full page (62 devices, a 63-byte name) reaches the guest whole', async () => {
    const name = 'n'.repeat(63);
    const devices = Array.from({ length: 62 }, (_, i) => ({
      type: 'net' as const, id: i, mac: `02:00:00:00:00:${i.toString(16).padStart(2, '0')}`, mtu: 1000 + i,
    }));
    const { vm, exit } = await boot({ image: 'noxs-dump', name, devices });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    const lines = vm.consoleText().trimEnd().split('\n');
    assert.equal(lines[0], `vm ${vm.id} ${name}`);
    assert.equal(lines.length, 64);
    devices.forEach((d, i) => assert.equal(lines[i + 1], `dev ${d.id} type 2 mac ${d.mac} mtu ${d.mtu}`));
  });

  void it('sleeper "30" sleeps at least 30 ms, measured by the guest and by the host', async () => {
    const { vm, exit, ms } = await boot({ image: 'sleeper', cmdline: '30' });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    const m = /^slept (\d+) ms\n$/.exec(vm.consoleText());
    assert.ok(m, `unexpected output ${JSON.stringify(vm.consoleText())}`);
    assert.ok(Number(m[1]) >= 30, `guest slept ${m[1]} ms`);
    assert.ok(Number(m[1]) < 2000, `guest slept ${m[1]} ms`);
    const t = vm.timings!;
    assert.ok((t.endNs - t.bootNs) / 1e6 >= 30, `VM ran ${(t.endNs - t.bootNs) / 1e6} ms from boot to end`);
    assert.ok(ms >= 30);
  });

  void it('counts boot instructions of noop and hello (single-stepped, < 200)', async () => {
    for (const image of ['noop', 'hello']) {
      const { vm, exit } = await boot({ image, countInstructions: true });
      assert.deepEqual(exit, { kind: 'halt', status: 0 });
      assert.ok(vm.instructions !== undefined, `${image}: no instruction count`);
      assert.ok(vm.instructions > 0 && vm.instructions < 200, `${image}: ${vm.instructions} instructions`);
      assert.equal(vm.consoleText(), image === 'hello' ? 'Hello from LightVM!\n' : '');
    }
    // Without counting there is no count.
    const { vm } = await boot({ image: 'noop' });
    assert.equal(vm.instructions, undefined);
  });

  // Concurrent creates spread over the executors: a pick counts the VM in
  // its executor's load at once (ThreadPlacement.pick), so creates made
  // before any has started do not all land on the least loaded one.
  void it('runs 24 VMs at once on two executors, each with its own console', async () => {
    const vms = await Promise.all(Array.from({ length: 24 }, (_, i) => host.create({ image: 'echo-cmdline', cmdline: `vm-${i}` })));
    const exits = await Promise.all(vms.map((vm) => vm.exited));
    exits.forEach((e) => assert.deepEqual(e, { kind: 'halt', status: 0 }));
    vms.forEach((vm, i) => assert.equal(vm.consoleText(), `cmdline=[vm-${i}]\n`));
    assert.equal(new Set(vms.map((vm) => vm.executor)).size, 2, 'both executors were used');
    assert.equal(liveVms(host), 0);
  });

  void it('pause stops a VM\'s output and unpause resumes it', async () => {
    const vm = await host.create({ image: 'counter' });
    await waitFor('counter to print', () => vm.consoleText().includes('count 2\n'));
    await vm.pause();
    assert.equal(vm.state, 'paused');
    const frozen = vm.consoleText();
    await sleep(100);
    assert.equal(vm.consoleText(), frozen, 'no output while paused');
    await vm.unpause();
    assert.equal(vm.state, 'running');
    await waitFor('output after unpause', () => vm.consoleText().length > frozen.length, 2000);
    assert.ok(vm.consoleText().startsWith(frozen));
    await assert.rejects(vm.unpause(), /not paused/);
    assert.deepEqual(await vm.destroy(), { kind: 'destroyed' });
    await assert.rejects(vm.pause(), /exited, not running/);
  });

  void it('counter with a limit prints exactly that many lines and exits 0', async () => {
    const { vm, exit, ms } = await boot({ image: 'counter', cmdline: '5' });
    assert.deepEqual(exit, { kind: 'halt', status: 0 });
    assert.equal(vm.consoleText(), [0, 1, 2, 3, 4].map((n) => `count ${n}\n`).join(''));
    assert.ok(ms >= 50, `5 polls of 10 ms took ${ms} ms`);
  });

  void it('uses a prepared shell when a pool is set, and that VM runs the same', async () => {
    const pooled = await Host.start({ executors: 1 });
    try {
      pooled.setPool(4, 2);
      let vm: VirtualMachine | undefined;
      for (let i = 0; i < 200 && !vm?.warm; i++) {
        if (vm) await vm.exited;
        await sleep(5);
        vm = await pooled.create({ image: 'hello' });
      }
      assert.ok(vm?.warm, 'no VM came from the pool');
      assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
      assert.equal(vm.consoleText(), 'Hello from LightVM!\n');
      const cold = await pooled.create({ image: 'hello', warm: false });
      assert.equal(cold.warm, false, 'warm: false never takes a shell');
      await cold.exited;
    } finally {
      await pooled.close();
    }
  });
});

void describe('the same images under QEMU (PVH entry)', () => {
  const qemu = which('qemu-system-x86_64');

  void it('noop exits 0 with no output', async (t) => {
    if (!qemu) return t.skip('qemu-system-x86_64 is not on PATH');
    const r = await qemuBoot(qemu, guestImage('noop'));
    assert.equal(r.status, 0);
    assert.equal(r.output, '');
  });

  void it('hello prints the greeting', async (t) => {
    if (!qemu) return t.skip('qemu-system-x86_64 is not on PATH');
    const r = await qemuBoot(qemu, guestImage('hello'));
    assert.equal(r.status, 0);
    assert.ok(r.output.split(/\r?\n/).includes('Hello from LightVM!'), `output: ${JSON.stringify(r.output)}`);
  });

  void it('exit-status with cmdline "5" exits 5', async (t) => {
    if (!qemu) return t.skip('qemu-system-x86_64 is not on PATH');
    const r = await qemuBoot(qemu, guestImage('exit-status'), '5');
    assert.equal(r.status, 5);
  });
});
