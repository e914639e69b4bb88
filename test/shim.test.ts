// containerd-shim-lightvm-v1 driven by a real, private containerd through
// ctr: console output and exit statuses, task kill → 137 in ctr's events,
// pause/resume, two tasks on one server, containerd restarted with its tasks
// still there, the server killed with -9 and containerd's `delete` leaving
// no VM behind; lightvm image build archives imported by ctr and podman; and
// lightvm-oci under containerd's runc shim (ctr run --runc-binary).
// Skipped where containerd or ctr is not installed.
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { buildImage } from '../src/container/oci-image.js';
import { ok, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { guestImage, ROOT, sleep, tempDir } from './helpers.js';
import { have, ociWrapper } from './oci-helpers.js';

const SHIM_MAIN = join(ROOT, 'dist', 'shim', 'main.js');
const RT = ['--runtime', 'io.containerd.lightvm.v1'];
const skip = !have('containerd', '--version') ? 'containerd is not installed (scripts/install-peers.sh)' : !have('ctr', '--version') ? 'ctr is not installed' : false;

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

void describe('containerd with the LightVM shim (ctr)', { skip }, () => {
  let daemon: TestDaemon;
  let tmp: { dir: string; cleanup: () => void };
  let containerd: ChildProcess | undefined;
  let sock: string;
  let bin: string;
  let shimDir: string;
  let containerdLog = '';

  const ctr = (...args: string[]): Result => {
    const r = spawnSync('ctr', ['--address', sock, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  const running = async (): Promise<VmView[]> => (await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms')).vms.filter((v) => v.state !== 'exited');
  const servers = (): number[] => {
    const r = spawnSync('pgrep', ['-f', `${SHIM_MAIN} serve -socket ${shimDir}`], { encoding: 'utf8' });
    return r.stdout.trim().split('\n').filter(Boolean).map(Number);
  };

  async function startContainerd(): Promise<void> {
    const child = spawn('containerd', ['--config', join(tmp.dir, 'config.toml')], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, LIGHTVM_SOCKET: daemon.socket, LIGHTVM_SHIM_DIR: shimDir },
    });
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (containerdLog += s));
    child.stdout!.resume();
    containerd = child;
    const t0 = Date.now();
    while (spawnSync('ctr', ['--address', sock, 'version'], { stdio: 'ignore', timeout: 5000 }).status !== 0) {
      if (child.exitCode !== null) throw new Error(`containerd exited with ${child.exitCode}: ${containerdLog.slice(-2000)}`);
      if (Date.now() - t0 > 30_000) throw new Error(`containerd did not serve ${sock} within 30 s`);
      await sleep(100);
    }
  }

  async function stopContainerd(): Promise<void> {
    const c = containerd;
    containerd = undefined;
    if (!c || c.exitCode !== null) return;
    const gone = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await gone;
  }

  before(async () => {
    tmp = tempDir('shim');
    daemon = await startTestDaemon({ prefix: 'shim' });
    sock = join(tmp.dir, 'c.sock');
    bin = join(tmp.dir, 'bin');
    shimDir = join(tmp.dir, 's');
    mkdirSync(bin);
    const shim = join(bin, 'containerd-shim-lightvm-v1');
    writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" --no-warnings "${SHIM_MAIN}" "$@"\n`);
    chmodSync(shim, 0o755);
    writeFileSync(join(tmp.dir, 'config.toml'), [
      'version = 2', `root = "${tmp.dir}/root"`, `state = "${tmp.dir}/state"`, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`, '',
    ].join('\n'));
    await startContainerd();
    for (const g of ['hello', 'exit-status', 'sleeper']) {
      const file = join(tmp.dir, `${g}.tar`);
      writeFileSync(file, buildImage({ kernel: guestImage(g), tag: `lightvm/${g}:1` }).archive);
      const r = ctr('image', 'import', file);
      assert.equal(r.status, 0, r.stderr);
    }
  });

  after(async () => {
    if (containerd) {
      for (const t of ctr('task', 'ls', '-q').stdout.split('\n').filter(Boolean)) ctr('task', 'kill', '-s', 'SIGKILL', t);
      await sleep(300);
      for (const t of ctr('task', 'ls', '-q').stdout.split('\n').filter(Boolean)) ctr('task', 'rm', '-f', t);
      for (const c of ctr('c', 'ls', '-q').stdout.split('\n').filter(Boolean)) ctr('c', 'rm', c);
    }
    await stopContainerd();
    for (const pid of servers()) process.kill(pid, 'SIGKILL');
    // The overlay snapshots are mounted only while a runc container runs; the rest is files.
    spawnSync('sh', ['-c', `grep -o "${tmp.dir}[^ ]*" /proc/mounts | sort -r | xargs -r umount`]);
    await daemon?.stop();
    tmp?.cleanup();
  });

  void it('ctr run --rm: the guest\'s console, and its exit status as ctr\'s (0 and 5)', async () => {
    const r = ctr('run', '--rm', ...RT, 'docker.io/lightvm/hello:1', 'hello1');
    assert.equal(r.status, 0, r.stderr + containerdLog.slice(-2000));
    assert.equal(r.stdout, 'Hello from LightVM!\n');
    const e = ctr('run', '--rm', ...RT, 'docker.io/lightvm/exit-status:1', 'es5', '/unikernel.elf', '5');
    assert.equal(e.status, 5, e.stderr);
    assert.deepEqual(await running(), []);
    assert.equal(ctr('c', 'ls', '-q').stdout, '', 'ctr run --rm removed its containers');
  });

  void it('two tasks on one server; pause and resume; task kill -s SIGKILL → exit 137 in ctr events; delete', async () => {
    const events = spawn('ctr', ['--address', sock, 'events'], { stdio: ['ignore', 'pipe', 'ignore'] });
    let evText = '';
    events.stdout!.setEncoding('utf8').on('data', (s: string) => (evText += s));
    try {
      await sleep(300);
      for (const id of ['s1', 's2']) {
        const r = ctr('run', '-d', ...RT, 'docker.io/lightvm/sleeper:1', id, '/unikernel.elf', '60000');
        assert.equal(r.status, 0, r.stderr);
      }
      assert.equal(servers().length, 1, 'one shim server holds both tasks');
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

  void it('containerd restarted: its tasks are still there and still answer', async () => {
    await stopContainerd();
    await startContainerd();
    assert.match(ctr('task', 'ls').stdout, /s2\s+\d+\s+RUNNING/);
    assert.equal(ctr('task', 'pause', 's2').status, 0);
    assert.equal(ctr('task', 'resume', 's2').status, 0);
    assert.equal((await running()).length, 1);
  });

  void it('the shim server killed with -9: containerd\'s delete leaves no VM running', async () => {
    const [pid] = servers();
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
