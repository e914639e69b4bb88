// Issue 10 F19: many streams following one VM's console or the daemon's
// events at once are ordinary use, not a leak (no MaxListenersExceededWarning
// at 11), and they all get what they follow; errors from the kernel (EIO,
// EINVAL, EOPNOTSUPP) come with the path or the field they concern.
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { ok, openStream, request, startTestDaemon, until, type ApiErrorBody, type Stream, type TestDaemon } from './daemon-helpers.js';
import { untilCount } from './vm-helpers.js';

void describe('many followers, and errors that name their path or field', () => {
  let d: TestDaemon;
  before(async () => {
    // /proc allowed: an image read that fails with EIO is /proc/self/mem.
    d = await startTestDaemon({ args: ['--pool', '4:0', '--allow-path', '/proc'], prefix: 'st' });
  });
  after(async () => {
    await d.stop();
  });

  void it('16 console followers of one VM, 16 event streams and 16 stats at once: each gets its share, no listener warning', async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'c' }, 201);
    await untilCount(d.socket, 'c', 2);
    const consoles: Stream[] = [];
    const events: Stream[] = [];
    for (let i = 0; i < 16; i++) {
      consoles.push(await openStream(d.socket, '/v1/vms/c/console?follow=true'));
      events.push(await openStream(d.socket, '/v1/events'));
    }
    const stats = await Promise.all(Array.from({ length: 16 }, () => ok<{ vms: unknown[] }>(d.socket, 'GET', '/v1/stats')));
    for (const s of stats) assert.equal(s.vms.length, 1);
    await ok(d.socket, 'POST', '/v1/vms', { image: 'hello', name: 'h' }, 201);
    const c = await untilCount(d.socket, 'c', 30, 20_000);
    const lastLine = c.split('\n').at(-2)!;
    await until('every follower to see the counter and every event stream the new VM', () => Promise.resolve(
      consoles.every((s) => s.text().includes(lastLine)) && events.every((s) => s.text().includes('"name":"h"')),
    ), 20_000);
    for (const s of [...consoles, ...events]) s.close();
    // Followers gone, the VM ends without anyone to tell: nothing breaks.
    await ok(d.socket, 'DELETE', '/v1/vms/c');
    const again = await openStream(d.socket, '/v1/events');
    again.close();
    assert.doesNotMatch(d.stderr(), /MaxListenersExceededWarning/);
  });

  void it('an image that cannot be read: the path and field, not only EIO', async () => {
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: '/proc/self/mem' } });
    assert.equal(r.status, 422, r.text);
    const e = (r.json as ApiErrorBody).error;
    assert.equal(e.field, 'image');
    // The daemon opens the real path it checked: /proc/<its pid>/mem.
    assert.match(e.message, /^\/proc\/\d+\/mem: file: cannot be read: EIO/);
  });

  void it('a net device the kernel refuses: its field, not only EINVAL or EOPNOTSUPP', async () => {
    for (const [bridge, what] of [['a b', /bridge "a b" cannot be made/], ['lo', /"lo"/]] as const) {
      const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'counter', devices: [{ type: 'net', id: 0, bridge }] } });
      assert.equal(r.status, 422, r.text);
      const e = (r.json as ApiErrorBody).error;
      assert.equal(e.field, 'devices.0.bridge', r.text);
      assert.match(e.message, what);
    }
  });
});
