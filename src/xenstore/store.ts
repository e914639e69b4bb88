// A XenStore: the tree with per-domain permissions, transactions that end in
// EAGAIN when what they touched changed under them, watches, domains and
// quotas. Connections (a socket client, a guest's ring forwarded by its
// executor, or an in-process caller) are served by `Connection.handle`.
import {
  allows, canonical, domainPath, formatPerm, leaf, lookup, nearest, parentOf, parsePerm, update, walkPaths,
  type Node, type Perm,
} from './tree.js';
import { PAYLOAD_MAX, XsError, XsType, splitStrings, strings, typeName, type XsMessage } from './wire.js';

export interface Quotas {
  /** Nodes a domain other than dom0 may own. */
  entriesPerDomain: number;
  watchesPerConnection: number;
  transactionsPerConnection: number;
}
export const DEFAULT_QUOTAS: Quotas = { entriesPerDomain: 1000, watchesPerConnection: 128, transactionsPerConnection: 10 };

interface Watch {
  conn: Connection;
  /** Absolute, or a special @ name. */
  path: string;
  /** What the client asked for: events name paths the way it did (relative stays relative). */
  asked: string;
  token: string;
}

interface Transaction {
  start: Node;
  view: Node;
  startGen: number;
  /** Paths read or changed: at commit each must be as it was at the start. */
  touched: Set<string>;
  /** Changes replayed on the live tree at commit. */
  ops: ((c: Connection) => void)[];
}

export interface StoreStats {
  nodes: number;
  domains: number;
  connections: number;
  watches: number;
  ops: Record<string, number>;
  watch_events: number;
  conflicts: number;
}

export class XenStore {
  root: Node;
  gen = 1;
  readonly quotas: Quotas;
  readonly domains = new Map<number, { mfn: string; port: string }>();
  private readonly owned = new Map<number, number>();
  private watches: Watch[] = [];
  readonly connections = new Set<Connection>();
  private readonly opCounts = new Map<string, number>();
  private watchEvents = 0;
  private conflicts = 0;

  constructor(quotas: Partial<Quotas> = {}) {
    this.quotas = { ...DEFAULT_QUOTAS, ...quotas };
    const dom0: Perm[] = [{ domid: 0, access: 'n' }];
    this.root = leaf(dom0, this.gen);
    for (const p of ['/local', '/local/domain', '/local/domain/0', '/vm', '/tool']) {
      this.root = update(this.root, p, ++this.gen, () => leaf(dom0, this.gen), (parent) => leaf(parent.perms, this.gen));
    }
  }

  /** A connection acting as `domid`; `onEvent` gets each watch event's payload (path, token). */
  connect(domid: number, onEvent: (payload: Buffer) => void): Connection {
    const c = new Connection(this, domid, onEvent);
    this.connections.add(c);
    return c;
  }

  disconnect(c: Connection): void {
    this.connections.delete(c);
    this.watches = this.watches.filter((w) => w.conn !== c);
  }

  count(type: number): void {
    const name = typeName(type);
    this.opCounts.set(name, (this.opCounts.get(name) ?? 0) + 1);
  }

  stats(): StoreStats {
    let nodes = 0;
    for (const entry of walkPaths(this.root, '/')) if (entry) nodes++;
    return {
      nodes, domains: this.domains.size, connections: this.connections.size, watches: this.watches.length,
      ops: Object.fromEntries(this.opCounts), watch_events: this.watchEvents, conflicts: this.conflicts,
    };
  }

  ownedBy(domid: number): number {
    return this.owned.get(domid) ?? 0;
  }

  /** Swap in a new live root, keeping the per-owner node counts, and fire the watches of `changed`. */
  commit(next: Node, changed: string, before: Node | undefined, removed: boolean): void {
    // Count what changed from the deepest node that existed before: nodes made on the way are new too.
    const anchor = before ? changed : firstMissing(this.root, changed);
    const old = lookup(this.root, anchor);
    const now = lookup(next, anchor);
    if (old) for (const [, n] of walkPaths(old, anchor)) this.adjustOwned(n.perms[0]!.domid, -1);
    if (now) for (const [, n] of walkPaths(now, anchor)) this.adjustOwned(n.perms[0]!.domid, +1);
    this.root = next;
    this.fire(changed, lookup(next, changed) ?? before, removed);
  }

  countConflict(): void {
    this.conflicts++;
  }

  private adjustOwned(domid: number, by: number): void {
    this.owned.set(domid, (this.owned.get(domid) ?? 0) + by);
  }

  addWatch(w: Watch): void {
    const mine = this.watches.filter((x) => x.conn === w.conn);
    if (mine.some((x) => x.path === w.path && x.token === w.token)) throw new XsError('EEXIST', `already watching ${w.asked} with that token`);
    if (w.conn.domid !== 0 && mine.length >= this.quotas.watchesPerConnection) throw new XsError('E2BIG', `watch quota (${this.quotas.watchesPerConnection}) reached`);
    this.watches.push(w);
  }

  removeWatch(conn: Connection, path: string, token: string): void {
    const i = this.watches.findIndex((x) => x.conn === conn && x.path === path && x.token === token);
    if (i < 0) throw new XsError('ENOENT', `no watch on ${path} with that token`);
    this.watches.splice(i, 1);
  }

  resetWatches(conn: Connection): void {
    this.watches = this.watches.filter((w) => w.conn !== conn);
  }

  /** Watches on `path` or above it see the change; on a removal, watches below it too. */
  fire(path: string, node: Node | undefined, removed: boolean): void {
    for (const w of this.watches) {
      if (w.path.startsWith('@')) continue;
      const above = w.path === '/' || path === w.path || path.startsWith(`${w.path}/`);
      const below = removed && w.path.startsWith(`${path}/`);
      if (!above && !below) continue;
      const perms = node?.perms ?? lookup(this.root, parentOf(path))?.perms;
      if (perms && !allows(w.conn.domid, perms, 'r')) continue;
      this.event(w, below ? w.path : path);
    }
  }

  fireSpecial(name: '@introduceDomain' | '@releaseDomain'): void {
    for (const w of this.watches) if (w.path === name && w.conn.domid === 0) this.event(w, name);
  }

  event(w: Watch, abs: string): void {
    const prefix = `${domainPath(w.conn.domid)}/`;
    const relative = !w.asked.startsWith('/') && !w.asked.startsWith('@');
    const shown = relative && abs.startsWith(prefix) ? abs.slice(prefix.length) : abs;
    this.watchEvents++;
    w.conn.onEvent(strings(shown, w.token));
  }

  closeDomain(domid: number): void {
    for (const c of [...this.connections]) if (c.domid === domid && c.bound) c.close();
  }
}

/** The first node on the way to `abs` that `root` lacks. */
function firstMissing(root: Node, abs: string): string {
  const { path } = nearest(root, abs);
  if (path === abs) return abs;
  const rest = abs.slice(path === '/' ? 1 : path.length + 1).split('/')[0]!;
  return path === '/' ? `/${rest}` : `${path}/${rest}`;
}

export class Connection {
  private readonly transactions = new Map<number, Transaction>();
  private nextTx = 1;
  ops = 0;
  bound = false;
  closed = false;
  /** Set by the server: ends the transport (a released domain's connections are closed). */
  onClose: () => void = () => {};

  constructor(readonly store: XenStore, public domid: number, readonly onEvent: (payload: Buffer) => void) {}

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.store.disconnect(this);
    this.onClose();
  }

  /** Serve one request; the reply has the request's type and ids, or ERROR with the errno name. */
  handle(m: XsMessage): XsMessage {
    this.ops++;
    this.store.count(m.type);
    try {
      const payload = this.dispatch(m);
      if (payload.length > PAYLOAD_MAX) throw new XsError('E2BIG', 'reply larger than the payload limit');
      return { type: m.type, reqId: m.reqId, txId: m.txId, payload };
    } catch (err) {
      if (!(err instanceof XsError)) throw err;
      return { type: XsType.ERROR, reqId: m.reqId, txId: m.txId, payload: strings(err.errno) };
    }
  }

  private dispatch(m: XsMessage): Buffer {
    const args = splitStrings(m.payload);
    const tx = m.txId === 0 ? undefined : this.transactions.get(m.txId);
    if (m.txId !== 0 && !tx) throw new XsError('ENOENT', `no transaction ${m.txId}`);
    switch (m.type) {
      case XsType.READ: return this.read(tx, this.path(args[0])).value;
      case XsType.DIRECTORY: return strings(...this.read(tx, this.path(args[0])).children.keys());
      case XsType.GET_PERMS: return strings(...this.read(tx, this.path(args[0])).perms.map(formatPerm));
      case XsType.WRITE: {
        const nul = m.payload.indexOf(0);
        if (nul < 0) throw new XsError('EINVAL', 'WRITE needs a path and a value');
        const path = this.path(m.payload.subarray(0, nul).toString('utf8'));
        const value = Buffer.from(m.payload.subarray(nul + 1));
        return this.change(tx, path, (c) => c.write(path, value));
      }
      case XsType.MKDIR: { const path = this.path(args[0]); return this.change(tx, path, (c) => c.mkdir(path)); }
      case XsType.RM: { const path = this.path(args[0]); return this.change(tx, path, (c) => c.rm(path)); }
      case XsType.SET_PERMS: {
        const path = this.path(args[0]);
        if (args.length < 2) throw new XsError('EINVAL', 'SET_PERMS needs at least one permission');
        const perms = args.slice(1).map(parsePerm);
        return this.change(tx, path, (c) => c.setPerms(path, perms));
      }
      case XsType.WATCH: return this.watch(args);
      case XsType.UNWATCH: {
        if (args.length < 2) throw new XsError('EINVAL', 'UNWATCH needs a path and a token');
        this.store.removeWatch(this, this.watchPath(args[0]!), args[1]!);
        return strings('OK');
      }
      case XsType.RESET_WATCHES: this.store.resetWatches(this); return strings('OK');
      case XsType.TRANSACTION_START: return this.transactionStart();
      case XsType.TRANSACTION_END: return this.transactionEnd(m.txId, args[0]);
      case XsType.INTRODUCE: return this.introduce(args);
      case XsType.RELEASE: return this.release(args);
      case XsType.GET_DOMAIN_PATH: return strings(domainPath(this.domidArg(args[0])));
      case XsType.IS_DOMAIN_INTRODUCED:
        this.privileged();
        return strings(this.store.domains.has(this.domidArg(args[0])) ? 'T' : 'F');
      case XsType.CONTROL: return this.control(args);
      default: throw new XsError('ENOSYS', `${typeName(m.type)} is not served`);
    }
  }

  private path(arg: string | undefined): string {
    if (arg === undefined) throw new XsError('EINVAL', 'a path is needed');
    return canonical(this.domid, arg);
  }

  private watchPath(arg: string): string {
    return arg === '@introduceDomain' || arg === '@releaseDomain' ? arg : canonical(this.domid, arg);
  }

  private privileged(): void {
    if (this.domid !== 0) throw new XsError('EACCES', 'only dom0 may do this');
  }

  private domidArg(arg: string | undefined): number {
    if (!arg || !/^\d{1,5}$/.test(arg) || Number(arg) > 0x7fef) throw new XsError('EINVAL', `invalid domain id ${JSON.stringify(arg ?? '')}`);
    return Number(arg);
  }

  private read(tx: Transaction | undefined, path: string): Node {
    tx?.touched.add(path);
    const n = lookup(tx ? tx.view : this.store.root, path);
    if (!n) throw new XsError('ENOENT', path);
    if (!allows(this.domid, n.perms, 'r')) throw new XsError('EACCES', path);
    return n;
  }

  /** Run a change on the live tree, or on the transaction's view and record it for the commit. */
  private change(tx: Transaction | undefined, path: string, op: (c: Mutation) => void): Buffer {
    if (!tx) {
      op(new Mutation(this, undefined));
      return strings('OK');
    }
    tx.touched.add(path);
    tx.touched.add(parentOf(path));
    op(new Mutation(this, tx));
    tx.ops.push((c) => op(new Mutation(c, undefined)));
    return strings('OK');
  }

  private watch(args: string[]): Buffer {
    if (args.length < 2) throw new XsError('EINVAL', 'WATCH needs a path and a token');
    const [asked, token] = args as [string, string];
    const w = { conn: this, path: this.watchPath(asked), asked, token };
    this.store.addWatch(w);
    // The first event follows the reply, as xenstored sends it.
    queueMicrotask(() => { if (!this.closed) this.store.event(w, w.path); });
    return strings('OK');
  }

  private transactionStart(): Buffer {
    if (this.domid !== 0 && this.transactions.size >= this.store.quotas.transactionsPerConnection) {
      throw new XsError('ENOSPC', `transaction quota (${this.store.quotas.transactionsPerConnection}) reached`);
    }
    const id = this.nextTx++;
    this.transactions.set(id, { start: this.store.root, view: this.store.root, startGen: this.store.gen, touched: new Set(), ops: [] });
    return strings(String(id));
  }

  private transactionEnd(id: number, verdict: string | undefined): Buffer {
    const tx = this.transactions.get(id);
    if (!tx) throw new XsError('ENOENT', `no transaction ${id}`);
    if (verdict !== 'T' && verdict !== 'F') throw new XsError('EINVAL', 'TRANSACTION_END takes T or F');
    this.transactions.delete(id);
    if (verdict === 'F') return strings('OK');
    for (const p of tx.touched) {
      if (lookup(this.store.root, p)?.gen !== lookup(tx.start, p)?.gen) {
        this.store.countConflict();
        throw new XsError('EAGAIN', `${p} changed during the transaction`);
      }
    }
    for (const op of tx.ops) op(this);
    return strings('OK');
  }

  private introduce(args: string[]): Buffer {
    this.privileged();
    const domid = this.domidArg(args[0]);
    if (domid === 0 || args.length < 3) throw new XsError('EINVAL', 'INTRODUCE takes a domain id (not 0), a ring frame and an event channel');
    if (this.store.domains.has(domid)) throw new XsError('EEXIST', `domain ${domid} is already introduced`);
    this.store.domains.set(domid, { mfn: args[1]!, port: args[2]! });
    this.store.fireSpecial('@introduceDomain');
    return strings('OK');
  }

  private release(args: string[]): Buffer {
    this.privileged();
    const domid = this.domidArg(args[0]);
    if (!this.store.domains.delete(domid)) throw new XsError('ENOENT', `domain ${domid} is not introduced`);
    this.store.closeDomain(domid);
    this.store.fireSpecial('@releaseDomain');
    return strings('OK');
  }

  /**
   * LightVM's own control commands. `lightvm-bind <domid>` turns this dom0
   * connection into that (introduced) domain's: an executor forwards a guest's
   * ring over it. `lightvm-stats` answers the store's counters as JSON.
   */
  private control(args: string[]): Buffer {
    this.privileged();
    if (args[0] === 'lightvm-bind') {
      if (this.bound) throw new XsError('EISCONN', 'this connection is already bound');
      const domid = this.domidArg(args[1]);
      if (!this.store.domains.has(domid)) throw new XsError('ENOENT', `domain ${domid} is not introduced`);
      this.store.resetWatches(this);
      this.transactions.clear();
      this.domid = domid;
      this.bound = true;
      return strings('OK');
    }
    if (args[0] === 'lightvm-stats') return Buffer.from(JSON.stringify(this.store.stats()), 'utf8');
    throw new XsError('EINVAL', `unknown control command ${JSON.stringify((args[0] ?? '').slice(0, 40))}`);
  }
}

/** One change, applied to a transaction's view or to the live tree. */
class Mutation {
  constructor(private readonly conn: Connection, private readonly tx: Transaction | undefined) {}

  private get root(): Node {
    return this.tx ? this.tx.view : this.conn.store.root;
  }

  private apply(next: Node, path: string, before: Node | undefined, removed: boolean): void {
    if (this.tx) this.tx.view = next;
    else this.conn.store.commit(next, path, before, removed);
  }

  /** What a node made under `parent` by this connection gets: the parent's permissions, owned by the maker. */
  private made(parent: Node, gen: number): Node {
    const store = this.conn.store;
    const domid = this.conn.domid;
    if (domid !== 0 && store.ownedBy(domid) >= store.quotas.entriesPerDomain) {
      throw new XsError('ENOSPC', `domain ${domid} owns ${store.quotas.entriesPerDomain} nodes (its quota)`);
    }
    const perms = domid === 0 ? parent.perms : [{ domid, access: parent.perms[0]!.access }, ...parent.perms.slice(1)];
    return leaf(perms, gen);
  }

  private mayCreate(path: string): void {
    const { node, path: at } = nearest(this.root, path);
    if (!allows(this.conn.domid, node.perms, 'w')) throw new XsError('EACCES', `${at} (creating ${path})`);
  }

  write(path: string, value: Buffer): void {
    const before = lookup(this.root, path);
    if (before && !allows(this.conn.domid, before.perms, 'w')) throw new XsError('EACCES', path);
    if (!before) this.mayCreate(path);
    const gen = ++this.conn.store.gen;
    const next = update(this.root, path, gen, (n) => ({ ...(n ?? this.made(lookup(this.root, parentOf(path)) ?? nearest(this.root, path).node, gen)), value, gen }),
      (parent) => this.made(parent, gen));
    this.apply(next, path, before, false);
  }

  mkdir(path: string): void {
    if (lookup(this.root, path)) return;
    this.mayCreate(path);
    const gen = ++this.conn.store.gen;
    const next = update(this.root, path, gen, (n) => n ?? this.made(nearest(this.root, path).node, gen), (parent) => this.made(parent, gen));
    this.apply(next, path, undefined, false);
  }

  rm(path: string): void {
    if (path === '/') throw new XsError('EINVAL', 'the root cannot be removed');
    const before = lookup(this.root, path);
    if (!before) {
      // Removing what is already gone is fine if its parent is there (as xenstored does).
      if (!lookup(this.root, parentOf(path))) throw new XsError('ENOENT', path);
      return;
    }
    if (!allows(this.conn.domid, before.perms, 'w')) throw new XsError('EACCES', path);
    const gen = ++this.conn.store.gen;
    this.apply(update(this.root, path, gen, () => undefined, (p) => p), path, before, true);
  }

  setPerms(path: string, perms: Perm[]): void {
    const before = lookup(this.root, path);
    if (!before) throw new XsError('ENOENT', path);
    if (this.conn.domid !== 0 && before.perms[0]!.domid !== this.conn.domid) throw new XsError('EACCES', `${path}: only its owner may change its permissions`);
    const gen = ++this.conn.store.gen;
    this.apply(update(this.root, path, gen, (n) => ({ ...n!, perms, gen }), (p) => p), path, before, false);
  }
}
