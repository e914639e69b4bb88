// The xenstore module without a vCPU: its real ring page in real guest
// memory, its real device bus and a real `lightvm xenstored`, with this
// test writing the ring as a guest would (xs_wire messages at req_prod,
// replies taken at rsp_cons) and making XENBUS_NOTIFY through the bus as a
// VM's exit would. What the executor does with the socket's readiness is
// the watch's onReady, called here until the condition holds. Checks the
// forwarding as the VM's domain, replies and events longer than the ring,
// and that broken indices, oversized messages and a store that refuses or
// drops the domain end that VM alone.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import { HC, NOXS_DEVICE, NOXS_PAGE_SIZE, XENSTORE_PAYLOAD_MAX, XENSTORE_RING, XENSTORE_RING_BYTES, noxsDeviceOffset } from '../src/vmm/abi.js';
import { DevicePage, DeviceConfigError, validateDevicePage, type DeviceEntry } from '../src/vmm/device-page.js';
import { DeviceBus, Next, type VmContext } from '../src/vmm/devices.js';
import { GuestFault } from '../src/vmm/exit.js';
import { GuestAccess } from '../src/vmm/guest-access.js';
import { XENSTORE_RING_GPA } from '../src/vmm/layout.js';
import { XenstoreModule } from '../src/vmm/modules/xenstore.js';
import { XsClient } from '../src/xenstore/client.js';
import { startXenstored, type Xenstored } from '../src/xenstore/server.js';
import { XsType, encode, splitStrings, strings } from '../src/xenstore/wire.js';
import { openFds, tempDir, waitFor } from './helpers.js';

const RAM = 2 * 1024 * 1024;
const REQ = XENSTORE_RING_GPA + XENSTORE_RING.req;
const RSP = XENSTORE_RING_GPA + XENSTORE_RING.rsp;
const MASK = XENSTORE_RING_BYTES - 1;

interface Reply { type: number; reqId: number; payload: Buffer }

/** One VM's side of the ring: its memory and bus, and the guest's half of the protocol written in TypeScript. */
class RingVm {
  readonly ram = new GuestMemory(RAM);
  private readonly pageMem = new GuestMemory(NOXS_PAGE_SIZE);
  readonly bus = new DeviceBus();
  module!: XenstoreModule;
  private got = Buffer.alloc(0);
  private nextReq = 1;

  constructor(readonly domid: number) {}

  open(socket: string): this {
    const ctx: VmContext = { vmId: this.domid, guest: new GuestAccess(this.ram, this.pageMem), bus: this.bus, console: () => 0, hold: () => Next.Resume };
    this.module = this.bus.add(new XenstoreModule(ctx, { id: 3, socket, domid: this.domid, field: 'devices.0' }));
    return this;
  }

  u32(field: number): number {
    return this.ram.view.getUint32(XENSTORE_RING_GPA + field, true);
  }

  set(field: number, v: number): void {
    this.ram.view.setUint32(XENSTORE_RING_GPA + field, v >>> 0, true);
  }

  /** XENBUS_NOTIFY, as the VM's exit dispatches it. */
  notify(): void {
    assert.equal(this.bus.call(HC.XENBUS_NOTIFY, 0x500 + HC.XENBUS_NOTIFY)(0), Next.Resume);
  }

  /** Bytes into req as far as there is room; how many went. */
  put(bytes: Uint8Array): number {
    const prod = this.u32(XENSTORE_RING.reqProd);
    const room = XENSTORE_RING_BYTES - ((prod - this.u32(XENSTORE_RING.reqCons)) >>> 0);
    const n = Math.min(room, bytes.length);
    for (let i = 0; i < n; i++) this.ram.bytes[REQ + ((prod + i) & MASK)] = bytes[i]!;
    this.set(XENSTORE_RING.reqProd, prod + n);
    return n;
  }

  /** A whole request, notifying whenever req is full (as lib/xs.c does). */
  send(type: number, payload: Buffer): number {
    const reqId = this.nextReq++;
    let m: Uint8Array = encode({ type, reqId, txId: 0, payload });
    while (m.length) {
      m = m.subarray(this.put(m));
      this.notify();
    }
    return reqId;
  }

  /** Takes what rsp holds. */
  private drain(): void {
    const cons = this.u32(XENSTORE_RING.rspCons);
    const n = (this.u32(XENSTORE_RING.rspProd) - cons) >>> 0;
    assert.ok(n <= XENSTORE_RING_BYTES, `rsp_prod is ${n} bytes ahead`);
    const b = Buffer.alloc(n);
    for (let i = 0; i < n; i++) b[i] = this.ram.bytes[RSP + ((cons + i) & MASK)]!;
    this.got = Buffer.concat([this.got, b]);
    this.set(XENSTORE_RING.rspCons, cons + n);
  }

  /** The next message on rsp, waiting as a guest in POLL does: the socket's readiness, then POLL's ready set. */
  async take(what: string): Promise<Reply> {
    let reply: Reply | undefined;
    await waitFor(what, () => {
      this.bus.watches[0]!.onReady();
      if (this.bus.ready() !== 0n) this.drain();
      if (this.got.length < 16) return false;
      const len = this.got.readUInt32LE(12);
      if (this.got.length < 16 + len) return false;
      reply = { type: this.got.readUInt32LE(0), reqId: this.got.readUInt32LE(4), payload: this.got.subarray(16, 16 + len) };
      this.got = this.got.subarray(16 + len);
      return true;
    }, 5000);
    return reply!;
  }

  /** A request and its reply (watch events before it are returned too). */
  async call(type: number, payload: Buffer): Promise<{ reply: Reply; events: string[][] }> {
    const reqId = this.send(type, payload);
    const events: string[][] = [];
    for (;;) {
      const m = await this.take(`the reply to request ${reqId} of domain ${this.domid}`);
      if (m.type === XsType.WATCH_EVENT) { events.push(splitStrings(m.payload)); continue; }
      assert.equal(m.reqId, reqId);
      return { reply: m, events };
    }
  }

  /** Runs the socket's readiness until the bus holds a failure; returns it. */
  async failure(what: string): Promise<GuestFault> {
    await waitFor(what, () => { this.bus.watches[0]!.onReady(); return this.bus.failure !== undefined; }, 5000);
    return this.bus.failure!;
  }

  close(): void {
    this.bus.close();
    this.ram.close();
    this.pageMem.close();
  }
}

const text = (r: Reply): string => (r.type === XsType.ERROR ? `ERROR ${splitStrings(r.payload)[0]}` : r.payload.toString('utf8'));

void describe('xenstore ring module (no vCPU: the test is the guest)', () => {
  const { dir, cleanup } = tempDir('xsring');
  const socket = join(dir, 'xenstored.sock');
  let xsd: Xenstored;
  let dom0: XsClient;
  const vms: RingVm[] = [];
  const vm = (domid: number): RingVm => {
    const v = new RingVm(domid).open(socket);
    vms.push(v);
    return v;
  };

  async function introduce(domid: number): Promise<string> {
    const home = `/local/domain/${domid}`;
    await dom0.introduce(domid);
    await dom0.mkdir(home);
    await dom0.setPerms(home, [`n${domid}`]);
    return home;
  }

  before(async () => {
    xsd = await startXenstored({ socket });
    dom0 = await XsClient.connect(socket);
  });
  after(async () => {
    try {
      for (const v of vms) v.close();
      dom0.close();
    } finally {
      await xsd.close();
      cleanup();
    }
  });

  void it('forwards as the VM\'s domain: reads what dom0 wrote, writes what dom0 reads, is refused what its domain may not read', async () => {
    const home = await introduce(5);
    await dom0.write(`${home}/greeting`, 'hello guest');
    await dom0.write('/local/domain/0/secret', 's3');
    await dom0.setPerms('/local/domain/0/secret', ['n0']);
    const g = vm(5);
    assert.equal(text((await g.call(XsType.READ, strings('greeting'))).reply), 'hello guest');
    assert.equal(text((await g.call(XsType.WRITE, Buffer.from('answer\x0042'))).reply), 'OK\0');
    assert.equal(await dom0.read(`${home}/answer`), '42');
    // Made through the ring, so made by domain 5: it owns the node.
    assert.deepEqual(await dom0.getPerms(`${home}/answer`), ['n5']);
    assert.equal(text((await g.call(XsType.DIRECTORY, strings(home))).reply), 'greeting\0answer\0');
    assert.equal(text((await g.call(XsType.READ, strings('/local/domain/0/secret'))).reply), 'ERROR EACCES');
    assert.equal(text((await g.call(XsType.READ, strings('missing'))).reply), 'ERROR ENOENT');
    // dom0's powers are not the guest's: its connection was bound before any of its requests went.
    assert.equal(text((await g.call(XsType.INTRODUCE, strings('6', '0', '0'))).reply), 'ERROR EACCES');
    assert.equal(text((await g.call(XsType.CONTROL, strings('lightvm-bind', '0'))).reply), 'ERROR EACCES');
    assert.equal(g.module.requests, 7);
    assert.equal(g.bus.failure, undefined);
  });

  void it('a watch fires at once and on a change; replies longer than the ring come in pieces as the guest takes them', async () => {
    const home = await introduce(7);
    const g = vm(7);
    const w = await g.call(XsType.WATCH, strings('poke', 'tok'));
    assert.equal(text(w.reply), 'OK\0');
    assert.deepEqual((await g.take('the first watch event')).payload.toString(), 'poke\0tok\0');
    await dom0.write(`${home}/poke`, 'now');
    const ev = await g.take('the watch event of the write');
    assert.equal(ev.type, XsType.WATCH_EVENT);
    assert.deepEqual(splitStrings(ev.payload), ['poke', 'tok']);
    // 3000 bytes each way: the request wraps req, the reply is more than rsp holds at once.
    const big = Array.from({ length: 3000 }, (_v, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');
    assert.equal(text((await g.call(XsType.WRITE, Buffer.from(`big\0${big}`))).reply), 'OK\0');
    assert.equal(await dom0.read(`${home}/big`), big);
    const r = await g.call(XsType.READ, strings('big'));
    assert.equal(text(r.reply), big);
    // big is not below the watched poke: no event came with these calls.
    assert.deepEqual(r.events, []);
    assert.ok(g.u32(XENSTORE_RING.rspProd) > XENSTORE_RING_BYTES * 2, 'the rsp ring went round');
  });

  void it('indices beyond the ring, an oversized message and a rsp_cons past rsp_prod end that VM alone', async () => {
    await introduce(20);
    const good = vm(20);
    assert.equal(text((await good.call(XsType.WRITE, Buffer.from('before\x00x'))).reply), 'OK\0');
    const connections = xsd.store.connections.size;
    const cases: [number, string, (v: RingVm) => void, RegExp][] = [
      [21, 'req_prod', (v) => v.set(XENSTORE_RING.reqProd, v.u32(XENSTORE_RING.reqCons) + 5000),
        /^xenstore ring: req_prod \d+ is 5000 bytes ahead of req_cons \d+, more than the ring's 1024$/],
      [22, 'req_prod behind req_cons', (v) => v.set(XENSTORE_RING.reqProd, v.u32(XENSTORE_RING.reqCons) - 1),
        /^xenstore ring: req_prod \d+ is 4294967295 bytes ahead of req_cons \d+/],
      [23, 'len', (v) => {
        const h = Buffer.alloc(16);
        h.writeUInt32LE(XsType.READ, 0);
        h.writeUInt32LE(100000, 12);
        v.put(h);
      }, new RegExp(`^xenstore ring: a request announces 100000 payload bytes \\(at most ${XENSTORE_PAYLOAD_MAX}\\)$`)],
      [24, 'rsp_cons', (v) => v.set(XENSTORE_RING.rspCons, 12345),
        /^xenstore ring: rsp_cons 12345 is not within the ring's 1024 bytes behind rsp_prod 19$/],
    ];
    for (const [domid, what, breakRing, reason] of cases) {
      await introduce(domid);
      const evil = vm(domid);
      // Bound first (a first request answered), so the fault is the ring's, not the bind's.
      assert.equal(text((await evil.call(XsType.WRITE, Buffer.from('mine\x00m'))).reply), 'OK\0', what);
      breakRing(evil);
      assert.throws(() => evil.notify(), (e: unknown) => {
        assert.ok(e instanceof GuestFault, `${what}: ${String(e)}`);
        assert.equal(e.code, 'xenstore');
        assert.match(e.message, reason);
        return true;
      }, what);
      evil.close();
    }
    // The store dropped each ended VM's connection; the good one works on.
    await waitFor('the ended VMs\' connections to close', () => xsd.store.connections.size === connections, 5000);
    assert.equal(text((await good.call(XsType.READ, strings('before'))).reply), 'x');
  });

  void it('a guest that does not read its ring is ended once a MiB of events waits for it, and the store goes on', async () => {
    const home = await introduce(50);
    const g = vm(50);
    // A long token makes each event ~3 KiB: a few hundred writes pass the bound.
    const token = 't'.repeat(3000);
    assert.equal(text((await g.call(XsType.WATCH, Buffer.from(`flood\0${token}\0`))).reply), 'OK\0');
    let writes = 0;
    // The socket's readiness is handled after each write, as the executor's epoll would; the guest never moves rsp_cons.
    while (!g.bus.failure && writes < 1000) {
      await dom0.write(`${home}/flood`, String(writes++));
      g.bus.watches[0]!.onReady();
    }
    assert.match(g.bus.failure?.message ?? 'no failure', /^does not read its xenstore ring: \d+ bytes of replies and events wait for it$/);
    assert.ok(writes > 300 && writes < 400, `ended after ${writes} events of ~3 KiB`);
    assert.equal(await dom0.read(`${home}/flood`), String(writes - 1));
  });

  void it('a store that refuses the domain, or releases it, ends the VM with what the store said', async () => {
    const unknown = vm(99);
    // Written before the bind's answer: it must never reach the store, where the unbound connection is dom0's.
    unknown.send(XsType.WRITE, Buffer.from('/pwned\x00by 99'));
    const refused = await unknown.failure('the bind of an unknown domain to be refused');
    assert.equal(refused.code, 'xenstore');
    assert.match(refused.message, /^the xenstore at .*xenstored\.sock refused domain 99: ENOENT$/);
    // The VM then sees its device ready (its POLL returns), and its next notify ends it.
    assert.equal(unknown.bus.ready(), 1n << 3n);
    assert.throws(() => unknown.notify(), /refused domain 99/);
    await assert.rejects(dom0.read('/pwned'), /ENOENT/);
    // Requests written before the bind's answer wait for it, then go as the domain.
    const home = await introduce(30);
    await dom0.write(`${home}/early`, 'e');
    const early = new RingVm(30);
    vms.push(early);
    early.open(socket);
    assert.equal(text((await early.call(XsType.READ, strings('early'))).reply), 'e');
    await dom0.release(30);
    const dropped = await early.failure('the released domain\'s connection to end');
    assert.match(dropped.message, /closed the connection of domain 30$/);
  });

  void it('closing the module closes its socket; a store nobody answers on is refused at set-up', async () => {
    await introduce(40);
    const fdsBefore = openFds().length;
    const g = new RingVm(40).open(socket);
    assert.equal(text((await g.call(XsType.READ, strings('/local/domain/40'))).reply), '');
    const connections = xsd.store.connections.size;
    g.close();
    // Its end and the store's (the server side of the socket is in this process too).
    await waitFor('the store to see the connection closed', () => xsd.store.connections.size === connections - 1, 5000);
    await waitFor('every fd of the module closed', () => openFds().length === fdsBefore, 5000);
    const lonely = new RingVm(41);
    assert.throws(() => lonely.open(join(dir, 'nobody.sock')), (e: unknown) => {
      assert.ok(e instanceof DeviceConfigError, String(e));
      assert.equal(e.field, 'devices.0.path');
      assert.match(e.message, /no xenstore answers at .*nobody\.sock/);
      return true;
    });
    assert.equal(openFds().length, fdsBefore, 'the refused connection left no fd');
    lonely.close();
  });

  void it('the device page: a xenstore entry\'s backend is the ring; its path, domid and count are checked', () => {
    const mem = new GuestMemory(NOXS_PAGE_SIZE);
    try {
      const page = new DevicePage(mem);
      page.write({ vmId: 1, name: 'x', devices: [{ type: 'xenstore', id: 2, path: socket, backend: 0x1234 }] });
      assert.equal(mem.view.getUint16(noxsDeviceOffset(0) + NOXS_DEVICE.type, true), 4);
      assert.equal(mem.view.getBigUint64(noxsDeviceOffset(0) + NOXS_DEVICE.backend, true), BigInt(XENSTORE_RING_GPA));
    } finally {
      mem.close();
    }
    const refused = (devices: DeviceEntry[], field: string, message: RegExp): void => {
      assert.throws(() => validateDevicePage({ vmId: 1, name: 'x', devices }), (e: unknown) => {
        assert.ok(e instanceof DeviceConfigError, String(e));
        assert.equal(e.field, field);
        assert.match(e.message, message);
        return true;
      });
    };
    refused([{ type: 'xenstore', id: 0, path: 'rel.sock' }], 'devices.0.path', /absolute path/);
    refused([{ type: 'xenstore', id: 0 }], 'devices.0.path', /absolute path/);
    refused([{ type: 'xenstore', id: 0, path: socket, domid: 0 }], 'devices.0.domid', /0 is not a guest domain id in 1\.\.32751/);
    refused([{ type: 'xenstore', id: 0, path: socket, domid: 40000 }], 'devices.0.domid', /40000 is not/);
    refused([{ type: 'xenstore', id: 0, path: socket }, { type: 'xenstore', id: 1, path: socket }], 'devices.1.type', /one xenstore device at most/);
    validateDevicePage({ vmId: 1, name: 'x', devices: [{ type: 'xenstore', id: 0, path: socket, domid: 32751 }] });
  });

  void it('a bus without the module has no XENBUS_NOTIFY', () => {
    assert.throws(() => new DeviceBus().call(HC.XENBUS_NOTIFY, 0x507), (e: unknown) => {
      assert.ok(e instanceof GuestFault);
      assert.equal(e.code, 'bad-hypercall');
      assert.match(e.message, /^unknown hypercall 7 \(port 0x507\): XENBUS_NOTIFY is not a call of this VM/);
      return true;
    });
  });
});
