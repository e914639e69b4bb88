// The xenstore module of a VM created with a xenstore device: Xen's ring
// page (struct xenstore_domain_interface) in the VM's RAM at a fixed GPA,
// the XENBUS_NOTIFY hypercall, and a connection to a xenstored socket that
// CONTROL lightvm-bind makes the VM's domain (the store then applies that
// domain's permissions and quotas to everything the guest sends). Requests
// go from the req ring to the socket; replies and watch events from the
// socket onto the rsp ring, and the device's POLL bit is set while some wait
// there. The host keeps its own copy of the indices it owns (req_cons,
// rsp_prod): what the guest writes in the page is only ever read as a
// claim, and a claim beyond the ring or a message beyond
// XENSTORE_PAYLOAD_MAX ends this VM alone.
import * as libc from '../../sys/libc.js';
import { SysError } from '../../sys/errors.js';
import { HC, XENSTORE_PAYLOAD_MAX, XENSTORE_RING, XENSTORE_RING_BYTES } from '../abi.js';
import { DeviceConfigError, type DeviceEntry } from '../device-page.js';
import { Next, type DeviceModule, type VmContext } from '../devices.js';
import { GuestFault } from '../exit.js';
import { XENSTORE_RING_GPA } from '../layout.js';

/** xs_wire's header: type, req_id, tx_id, len (u32 little-endian each). */
const HEADER = 16;
const XS_CONTROL = 0;
const XS_ERROR = 16;
/** Requests queued for the store before the ring is left unread (the guest then waits for its replies). */
const TO_STORE_MAX = 16 * 1024;
/** Replies and events the guest has not taken, at most: past it, it is not reading its ring. */
const FROM_STORE_MAX = 1 << 20;
const MASK = XENSTORE_RING_BYTES - 1;
const REQ_GPA = XENSTORE_RING_GPA + XENSTORE_RING.req;
const RSP_GPA = XENSTORE_RING_GPA + XENSTORE_RING.rsp;
/** One read(2) of the socket; its bytes are copied out at once (one executor thread, many VMs). */
const bounce = new Uint8Array(65536);

export interface XenstoreDevice {
  /** Its id: its bit in POLL's ready set. */
  id: number;
  /** The store's unix socket. */
  socket: string;
  /** The domain the VM is in the store (introduced there before the VM is created). */
  domid: number;
  /** Where in the configuration it came from, for refusals. */
  field: string;
}

function message(type: number, reqId: number, payload: Uint8Array): Uint8Array {
  const m = new Uint8Array(HEADER + payload.length);
  const v = new DataView(m.buffer);
  v.setUint32(0, type, true);
  v.setUint32(4, reqId, true);
  v.setUint32(12, payload.length, true);
  m.set(payload, HEADER);
  return m;
}

export class XenstoreModule implements DeviceModule {
  readonly name = 'xenstore';
  private readonly fd: number;
  private readonly bit: bigint;
  private readonly ram: VmContext['guest']['ram'];
  /** The indices the host owns; the page's copies are for the guest to read. */
  private reqCons = 0;
  private rspProd = 0;
  /** The request being read off the ring (header, then payload). */
  private readonly partial = new Uint8Array(HEADER + XENSTORE_PAYLOAD_MAX);
  private readonly partialView = new DataView(this.partial.buffer);
  private partialLen = 0;
  private toStore: Uint8Array[] = [];
  private toStoreBytes = 0;
  private fromStore: Uint8Array[] = [];
  private fromStoreBytes = 0;
  /** Until the store answered the bind: its reply is read here, not passed on, and guest requests wait. */
  private bound = false;
  private bindReply = new Uint8Array(0);
  private closed = false;
  /** Guest requests passed to the store (for the benchmark's count of store operations). */
  requests = 0;

  constructor(private readonly vm: VmContext, readonly device: XenstoreDevice) {
    this.bit = 1n << BigInt(device.id);
    this.ram = vm.guest.ram;
    try {
      this.fd = libc.connectUnix(device.socket);
    } catch (err) {
      const why = err instanceof SysError ? err.message : (err as Error).message;
      throw new DeviceConfigError(`${device.field}.path`, `no xenstore answers at ${device.socket} (${why})`);
    }
    // A fresh connection's socket buffer is empty: the bind goes out whole, at once.
    const bind = message(XS_CONTROL, 0, new TextEncoder().encode(`lightvm-bind\0${device.domid}\0`));
    const n = libc.write(this.fd, bind);
    if (n !== bind.length) {
      libc.close(this.fd);
      throw new DeviceConfigError(`${device.field}.path`, `the xenstore at ${device.socket} did not take the bind of domain ${device.domid}`);
    }
    // A fresh ring: zero indices, connection = XENSTORE_CONNECTED (0).
    this.ram.fill(0, XENSTORE_RING_GPA, XENSTORE_RING.size);
    vm.bus.watch({ fd: this.fd, events: libc.EPOLLIN | libc.EPOLLOUT | libc.EPOLLET, onReady: () => this.socketReady() });
    vm.bus.hypercall(HC.XENBUS_NOTIFY, this.name, () => {
      const failed = vm.bus.failure;
      if (failed) throw failed;
      this.takeRequests();
      this.flush();
      this.giveReplies();
      return Next.Resume;
    });
  }

  private index(field: number): number {
    return this.ram.view.getUint32(XENSTORE_RING_GPA + field, true);
  }

  /** Takes the complete requests the guest produced, up to the queue's bound. */
  private takeRequests(): void {
    const prod = this.index(XENSTORE_RING.reqProd);
    const avail = (prod - this.reqCons) >>> 0;
    if (avail > XENSTORE_RING_BYTES) {
      throw new GuestFault('xenstore',
        `xenstore ring: req_prod ${prod} is ${avail} bytes ahead of req_cons ${this.reqCons}, more than the ring's ${XENSTORE_RING_BYTES}`);
    }
    if (avail === 0 || this.toStoreBytes >= TO_STORE_MAX) return;
    const ring = this.ram.bytes;
    let taken = 0;
    while (taken < avail) {
      const want = this.partialLen < HEADER ? HEADER : HEADER + this.partialView.getUint32(12, true);
      const n = Math.min(want - this.partialLen, avail - taken);
      // Copied in at most two pieces: up to the ring's end, then from its start.
      const at = (this.reqCons + taken) & MASK;
      const first = Math.min(n, XENSTORE_RING_BYTES - at);
      this.partial.set(ring.subarray(REQ_GPA + at, REQ_GPA + at + first), this.partialLen);
      if (n > first) this.partial.set(ring.subarray(REQ_GPA, REQ_GPA + n - first), this.partialLen + first);
      this.partialLen += n;
      taken += n;
      if (this.partialLen < HEADER) continue;
      const len = this.partialView.getUint32(12, true);
      if (len > XENSTORE_PAYLOAD_MAX) {
        throw new GuestFault('xenstore', `xenstore ring: a request announces ${len} payload bytes (at most ${XENSTORE_PAYLOAD_MAX})`);
      }
      if (this.partialLen === HEADER + len) {
        this.toStore.push(this.partial.slice(0, this.partialLen));
        this.toStoreBytes += this.partialLen;
        this.partialLen = 0;
        this.requests++;
      }
    }
    this.reqCons = (this.reqCons + avail) >>> 0;
    this.ram.setUint32(XENSTORE_RING_GPA + XENSTORE_RING.reqCons, this.reqCons);
  }

  /** Puts what the store sent onto the rsp ring, as far as it has room; true if any is there for the guest. */
  private giveReplies(): boolean {
    const cons = this.index(XENSTORE_RING.rspCons);
    const used = (this.rspProd - cons) >>> 0;
    if (used > XENSTORE_RING_BYTES) {
      throw new GuestFault('xenstore', `xenstore ring: rsp_cons ${cons} is not within the ring's ${XENSTORE_RING_BYTES} bytes behind rsp_prod ${this.rspProd}`);
    }
    let room = XENSTORE_RING_BYTES - used;
    if (room > 0 && this.fromStoreBytes > 0) {
      const rsp = this.ram.writable(RSP_GPA, XENSTORE_RING_BYTES);
      while (room > 0 && this.fromStore.length) {
        const chunk = this.fromStore[0]!;
        const n = Math.min(room, chunk.length);
        const at = this.rspProd & MASK;
        const first = Math.min(n, XENSTORE_RING_BYTES - at);
        rsp.set(chunk.subarray(0, first), at);
        if (n > first) rsp.set(chunk.subarray(first, n), 0);
        this.rspProd = (this.rspProd + n) >>> 0;
        room -= n;
        this.fromStoreBytes -= n;
        if (n === chunk.length) this.fromStore.shift();
        else this.fromStore[0] = chunk.subarray(n);
      }
      this.ram.setUint32(XENSTORE_RING_GPA + XENSTORE_RING.rspProd, this.rspProd);
    }
    return this.rspProd !== cons;
  }

  /** Writes the guest's queued requests, as far as the socket takes them (the rest on EPOLLOUT). */
  private flush(): void {
    if (!this.bound) return;
    let sent = 0;
    while (sent < this.toStore.length) {
      const m = this.toStore[sent]!;
      const n = libc.write(this.fd, m);
      if (n < 0) {
        if (-n === libc.EAGAIN_ERRNO) break;
        this.vm.bus.fail(new GuestFault('xenstore', `the xenstore at ${this.device.socket} cannot be written to (errno ${-n})`));
        return;
      }
      this.toStoreBytes -= n;
      if (n < m.length) {
        this.toStore[sent] = m.subarray(n);
        break;
      }
      sent++;
    }
    this.toStore.splice(0, sent);
  }

  /** The socket is readable or writable: replies in, queued requests out. True if the VM should wake. */
  private socketReady(): boolean {
    if (this.closed || this.vm.bus.failure) return true;
    try {
      for (;;) {
        const n = libc.read(this.fd, bounce);
        if (n === -libc.EAGAIN_ERRNO) break;
        if (n <= 0) throw new GuestFault('xenstore', `the xenstore at ${this.device.socket} closed the connection of domain ${this.device.domid}`);
        const data = this.bound ? bounce.slice(0, n) : this.takeBindReply(bounce.subarray(0, n));
        if (data.length) {
          this.fromStore.push(data);
          this.fromStoreBytes += data.length;
        }
      }
      if (this.fromStoreBytes > FROM_STORE_MAX) {
        throw new GuestFault('xenstore', `does not read its xenstore ring: ${this.fromStoreBytes} bytes of replies and events wait for it`);
      }
      // Requests the guest wrote while the bind was under way, or while the socket was full.
      this.takeRequests();
      this.flush();
      return this.giveReplies();
    } catch (err) {
      if (!(err instanceof GuestFault)) throw err;
      this.vm.bus.fail(err);
      return true;
    }
  }

  /** Reads the bind's reply off the front of the stream; returns a copy of what follows it. */
  private takeBindReply(data: Uint8Array): Uint8Array {
    const all = new Uint8Array(this.bindReply.length + data.length);
    all.set(this.bindReply);
    all.set(data, this.bindReply.length);
    this.bindReply = all;
    if (all.length < HEADER) return new Uint8Array(0);
    const v = new DataView(all.buffer);
    const len = v.getUint32(12, true);
    if (len > XENSTORE_PAYLOAD_MAX) throw new GuestFault('xenstore', `the xenstore at ${this.device.socket} does not speak xs_wire (a ${len}-byte reply)`);
    if (all.length < HEADER + len) return new Uint8Array(0);
    if (v.getUint32(0, true) === XS_ERROR) {
      const errno = new TextDecoder().decode(all.subarray(HEADER, HEADER + len)).replace(/\0+$/, '').slice(0, 32);
      throw new GuestFault('xenstore', `the xenstore at ${this.device.socket} refused domain ${this.device.domid}: ${errno}`);
    }
    this.bound = true;
    this.bindReply = new Uint8Array(0);
    return all.slice(HEADER + len);
  }

  ready(): bigint {
    if (this.vm.bus.failure) return this.bit;
    // A guest that waits in POLL for more of a long reply is given it here: no notify is needed after consuming.
    try {
      return this.giveReplies() ? this.bit : 0n;
    } catch (err) {
      if (!(err instanceof GuestFault)) throw err;
      this.vm.bus.fail(err);
      return this.bit;
    }
  }

  save(): Uint8Array {
    throw new Error('a VM with a xenstore device cannot be saved: its connection to the store is not part of a snapshot');
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    libc.close(this.fd);
  }
}

/** The xenstore module of a VM whose configuration has a xenstore device; none without one (and so no XENBUS_NOTIFY). */
export function setUpXenstore(vm: VmContext, devices: readonly DeviceEntry[]): XenstoreModule | undefined {
  const i = devices.findIndex((d) => d.type === 'xenstore');
  if (i < 0) return undefined;
  const d = devices[i]!;
  return vm.bus.add(new XenstoreModule(vm, { id: d.id, socket: d.path!, domid: d.domid ?? vm.vmId, field: `devices.${i}` }));
}
