// What survives a daemon restart (README, "What survives which failure").
// SIGTERM or `lightvm daemon stop`: every VM is saved to
// <runtime-dir>/saved and the next daemon on that directory restores it
// with its id, name, console history and paused or parked state, counters
// counting on without a line lost or repeated. `daemon stop --destroy`:
// nothing is left. SIGKILL: the executors, processes of their own, keep
// running their VMs; the next daemon re-adopts them (ids, names, states,
// console history) and never reuses an id.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeSnapshot, type Snapshot } from '../src/vmm/snapshot.js';
import {
  executorProcesses, isAlive, lightvm, ok, processesOf, settle, startTestDaemon, until, type TestDaemon, type VmView,
} from './daemon-helpers.js';
import { sleep, within } from './helpers.js';
import {
  assertCounting, assertStill, consoleOf, cpuNs, lastCount, listed, untilCount, untilExited, vmOf,
} from './vm-helpers.js';

const text = (b: Uint8Array): string => Buffer.from(b).toString('utf8');

async function create(d: TestDaemon, body: Record<string, unknown>): Promise<VmView> {
  return (await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', body, 201)).vm;
}

async function cpuGrows(d: TestDaemon, id: number, ms: number): Promise<number> {
  const a = (await cpuNs(d.socket)).get(id);
  await sleep(ms);
  const b = (await cpuNs(d.socket)).get(id);
  assert.ok(a !== undefined && b !== undefined, `VM ${id} is not in GET /v1/stats`);
  return b - a;
}

void describe('daemon stop (SIGTERM), and the next daemon on the same runtime directory', () => {
  let d1: TestDaemon;
  let d2: TestDaemon | undefined;
  let d3: TestDaemon | undefined;
  const ids = new Map<string, number>();
  const saved = new Map<string, Snapshot>();
  let savedDir = '';

  before(async () => {
    d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'rs' });
    savedDir = join(d1.runtimeDir, 'saved');
    for (const [name, image, cmdline] of [['c', 'counter', ''], ['cp', 'counter', ''], ['sp', 'spin', ''], ['sl', 'sleeper', '2000']]) {
      ids.set(name!, (await create(d1, { image, name, cmdline })).id);
    }
    await untilCount(d1.socket, 'cp', 5);
    await ok(d1.socket, 'POST', '/v1/vms/cp/pause');
    await ok(d1.socket, 'POST', '/v1/vms/sp/pause');
    await untilCount(d1.socket, 'c', 10);
  });
  after(async () => {
    // The last daemon first: the earlier ones' stop() removes the directory they share.
    await d3?.stop();
    await d2?.stop();
    await d1.stop();
  });

  void it('SIGTERM: each VM is saved to <runtime-dir>/saved/<id>.snap, then the daemon and its executors exit', async () => {
    const executors = executorProcesses(d1.runtimeDir);
    assert.ok(executors.length >= 1);
    const exited = new Promise<number | null>((r) => d1.child.once('exit', (code) => r(code)));
    d1.child.kill('SIGTERM');
    assert.equal(await within(exited, 15_000, 'the daemon to stop on SIGTERM'), 0, 'exit code');
    assert.equal(statSync(savedDir).mode & 0o777, 0o700, 'saved directory mode');
    const files = readdirSync(savedDir).sort();
    assert.deepEqual(files, [...ids.values()].map((id) => `${id}.snap`).sort());
    for (const [name, id] of ids) {
      const file = join(savedDir, `${id}.snap`);
      assert.equal(statSync(file).mode & 0o777, 0o600, `${file} mode`);
      const s = decodeSnapshot(file, readFileSync(file));
      assert.equal(s.header.vm.name, name);
      assert.equal(s.header.vm.id, id);
      saved.set(name, s);
    }
    assert.equal(saved.get('cp')!.header.paused, true, 'cp saved paused');
    assert.equal(saved.get('sp')!.header.paused, true, 'sp saved paused');
    assert.equal(saved.get('c')!.header.paused, false);
    const parked = saved.get('sl')!.header.parked;
    assert.ok(parked && parked.remainingNs > 0 && parked.remainingNs < 2000e6, `sleeper saved as ${JSON.stringify(parked)}`);
    assertCounting(text(saved.get('c')!.console), 'c as saved');
    await until('the executors to exit', () => Promise.resolve(executors.every((p) => !isAlive(p.pid))), 5000);
    assert.deepEqual(processesOf(d1.runtimeDir), []);
    assert.ok(!existsSync(d1.socket), 'socket left behind');
    assert.doesNotMatch(d1.log(), /"level":(50|60)/, 'the daemon logged an error while saving');
  });

  void it('the next daemon restores every VM with its id, name and state; the saved files are gone', async () => {
    d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
    const want = [['c', 'running'], ['cp', 'paused'], ['sp', 'paused'], ['sl', 'running']].map(([n, s]) => `${ids.get(n!)} ${n} ${s}`).sort();
    assert.deepEqual(await listed(d2.socket), want);
    assert.deepEqual(readdirSync(savedDir), [], 'saved files left after their restore');
  });

  void it('a counter counts on from the line after the save; a paused one stays still, with its history, until unpaused', async () => {
    const d = d2!;
    const c = text(saved.get('c')!.console);
    const now = await untilCount(d.socket, 'c', lastCount(c) + 20);
    assert.ok(now.startsWith(c), 'c\'s console does not start with its saved history');
    assertCounting(now, 'c after the restart');

    const cp = text(saved.get('cp')!.console);
    assert.equal(await assertStill(d.socket, 'cp', 200, 'a VM saved paused'), cp);
    await ok(d.socket, 'POST', '/v1/vms/cp/unpause');
    assertCounting(await untilCount(d.socket, 'cp', lastCount(cp) + 10), 'cp unpaused after the restart');

    // The spinning guest prints nothing: its CPU time says whether it runs.
    const sp = ids.get('sp')!;
    assert.equal(await cpuGrows(d, sp, 150), 0, 'a VM restored paused ran');
    await ok(d.socket, 'POST', '/v1/vms/sp/unpause');
    assert.ok(await cpuGrows(d, sp, 150) > 30e6, 'sp does not run once unpaused');
  });

  void it('the parked sleeper waits only for the rest of its time, then ends', async () => {
    const vm = await untilExited(d2!.socket, 'sl', 5000);
    assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
    const remainingMs = saved.get('sl')!.header.parked!.remainingNs / 1e6;
    const waitedMs = (vm.timings!.endNs - vm.timings!.loadedNs) / 1e6;
    assert.ok(waitedMs >= remainingMs - 5 && waitedMs < remainingMs + 150, `waited ${waitedMs} ms after its restore; it had ${remainingMs} ms left`);
    const slept = Number(/^slept (\d+) ms\n$/.exec(await consoleOf(d2!.socket, 'sl'))?.[1] ?? NaN);
    assert.ok(slept >= 2000, `slept ${slept} ms of 2000`);
  });

  void it('`lightvm daemon stop --destroy`: the VMs end, nothing is saved, the next daemon has none', async () => {
    const executors = executorProcesses(d1.runtimeDir);
    const r = await lightvm(['daemon', 'stop', '--destroy', '--runtime-dir', d1.runtimeDir]);
    assert.equal(r.code, 0, r.stderr);
    assert.ok(!isAlive(d2!.pid));
    assert.deepEqual(readdirSync(savedDir), [], 'a VM was saved on stop --destroy');
    await until('the executors to exit', () => Promise.resolve(executors.every((p) => !isAlive(p.pid))), 5000);
    d3 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
    assert.deepEqual(await listed(d3.socket), []);
  });
});

void describe('the daemon killed (SIGKILL): executors keep running their VMs, the next daemon re-adopts them', () => {
  let d1: TestDaemon;
  let d2: TestDaemon | undefined;
  const ids = new Map<string, number>();
  const views = new Map<string, VmView>();
  let executors: number[] = [];
  let beforeKill = new Map<string, string>();
  let everUsed: number[] = [];

  before(async () => {
    d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'rk' });
    for (const [name, image, cmdline] of [['k', 'counter', ''], ['kp', 'counter', ''], ['ks', 'sleeper', '60000'], ['kx', 'counter', '']]) {
      ids.set(name!, (await create(d1, { image, name, cmdline })).id);
    }
    await untilCount(d1.socket, 'kp', 5);
    await ok(d1.socket, 'POST', '/v1/vms/kp/pause');
    // An id used and given up: never to be seen again.
    await ok(d1.socket, 'DELETE', '/v1/vms/kx');
    await untilCount(d1.socket, 'k', 10);
    // No executor still starting: the ones there are the ones to outlive the daemon.
    await settle(d1.socket, d1.runtimeDir);
  });
  after(async () => {
    await d2?.stop();
    await d1.stop();
  });

  void it('SIGKILL: the daemon is gone; its executors, and the VMs in them, live on', async () => {
    // A VM that will end while no daemon runs: 60 lines, 0.6 s.
    ids.set('kend', (await create(d1, { image: 'counter', name: 'kend', cmdline: '60' })).id);
    everUsed = [...ids.values()];
    const { vms } = await ok<{ vms: VmView[] }>(d1.socket, 'GET', '/v1/vms');
    for (const v of vms) views.set(v.name, v);
    executors = (await d1.host()).executors.map((e) => e.pid).sort();
    beforeKill = new Map(await Promise.all(['k', 'kp', 'ks'].map(async (n) => [n, await consoleOf(d1.socket, n)] as const)));
    const exited = new Promise((r) => d1.child.once('exit', r));
    d1.child.kill('SIGKILL');
    await exited;
    await sleep(800);
    for (const pid of executors) assert.ok(isAlive(pid), `executor ${pid} died with its daemon`);
    assert.deepEqual(executorProcesses(d1.runtimeDir).map((p) => p.pid).sort(), executors);
  });

  void it('the next daemon re-adopts them: the same executors, ids, names, states and console history, with what they printed meanwhile', async () => {
    d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
    const d = d2;
    assert.deepEqual((await d.host()).executors.map((e) => e.pid).sort(), executors, 'the executors re-adopted');
    for (const [name, state] of [['k', 'running'], ['kp', 'paused'], ['ks', 'running']] as const) {
      const vm = await vmOf(d.socket, name);
      const was = views.get(name)!;
      assert.equal(vm.id, was.id, `${name}: id`);
      assert.equal(vm.state, state, `${name}: state`);
      assert.equal(vm.executor, was.executor, `${name}: executor`);
      assert.equal(vm.image, was.image, `${name}: image`);
      assert.equal(vm.cmdline, was.cmdline, `${name}: cmdline`);
      assert.equal(vm.created_at, was.created_at, `${name}: created_at`);
    }
    // The counter counted while no daemon listened: its history has it all, in order.
    const k0 = lastCount(beforeKill.get('k')!);
    const k = await consoleOf(d.socket, 'k');
    assert.ok(k.startsWith(beforeKill.get('k')!), 'k\'s history lost what it printed before the kill');
    assert.ok(lastCount(k) >= k0 + 40, `k counted from ${k0} to ${lastCount(k)} in the 0.8 s without a daemon`);
    assertCounting(k, 'k re-adopted');
    assertCounting(await untilCount(d.socket, 'k', lastCount(k) + 10), 'k after its re-adoption');
    // Paused stayed paused; it is still under control.
    assert.equal(await assertStill(d.socket, 'kp', 150, 'a paused VM re-adopted'), beforeKill.get('kp'));
    await ok(d.socket, 'POST', '/v1/vms/kp/unpause');
    assertCounting(await untilCount(d.socket, 'kp', lastCount(beforeKill.get('kp')!) + 10), 'kp unpaused after its re-adoption');
    assert.equal(await consoleOf(d.socket, 'ks'), beforeKill.get('ks'));
    assert.ok((await cpuNs(d.socket)).has(ids.get('ks')!), 'the parked sleeper is not on any executor');
    // The destroyed one stays gone.
    assert.ok(!(await listed(d.socket)).some((l) => l.includes(' kx ')));
  });

  // A VM that ended while no daemon ran stays on record, with its exit and
  // console, like one that ends under a running daemon.
  void it('a VM that ended while no daemon ran is on record with its exit and console', async () => {
    const r = await ok<{ vms: VmView[] }>(d2!.socket, 'GET', '/v1/vms');
    const vm = r.vms.find((v) => v.name === 'kend');
    assert.ok(vm, `kend (id ${ids.get('kend')}), which ended while no daemon ran, is not listed: ${r.vms.map((v) => v.name).join(', ')}`);
    assert.equal(vm.id, ids.get('kend'));
    assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
    assert.equal(assertCounting(await consoleOf(d2!.socket, 'kend'), 'kend'), 59);
  });

  void it('a VM created after the re-adoption gets an id never used before', async () => {
    const vm = await create(d2!, { image: 'counter', name: 'fresh' });
    assert.ok(!everUsed.includes(vm.id), `id ${vm.id} was used before: ${everUsed.join(', ')}`);
    assert.ok(vm.id > Math.max(...everUsed), `id ${vm.id} is not past every id used (${everUsed.join(', ')})`);
    assert.equal(vm.state, 'running');
    await untilCount(d2!.socket, 'fresh', 3);
  });
});
