// A daemon killed (SIGKILL) while an executor of its restores a large
// snapshot file: the executor reads on, and the next daemon on that
// runtime directory must hear of that restore when it re-adopts the
// executor. It was left out of the executor's hello (only VMs already
// running were listed), so the VM it started later was one the new daemon
// did not know: not listed, not reachable, though it ran. Now the hello
// lists restores under way: the VM is on record from the re-adoption, runs
// once its file is read, or, if the restore fails, is reported failed and
// its name is free.
import assert from 'node:assert/strict';
import { readFileSync, statSync, truncateSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { fdTargets, ok, request, startTestDaemon, until, type HostInfo, type TestDaemon, type VmView } from './daemon-helpers.js';
import { sleep, tempDir } from './helpers.js';
import { FILL_FROM_PAGE, FILL_MIB, rssMiB, saveLargeCounter, withPagesAdded } from './snapshot-files.js';
import { assertCounting, consoleOf, lastCount, listed, untilCount } from './vm-helpers.js';


/** The names of the VMs a daemon lists. */
const names = async (d: TestDaemon): Promise<string[]> => (await listed(d.socket)).map((l) => l.split(' ')[1]!);

void describe('a daemon killed while a large restore is read, and the next daemon', () => {
  const daemons: TestDaemon[] = [];
  let files: { dir: string; cleanup: () => void };
  let file: string;
  let small: string;
  let saved: string;
  before(async () => {
    daemons.push(await startTestDaemon({ prefix: 'rrs' }));
    const d = daemons[0]!;
    files = tempDir('rrs');
    ({ small, file, saved } = await saveLargeCounter(d.socket, files.dir));
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'tick' }, 201);
    await untilCount(d.socket, 'tick', 5);
  });
  after(async () => {
    // The last daemon first: each stop() removes the directory they share.
    for (const d of daemons.reverse()) await d.stop();
    files.cleanup();
  });

  /**
   * Starts a restore of file as name on the newest daemon, kills that
   * daemon (SIGKILL) once tick's executor has placed a sixth of the pages,
   * runs then(), and starts the next daemon. held: the executor is stopped
   * (SIGSTOP) from just before the kill until a second after the next
   * daemon has connected, so that the restore is still under way when that
   * daemon re-adopts it; else the next daemon starts once the executor has
   * closed the file (the restore over with no daemon to hear it).
   */
  async function killDuringRestore(name: string, opts: { held: boolean; then?: () => void }): Promise<TestDaemon> {
    const d = daemons[daemons.length - 1]!;
    const host = await ok<HostInfo>(d.socket, 'GET', '/v1/host');
    const tick = (await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/tick')).vm;
    const pid = host.executors.find((e) => e.id === tick.executor)?.pid;
    assert.ok(pid, 'tick\'s executor is not listed');
    const rss0 = rssMiB(pid);
    let answered = false;
    const restore = request(d.socket, 'POST', '/v1/restore', { body: { file, name }, timeoutMs: 60_000 }).then(
      (r) => `answered ${r.status}`, (err: Error) => `no answer (${err.message})`,
    ).finally(() => (answered = true));
    while (!answered && rssMiB(pid) < rss0 + FILL_MIB / 6) await sleep(5);
    if (opts.held) process.kill(pid, 'SIGSTOP');
    const exited = new Promise((r) => d.child.once('exit', r));
    d.child.kill('SIGKILL');
    try {
      opts.then?.();
      assert.ok(rssMiB(pid) < rss0 + FILL_MIB * 0.9, 'the restore was over before the daemon was killed');
      await exited;
      assert.match(await restore, /^no answer/, 'the restore was answered before the daemon was killed');
      if (!opts.held) await until('the executor to close the file', () => Promise.resolve(!fdTargets(pid).includes(file)), 30_000);
      // The next daemon's hello waits for the stopped executor: it is let go a second into that wait.
      const release = opts.held ? sleep(1000).then(() => process.kill(pid, 'SIGCONT')) : Promise.resolve(true);
      const next = await startTestDaemon({ runtimeDir: d.runtimeDir, prefix: 'rrs' });
      await release;
      daemons.push(next);
      return next;
    } finally {
      if (opts.held) process.kill(pid, 'SIGCONT');
    }
  }

  /** Waits for the next daemon's report that a restore the last daemon asked for failed; the line. */
  async function failureReported(d: TestDaemon, name: string): Promise<string> {
    const said = (): string | undefined => d.log().split('\n').find((l) => l.includes('restore the last daemon asked for failed') && l.includes(`"name":"${name}"`));
    await until(`the failed restore of ${name} to be reported`, () => Promise.resolve(said() !== undefined), 30_000);
    return said()!;
  }

  /** After a failed restore: tick alone is listed, the executors count only it, the name is free (taken, then destroyed). */
  async function nothingLeft(d: TestDaemon, name: string): Promise<void> {
    assert.deepEqual(await names(d), ['tick']);
    assert.equal((await request(d.socket, 'GET', `/v1/vms/${name}`)).status, 404);
    const h = await ok<HostInfo>(d.socket, 'GET', '/v1/host');
    assert.equal(h.executors.reduce((n, e) => n + e.vms, 0), 1, `an executor still counts the failed restore: ${JSON.stringify(h.executors)}`);
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name }, 201);
    await ok(d.socket, 'DELETE', `/v1/vms/${name}`);
  }

  void it('the restore goes on: the next daemon lists the VM once, running from where it was saved, and can destroy it', async () => {
    const d = await killDuringRestore('big', { held: true });
    const text = await untilCount(d.socket, 'big', lastCount(saved) + 10, 30_000);
    assert.ok(text.startsWith(saved), 'the restored counter\'s console does not start with the saved one');
    assertCounting(text, 'the restored counter');
    const now = await names(d);
    assert.equal(now.filter((n) => n === 'big').length, 1, `listed: ${now.join(', ')}`);
    assertCounting(await consoleOf(d.socket, 'tick'), 'tick after the restart');
    const r = await request(d.socket, 'DELETE', '/v1/vms/big');
    assert.equal(r.status, 200, r.text);
    await until('big to be gone from its executor', async () => (await ok<HostInfo>(d.socket, 'GET', '/v1/host')).executors.reduce((n, e) => n + e.vms, 0) === 1, 10_000);
  });

  void it('the restore fails once the next daemon has it (its file cut short): that daemon reports it failed, lists no VM for it, and its name is free', async () => {
    const d = await killDuringRestore('big2', { held: true, then: () => truncateSync(file, Math.floor(statSync(file).size * 0.95)) });
    assert.match(await failureReported(d, 'big2'), /shrank while read/);
    await nothingLeft(d, 'big2');
  });

  void it('the restore fails with no daemon there (its file cut short, the executor done with it before the next daemon starts): the next daemon reports it failed', async () => {
    withPagesAdded(readFileSync(small), file, FILL_FROM_PAGE, FILL_MIB);
    const d = await killDuringRestore('big3', { held: false, then: () => truncateSync(file, Math.floor(statSync(file).size * 0.95)) });
    assert.match(await failureReported(d, 'big3'), /shrank while read/);
    await nothingLeft(d, 'big3');
  });
});
