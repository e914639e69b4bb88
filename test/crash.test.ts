// An executor process dies (SIGKILL): only the VMs it held are lost, the
// daemon says which (an executor.lost event, each VM's exit, its log), the
// VMs on other executors run on, and creates still work.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  isAlive, lightvm, ok, openStream, request, settle, startTestDaemon, until,
  type HostInfo, type Stream, type TestDaemon, type VmView,
} from './daemon-helpers.js';
import { sleep } from './helpers.js';

interface LostEvent {
  type: 'executor.lost';
  time: string;
  executor: number;
  reason: string;
  vms: { id: number; name: string }[];
}

interface VmEvent {
  type: 'vm.created' | 'vm.exited';
  time: string;
  vm: VmView;
}

void describe('an executor killed under its VMs', () => {
  let d: TestDaemon;
  let events: Stream;
  let victim: HostInfo['executors'][number];
  let lostNames: string[] = [];
  let keptNames: string[] = [];
  const parsed = (): (LostEvent | VmEvent | { type: string })[] =>
    events.text().split('\n').filter(Boolean).map((l) => JSON.parse(l) as LostEvent | VmEvent);
  const consoleOf = async (name: string): Promise<string> => (await request(d.socket, 'GET', `/v1/vms/${name}/console`)).text;
  const lastCount = (text: string): number => Number(/count (\d+)\n$/.exec(text)?.[1] ?? -1);

  before(async () => {
    // Three VMs per executor: seven counters spread over three executors.
    d = await startTestDaemon({ args: ['--vms-per-executor', '3', '--pool', '4:1'], prefix: 'crash' });
    for (let i = 0; i < 7; i++) await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: `ctr${i}` }, 201);
    await settle(d.socket, d.runtimeDir);
    events = await openStream(d.socket, '/v1/events');
    await until('the hello event', () => Promise.resolve(events.text().includes('\n')), 5000);
  });
  after(async () => {
    events.close();
    await d.stop();
  });

  void it('the VMs are spread over several executors, none over the bound', async () => {
    const h = await d.host();
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    const used = new Set(vms.map((v) => v.executor));
    assert.ok(used.size >= 3, `7 VMs on ${used.size} executors with --vms-per-executor 3`);
    for (const ex of h.executors) assert.ok(ex.vms <= 3, JSON.stringify(h.executors));
    // The victim: the executor of ctr0, with other VMs on other executors.
    const first = vms.find((v) => v.name === 'ctr0')!;
    victim = h.executors.find((e) => e.id === first.executor)!;
    lostNames = vms.filter((v) => v.executor === victim.id).map((v) => v.name).sort();
    keptNames = vms.filter((v) => v.executor !== victim.id).map((v) => v.name).sort();
    assert.ok(lostNames.length >= 2 && keptNames.length >= 2, `${lostNames.join(',')} | ${keptNames.join(',')}`);
  });

  void it('SIGKILL of one executor: an executor.lost event naming exactly its VMs, and a vm.exited for each', async () => {
    process.kill(victim.pid, 'SIGKILL');
    await until('the executor.lost event', () => Promise.resolve(parsed().some((e) => e.type === 'executor.lost')), 10_000);
    const lost = parsed().filter((e): e is LostEvent => e.type === 'executor.lost');
    assert.equal(lost.length, 1, events.text());
    assert.equal(lost[0]!.executor, victim.id);
    assert.deepEqual(lost[0]!.vms.map((v) => v.name).sort(), lostNames);
    assert.match(lost[0]!.reason, new RegExp(`executor ${victim.id} \\(pid ${victim.pid}\\) killed by SIGKILL`));
    const exited = parsed().filter((e): e is VmEvent => e.type === 'vm.exited');
    assert.deepEqual(exited.map((e) => e.vm.name).sort(), lostNames, 'vm.exited events');
    for (const e of exited) assert.equal(e.vm.exit?.kind === 'crash' && e.vm.exit.code, 'executor-lost');
  });

  void it('those VMs show as exited: crash, executor-lost, with the reason; the others still run', async () => {
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    for (const name of lostNames) {
      const vm = vms.find((v) => v.name === name);
      assert.ok(vm, `${name} is no longer listed`);
      assert.equal(vm.state, 'exited');
      assert.equal(vm.exit?.kind, 'crash');
      assert.equal(vm.exit?.code, 'executor-lost');
      assert.match(vm.exit?.reason ?? '', new RegExp(`executor ${victim.id} lost: .*killed by SIGKILL`));
    }
    for (const name of keptNames) assert.equal(vms.find((v) => v.name === name)?.state, 'running', name);
    const h = await d.host();
    assert.equal(h.vms, keptNames.length);
    assert.ok(!h.executors.some((e) => e.id === victim.id), 'the dead executor is still listed');
    assert.ok(!existsSync(join(d.runtimeDir, 'executors', `${victim.id}.sock`)), 'the dead executor\'s socket is left behind');
    // The CLI says it too.
    const r = await lightvm(['list', '--socket', d.socket]);
    assert.equal(r.code, 0, r.stderr);
    for (const name of lostNames) assert.match(r.stdout, new RegExp(`^\\d+ +${name} +crashed: executor ${victim.id} lost: `, 'm'));
  });

  void it('the VMs on the other executors keep running: their consoles keep growing', async () => {
    const before = await Promise.all(keptNames.map(consoleOf));
    await sleep(300);
    const afterward = await Promise.all(keptNames.map(consoleOf));
    keptNames.forEach((name, i) => {
      assert.ok(lastCount(afterward[i]!) > lastCount(before[i]!) + 5, `${name} stopped counting: ${lastCount(before[i]!)} -> ${lastCount(afterward[i]!)}`);
    });
    const frozen = await Promise.all(lostNames.map(consoleOf));
    await sleep(100);
    assert.deepEqual(await Promise.all(lostNames.map(consoleOf)), frozen, 'a lost VM\'s console changed');
  });

  void it('the daemon logged which executor was lost and which VMs went with it', async () => {
    await until('the daemon to log the loss', () => Promise.resolve(d.log().includes('executor lost')), 5000);
    const line = d.log().split('\n').find((l) => l.includes('executor lost'))!;
    const log = JSON.parse(line) as { level: number; executor: number; vms: { name: string }[]; reason: string };
    assert.equal(log.level, 50, 'logged as an error');
    assert.equal(log.executor, victim.id);
    assert.deepEqual(log.vms.map((v) => v.name).sort(), lostNames);
  });

  void it('creates still work after: as many VMs as were lost, placed on live executors within the bound', async () => {
    const fresh = await Promise.all(lostNames.map((_, i) => ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name: `again${i}` }, 201)));
    const h = await d.host();
    for (const { vm } of fresh) {
      assert.equal(vm.state, 'running');
      assert.ok(h.executors.some((e) => e.id === vm.executor), `placed on executor ${vm.executor}, which is not live`);
      assert.notEqual(vm.executor, victim.id);
    }
    for (const ex of h.executors) assert.ok(ex.vms <= 3, JSON.stringify(h.executors));
    for (const ex of h.executors) assert.ok(isAlive(ex.pid));
    await sleep(100);
    for (const { vm } of fresh) assert.ok(lastCount(await consoleOf(vm.name)) >= 0, `${vm.name} printed nothing`);
    // A lost VM's name can be taken again, and its record destroyed.
    const again = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'hello', name: lostNames[0], wait: 'exit' }, 201);
    assert.deepEqual(again.vm.exit, { kind: 'halt', status: 0 });
    const gone = await request(d.socket, 'DELETE', `/v1/vms/${lostNames[1]}`);
    assert.equal(gone.status, 200, gone.text);
    const { exit } = (gone.json as { vm: VmView }).vm;
    assert.equal(exit?.kind === 'crash' && exit.code, 'executor-lost');
  });
});
