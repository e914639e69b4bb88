// lightvm-oci, the OCI runtime: its runc-shaped commands against a real
// daemon, the daemon's VM lease that takes a VM down with its monitor, and
// real podman running LightVM containers through it (skipped without podman).
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, openSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { after, before, describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { vmNameFor } from '../src/container/names.js';
import { ok, openStream, request, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { guestImage, sleep, tempDir, waitFor } from './helpers.js';
import { have, makeBundle, OCI_BIN, OCI_MAIN, ociWrapper, rootfsTar } from './oci-helpers.js';

interface Result {
  status: number | null;
  stdout: string;
  stderr: string;
}

let daemon: TestDaemon;
let tmp: { dir: string; cleanup: () => void };
let root: string;

/** lightvm-oci with pipes, for commands that leave no process behind. */
function oci(...args: string[]): Result {
  const r = spawnSync(process.execPath, [OCI_MAIN, '--root', root, '--lightvm-socket', daemon.socket, ...args], { encoding: 'utf8', timeout: 30_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * The package's sh bin, which answers from the disk what it can and runs
 * OCI_MAIN otherwise; with `node: false` it has no node to run (exit 127).
 */
function ociSh(o: { node: boolean }, ...args: string[]): Result {
  const env = { ...process.env, LIGHTVM_NODE: o.node ? process.execPath : join(tmp.dir, 'no-node') };
  const r = spawnSync(OCI_BIN, ['--root', root, '--lightvm-socket', daemon.socket, ...args], { encoding: 'utf8', timeout: 30_000, env });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/**
 * lightvm-oci whose stdout and stderr are files: the monitor that create
 * starts inherits them (pipes would keep a synchronous caller waiting).
 */
async function ociToFile(out: string, ...args: string[]): Promise<Result> {
  const fd = openSync(out, 'w');
  try {
    const child = spawn(process.execPath, [OCI_MAIN, '--root', root, '--lightvm-socket', daemon.socket, ...args], { stdio: ['ignore', fd, fd] });
    const status = await new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    return { status, stdout: readFileSync(out, 'utf8'), stderr: '' };
  } finally {
    closeSync(fd);
  }
}

async function vms(): Promise<VmView[]> {
  return (await ok<{ vms: VmView[] }>(daemon.socket, 'GET', '/v1/vms')).vms;
}

interface State {
  ociVersion: string;
  id: string;
  pid: number;
  status: string;
  bundle: string;
  rootfs: string;
  created: string;
  annotations: Record<string, string>;
}

/** The one running VM, once the monitor has had it created. */
async function runningVm(): Promise<VmView> {
  const t0 = Date.now();
  for (;;) {
    const running = (await vms()).filter((v) => v.state === 'running');
    assert.ok(running.length <= 1, `more than one VM runs: ${running.map((v) => v.name).join(' ')}`);
    if (running[0]) return running[0];
    if (Date.now() - t0 > 10_000) throw new Error('no VM runs 10 s after start');
    await sleep(20);
  }
}

function state(id: string): State {
  const r = oci('state', id);
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as State;
}

before(async () => {
  tmp = tempDir('oci');
  root = join(tmp.dir, 'root');
  // Confined to its own directories (no --allow-path for the bundles): a
  // container's kernel is copied where the daemon may read it (F18).
  daemon = await startTestDaemon({ prefix: 'oci', confined: true });
});

after(async () => {
  await daemon?.stop();
  tmp?.cleanup();
});

void describe('lightvm-oci with a real daemon', () => {
  void it('create copies the kernel into the daemon\'s runtime directory, the one place a confined daemon reads it; delete removes the copy (F18)', async () => {
    const b = makeBundle(join(tmp.dir, 'kc'), 'hello');
    const c = await ociToFile(join(tmp.dir, 'kc.out'), 'create', '--bundle', b, 'kc');
    assert.equal(c.status, 0, c.stdout);
    const copy = join(daemon.runtimeDir, 'kernels', `${vmNameFor(resolve(root), 'kc')}.elf`);
    assert.deepEqual(readFileSync(copy), readFileSync(guestImage('hello')));
    assert.equal(statSync(copy).mode & 0o777, 0o600);
    assert.equal((JSON.parse(readFileSync(join(root, 'kc', 'state.json'), 'utf8')) as { kernel: string }).kernel, copy);
    const d = oci('delete', '--force', 'kc');
    assert.equal(d.status, 0, d.stderr);
    assert.ok(!existsSync(copy), 'delete removes the copy');
    assert.deepEqual(readdirSync(join(daemon.runtimeDir, 'kernels')), []);
  });

  void it('run: the guest\'s console on stdout, its exit status as ours', async () => {
    const b = makeBundle(join(tmp.dir, 'run5'), 'exit-status', { process: { args: ['/unikernel.elf', '5'] } });
    const r1 = await ociToFile(join(tmp.dir, 'run5.out'), 'run', '--bundle', b, 'run5');
    assert.equal(r1.status, 5, r1.stdout);
    const h = makeBundle(join(tmp.dir, 'hello'), 'hello');
    const r2 = await ociToFile(join(tmp.dir, 'hello.out'), 'run', '-b', h, 'hello1');
    assert.equal(r2.status, 0, r2.stdout);
    assert.match(r2.stdout, /Hello from LightVM!/);
    assert.deepEqual(readdirSync(root), [], 'run removes its container');
    assert.deepEqual((await vms()).filter((v) => v.state !== 'exited'), []);
  });

  void it('create, start, state, ps, pause, resume, kill, delete: runc\'s state machine and state JSON', async () => {
    const b = makeBundle(join(tmp.dir, 'sl'), 'sleeper', { process: { args: ['/unikernel.elf', '60000'] }, annotations: { 'org.lightvm.grace_ms': '200' } });
    const pidFile = join(tmp.dir, 'sl.pid');
    const c = await ociToFile(join(tmp.dir, 'sl.out'), 'create', '--bundle', b, '--pid-file', pidFile, 'sl');
    assert.equal(c.status, 0, c.stdout);
    const pid = Number(readFileSync(pidFile, 'utf8'));
    let s = state('sl');
    assert.deepEqual({ ...s, created: '' }, {
      ociVersion: '1.1.0', id: 'sl', pid, status: 'created', bundle: b, rootfs: join(b, 'rootfs'), created: '',
      annotations: { 'org.lightvm.grace_ms': '200' }, owner: '',
    });
    assert.ok(!Number.isNaN(Date.parse(s.created)));
    assert.equal((await vms()).length, 0, 'create runs nothing');
    assert.equal(oci('create', '--bundle', b, 'sl').stderr, 'lightvm-oci: container with id exists: sl\n');
    assert.equal(oci('start', 'sl').status, 0);
    assert.equal(state('sl').status, 'running');
    assert.match(oci('start', 'sl').stderr, /cannot start a container that is running: sl/);
    const vm = await runningVm();
    assert.match(vm.name, /^c-[0-9a-f]{24}$/);
    assert.equal(oci('ps', '--format', 'json', 'sl').stdout, `[${pid}]\n`);
    assert.equal(JSON.parse(oci('list', '--format', 'json').stdout).length, 1);
    assert.equal(oci('pause', 'sl').status, 0);
    assert.equal(state('sl').status, 'paused');
    assert.match(oci('pause', 'sl').stderr, /cannot pause container sl that is paused/);
    assert.equal(oci('resume', 'sl').status, 0);
    assert.equal(state('sl').status, 'running');
    assert.match(oci('delete', 'sl').stderr, /cannot delete container sl that is not stopped: running/);
    assert.equal(oci('kill', 'sl', 'TERM').status, 0);
    await waitFor('the container to stop', () => state('sl').status === 'stopped', 10_000);
    s = state('sl');
    assert.equal(s.pid, 0);
    assert.match(oci('kill', 'sl', '15').stderr, /container sl is not running/);
    assert.equal(oci('kill', '--all', 'sl', '9').status, 0, 'kill --all of a stopped container is no error');
    assert.equal(oci('delete', 'sl').status, 0);
    assert.match(oci('state', 'sl').stderr, /container sl does not exist/);
    assert.equal(oci('delete', '--force', 'sl').status, 0, 'delete --force of a missing container succeeds');
    assert.deepEqual((await vms()).map((v) => v.name), [], 'the monitor dropped its VM\'s record');
  });

  void it('the sh bin answers state, start and delete as main.js does: the same bytes and exit codes, created, running and stopped', async () => {
    // Annotations that would fool a careless reader of the record.
    const annotations = { 'org.lightvm.grace_ms': '200', 'x"monitorPid":1,': '"monitorStart":"7"} \\ \n', 'z': 'é' };
    const b = makeBundle(join(tmp.dir, 'shs'), 'sleeper', { process: { args: ['/unikernel.elf', '60000'] }, annotations });
    const c = await ociToFile(join(tmp.dir, 'shs.out'), 'create', '--bundle', b, 'shs');
    assert.equal(c.status, 0, c.stdout);
    // sh: the answer without Node; node: the sh bin running main.js.
    const same = (by: 'sh' | 'node', ...args: string[]): Result => {
      const n = oci(...args);
      const sh = ociSh({ node: by === 'node' }, ...args);
      assert.deepEqual(sh, n, `lightvm-oci ${args.join(' ')}: the sh bin (${by}) and main.js differ`);
      return sh;
    };
    assert.equal(JSON.parse(same('sh', 'state', 'shs').stdout).status, 'created');
    assert.equal(same('sh', '--version').status, 0);
    assert.match(same('node', 'state', 'nope').stderr, /container nope does not exist/);
    assert.equal(same('node', 'state', '../x').status, 1);
    assert.equal(ociSh({ node: false }, 'start', 'shs').status, 0);
    assert.ok(!existsSync(join(root, 'shs', 'exec.fifo')), 'start removed the fifo');
    await runningVm();
    assert.equal(JSON.parse(same('node', 'state', 'shs').stdout).status, 'running');
    assert.match(same('node', 'start', 'shs').stderr, /cannot start a container that is running: shs/);
    assert.match(same('node', 'delete', 'shs').stderr, /cannot delete container shs that is not stopped: running/);
    assert.equal(oci('kill', 'shs', 'TERM').status, 0);
    await waitFor('the container to stop', () => state('shs').status === 'stopped', 10_000);
    const st = JSON.parse(same('sh', 'state', 'shs').stdout) as State;
    assert.deepEqual({ pid: st.pid, status: st.status, annotations: st.annotations }, { pid: 0, status: 'stopped', annotations });
    const kernel = (JSON.parse(readFileSync(join(root, 'shs', 'state.json'), 'utf8')) as { kernel: string }).kernel;
    assert.ok(existsSync(kernel));
    assert.deepEqual(ociSh({ node: false }, 'delete', 'shs'), { status: 0, stdout: '', stderr: '' });
    assert.ok(!existsSync(join(root, 'shs')) && !existsSync(kernel), 'delete removed the record and the kernel copy');
    assert.match(same('node', 'delete', 'shs').stderr, /container shs does not exist/);
    assert.equal(same('node', 'delete', '--force', 'shs').status, 0);

    // delete --force of a running one: its VM destroyed, its monitor killed.
    const c2 = await ociToFile(join(tmp.dir, 'shf.out'), 'create', '--bundle', b, 'shf');
    assert.equal(c2.status, 0, c2.stdout);
    assert.equal(ociSh({ node: false }, 'start', 'shf').status, 0);
    const vm = await runningVm();
    const pid = state('shf').pid;
    assert.deepEqual(ociSh({ node: false }, 'delete', '--force', 'shf'), { status: 0, stdout: '', stderr: '' });
    assert.ok(!(await vms()).some((v) => v.name === vm.name && v.state === 'running'), 'the VM is gone');
    await waitFor('the monitor to die', () => { try { process.kill(pid, 0); return false; } catch { return true; } }, 10_000);
    assert.ok(!existsSync(join(root, 'shf')));
  });

  void it('kill 9 ends the VM at once; a killed container exits 137', async () => {
    const b = makeBundle(join(tmp.dir, 'k9'), 'sleeper', { process: { args: ['/unikernel.elf', '60000'] } });
    const out = join(tmp.dir, 'k9.out');
    const fd = openSync(out, 'w');
    const child = spawn(process.execPath, [OCI_MAIN, '--root', root, '--lightvm-socket', daemon.socket, 'run', '-b', b, 'k9'], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const code = new Promise<number | null>((r) => child.once('exit', (c) => r(c)));
    await waitFor('k9 to run', () => existsSync(join(root, 'k9')) && oci('state', 'k9').stdout.includes('"running"'), 10_000);
    await runningVm();
    const r = oci('kill', 'k9', 'KILL');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(await code, 137, readFileSync(out, 'utf8'));
    assert.deepEqual((await vms()).filter((v) => v.state !== 'exited'), []);
  });

  void it('a monitor killed with -9 takes its VM with it (the daemon\'s lease)', async () => {
    const b = makeBundle(join(tmp.dir, 'lease'), 'sleeper', { process: { args: ['/unikernel.elf', '60000'] } });
    assert.equal((await ociToFile(join(tmp.dir, 'lease.out'), 'create', '-b', b, 'lease')).status, 0);
    assert.equal(oci('start', 'lease').status, 0);
    const pid = state('lease').pid;
    const { name } = await runningVm();
    process.kill(pid, 'SIGKILL');
    const t1 = Date.now();
    for (;;) {
      // Destroyed: its record is dropped.
      const vm = (await vms()).find((v) => v.name === name);
      if (!vm) break;
      if (Date.now() - t1 > 5000) throw new Error(`VM ${name} still ${vm.state} 5 s after its monitor died`);
      await sleep(20);
    }
    assert.equal(state('lease').status, 'stopped');
    assert.equal(oci('delete', 'lease').status, 0);
  });

  void it('bad input: one line naming the file and field, exit 1, nothing left; the JSON log for containerd', () => {
    const b = makeBundle(join(tmp.dir, 'bad'), 'hello', { process: { args: ['/config.json'] } });
    writeFileSync(join(b, 'rootfs', 'config.json'), '{}');
    const log = join(tmp.dir, 'log.json');
    const r = spawnSync(process.execPath, [OCI_MAIN, '--root', root, '--log', log, '--log-format', 'json', 'create', '--bundle', b, 'bad'], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.equal(r.stderr, `lightvm-oci: ${join(b, 'config.json')}: process.args[0]: /config.json in the rootfs: not an ELF file (a LightVM container's process is a unikernel image)\n`);
    const last = JSON.parse(readFileSync(log, 'utf8').trim().split('\n').pop()!) as { level: string; msg: string; time: string };
    assert.equal(last.level, 'error');
    assert.match(last.msg, /process\.args\[0\]: \/config\.json in the rootfs: not an ELF file/);
    assert.ok(!Number.isNaN(Date.parse(last.time)));
    assert.ok(!existsSync(join(root, 'bad')));
    // A symlink may not lead out of the rootfs: /etc/hostname is looked up in the rootfs.
    const esc = makeBundle(join(tmp.dir, 'esc'), 'hello', { process: { args: ['../../../../../../etc/hostname'] } });
    assert.match(oci('create', '-b', esc, 'esc').stderr, /process\.args\[0\]: \.\.\/\.\.\/\.\.\/\.\.\/\.\.\/\.\.\/etc\/hostname is not in the rootfs \(ENOENT at \/etc\)/);
    const mem = makeBundle(join(tmp.dir, 'mem'), 'hello', { linux: { resources: { memory: { limit: 1024 } } } });
    assert.match(oci('create', '-b', mem, 'mem').stderr, /config\.json: linux\.resources\.memory\.limit: 1024 bytes is outside the 2-3072 MiB/);
    assert.match(oci('create', '-b', join(tmp.dir, 'nowhere'), 'x').stderr, /nowhere\/config\.json: cannot read the bundle's config: ENOENT/);
    assert.match(oci('create', '-b', b, 'a/b').stderr, /invalid container id "a\/b"/);
    const tty = makeBundle(join(tmp.dir, 'tty'), 'hello', { process: { args: ['/unikernel.elf'], terminal: true } });
    assert.match(oci('create', '-b', tty, 'tty').stderr, /tty\/config\.json: process\.terminal is true: create needs --console-socket/);
    assert.match(oci('create', '-b', tty, '--console-socket', join(tmp.dir, 'no-console.sock'), 'tty').stderr, /connect failed: ENOENT \(.*no-console\.sock\)/);
    assert.match(oci('kill', 'nosuch').stderr, /container nosuch does not exist/);
    assert.match(oci('create', '--bundel', b, 'x').stderr, /create: unknown flag --bundel/);
    assert.match(oci('exec', 'x').stderr, /exec is not supported by lightvm-oci/);
    const dead = spawnSync(process.execPath, [OCI_MAIN, '--root', root, '--lightvm-socket', join(tmp.dir, 'no.sock'), 'create', '-b', makeBundle(join(tmp.dir, 'h2'), 'hello'), 'h2'], { encoding: 'utf8' });
    assert.match(dead.stderr, /the daemon is not running \(no socket at .*no\.sock\)/);
    assert.deepEqual(readdirSync(root), []);
    assert.equal(oci('--version').stdout.split('\n')[0], 'lightvm-oci version 0.1.0');
    assert.deepEqual(Object.keys(JSON.parse(oci('features').stdout) as object).slice(0, 2), ['ociVersionMin', 'ociVersionMax']);
  });
});

void describe('the daemon\'s VM lease', () => {
  void it('a lease nobody takes within lease_ms destroys the VM; a taken one holds it until its connection closes', async () => {
    const sleeper = guestImage('sleeper');
    await ok(daemon.socket, 'POST', '/v1/vms', { image: sleeper, name: 'lapse', cmdline: '60000', lease_ms: 200 }, 201);
    await sleep(800);
    // Destroyed, and its record dropped.
    assert.equal((await request(daemon.socket, 'GET', '/v1/vms/lapse')).status, 404);
    assert.match(daemon.log(), /lease not taken: VM destroyed/);

    await ok(daemon.socket, 'POST', '/v1/vms', { image: sleeper, name: 'held', cmdline: '60000', lease_ms: 200 }, 201);
    const holder = await openStream(daemon.socket, '/v1/vms/held/console?follow=true&lease=true');
    assert.equal(holder.status, 200);
    const second = await request(daemon.socket, 'GET', '/v1/vms/held/console?follow=true&lease=true');
    assert.equal(second.status, 409);
    assert.match(second.text, /its lease is already held/);
    await sleep(600);
    assert.equal((await ok<{ vm: VmView }>(daemon.socket, 'GET', '/v1/vms/held')).vm.state, 'running', 'a held lease keeps the VM');
    holder.close();
    const t0 = Date.now();
    while ((await request(daemon.socket, 'GET', '/v1/vms/held')).status !== 404) {
      if (Date.now() - t0 > 5000) throw new Error('VM "held" still runs 5 s after its lease holder left');
      await sleep(20);
    }
    await ok(daemon.socket, 'POST', '/v1/vms', { image: sleeper, name: 'nolease', cmdline: '1' }, 201);
    const refused = await request(daemon.socket, 'GET', '/v1/vms/nolease/console?follow=true&lease=true');
    assert.equal(refused.status, 409);
    assert.match(refused.text, /was not created with lease_ms/);
    await ok(daemon.socket, 'DELETE', '/v1/vms/nolease');
  });
});

const podmanSkip = !have('podman') ? 'podman is not installed (scripts/install-peers.sh)' : !have('conmon') ? 'conmon is not installed' : false;

void describe('podman with --runtime lightvm-oci', { skip: podmanSkip }, () => {
  let P: string[];
  const U = ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=32768:32768', '--network', 'none'];
  const podman = (...args: string[]): Result => {
    const r = spawnSync('podman', [...P, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };

  before(() => {
    const pm = join(tmp.dir, 'podman');
    // Private storage and state; cgroupfs (no systemd here, hybrid cgroups); file events.
    P = ['--root', join(pm, 'root'), '--runroot', join(pm, 'run'), '--tmpdir', join(pm, 'tmp'), '--cgroup-manager=cgroupfs', '--events-backend=file',
      '--runtime', ociWrapper(tmp.dir, daemon.socket)];
    for (const g of ['hello', 'exit-status', 'sleeper', 'echo-cmdline']) {
      const r = podman('import', '-q', '--change', 'ENTRYPOINT ["/unikernel.elf"]', rootfsTar(tmp.dir, g), `lightvm/${g}:1`);
      assert.equal(r.status, 0, r.stderr);
    }
  });

  after(() => {
    if (!P) return;
    podman('rm', '-af');
    podman('rmi', '-af');
    // containers/storage keeps its overlay directory mounted.
    spawnSync('umount', [join(tmp.dir, 'podman', 'root', 'overlay')], { stdio: 'ignore' });
  });

  void it('run --rm prints the guest\'s output and returns its status', async () => {
    const r = podman('run', '--rm', ...U, 'lightvm/hello:1');
    assert.equal(r.status, 0, r.stderr);
    assert.equal(r.stdout, 'Hello from LightVM!\n');
    const e = podman('run', '--rm', ...U, 'lightvm/exit-status:1', '7');
    assert.equal(e.status, 7, e.stderr);
    assert.deepEqual((await vms()).filter((v) => v.state !== 'exited'), []);
  });

  void it('run -t: the guest\'s console through the pty whose master went to conmon over --console-socket', () => {
    const r = podman('run', '--rm', '-t', ...U, 'lightvm/echo-cmdline:1', 'x=1', 'y=2');
    assert.equal(r.status, 0, r.stderr);
    // The pty's line discipline turns the guest's \n into \r\n.
    assert.equal(r.stdout, 'cmdline=[x=1 y=2]\r\n');
  });

  void it('run -d, then podman stop: running while it runs, exited after, no VM left', async () => {
    const r = podman('run', '-d', '--name', 'sl', ...U, 'lightvm/sleeper:1', '60000');
    assert.equal(r.status, 0, r.stderr);
    await sleep(500);
    assert.equal(podman('inspect', 'sl', '--format', '{{.State.Status}}').stdout.trim(), 'running');
    assert.equal((await vms()).filter((v) => v.state === 'running').length, 1);
    const s = podman('stop', '-t', '5', 'sl');
    assert.equal(s.status, 0, s.stderr);
    assert.equal(podman('inspect', 'sl', '--format', '{{.State.Status}}').stdout.trim(), 'exited');
    // The guest takes the shutdown request (SIGTERM) and halts with 0, as a process that handles it.
    assert.equal(podman('inspect', 'sl', '--format', '{{.State.ExitCode}}').stdout.trim(), '0');
    assert.equal(podman('rm', 'sl').status, 0);
    assert.deepEqual((await vms()).filter((v) => v.state !== 'exited'), []);
  });
});
