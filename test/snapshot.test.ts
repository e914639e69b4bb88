// Snapshots. Through a real daemon: save (the VM ends as saved) and
// restore, checkpoints that keep the source running, paused and parked
// VMs, all with the counting guest, whose console proves that no step is
// lost or repeated. Files that are truncated, damaged, of another version
// or not snapshots at all are refused whole, with the reason, and leave no
// VM behind, through the API and through the library (no descriptor
// leaked). And the file format itself (src/vmm/snapshot.ts).
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError } from '../src/index.js';
import {
  decodeSnapshot, encodeSnapshot, nonZeroPages, readSnapshotHeader, SECTION, SNAPSHOT_END, SNAPSHOT_MAGIC, SNAPSHOT_VERSION,
  SnapshotError, writeSnapshotFile, type SnapshotHeader,
} from '../src/vmm/snapshot.js';
import { executorProcesses, fdDiff, fdTargets, ok, request, startTestDaemon, until, type ApiErrorBody, type TestDaemon } from './daemon-helpers.js';
import { openFds, ROOT, sleep, tempDir, waitFor } from './helpers.js';
import {
  assertCounting, assertStill, consoleOf, counts, cpuNs, lastCount, listed, untilCount, untilExited, vmOf, type TimedVmView,
} from './vm-helpers.js';

const PAGE = 4096;
const errorOf = (r: { json: unknown }): ApiErrorBody['error'] | undefined => (r.json as ApiErrorBody | undefined)?.error;

/** A snapshot's console history, as text. */
function savedConsole(file: string): string {
  return Buffer.from(decodeSnapshot(file, readFileSync(file)).console).toString('utf8');
}

interface BadFile {
  what: string;
  bytes: Buffer;
  /** What the refusal must say. */
  says: RegExp;
  /** What decodeSnapshot, which checks the whole file first, says when that differs. */
  whole?: RegExp;
}

/** A good snapshot spoilt every way a file gets spoilt: truncated anywhere, a byte flipped, another version. */
function spoilt(good: Buffer): BadFile[] {
  const headLen = good.readUInt32LE(12);
  const truncated = /end marker is missing: the file is truncated/;
  const flip = (at: number): Buffer => {
    const b = Buffer.from(good);
    b[at] = b[at]! ^ 0x20;
    return b;
  };
  const v2 = Buffer.from(good);
  v2.writeUInt32LE(2, 8);
  return [
    { what: 'empty', bytes: Buffer.alloc(0), says: /file: 0 bytes is too short to be a snapshot/ },
    { what: 'cut in the fixed header', bytes: good.subarray(0, 10), says: /file: 10 bytes is too short to be a snapshot/ },
    { what: 'cut inside the JSON header', bytes: good.subarray(0, 16 + (headLen >> 1)), says: /header: the file ends inside the header: it is truncated/, whole: truncated },
    { what: 'cut right after the JSON header', bytes: good.subarray(0, 16 + headLen), says: truncated },
    { what: 'cut in the middle (memory pages)', bytes: good.subarray(0, good.length >> 1), says: truncated },
    { what: 'cut before the end marker', bytes: good.subarray(0, good.length - 40), says: truncated },
    { what: 'cut before the checksum', bytes: good.subarray(0, good.length - 32), says: truncated },
    { what: 'last byte cut', bytes: good.subarray(0, good.length - 1), says: truncated },
    { what: 'bytes appended', bytes: Buffer.concat([good, Buffer.from('more')]), says: /end marker is missing/ },
    { what: 'a byte flipped in the middle', bytes: flip(good.length >> 1), says: /checksum: SHA-256 does not match: the file is damaged/ },
    { what: 'a byte flipped in the vCPU state', bytes: flip(16 + headLen + 16 + 8), says: /checksum: SHA-256 does not match: the file is damaged/ },
    { what: 'a byte flipped in the checksum itself', bytes: flip(good.length - 5), says: /checksum: SHA-256 does not match: the file is damaged/ },
    { what: 'version 2', bytes: v2, says: /version: snapshot version 2; this LightVM reads version 1 only/ },
    { what: 'not a snapshot (package.json)', bytes: readFileSync(join(ROOT, 'package.json')), says: /magic: not a LightVM snapshot/ },
  ];
}

void describe('snapshots through the daemon', () => {
  let d: TestDaemon;
  let files: { dir: string; cleanup: () => void };
  before(async () => {
    // One prepared shell: a restore may land in a shell that has already run once.
    d = await startTestDaemon({ args: ['--pool', '4:1'], prefix: 'snap' });
    files = tempDir('snapfiles');
  });
  after(async () => {
    await d.stop();
    files.cleanup();
  });

  void it('save ends the VM as saved; restore brings it back under its name, counting on from the next line', async () => {
    const { vm: first } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'ctr' }, 201);
    await untilCount(d.socket, 'ctr', 10);
    const file = join(files.dir, 'ctr.snap');
    const r = await ok<{ vm: TimedVmView; snapshot: { file: string; bytes: number; pages: number; ms: number } }>(
      d.socket, 'POST', '/v1/vms/ctr/save', { file });
    assert.equal(r.vm.state, 'exited');
    assert.deepEqual(r.vm.exit, { kind: 'saved', file });
    assert.equal(r.snapshot.file, file);
    assert.equal(r.snapshot.bytes, statSync(file).size);
    assert.ok(r.snapshot.pages > 0 && r.snapshot.pages < 1024, `${r.snapshot.pages} pages of a 4 MiB counter`);
    assert.equal(statSync(file).mode & 0o777, 0o600, 'snapshot file mode');
    // Ended: its record stays, its console stops where the file's history stops.
    const saved = await assertStill(d.socket, 'ctr', 100, 'a saved VM');
    const k = assertCounting(saved, 'the saved VM');
    assert.ok(k >= 10);
    assert.equal(savedConsole(file), saved, 'the file\'s console history is not what the VM printed');
    // Only pages that hold something are in it: as many as the save said, none all zero.
    const s = decodeSnapshot(file, readFileSync(file));
    assert.equal(s.pages.size, r.snapshot.pages);
    for (const [p, data] of s.pages) assert.ok(data.some((b) => b !== 0), `page ${p} is all zero`);
    assert.equal(s.header.vm.name, 'ctr');
    assert.equal(s.header.vm.memory, 4 << 20);
    assert.equal(s.header.image.sha256, createHash('sha256').update(readFileSync(s.header.image.path)).digest('hex'), 'image identity');
    assert.equal((await vmOf(d.socket, 'ctr')).state, 'exited');

    const { vm } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/restore', { file }, 201);
    assert.equal(vm.name, 'ctr');
    assert.equal(vm.state, 'running');
    assert.notEqual(vm.id, first.id, 'a restore takes a new id');
    assert.deepEqual((await listed(d.socket)).filter((l) => l.includes(' ctr ')), [`${vm.id} ctr running`], 'one VM named ctr');
    const text = await untilCount(d.socket, 'ctr', k + 20);
    assert.ok(text.startsWith(saved), 'the restored console does not start with the saved history');
    assertCounting(text, 'the restored counter');
    await request(d.socket, 'DELETE', '/v1/vms/ctr');
  });

  void it('a paused VM is restored paused, and counts on from where it stopped once unpaused', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'pz' }, 201);
    await untilCount(d.socket, 'pz', 5);
    await ok(d.socket, 'POST', '/v1/vms/pz/pause');
    const paused = await consoleOf(d.socket, 'pz');
    const file = join(files.dir, 'pz.snap');
    await ok(d.socket, 'POST', '/v1/vms/pz/save', { file });
    assert.equal((await readSnapshotHeader(file)).paused, true, 'header.paused');
    const { vm } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/restore', { file }, 201);
    assert.equal(vm.state, 'paused');
    assert.equal((await vmOf(d.socket, 'pz')).state, 'paused');
    assert.equal(await assertStill(d.socket, 'pz', 200, 'a VM restored paused'), paused, 'the history changed');
    await ok(d.socket, 'POST', '/v1/vms/pz/unpause');
    const k = lastCount(paused);
    const text = await untilCount(d.socket, 'pz', k + 10);
    assertCounting(text, 'the unpaused restored counter');
    await request(d.socket, 'DELETE', '/v1/vms/pz');
  });

  void it('a VM parked in a long POLL is restored still waiting for the rest of its time, not woken at once nor from zero', async () => {
    const t0 = Date.now();
    await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', name: 'slp', cmdline: '1000' }, 201);
    await sleep(300);
    const file = join(files.dir, 'slp.snap');
    await ok(d.socket, 'POST', '/v1/vms/slp/save', { file });
    const { parked } = await readSnapshotHeader(file);
    assert.ok(parked, 'a sleeper in its POLL is saved as parked');
    const remainingMs = parked.remainingNs / 1e6;
    assert.ok(remainingMs > 300 && remainingMs < 720, `${remainingMs} ms left of a 1000 ms POLL saved after 300 ms`);
    // Saved: no time passes for it in its POLL until restored.
    await sleep(300);
    await ok(d.socket, 'POST', '/v1/restore', { file }, 201);
    const vm = await untilExited(d.socket, 'slp', 3000);
    const wallMs = Date.now() - t0;
    assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
    const t = vm.timings!;
    const waitedMs = (t.endNs - t.loadedNs) / 1e6;
    assert.ok(waitedMs >= remainingMs - 5, `woke ${waitedMs} ms after the restore, before its ${remainingMs} ms were up`);
    assert.ok(waitedMs < remainingMs + 150, `woke ${waitedMs} ms after the restore, not after the ${remainingMs} ms it had left`);
    // Its WALLTIME went on while it was saved: it slept longer than it asked, at most the wall time seen here.
    const slept = Number(/^slept (\d+) ms\n$/.exec(await consoleOf(d.socket, 'slp'))?.[1] ?? NaN);
    assert.ok(slept >= 1000 + 300 - 50 && slept <= wallMs + 20, `slept ${slept} ms (wall ${wallMs} ms)`);
  });

  void it('a checkpoint keeps the source counting; it restores under another name from the checkpoint on', async () => {
    const { vm: src } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'src' }, 201);
    const before = lastCount(await untilCount(d.socket, 'src', 10));
    const file = join(files.dir, 'src.snap');
    const r = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/vms/src/save', { file, checkpoint: true });
    const afterCp = lastCount(await consoleOf(d.socket, 'src'));
    assert.equal(r.vm.state, 'running');
    assert.equal(r.vm.exit, null);
    const cp = savedConsole(file);
    const k = assertCounting(cp, 'the checkpoint\'s history');
    assert.ok(k >= before && k <= afterCp, `checkpoint at count ${k}, taken between ${before} and ${afterCp}`);
    // The source went on: nothing lost or repeated across its brief stop.
    assertCounting(await untilCount(d.socket, 'src', k + 20), 'the source after its checkpoint');

    const { vm: copy } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/restore', { file, name: 'cp' }, 201);
    assert.equal(copy.name, 'cp');
    assert.notEqual(copy.id, src.id);
    const text = await untilCount(d.socket, 'cp', k + 10);
    assert.ok(text.startsWith(cp), 'the copy\'s console does not start with the checkpoint\'s history');
    assertCounting(text, 'the copy');
    assert.equal((await vmOf(d.socket, 'src')).state, 'running');

    // Under its own name it cannot come back while the source runs.
    const was = await listed(d.socket);
    const clash = await request(d.socket, 'POST', '/v1/restore', { body: { file } });
    assert.equal(clash.status, 409, clash.text);
    assert.match(errorOf(clash)?.message ?? '', /a VM named "src" already exists/);
    assert.deepEqual(await listed(d.socket), was);
    await request(d.socket, 'DELETE', '/v1/vms/cp');
  });

  void it('a guest that never exits (spin) is saved on request, and its copy spins on', async () => {
    const { vm } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/vms', { image: 'spin', name: 'sp' }, 201);
    await sleep(50);
    const file = join(files.dir, 'sp.snap');
    const t0 = Date.now();
    await ok(d.socket, 'POST', '/v1/vms/sp/save', { file, checkpoint: true });
    assert.ok(Date.now() - t0 < 2000, `a save of a spinning guest took ${Date.now() - t0} ms`);
    const { vm: copy } = await ok<{ vm: TimedVmView }>(d.socket, 'POST', '/v1/restore', { file, name: 'sp2' }, 201);
    const a = (await cpuNs(d.socket)).get(copy.id) ?? 0;
    await sleep(200);
    const b = (await cpuNs(d.socket)).get(copy.id) ?? 0;
    assert.ok(b - a > 50e6, `the restored spin ran ${(b - a) / 1e6} ms of 200`);
    assert.equal(await consoleOf(d.socket, 'sp2'), 'spinning\n');
    await request(d.socket, 'DELETE', `/v1/vms/${vm.id}`);
    await request(d.socket, 'DELETE', '/v1/vms/sp2');
  });

  void it('truncated, damaged, foreign-version and non-snapshot files are refused with the reason; no VM is left, no executor gains one', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'base' }, 201);
    await untilCount(d.socket, 'base', 3);
    const goodFile = join(files.dir, 'base.snap');
    await ok(d.socket, 'POST', '/v1/vms/base/save', { file: goodFile, checkpoint: true });
    const good = readFileSync(goodFile);
    const vmsBefore = await listed(d.socket);
    const statsBefore = [...(await cpuNs(d.socket)).keys()].sort();
    const executors = executorProcesses(d.runtimeDir).map((p) => p.pid);
    const fdsBefore = new Map(executors.map((pid) => [pid, fdTargets(pid)]));

    const cases: { what: string; file: string; status: number; says: RegExp }[] = spoilt(good).map((c, i) => {
      const file = join(files.dir, `bad-${i}.snap`);
      writeFileSync(file, c.bytes);
      return { what: c.what, file, status: 422, says: c.says };
    });
    cases.push(
      { what: 'missing file', file: join(files.dir, 'nosuch.snap'), status: 422, says: /no such file/ },
      { what: 'relative path', file: 'base.snap', status: 400, says: /file: "base.snap" is not an absolute path/ },
    );
    for (const [i, c] of cases.entries()) {
      const r = await request(d.socket, 'POST', '/v1/restore', { body: { file: c.file, name: `bad${i}` } });
      assert.equal(r.status, c.status, `${c.what}: ${r.text}`);
      const e = errorOf(r);
      assert.equal(e?.field, 'file', `${c.what}: ${r.text}`);
      assert.match(e?.message ?? '', c.says, c.what);
      if (c.status === 422) assert.ok(e!.message.includes(c.file), `${c.what}: the message does not name the file: ${e!.message}`);
      assert.deepEqual(await listed(d.socket), vmsBefore, `${c.what}: the VM list changed`);
    }
    // The executors agree: they run exactly the VMs they ran, and hold what they held.
    assert.deepEqual([...(await cpuNs(d.socket)).keys()].sort(), statsBefore, 'an executor gained or lost a VM');
    assert.deepEqual(executorProcesses(d.runtimeDir).map((p) => p.pid), executors, 'executors changed');
    // A refused restore may use up the prepared shell; the pool then makes another.
    await until('the executors to hold what they held', () =>
      Promise.resolve(executors.every((pid) => fdDiff(fdsBefore.get(pid)!, fdTargets(pid)) === '')), 5000)
      .catch(() => assert.fail(executors.map((pid) => `executor ${pid}: ${fdDiff(fdsBefore.get(pid)!, fdTargets(pid))}`).join('; ')));
    // And the good file still restores.
    await ok(d.socket, 'POST', '/v1/restore', { file: goodFile, name: 'base2' }, 201);
    assertCounting(await untilCount(d.socket, 'base2', lastCount(savedConsole(goodFile)) + 3), 'the good file restored');
  });

  // A damaged header must not be trusted before the file is checked: a key
  // spoiled ("vm" -> "vn") once surfaced as a TypeError and a 500, and a
  // spoiled memory size as a shell error that named neither file nor damage.
  void it('one byte flipped anywhere in the header: refused as damaged, naming the file, never a 500', async () => {
    const goodFile = join(files.dir, 'hdr.snap');
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'hdr' }, 201);
    await ok(d.socket, 'POST', '/v1/vms/hdr/save', { file: goodFile, checkpoint: true });
    const good = readFileSync(goodFile);
    const end = 16 + good.readUInt32LE(12);
    const vmsBefore = await listed(d.socket);
    const file = join(files.dir, 'hdr-flipped.snap');
    const wrong = new Map<string, number[]>();
    for (let at = 0; at < end; at++) {
      const b = Buffer.from(good);
      b[at] = b[at]! ^ 0x01;
      writeFileSync(file, b);
      const r = await request(d.socket, 'POST', '/v1/restore', { body: { file, name: 'flipped' } });
      const message = errorOf(r)?.message ?? r.text;
      // The daemon judges the header's image path (F18) before the executor checks the
      // whole file's checksum: a flip that moves the path out of its roots is a 403 then.
      const outside = r.status === 403 && errorOf(r)?.code === 'path-not-allowed' && message.startsWith(`file: ${file}: its image `);
      if (!outside && (r.status !== 422 || !message.startsWith(`${file}: `))) {
        const key = `${r.status} ${message.replace(/\d+(\.\d+)?/g, 'N')}`;
        wrong.set(key, [...(wrong.get(key) ?? []), at]);
        if (r.status === 201) await request(d.socket, 'DELETE', '/v1/vms/flipped');
      }
    }
    assert.deepEqual(await listed(d.socket), vmsBefore, 'a VM was left behind');
    const report = [...wrong].map(([k, at]) => `${k} (byte ${at.join(', ')} of ${end})`);
    assert.deepEqual(report, [], 'refusals that are not "<file>: <field>: <reason>" with 422');
  });
});

void describe('snapshots through the library (executor threads in this process)', () => {
  let host: Host;
  let files: { dir: string; cleanup: () => void };
  let good: Buffer;
  let goodFile: string;
  let savedAt = 0;
  before(async () => {
    host = await Host.start({ executors: 1 });
    files = tempDir('libsnap');
    const vm = await host.create({ image: 'counter', name: 'lib' });
    const text = (): string => vm.consoleText();
    await waitFor('the counter to count', () => lastCount(text()) >= 5, 5000);
    goodFile = join(files.dir, 'lib.snap');
    const r = await vm.save(goodFile);
    assert.deepEqual(await vm.exited, { kind: 'saved', file: goodFile });
    // Its KVM descriptors are freed at the executor's next idle moment: the
    // test below counts descriptors, so wait for that.
    await vm.freed;
    assert.equal(r.bytes, statSync(goodFile).size);
    savedAt = lastCount(text());
    good = readFileSync(goodFile);
  });
  after(async () => {
    await host.close();
    files.cleanup();
  });

  void it('bad files: Host.restore rejects with a VmCreateError saying why, creates no VM and leaks no descriptor', async () => {
    const cases = spoilt(good).map((c, i) => {
      const file = join(files.dir, `bad-${i}.snap`);
      writeFileSync(file, c.bytes);
      return { ...c, file };
    });
    cases.push({ what: 'missing file', bytes: Buffer.alloc(0), file: join(files.dir, 'nosuch.snap'), says: /nosuch\.snap: no such file/ });
    const vmsBefore = host.list().map((v) => `${v.id} ${v.name} ${v.state}`);
    const fds = openFds();
    for (const c of cases) {
      await assert.rejects(host.restore({ file: c.file, name: 'nope' }), (err: Error) => {
        assert.ok(err instanceof VmCreateError, `${c.what}: ${err.name}: ${err.message}`);
        assert.match(err.message, c.says, c.what);
        assert.equal(typeof err.field, 'string', `${c.what}: no field`);
        return true;
      });
    }
    // The bytes themselves (as a migration receives them) are checked whole before anything is created.
    for (const c of spoilt(good)) {
      await assert.rejects(host.restore({ data: c.bytes, name: 'nope' }), (err: Error) => {
        assert.ok(err instanceof VmCreateError, `${c.what} (data): ${err.name}: ${err.message}`);
        assert.match(err.message, c.whole ?? c.says, `${c.what} (data)`);
        return true;
      });
    }
    assert.deepEqual(host.list().map((v) => `${v.id} ${v.name} ${v.state}`), vmsBefore, 'a refused restore left a VM');
    assert.equal(host.get('nope'), undefined);
    assert.deepEqual(openFds(), fds, 'descriptors of this process changed');
  });

  void it('the good file restores and counts on from the line after the save', async () => {
    const vm = await host.restore({ file: goodFile });
    assert.equal(vm.name, 'lib');
    await waitFor('the restored counter to count', () => lastCount(vm.consoleText()) >= savedAt + 5, 5000);
    // Executor threads keep no console history: the copy starts with the saved history, or right after it.
    const n = counts(vm.consoleText(), 'the restored counter');
    assert.ok(n[0] === 0 || n[0] === savedAt + 1, `the restored console starts at count ${n[0]}`);
    assertCounting(vm.consoleText(), 'the restored counter', n[0]);
    assert.ok(n.includes(savedAt + 1), `count ${savedAt + 1} is missing`);
    await vm.destroy();
  });

  void it('a byte flipped in a header key: a VmCreateError, not a TypeError', async () => {
    // One byte each: "vm" -> "vn", "image" -> "imagg" (valid JSON still, same length).
    for (const [key, spoiled] of [['"vm"', '"vn"'], ['"image"', '"imagg"']] as const) {
      const at = good.indexOf(key);
      const b = Buffer.concat([good.subarray(0, at), Buffer.from(spoiled), good.subarray(at + key.length)]);
      assert.equal(b.length, good.length);
      const file = join(files.dir, `key-${spoiled.replace(/"/g, '')}.snap`);
      writeFileSync(file, b);
      await assert.rejects(host.restore({ file, name: 'nope' }), (err: Error) => {
        assert.ok(err instanceof VmCreateError, `${spoiled}: ${err.name}: ${err.message}`);
        return true;
      });
    }
    assert.equal(host.get('nope'), undefined);
  });
});

// ---- the file format ----

const MEM = 4 << 20;

function filled(n: number, v: number): Uint8Array {
  return new Uint8Array(n).fill(v);
}

function header(over: Partial<SnapshotHeader> = {}): SnapshotHeader {
  return {
    vm: { id: 7, name: 'unit', memory: MEM, cmdline: 'x=1', devices: [] },
    image: { path: '/nonexistent/unit.elf', sha256: null },
    msrs: [[0x10, '0x123456789abcdef0'], [0x174, '0x0']],
    parked: { arg: 0x3ff000, remainingNs: 123_456_789 },
    paused: true,
    savedAt: '2020-01-01T00:00:00.000Z',
    kernel: 'unit',
    ...over,
  };
}

const vcpu = { regs: filled(144, 1), sregs: filled(312, 2), xsave: filled(4096, 3), events: filled(64, 4), msrs: [] };

/** Guest memory with data on pages 1, 5 and 1023; page 9 written but zero again. */
function memory(): Uint8Array {
  const m = new Uint8Array(MEM);
  m[PAGE * 1] = 0xaa;
  m[PAGE * 5 + 4095] = 0x55;
  m.fill(0x11, PAGE * 1023, PAGE * 1024);
  return m;
}

/** A file of our own making, with a correct checksum: whatever sections we say. */
function assemble(head: unknown, sections: [number, Uint8Array][], version = SNAPSHOT_VERSION): Buffer {
  const h = Buffer.from(typeof head === 'string' ? head : JSON.stringify(head), 'utf8');
  const pre = Buffer.alloc(16);
  pre.write(SNAPSHOT_MAGIC, 0, 'latin1');
  pre.writeUInt32LE(version, 8);
  pre.writeUInt32LE(h.length, 12);
  const parts: Buffer[] = [pre, h];
  for (const [type, data] of sections) {
    const sh = Buffer.alloc(16);
    sh.writeUInt32LE(type, 0);
    sh.writeBigUInt64LE(BigInt(data.length), 8);
    parts.push(sh, Buffer.from(data));
  }
  const body = Buffer.concat(parts);
  return Buffer.concat([body, Buffer.from(SNAPSHOT_END, 'latin1'), createHash('sha256').update(body).digest()]);
}

function pageRecords(pages: [number, Uint8Array][]): Uint8Array {
  const out = Buffer.alloc(pages.length * (4 + PAGE));
  pages.forEach(([p, data], i) => {
    out.writeUInt32LE(p, i * (4 + PAGE));
    out.set(data, i * (4 + PAGE) + 4);
  });
  return out;
}

const standard = (mem: Uint8Array = pageRecords([[1, filled(PAGE, 1)]])): [number, Uint8Array][] => [
  [SECTION.regs, vcpu.regs], [SECTION.sregs, vcpu.sregs], [SECTION.xsave, vcpu.xsave], [SECTION.events, vcpu.events],
  [SECTION.devicePage, filled(PAGE, 9)], [SECTION.memory, mem], [SECTION.console, Buffer.from('hi\n')],
];

function refusal(buf: Uint8Array): string {
  try {
    decodeSnapshot('f.snap', buf);
  } catch (err) {
    assert.ok(err instanceof SnapshotError, `${(err as Error).name}: ${(err as Error).message}`);
    return err.message;
  }
  return 'accepted';
}

void describe('the snapshot file format', () => {
  void it('only pages that are backed and not zero are worth saving', () => {
    const m = memory();
    m[PAGE * 9] = 0; // written once, zero again: backed, but all zero
    const all = nonZeroPages(m);
    assert.deepEqual(all, [1, 5, 1023]);
    // A page the host never backed is not read, whatever it holds.
    const resident = new Uint8Array(MEM / PAGE).fill(1);
    resident[5] = 0;
    assert.deepEqual(nonZeroPages(m, resident), [1, 1023]);
    assert.deepEqual(nonZeroPages(new Uint8Array(MEM)), []);
  });

  void it('encode then decode gives everything back; the sections have the sizes of KVM\'s structs', () => {
    const m = memory();
    const pages = nonZeroPages(m);
    const h = header();
    const consoleText = Buffer.from('count 0\ncount 1\n');
    const file = encodeSnapshot({ header: h, vcpu, devicePage: filled(PAGE, 9), memory: m, pages, console: consoleText });
    const headLen = Buffer.byteLength(JSON.stringify(h));
    // magic + version + header length, header, 7 section headers, the sections, end marker, SHA-256.
    const expected = 16 + headLen + 7 * 16 + 144 + 312 + 4096 + 64 + PAGE + pages.length * (4 + PAGE) + consoleText.length + 8 + 32;
    assert.equal(file.length, expected, 'file size');
    assert.equal(file.toString('latin1', 0, 8), SNAPSHOT_MAGIC);
    assert.equal(file.readUInt32LE(8), 1);
    assert.equal(file.toString('latin1', file.length - 40, file.length - 32), SNAPSHOT_END);
    assert.deepEqual(file.subarray(file.length - 32), createHash('sha256').update(file.subarray(0, file.length - 40)).digest());

    const s = decodeSnapshot('f.snap', file);
    assert.deepEqual(s.header, h);
    assert.deepEqual(s.vcpu.regs, vcpu.regs);
    assert.deepEqual(s.vcpu.sregs, vcpu.sregs);
    assert.deepEqual(s.vcpu.xsave, vcpu.xsave);
    assert.deepEqual(s.vcpu.events, vcpu.events);
    assert.deepEqual(s.vcpu.msrs, [{ index: 0x10, data: 0x123456789abcdef0n }, { index: 0x174, data: 0n }]);
    assert.deepEqual(s.devicePage, filled(PAGE, 9));
    assert.deepEqual([...s.pages.keys()].sort((a, b) => a - b), [1, 5, 1023]);
    for (const [p, data] of s.pages) assert.deepEqual(data, m.subarray(p * PAGE, (p + 1) * PAGE), `page ${p}`);
    assert.equal(Buffer.from(s.console).toString(), consoleText.toString());
    // Pages are views of the bytes handed over (restore copies them once,
    // into guest memory); the small vCPU parts are copies.
    file.fill(0);
    assert.equal(s.pages.get(1)![0], 0);
    assert.equal(s.vcpu.regs[0], 1);
  });

  void it('a file cut anywhere, or with any one byte changed, is refused whole with a SnapshotError', () => {
    const m = new Uint8Array(MEM);
    m[PAGE * 3] = 1;
    const file = encodeSnapshot({ header: header(), vcpu, devicePage: filled(PAGE, 9), memory: m, pages: [3], console: Buffer.from('x') });
    for (let n = 0; n < file.length; n++) {
      const why = refusal(file.subarray(0, n));
      assert.notEqual(why, 'accepted', `cut at ${n} of ${file.length}`);
    }
    for (let at = 0; at < file.length; at++) {
      const b = Buffer.from(file);
      b[at] = b[at]! ^ 0x80;
      assert.notEqual(refusal(b), 'accepted', `byte ${at} of ${file.length} changed`);
    }
    // Beyond the first bytes, the reason is the one that matters.
    assert.match(refusal(file.subarray(0, file.length - 1)), /^f\.snap: end: the end marker is missing: the file is truncated$/);
    const mid = Buffer.from(file);
    mid[file.length >> 1] = mid[file.length >> 1]! ^ 1;
    assert.match(refusal(mid), /^f\.snap: checksum: SHA-256 does not match: the file is damaged$/);
    const v = Buffer.from(file);
    v.writeUInt32LE(0, 8);
    assert.match(refusal(v), /^f\.snap: version: snapshot version 0; this LightVM reads version 1 only$/);
  });

  void it('a file with a right checksum but wrong insides is refused, saying which part is wrong', () => {
    const h = header();
    assert.equal(refusal(assemble(h, standard())), 'accepted', 'the standard crafted file');
    const cases: [string, Buffer, RegExp][] = [
      ['registers of the wrong size', assemble(h, standard().map(([t, d]) => [t, t === SECTION.regs ? filled(100, 1) : d])), /section regs: 100 bytes, expected 144/],
      ['sregs of the wrong size', assemble(h, standard().map(([t, d]) => [t, t === SECTION.sregs ? filled(313, 1) : d])), /section sregs: 313 bytes, expected 312/],
      ['xsave of the wrong size', assemble(h, standard().map(([t, d]) => [t, t === SECTION.xsave ? filled(1024, 1) : d])), /section xsave: 1024 bytes, expected 4096/],
      ['events of the wrong size', assemble(h, standard().map(([t, d]) => [t, t === SECTION.events ? filled(0, 1) : d])), /section events: 0 bytes, expected 64/],
      ['a short device page', assemble(h, standard().map(([t, d]) => [t, t === SECTION.devicePage ? filled(4095, 1) : d])), /section device page: 4095 bytes, expected 4096/],
      ['no memory section', assemble(h, standard().filter(([t]) => t !== SECTION.memory)), /section memory: missing/],
      ['no registers', assemble(h, standard().filter(([t]) => t !== SECTION.regs)), /section regs: missing/],
      ['a section twice', assemble(h, [...standard(), [SECTION.console, Buffer.from('again')]]), /section 7: appears twice/],
      ['a page outside memory', assemble(h, standard(pageRecords([[1024, filled(PAGE, 1)]]))), /page 1024 lies outside 4 MiB of memory/],
      ['a page twice', assemble(h, standard(pageRecords([[2, filled(PAGE, 1)], [2, filled(PAGE, 2)]]))), /page 2 appears twice/],
      ['a broken page record', assemble(h, standard(filled(4 + PAGE + 1, 0))), /section memory: 4101 bytes is not a whole number of page records/],
      ['memory that is not whole pages', assemble(header({ vm: { ...h.vm, memory: MEM + 1 } }), standard()), /header\.vm\.memory: 4194305 must be multiple of 1048576/],
      ['no memory size', assemble({ ...h, vm: { ...h.vm, memory: undefined } }, standard()), /header\.vm\.memory: missing/],
      ['no MSRs', assemble({ ...h, msrs: undefined }, standard()), /header\.msrs: missing/],
      ['a header that is not JSON', assemble('{"vm":', standard()), /header: not valid JSON/],
    ];
    for (const [what, buf, re] of cases) assert.match(refusal(buf), re, what);
    // A section whose length runs past the end.
    const past = assemble(h, standard());
    const at = 16 + Buffer.byteLength(JSON.stringify(h));
    const longer = Buffer.from(past.subarray(0, past.length - 40));
    longer.writeBigUInt64LE(1n << 40n, at + 8);
    const resummed = Buffer.concat([longer, Buffer.from(SNAPSHOT_END, 'latin1'), createHash('sha256').update(longer).digest()]);
    assert.match(refusal(resummed), /section 1: 1099511627776 bytes at byte \d+ run past the end/);
    // A header length that runs past the end.
    const hl = Buffer.from(past.subarray(0, past.length - 40));
    hl.writeUInt32LE(hl.length, 12);
    assert.match(refusal(Buffer.concat([hl, Buffer.from(SNAPSHOT_END, 'latin1'), createHash('sha256').update(hl).digest()])),
      /header: header length \d+ runs past the end of the file/);
  });

  void it('writeSnapshotFile writes more parts than one writev takes, whole, private, and nothing when it fails', () => {
    const { dir, cleanup } = tempDir('snapwrite');
    try {
      // 3,000 parts: more than IOV_MAX (1,024), so the write goes in several calls.
      const parts = Array.from({ length: 3000 }, (_, i) => Buffer.alloc(1 + (i % 7) * 600, i & 0xff));
      const file = join(dir, 'many.snap');
      writeSnapshotFile(file, parts);
      assert.ok(readFileSync(file).equals(Buffer.concat(parts)), 'the file is the parts in order');
      assert.equal(statSync(file).mode & 0o777, 0o600);
      assert.throws(() => writeSnapshotFile(join(dir, 'none', 'x.snap'), parts), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
      assert.deepEqual(readdirSync(dir), ['many.snap'], 'no temporary file left');
    } finally {
      cleanup();
    }
  });

  void it('readSnapshotHeader reads only the header, and refuses what is plainly not a snapshot', async () => {
    const { dir, cleanup } = tempDir('snaphdr');
    try {
      const m = new Uint8Array(MEM);
      const file = join(dir, 'a.snap');
      const h = header();
      const good = encodeSnapshot({ header: h, vcpu, devicePage: filled(PAGE, 9), memory: m, pages: [], console: new Uint8Array(0) });
      writeFileSync(file, good);
      assert.deepEqual(await readSnapshotHeader(file), h);
      // Its checksum is not its business: a file damaged past the header still reads.
      const damaged = Buffer.from(good);
      damaged[damaged.length - 100] = damaged[damaged.length - 100]! ^ 1;
      writeFileSync(file, damaged);
      assert.deepEqual(await readSnapshotHeader(file), h);
      // A header longer than the first read takes (16 KiB) is read on, whole.
      const headLen = good.readUInt32LE(12);
      const longHead = Buffer.from(`${' '.repeat(40_000)}${good.toString('utf8', 16, 16 + headLen)}`, 'utf8');
      const long = Buffer.concat([good.subarray(0, 16), longHead, good.subarray(16 + headLen)]);
      long.writeUInt32LE(longHead.length, 12);
      writeFileSync(file, long);
      assert.deepEqual(await readSnapshotHeader(file), h);
      const refused = async (bytes: Buffer, re: RegExp): Promise<void> => {
        writeFileSync(file, bytes);
        await assert.rejects(readSnapshotHeader(file), (err: Error) => err instanceof SnapshotError && re.test(err.message));
      };
      await refused(good.subarray(0, 15), /file: 15 bytes is too short to be a snapshot/);
      await refused(Buffer.concat([Buffer.from('LVMSNAQ\0'), good.subarray(8)]), /magic: not a LightVM snapshot/);
      const v = Buffer.from(good);
      v.writeUInt32LE(7, 8);
      await refused(v, /version: snapshot version 7; this LightVM reads version 1 only/);
      await refused(good.subarray(0, 40), /header: the file ends inside the header: it is truncated/);
      const huge = Buffer.from(good);
      huge.writeUInt32LE(2 << 20, 12);
      await refused(huge, /header: header length 2097152 is implausible/);
      await assert.rejects(readSnapshotHeader(join(dir, 'none.snap')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    } finally {
      cleanup();
    }
  });
});
