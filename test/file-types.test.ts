// Issue 10 F3, F4, F8, F16: a path the API or the command line is given
// may name anything: a FIFO, a directory, a device node, a symlink, a file
// someone else prepared. Snapshot files are read and written only as the
// regular files they claim to be; anything else is refused, naming the
// path, without a blocking read on the daemon's thread, and without
// following, replacing or deleting what is there. The restore refusals go
// through a real daemon; the save's file handling is the executor's
// writeSnapshotFile, run here directly, and through the API where there is
// /dev/kvm (a save needs a VM).
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync, constants as fsc, existsSync, lstatSync, mkdirSync, mkdtempSync, openSync, readdirSync, readFileSync, readlinkSync, rmSync,
  statSync, symlinkSync, writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { NotRegularFileError } from '../src/vmm/regular-file.js';
import { decodeSnapshot, readSnapshotFile, writeSnapshotFile } from '../src/vmm/snapshot.js';
import { CLI, ok, processesOf, request, startTestDaemon, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';
import { ROOT } from './helpers.js';
import { untilCount } from './vm-helpers.js';

const errorOf = (r: { json: unknown }): ApiErrorBody['error'] | undefined => (r.json as ApiErrorBody | undefined)?.error;

/** A device node (mknod needs root); undefined, with the reason, when it cannot be made. */
function charDevice(path: string): string | undefined {
  try {
    execFileSync('mknod', [path, 'c', '1', '3'], { stdio: ['ignore', 'ignore', 'pipe'] });
    return undefined;
  } catch (err) {
    return `mknod is not permitted here: ${(err as Error).message.trim()}`;
  }
}

/** A FIFO's reader blocked in open(2) goes on (a daemon frozen by a FIFO before the fix): nothing is left hanging. */
function releaseFifo(path: string): void {
  try {
    closeSync(openSync(path, fsc.O_WRONLY | fsc.O_NONBLOCK));
  } catch {
    // No reader: nobody waits on it.
  }
}

/** Names of the files left in dir that look like temporary files of a save. */
const temps = (dir: string): string[] => readdirSync(dir).filter((f) => f.includes('.tmp'));

void describe('restore files that are not regular files (daemon)', () => {
  let d: TestDaemon;
  let dir: string;
  before(async () => {
    d = await startTestDaemon({ prefix: 'ft' });
    dir = join(d.runtimeDir, 'files');
    mkdirSync(dir);
  });
  after(async () => {
    for (const f of existsSync(dir) ? readdirSync(dir) : []) if (lstatSync(join(dir, f)).isFIFO()) releaseFifo(join(dir, f));
    await d.stop();
  });

  void it('F3: a restore from a FIFO is refused at once, naming the file, while the API keeps answering', async () => {
    const fifo = join(dir, 'fifo.snap');
    execFileSync('mkfifo', [fifo]);
    const t0 = Date.now();
    const restoring = request(d.socket, 'POST', '/v1/restore', { body: { file: fifo, name: 'f' }, timeoutMs: 10_000 });
    let r;
    try {
      // Meanwhile the API answers: the daemon's thread is not stuck in the FIFO (it was, for good, before).
      const t1 = Date.now();
      const list = await request(d.socket, 'GET', '/v1/vms', { timeoutMs: 10_000 });
      const listMs = Date.now() - t1;
      assert.equal(list.status, 200, list.text);
      assert.ok(listMs < 1000, `GET /v1/vms took ${listMs} ms while a restore from a FIFO was asked for`);
      r = await restoring;
    } finally {
      releaseFifo(fifo);
    }
    const ms = Date.now() - t0;
    assert.equal(r.status, 422, r.text);
    assert.equal(errorOf(r)?.field, 'file');
    assert.match(errorOf(r)?.message ?? '', /is a FIFO, not a regular file/);
    assert.ok(errorOf(r)!.message.includes(fifo), `the message does not name the file: ${r.text}`);
    // Refused, not read until something gave up: the same loop answers everything else in milliseconds.
    assert.ok(ms < 5000, `the refusal took ${ms} ms`);
    assert.ok(lstatSync(fifo).isFIFO(), 'the FIFO is still there');
  });

  void it('F3: a directory, a device node, a symlink to a FIFO and a socket are refused as restore files, naming the path', async (t) => {
    // [what, the path asked for, what the refusal says, the path it names]
    const cases: [string, string, RegExp, string?][] = [];
    cases.push(['a directory', dir, /is a directory, not a regular file/]);
    const fifo = join(dir, 'behind-link');
    execFileSync('mkfifo', [fifo]);
    const link = join(dir, 'link.snap');
    symlinkSync(fifo, link);
    // The daemon resolves a link before it checks the path against its roots (F18): the refusal names the FIFO.
    cases.push(['a symlink to a FIFO', link, /is a FIFO, not a regular file/, fifo]);
    // The daemon's own API socket: a socket is not a file either.
    cases.push(['a unix socket', d.socket, /is a socket, not a regular file/]);
    const dev = join(dir, 'null.snap');
    const why = charDevice(dev);
    if (why === undefined) cases.push(['a character device', dev, /is a character device, not a regular file/]);
    for (const [what, file, says, named = file] of cases) {
      const r = await request(d.socket, 'POST', '/v1/restore', { body: { file, name: 'x' }, timeoutMs: 10_000 });
      assert.equal(r.status, 422, `${what}: ${r.text}`);
      assert.match(errorOf(r)?.message ?? '', says, what);
      assert.ok(errorOf(r)!.message.includes(named), `${what}: the message does not name ${named}: ${r.text}`);
    }
    releaseFifo(fifo);
    assert.equal((await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms')).vms.length, 0, 'no VM was made');
    if (why !== undefined) t.skip(`the character device case: ${why}`);
  });
});

void describe('save targets (writeSnapshotFile, as the executor writes a snapshot)', () => {
  let dir: string;
  const parts = [Buffer.from('LVMSNAP\0', 'latin1'), Buffer.alloc(5000, 7)];
  const written = Buffer.concat(parts);
  before(() => {
    dir = mkdtempSync(join(tmpdir(), 'lightvm-ftsave-'));
  });
  after(() => {
    for (const f of readdirSync(dir)) if (lstatSync(join(dir, f)).isFIFO()) releaseFifo(join(dir, f));
    rmSync(dir, { recursive: true, force: true });
  });

  void it('F4: a save does not follow a symlink at the old temporary name, and writes a private file', () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const file = join(dir, 'c.snap');
    // The name a save wrote through before: <file>.tmp-<pid of the writer>.
    const trap = `${file}.tmp-${process.pid}`;
    symlinkSync(victim, trap);
    // An earlier file of that name, world-readable: the new one is private all the same.
    writeFileSync(file, 'old', { mode: 0o644 });
    writeSnapshotFile(file, parts);
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the symlink was followed: its target was overwritten');
    assert.equal(readlinkSync(trap), victim, 'the symlink is left alone');
    const st = lstatSync(file);
    assert.ok(st.isFile(), 'the snapshot is a regular file');
    assert.equal(st.mode & 0o777, 0o600, 'the snapshot is private');
    assert.ok(readFileSync(file).equals(written), 'the snapshot is what was written');
    rmSync(trap);
    assert.deepEqual(temps(dir), [], 'no temporary file left');
  });

  void it('F4: a save into a missing directory is refused naming the path, not the temporary file, and leaves nothing', () => {
    const file = join(dir, 'none', 'c.snap');
    assert.throws(() => writeSnapshotFile(file, parts), (err: NodeJS.ErrnoException) => {
      assert.ok(err.message.startsWith(`${file}: `), `the message does not start with the path: ${err.message}`);
      assert.match(err.message, /no such directory/);
      assert.ok(!err.message.includes('.tmp'), `the message names an internal temporary file: ${err.message}`);
      assert.equal(err.code, 'ENOENT');
      return true;
    });
    assert.deepEqual(temps(dir), [], 'no temporary file left');
  });

  void it('F8: a save over a FIFO, a symlink, a directory or a device node is refused naming it, and leaves it as it was', (t) => {
    const fifo = join(dir, 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const victim = join(dir, 'kept');
    writeFileSync(victim, 'kept\n');
    const link = join(dir, 'out.link');
    symlinkSync(victim, link);
    const fifoLink = join(dir, 'out.fifolink');
    symlinkSync(fifo, fifoLink);
    const sub = join(dir, 'out.dir');
    mkdirSync(sub);
    const cases: [string, string, RegExp, (p: string) => boolean][] = [
      ['a FIFO', fifo, /is a FIFO, not a regular file/, (p) => lstatSync(p).isFIFO()],
      ['a symlink', link, /is a symlink, not a regular file/, (p) => lstatSync(p).isSymbolicLink() && readlinkSync(p) === victim],
      ['a symlink to a FIFO', fifoLink, /is a symlink, not a regular file/, (p) => lstatSync(p).isSymbolicLink() && readlinkSync(p) === fifo],
      ['a directory', sub, /is a directory, not a regular file/, (p) => lstatSync(p).isDirectory() && readdirSync(p).length === 0],
    ];
    const dev = join(dir, 'out.dev');
    const why = charDevice(dev);
    if (why === undefined) {
      const rdev = statSync(dev).rdev;
      cases.push(['a character device', dev, /is a character device, not a regular file/, (p) => lstatSync(p).isCharacterDevice() && lstatSync(p).rdev === rdev]);
    }
    for (const [what, file, says, still] of cases) {
      assert.throws(() => writeSnapshotFile(file, parts), (err: Error) => {
        assert.ok(err instanceof NotRegularFileError, `${what}: ${err.message}`);
        assert.match(err.message, says, what);
        assert.ok(err.message.includes(file), `${what}: the message does not name the file: ${err.message}`);
        return true;
      }, what);
      assert.ok(still(file), `${what}: it was replaced`);
      assert.deepEqual(temps(dir), [], `${what}: a temporary file is left`);
    }
    assert.equal(readFileSync(victim, 'utf8'), 'kept\n');
    assert.ok(lstatSync(fifo).isFIFO(), 'the FIFO behind the link is still one');
    if (why !== undefined) t.skip(`the character device case: ${why}`);
  });
});

void describe('save through the API, as a VM\'s executor writes it', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm on this host (sh scripts/kvm-box.sh runs it)' }, () => {
  let d: TestDaemon;
  let dir: string;
  before(async () => {
    d = await startTestDaemon({ prefix: 'ftapi' });
    dir = join(d.runtimeDir, 'files');
    mkdirSync(dir);
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'c' }, 201);
    await untilCount(d.socket, 'c', 2, 60_000);
  });
  after(async () => {
    for (const f of existsSync(dir) ? readdirSync(dir) : []) if (lstatSync(join(dir, f)).isFIFO()) releaseFifo(join(dir, f));
    await d.stop();
  });

  void it('F4: a symlink at <file>.tmp-<executor pid> is not followed; the snapshot is private and whole', async () => {
    const victim = join(dir, 'victim');
    writeFileSync(victim, 'precious\n');
    const vm = (await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/c')).vm;
    const pid = (await d.host()).executors.find((e) => e.id === vm.executor)!.pid;
    const file = join(dir, 'c.snap');
    const trap = `${file}.tmp-${pid}`;
    symlinkSync(victim, trap);
    await ok(d.socket, 'POST', '/v1/vms/c/save', { file, checkpoint: true });
    assert.equal(readFileSync(victim, 'utf8'), 'precious\n', 'the symlink was followed: its target was overwritten');
    assert.equal(readlinkSync(trap), victim, 'the symlink is left alone');
    const st = lstatSync(file);
    assert.ok(st.isFile(), 'the snapshot is a regular file');
    assert.equal(st.mode & 0o777, 0o600, 'the snapshot is private');
    rmSync(trap);
    assert.deepEqual(temps(dir), [], 'no temporary file left');
    // A whole snapshot of that VM, checksum and all.
    assert.equal(decodeSnapshot(file, readFileSync(file)).header.vm.name, 'c');
  });

  void it('F8: a save over a FIFO or a device node is refused with 422 naming it; it stays, and the VM runs on', async (t) => {
    const fifo = join(dir, 'out.fifo');
    execFileSync('mkfifo', [fifo]);
    const cases: [string, string, RegExp, (p: string) => boolean][] = [['a FIFO', fifo, /is a FIFO, not a regular file/, (p) => lstatSync(p).isFIFO()]];
    const dev = join(dir, 'out.dev');
    const why = charDevice(dev);
    if (why === undefined) cases.push(['a character device', dev, /is a character device, not a regular file/, (p) => lstatSync(p).isCharacterDevice()]);
    for (const [what, file, says, still] of cases) {
      const r = await request(d.socket, 'POST', '/v1/vms/c/save', { body: { file }, timeoutMs: 30_000 });
      assert.equal(r.status, 422, `${what}: ${r.text}`);
      assert.equal(errorOf(r)?.field, 'file', what);
      assert.match(errorOf(r)?.message ?? '', says, what);
      assert.ok(errorOf(r)!.message.includes(file), `${what}: the message does not name the file: ${r.text}`);
      assert.ok(still(file), `${what}: it was replaced`);
    }
    // Not a checkpoint, yet refused before the VM ended: it runs on.
    assert.equal((await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/c')).vm.state, 'running', 'the VM runs on');
    assert.deepEqual(temps(dir), [], 'no temporary file left');
    if (why !== undefined) t.skip(`the character device case: ${why}`);
  });
});

void describe('the executor reads only regular snapshot files', () => {
  void it('F3: readSnapshotFile refuses a FIFO, a directory and a device without blocking, naming the path', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lightvm-ft-'));
    try {
      const fifo = join(dir, 'fifo');
      execFileSync('mkfifo', [fifo]);
      const refused = (file: string, says: RegExp): void => {
        assert.throws(() => readSnapshotFile(file), (err: Error) => err instanceof NotRegularFileError && says.test(err.message) && err.message.includes(file));
      };
      // Blocking in open(2) or read(2) would hang this test: nothing writes to the FIFO.
      refused(fifo, /is a FIFO, not a regular file/);
      refused(dir, /is a directory, not a regular file/);
      refused('/dev/zero', /is a character device, not a regular file/);
      const file = join(dir, 'a');
      writeFileSync(file, 'bytes');
      assert.equal(Buffer.from(readSnapshotFile(file)).toString(), 'bytes');
      assert.throws(() => readSnapshotFile(join(dir, 'none')), (err: NodeJS.ErrnoException) => err.code === 'ENOENT');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

void describe('lightvm daemon --socket on something that is not a socket', () => {
  void it('F16: refuses a regular file, naming it, and leaves its bytes', async () => {
    const base = mkdtempSync(join(tmpdir(), 'lightvm-ft16-'));
    const runtimeDir = join(base, 'run');
    const file = join(base, 'precious.txt');
    writeFileSync(file, 'not a socket\n');
    const child = spawn(process.execPath, [CLI, 'daemon', '--runtime-dir', runtimeDir, '--socket', file, '--log-level', 'warn'], {
      stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT,
    });
    let out = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (out += b.toString()));
    try {
      const code = await new Promise<number | string>((resolve) => {
        const timer = setTimeout(() => resolve('still running after 30 s'), 30_000);
        child.once('exit', (c, sig) => {
          clearTimeout(timer);
          resolve(c ?? String(sig));
        });
      });
      assert.notEqual(code, 0, `the daemon exited 0: ${out}`);
      assert.equal(typeof code, 'number', `${code}: ${out}`);
      assert.ok(out.includes(file), `the message does not name the path: ${out}`);
      assert.match(out, /is not a socket/);
      assert.equal(readFileSync(file, 'utf8'), 'not a socket\n', 'the file was replaced or deleted');
    } finally {
      child.kill('SIGKILL');
      for (const p of processesOf(base)) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
      rmSync(base, { recursive: true, force: true });
    }
  });

  void it('F16: replaces a stale socket nothing answers on', async () => {
    const d = await startTestDaemon({ prefix: 'ft16' });
    const runtimeDir = d.runtimeDir;
    // A daemon killed outright leaves its socket behind.
    d.child.kill('SIGKILL');
    await new Promise((r) => d.child.once('exit', r));
    assert.ok(lstatSync(d.socket).isSocket(), 'the stale socket is there');
    const again = await startTestDaemon({ runtimeDir, prefix: 'ft16' });
    try {
      assert.equal((await request(again.socket, 'GET', '/v1/host')).status, 200);
    } finally {
      await again.stop();
      await d.stop({ settle: false });
    }
  });
});
