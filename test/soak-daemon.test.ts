// 2,000 create/destroy cycles through the daemon's API: afterwards the
// daemon's and every executor's open descriptors, and the number of
// executors, are back where they were. Compared once the shell pool is full
// again: its shells (a KVM VM and a vCPU descriptor each) are steady state.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import {
  executorProcesses, fdDiff, fdTargets, ok, request, settle, startTestDaemon, until,
  type HostInfo, type PoolView, type TestDaemon, type VmView,
} from './daemon-helpers.js';
import { sleep } from './helpers.js';

const CYCLES = 2000;
const IN_FLIGHT = 4;

interface Held {
  daemon: string[];
  executors: Map<number, string[]>;
  count: number;
}

void describe('create/destroy soak through the daemon', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ prefix: 'soak' });
  });
  after(async () => {
    await d.stop();
  });

  const poolFull = async (): Promise<boolean> => {
    const { pools } = await ok<{ pools: PoolView[] }>(d.socket, 'GET', '/v1/pool');
    return pools.every((p) => p.depth === p.target && p.warm === p.target);
  };

  /** One cycle: a noop run to its end then its record destroyed; every fourth, a spinning VM destroyed while it runs. */
  async function cycle(i: number): Promise<void> {
    const spin = i % IN_FLIGHT === 3;
    const r = await request(d.socket, 'POST', '/v1/vms', { body: spin ? { image: 'spin', wait: 'booted' } : { image: 'noop', wait: 'exit' } });
    if (r.status !== 201) throw new Error(`create ${i}: ${r.status} ${r.text}`);
    const { vm } = r.json as { vm: VmView };
    if (!spin) assert.deepEqual(vm.exit, { kind: 'halt', status: 0 }, `cycle ${i}`);
    const x = await request(d.socket, 'DELETE', `/v1/vms/${vm.id}`);
    if (x.status !== 200) throw new Error(`destroy ${i}: ${x.status} ${x.text}`);
    assert.deepEqual((x.json as { vm: VmView }).vm.exit, spin ? { kind: 'destroyed' } : { kind: 'halt', status: 0 }, `cycle ${i}`);
  }

  async function run(n: number, from = 0): Promise<void> {
    let next = from;
    const worker = async (): Promise<void> => {
      while (next < from + n) await cycle(next++);
    };
    await Promise.all(Array.from({ length: IN_FLIGHT }, worker));
  }

  /** What the daemon and its executors hold, once nothing is starting and the pool is full. */
  async function held(): Promise<Held> {
    await until('the pool to be full', poolFull, 30_000);
    await settle(d.socket, d.runtimeDir);
    const h = await ok<HostInfo>(d.socket, 'GET', '/v1/host');
    // The request just made is answered: let its connection close on the daemon's side too.
    await sleep(100);
    return {
      daemon: fdTargets(d.pid),
      executors: new Map(h.executors.map((e) => [e.pid, fdTargets(e.pid)])),
      count: h.executors.length,
    };
  }

  const same = (a: Held, b: Held): boolean =>
    a.daemon.join() === b.daemon.join() && a.count === b.count &&
    [...a.executors].every(([pid, fds]) => b.executors.get(pid)?.join() === fds.join());

  void it(`${CYCLES} create/destroy cycles, ${IN_FLIGHT} in flight: descriptors and executors back to the start`, async () => {
    // Warm-up: the spare executor starts, caches fill, the pool settles.
    await run(40);
    const start = await held();
    assert.ok(start.count >= 1);
    assert.equal(executorProcesses(d.runtimeDir).length, start.count);

    const t0 = Date.now();
    await run(CYCLES, 40);
    const took = Date.now() - t0;

    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    assert.deepEqual(vms, [], 'VMs left on record after their destroy');
    assert.equal((await d.host()).vms, 0);

    // Descriptors are closed as the executors get idle: poll a little before judging.
    let end = await held();
    for (let i = 0; i < 20 && !same(start, end); i++) {
      await sleep(250);
      end = await held();
    }
    assert.equal(end.count, start.count, 'number of executors');
    assert.equal(executorProcesses(d.runtimeDir).length, start.count, 'executor processes running');
    assert.deepEqual([...end.executors.keys()].sort(), [...start.executors.keys()].sort(), 'the same executor processes');
    assert.equal(fdDiff(start.daemon, end.daemon), '', `the daemon's descriptors changed (${start.daemon.length} -> ${end.daemon.length})`);
    for (const [pid, fds] of start.executors) {
      const now = end.executors.get(pid)!;
      assert.equal(fdDiff(fds, now), '', `executor pid ${pid}'s descriptors changed (${fds.length} -> ${now.length})`);
    }
    assert.ok(took < 120_000, `${CYCLES} cycles took ${took} ms`);
  });
});
