// lightvmd --devices xenstore with real VMs: each create does libxl's store
// steps (xenstore-mode.ts) against the store and backend the daemon starts,
// then boots the VM as in noxs, whose devices work as before (daytime
// answers on its vif); what the store holds is read with Debian's
// xenstore-utils (clients nobody here wrote); a name clash is refused and
// changes nothing; destroy removes every entry; the daemon's stop ends the
// store and the backend.
import assert from 'node:assert/strict';
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { within } from './helpers.js';
import { CLI, lightvm, ok, processesOf, request, startTestDaemon, type ApiErrorBody, type HostInfo, type TestDaemon } from './daemon-helpers.js';

const run = promisify(execFile);
const inOwnNetns = process.env.LIGHTVM_NETNS === '1';
const haveUtils = spawnSync('sh', ['-c', 'command -v xenstore-ls']).status === 0;
const skip = !existsSync('/dev/kvm') ? 'needs /dev/kvm'
  : !inOwnNetns ? 'needs root and a network namespace of its own (npm test provides one)'
    : !haveUtils ? 'xenstore-utils not installed (scripts/install-peers.sh)' : false;

interface Vm { id: number; name: string; state: string }

const vif = (addr: string): unknown[] => [{ type: 'net', id: 0, ipv4: { addr, netmask: '255.255.255.0', gateway: '10.0.0.1' } }];

void describe('daemon --devices', () => {
  void it('a store or backend started --with-parent ends when its parent\'s end of stdin closes (a daemon killed outright)', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lightvm-txsp-'));
    const sock = join(dir, 'xenstored.sock');
    try {
      const child = spawn(process.execPath, [CLI, 'xenstored', '--socket', sock, '--with-parent'], { stdio: ['pipe', 'ignore', 'ignore'] });
      const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
      for (let i = 0; i < 200 && !existsSync(sock); i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(existsSync(sock), 'xenstored did not listen');
      child.stdin!.end();
      assert.equal(await within(exited, 10_000, 'xenstored to end with its stdin'), 0);
      assert.ok(!existsSync(sock), 'its socket stayed');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  void it('refuses a mode it does not know, naming the option', async () => {
    const r = await lightvm(['daemon', '--runtime-dir', '/nonexistent/lightvm-never', '--devices', 'xs']);
    assert.notEqual(r.code, 0);
    assert.match(r.stderr, /--devices: "xs" is not noxs or xenstore/);
  });
});

void describe('daemon --devices xenstore (real VMs)', { skip }, () => {
  let d: TestDaemon;
  let socket = '';
  const vms: Vm[] = [];

  /** xenstore-ls of a path, as "path = value" lines with full paths (-f). */
  async function ls(path: string): Promise<Map<string, string>> {
    const { stdout } = await run('xenstore-ls', ['-f', path], { env: { ...process.env, XENSTORED_PATH: socket }, timeout: 10_000 });
    const m = new Map<string, string>();
    for (const line of stdout.split('\n')) {
      const r = /^(\S+) = "(.*)"$/.exec(line);
      if (r) m.set(r[1]!, r[2]!);
    }
    return m;
  }

  const domains = async (): Promise<string[]> => {
    const { stdout } = await run('xenstore-list', ['/local/domain'], { env: { ...process.env, XENSTORED_PATH: socket } });
    return stdout.split('\n').filter(Boolean).sort((a, b) => Number(a) - Number(b));
  };

  before(async () => {
    d = await startTestDaemon({ prefix: 'xs', args: ['--devices', 'xenstore', '--pool', '4:2', '--bridge', 'lvtxs0', '--bridge-address', '10.0.0.1/24'] });
    const h = await ok<HostInfo & { devices: string; xenstore_socket: string | null }>(d.socket, 'GET', '/v1/host');
    assert.equal(h.devices, 'xenstore');
    assert.equal(h.xenstore_socket, `${d.runtimeDir}/xenstored.sock`);
    socket = h.xenstore_socket!;
  });

  after(async () => {
    await d?.stop();
  });

  void it('creates 3 VMs: each one\'s domain, /vm entry and devices are in the store, its vif Connected on both ends', async () => {
    for (let i = 1; i <= 3; i++) {
      const r = await ok<{ vm: Vm; xenstore: Record<string, number> | null }>(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: `xs-${i}`, cmdline: 'stay', devices: vif(`10.0.0.${60 + i}`) }, 201);
      assert.equal(r.vm.state, 'running');
      // libxl's name check read every listed domain's name: dom0's and the VMs' before it.
      assert.equal(r.xenstore?.name_reads, i, JSON.stringify(r.xenstore));
      for (const k of ['domain_make_ms', 'build_post_ms', 'console_ms', 'vifs_ms', 'connect_ms']) assert.ok((r.xenstore?.[k] ?? 0) > 0, k);
      vms.push(r.vm);
    }
    assert.deepEqual(await domains(), ['0', ...vms.map((v) => String(v.id))]);
    const tree = await ls('/');
    for (const [i, vm] of vms.entries()) {
      const dom = `/local/domain/${vm.id}`;
      assert.equal(tree.get(`${dom}/name`), `xs-${i + 1}`);
      assert.equal(tree.get(`${dom}/domid`), String(vm.id));
      assert.equal(tree.get(`${dom}/memory/target`), '4096');
      const vmPath = tree.get(`${dom}/vm`)!;
      assert.match(vmPath, /^\/vm\/[0-9a-f-]{36}$/);
      assert.equal(tree.get(`${vmPath}/name`), `xs-${i + 1}`);
      assert.equal(tree.get(`${vmPath}/uuid`), vmPath.slice(4));
      const back = `/local/domain/0/backend/vif/${vm.id}/0`;
      // XenbusState Connected (4) on both ends, after the hotplug script's word.
      assert.equal(tree.get(`${dom}/device/vif/0/state`), '4');
      assert.equal(tree.get(`${back}/state`), '4');
      assert.equal(tree.get(`${back}/hotplug-status`), 'connected');
      assert.equal(tree.get(`${back}/bridge`), 'lvtxs0');
      assert.equal(tree.get(`${back}/mac`), tree.get(`${dom}/device/vif/0/mac`));
      assert.equal(tree.get(`${dom}/console/type`), 'xenconsoled');
      assert.equal(tree.get(`/local/domain/0/backend/console/${vm.id}/0/frontend`), `${dom}/console`);
    }
    // libxl's permissions: the domain owns its frontend, dom0 its backend (readable by the domain).
    const id = vms[0]!.id;
    const perms = async (path: string): Promise<string> =>
      (await run('xenstore-ls', ['-p', path], { env: { ...process.env, XENSTORED_PATH: socket } })).stdout;
    assert.match(await perms(`/local/domain/0/backend/vif/${id}`), new RegExp(`^0 = "" [ .]*\\(n0,r${id}\\)$`, 'm'));
    assert.match(await perms(`/local/domain/${id}/device/vif`), new RegExp(`^0 = "" [ .]*\\(n${id},r0\\)$`, 'm'));
  });

  void it('the VMs\' devices work as in noxs: daytime answers on its vif', async () => {
    const { stdout } = await run('nc', ['-d', '-w', '3', '10.0.0.62', '13'], { timeout: 10_000 });
    assert.match(stdout, /^[A-Z][a-z]+day, [A-Z][a-z]+ \d{1,2}, \d{4} \d{2}:\d{2}:\d{2}-UTC\r?\n$/);
  });

  void it('refuses a name a running VM has (409 naming it) and leaves the store as it was', async () => {
    const before = await ls('/');
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'daytime', name: 'xs-2', cmdline: 'stay', devices: vif('10.0.0.69') } });
    assert.equal(r.status, 409, r.text);
    const e = (r.json as ApiErrorBody).error;
    assert.equal(e.field, 'name');
    assert.match(e.message, /a VM named "xs-2" already exists/);
    assert.deepEqual(await ls('/'), before);
  });

  void it('destroy removes each VM\'s entries, and only its own', async () => {
    await ok(d.socket, 'DELETE', `/v1/vms/${vms[1]!.id}`);
    assert.deepEqual(await domains(), ['0', String(vms[0]!.id), String(vms[2]!.id)]);
    const tree = await ls('/');
    assert.ok(![...tree.keys()].some((p) => p.startsWith(`/local/domain/${vms[1]!.id}/`) || p.includes(`/vif/${vms[1]!.id}/`) || p.includes(`/console/${vms[1]!.id}/`)));
    for (const vm of [vms[0]!, vms[2]!]) await ok(d.socket, 'DELETE', `/v1/vms/${vm.id}`);
    assert.deepEqual(await domains(), ['0']);
    const left = await ls('/');
    assert.deepEqual([...left.keys()].filter((p) => p.startsWith('/vm/') || p.startsWith('/libxl/') || p.startsWith('/local/domain/0/backend/')), []);
    // The name of a destroyed VM is free again, in the store too.
    const again = await ok<{ vm: Vm }>(d.socket, 'POST', '/v1/vms', { image: 'daytime', name: 'xs-2', cmdline: 'stay', devices: vif('10.0.0.62') }, 201);
    assert.equal((await ls(`/local/domain/${again.vm.id}`)).get(`/local/domain/${again.vm.id}/name`), 'xs-2');
    await ok(d.socket, 'DELETE', `/v1/vms/${again.vm.id}`);
    assert.deepEqual(await domains(), ['0']);
  });

  void it('the daemon\'s stop ends the store and the backend', async () => {
    const peers = processesOf(`${d.runtimeDir}/xenstored.sock`);
    assert.equal(peers.length, 2, JSON.stringify(peers));
    const exited = new Promise((r) => d.child.once('exit', r));
    d.child.kill('SIGTERM');
    await exited;
    for (let i = 0; i < 100 && processesOf(`${d.runtimeDir}/xenstored.sock`).length > 0; i++) await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(processesOf(`${d.runtimeDir}/xenstored.sock`), []);
  });
});
