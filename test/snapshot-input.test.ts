// Issue 10 F2, F10: a snapshot is guest-controlled input (its SHA-256 is a
// checksum anyone can make anew). Every field out of range is refused whole,
// naming the field, before anything is built from it (src/vmm/vm-schema.ts:
// the same definitions of a name, a cmdline and a device as a create's),
// while a healthy VM on the same executor keeps running and the executor
// process is the same one.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeSnapshot, encodeSnapshotParts, SECTION, type Snapshot, type SnapshotHeader } from '../src/vmm/snapshot.js';
import { executorProcesses, ok, request, startTestDaemon, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';
import { resection } from './snapshot-files.js';
import { lastCount, listed, untilCount } from './vm-helpers.js';

const PAGE = 4096;

/** The snapshot's bytes again, as a saved file would hold them, after change(). */
export function reencode(s: Snapshot, change: (s: Snapshot) => Snapshot): Buffer {
  const t = change({ ...s, header: structuredClone(s.header) });
  // The saved VM's memory, whatever the header now says it has.
  const memory = new Uint8Array(s.header.vm.memory);
  for (const [p, data] of t.pages) memory.set(data, p * PAGE);
  return Buffer.concat(encodeSnapshotParts({ ...t, memory, pages: [...t.pages.keys()] }));
}


const withHeader = (f: (h: SnapshotHeader) => void) => (s: Snapshot): Snapshot => {
  f(s.header);
  return s;
};
const net = (id: number, over: object = {}): object => ({ type: 'net', id, mac: `02:00:00:00:01:${id.toString(16).padStart(2, '0')}`, mtu: 1500, bridge: 'lvbr0', ...over });

void describe('a crafted snapshot is refused whole, naming the field, beside a healthy VM', () => {
  let d: TestDaemon;
  let good: Buffer;
  let snap: Snapshot;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:1'], prefix: 'si' });
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'healthy' }, 201);
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'src' }, 201);
    await untilCount(d.socket, 'src', 2);
    const file = join(d.runtimeDir, 'src.snap');
    await ok(d.socket, 'POST', '/v1/vms/src/save', { file });
    good = readFileSync(file);
    snap = decodeSnapshot(file, good);
  });
  after(async () => {
    await d.stop();
  });

  const cases = (): [string, Buffer, RegExp][] => {
    const mem = snap.header.vm.memory;
    return [
      ['parked-poll address outside RAM', reencode(snap, withHeader((h) => (h.parked = { arg: mem + PAGE, remainingNs: 1e9 }))), /header\.parked\.arg: POLL argument at 0x[0-9a-f]+ \(16 bytes\) lies outside 4 MiB of guest RAM/],
      ['parked-poll address in page 0', reencode(snap, withHeader((h) => (h.parked = { arg: 8, remainingNs: 1e9 }))), /header\.parked\.arg: POLL argument at 0x8/],
      ['parked-poll struct across the end of RAM', reencode(snap, withHeader((h) => (h.parked = { arg: mem - 8, remainingNs: 1e9 }))), /header\.parked\.arg/],
      ['200 net devices', reencode(snap, withHeader((h) => (h.vm.devices = Array.from({ length: 200 }, (_, i) => net(i % 63)) as never))), /header\.vm\.devices: 200 items must NOT have more than 62 items/],
      ['a net device without a MAC', reencode(snap, withHeader((h) => (h.vm.devices = [{ type: 'net', id: 0, mtu: 1500, bridge: 'lvbr0' }]))), /header\.vm\.devices\[0\]\.mac: missing/],
      ['a MAC that is not one', reencode(snap, withHeader((h) => (h.vm.devices = [net(0, { mac: '02:00:00:00:00' })] as never))), /header\.vm\.devices\[0\]\.mac: "02:00:00:00:00" must match pattern/],
      ['a device id used twice', reencode(snap, withHeader((h) => (h.vm.devices = [net(1), net(1)] as never))), /header\.vm\.devices\[1\]\.id: id 1 is used twice/],
      ['an unknown device type', reencode(snap, withHeader((h) => (h.vm.devices = [{ type: 'gpu', id: 0 }] as never))), /header\.vm\.devices\[0\]\.type: "gpu" must be equal to one of the allowed values/],
      ['a field no device has', reencode(snap, withHeader((h) => (h.vm.devices = [net(0, { script: '/bin/sh' })] as never))), /header\.vm\.devices\[0\]\.script: is not a field of it/],
      ['a name with a newline', reencode(snap, withHeader((h) => (h.vm.name = 'a\nb'))), /header\.vm\.name: "a\\nb" must match pattern/],
      ['a name with an ANSI escape', reencode(snap, withHeader((h) => (h.vm.name = '\x1b[31mred'))), /header\.vm\.name: "\\u001b\[31mred" must match pattern/],
      ['a name that is a path', reencode(snap, withHeader((h) => (h.vm.name = '../../etc/passwd'))), /header\.vm\.name: "\.\.\/\.\.\/etc\/passwd" must match pattern/],
      ['a name of 64 characters', reencode(snap, withHeader((h) => (h.vm.name = 'n'.repeat(64)))), /header\.vm\.name: 64 characters must NOT have more than 63 characters/],
      ['a 100 KB cmdline', reencode(snap, withHeader((h) => (h.vm.cmdline = 'x'.repeat(100_000)))), /header\.vm\.cmdline: 100000 characters must NOT have more than 512 characters/],
      ['memory beyond the most a VM may have', reencode(snap, withHeader((h) => (h.vm.memory = 64 * 2 ** 30))), /header\.vm\.memory: 68719476736 must be <= 3221225472/],
      ['an oversized console section', reencode(snap, (s) => ({ ...s, console: new Uint8Array(300 * 1024).fill(0x41) })), /section console: 307200 bytes is more than the 262144 a VM's console holds/],
      ['a truncated register section', resection(good, (ss) => ss.map(([t, b]) => [t, t === SECTION.regs ? b.subarray(0, 100) : b])), /section regs: 100 bytes, expected 144/],
      ['no memory section', resection(good, (ss) => ss.filter(([t]) => t !== SECTION.memory)), /section memory: missing/],
      ['a cut memory section', resection(good, (ss) => ss.map(([t, b]) => [t, t === SECTION.memory ? b.subarray(0, b.length - 1) : b])), /section memory: \d+ bytes is not a whole number of page records/],
      ['a file cut short', good.subarray(0, good.length - 100), /end: the end marker is missing: the file is truncated/],
      ['device state for a device it lacks', resection(good, (ss) => [...ss, [SECTION.devices, Buffer.from(JSON.stringify({ 'virtio-blk.5': Buffer.from('{}').toString('base64') }))]]), /section devices\.virtio-blk\.5: is the state of no device of this VM/],
    ];
  };

  void it('one case per field out of range: 422, the message names the field; nothing is made, the healthy VM counts on', async () => {
    const executors = executorProcesses(d.runtimeDir).map((p) => p.pid).sort();
    const vmsBefore = await listed(d.socket);
    const counted = lastCount(await untilCount(d.socket, 'healthy', 1));
    for (const [i, [what, bytes, says]] of cases().entries()) {
      const file = join(d.runtimeDir, `bad-${i}.snap`);
      writeFileSync(file, bytes);
      const r = await request(d.socket, 'POST', '/v1/restore', { body: { file, name: `bad${i}` } });
      assert.equal(r.status, 422, `${what}: ${r.status} ${r.text}`);
      const e = (r.json as ApiErrorBody).error;
      assert.match(e.message, says, what);
      assert.ok(e.message.startsWith(`${file}: `), `${what}: the message names the file: ${e.message}`);
      assert.equal(e.field, 'file', what);
    }
    assert.deepEqual(await listed(d.socket), vmsBefore, 'a refused restore left a VM');
    assert.deepEqual(executorProcesses(d.runtimeDir).map((p) => p.pid).sort(), executors, 'an executor died or was replaced');
    // Still counting: its executor kept running it all along.
    await untilCount(d.socket, 'healthy', counted + 3, 15_000);
    // And the good file still restores, onto the same executor.
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/restore', { file: join(d.runtimeDir, 'src.snap'), name: 'copy' }, 201);
    const healthy = (await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/healthy')).vm;
    assert.equal(vm.executor, healthy.executor);
    await ok(d.socket, 'DELETE', '/v1/vms/copy');
  });
});
