// A restore and an incoming migration take their VM's disks from a file or
// a peer: those disks are held to the checks a create's get (a regular file
// inside the allowed directories, of a sector or more), by the daemon,
// before an executor is asked. Before, only the policy's roots were checked
// for a restore and the executor's open did the rest: a disk cut to 100
// bytes (no sector) came back as a VM with an empty disk, where a create
// naming the same file is refused.
import assert from 'node:assert/strict';
import { mkdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { fdTargets, ok, processesOf, request, startTestDaemon, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';
import { tempDir } from './helpers.js';
import { assertCounting, lastCount, listed, untilCount, vmOf } from './vm-helpers.js';

const TOKEN = 'restore-disks-token-0123456789';

/** Replaces the file at path (whoever has it open keeps the old one) with what make() leaves at a new path. */
function replace(path: string, make: (tmp: string) => void): void {
  const tmp = `${path}.new`;
  make(tmp);
  renameSync(tmp, path);
}

/** Descriptors on path held by the daemon or any executor of its runtime directory. */
function holders(d: TestDaemon, path: string): string[] {
  const out: string[] = [];
  for (const p of [{ pid: d.pid }, ...processesOf(d.runtimeDir)]) {
    try {
      for (const t of fdTargets(p.pid)) if (t.startsWith(path)) out.push(`${p.pid}: ${t}`);
    } catch {
      // Exited meanwhile.
    }
  }
  return out;
}

void describe('a restore or an incoming migration checks its disks as a create does', () => {
  let src: TestDaemon;
  let dst: TestDaemon;
  let files: { dir: string; cleanup: () => void };
  before(async () => {
    [src, dst] = await Promise.all([startTestDaemon({ prefix: 'rdsrc' }), startTestDaemon({ prefix: 'rddst' })]);
    files = tempDir('rdisk');
  });
  after(async () => {
    await Promise.all([src.stop(), dst.stop()]);
    files.cleanup();
  });

  /** A counter with one disk (64 KiB), counting. */
  async function withDisk(d: TestDaemon, name: string): Promise<string> {
    const disk = join(files.dir, `${name}.img`);
    writeFileSync(disk, Buffer.alloc(64 << 10));
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name, devices: [{ type: 'block', id: 0, path: disk }] }, 201);
    await untilCount(d.socket, name, 3);
    return disk;
  }

  void it('restore: a disk now shorter than a sector, or a directory, is refused naming devices.0.path and the path; no VM, no fd', async () => {
    const disk = await withDisk(src, 'rd');
    const snap = join(files.dir, 'rd.snap');
    await ok(src.socket, 'POST', '/v1/vms/rd/save', { file: snap });
    const cases: [string, (tmp: string) => void, RegExp][] = [
      ['100 bytes', (tmp) => writeFileSync(tmp, Buffer.alloc(100)), /holds 100 bytes, less than one 512-byte sector/],
      ['a directory', (tmp) => mkdirSync(tmp), /is a directory, not a regular file/],
    ];
    for (const [what, make, says] of cases) {
      rmSync(disk, { recursive: true, force: true });
      replace(disk, make);
      const r = await request(src.socket, 'POST', '/v1/restore', { body: { file: snap, name: 'rd2' }, timeoutMs: 20_000 });
      assert.equal(r.status, 422, `${what}: ${r.text}`);
      const e = (r.json as ApiErrorBody).error;
      assert.equal(e.code, 'restore-failed', what);
      assert.match(e.message, says, what);
      assert.ok(e.message.includes(`devices.0.path: ${snap}: its disk ${disk}`), `${what}: the message does not name the field and the disk: ${e.message}`);
      assert.deepEqual(holders(src, disk), [], `${what}: a descriptor is left on the disk`);
      assert.equal((await request(src.socket, 'GET', '/v1/vms/rd2')).status, 404, `${what}: a refused restore left a VM`);
    }
  });

  void it('incoming migration: a disk that is shorter than a sector at the destination is refused there; the VM runs on at the source', async () => {
    const r0 = await ok<{ listening: { port: number } }>(dst.socket, 'PUT', '/v1/migration/listen', { port: 0, token: TOKEN });
    const disk = await withDisk(src, 'md');
    // The source's VM keeps the disk it opened; the destination finds 100 bytes at its path.
    replace(disk, (tmp) => writeFileSync(tmp, Buffer.alloc(100)));
    const dstBefore = await listed(dst.socket);
    const r = await request(src.socket, 'POST', '/v1/vms/md/migrate', { body: { to: `127.0.0.1:${r0.listening.port}`, token: TOKEN }, timeoutMs: 30_000 });
    assert.equal(r.status, 502, r.text);
    const e = (r.json as ApiErrorBody).error;
    assert.equal(e.code, 'migration-failed');
    assert.match(e.message, new RegExp(`devices\\.0\\.path: snapshot: its disk ${disk.replace(/[.]/g, '\\.')} holds 100 bytes, less than one 512-byte sector`));
    const vm: VmView = await vmOf(src.socket, 'md');
    assert.equal(vm.state, 'running');
    assertCounting(await untilCount(src.socket, 'md', lastCount(await untilCount(src.socket, 'md', 3)) + 5), 'the counter after a refused migration');
    assert.deepEqual(await listed(dst.socket), dstBefore, 'the destination kept a VM');
    assert.deepEqual(holders(dst, disk), [], 'a descriptor is left on the disk at the destination');
  });
});
