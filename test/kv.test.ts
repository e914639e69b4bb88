// The kv guest (guest/apps/kv.c): a key-value store over TCP that keeps its
// data on its virtio-blk disk. Its data outlives the VM: a new VM on the
// same disk file finds it; so does a VM restored from a snapshot, and a VM
// live-migrated to another host (library, two hosts on one machine).
import assert from 'node:assert/strict';
import { connect } from 'node:net';
import { join } from 'node:path';
import { writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Host, type VirtualMachine } from '../src/index.js';
import type { DeviceEntry } from '../src/vmm/device-page.js';
import { decodeSnapshot } from '../src/vmm/snapshot.js';
import { tempDir, waitFor, within } from './helpers.js';
import { takePages } from './vm-helpers.js';

const inOwnNetns = process.env.LIGHTVM_NETNS === '1';

/** Sends each line to ip:7070 on one connection and gives back one answer line per request. */
async function kvTalk(ip: string, lines: string[], timeoutMs = 10_000): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: ip, port: 7070 });
    let got = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`kv at ${ip}: ${got.split('\n').length - 1} of ${lines.length} answers after ${timeoutMs} ms: ${JSON.stringify(got)}`));
    }, timeoutMs);
    s.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    s.on('connect', () => s.write(lines.map((l) => `${l}\n`).join('')));
    s.on('data', (d) => {
      got += d.toString();
      const answers = got.split('\n');
      if (answers.length - 1 >= lines.length) {
        clearTimeout(timer);
        // Not end(): a VM destroyed before it closes its side would keep a half-closed socket (and this process) alive.
        s.destroy();
        resolve(answers.slice(0, lines.length));
      }
    });
  });
}

void describe('kv: a key-value store on a virtio-blk disk', { skip: inOwnNetns ? false : 'needs a network namespace of its own (npm test provides one)' }, () => {
  const { dir, cleanup } = tempDir('kv');
  let a: Host;
  let b: Host;
  const devices = (ip: string, disk: string): DeviceEntry[] => [
    { type: 'net', id: 0, ipv4: { addr: ip, netmask: '255.255.255.0', gateway: '10.0.0.1' } },
    { type: 'block', id: 1, path: disk },
  ];
  const newDisk = (name: string): string => {
    const f = join(dir, name);
    writeFileSync(f, Buffer.alloc(1 << 20));
    return f;
  };
  const kv = async (host: Host, ip: string, disk: string, name: string): Promise<VirtualMachine> => {
    const vm = await host.create({ image: 'kv', name, devices: devices(ip, disk) });
    await waitFor(`${name} to serve`, () => vm.consoleText().includes('kv: serving') || vm.state === 'exited', 10_000);
    assert.match(vm.consoleText(), /^kv: serving on port 7070, 2047 slots\n/);
    return vm;
  };
  before(async () => {
    [a, b] = await Promise.all([Host.start({ executors: 1 }), Host.start({ executors: 1 })]);
  });
  after(async () => {
    await Promise.all([a.close(), b.close()]);
    cleanup();
  });

  void it('answers PUT and GET; a new VM on the same disk finds the data after the first is destroyed', async () => {
    const disk = newDisk('kv1.img');
    const vm = await kv(a, '10.0.0.41', disk, 'kv1');
    assert.deepEqual(await kvTalk('10.0.0.41', ['PUT colour blue', 'PUT answer 42', 'GET colour', 'GET nothing', 'PUT colour green', 'GET colour', 'FLUSH']),
      ['OK', 'OK', 'VALUE blue', 'NONE', 'OK', 'VALUE green', 'OK']);
    assert.deepEqual(await kvTalk('10.0.0.41', ['BOGUS x', 'GET', 'PUT k', `PUT k ${'v'.repeat(401)}`]),
      ['ERR unknown command', 'ERR bad key', 'ERR bad key', 'ERR value too long']);
    await vm.destroy();
    const again = await kv(a, '10.0.0.41', disk, 'kv1b');
    assert.deepEqual(await kvTalk('10.0.0.41', ['GET colour', 'GET answer']), ['VALUE green', 'VALUE 42']);
    await again.destroy();
  });

  void it('saved and restored, it serves on with its data and writes on to its disk', async () => {
    const disk = newDisk('kv2.img');
    const vm = await kv(a, '10.0.0.42', disk, 'kv2');
    assert.deepEqual(await kvTalk('10.0.0.42', ['PUT before save']), ['OK']);
    const snap = join(dir, 'kv2.snap');
    await vm.save(snap);
    const restored = await a.restore({ file: snap, name: 'kv2r' });
    assert.deepEqual(await kvTalk('10.0.0.42', ['GET before', 'PUT after restore', 'GET after']), ['VALUE save', 'OK', 'VALUE restore']);
    await restored.destroy();
    const fresh = await kv(a, '10.0.0.42', disk, 'kv2f');
    assert.deepEqual(await kvTalk('10.0.0.42', ['GET before', 'GET after']), ['VALUE save', 'VALUE restore']);
    await fresh.destroy();
  });

  void it('live-migrated to another host, it serves on with its data', async () => {
    const disk = newDisk('kv3.img');
    const vm = await kv(a, '10.0.0.43', disk, 'kv3');
    assert.deepEqual(await kvTalk('10.0.0.43', ['PUT where source']), ['OK']);
    const pages = new Map<number, Uint8Array>();
    takePages(pages, (await vm.copyPages(0)).data);
    assert.deepEqual(await kvTalk('10.0.0.43', ['PUT during copy', 'GET where']), ['OK', 'VALUE source']);
    const final = decodeSnapshot('final', (await vm.saveFinal()).data!);
    for (const [p, data] of final.pages) pages.set(p, data);
    const copy = await b.restore({ snapshot: { ...final, pages } });
    await vm.migrated('host b');
    assert.deepEqual(await within(vm.exited, 5000, 'the source to end'), { kind: 'migrated', to: 'host b' });
    assert.deepEqual(await kvTalk('10.0.0.43', ['GET where', 'GET during', 'PUT where destination', 'GET where']),
      ['VALUE source', 'VALUE copy', 'OK', 'VALUE destination']);
    await copy.destroy();
  });
});
