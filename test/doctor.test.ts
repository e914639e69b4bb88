// lightvm doctor on this host: every check real (it opens /dev/kvm, boots a
// VM, makes a bridge in a throwaway namespace, builds the example), each
// failure with its fix; run as root, as an unprivileged user, and against
// daemons that answer, have died, or are not sockets at all.
import assert from 'node:assert/strict';
import { execFile, execFileSync, spawn } from 'node:child_process';
import { chmodSync, existsSync, statSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { after, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { linkIndex } from '../src/sys/netlink.js';
import { CLI, startTestDaemon } from './daemon-helpers.js';
import { tempDir } from './helpers.js';

const exec = promisify(execFile);
const tmp = tempDir('doctor');
after(() => tmp.cleanup());

interface Report {
  ok: boolean;
  planned_vms: number;
  checks: { id: string; status: 'pass' | 'warn' | 'fail'; verdict: string; fix: string | null }[];
}

async function doctor(args: string[], prefix: string[] = []): Promise<{ code: number; report: Report; stderr: string }> {
  const argv = [...prefix, process.execPath, CLI, 'doctor', '--json', ...args];
  try {
    const r = await exec(argv[0]!, argv.slice(1), { env: { ...process.env, HOME: tmp.dir } });
    return { code: 0, report: JSON.parse(r.stdout) as Report, stderr: r.stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, report: JSON.parse(e.stdout) as Report, stderr: e.stderr };
  }
}

const byId = (r: Report, id: string) => {
  const c = r.checks.find((x) => x.id === id);
  assert.ok(c, `check ${id} in ${r.checks.map((x) => x.id).join(', ')}`);
  return c;
};

const EXPECTED = ['kvm', 'kvm-caps', 'boot', 'tun', 'bridge', 'fd-limit', 'process-limit', 'memory', 'daemon', 'gcc',
  'peer:qemu-system-x86_64', 'peer:crun', 'peer:busybox', 'peer:unshare', 'peer:ip', 'peer:bash', 'peer:make'];

void describe('lightvm doctor', () => {
  void it('as root on this host, with a daemon running: every check passes, each with one line; the probe leaves no bridge', async () => {
    const d = await startTestDaemon({ prefix: 'doc' });
    try {
      const { code, report } = await doctor(['--socket', d.socket]);
      assert.deepEqual(report.checks.map((c) => c.id), EXPECTED);
      for (const c of report.checks) {
        assert.equal(c.status, 'pass', `${c.id}: ${c.verdict} (fix: ${c.fix})`);
        assert.equal(c.fix, null);
        assert.ok(c.verdict.length > 10 && !c.verdict.includes('\n'), c.verdict);
      }
      assert.deepEqual([code, report.ok, report.planned_vms], [0, true, 1000]);
      assert.match(byId(report, 'daemon').verdict, new RegExp(`answers at ${d.socket}: pid ${d.pid}`));
      assert.match(byId(report, 'kvm').verdict, /KVM API 12/);
      assert.match(byId(report, 'boot').verdict, /hello booted, printed its line and exited 0/);
      assert.equal(linkIndex('lvdoctor0'), 0, 'the bridge was made in a namespace of its own');
    } finally {
      await d.stop();
    }
  });

  void it('the human form: a line per check, its fix under it, and a summary', async () => {
    const { stdout } = await exec(process.execPath, [CLI, 'doctor', '--vms', '100000000', '--socket', join(tmp.dir, 'none.sock')]).catch((e: { stdout: string }) => e);
    const lines = stdout.trimEnd().split('\n');
    assert.match(lines[0]!, /^ok {4}kvm {2,}\/dev\/kvm opens read-write/);
    assert.match(stdout, /^FAIL {2}memory {2,}\d+ MiB available, 100000000 idle VMs take ~\d+ MiB.*\n {6,}fix: plan for \d+ VMs \(--vms\), or free memory$/m);
    assert.match(lines.at(-1)!, /^\d of 17 checks failed$/);
  });

  void it('limits against the planned VMs: too many fail with the sysctl or ulimit to set', async () => {
    const { code, report } = await doctor(['--vms', '100000000', '--socket', join(tmp.dir, 'none.sock')]);
    assert.equal(code, 1);
    assert.equal(report.ok, false);
    const pids = byId(report, 'process-limit');
    assert.equal(pids.status, 'fail');
    assert.match(pids.fix!, /^sysctl -w kernel\.pid_max=\d+ kernel\.threads-max=\d+$/);
    assert.equal(byId(report, 'memory').status, 'fail');
    const fds = await doctor(['--vms', '1000', '--vms-per-executor', '100000', '--socket', join(tmp.dir, 'none.sock')], ['prlimit', '--nofile=512:1024']);
    assert.match(byId(fds.report, 'fd-limit').verdict, /^open files: hard limit 1024, an executor needs 3064/);
    assert.match(byId(fds.report, 'fd-limit').fix!, /ulimit -Hn 3064; LimitNOFILE= in contrib\/lightvmd\.service/);
  });

  void it('the daemon: none (passes, says so), a dead one\'s socket, a file that is no socket', async () => {
    const none = await doctor(['--socket', join(tmp.dir, 'run', 'lightvmd.sock')]);
    assert.equal(byId(none.report, 'daemon').status, 'pass');
    assert.match(byId(none.report, 'daemon').verdict, /^no daemon running \(no socket at .*lightvmd\.sock\); `lightvm daemon` can listen there$/);

    // A socket whose listener is gone: what a daemon killed with SIGKILL leaves.
    const stale = join(tmp.dir, 'stale.sock');
    const holder = spawn(process.execPath, ['-e', `require('net').createServer().listen(${JSON.stringify(stale)}, () => console.log('up'))`]);
    await new Promise<void>((r) => holder.stdout.once('data', () => r()));
    holder.kill('SIGKILL');
    await new Promise<void>((r) => holder.once('exit', () => r()));
    assert.ok(existsSync(stale), 'a killed listener leaves its socket file');
    const dead = await doctor(['--socket', stale]);
    assert.equal(byId(dead.report, 'daemon').status, 'fail');
    assert.match(byId(dead.report, 'daemon').verdict, /^nothing answers at .*stale\.sock \(a daemon that died left its socket\)$/);
    assert.match(byId(dead.report, 'daemon').fix!, /lightvm daemon/);

    writeFileSync(join(tmp.dir, 'plain'), 'not a socket');
    const plain = await doctor(['--socket', join(tmp.dir, 'plain')]);
    assert.equal(byId(plain.report, 'daemon').status, 'fail');
    assert.match(byId(plain.report, 'daemon').verdict, /plain is not a socket$/);
    assert.equal(plain.code, 1);
  });

  void it('as an unprivileged user: /dev/kvm, tun and CAP_NET_ADMIN fail with their fixes, the rest still runs', async (t) => {
    try {
      execFileSync('setpriv', ['--version'], { stdio: 'ignore' });
    } catch {
      t.skip('setpriv (util-linux) is not installed');
      return;
    }
    const asNobody = ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'];
    const canOpen = (dev: string): boolean => {
      try {
        execFileSync(asNobody[0]!, [...asNobody.slice(1), 'sh', '-c', `test -r ${dev} && test -w ${dev}`]);
        return true;
      } catch {
        return false;
      }
    };
    // nobody must reach the package the way any user reaches an installed one:
    // a checkout under a 0700 directory (CI clones into one) gets search
    // permission for others on those directories for this test only.
    const opened: { dir: string; mode: number }[] = [];
    for (let dir = dirname(CLI); dir !== dirname(dir); dir = dirname(dir)) {
      const mode = statSync(dir).mode & 0o7777;
      if (!(mode & 0o001)) {
        chmodSync(dir, mode | 0o001);
        opened.push({ dir, mode });
      }
    }
    let result;
    try {
      result = await doctor(['--socket', join(tmp.dir, 'none.sock')], asNobody);
    } finally {
      for (const { dir, mode } of opened) chmodSync(dir, mode);
    }
    const { code, report } = result;
    const kvm = byId(report, 'kvm');
    if (canOpen('/dev/kvm')) {
      assert.equal(kvm.status, 'pass');
    } else {
      assert.equal(kvm.status, 'fail');
      assert.match(kvm.verdict, /^no permission to open \/dev\/kvm \(as \S+ \(uid 65534\)\)$/);
      assert.match(kvm.fix!, /usermod -aG kvm/);
      assert.match(byId(report, 'boot').verdict, /^not tried: \/dev\/kvm cannot be used/);
    }
    const bridge = byId(report, 'bridge');
    assert.equal(bridge.status, 'fail', bridge.verdict);
    assert.match(bridge.verdict, /lacks CAP_NET_ADMIN/);
    assert.equal(byId(report, 'gcc').status, 'pass');
    assert.equal(code, 1);
  });
});
