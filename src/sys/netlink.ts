// rtnetlink from TypeScript: the messages that create a bridge, attach a
// link to it, bring links up, give addresses and delete links, built and
// parsed here (no `ip`, no `brctl`, no shell). Written by hand because no
// npm library speaks rtnetlink without a native addon or a child process.
import { writeFileSync } from 'node:fs';
import koffi from './koffi.js';
import { SysError } from './errors.js';
import * as libc from './libc.js';

const lib = koffi.load('libc.so.6');
const c = {
  socket: lib.func('int socket(int domain, int type, int protocol)'),
  sendto: lib.func('long sendto(int fd, const void *buf, size_t len, int flags, const void *addr, uint32_t addrlen)'),
  recv: lib.func('long recv(int fd, void *buf, size_t len, int flags)'),
  ifNametoindex: lib.func('uint32_t if_nametoindex(const char *name)'),
};

const AF_NETLINK = 16;
const AF_INET = 2;
const SOCK_RAW = 3;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_ROUTE = 0;

const NLMSG_ERROR = 2;
const NLMSG_DONE = 3;
const RTM_NEWLINK = 16;
const RTM_DELLINK = 17;
const RTM_GETLINK = 18;
const RTM_NEWADDR = 20;
const NLM_F_REQUEST = 0x1;
const NLM_F_ACK = 0x4;
const NLM_F_DUMP = 0x300;
const NLM_F_EXCL = 0x200;
const NLM_F_CREATE = 0x400;

const IFLA_IFNAME = 3;
const IFLA_MTU = 4;
const IFLA_MASTER = 10;
const IFLA_LINKINFO = 18;
const IFLA_IFALIAS = 20;
const IFLA_AF_SPEC = 26;
const AF_INET6 = 10;
const IFLA_INET6_ADDR_GEN_MODE = 8;
const IN6_ADDR_GEN_MODE_NONE = 1;
const IFLA_INFO_KIND = 1;
const IFLA_INFO_DATA = 2;
const IFLA_BR_MCAST_SNOOPING = 23;
const IFA_ADDRESS = 1;
const IFA_LOCAL = 2;
const IFF_UP = 0x1;

const NLMSGHDR = 16;
const IFINFOMSG = 16;
const IFADDRMSG = 8;

const align4 = (n: number): number => (n + 3) & ~3;

/** One rtattr (nested attributes are built from their own bytes). */
function attr(type: number, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(align4(4 + data.length));
  const v = new DataView(out.buffer);
  v.setUint16(0, 4 + data.length, true);
  v.setUint16(2, type, true);
  out.set(data, 4);
  return out;
}

const u32 = (n: number): Uint8Array => {
  const b = new Uint8Array(4);
  new DataView(b.buffer).setUint32(0, n, true);
  return b;
};
const cstr = (s: string): Uint8Array => {
  const e = new TextEncoder().encode(s);
  const b = new Uint8Array(e.length + 1);
  b.set(e);
  return b;
};
const concat = (parts: Uint8Array[]): Uint8Array => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

export function ipv4Bytes(ip: string): Uint8Array {
  const parts = ip.split('.').map(Number);
  if (parts.length !== 4 || parts.some((p) => !Number.isInteger(p) || p < 0 || p > 255)) throw new RangeError(`"${ip}" is not an IPv4 address`);
  return new Uint8Array(parts);
}

/** What rtnetlink says of one link. */
export interface LinkInfo {
  index: number;
  name: string;
  /** Its kind (IFLA_INFO_KIND: "bridge", "veth", "tun", ...); "" for a device without one (a NIC, lo). */
  kind: string;
  /** Index of the bridge it is a port of, 0 if none. */
  master: number;
  up: boolean;
  alias: string;
}

const text = (b: Uint8Array): string => {
  const end = b.indexOf(0);
  return new TextDecoder().decode(end < 0 ? b : b.subarray(0, end));
};

/** Parses the attributes of [start, end) of v: type -> bytes (the first of each type). */
function attrsOf(v: DataView, start: number, end: number): Map<number, Uint8Array> {
  const out = new Map<number, Uint8Array>();
  for (let o = start; o + 4 <= end;) {
    const len = v.getUint16(o, true);
    if (len < 4 || o + len > end) break;
    const type = v.getUint16(o + 2, true) & 0x3fff;
    if (!out.has(type)) out.set(type, new Uint8Array(v.buffer, v.byteOffset + o + 4, len - 4));
    o += align4(len);
  }
  return out;
}

/** One RTM_NEWLINK message (at offset o of v, len bytes) as a LinkInfo. */
function linkOf(v: DataView, o: number, len: number): LinkInfo {
  const a = attrsOf(v, o + NLMSGHDR + IFINFOMSG, o + len);
  const info = a.get(IFLA_LINKINFO);
  const kind = info ? attrsOf(new DataView(info.buffer, info.byteOffset, info.length), 0, info.length).get(IFLA_INFO_KIND) : undefined;
  const master = a.get(IFLA_MASTER);
  return {
    index: v.getInt32(o + NLMSGHDR + 4, true),
    name: text(a.get(IFLA_IFNAME) ?? new Uint8Array(0)),
    kind: kind ? text(kind) : '',
    master: master && master.length >= 4 ? new DataView(master.buffer, master.byteOffset, 4).getUint32(0, true) : 0,
    up: (v.getUint32(o + NLMSGHDR + 8, true) & IFF_UP) !== 0,
    alias: text(a.get(IFLA_IFALIAS) ?? new Uint8Array(0)),
  };
}

/**
 * Turns IPv6 off on a link that is still down (its disable_ipv6 sysctl, in
 * this process's network namespace): brought up, it then gets no address and
 * no ff00::/8 route, whose insertion walks the same route of every link
 * before it. False if this host has no IPv6 for it (nothing to turn off) or
 * lets no one here write its sysctls (a read-only /proc/sys): the link then
 * works as before, at that cost.
 */
export function disableIpv6(name: string): boolean {
  if (!/^[A-Za-z0-9_.-]{1,15}$/.test(name)) throw new RangeError(`link name "${name}": not a name the kernel gives a sysctl directory`);
  try {
    writeFileSync(`/proc/sys/net/ipv6/conf/${name}/disable_ipv6`, '1');
    return true;
  } catch (err) {
    if (['ENOENT', 'EROFS', 'EACCES', 'EPERM'].includes((err as NodeJS.ErrnoException).code ?? '')) return false;
    throw new SysError(`disable_ipv6 of ${name}`, (err as NodeJS.ErrnoException).errno ? -(err as NodeJS.ErrnoException).errno! : 0);
  }
}

/** Index of a network interface by name, 0 if there is none. */
export function linkIndex(name: string): number {
  return c.ifNametoindex(name) as number;
}

/** An rtnetlink socket that sends one request at a time and waits for its ACK. */
export class Rtnetlink {
  private readonly fd: number;
  private seq = 1;
  private readonly buf = new Uint8Array(65536);

  constructor() {
    this.fd = c.socket(AF_NETLINK, SOCK_RAW | SOCK_CLOEXEC, NETLINK_ROUTE) as number;
    if (this.fd < 0) throw new SysError('socket(AF_NETLINK)', koffi.errno());
  }

  /**
   * Sends one request and reads until its ACK (or, for a dump, its DONE);
   * returns the RTM_NEWLINK messages that came with it.
   */
  private request(type: number, flags: number, body: Uint8Array, what: string): LinkInfo[] {
    const seq = this.seq++;
    const msg = new Uint8Array(NLMSGHDR + body.length);
    const v = new DataView(msg.buffer);
    v.setUint32(0, msg.length, true);
    v.setUint16(4, type, true);
    v.setUint16(6, flags | NLM_F_REQUEST | ((flags & NLM_F_DUMP) === NLM_F_DUMP ? 0 : NLM_F_ACK), true);
    v.setUint32(8, seq, true);
    msg.set(body, NLMSGHDR);
    const sa = new Uint8Array(12);
    new DataView(sa.buffer).setUint16(0, AF_NETLINK, true);
    if ((c.sendto(this.fd, msg, msg.length, 0, sa, 12) as number) < 0) throw new SysError(`rtnetlink ${what}`, koffi.errno());
    const links: LinkInfo[] = [];
    for (;;) {
      const n = c.recv(this.fd, this.buf, this.buf.length, 0) as number;
      if (n < 0) throw new SysError(`rtnetlink ${what}`, koffi.errno());
      const rv = new DataView(this.buf.buffer, 0, n);
      for (let o = 0; o + NLMSGHDR <= n;) {
        const len = rv.getUint32(o, true);
        const mtype = rv.getUint16(o + 4, true);
        const mseq = rv.getUint32(o + 8, true);
        if (len < NLMSGHDR || o + len > n) throw new Error(`rtnetlink ${what}: malformed reply`);
        if (mseq === seq) {
          if (mtype === NLMSG_ERROR) {
            const err = -rv.getInt32(o + NLMSGHDR, true);
            if (err !== 0) throw new SysError(`rtnetlink ${what}`, err);
            return links;
          }
          if (mtype === NLMSG_DONE) return links;
          if (mtype === RTM_NEWLINK && len >= NLMSGHDR + IFINFOMSG) links.push(linkOf(rv, o, len));
        }
        o += align4(len);
      }
    }
  }

  private ifinfo(index: number, flags = 0, change = 0): Uint8Array {
    const b = new Uint8Array(IFINFOMSG);
    const v = new DataView(b.buffer);
    v.setUint8(0, 0); // AF_UNSPEC
    v.setInt32(4, index, true);
    v.setUint32(8, flags, true);
    v.setUint32(12, change, true);
    return b;
  }

  /** Creates a bridge (fails with EEXIST if a link of that name exists). */
  createBridge(name: string): void {
    const body = concat([
      this.ifinfo(0),
      attr(IFLA_IFNAME, cstr(name)),
      // No IGMP/MLD snooping (the guests use no multicast): with it, every
      // port that joins re-arms the multicast timers of all the ports before
      // it (br_port_state_selection), a cost that grows with the bridge.
      attr(IFLA_LINKINFO, concat([attr(IFLA_INFO_KIND, cstr('bridge')), attr(IFLA_INFO_DATA, attr(IFLA_BR_MCAST_SNOOPING, new Uint8Array([0])))])),
    ]);
    this.request(RTM_NEWLINK, NLM_F_CREATE | NLM_F_EXCL, body, `create bridge ${name}`);
  }

  /** Brings a link up (or down). */
  setUp(index: number, up = true): void {
    this.request(RTM_NEWLINK, 0, this.ifinfo(index, up ? IFF_UP : 0, IFF_UP), `set link ${index} ${up ? 'up' : 'down'}`);
  }

  /**
   * Gives a link that is still down no IPv6 address of its own (address
   * generation mode "none"): the host would otherwise send solicitations
   * and reports from it, and on a VM's tap or bridge each frame wakes a
   * parked guest. In one message with IFF_UP it would come too late: the
   * kernel brings the link up first and makes a link-local address then.
   */
  noIpv6Address(index: number): void {
    const mode = attr(IFLA_AF_SPEC, attr(AF_INET6, attr(IFLA_INET6_ADDR_GEN_MODE, new Uint8Array([IN6_ADDR_GEN_MODE_NONE]))));
    try {
      this.request(RTM_NEWLINK, 0, concat([this.ifinfo(index), mode]), `set no IPv6 address on link ${index}`);
    } catch (err) {
      // No IPv6 on this link (an MTU below 1280, IPv6 off or absent): nothing to silence.
      if ((err as SysError).code !== 'EAFNOSUPPORT') throw err;
    }
  }

  /** Attaches a link to a bridge and brings it up (with no IPv6 address of its own). */
  attachAndUp(index: number, master: number): void {
    this.noIpv6Address(index);
    const body = concat([this.ifinfo(index, IFF_UP, IFF_UP), attr(IFLA_MASTER, u32(master))]);
    this.request(RTM_NEWLINK, 0, body, `attach link ${index} to ${master}`);
  }

  setMtu(index: number, mtu: number): void {
    this.request(RTM_NEWLINK, 0, concat([this.ifinfo(index), attr(IFLA_MTU, u32(mtu))]), `set mtu of link ${index}`);
  }

  /** Gives a link an IPv4 address (EEXIST if it has it already). */
  addAddress(index: number, ip: string, prefix: number): void {
    const m = new Uint8Array(IFADDRMSG);
    const v = new DataView(m.buffer);
    v.setUint8(0, AF_INET);
    v.setUint8(1, prefix);
    v.setUint32(4, index, true);
    const a = ipv4Bytes(ip);
    this.request(RTM_NEWADDR, NLM_F_CREATE | NLM_F_EXCL, concat([m, attr(IFA_LOCAL, a), attr(IFA_ADDRESS, a)]), `add ${ip}/${prefix} to link ${index}`);
  }

  /** The link of this name, undefined if there is none. */
  link(name: string): LinkInfo | undefined {
    const index = linkIndex(name);
    if (!index) return undefined;
    try {
      return this.request(RTM_GETLINK, 0, this.ifinfo(index), `get link ${name}`).find((l) => l.index === index);
    } catch (err) {
      if ((err as SysError).code === 'ENODEV') return undefined;
      throw err;
    }
  }

  /** Every link of this network namespace. */
  links(): LinkInfo[] {
    return this.request(RTM_GETLINK, NLM_F_DUMP, this.ifinfo(0), 'list links');
  }

  /** Sets a link's alias (ifalias: free text the kernel keeps with the link). */
  setAlias(index: number, alias: string): void {
    this.request(RTM_NEWLINK, 0, concat([this.ifinfo(index), attr(IFLA_IFALIAS, cstr(alias))]), `set alias of link ${index}`);
  }

  deleteLink(index: number): void {
    this.request(RTM_DELLINK, 0, this.ifinfo(index), `delete link ${index}`);
  }

  close(): void {
    libc.close(this.fd);
  }
}
