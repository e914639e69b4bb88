// containerd-shim-lightvm-v1 driven by a real, private containerd through
// ctr: console output and exit statuses, task kill → 137 in ctr's events,
// pause/resume, two tasks on one server, containerd restarted with its tasks
// still there, the server killed with -9 and containerd's `delete` leaving
// no VM behind; lightvm image build archives imported by ctr and podman; and
// lightvm-oci under containerd's runc shim (ctr run --runc-binary).
// Skipped where containerd or ctr is not installed.
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { basename, join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { serverSocket } from '../src/shim/address.js';
import { DeleteResponseSchema } from '../src/shim/gen/task_pb.js';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildImage } from '../src/container/oci-image.js';
import { ok, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { guestImage, sleep, tempDir } from './helpers.js';
import { cleanContainerd, have, ociWrapper, privateContainerd, SHIM_BIN, type Ctr, type PrivateContainerd } from './oci-helpers.js';

const RT = ['--runtime', 'io.containerd.lightvm.v1'];
const skip = !have('containerd', '--version') ? 'containerd is not installed (scripts/install-peers.sh)' : !have('ctr', '--version') ? 'ctr is not installed' : false;

void describe('containerd with the LightVM shim (ctr)', { skip }, () => {
  let daemon: TestDaemon;
  let tmp: { dir: string; cleanup: () => void };
  let c: PrivateContainerd;
  const ctr = (...args: string[]): Ctr => c.ctr(...args);
  const running = async (): Promise<VmView[]> => (await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms')).vms.filter((v) => v.state !== 'exited');

  before(async () => {
    tmp = tempDir('shim');
    daemon = await startTestDaemon({ prefix: 'shim' });
    c = privateContainerd(tmp.dir, daemon.socket);
    await c.start();
    for (const g of ['hello', 'exit-status', 'sleeper']) {
      const file = join(tmp.dir, `${g}.tar`);
      writeFileSync(file, buildImage({ kernel: guestImage(g), tag: `lightvm/${g}:1` }).archive);
      const r = ctr('image', 'import', file);
      assert.equal(r.status, 0, r.stderr);
    }
  });

  after(async () => {
    if (c) await cleanContainerd(c, tmp.dir);
    await daemon?.stop();
    tmp?.cleanup();
  });

  void it('ctr run --rm: the guest\'s console, and its exit status as ctr\'s (0 and 5)', async () => {
    const r = ctr('run', '--rm', ...RT, 'docker.io/lightvm/hello:1', 'hello1');
    assert.equal(r.status, 0, r.stderr + c.log().slice(-2000));
    assert.equal(r.stdout, 'Hello from LightVM!\n');
    const e = ctr('run', '--rm', ...RT, 'docker.io/lightvm/exit-status:1', 'es5', '/unikernel.elf', '5');
    assert.equal(e.status, 5, e.stderr);
    assert.deepEqual(await running(), []);
    assert.equal(ctr('c', 'ls', '-q').stdout, '', 'ctr run --rm removed its containers');
  });

  void it('two tasks on one server; pause and resume; task kill -s SIGKILL → exit 137 in ctr events; delete', async () => {
    const events = spawn('ctr', ['--address', c.sock, 'events'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let evText = '';
    events.stdout!.setEncoding('utf8').on('data', (s: string) => (evText += s));
    try {
      await sleep(300);
      for (const id of ['s1', 's2']) {
        const r = ctr('run', '-d', ...RT, 'docker.io/lightvm/sleeper:1', id, '/unikernel.elf', '60000');
        assert.equal(r.status, 0, r.stderr);
      }
      assert.equal(c.servers().length, 1, 'one shim server holds both tasks');
      let ls = ctr('task', 'ls').stdout;
      assert.match(ls, /s1\s+\d+\s+RUNNING/);
      assert.match(ls, /s2\s+\d+\s+RUNNING/);
      assert.equal((await running()).length, 2);
      assert.equal(ctr('task', 'pause', 's1').status, 0);
      assert.match(ctr('task', 'ls').stdout, /s1\s+\d+\s+PAUSED/);
      assert.equal((await running()).filter((v) => v.state === 'paused').length, 1, 'the VM itself is paused');
      assert.equal(ctr('task', 'resume', 's1').status, 0);
      assert.match(ctr('task', 'ls').stdout, /s1\s+\d+\s+RUNNING/);
      assert.equal(ctr('task', 'kill', '-s', 'SIGKILL', 's1').status, 0);
      const t0 = Date.now();
      while (!/\/tasks\/exit .*"container_id":"s1".*"exit_status":137/.test(evText)) {
        if (Date.now() - t0 > 10_000) throw new Error(`no /tasks/exit 137 for s1 in ctr events: ${evText}`);
        await sleep(50);
      }
      for (const topic of ['/tasks/create', '/tasks/start', '/tasks/paused', '/tasks/resumed']) assert.match(evText, new RegExp(`${topic} .*"container_id":"s1"`));
      ls = ctr('task', 'ls').stdout;
      assert.match(ls, /s1\s+\d+\s+STOPPED/);
      assert.equal(ctr('task', 'rm', 's1').status, 0);
      assert.equal(ctr('c', 'rm', 's1').status, 0);
      assert.equal((await running()).length, 1);
    } finally {
      events.kill();
    }
  });

  void it('ctr task metrics: the VM\'s memory (resident and its size) and CPU time, as cgroups v1 metrics', async () => {
    const table = ctr('task', 'metrics', 's2');
    assert.equal(table.status, 0, table.stderr);
    const value = (name: string): number => {
      const m = new RegExp(`^${name.replace(/\./g, '\\.')}\\s+(\\d+)`, 'm').exec(table.stdout);
      assert.ok(m, `no ${name} in ctr task metrics:\n${table.stdout}`);
      return Number(m[1]);
    };
    // The sleeper has the default 4 MiB; a booted guest has touched some of it.
    assert.equal(value('memory.limit_in_bytes'), 4 * 1048576);
    const used = value('memory.usage_in_bytes');
    assert.ok(used > 0 && used <= 4 * 1048576 + 65536, `memory.usage_in_bytes ${used}`);
    const cpu = value('cpuacct.usage');
    assert.ok(cpu > 0, `cpuacct.usage ${cpu}`);
    const { vms } = await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms');
    const vm = vms.find((v) => v.state === 'running')!;
    const { stats } = await ok<{ stats: { cpu_ns: number; resident_kib: number } }>(daemon.socket, 'GET', `/v1/vms/${vm.name}/stats`);
    assert.ok(stats.cpu_ns >= cpu, `the daemon's cpu_ns ${stats.cpu_ns} is behind what ctr showed before (${cpu})`);
    const json = ctr('task', 'metrics', '--format', 'json', 's2');
    assert.equal(json.status, 0, json.stderr);
    const m = JSON.parse(json.stdout) as { memory: { usage: { usage: number; limit: number } }; cpu: { usage: { total: number; per_cpu: number[] } } };
    assert.equal(m.memory.usage.limit, 4 * 1048576);
    assert.equal(m.cpu.usage.per_cpu.length, 1, 'one vCPU');
    assert.ok(m.cpu.usage.total >= cpu, 'CPU time only grows');
    assert.notEqual(ctr('task', 'metrics', 'nosuch').status, 0);
  });

  void it('the package bin answers start and delete in sh while the server is up (no Node: $LIGHTVM_NODE names nothing)', () => {
    const bundle = join(tmp.dir, 'state', 'io.containerd.runtime.v2.task', 'default', 's2');
    assert.match(readFileSync(join(bundle, 'lightvm-vm'), 'utf8'), /^c-[0-9a-f]{24}\n$/, 'a running task\'s bundle holds its VM marker');
    const env = { ...process.env, LIGHTVM_SOCKET: daemon.socket, LIGHTVM_SHIM_DIR: c.shimDir, LIGHTVM_NODE: '/nonexistent/node' };
    const shim = (cwd: string, ...args: string[]): { status: number | null; stdout: Buffer } => {
      const r = spawnSync(SHIM_BIN, ['-namespace', 'default', '-address', c.sock, '-publish-binary', 'containerd', '-id', 'x', ...args], { cwd, env });
      return { status: r.status, stdout: r.stdout };
    };
    const cwd = join(tmp.dir, 'fake-bundle');
    mkdirSync(cwd, { recursive: true });
    const start = shim(cwd, 'start');
    assert.equal(start.status, 0, 'start went to Node');
    assert.equal(start.stdout.toString(), readFileSync(join(bundle, 'address'), 'utf8'), 'the address containerd got for s2');
    assert.equal(readFileSync(join(cwd, 'address'), 'utf8'), start.stdout.toString());
    const del = shim(cwd, '-bundle', cwd, 'delete');
    assert.equal(del.status, 0, 'delete without a VM went to Node');
    const res = fromBinary(DeleteResponseSchema, del.stdout);
    assert.equal(res.exitStatus, 137);
    assert.ok(Math.abs(Number(res.exitedAt!.seconds) - Date.now() / 1000) < 60, `exited_at ${res.exitedAt!.seconds}`);
    // With a VM to destroy, no bundle named, or a flag it does not know, Node answers: here there is none (127).
    assert.equal(shim(cwd, 'delete').status, 127);
    writeFileSync(join(cwd, 'lightvm-vm'), 'c-0\n');
    assert.equal(shim(cwd, '-bundle', cwd, 'delete').status, 127);
    assert.equal(shim(cwd, '-debug', '-unknown', 'start').status, 127);
  });

  void it('the sh start does not trust a pid file naming another process (pid reused after a kill -9)', async () => {
    const dir = join(tmp.dir, 'stale');
    mkdirSync(dir, { recursive: true });
    const env = { ...process.env, LIGHTVM_SOCKET: daemon.socket, LIGHTVM_SHIM_DIR: dir, LIGHTVM_NODE: '/nonexistent/node' };
    const args = ['-namespace', 'default', '-address', '/stale/c.sock', '-id', 'x', 'start'];
    // No server: Node's (127). Then a listening socket and pid files under the name main.js computes.
    assert.equal(spawnSync(SHIM_BIN, args, { cwd: dir, env }).status, 127);
    const sock = join(dir, basename(serverSocket('/stale/c.sock', daemon.socket)));
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(sock, r));
    try {
      const stat = readFileSync('/proc/self/stat', 'utf8');
      const since = stat.slice(stat.lastIndexOf(') ') + 2).split(' ')[19];
      writeFileSync(sock.replace(/\.sock$/, '.pid'), `${process.pid} ${Number(since) + 1}\n`);
      assert.equal(spawnSync(SHIM_BIN, args, { cwd: dir, env }).status, 127, 'a wrong start time is not our server');
      writeFileSync(sock.replace(/\.sock$/, '.pid'), `${process.pid} ${since}\n`);
      const r = spawnSync(SHIM_BIN, args, { cwd: dir, env, encoding: 'utf8' });
      assert.deepEqual([r.status, r.stdout], [0, `unix://${sock}`], 'the same pid and start time are');
      assert.ok(existsSync(join(dir, 'address')));
    } finally {
      srv.close();
    }
  });

  void it('containerd restarted: its tasks are still there and still answer', async () => {
    await c.stop();
    await c.start();
    assert.match(ctr('task', 'ls').stdout, /s2\s+\d+\s+RUNNING/);
    assert.equal(ctr('task', 'pause', 's2').status, 0);
    assert.equal(ctr('task', 'resume', 's2').status, 0);
    assert.equal((await running()).length, 1);
  });

  void it('the shim server killed with -9: containerd\'s delete leaves no VM running', async () => {
    const [pid] = c.servers();
    assert.ok(pid);
    process.kill(pid, 'SIGKILL');
    const t0 = Date.now();
    while ((await running()).length > 0 || ctr('task', 'ls', '-q').stdout !== '') {
      if (Date.now() - t0 > 15_000) throw new Error(`after the shim's death: VMs ${JSON.stringify(await running())}, tasks ${ctr('task', 'ls').stdout}`);
      await sleep(100);
    }
    ctr('c', 'rm', 's2');
  });

  void it('ctr run --runc-binary lightvm-oci: the OCI runtime under containerd\'s runc shim', async () => {
    const r = ctr('run', '--rm', '--runc-binary', ociWrapper(tmp.dir, daemon.socket), 'docker.io/lightvm/exit-status:1', 'oci1', '/unikernel.elf', '3');
    assert.equal(r.status, 3, r.stderr);
    const h = ctr('run', '--rm', '--runc-binary', ociWrapper(tmp.dir, daemon.socket), 'docker.io/lightvm/hello:1', 'oci2');
    assert.equal(h.stdout, 'Hello from LightVM!\n', h.stderr);
    assert.deepEqual(await running(), []);
  });

  void it('docker with --add-runtime lightvm=lightvm-oci (dockerd on this containerd): docker load, docker run --rm', { skip: have('dockerd', '--version') ? false : 'dockerd (docker.io) is not installed' }, async () => {
    const dk = join(tmp.dir, 'dk');
    const sockD = join(dk, 'd.sock');
    const dockerd = spawn('dockerd', ['--containerd', c.sock, '--data-root', join(dk, 'data'), '--exec-root', join(dk, 'exec'), '-H', `unix://${sockD}`,
      '--pidfile', join(dk, 'd.pid'), '--iptables=false', '--ip-masq=false', '--bridge=none', '--add-runtime', `lightvm=${ociWrapper(tmp.dir, daemon.socket)}`],
    { stdio: ['ignore', 'ignore', 'pipe'] });
    let log = '';
    dockerd.stderr!.setEncoding('utf8').on('data', (x: string) => (log += x));
    const docker = (...args: string[]): Ctr => {
      const r = spawnSync('docker', ['-H', `unix://${sockD}`, ...args], { encoding: 'utf8', timeout: 60_000 });
      return { status: r.status, stdout: r.stdout, stderr: r.stderr };
    };
    try {
      const t0 = Date.now();
      while (docker('version').status !== 0) {
        if (dockerd.exitCode !== null || Date.now() - t0 > 30_000) throw new Error(`dockerd did not start: ${log.slice(-1500)}`);
        await sleep(200);
      }
      for (const g of ['hello', 'exit-status']) assert.equal(docker('load', '-i', join(tmp.dir, `${g}.tar`)).status, 0);
      const h = docker('run', '--rm', '--runtime', 'lightvm', '--network', 'none', 'lightvm/hello:1');
      assert.equal(h.status, 0, h.stderr);
      assert.equal(h.stdout, 'Hello from LightVM!\n');
      const e = docker('run', '--rm', '--runtime', 'lightvm', '--network', 'none', 'lightvm/exit-status:1', '4');
      assert.equal(e.status, 4, e.stderr);
      assert.deepEqual(await running(), []);
    } finally {
      const gone = new Promise((r) => dockerd.once('exit', r));
      dockerd.kill('SIGTERM');
      await gone;
    }
  });

  void it('lightvm image build: podman load takes the same archive', { skip: have('podman') ? false : 'podman is not installed' }, () => {
    const pm = join(tmp.dir, 'pm');
    const P = ['--root', join(pm, 'root'), '--runroot', join(pm, 'run'), '--tmpdir', join(pm, 'tmp'), '--cgroup-manager=cgroupfs', '--events-backend=file'];
    try {
      const r = spawnSync('podman', [...P, 'load', '-i', join(tmp.dir, 'hello.tar')], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout, /Loaded image: docker\.io\/lightvm\/hello:1/);
      const cfg = spawnSync('podman', [...P, 'image', 'inspect', 'lightvm/hello:1', '--format', '{{json .Config.Entrypoint}}'], { encoding: 'utf8' });
      assert.equal(cfg.stdout.trim(), '["/unikernel.elf"]');
    } finally {
      spawnSync('podman', [...P, 'rmi', '-af'], { stdio: 'ignore' });
      spawnSync('umount', [join(pm, 'root', 'overlay')], { stdio: 'ignore' });
    }
  });
});
