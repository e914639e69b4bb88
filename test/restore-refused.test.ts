// Issue 10 F7: a restore that fails must leave nothing behind. A net device
// without a MAC once crashed a restore half-way (a tap and an fd leaked),
// and a snapshot listing 200 net devices got a VM 200 taps. Since the
// snapshot schema (src/vmm/vm-schema.ts), both are refused by the daemon
// when it reads the header, before a bridge, a tap or an executor's shell
// is touched; this checks that outcome through a real daemon: 422 naming
// the field, and no VM, no new network interface, no descriptor on the
// file in the daemon or any executor of its runtime directory.
import assert from 'node:assert/strict';
import { readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { encodeSnapshot, type SnapshotHeader } from '../src/vmm/snapshot.js';
import { fdTargets, ok, processesOf, request, startTestDaemon, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';

const MEM = 4 << 20;
const PAGE = 4096;

const net = (id: number): object => ({ type: 'net', id, mac: `02:00:00:00:02:${id.toString(16).padStart(2, '0')}`, mtu: 1500, bridge: 'lvf7br0' });

/** A well-formed snapshot file but for its devices: the header is all the daemon reads of it. */
function snapshotWith(devices: object[]): Buffer {
  const header = {
    vm: { id: 9, name: 'f7', memory: MEM, cmdline: '', devices },
    image: { path: '/nonexistent/f7.elf', sha256: null },
    msrs: [],
    parked: null,
    paused: false,
    savedAt: '2020-01-01T00:00:00.000Z',
    kernel: 'test',
  } as unknown as SnapshotHeader;
  const vcpu = { regs: new Uint8Array(144), sregs: new Uint8Array(312), xsave: new Uint8Array(4096), events: new Uint8Array(64), msrs: [] };
  return encodeSnapshot({ header, vcpu, devicePage: new Uint8Array(PAGE), memory: new Uint8Array(MEM), pages: [], console: new Uint8Array(0) });
}

const interfaces = (): string[] => readdirSync('/sys/class/net').sort();

/** Descriptors of the daemon and its executors that name path, or a tap (/dev/net/tun). */
function holders(d: TestDaemon, path: string): string[] {
  const out: string[] = [];
  for (const p of [{ pid: d.pid }, ...processesOf(d.runtimeDir)]) {
    let targets: string[];
    try {
      targets = fdTargets(p.pid);
    } catch {
      continue; // exited meanwhile
    }
    for (const t of targets) if (t === path || t === '/dev/net/tun') out.push(`${p.pid}: ${t}`);
  }
  return [...new Set(out)];
}

void describe('a refused restore leaves nothing behind', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ prefix: 'f7' });
  });
  after(async () => {
    await d.stop({ settle: false });
  });

  void it('F7: a net device without a MAC, or 200 net devices, is refused by the schema naming the field: no VM, no tap, no bridge, no fd', async () => {
    const cases: [string, object[], RegExp][] = [
      ['a net device without a MAC', [{ type: 'net', id: 0, mtu: 1500, bridge: 'lvf7br0' }], /header\.vm\.devices\[0\]\.mac: missing/],
      ['200 net devices', Array.from({ length: 200 }, (_, i) => net(i % 63)), /header\.vm\.devices: 200 items must NOT have more than 62 items/],
    ];
    const netBefore = interfaces();
    for (const [i, [what, devices, says]] of cases.entries()) {
      const file = join(d.runtimeDir, `f7-${i}.snap`);
      writeFileSync(file, snapshotWith(devices));
      const r = await request(d.socket, 'POST', '/v1/restore', { body: { file, name: `f7x${i}` }, timeoutMs: 20_000 });
      assert.equal(r.status, 422, `${what}: ${r.text}`);
      const e = (r.json as ApiErrorBody).error;
      assert.equal(e.field, 'file', what);
      assert.match(e.message, says, what);
      assert.ok(e.message.startsWith(`${file}: `), `${what}: the message does not name the file: ${e.message}`);
      assert.deepEqual(holders(d, file), [], `${what}: a descriptor is left on the file or on a tap`);
    }
    assert.deepEqual((await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms')).vms, [], 'a refused restore left a VM');
    assert.deepEqual(interfaces(), netBefore, 'a refused restore left a network interface (a tap or a bridge)');
  });
});
