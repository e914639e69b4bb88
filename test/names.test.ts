// Issue 10 F12: a number names a VM by its id, so no VM may be named with
// digits only: a create, restore or service with such a name is refused
// (400, field name), and `destroy 17` always means the VM with id 17.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeSnapshot, encodeSnapshotParts } from '../src/vmm/snapshot.js';
import { ok, request, startTestDaemon, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';
import { listed, untilCount } from './vm-helpers.js';

function assertDigitsRefused(r: { status: number; json: unknown; text: string }, name: string): void {
  assert.equal(r.status, 400, r.text);
  const e = (r.json as ApiErrorBody).error;
  assert.equal(e.field, 'name');
  assert.equal(e.code, 'invalid');
  assert.match(e.message, new RegExp(`"${name}" is all digits, which reads as a VM id`));
}

void describe('names made of digits only', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'nm' });
  });
  after(async () => {
    await d.stop();
  });

  void it('a create named "17" is refused, naming the field; "17a" and "a17" are names', async () => {
    const first = (await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'a17' }, 201)).vm;
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'counter', name: String(first.id) } });
    assertDigitsRefused(r, String(first.id));
    assertDigitsRefused(await request(d.socket, 'POST', '/v1/vms', { body: { image: 'counter', name: '007' } }), '007');
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: '17a' }, 201);
    // The refused creates left nothing behind.
    assert.deepEqual((await listed(d.socket)).map((l) => l.split(' ')[1]).sort(), ['17a', 'a17']);
    // A number is an id: DELETE /v1/vms/<id> ends the VM with that id.
    await ok(d.socket, 'DELETE', `/v1/vms/${first.id}`);
    assert.deepEqual((await listed(d.socket)).map((l) => l.split(' ')[1]), ['17a']);
    await ok(d.socket, 'DELETE', '/v1/vms/17a');
  });

  void it('a restore to a name of digits only, or of a snapshot whose VM is named so, is refused unless given a name', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'snap' }, 201);
    await untilCount(d.socket, 'snap', 2);
    const file = join(d.runtimeDir, 'snap.snap');
    await ok(d.socket, 'POST', '/v1/vms/snap/save', { file });
    assertDigitsRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file, name: '42' } }), '42');
    // A file named so by hand (its checksum made anew).
    const s = decodeSnapshot(file, readFileSync(file));
    const memory = new Uint8Array(s.header.vm.memory);
    for (const [p, data] of s.pages) memory.set(data, p * 4096);
    const digits = join(d.runtimeDir, 'digits.snap');
    writeFileSync(digits, Buffer.concat(encodeSnapshotParts({ ...s, header: { ...s.header, vm: { ...s.header.vm, name: '42' } }, memory, pages: [...s.pages.keys()] })));
    assertDigitsRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file: digits } }), '42');
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/restore', { file: digits, name: 'n42' }, 201);
    assert.equal(vm.name, 'n42');
    await ok(d.socket, 'DELETE', '/v1/vms/n42');
  });
});
