// Guests that misbehave are stopped with a stated reason, and never harm the
// executor they share or the other VMs on it. Everything here runs on ONE
// executor thread, next to a well-behaved `counter` that must keep counting.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Host, type CrashCode, type VirtualMachine } from '../src/index.js';
import { NOXS_MAGIC } from '../src/vmm/abi.js';
import { asm, CRAFTED_DATA, craftElf, liveVms, tempDir, u64s, waitFor, within } from './helpers.js';

/** The highest N of the "count N" lines a counter printed so far (-1 if none). */
function lastCount(vm: VirtualMachine): number {
  const all = [...vm.consoleText().matchAll(/^count (\d+)$/gm)];
  return all.length ? Number(all[all.length - 1]![1]) : -1;
}

interface Misbehaviour {
  image: string;
  code: CrashCode;
  reason: RegExp;
}

const CASES: Misbehaviour[] = [
  { image: 'wild-pointer', code: 'bad-hypercall', reason: /CONSOLE_WRITE argument at 0x7fff0000 .*outside guest memory/ },
  { image: 'wild-buffer', code: 'bad-hypercall', reason: /CONSOLE_WRITE buffer 0x7fff0000\+16 lies outside guest memory/ },
  { image: 'oversize', code: 'bad-hypercall', reason: /length 65537 exceeds the limit of 65536/ },
  { image: 'huge-length', code: 'bad-hypercall', reason: /length (18446744073709486080|0xffffffffffff0000) exceeds/ },
  { image: 'unknown-hypercall', code: 'bad-hypercall', reason: /unknown hypercall 20 \(port 0x514\)/ },
  { image: 'stray-port', code: 'stray-io', reason: /write to I\/O port 0x80,/ },
  { image: 'devpage-write', code: 'device-page-write', reason: /device page at offset 0x10\b/ },
  { image: 'triple-fault', code: 'triple-fault', reason: /triple fault/ },
];

interface Crafted {
  what: string;
  code: number[];
  data?: number[];
  memoryMiB?: number;
  exit: { kind: 'halt'; status: number } | { kind: 'crash'; code: CrashCode; reason: RegExp };
  console?: string;
}

const HALT_ARG = CRAFTED_DATA; // struct lvm_hc_halt
const WRITE_ARG = CRAFTED_DATA + 0x10; // struct lvm_hc_console_write
const MIB = 1 << 20;

/** Hand-assembled guests for the paths the C test guests do not take. */
const CRAFTED: Crafted[] = [
  {
    what: 'a crafted image halts with the status it passes (the harness works)',
    code: [...asm.hypercall(4, HALT_ARG), ...asm.jmpSelf], data: u64s(0x1234),
    exit: { kind: 'halt', status: 0x1234 },
  },
  { what: 'HLT with interrupts off', code: asm.hlt, exit: { kind: 'crash', code: 'hlt', reason: /HLT with interrupts off/ } },
  {
    what: 'IN from a hypercall port', code: [...asm.movDx(0x501), ...asm.inEaxDx],
    exit: { kind: 'crash', code: 'stray-io', reason: /read from I\/O port 0x501, which is not a hypercall port/ },
  },
  {
    what: 'a byte-sized OUT to a hypercall port', code: [...asm.movAl(0), ...asm.movDx(0x502), ...asm.outDxAl],
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /hypercall 2 must be one 32-bit OUT/ },
  },
  {
    what: 'a 16-bit OUT to a hypercall port', code: [...asm.movEax(HALT_ARG), ...asm.movDx(0x504), ...asm.outDxAx], data: u64s(0),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /hypercall 4 must be one 32-bit OUT/ },
  },
  {
    what: 'hypercall 7, one past the last', code: asm.hypercall(7, HALT_ARG), data: u64s(0),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /unknown hypercall 7 \(port 0x507\)/ },
  },
  {
    what: 'port 0x540, just past the hypercall ports', code: asm.hypercall(64, HALT_ARG),
    exit: { kind: 'crash', code: 'stray-io', reason: /write to I\/O port 0x540,/ },
  },
  {
    what: 'port 0x4ff, just below the hypercall ports', code: [...asm.movEax(HALT_ARG), ...asm.movDx(0x4ff), ...asm.outDxEax],
    exit: { kind: 'crash', code: 'stray-io', reason: /write to I\/O port 0x4ff,/ },
  },
  {
    what: 'an argument struct straddling the top of RAM', memoryMiB: 2, code: asm.hypercall(3, 2 * MIB - 8),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /POLL argument at 0x1ffff8 \(16 bytes\) lies outside guest memory \(2 MiB\)/ },
  },
  {
    what: 'an argument struct in page 0', code: asm.hypercall(1, 0xff8),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /WALLTIME argument at 0xff8 .*outside guest memory/ },
  },
  {
    what: 'a console buffer ending exactly at the top of RAM is fine', memoryMiB: 2,
    code: [...asm.hypercall(2, WRITE_ARG), ...asm.hypercall(4, HALT_ARG)], data: u64s(0, 0, 2 * MIB - 4, 4),
    exit: { kind: 'halt', status: 0 }, console: '\0\0\0\0',
  },
  {
    what: 'a console buffer one byte past the top of RAM', memoryMiB: 2,
    code: [...asm.hypercall(2, WRITE_ARG), ...asm.hypercall(4, HALT_ARG)], data: u64s(0, 0, 2 * MIB - 4, 5),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /buffer 0x1ffffc\+5 lies outside guest memory/ },
  },
  {
    what: 'a console write of exactly 64 KiB is fine',
    code: [...asm.hypercall(2, WRITE_ARG), ...asm.hypercall(4, HALT_ARG)], data: u64s(0, 0, 0x110000, 65536),
    exit: { kind: 'halt', status: 0 }, console: '\0'.repeat(65536),
  },
  {
    what: 'a read past RAM inside its last 2 MiB page (3 MiB of RAM)', memoryMiB: 3, code: asm.load(3 * MIB),
    exit: { kind: 'crash', code: 'mmio', reason: /read 4 bytes at 0x300000, where no memory exists/ },
  },
  {
    what: 'a write past RAM inside its last 2 MiB page (3 MiB of RAM)', memoryMiB: 3, code: asm.store(3 * MIB),
    exit: { kind: 'crash', code: 'mmio', reason: /wrote 4 bytes at 0x300000, where no memory exists/ },
  },
  {
    what: 'a read past the mapped range', memoryMiB: 2, code: asm.load(4 * MIB),
    exit: { kind: 'crash', code: 'triple-fault', reason: /triple fault/ },
  },
  {
    // The set of modules is the attack surface: without a net device the net module is not set up, so NET_* do not exist.
    what: 'NET_WRITE in a VM without a network device is an unknown hypercall',
    code: asm.hypercall(5, HALT_ARG), data: u64s(0, 0, 0, 0),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /unknown hypercall 5 \(port 0x505\): NET_WRITE is not a call of this VM/ },
  },
  {
    what: 'NET_READ in a VM without a network device is an unknown hypercall',
    code: asm.hypercall(6, HALT_ARG), data: u64s(0, 0, 0, 0, 0),
    exit: { kind: 'crash', code: 'bad-hypercall', reason: /unknown hypercall 6 \(port 0x506\): NET_READ is not a call of this VM/ },
  },
  {
    what: 'a write into the device page at offset 0x800', code: asm.store(0xc0000800),
    exit: { kind: 'crash', code: 'device-page-write', reason: /wrote 4 bytes to its read-only device page at offset 0x800\b/ },
  },
  {
    what: 'reading the device page is fine: its magic, passed back as the exit status',
    code: [...asm.load(0xc0000000), ...asm.store(HALT_ARG), ...asm.hypercall(4, HALT_ARG)], data: u64s(0),
    exit: { kind: 'halt', status: NOXS_MAGIC },
  },
];

void describe('misbehaving guests on one shared executor', () => {
  let host: Host;
  let counter: VirtualMachine;
  let countAtStart = 0;

  before(async () => {
    host = await Host.start({ executors: 1 });
    counter = await host.create({ image: 'counter', name: 'counter' });
    await waitFor('counter to print twice', () => lastCount(counter) >= 1);
    countAtStart = lastCount(counter);
  });
  const { dir, cleanup } = tempDir('crafted');
  after(async () => {
    await host.close();
    cleanup();
  });

  for (const { image, code, reason } of CASES) {
    void it(`${image} is stopped: ${code}`, async () => {
      const vm = await host.create({ image });
      assert.equal(vm.executor, counter.executor, 'shares the counter\'s executor');
      const exit = await within(vm.exited, 5000, image);
      assert.equal(exit.kind, 'crash', `${image} ended with ${JSON.stringify(exit)}`);
      assert.equal(exit.code, code);
      assert.match(exit.reason, reason);
      assert.doesNotMatch(vm.consoleText(), /survived/);
      assert.equal(vm.state, 'exited');
      if (image === 'devpage-write') assert.equal(vm.consoleText(), 'writing\n');
    });
  }

  CRAFTED.forEach((c, i) => {
    void it(`crafted: ${c.what}`, async () => {
      const file = join(dir, `crafted-${i}.elf`);
      writeFileSync(file, craftElf(c.code, c.data));
      const vm = await host.create({ image: file, memoryMiB: c.memoryMiB });
      const exit = await within(vm.exited, 5000, c.what);
      if (c.exit.kind === 'crash') {
        assert.equal(exit.kind, 'crash', `ended with ${JSON.stringify(exit)}`);
        assert.equal(exit.code, c.exit.code, exit.reason);
        assert.match(exit.reason, c.exit.reason);
      } else {
        assert.deepEqual(exit, c.exit);
      }
      assert.equal(vm.consoleText(), c.console ?? '');
    });
  });

  void it('spin does not hold the executor: a VM created after it completes, then spin is destroyed promptly', async () => {
    const spin = await host.create({ image: 'spin' });
    await waitFor('spin to start spinning', () => spin.consoleText() === 'spinning\n');
    const countBefore = lastCount(counter);

    const hello = await host.create({ image: 'hello' });
    assert.deepEqual(await within(hello.exited, 5000, 'hello next to spin'), { kind: 'halt', status: 0 });
    assert.equal(hello.consoleText(), 'Hello from LightVM!\n');
    // The counter, parked between lines, got turns while hello ran.
    await waitFor('counter to count on while spin and hello share its executor', () => lastCount(counter) > countBefore, 3000);

    const t0 = performance.now();
    assert.deepEqual(await within(spin.destroy(), 1000, 'destroy of spin'), { kind: 'destroyed' });
    const ms = performance.now() - t0;
    assert.ok(ms < 1000, `destroy took ${ms} ms`);
    assert.equal(spin.state, 'exited');
  });

  // The slice timer is armed while one VM spins alone, so a POLL deadline
  // that passes meanwhile is served (it once was not: the counter printed
  // nothing until something else kicked the thread). Ten lines take 100 ms
  // on an idle host; a loaded one gives the executor's thread a few ms now
  // and then, each serving the deadline that passed, so the bound is loose.
  // An unserved deadline prints none, however long the wait.
  void it('a parked VM is woken on time while another VM spins alone', async () => {
    const spin = await host.create({ image: 'spin' });
    try {
      await waitFor('spin to start spinning', () => spin.consoleText() === 'spinning\n');
      const countBefore = lastCount(counter);
      await waitFor('counter to print 10 lines while spin runs alone', () => lastCount(counter) >= countBefore + 10, 10_000);
      assert.equal(spin.state, 'running');
    } finally {
      await spin.destroy();
    }
  });

  void it('counter kept running through all of it', async () => {
    assert.equal(counter.state, 'running');
    const now = lastCount(counter);
    assert.ok(now > countAtStart, `counter went from ${countAtStart} to ${now}`);
    await waitFor('counter to count on', () => lastCount(counter) > now, 2000);
    // Its output is whole: every line from 0, in order, none lost or repeated.
    const lines = counter.consoleText().trimEnd().split('\n');
    lines.forEach((l, i) => assert.equal(l, `count ${i}`));
    assert.deepEqual(await within(counter.destroy(), 1000, 'destroy of counter'), { kind: 'destroyed' });
    assert.equal(liveVms(host), 0);
  });
});
