// Just-in-time services survive a daemon crash: the daemon is killed with
// SIGKILL while its executors keep the service's taps and its armed (or
// running) VM; the next daemon re-adopts the service, which it lists, boots
// on the next packet, shows the VM it booted, and can stop (taps gone). A
// graceful stop saves the services' definitions, and the next daemon serves
// them again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { ok, request, startTestDaemon, until, type TestDaemon } from './daemon-helpers.js';

const run = promisify(execFile);
const inOwnNetns = process.env.LIGHTVM_NETNS === '1';

interface ServiceView { name: string; boots: number; active: boolean; vm: { id: number; name: string; state: string } | null }

async function links(): Promise<string[]> {
  const { stdout } = await run('ip', ['-br', 'link']);
  return stdout.split('\n').map((l) => l.split(/\s+/)[0]!.replace(/@.*/, '')).filter(Boolean);
}

async function daytime(ip: string): Promise<string> {
  const { stdout } = await run('nc', ['-d', '-w', '5', ip, '13'], { timeout: 10_000 });
  return stdout;
}

const services = async (d: TestDaemon): Promise<ServiceView[]> => (await ok<{ services: ServiceView[] }>(d.socket, 'GET', '/v1/services')).services;
const service = async (d: TestDaemon, name: string): Promise<ServiceView | undefined> => (await services(d)).find((s) => s.name === name);

async function killDaemon(d: TestDaemon): Promise<void> {
  const exited = new Promise((r) => d.child.once('exit', r));
  d.child.kill('SIGKILL');
  await exited;
}

const dev = (addr: string): unknown[] => [{ type: 'net', id: 0, ipv4: { addr, netmask: '255.255.255.0', gateway: '10.0.0.1' } }];

void describe('just-in-time services across daemon restarts', { skip: inOwnNetns ? false : 'needs root and a network namespace of its own (npm test provides one)' }, () => {
  void it('killed (SIGKILL) with the service armed: the next daemon lists it, boots it on the next packet, shows its VM, and stops it', async () => {
    const d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'svc' });
    let d2: TestDaemon | undefined;
    try {
      await ok(d1.socket, 'POST', '/v1/services', { name: 'web', image: 'daytime', devices: dev('10.0.0.50'), idle_ms: 1500 }, 201);
      const before = (await service(d1, 'web'))!;
      assert.equal(before.vm?.state, 'armed');
      const taps = (await links()).filter((l) => l.startsWith('lvs'));
      assert.equal(taps.length, 1, taps.join(','));
      await killDaemon(d1);
      // Its executor keeps the tap and the armed VM.
      assert.deepEqual((await links()).filter((l) => l.startsWith('lvs')), taps);

      d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
      const adopted = await service(d2, 'web');
      assert.ok(adopted, `the next daemon lists no service: ${JSON.stringify(await services(d2))}`);
      assert.equal(adopted.active, true);
      assert.deepEqual(adopted.vm && { id: adopted.vm.id, state: adopted.vm.state }, { id: before.vm!.id, state: 'armed' });
      assert.equal((await ok<{ vm: { state: string } }>(d2.socket, 'GET', '/v1/vms/web')).vm.state, 'armed');

      // The next packet boots it: the VM that answers is one this daemon shows.
      assert.match(await daytime('10.0.0.50'), /-UTC\r?\n$/);
      const booted = (await service(d2, 'web'))!;
      assert.equal(booted.vm?.id, before.vm!.id);
      assert.ok(booted.vm?.state === 'running' || booted.vm?.state === 'exited', JSON.stringify(booted));
      // Idle, it stops; the next one is armed, by this daemon.
      await until('the next VM to be armed', async () => {
        const s = await service(d2!, 'web');
        return s?.vm?.state === 'armed' && s.vm.id !== before.vm!.id;
      }, 20_000);
      assert.match(await daytime('10.0.0.50'), /-UTC\r?\n$/);

      // A new service's taps do not collide with the adopted one's.
      await ok(d2.socket, 'POST', '/v1/services', { name: 'web2', image: 'daytime', devices: dev('10.0.0.51'), idle_ms: 1500 }, 201);
      assert.match(await daytime('10.0.0.51'), /-UTC\r?\n$/);

      for (const name of ['web', 'web2']) await ok(d2.socket, 'DELETE', `/v1/services/${name}`);
      assert.deepEqual(await services(d2), []);
      await until('the service taps to go', async () => !(await links()).some((l) => l.startsWith('lvs')), 5000);
      const vm = await request(d2.socket, 'GET', '/v1/vms/web');
      assert.ok(vm.status === 404 || (vm.json as { vm: { state: string } }).vm.state === 'exited', vm.text);
    } finally {
      await d2?.stop();
      await d1.stop();
    }
  });

  void it('killed while the service\'s VM runs: the next daemon shows that VM running and the service stops it', async () => {
    const d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'svc' });
    let d2: TestDaemon | undefined;
    try {
      await ok(d1.socket, 'POST', '/v1/services', { name: 'up', image: 'daytime', devices: dev('10.0.0.52'), idle_ms: 60_000 }, 201);
      assert.match(await daytime('10.0.0.52'), /-UTC\r?\n$/);
      const running = (await service(d1, 'up'))!;
      assert.equal(running.vm?.state, 'running');
      await killDaemon(d1);

      d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
      const adopted = (await service(d2, 'up'))!;
      assert.deepEqual(adopted.vm && { id: adopted.vm.id, state: adopted.vm.state }, { id: running.vm!.id, state: 'running' });
      assert.match(await daytime('10.0.0.52'), /-UTC\r?\n$/);
      await ok(d2.socket, 'DELETE', '/v1/services/up');
      const vm = (await ok<{ vm: { state: string } }>(d2.socket, 'GET', `/v1/vms/${running.vm!.id}`)).vm;
      assert.equal(vm.state, 'exited');
      await until('the service taps to go', async () => !(await links()).some((l) => l.startsWith('lvs')), 5000);
    } finally {
      await d2?.stop();
      await d1.stop();
    }
  });

  void it('stopped (SIGTERM): the next daemon serves the service again, with its definition, and nothing of it was left meanwhile', async () => {
    const d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'svc' });
    let d2: TestDaemon | undefined;
    try {
      await ok(d1.socket, 'POST', '/v1/services', { name: 'back', image: 'daytime', devices: dev('10.0.0.53'), idle_ms: 60_000 }, 201);
      // Its VM runs when the daemon stops: the service is saved, not that VM.
      assert.match(await daytime('10.0.0.53'), /-UTC\r?\n$/);
      const exited = new Promise((r) => d1.child.once('exit', r));
      d1.child.kill('SIGTERM');
      await exited;
      assert.ok(!(await links()).some((l) => l.startsWith('lvs')), 'service taps outlived their daemon');

      d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
      const back = await service(d2, 'back');
      assert.ok(back, `the next daemon lists no service: ${JSON.stringify(await services(d2))}`);
      assert.equal(back.vm?.state, 'armed');
      assert.equal((await ok<{ vms: unknown[] }>(d2.socket, 'GET', '/v1/vms')).vms.length, 1, 'the service\'s old VM came back as a VM of its own');
      assert.match(await daytime('10.0.0.53'), /-UTC\r?\n$/);
      await ok(d2.socket, 'DELETE', '/v1/services/back');
    } finally {
      await d2?.stop();
      await d1.stop();
    }
  });
});
