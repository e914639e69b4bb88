// xenbus on real VMs: a guest's xenstore ring (guest/lib/xs.c) forwarded by
// its executor to a `lightvm xenstored` as the guest's own domain. The guest
// reads keys the host wrote (one longer than the ring), writes keys the host
// reads, is refused what its domain may not read, gets watch events, and
// walks a frontend's states with a backend played here. A VM without a
// xenstore device has no XENBUS_NOTIFY; guests that break the ring's rules,
// or whose domain the store does not know, are ended with the reason while
// another VM on the same store goes on.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError, type VirtualMachine } from '../src/toolstack/host.js';
import { XsClient } from '../src/xenstore/client.js';
import { startXenstored, type Xenstored } from '../src/xenstore/server.js';
import { tempDir, waitFor, within } from './helpers.js';

/** The 3000-byte value: longer than the ring (1024), so both directions wrap. */
const BIG = Array.from({ length: 3000 }, (_v, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');

/** The guest's checksum of a string (xenbus.c's sum). */
function sum(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) >>> 0;
  return h;
}

void describe('xenbus', () => {
  const { dir, cleanup } = tempDir('xenbus');
  const socket = join(dir, 'xenstored.sock');
  let xsd: Xenstored;
  let dom0: XsClient;
  let host: Host;
  let counter: VirtualMachine;
  const lastCount = (): number => Number(/count (\d+)\n$/.exec(counter.consoleText())?.[1] ?? -1);
  const xenstore = (domid: number) => ({ type: 'xenstore' as const, id: 0, path: socket, domid });

  /** What a toolstack does before the VM exists: the domain introduced, its directories with their owners. */
  async function setUpDomain(domid: number): Promise<string> {
    const home = `/local/domain/${domid}`;
    await dom0.introduce(domid);
    await dom0.mkdir(home);
    await dom0.setPerms(home, ['n0', `r${domid}`]);
    for (const sub of ['data', 'device']) {
      await dom0.mkdir(`${home}/${sub}`);
      await dom0.setPerms(`${home}/${sub}`, [`n${domid}`]);
    }
    await dom0.write(`${home}/data/greeting`, 'hello guest');
    await dom0.write(`${home}/data/big`, BIG);
    await dom0.write(`${home}/data/secret`, 's3');
    await dom0.setPerms(`${home}/data/secret`, ['n0']);
    // The vif's two halves, as libxl lays them out: the frontend's dir is the guest's, the backend's dom0's.
    const front = `${home}/device/vif/0`;
    const back = `/local/domain/0/backend/vif/${domid}/0`;
    await dom0.mkdir(front);
    await dom0.setPerms(front, [`n${domid}`, 'r0']);
    await dom0.write(`${front}/backend`, back);
    await dom0.write(`${front}/backend-id`, '0');
    await dom0.mkdir(back);
    await dom0.setPerms(back, ['n0', `r${domid}`]);
    await dom0.write(`${back}/frontend`, front);
    await dom0.write(`${back}/state`, '1');
    return home;
  }

  /**
   * The backend's half of the handshake (as netback does it): at the
   * frontend's Initialising it says InitWait, at Initialised (ring-ref and
   * event-channel published) Connected. Returns the frontend states it saw.
   */
  async function backend(domid: number): Promise<{ states: number[]; connected: Promise<void> }> {
    const front = `/local/domain/${domid}/device/vif/0`;
    const back = `/local/domain/0/backend/vif/${domid}/0`;
    const c = await XsClient.connect(socket);
    const states: number[] = [];
    let done!: () => void;
    let failed!: (e: Error) => void;
    const connected = new Promise<void>((resolve, reject) => { done = resolve; failed = reject; });
    let chain = Promise.resolve();
    c.onEvent = () => {
      chain = chain.then(async () => {
        let st: number;
        try {
          st = Number(await c.read(`${front}/state`));
        } catch {
          return; // the initial event, before the frontend wrote a state
        }
        if (states[states.length - 1] === st) return;
        states.push(st);
        if (st === 1) await c.write(`${back}/state`, '2');
        if (st === 3) {
          assert.equal(await c.read(`${front}/ring-ref`), '8');
          assert.equal(await c.read(`${front}/event-channel`), '3');
          await c.write(`${back}/state`, '4');
        }
        if (st === 4) { c.close(); done(); }
      }).catch((e: unknown) => { c.close(); failed(e as Error); });
    };
    await c.watch(`${front}/state`, 'fe');
    return { states, connected };
  }

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
  async function bootClient(domid: number, name: string): Promise<{ vm: VirtualMachine; be: Awaited<ReturnType<typeof backend>> }> {
    await setUpDomain(domid);
    const be = await backend(domid);
    const vm = await host.create({ image: 'xenbus', name, devices: [xenstore(domid)] });
    await waitFor(`${name} to wait for its poke`, () => vm.consoleText().includes('xs: waiting for a poke\n') || vm.state === 'exited', 10_000);
    return { vm, be };
  }

  async function finishClient(domid: number, vm: VirtualMachine, be: Awaited<ReturnType<typeof backend>>): Promise<void> {
    const home = `/local/domain/${domid}`;
    await dom0.write(`${home}/data/poke`, 'now');
    assert.deepEqual(await within(vm.exited, 15_000, vm.name), { kind: 'halt', status: 0 }, vm.consoleText());
    await within(be.connected, 5000, 'the backend to see Connected');
    assert.equal(vm.consoleText(), [
      'xs: data/greeting = hello guest',
      `xs: data/big has 3000 bytes, sum ${sum(BIG)}`,
      'xs: wrote data/answer and data/echo',
      'xs: data has 5: greeting big secret answer echo',
      'xs: data/secret: EACCES',
      'xs: data/missing: ENOENT',
      'xs: event data/poke tok',
      'xs: waiting for a poke',
      'xs: event data/poke tok, poked: now',
      'xs: frontend state 1',
      'xs: backend state 1',
      'xs: backend state 2',
      'xs: frontend state 3',
      'xs: backend state 4',
      'xs: frontend state 4',
      'xs: connected',
      '',
    ].join('\n'));
    assert.equal(await dom0.read(`${home}/data/answer`), '42');
    assert.equal(await dom0.read(`${home}/data/echo`), BIG);
    // Written through the ring, so made by the guest's domain: it owns them.
    assert.deepEqual(await dom0.getPerms(`${home}/data/answer`), [`n${domid}`]);
    assert.deepEqual(be.states, [1, 3, 4]);
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
    const cases: [string, number, RegExp][] = [
      ['prod', 21, /xenstore ring: req_prod 5000 is 5000 bytes ahead of req_cons 0, more than the ring's 1024/],
      ['len', 22, /xenstore ring: a request announces 100000 payload bytes \(at most 4096\)/],
      ['cons', 23, /xenstore ring: rsp_cons 12345 is not within the ring's 1024 bytes behind rsp_prod 0/],
    ];
    for (const [mode, domid, reason] of cases) {
      await setUpDomain(domid);
      const countBefore = lastCount();
      const evil = await host.create({ image: 'xenbus-evil', cmdline: mode, devices: [xenstore(domid)] });
      const exit = await within(evil.exited, 10_000, `xenbus-evil ${mode}`);
      assert.equal(exit.kind, 'crash', `${mode}: ${JSON.stringify(exit)} ${evil.consoleText()}`);
      assert.equal(exit.kind === 'crash' && exit.code, 'xenstore');
      assert.match(exit.kind === 'crash' ? exit.reason : '', reason);
      assert.equal(evil.consoleText(), `evil: ${mode}\n`);
      await waitFor('the counter to go on', () => lastCount() > countBefore, 5000);
    }
    // Each ended VM's connection is gone from the store: only dom0's, the backend's and the good guest's remain.
    await waitFor('the ended guests\' connections to close', () => xsd.store.connections.size === 3, 5000);
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
