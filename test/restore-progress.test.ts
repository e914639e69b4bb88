// The daemon's wait for a restore reading a large file is bounded by the
// executor's silence, not by the file's size: the executor reports its
// progress per chunk read, and only a restore that makes none for the
// start timeout is given up (its executor ended, as for any request it
// leaves unanswered: issue 10 F1). Before, the whole restore had to be done
// within START_TIMEOUT_MS (30 s), which a file of a few GiB on a loaded host
// could miss. Here the timeout is made short (LIGHTVM_START_TIMEOUT_MS) and
// the load real: the executor is stopped (SIGSTOP) for most of each cycle,
// so the restore takes several timeouts yet progresses within each; then it
// is stopped for good part way, and the restore is refused within a timeout
// or so of the stop.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isAlive, ok, request, startTestDaemon, until, type ApiErrorBody, type HostInfo, type TestDaemon, type VmView } from './daemon-helpers.js';
import { scaled, sleep, tempDir } from './helpers.js';
import { FILL_MIB, rssMiB, saveLargeCounter } from './snapshot-files.js';
import { assertCounting, lastCount, untilCount } from './vm-helpers.js';

/** The daemon's start timeout here. */
const TIMEOUT_MS = scaled(3000);
/** Each cycle of the slow restore: the executor stopped this long, then let run this long. */
const STOPPED_MS = 800;
const RUNNING_MS = 100;

void describe('a restore is waited for while it progresses, and refused once it stalls', () => {
  let d: TestDaemon;
  let files: { dir: string; cleanup: () => void };
  let file: string;
  let saved: string;
  before(async () => {
    d = await startTestDaemon({ prefix: 'rpg', env: { LIGHTVM_START_TIMEOUT_MS: String(TIMEOUT_MS) } });
    files = tempDir('rpg');
    ({ file, saved } = await saveLargeCounter(d.socket, files.dir));
  });
  after(async () => {
    await d.stop();
    files.cleanup();
  });

  /** A counter VM, and the pid of its executor (where the next restore goes: the lowest with room). */
  async function executorOf(name: string): Promise<number> {
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name }, 201);
    await untilCount(d.socket, name, 3);
    const pid = (await ok<HostInfo>(d.socket, 'GET', '/v1/host')).executors.find((e) => e.id === vm.executor)?.pid;
    assert.ok(pid, `${name}'s executor is not listed`);
    return pid;
  }

  void it(`slow but progressing (stopped ${STOPPED_MS} ms of every ${STOPPED_MS + RUNNING_MS}): the restore takes several timeouts of ${TIMEOUT_MS} ms and succeeds`, async () => {
    const pid = await executorOf('tick');
    const t0 = performance.now();
    let t1 = 0;
    const restored = request(d.socket, 'POST', '/v1/restore', { body: { file, name: 'big' }, timeoutMs: 120_000 }).finally(() => (t1 = performance.now()));
    // False once the executor is gone (ended by the daemon): the restore's answer then says why.
    const signal = (sig: NodeJS.Signals): boolean => {
      try {
        process.kill(pid, sig);
        return true;
      } catch {
        return false;
      }
    };
    try {
      while (t1 === 0 && signal('SIGSTOP')) {
        await sleep(STOPPED_MS);
        if (!signal('SIGCONT')) break;
        await sleep(RUNNING_MS);
      }
    } finally {
      signal('SIGCONT');
    }
    const r = await restored;
    const ms = t1 - t0;
    console.error(`restore of ${FILL_MIB} MiB with its executor stopped ${STOPPED_MS} ms of every ${STOPPED_MS + RUNNING_MS}: ${ms.toFixed(0)} ms (timeout ${TIMEOUT_MS} ms)`);
    assert.equal(r.status, 201, r.text);
    assert.ok(ms > TIMEOUT_MS * 1.2, `the restore took ${ms.toFixed(0)} ms: too short to show a wait beyond the timeout`);
    assert.equal((r.json as { vm: VmView }).vm.executor, (await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/tick')).vm.executor, 'the restore went to another executor');
    const text = await untilCount(d.socket, 'big', lastCount(saved) + 10);
    assert.ok(text.startsWith(saved));
    assertCounting(text, 'the restored counter');
    await request(d.socket, 'DELETE', '/v1/vms/big');
    await request(d.socket, 'DELETE', '/v1/vms/tick');
  });

  void it(`stalled part way (its executor stopped for good): refused within about ${TIMEOUT_MS} ms of the stall, naming it; the daemon serves on`, async () => {
    const pid = await executorOf('tick2');
    const rss0 = rssMiB(pid);
    let t1 = 0;
    const refused = request(d.socket, 'POST', '/v1/restore', { body: { file, name: 'big2' }, timeoutMs: 120_000 }).finally(() => (t1 = performance.now()));
    while (t1 === 0 && rssMiB(pid) < rss0 + FILL_MIB / 6) await sleep(5);
    assert.equal(t1, 0, 'the restore was over before its executor could be stopped');
    process.kill(pid, 'SIGSTOP');
    const stalled = performance.now();
    const r = await refused;
    const ms = t1 - stalled;
    console.error(`stalled restore refused ${ms.toFixed(0)} ms after its executor was stopped (timeout ${TIMEOUT_MS} ms)`);
    assert.equal(r.status, 503, r.text);
    const e = (r.json as ApiErrorBody).error;
    assert.match(e.message, new RegExp(`made no progress on the restore of VM \\d+ \\(big2\\) for ${TIMEOUT_MS} ms \\(\\d+ bytes of its file read\\)`));
    assert.ok(ms >= TIMEOUT_MS * 0.9 && ms <= TIMEOUT_MS + scaled(3000), `refused ${ms.toFixed(0)} ms after the stall`);
    // Its executor was ended (SIGKILL works on a stopped process), its VMs reported lost; the daemon goes on.
    await until('the stalled executor to be gone', () => Promise.resolve(!isAlive(pid)), 5000);
    // On record as ended, lost with its executor, as tick2 is.
    for (const name of ['big2', 'tick2']) {
      const vm = (await ok<{ vm: VmView }>(d.socket, 'GET', `/v1/vms/${name}`)).vm;
      assert.equal(vm.state, 'exited', name);
      assert.match(JSON.stringify(vm.exit), /executor-lost/, name);
    }
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'after' }, 201);
    await untilCount(d.socket, 'after', 3);
  });
});
