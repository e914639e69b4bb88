// The daemon's pool of prepared shells: it fills to its target, creates
// take shells from it (vm.warm) and it refills; when it is empty, too small,
// turned off or of another size, creates still succeed from cold.
// PUT /v1/pool changes the target, and shells given up free their KVM
// descriptors in the executor process.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import {
  fdTargets, ok, request, startTestDaemon, until,
  type HostInfo, type PoolView, type TestDaemon, type VmView,
} from './daemon-helpers.js';

void describe('the shell pool', () => {
  let d: TestDaemon;
  const pool = async (mib: number): Promise<PoolView | undefined> =>
    (await ok<{ pools: PoolView[] }>(d.socket, 'GET', '/v1/pool')).pools.find((p) => p.memory_mib === mib);
  const full = (mib: number, n: number) => async (): Promise<boolean> => {
    const p = await pool(mib);
    return p?.depth === n;
  };
  const create = async (body: Record<string, unknown>): Promise<VmView> =>
    (await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', body, 201)).vm;
  const destroyAll = async (): Promise<void> => {
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    await Promise.all(vms.map((v) => ok(d.socket, 'DELETE', `/v1/vms/${v.id}`)));
    await until('every executor to be empty', async () => (await d.host()).executors.every((e) => e.vms === 0));
  };
  /**
   * KVM VMs of the executor processes that have run at least once: KVM starts
   * a VM's huge-page recovery task ("kvm-nx-lpage-re", a task of the process
   * that made the VM) at its first KVM_RUN. The pool view's \`warm\` is the
   * daemon's word for it; this is the kernel's.
   */
  const ranOnce = (h: HostInfo): number => h.executors.reduce((a, e) => a + readdirSync(`/proc/${e.pid}/task`).filter((t) => {
    try {
      return readFileSync(`/proc/${e.pid}/task/${t}/comm`, 'utf8').startsWith('kvm-nx-lpage');
    } catch {
      return false; // ended while we read
    }
  }).length, 0);
  /** KVM VM descriptors held by the daemon's executor processes: one per shell or VM. */
  const kvmVms = (h: HostInfo): number =>
    h.executors.reduce((a, e) => a + fdTargets(e.pid).filter((t) => t === 'anon_inode:kvm-vm').length, 0);

  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:3'], prefix: 'pool' });
  });
  after(async () => {
    await d.stop();
  });

  void it('fills to its target: 3 shells of 4 MiB, warmed up, on one executor, each holding a KVM VM', async () => {
    await until('the pool to fill', full(4, 3), 15_000);
    assert.deepEqual(await pool(4), { memory_mib: 4, target: 3, depth: 3, warm: 3 });
    const h = await d.host();
    assert.deepEqual(h.pools, [{ memory_mib: 4, target: 3, depth: 3, warm: 3 }]);
    assert.equal(h.executors.reduce((a, e) => a + e.shells, 0), 3);
    assert.equal(h.executors.filter((e) => e.shells > 0).length, 1, JSON.stringify(h.executors));
    assert.equal(h.vms, 0);
    assert.equal(kvmVms(h), 3, 'KVM VM descriptors in the executors');
    assert.equal(ranOnce(h), 3, 'shells that have run once (warmed up)');
  });

  void it('a create takes a prepared shell (warm) and the pool refills to its target', async () => {
    const vm = (await ok<{ vm: VmView; console: string }>(d.socket, 'POST', '/v1/vms', { image: 'hello', wait: 'exit' }, 201));
    assert.equal(vm.vm.warm, true);
    assert.equal(vm.console, 'Hello from LightVM!\n');
    // Refilling is background work at the lowest priority: wait for it.
    await until('the pool to refill after the first create', full(4, 3), 15_000);
    const three = await Promise.all([0, 1, 2].map(() => create({ image: 'sleeper', cmdline: '600000' })));
    assert.deepEqual(three.map((v) => v.warm), [true, true, true], 'three creates, three shells ready');
    // The pool's depth is reported when the executor is idle, so it may lag a
    // moment: the executor's KVM descriptors say when the shells are back.
    await until('3 VMs and 3 refilled shells to hold a KVM VM each', async () => kvmVms(await d.host()) === 6, 15_000);
    await until('the pool to refill', full(4, 3), 15_000);
    assert.equal((await d.host()).vms, 3);
    await destroyAll();
  });

  void it('more creates than shells: every one succeeds, the first from shells, the rest from cold', async () => {
    await until('the pool to refill', full(4, 3), 15_000);
    const vms = await Promise.all(Array.from({ length: 20 }, () => create({ image: 'sleeper', cmdline: '600000' })));
    const warm = vms.filter((v) => v.warm).length;
    assert.ok(warm >= 3, `only ${warm} of 20 creates took one of the 3 ready shells`);
    assert.ok(warm < 20, 'all 20 creates found a prepared shell: the fallback was not exercised');
    assert.ok(vms.every((v) => v.state === 'running'));
    await until('the pool to refill', full(4, 3), 15_000);
    await destroyAll();
  });

  void it('a create that asks for no shell (warm: false), or of a size with no pool, starts cold', async () => {
    await until('the pool to refill', full(4, 3), 15_000);
    const cold = await create({ image: 'sleeper', cmdline: '600000', warm: false });
    assert.equal(cold.warm, false);
    assert.deepEqual(await pool(4), { memory_mib: 4, target: 3, depth: 3, warm: 3 }, 'a cold create took a shell');
    const other = await create({ image: 'sleeper', cmdline: '600000', memory: 6 });
    assert.equal(other.warm, false);
    assert.equal(other.memory_mib, 6);
    await destroyAll();
  });

  void it('PUT /v1/pool count 0: the shells are freed, and a create still succeeds, cold', async () => {
    const r = await ok<{ pools: PoolView[] }>(d.socket, 'PUT', '/v1/pool', { memory: 4, count: 0 });
    assert.equal(r.pools.find((p) => p.memory_mib === 4)?.target, 0);
    await until('the pool to empty', async () => (await pool(4))?.depth === 0, 10_000);
    await until('the executors to close the shells\' KVM descriptors', async () => kvmVms(await d.host()) === 0, 10_000);
    const vm = (await ok<{ vm: VmView; console: string }>(d.socket, 'POST', '/v1/vms', { image: 'hello', wait: 'exit' }, 201));
    assert.equal(vm.vm.warm, false);
    assert.equal(vm.console, 'Hello from LightVM!\n');
    assert.deepEqual(vm.vm.exit, { kind: 'halt', status: 0 });
    assert.equal((await pool(4))?.depth, 0, 'a pool of 0 refilled');
  });

  void it('PUT /v1/pool for another size: 8 MiB shells fill to 2 and an 8 MiB create takes one', async () => {
    const r = await ok<{ pools: PoolView[] }>(d.socket, 'PUT', '/v1/pool', { memory: 8, count: 2 });
    assert.deepEqual(r.pools.map((p) => [p.memory_mib, p.target]).sort(), [[4, 0], [8, 2]]);
    await until('the 8 MiB pool to fill', full(8, 2), 15_000);
    assert.equal((await pool(4))?.depth, 0);
    const vm = await create({ image: 'sleeper', cmdline: '600000', memory: 8 });
    assert.equal(vm.warm, true);
    assert.equal(vm.memory_mib, 8);
    const four = await create({ image: 'sleeper', cmdline: '600000' });
    assert.equal(four.warm, false, 'a 4 MiB create took a shell from a pool of 0');
    await until('the 8 MiB pool to refill', full(8, 2), 15_000);
    await destroyAll();
  });

  void it('PUT /v1/pool back to 3: it fills again', async () => {
    await ok(d.socket, 'PUT', '/v1/pool', { memory: 4, count: 3 });
    await until('the pool to fill again', full(4, 3), 15_000);
    await ok(d.socket, 'PUT', '/v1/pool', { memory: 8, count: 0 });
    await until('the 8 MiB pool to empty', async () => (await pool(8))?.depth === 0, 10_000);
    await until('the executors to hold just the 3 shells', async () => kvmVms(await d.host()) === 3, 10_000);
  });

  void it('shells that cannot be prepared for a while: logged, creates go cold, the pool fills once the cause is gone', {
    skip: spawnSync('prlimit', ['--version']).status === 0 ? false : 'needs prlimit',
  }, async () => {
    // No fd left in the executors (their limit at the lowest free number):
    // KVM_CREATE_VM fails with EMFILE, as it would on a host out of fds. The
    // 4 MiB pool full first: its preparer runs, and takes the 8 MiB target.
    await until('the pool to fill', full(4, 3), 15_000);
    const pids = (await d.host()).executors.map((e) => e.pid);
    const lowestFree = (pid: number): number => {
      const used = new Set(readdirSync(`/proc/${pid}/fd`).map(Number));
      let fd = 0;
      while (used.has(fd)) fd++;
      return fd;
    };
    const limits = pids.map((pid) => execFileSync('prlimit', ['--pid', String(pid), '--nofile', '--raw', '--noheadings', '-o', 'SOFT,HARD'], { encoding: 'utf8' }).trim().split(/\s+/));
    try {
      for (const pid of pids) execFileSync('prlimit', ['--pid', String(pid), `--nofile=${lowestFree(pid)}:`]);
      await ok(d.socket, 'PUT', '/v1/pool', { memory: 8, count: 2 });
      await until('the failure to be logged', async () => d.log().includes('shells could not be prepared'), 10_000);
      assert.match(d.log(), /"memory":8388608/);
      assert.equal((await pool(8))?.depth, 0);
    } finally {
      pids.forEach((pid, i) => execFileSync('prlimit', ['--pid', String(pid), `--nofile=${limits[i]![0]}:${limits[i]![1]}`]));
    }
    // Tried again after a second, then after two, four...
    await until('the 8 MiB pool to fill once fds are back', full(8, 2), 15_000);
    const vm = await create({ image: 'sleeper', cmdline: '600000', memory: 8 });
    assert.equal(vm.warm, true);
    await ok(d.socket, 'PUT', '/v1/pool', { memory: 8, count: 0 });
    await destroyAll();
    await until('the 8 MiB pool to empty', async () => (await pool(8))?.depth === 0, 10_000);
  });

  void it('PUT /v1/pool with a bad body: 400 naming the field, the pool unchanged', async () => {
    for (const [body, field] of [
      [{ memory: 4 }, 'count'], [{ count: 1 }, 'memory'], [{ memory: 1, count: 1 }, 'memory'],
      [{ memory: 4, count: 5000 }, 'count'], [{ memory: 4, count: 1.5 }, 'count'], [{ memory: '4', count: 1 }, 'memory'],
    ] as const) {
      const r = await request(d.socket, 'PUT', '/v1/pool', { body });
      assert.equal(r.status, 400, `${JSON.stringify(body)}: ${r.text}`);
      assert.equal((r.json as { error: { field: string } }).error.field, field, JSON.stringify(body));
    }
    assert.deepEqual(await pool(4), { memory_mib: 4, target: 3, depth: 3, warm: 3 });
  });
});
