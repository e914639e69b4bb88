// Host.start({ inline: true }): the executor runs on this thread, one turn
// at a time between turns of the event loop (what `lightvm run` uses).
// VMs boot, speak, sleep and end as on a thread; the event loop keeps
// turning while a guest spins or sleeps; nothing is left behind.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Host } from '../src/index.js';
import { INLINE_TURN_NS } from '../src/vmm/executor-inline.js';
import { assertSameResources, resources, within } from './helpers.js';

void describe('an inline host', () => {
  void it('boots hello, exit-status and sleeper on this thread: console, status, its sleep measured', async () => {
    const host = await Host.start({ inline: true });
    try {
      const hello = await host.create({ image: 'hello', warm: false });
      const seen: Buffer[] = [];
      hello.on('console', (b) => seen.push(b));
      assert.deepEqual(await within(hello.exited, 10_000, 'hello'), { kind: 'halt', status: 0 });
      // The listener was attached after create resolved, and still heard it all.
      assert.match(Buffer.concat(seen).toString(), /Hello/);
      const status = await host.create({ image: 'exit-status', cmdline: '42', warm: false });
      assert.deepEqual(await within(status.exited, 10_000, 'exit-status'), { kind: 'halt', status: 42 });
      const sleeper = await host.create({ image: 'sleeper', cmdline: '30', warm: false });
      assert.deepEqual(await within(sleeper.exited, 10_000, 'sleeper'), { kind: 'halt', status: 0 });
      const slept = Number(/slept (\d+) ms/.exec(sleeper.consoleText())?.[1]);
      assert.ok(slept >= 30 && slept < 2000, sleeper.consoleText());
    } finally {
      await host.close();
    }
  });

  void it('the event loop turns while a guest spins: timers fire, and a destroy from one ends it', async () => {
    const host = await Host.start({ inline: true });
    try {
      const spin = await host.create({ image: 'spin', warm: false });
      // Timers due every 5 ms over 200 ms: each fires within a turn's length of its time.
      let worst = 0;
      for (let i = 0; i < 40; i++) {
        const t0 = performance.now();
        await new Promise((r) => setTimeout(r, 5));
        worst = Math.max(worst, performance.now() - t0 - 5);
      }
      assert.ok(worst < (INLINE_TURN_NS / 1e6) * 20, `a timer came ${worst.toFixed(1)} ms late while the guest spun`);
      assert.equal(spin.state, 'running');
      assert.match(spin.consoleText(), /spinning/);
      setTimeout(() => void spin.destroy(), 20);
      assert.deepEqual(await within(spin.exited, 5_000, 'spin after destroy'), { kind: 'destroyed' });
    } finally {
      await host.close();
    }
  });

  void it('50 VMs one after another, and one left running at close: every fd and mapping is given back', async () => {
    const warm = await Host.start({ inline: true });
    await (await warm.create({ image: 'noop', warm: false })).freed;
    await warm.close();
    const before = resources();
    const host = await Host.start({ inline: true });
    for (let i = 0; i < 50; i++) {
      const vm = await host.create({ image: 'noop', warm: false });
      assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
    }
    const left = await host.create({ image: 'counter', warm: false });
    await host.close();
    assert.equal((await within(left.exited, 5_000, 'counter at close')).kind, 'destroyed');
    assertSameResources(before, resources(), 'inline host after 51 VMs and close');
  });

  void it('a bad image is refused with its reason, and the host goes on', async () => {
    const host = await Host.start({ inline: true });
    try {
      await assert.rejects(host.create({ image: '/nonexistent/x.elf', warm: false }), /x\.elf/);
      const vm = await host.create({ image: 'noop', warm: false });
      assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
    } finally {
      await host.close();
    }
  });
});
