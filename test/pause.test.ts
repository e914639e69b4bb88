// Pause and unpause through the daemon, beyond what cli-daemon.test.ts and
// boot.test.ts check: a pause takes effect at once, even for a guest that
// never exits by itself (its CPU time stops), a paused counter loses and
// repeats no line across the pause, and the guest's clock (WALLTIME) keeps
// going while it is paused: a POLL deadline that passed while paused ends
// at the unpause, and a short pause does not push a deadline back.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ok, request, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { sleep } from './helpers.js';
import { assertCounting, assertStill, consoleOf, cpuNs, lastCount, untilCount, untilExited, vmOf } from './vm-helpers.js';

void describe('pause and unpause', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'pause' });
  });
  after(async () => {
    await d.stop();
  });

  const cpuOf = async (id: number): Promise<number> => {
    const n = (await cpuNs(d.socket)).get(id);
    assert.ok(n !== undefined, `VM ${id} is not in GET /v1/stats`);
    return n;
  };

  void it('a guest that never exits (spin) stops at once: its CPU time stands still from the reply on; unpause runs it again', async () => {
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'spin', name: 'sp' }, 201);
    const a = await cpuOf(vm.id);
    await sleep(150);
    assert.ok(await cpuOf(vm.id) - a > 50e6, 'the spin does not run');
    const r = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms/sp/pause');
    assert.equal(r.vm.state, 'paused');
    const p0 = await cpuOf(vm.id);
    await sleep(250);
    assert.equal(await cpuOf(vm.id), p0, 'a paused VM used CPU time');
    await ok(d.socket, 'POST', '/v1/vms/sp/unpause');
    const u0 = await cpuOf(vm.id);
    await sleep(150);
    assert.ok(await cpuOf(vm.id) - u0 > 50e6, 'the spin does not run again after unpause');
    await request(d.socket, 'DELETE', '/v1/vms/sp');
  });

  void it('a counter prints no line after the pause reply, and after unpause goes on with the next one', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'ctr' }, 201);
    await untilCount(d.socket, 'ctr', 5);
    await ok(d.socket, 'POST', '/v1/vms/ctr/pause');
    const paused = await assertStill(d.socket, 'ctr', 300, 'a paused counter');
    assert.equal((await vmOf(d.socket, 'ctr')).state, 'paused');
    const k = assertCounting(paused, 'the counter before its pause');
    await ok(d.socket, 'POST', '/v1/vms/ctr/unpause');
    const text = await untilCount(d.socket, 'ctr', k + 10);
    assertCounting(text, 'the counter across its pause');
    // Twice more, quickly: still nothing lost or repeated.
    for (let i = 0; i < 2; i++) {
      await ok(d.socket, 'POST', '/v1/vms/ctr/pause');
      await ok(d.socket, 'POST', '/v1/vms/ctr/unpause');
    }
    assertCounting(await untilCount(d.socket, 'ctr', lastCount(text) + 10), 'the counter across three pauses');
    await request(d.socket, 'DELETE', '/v1/vms/ctr');
  });

  void it('WALLTIME keeps going while paused: a POLL whose deadline passed meanwhile ends at the unpause, and the guest saw the time', async () => {
    const t0 = Date.now();
    await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', name: 'sl', cmdline: '300' }, 201);
    await sleep(100);
    await ok(d.socket, 'POST', '/v1/vms/sl/pause');
    await sleep(600);
    assert.equal((await vmOf(d.socket, 'sl')).state, 'paused', 'a paused VM ended when its deadline passed');
    assert.equal(await consoleOf(d.socket, 'sl'), '');
    const tu = Date.now();
    await ok(d.socket, 'POST', '/v1/vms/sl/unpause');
    const vm = await untilExited(d.socket, 'sl', 2000);
    const late = Date.now() - tu;
    const wall = Date.now() - t0;
    assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
    assert.ok(late < 200, `ended ${late} ms after the unpause, though its deadline had passed`);
    const slept = Number(/^slept (\d+) ms\n$/.exec(await consoleOf(d.socket, 'sl'))?.[1] ?? NaN);
    assert.ok(slept >= 100 + 600 - 20 && slept <= wall, `the guest measured ${slept} ms for a 300 ms POLL paused for 600 ms (wall ${wall} ms)`);
  });

  void it('a pause shorter than the POLL does not push its deadline back', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', name: 'sl2', cmdline: '800' }, 201);
    await sleep(100);
    await ok(d.socket, 'POST', '/v1/vms/sl2/pause');
    await sleep(200);
    await ok(d.socket, 'POST', '/v1/vms/sl2/unpause');
    const vm = await untilExited(d.socket, 'sl2', 3000);
    const t = vm.timings!;
    const ms = (t.endNs - t.bootNs) / 1e6;
    assert.ok(ms >= 795 && ms < 950, `a POLL of 800 ms, paused for 200 ms of it, ended after ${ms} ms`);
    const slept = Number(/^slept (\d+) ms\n$/.exec(await consoleOf(d.socket, 'sl2'))?.[1] ?? NaN);
    assert.ok(slept >= 800 && slept < 950, `slept ${slept} ms`);
  });
});
