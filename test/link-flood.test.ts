// Issue 10 F1: one guest flooding its console (64 KiB writes back to back)
// must not make the other VMs of its executor unmanageable. The link from
// executor to daemon keeps its frames whole and in order under that load,
// each VM's console is bounded (what is dropped is counted in the API), and
// pause, unpause and destroy of both VMs answer within a second.
import assert from 'node:assert/strict';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { ExecutorFleet } from '../src/toolstack/fleet.js';
import { Host } from '../src/toolstack/host.js';
import { decodeSnapshot, encodeSnapshotParts } from '../src/vmm/snapshot.js';
import { isAlive, ok, openStream, request, startTestDaemon, until, type TestDaemon, type VmView } from './daemon-helpers.js';
import { sleep, waitFor } from './helpers.js';
import { assertCounting, buildGuest, consoleOf, untilCount, vmOf } from './vm-helpers.js';

async function create(d: TestDaemon, body: Record<string, unknown>): Promise<VmView> {
  return (await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', body, 201)).vm;
}

/** A request that must answer `status` within ms. */
async function timely(d: TestDaemon, method: string, path: string, ms: number, status = 200): Promise<number> {
  const t0 = Date.now();
  const r = await request(d.socket, method, path, { timeoutMs: 5000 });
  const took = Date.now() - t0;
  assert.equal(r.status, status, `${method} ${path}: ${r.text}`);
  assert.ok(took < ms, `${method} ${path} took ${took} ms (limit ${ms})`);
  return took;
}

void describe('a console-flooding guest beside a healthy VM on one executor', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'fl' });
  });
  after(async () => {
    await d.stop();
  });

  void it('pause, unpause and destroy of both answer within a second, and the healthy one counts on', async () => {
    const flood = await create(d, { image: 'flood', name: 'flood' });
    const calm = await create(d, { image: 'counter', name: 'calm' });
    assert.equal(flood.executor, calm.executor, 'both VMs on one executor');
    await untilCount(d.socket, 'calm', 3);
    // Let the flood fill every buffer on the way.
    await sleep(1500);
    for (const name of ['flood', 'calm']) {
      await timely(d, 'POST', `/v1/vms/${name}/pause`, 1000);
      await timely(d, 'POST', `/v1/vms/${name}/unpause`, 1000);
    }
    assertCounting(await consoleOf(d.socket, 'calm'), 'calm beside a flood');
    const c = await consoleOf(d.socket, 'calm');
    await untilCount(d.socket, 'calm', Number(/count (\d+)\n$/.exec(c)?.[1] ?? 0) + 5);
    // The flood waits for its console's rate: the API says for how long.
    const { vms } = await ok<{ vms: { id: number; console_throttled_ms: number }[] }>(d.socket, 'GET', '/v1/stats');
    const throttled = vms.find((v) => v.id === flood.id)?.console_throttled_ms ?? 0;
    assert.ok(throttled > 500, `the flood waited only ${throttled} ms for its console's rate`);
    assert.equal(vms.find((v) => v.id === calm.id)?.console_throttled_ms, 0, 'the calm VM was throttled');
    await timely(d, 'DELETE', '/v1/vms/flood', 1000);
    await timely(d, 'DELETE', '/v1/vms/calm', 1000);
  });

  // The daemon stopped (SIGSTOP) while the flood goes on: the executor's
  // writes to the link are cut short and queued; when the daemon goes on,
  // it must read whole frames in order (a scrambled stream drops the link
  // and every VM of the executor with it).
  void it('a daemon that stops reading for a while gets whole frames in order after it; what was dropped is counted', async () => {
    const flood = await create(d, { image: 'flood', name: 'flood2' });
    await create(d, { image: 'counter', name: 'calm2' });
    await untilCount(d.socket, 'calm2', 3);
    d.child.kill('SIGSTOP');
    await sleep(1500);
    d.child.kill('SIGCONT');
    const before = (await vmOf(d.socket, 'calm2')).exit;
    assert.equal(before, null, 'the calm VM ended');
    const c = await consoleOf(d.socket, 'calm2');
    // Nothing of the calm VM was lost or repeated: only the flood's output was held back and cut.
    const last = assertCounting(c, 'calm2 after the daemon stopped for 1.5 s');
    await untilCount(d.socket, 'calm2', last + 5, 20_000);
    const f = await vmOf(d.socket, 'flood2');
    assert.equal(f.state, 'running', `the flood: ${JSON.stringify(f.exit)}`);
    assert.ok((f as unknown as { console_dropped_bytes: number }).console_dropped_bytes > 0, 'no console byte of the flood was dropped');
    for (const name of ['flood2', 'calm2']) {
      await timely(d, 'POST', `/v1/vms/${name}/pause`, 1000);
      await timely(d, 'POST', `/v1/vms/${name}/unpause`, 1000);
    }
    await timely(d, 'DELETE', '/v1/vms/flood2', 1000);
    await timely(d, 'DELETE', '/v1/vms/calm2', 1000);
    assert.ok(!d.log().includes('executor lost'), `an executor was lost: ${d.log()}`);
    void flood;
  });
});

// Issue 10 F1 (c): a snapshot whose console section is 5 MB (its VM's
// history is 16 KiB at most: the file was made by hand) is restored with
// its history cut to what a VM keeps (the rest counted as dropped), or
// refused; the executor's link, and the VM beside it, go on either way.
void describe('a snapshot with a 5 MB console section', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'fc' });
  });
  after(async () => {
    await d.stop();
  });

  void it('restores with its history cut (and counted), or is refused, without breaking the link', async () => {
    const calm = await create(d, { image: 'counter', name: 'calm' });
    await create(d, { image: 'counter', name: 'big' });
    await untilCount(d.socket, 'big', 3);
    const file = join(d.runtimeDir, 'big.snap');
    await ok(d.socket, 'POST', '/v1/vms/big/save', { file });
    const s = decodeSnapshot(file, readFileSync(file));
    const memory = new Uint8Array(s.header.vm.memory);
    for (const [p, data] of s.pages) memory.set(data, p * 4096);
    const history = Buffer.alloc(5 << 20, 'console line\n');
    writeFileSync(file, Buffer.concat(encodeSnapshotParts({ ...s, memory, pages: [...s.pages.keys()], console: history })));
    const r = await request(d.socket, 'POST', '/v1/restore', { body: { file }, timeoutMs: 10_000 });
    if (r.status === 201) {
      const vm = (r.json as { vm: VmView & { console_dropped_bytes: number } }).vm;
      assert.equal(vm.executor, calm.executor, 'restored beside the calm VM');
      const text = await consoleOf(d.socket, 'big');
      assert.ok(text.length <= 64 * 1024, `the restored VM's history is ${text.length} bytes`);
      await until('the cut to be counted', async () => (await vmOf(d.socket, 'big') as unknown as { console_dropped_bytes: number }).console_dropped_bytes > 0);
      await timely(d, 'DELETE', '/v1/vms/big', 1000);
    } else {
      assert.ok(r.status >= 400 && r.status < 500, `restore: ${r.status} ${r.text}`);
      assert.match(r.text, /console/, 'the refusal names the console');
    }
    const last = assertCounting(await consoleOf(d.socket, 'calm'), 'calm beside the restore');
    await untilCount(d.socket, 'calm', last + 3, 20_000);
    await timely(d, 'POST', '/v1/vms/calm/pause', 1000);
    await timely(d, 'DELETE', '/v1/vms/calm', 1000);
    assert.ok(!d.log().includes('executor lost'), `an executor was lost: ${d.log()}`);
  });
});

// Issue 10 F1 (b): the daemon killed (SIGKILL) while 32 VMs print; the next
// daemon re-adopts every one of them. Its hello to their executor is
// answered with every VM's record and console history at once: far more
// than the socket takes in one write.
void describe('the daemon killed while 32 VMs print', () => {
  let d1: TestDaemon | undefined;
  let d2: TestDaemon | undefined;
  after(async () => {
    await d2?.stop();
    await d1?.stop();
  });

  void it('the next daemon re-adopts all 32, each with its whole console history, and they stay under control', async () => {
    const d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'fk' });
    d1 = d;
    const names = Array.from({ length: 32 }, (_, i) => `p${i}`);
    // Half of them count, half flood their consoles (at their rate): every history is full.
    for (const [i, name] of names.entries()) await create(d1, { image: i % 2 ? 'flood' : 'counter', name });
    await untilCount(d.socket, 'p30', 20, 20_000);
    const exited = new Promise((r) => d.child.once('exit', r));
    d.child.kill('SIGKILL');
    await exited;
    await sleep(500);
    d2 = await startTestDaemon({ runtimeDir: d.runtimeDir, args: ['--pool', '4:0'] });
    const { vms } = await ok<{ vms: VmView[] }>(d2.socket, 'GET', '/v1/vms');
    assert.deepEqual(vms.filter((v) => v.state === 'running').map((v) => v.name).sort(), [...names].sort(), 'the VMs re-adopted and running');
    assert.ok(!d2.log().includes('executor lost'), `an executor was lost: ${d2.log()}`);
    for (const name of ['p0', 'p30']) {
      const last = assertCounting(await consoleOf(d2.socket, name), `${name} re-adopted`);
      await untilCount(d2.socket, name, last + 3, 20_000);
    }
    for (const name of ['p0', 'p31']) {
      await timely(d2, 'POST', `/v1/vms/${name}/pause`, 1000);
      await timely(d2, 'DELETE', `/v1/vms/${name}`, 1000);
    }
  });
});

// A reply larger than a frame may be (a save returned whole, without a
// file, of a VM with 20 MiB written): the request fails, saying so, and
// the link and the VM beside it go on.
void describe('an answer too large for one frame', () => {
  let fleet: ExecutorFleet;
  let host: Host;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lightvm-tfr-'));
    ({ fleet } = await ExecutorFleet.start({ runtimeDir: dir, spare: 0 }));
    host = new Host(fleet);
  });
  after(async () => {
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void it('a save without a file of a VM with 20 MiB written fails with the reason; the executor and its other VM go on', async () => {
    const image = buildGuest(dir, 'toucher', TOUCHER_C);
    const calm = await host.create({ image: 'counter', name: 'calm' });
    const big = await host.create({ image, name: 'big', memoryMiB: 32 });
    assert.equal(big.executor, calm.executor, 'one executor');
    await waitFor('the toucher to have written its memory', () => big.consoleText().includes('touched'), 20_000);
    await assert.rejects(big.save(undefined, { checkpoint: true }), /exceeds the 16777216 bytes a frame to the toolstack may have/);
    assert.ok(calm.executor.isAlive, 'the executor was lost');
    const n = calm.consoleText().length;
    await waitFor('the calm VM to print on', () => calm.consoleText().length > n + 20, 20_000);
    assert.equal(big.state, 'running');
    await big.destroy();
    await calm.destroy();
  });
});

/** Writes one byte in every page of 20 MiB above 4 MiB, says so, and waits. */
const TOUCHER_C = `#include <lightvm/lvm.h>
int main(void)
{
    for (uint64_t a = 4u << 20; a < (24u << 20); a += 4096)
        *(volatile uint8_t *)a = 1;
    lvm_puts("touched\\n");
    for (;;)
        lvm_poll(1000000000ull);
}
`;

// An executor that stops answering (SIGSTOP: alive, its socket open) is
// not waited for forever: the request fails within REQUEST_TIMEOUT_MS, the
// executor is ended and its VMs are reported lost, and the daemon goes on
// with the next executor.
void describe('an executor that stops answering', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'fh' });
  });
  after(async () => {
    await d.stop();
  });

  void it('a pause fails in bounded time (503), the executor is ended with its VMs reported, and a new VM runs elsewhere', async () => {
    const vm = await create(d, { image: 'counter', name: 'h1' });
    await create(d, { image: 'counter', name: 'h2' });
    await untilCount(d.socket, 'h1', 2);
    const ex = (await d.host()).executors.find((e) => e.id === vm.executor)!;
    const events = await openStream(d.socket, '/v1/events');
    process.kill(ex.pid, 'SIGSTOP');
    const t0 = Date.now();
    const r = await request(d.socket, 'POST', '/v1/vms/h1/pause', { timeoutMs: 30_000 });
    const took = Date.now() - t0;
    assert.equal(r.status, 503, r.text);
    assert.match(r.text, /did not answer the pause of VM \d+ \(h1\) within 10000 ms/);
    assert.ok(took < 15_000, `the pause took ${took} ms`);
    await until('the executor to be gone', () => Promise.resolve(!isAlive(ex.pid)), 5000);
    for (const name of ['h1', 'h2']) {
      const v = await vmOf(d.socket, name);
      assert.equal(v.state, 'exited');
      assert.equal(v.exit?.kind === 'crash' && v.exit.code, 'executor-lost');
    }
    await until('executor.lost on the event stream', () => Promise.resolve(events.text().includes('"executor.lost"')), 5000);
    events.close();
    const next = await create(d, { image: 'counter', name: 'h3' });
    assert.notEqual(next.executor, vm.executor);
    await untilCount(d.socket, 'h3', 2, 20_000);
  });
});

void describe('a request too large for one frame', () => {
  let fleet: ExecutorFleet;
  let host: Host;
  let dir: string;
  before(async () => {
    dir = mkdtempSync(join(tmpdir(), 'lightvm-tfq-'));
    ({ fleet } = await ExecutorFleet.start({ runtimeDir: dir, spare: 0 }));
    host = new Host(fleet);
  });
  after(async () => {
    await host.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void it('a restore of a decoded snapshot with 20 MiB of pages is refused with the reason; the executor and its VMs go on', async () => {
    const image = buildGuest(dir, 'toucher', TOUCHER_C);
    const calm = await host.create({ image: 'counter', name: 'calm' });
    const big = await host.create({ image, name: 'big', memoryMiB: 32 });
    await waitFor('the toucher to have written its memory', () => big.consoleText().includes('touched'), 20_000);
    const file = join(dir, 'big.snap');
    await big.save(file, { checkpoint: true });
    const snapshot = decodeSnapshot(file, readFileSync(file));
    await assert.rejects(host.restore({ snapshot, name: 'big2' }), /a restore request of \d+ bytes exceeds the 16777216 bytes a frame to it may have/);
    assert.ok(calm.executor.isAlive, 'the executor was lost');
    assert.equal(host.get('big2'), undefined, 'the refused restore left a record');
    const n = calm.consoleText().length;
    await waitFor('the calm VM to print on', () => calm.consoleText().length > n + 20, 20_000);
    assert.equal(big.state, 'running');
    await big.destroy();
    await calm.destroy();
  });
});
