// Bridges through a real daemon, in the test's own network namespace: a
// create naming a link that is not a bridge is refused without touching it;
// a refused create makes no bridge; a bridge LightVM made goes with its last
// port (the daemon's default bridge at stop) and comes back for a restore;
// a bridge someone else made stays.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { after, before, describe, it } from 'node:test';
import { ok, request, startTestDaemon, until, type ApiErrorBody, type TestDaemon } from './daemon-helpers.js';

const inOwnNetns = process.env.LIGHTVM_NETNS === '1';
const errorOf = (r: { json: unknown }): ApiErrorBody['error'] | undefined => (r.json as ApiErrorBody | undefined)?.error;

interface IpLink { ifname: string; flags: string[]; master?: string; ifalias?: string; link_type?: string; linkinfo?: { info_kind?: string } }

function link(name: string): IpLink | undefined {
  try {
    return (JSON.parse(execFileSync('ip', ['-j', '-d', 'link', 'show', 'dev', name], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] })) as IpLink[])[0];
  } catch {
    return undefined;
  }
}

const ip = (...args: string[]): string => execFileSync('ip', args, { encoding: 'utf8' });
const ports = (bridge: string): string[] =>
  (JSON.parse(ip('-j', 'link', 'show', 'master', bridge)) as IpLink[]).map((l) => l.ifname);

const vif = (bridge: string | undefined, addr: string): unknown[] =>
  [{ type: 'net', id: 0, ...(bridge ? { bridge } : {}), ipv4: { addr, netmask: '255.255.255.0', gateway: '10.0.0.1' } }];

void describe('bridges', { skip: inOwnNetns ? false : 'needs root and a network namespace of its own (npm test provides one)' }, () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0', '--bridge', 'lvtdef0', '--bridge-address', '10.0.0.1/24'], prefix: 'br' });
  });
  after(async () => {
    await d?.stop();
    for (const l of ['lvtveth0', 'lvtuser0']) if (link(l)) ip('link', 'del', l);
  });

  void it('bridge= naming a veth that is down: 422 naming the field, and the veth stays down, no port added', async () => {
    ip('link', 'add', 'lvtveth0', 'type', 'veth', 'peer', 'name', 'lvtveth1');
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'daytime', cmdline: 'stay', devices: vif('lvtveth0', '10.0.0.40') } });
    assert.equal(r.status, 422, r.text);
    assert.equal(errorOf(r)?.field, 'devices.0.bridge');
    assert.match(errorOf(r)?.message ?? '', /"lvtveth0" is a veth link, not a bridge \(left as it is\)/);
    const veth = link('lvtveth0')!;
    assert.ok(!veth.flags.includes('UP'), `the veth was brought up: ${veth.flags.join(',')}`);
    assert.equal(veth.master, undefined);
    assert.deepEqual((await ok<{ vms: unknown[] }>(d.socket, 'GET', '/v1/vms')).vms, []);
  });

  void it('a create refused for its image (422) or its name (409) makes no bridge', async () => {
    const bad = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'no-such-image', devices: vif('lvtq1', '10.0.0.41') } });
    assert.equal(bad.status, 422, bad.text);
    assert.equal(link('lvtq1'), undefined, 'a refused create made its bridge');
    await ok(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'taken', cmdline: 'stay' }, 201);
    const dup = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'daytime', name: 'taken', cmdline: 'stay', devices: vif('lvtq2', '10.0.0.42') } });
    assert.equal(dup.status, 409, dup.text);
    assert.equal(link('lvtq2'), undefined, 'a refused create made its bridge');
    await ok(d.socket, 'DELETE', '/v1/vms/taken');
  });

  void it('a bridge made on demand goes with its last port, not before', async () => {
    const a = (await ok<{ vm: { id: number } }>(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'a', cmdline: 'stay', devices: vif('lvtq3', '10.0.0.43') }, 201)).vm;
    const b = (await ok<{ vm: { id: number } }>(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'b', cmdline: 'stay', devices: vif('lvtq3', '10.0.0.44') }, 201)).vm;
    const br = link('lvtq3');
    assert.equal(br?.linkinfo?.info_kind, 'bridge');
    assert.equal(br?.ifalias, 'made on demand by lightvm');
    assert.deepEqual(ports('lvtq3').sort(), [`lv${a.id}n0`, `lv${b.id}n0`].sort());
    await ok(d.socket, 'DELETE', '/v1/vms/a');
    assert.ok(link('lvtq3'), 'the bridge went while a VM was still on it');
    await ok(d.socket, 'DELETE', '/v1/vms/b');
    await until('the bridge to go with its last port', () => Promise.resolve(link('lvtq3') === undefined), 5000);
  });

  void it('a bridge someone else made stays when its last LightVM port goes', async () => {
    ip('link', 'add', 'lvtuser0', 'type', 'bridge');
    await ok(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'u', cmdline: 'stay', devices: vif('lvtuser0', '10.0.0.45') }, 201);
    assert.equal(ports('lvtuser0').length, 1);
    await ok(d.socket, 'DELETE', '/v1/vms/u');
    await new Promise((r) => setTimeout(r, 200));
    assert.ok(link('lvtuser0'), 'a bridge LightVM did not make was removed');
  });

  void it('the default bridge stays while the daemon runs, goes at its stop, and comes back for the VMs it restores', async () => {
    const v = (await ok<{ vm: { id: number } }>(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'keep', cmdline: 'stay', devices: vif(undefined, '10.0.0.46') }, 201)).vm;
    assert.deepEqual(ports('lvtdef0'), [`lv${v.id}n0`]);
    await ok(d.socket, 'POST', '/v1/vms/keep/pause');
    // Stopped without --destroy: the VM is saved for the next daemon, and the bridge goes.
    const dir = d.runtimeDir;
    const exited = new Promise((r) => d.child.once('exit', r));
    d.child.kill('SIGTERM');
    await exited;
    assert.equal(link('lvtdef0'), undefined, 'the default bridge outlived its daemon');
    d = await startTestDaemon({ runtimeDir: dir, args: ['--pool', '4:0', '--bridge', 'lvtdef0', '--bridge-address', '10.0.0.1/24'] });
    const back = (await ok<{ vm: { id: number; state: string } }>(d.socket, 'GET', '/v1/vms/keep')).vm;
    assert.equal(back.state, 'paused');
    assert.ok(link('lvtdef0'), 'the restored VM\'s bridge was not made again');
    assert.deepEqual(ports('lvtdef0'), [`lv${back.id}n0`]);
    assert.match(ip('-4', '-o', 'addr', 'show', 'dev', 'lvtdef0'), /10\.0\.0\.1\/24/);
    await ok(d.socket, 'DELETE', '/v1/vms/keep');
  });
});
