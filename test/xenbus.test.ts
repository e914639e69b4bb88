// xenbus on real VMs: a guest's xenstore ring (guest/lib/xs.c) forwarded by
// its executor to a `lightvm xenstored` as the guest's own domain. The guest
// reads keys the host wrote (one longer than the ring), writes keys the host
// reads, is refused what its domain may not read, gets watch events, and
// walks a frontend's states with a backend played here. A VM without a
// xenstore device has no XENBUS_NOTIFY; guests that break the ring's rules,
// or whose domain the store does not know, are ended with the reason while
// another VM on the same store goes on.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError, type VirtualMachine } from '../src/toolstack/host.js';
import { XsClient } from '../src/xenstore/client.js';
import { startXenstored, type Xenstored } from '../src/xenstore/server.js';
import { tempDir, waitFor, within } from './helpers.js';
import { XENBUS_CONSOLE, assertLeft, backend, setUpDomain, type Backend } from './xenbus-helpers.js';

const haveKvm = existsSync('/dev/kvm');

void describe('xenbus on real VMs', { skip: haveKvm ? false : 'no /dev/kvm on this host' }, () => {
  const { dir, cleanup } = tempDir('xenbus');
  const socket = join(dir, 'xenstored.sock');
  let xsd: Xenstored;
  let dom0: XsClient;
  let host: Host;
  let counter: VirtualMachine;
  const lastCount = (): number => Number(/count (\d+)\n$/.exec(counter.consoleText())?.[1] ?? -1);
  const xenstore = (domid: number) => ({ type: 'xenstore' as const, id: 0, path: socket, domid });

  before(async () => {
    xsd = await startXenstored({ socket });
    dom0 = await XsClient.connect(socket);
    host = await Host.start({ executors: 1 });
    counter = await host.create({ image: 'counter', name: 'counter' });
    await waitFor('counter to count', () => lastCount() >= 1);
  });
  after(async () => {
    try {
      await host.close();
    } finally {
      dom0.close();
      await xsd.close();
      cleanup();
    }
  });

  /** Boots the xenbus guest as domid and plays the host's side up to its poke; returns the VM and its backend. */
  async function bootClient(domid: number, name: string): Promise<{ vm: VirtualMachine; be: Backend }> {
    await setUpDomain(dom0, domid);
    const be = await backend(socket, domid);
    const vm = await host.create({ image: 'xenbus', name, devices: [xenstore(domid)] });
    await waitFor(`${name} to wait for its poke`, () => vm.consoleText().includes('xs: waiting for a poke\n') || vm.state === 'exited', 10_000);
    return { vm, be };
  }

  async function finishClient(domid: number, vm: VirtualMachine, be: Backend): Promise<void> {
    await dom0.write(`/local/domain/${domid}/data/poke`, 'now');
    assert.deepEqual(await within(vm.exited, 15_000, vm.name), { kind: 'halt', status: 0 }, vm.consoleText());
    await within(be.connected, 5000, 'the backend to see Connected');
    assert.equal(vm.consoleText(), XENBUS_CONSOLE);
    await assertLeft(dom0, domid, be);
  }

  void it('a guest reads, writes, lists, is refused, watches, and walks a frontend to Connected', async () => {
    const { vm, be } = await bootClient(5, 'xb');
    await finishClient(5, vm, be);
  });

  void it('a VM without a xenstore device has no XENBUS_NOTIFY and no ring', async () => {
    const evil = await host.create({ image: 'xenbus-evil', cmdline: 'notify' });
    const exit = await within(evil.exited, 10_000, 'xenbus-evil notify');
    assert.equal(exit.kind, 'crash');
    assert.equal(exit.kind === 'crash' && exit.code, 'bad-hypercall');
    assert.match(exit.kind === 'crash' ? exit.reason : '', /unknown hypercall 7 .*XENBUS_NOTIFY is not a call of this VM/);
    const plain = await host.create({ image: 'xenbus' });
    assert.deepEqual(await within(plain.exited, 10_000, 'xenbus without a device'), { kind: 'halt', status: 2 });
    assert.equal(plain.consoleText(), 'xs: no xenstore device\n');
  });

  void it('a guest that breaks the ring rules is ended alone; the store and another guest on it go on', async () => {
    const { vm: good, be } = await bootClient(20, 'xb-good');
    const connections = xsd.store.connections.size;
    const cases: [string, number, RegExp][] = [
      ['prod', 21, /xenstore ring: req_prod 5000 is 5000 bytes ahead of req_cons 0, more than the ring's 1024/],
      ['len', 22, /xenstore ring: a request announces 100000 payload bytes \(at most 4096\)/],
      ['cons', 23, /xenstore ring: rsp_cons 12345 is not within the ring's 1024 bytes behind rsp_prod 0/],
    ];
    for (const [mode, domid, reason] of cases) {
      await setUpDomain(dom0, domid);
      const countBefore = lastCount();
      const evil = await host.create({ image: 'xenbus-evil', cmdline: mode, devices: [xenstore(domid)] });
      const exit = await within(evil.exited, 10_000, `xenbus-evil ${mode}`);
      assert.equal(exit.kind, 'crash', `${mode}: ${JSON.stringify(exit)} ${evil.consoleText()}`);
      assert.equal(exit.kind === 'crash' && exit.code, 'xenstore');
      assert.match(exit.kind === 'crash' ? exit.reason : '', reason);
      assert.equal(evil.consoleText(), `evil: ${mode}\n`);
      await waitFor('the counter to go on', () => lastCount() > countBefore, 5000);
    }
    // Each ended VM's connection is gone from the store.
    await waitFor('the ended guests\' connections to close', () => xsd.store.connections.size === connections, 5000);
    await finishClient(20, good, be);
  });

  void it('a domain the store does not know ends its VM with the store\'s answer; bad configurations are refused with their field', async () => {
    const vm = await host.create({ image: 'xenbus', devices: [xenstore(99)] });
    const exit = await within(vm.exited, 10_000, 'xenbus as domain 99');
    assert.equal(exit.kind === 'crash' && exit.code, 'xenstore', JSON.stringify(exit));
    assert.match(exit.kind === 'crash' ? exit.reason : '', /refused domain 99: ENOENT/);
    const refused = async (devices: unknown[], field: string, message: RegExp): Promise<void> => {
      await assert.rejects(host.create({ image: 'xenbus', devices: devices as never }), (e: unknown) => {
        assert.ok(e instanceof VmCreateError, String(e));
        assert.equal(e.field, field);
        assert.match(e.message, message);
        return true;
      });
    };
    await refused([{ type: 'xenstore', id: 0, path: join(dir, 'nobody.sock'), domid: 5 }], 'devices.0.path', /no xenstore answers at .*nobody\.sock/);
    await refused([{ type: 'xenstore', id: 0, path: 'relative.sock' }], 'devices.0.path', /absolute path/);
    await refused([{ type: 'xenstore', id: 0, path: socket, domid: 0 }], 'devices.0.domid', /not a guest domain id/);
    await refused([xenstore(5), { ...xenstore(5), id: 1 }], 'devices.1.type', /one xenstore device at most/);
  });
});
