// virtio-blk on real VMs: a host file as the disk, read, write, flush and
// get-id from the guest's driver (guest/lib/blk.c), a read-only disk, a
// request past the end; guests that break the virtio rules are ended with
// the reason and harm nobody else; bad disk configurations are refused with
// their field; a saved and restored VM uses its disk on without a new set-up.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError, type VirtualMachine } from '../src/toolstack/host.js';
import { openFds, tempDir, waitFor, within } from './helpers.js';

const SECTOR = 512;

void describe('virtio-blk', () => {
  const { dir, cleanup } = tempDir('blk');
  let host: Host;
  let counter: VirtualMachine;
  const disk = (name: string, line = 'hello from the host', sectors = 2048): string => {
    const file = join(dir, name);
    const b = Buffer.alloc(sectors * SECTOR);
    b.write(line, SECTOR);
    writeFileSync(file, b);
    return file;
  };
  const sectorText = (file: string, n: number): string => readFileSync(file).subarray(n * SECTOR, (n + 1) * SECTOR).toString().replace(/\0+$/, '');
  const lastCount = (): number => Number(/count (\d+)\n$/.exec(counter.consoleText())?.[1] ?? -1);

  before(async () => {
    host = await Host.start({ executors: 1 });
    counter = await host.create({ image: 'counter', name: 'counter' });
    await waitFor('counter to count', () => lastCount() >= 1);
  });
  after(async () => {
    await host.close();
    cleanup();
  });

  void it('reads what the host wrote, writes, flushes, gets its id; a read past the end fails alone', async () => {
    const file = disk('rw.img');
    const vm = await host.create({ image: 'blk-rw', devices: [{ type: 'block', id: 0, path: file }] });
    assert.deepEqual(await within(vm.exited, 10_000, 'blk-rw'), { kind: 'halt', status: 0 });
    assert.equal(vm.consoleText(), [
      'blk: 2048 sectors', 'blk: id rw.img', 'blk: sector 1: hello from the host', 'blk: write ok', 'blk: flush ok',
      'blk: sector 2: written by the guest', 'blk: past the end refused', 'blk: last sector read', '',
    ].join('\n'));
    assert.equal(sectorText(file, 2), 'written by the guest');
    // A new VM on the same file finds it there.
    const again = await host.create({ image: 'blk-rw', devices: [{ type: 'block', id: 0, path: file, readonly: true }] });
    await within(again.exited, 10_000, 'blk-rw again');
    assert.match(again.consoleText(), /blk: 2048 sectors read-only\n[\s\S]*blk: write failed\n[\s\S]*blk: sector 2: written by the guest\n/);
  });

  void it('a read-only disk refuses the write and the file is unchanged', async () => {
    const file = disk('ro.img');
    const before = readFileSync(file);
    const vm = await host.create({ image: 'blk-rw', devices: [{ type: 'block', id: 0, path: file, readonly: true }] });
    assert.deepEqual(await within(vm.exited, 10_000, 'blk-rw ro'), { kind: 'halt', status: 0 });
    assert.match(vm.consoleText(), /read-only\n[\s\S]*blk: write failed\n/);
    assert.match(vm.consoleText(), /blk: sector 2: \n/);
    assert.deepEqual(readFileSync(file), before);
  });

  const EVIL: { mode: string; reason: RegExp }[] = [
    { mode: 'outside', reason: /virtio-blk\.0 queue 0: its descriptor table at 0x7fff0000 \(128 bytes\) lies outside guest RAM/ },
    { mode: 'buffer', reason: /descriptor 1's buffer 0x7fff0000\+512 lies outside guest RAM/ },
    { mode: 'loop', reason: /the chain from descriptor 0 is longer than the queue \(8\): it loops/ },
    { mode: 'next', reason: /descriptor 200 is past the end of the queue \(8\)/ },
    { mode: 'avail', reason: /available index 100 is 100 ahead of the device, more than the queue's 8/ },
    { mode: 'early', reason: /virtio-blk\.0: queue 0 notified before DRIVER_OK/ },
  ];
  for (const { mode, reason } of EVIL) {
    void it(`a guest that breaks the rules (${mode}) is ended with the reason; its disk is closed, the counter counts on`, async () => {
      const file = disk(`evil-${mode}.img`);
      const before = readFileSync(file);
      const fds = openFds();
      const vm = await host.create({ image: 'blk-evil', cmdline: mode, devices: [{ type: 'block', id: 0, path: file }] });
      const exit = await within(vm.exited, 10_000, `blk-evil ${mode}`);
      assert.equal(exit.kind, 'crash', JSON.stringify(exit));
      assert.equal(exit.code, 'virtio');
      assert.match(exit.reason, reason);
      assert.doesNotMatch(vm.consoleText(), /survived/);
      assert.deepEqual(readFileSync(file), before, 'the disk is untouched');
      const count = lastCount();
      await waitFor('counter to count on', () => lastCount() > count, 3000);
      await waitFor('the disk file to be closed', () => !openFds().some((f) => f.includes(`evil-${mode}.img`)), 3000);
      assert.equal(openFds().filter((f) => !fds.includes(f)).filter((f) => f.includes(dir)).length, 0);
    });
  }

  void it('bad disk configurations are refused with their field, before any VM is made', async () => {
    const sub = join(dir, 'a-directory');
    mkdirSync(sub);
    const tiny = join(dir, 'tiny.img');
    writeFileSync(tiny, 'x');
    const cases: { path: string | undefined; says: RegExp }[] = [
      { path: 'rel.img', says: /^devices\.0\.path: "rel\.img" is not an absolute path$/ },
      { path: join(dir, 'nosuch.img'), says: /^devices\.0\.path: .*nosuch\.img: ENOENT/ },
      { path: sub, says: /^devices\.0\.path: .*a-directory is a directory, not a regular file$/ },
      { path: tiny, says: /less than one 512-byte sector/ },
      { path: undefined, says: /^devices\.0\.path: a block device needs the path of its disk file$/ },
    ];
    const vms = host.list().length;
    for (const c of cases) {
      await assert.rejects(host.create({ image: 'blk-rw', devices: [{ type: 'block', id: 0, path: c.path }] }), (err: Error) => {
        assert.ok(err instanceof VmCreateError, `${c.path}: ${err.name}`);
        assert.equal(err.field, 'devices.0.path');
        assert.match(err.message, c.says);
        return true;
      });
    }
    assert.equal(host.list().length, vms);
  });

  void it('saved while its disk is set up, restored: it goes on using the disk (the queue state travels in the snapshot)', async () => {
    const file = disk('snap.img', 'before the save');
    const vm = await host.create({ image: 'blk-rw', cmdline: 'pause', devices: [{ type: 'block', id: 0, path: file }] });
    await waitFor('blk-rw to wait', () => vm.consoleText().includes('blk: waiting\n'));
    const snap = join(dir, 'blk.snap');
    await vm.save(snap);
    const restored = await host.restore({ file: snap, name: 'restored' });
    assert.deepEqual(await within(restored.exited, 10_000, 'restored blk-rw'), { kind: 'halt', status: 0 });
    assert.match(restored.consoleText(), /^blk: write ok\nblk: flush ok\nblk: sector 2: written by the guest\n/);
    assert.equal(sectorText(file, 2), 'written by the guest');
  });
  void it('a restore whose disk is now a FIFO is refused at once, naming it; the other VM of the executor counts on', async () => {
    // The host refuses it first (checkDisks); were it swapped in after that check, the executor's
    // open refuses it too, where an open of a FIFO would wait for a writer with every VM there.
    const file = disk('fifo.img');
    const vm = await host.create({ image: 'counter', name: 'fifo-disk', devices: [{ type: 'block', id: 0, path: file, readonly: true }] });
    const snap = join(dir, 'fifo-disk.snap');
    await vm.save(snap);
    rmSync(file);
    execFileSync('mkfifo', [file]);
    const before = lastCount();
    await assert.rejects(within(host.restore({ file: snap, name: 'fifo-disk2' }), 5000, 'the restore'), (err: Error) => {
      assert.ok(err instanceof VmCreateError, `${err.name}: ${err.message}`);
      assert.match(err.message, /devices\.0\.path: .*fifo\.img:? is a FIFO, not a regular file/);
      return true;
    });
    await waitFor('the counter to count on', () => lastCount() > before + 5);
    // (A count of all descriptors would vary: the pool makes shells meanwhile.)
    assert.deepEqual(openFds().filter((f) => f.endsWith(file)), [], 'a descriptor on the FIFO was left');
  });
});
