// virtio-console: a guest's output on its transmit queue is its console (as
// CONSOLE_WRITE is), through a Host's executor; host input reaches the
// buffers it posted on the receive queue, and the device's POLL ready bit
// wakes it from POLL (at the Machine level, where the test plays the
// executor's part: run, park, wake with the ready set).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { Host } from '../src/toolstack/host.js';
import { parseElf } from '../src/vmm/elf.js';
import { Machine, Outcome } from '../src/vmm/machine.js';
import { setUpConsole, type ConsoleDevice } from '../src/vmm/virtio/console.js';
import { placeVirtio } from '../src/vmm/virtio/mmio.js';
import { guestImage, within } from './helpers.js';

void describe('virtio-console', () => {
  let kvm: Kvm;
  before(() => {
    kvm = Kvm.open();
  });
  after(() => kvm.close());

  void it('through a Host: the guest\'s transmit queue is its console', async () => {
    const host = await Host.start({ executors: 1 });
    try {
      const vm = await host.create({ image: 'vcon', devices: [{ type: 'console', id: 3 }] });
      await within((async () => {
        while (!vm.consoleText().includes('\n')) await new Promise((r) => setTimeout(r, 10));
      })(), 10_000, 'vcon to say hello');
      assert.equal(vm.consoleText(), 'vcon: hello over virtio-console\n');
      await vm.destroy();
      // Without the device the guest finds none and says so.
      const bare = await host.create({ image: 'vcon' });
      assert.deepEqual(await within(bare.exited, 10_000, 'vcon without a device'), { kind: 'halt', status: 2 });
      assert.equal(bare.consoleText(), 'vcon: no console device\n');
    } finally {
      await host.close();
    }
  });

  void it('host input wakes the guest from POLL and comes back in capitals; "quit" ends it', () => {
    const m = new Machine(kvm, 4 << 20);
    try {
      const devices = placeVirtio([{ type: 'console', id: 5 }]);
      const file = guestImage('vcon');
      m.load(parseElf(file, new Uint8Array(readFileSync(file))), { vmId: 9, name: 'vcon', cmdline: '', devices });
      const con = m.add(setUpConsole(m, devices[0]!)).device as ConsoleDevice;
      let out = '';
      m.onConsole = (d) => {
        out += Buffer.from(d).toString();
      };
      const control = new Int32Array(new SharedArrayBuffer(8));
      const parkOnce = (): void => {
        for (let i = 0; i < 100; i++) {
          const o = m.run(control);
          if (o === Outcome.Parked) return;
          assert.notEqual(o, Outcome.Ended, `ended: ${JSON.stringify(m.exit)} ${out}`);
        }
        assert.fail('never parked');
      };
      parkOnce();
      assert.equal(out, 'vcon: hello over virtio-console\n');
      assert.equal(m.readySet(), 0n, 'nothing is ready before input');
      con.input(new TextEncoder().encode('shout this\n'));
      assert.equal(m.readySet(), 1n << 5n, 'input makes the device (id 5) ready');
      m.wake(m.readySet());
      parkOnce();
      assert.equal(out, 'vcon: hello over virtio-console\nSHOUT THIS\n');
      assert.equal(m.readySet(), 0n, 'the guest acknowledged it');
      con.input(new TextEncoder().encode('quit\n'));
      m.wake(m.readySet());
      assert.equal(m.run(control), Outcome.Ended);
      assert.deepEqual(m.exit, { kind: 'halt', status: 0 });
    } finally {
      m.close();
    }
  });
});
