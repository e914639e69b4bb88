// lightvmd as a process: how it starts (modes of what it creates), what
// GET /v1/host says, how it stops (lightvm daemon stop), what the CLI says
// when no daemon is there, and what happens to its executor processes when
// it stops, is killed, or meets another daemon on the same runtime directory.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import {
  ALLOW_TEST_PATHS, CLI, executorProcesses, fdTargets, isAlive, lightvm, ok, openStream, outLines, processesOf, request, settle, startTestDaemon, until,
  type HostInfo, type TestDaemon, type VmView,
} from './daemon-helpers.js';
import { craftElf, ROOT, sleep, waitFor, within } from './helpers.js';

const mode = (path: string): number => statSync(path).mode & 0o777;
const octal = (m: number): string => `0${m.toString(8)}`;

async function waitGone(pid: number, what: string, ms = 10_000): Promise<void> {
  await waitFor(what, () => !isAlive(pid), ms);
}

void describe('lightvmd start', () => {
  let d: TestDaemon;
  before(async () => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run npm run build first`);
    // Under umask 000 every mode below must be set by the daemon, not inherited.
    d = await startTestDaemon({ subdir: true, umask: '000', args: ['--pool', '4:2'] });
  });
  after(async () => {
    await d.stop();
  });

  void it('creates its runtime directory 0700 and its socket 0600, even under umask 000', async () => {
    const st = statSync(d.socket);
    assert.ok(st.isSocket(), `${d.socket} is not a socket`);
    assert.equal(octal(mode(d.socket)), '0600', 'API socket');
    assert.equal(octal(mode(d.runtimeDir)), '0700', 'runtime directory');
    const exDir = join(d.runtimeDir, 'executors');
    assert.equal(octal(mode(exDir)), '0700', 'executors directory');
    await settle(d.socket, d.runtimeDir);
    const files = readdirSync(exDir);
    assert.ok(files.some((f) => f.endsWith('.sock')), `no executor socket in ${files.join(', ')}`);
    for (const f of files) {
      assert.equal(octal(mode(join(exDir, f))), '0600', `executors/${f}`);
    }
  });

  void it('GET /v1/host: its own pid, the version, executors that are real executor-main processes, the pool', async () => {
    const t0 = Date.now();
    let h: HostInfo;
    for (;;) {
      h = await d.host();
      if ((h.pools[0]?.depth === 2 && h.pools[0].warm === 2) || Date.now() - t0 > 15_000) break;
      await sleep(50);
    }
    assert.equal(h.pid, d.pid);
    assert.equal(h.version, '0.1.0');
    assert.equal(h.vms, 0);
    assert.equal(h.vms_per_executor, 500);
    assert.ok(h.uptime_s >= 0 && h.uptime_s < 120, String(h.uptime_s));
    assert.ok(h.daemon_rss_kib > 1000, String(h.daemon_rss_kib));
    assert.deepEqual(h.pools, [{ memory_mib: 4, target: 2, depth: 2, warm: 2 }]);
    assert.ok(h.executors.length >= 1, JSON.stringify(h));
    const procs = executorProcesses(d.runtimeDir);
    for (const ex of h.executors) {
      const p = procs.find((x) => x.pid === ex.pid);
      assert.ok(p, `executor ${ex.id} (pid ${ex.pid}) is not an executor-main process of ${d.runtimeDir}`);
      assert.ok(p.cmd.includes(`--id ${ex.id}`), p.cmd);
      assert.equal(ex.vms, 0);
      // Its threads carry names an operator can read in top -H: the one that runs the VMs, and
      // (on the executor holding the pool) the shell preparer.
      const threads = readdirSync(`/proc/${ex.pid}/task`).map((t) => readFileSync(`/proc/${ex.pid}/task/${t}/comm`, 'utf8').trim());
      assert.ok(threads.includes(`lvm-executor-${ex.id}`), `executor ${ex.id} threads: ${threads.join(', ')}`);
      if (ex.shells > 0) assert.ok(threads.includes('lvm-preparer'), `executor ${ex.id} threads: ${threads.join(', ')}`);
    }
    assert.equal(h.executors.reduce((a, e) => a + e.shells, 0), 2);
    // It never runs a vCPU itself: the daemon holds no KVM descriptor.
    const kvm = fdTargets(d.pid).filter((t) => t.includes('kvm'));
    assert.deepEqual(kvm, [], 'the daemon process holds KVM descriptors');
  });
});

void describe('lightvm daemon stop', () => {
  void it('lightvm daemon stop --runtime-dir X: exit 0, the daemon gone, its socket removed, its executors gone', async () => {
    const d = await startTestDaemon({ args: ['--pool', '4:1'] });
    try {
      const vm = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'c' }, 201);
      assert.equal(vm.vm.state, 'running');
      await settle(d.socket, d.runtimeDir);
      const executors = executorProcesses(d.runtimeDir);
      assert.ok(executors.length >= 1);
      const r = await lightvm(['daemon', 'stop', '--runtime-dir', d.runtimeDir]);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, '');
      assert.equal(r.stderr, '');
      // daemon stop returns once the daemon's process is gone.
      assert.ok(!isAlive(d.pid), 'daemon still alive after daemon stop returned');
      assert.ok(!existsSync(d.socket), 'socket left behind');
      for (const ex of executors) await waitGone(ex.pid, `executor ${ex.pid} to exit`, 5000);
      const socks = readdirSync(join(d.runtimeDir, 'executors')).filter((f) => f.endsWith('.sock'));
      assert.deepEqual(socks, [], 'executor sockets left behind');
      assert.deepEqual(processesOf(d.runtimeDir), []);
      assert.doesNotMatch(d.log(), /"level":(50|60)/, 'the daemon logged an error while stopping');

      // Its VMs were saved; the next daemon on the same directory brings them back.
      const next = await startTestDaemon({ runtimeDir: d.runtimeDir, args: ['--pool', '4:1'] });
      try {
        const back = await ok<{ vm: VmView }>(next.socket, 'GET', '/v1/vms/c');
        assert.equal(back.vm.state, 'running');
        assert.equal(back.vm.id, vm.vm.id);
        const c1 = (await request(next.socket, 'GET', '/v1/vms/c/console')).text;
        await sleep(200);
        assert.ok((await request(next.socket, 'GET', '/v1/vms/c/console')).text.length > c1.length, 'the restored counter does not count');
      } finally {
        await next.stop();
      }
    } finally {
      await d.stop();
    }
  });

  void it('lightvm daemon --socket S stop --destroy (options either side): the VMs end, the next daemon has none', async () => {
    const d = await startTestDaemon({ args: ['--pool', '4:1'] });
    try {
      await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'gone' }, 201);
      await settle(d.socket, d.runtimeDir);
      const r = await lightvm(['daemon', '--socket', d.socket, 'stop', '--destroy']);
      assert.equal(r.code, 0, r.stderr);
      assert.ok(!isAlive(d.pid));
      assert.ok(!existsSync(d.socket));
      await until('its executors to exit', () => Promise.resolve(executorProcesses(d.runtimeDir).length === 0), 5000);
      const next = await startTestDaemon({ runtimeDir: d.runtimeDir, args: ['--pool', '4:1'] });
      try {
        const { vms } = await ok<{ vms: VmView[] }>(next.socket, 'GET', '/v1/vms');
        assert.deepEqual(vms, [], 'a VM destroyed at stop came back');
      } finally {
        await next.stop();
      }
    } finally {
      await d.stop();
    }
  });

  void it('SIGTERM while the daemon is starting an executor: no executor is left behind', async () => {
    // Closing the fleet also stops an executor still starting, so that no
    // executor outlives its daemon.
    // --destroy-on-stop: the fleet closes right away (no VM is saved first).
    const d = await startTestDaemon({ args: ['--pool', '4:0', '--vms-per-executor', '2', '--destroy-on-stop'] });
    let stoppedPid = 0;
    try {
      await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', cmdline: '60000' }, 201);
      await settle(d.socket, d.runtimeDir);
      const h = await d.host();
      const first = h.executors.find((e) => e.vms === 1)!;
      // Executor 1 is now full: the fleet starts another spare at once, while answering this create.
      await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', cmdline: '60000' }, 201);
      // An executor that takes its time to stop (here: stopped by SIGSTOP;
      // in life: one with many VMs to destroy) keeps the fleet closing
      // while the new spare comes up.
      process.kill(first.pid, 'SIGSTOP');
      stoppedPid = first.pid;
      d.child.kill('SIGTERM');
      // The new spare's socket appears once it listens; the daemon connects right after.
      const known = h.executors.map((e) => `${e.id}.sock`);
      const fresh = (): string[] => readdirSync(join(d.runtimeDir, 'executors')).filter((f) => f.endsWith('.sock') && !known.includes(f));
      await waitFor('the new spare executor to listen', () => fresh().length > 0, 10_000);
      await sleep(500);
      process.kill(first.pid, 'SIGCONT');
      stoppedPid = 0;
      await waitGone(d.pid, 'the daemon to exit');
      await sleep(1000);
      const left = processesOf(d.runtimeDir);
      assert.deepEqual(left.map((p) => p.cmd), [], 'executor processes outlived their daemon');
    } finally {
      if (stoppedPid) process.kill(stoppedPid, 'SIGCONT');
      for (const p of processesOf(d.runtimeDir)) process.kill(p.pid, 'SIGKILL');
      await d.stop({ settle: false }).catch(() => {});
    }
  });

  void it('SIGTERM while a client follows /v1/events: the daemon still stops (within 5 s)', async () => {
    // Open streams (/v1/events, console follow) never end by themselves:
    // stopping the daemon must close them rather than wait for them.
    const d = await startTestDaemon({ args: ['--pool', '4:0'] });
    const events = await openStream(d.socket, '/v1/events');
    try {
      await waitFor('the hello event', () => events.text().includes('"hello"'), 5000);
      d.child.kill('SIGTERM');
      const t0 = Date.now();
      while (isAlive(d.pid) && Date.now() - t0 < 5000) await sleep(50);
      assert.ok(!isAlive(d.pid), 'the daemon did not stop within 5 s while a client followed /v1/events');
      await within(events.ended, 1000, 'the events stream to end with the daemon');
    } finally {
      events.close();
      await d.stop({ settle: false }).catch(() => {});
    }
  });
});

void describe('without a daemon', () => {
  const base = mkdtempSync(join(tmpdir(), 'lightvm-tnod-'));
  const socket = join(base, 'nosuch.sock');
  const cfg = join(base, 'vm.cfg');
  writeFileSync(cfg, 'name = "x"\nkernel = "hello"\n');
  after(() => rmSync(base, { recursive: true, force: true }));

  for (const args of [
    ['list'], ['create', cfg], ['destroy', 'x'], ['pause', 'x'], ['unpause', 'x'], ['shutdown', 'x'],
    ['console', 'x'], ['console', '-f', 'x'], ['top', '-b', '-n', '1'],
  ]) {
    void it(`lightvm ${args.join(' ')}: exit 1, one line naming the socket`, async () => {
      const r = await lightvm([...args, '--socket', socket]);
      assert.equal(r.code, 1, `exit code; stderr: ${r.stderr}`);
      assert.equal(r.stdout, '');
      const err = outLines(r.stderr);
      assert.equal(err.length, 1, r.stderr);
      assert.equal(err[0], `lightvm: the daemon is not running (no socket at ${socket}): start it with "npx lightvm daemon"`);
    });
  }

  void it('lightvm daemon stop --runtime-dir X: exit 1, one line naming the socket', async () => {
    const r = await lightvm(['daemon', 'stop', '--runtime-dir', base]);
    assert.equal(r.code, 1);
    const err = outLines(r.stderr);
    assert.equal(err.length, 1, r.stderr);
    assert.match(err[0]!, new RegExp(`^lightvm: the daemon is not running \\(no socket at ${join(base, 'lightvmd.sock')}\\)`));
  });
});

void describe('the daemon killed, then started again', () => {
  let d: TestDaemon;
  let d2: TestDaemon | undefined;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:1'] });
  });
  after(async () => {
    await d2?.stop();
    await d.stop({ settle: false });
  });

  void it('SIGKILL: VMs keep running; the CLI says "connection refused"; a new daemon on the same directory adopts them', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'survivor' }, 201);
    await settle(d.socket, d.runtimeDir);
    const before = await d.host();
    d.child.kill('SIGKILL');
    await waitGone(d.pid, 'the daemon to die');
    // Executors are detached: they and their VMs outlive the daemon.
    for (const ex of before.executors) assert.ok(isAlive(ex.pid), `executor ${ex.id} died with the daemon`);

    const r = await lightvm(['list', '--socket', d.socket]);
    assert.equal(r.code, 1);
    assert.deepEqual(outLines(r.stderr), [
      `lightvm: the daemon is not running (connection refused at ${d.socket}): start it with "npx lightvm daemon"`,
    ]);

    // A new daemon on the same runtime directory.
    const child = spawn(process.execPath, [CLI, 'daemon', '--runtime-dir', d.runtimeDir, '--log-level', 'warn', ...ALLOW_TEST_PATHS, '--pool', '4:1'], {
      stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT,
    });
    d2 = {
      ...d, pid: child.pid!, child, stderr: () => '', log: () => '',
      stop: async () => {
        await settle(d.socket, d.runtimeDir).catch(() => {});
        if (child.exitCode === null) {
          const gone = new Promise((res) => child.once('exit', res));
          child.kill('SIGTERM');
          await gone;
        }
      },
    };
    const t0 = Date.now();
    for (;;) {
      const reply = await request(d.socket, 'GET', '/v1/host').catch(() => undefined);
      if ((reply?.json as HostInfo | undefined)?.pid === child.pid) break;
      assert.ok(Date.now() - t0 < 20_000, 'the new daemon did not serve');
      await sleep(50);
    }
    const after = await ok<HostInfo>(d.socket, 'GET', '/v1/host');
    assert.deepEqual(after.executors.map((e) => e.pid).sort(), before.executors.map((e) => e.pid).sort(), 'executors re-adopted');
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/survivor');
    assert.equal(vm.state, 'running');
    const c1 = (await request(d.socket, 'GET', '/v1/vms/survivor/console')).text;
    await sleep(200);
    const c2 = (await request(d.socket, 'GET', '/v1/vms/survivor/console')).text;
    assert.ok(c2.length > c1.length, 'the adopted counter stopped printing');
    assert.match(c2, /count \d+\n$/);
    // A new VM does not reuse the adopted one's id.
    const { vm: fresh } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'hello', wait: 'exit' }, 201);
    assert.notEqual(fresh.id, vm.id);
    assert.deepEqual(fresh.exit, { kind: 'halt', status: 0 });
  });
});

void describe('two daemons on one runtime directory', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:1'] });
  });
  after(async () => {
    await d.stop({ settle: false, timeoutMs: 5000 });
  });

  void it('a second daemon refuses to start and leaves the first one serving its VMs', async () => {
    // One daemon per runtime directory: a second one must fail with one line
    // and touch nothing, not take over the first one's socket and executors.
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'first' }, 201);
    await settle(d.socket, d.runtimeDir);
    const child = spawn(process.execPath, [CLI, 'daemon', '--runtime-dir', d.runtimeDir, '--log-level', 'warn', ...ALLOW_TEST_PATHS], {
      stdio: ['ignore', 'ignore', 'pipe'], cwd: ROOT,
    });
    let stderr = '';
    child.stderr.setEncoding('utf8');
    child.stderr.on('data', (s: string) => (stderr += s));
    const exit = new Promise<number | null>((res) => child.once('exit', (code) => res(code)));
    try {
      const code = await Promise.race([exit, sleep(5000).then(() => 'running' as const)]);
      const host = await request(d.socket, 'GET', '/v1/host').catch((e: Error) => ({ status: 0, json: undefined, text: e.message }));
      assert.equal((host.json as HostInfo | undefined)?.pid, d.pid, `the socket is no longer served by the first daemon: ${host.text}`);
      assert.notEqual(code, 'running', 'the second daemon is still running after 5 s');
      assert.notEqual(code, 0);
      const err = outLines(stderr);
      assert.equal(err.length, 1, stderr);
      assert.match(err[0]!, /already/);
      const { vm } = await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/first');
      assert.equal(vm.state, 'running');
    } finally {
      if (child.exitCode === null) {
        child.kill('SIGTERM');
        await Promise.race([exit, sleep(10_000)]);
        if (child.exitCode === null) child.kill('SIGKILL');
      }
    }
  });
});

void describe('a guest that never exits and never calls', () => {
  let d: TestDaemon;
  before(async () => {
    // One prepared shell: a VM started from one is announced after its first
    // entry, and this one never exits by itself.
    d = await startTestDaemon({ args: ['--pool', '4:1'], prefix: 'spin' });
    await until('the shell to be ready', async () => (await d.host()).pools[0]?.warm === 1, 15_000);
  });
  after(async () => {
    await d.stop();
  });

  void it('is created at once (the executor announces it while it spins) and runs until destroyed', async () => {
    // `jmp .` at its entry: not one exit, not one hypercall.
    const dir = mkdtempSync(join(tmpdir(), 'lightvm-spin-'));
    const image = join(dir, 'jmp-self.elf');
    writeFileSync(image, craftElf([0xeb, 0xfe]));
    const t0 = Date.now();
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image, name: 'spinner' }, 201);
    assert.ok(Date.now() - t0 < 2000, `the create took ${Date.now() - t0} ms`);
    assert.equal(vm.state, 'running');
    assert.equal(vm.warm, true, 'it did not come from the prepared shell');
    await sleep(50);
    assert.equal((await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/spinner')).vm.state, 'running');
    assert.equal((await ok<{ vm: VmView }>(d.socket, 'DELETE', '/v1/vms/spinner')).vm.state, 'exited');
    rmSync(dir, { recursive: true, force: true });
  });
});
