// Live migration between two hosts over TCP. Pre-copy: the source copies
// every written page while the VM runs, then, for a few rounds, the pages
// written since (by the guest: KVM's dirty log; by the host: GuestMemory's
// marks); then it pauses the VM and sends
// the last dirty pages with the vCPU state (stop-and-copy). The destination
// starts the VM and says so; only then does the source end its copy. If
// anything fails before that, the source calls the migration off and the
// VM runs on where it was: it runs on exactly one side, always.
import { createHash, timingSafeEqual } from 'node:crypto';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { decodeSnapshot, type Snapshot } from '../vmm/snapshot.js';
import { encodeFrame, FrameDecoder } from '../vmm/wire.js';
import type { Host } from './host.js';
import type { VirtualMachine } from './vm.js';

export const MIGRATION_VERSION = 1;
/** Pre-copy stops once a round has no more than this many dirty pages... */
const SMALL_ROUND = 32;
/** ...or after this many rounds. */
const MAX_ROUNDS = 8;
const PAGE = 4096;
/** A step the executor does not finish in this long calls the migration off. */
const STEP_TIMEOUT_MS = 30_000;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new MigrationError(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

type Message =
  | { type: 'hello'; version: number; token: string; name: string; memory: number }
  | { type: 'ready' }
  | { type: 'pages'; data: Uint8Array }
  | { type: 'final'; data: Uint8Array }
  | { type: 'running'; id: number }
  | { type: 'error'; message: string };

export interface MigrationStats {
  /** Request to the VM running at the destination. */
  ms: number;
  /** The VM not running anywhere: paused here to running there. */
  downtime_ms: number;
  rounds: number;
  pages: number;
  bytes: number;
  destination_id: number;
}

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

/** Framed messages on a socket, awaited one at a time. */
class Channel {
  private readonly decoder = new FrameDecoder();
  private readonly queue: Message[] = [];
  private waiter: { resolve: (m: Message) => void; reject: (e: Error) => void } | undefined;
  private failure: Error | undefined;

  constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      let msgs: unknown[];
      try {
        msgs = this.decoder.push(chunk);
      } catch (err) {
        this.fail(err as Error);
        return;
      }
      for (const m of msgs) {
        if (this.waiter) {
          const w = this.waiter;
          this.waiter = undefined;
          w.resolve(m as Message);
        } else {
          this.queue.push(m as Message);
        }
      }
    });
    socket.on('error', (err) => this.fail(err));
    socket.on('close', () => this.fail(new MigrationError('the other side closed the connection')));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    const w = this.waiter;
    this.waiter = undefined;
    w?.reject(err);
  }

  send(m: Message): void {
    this.socket.write(encodeFrame(m));
  }

  next(timeoutMs = 30_000): Promise<Message> {
    const queued = this.queue.shift();
    if (queued) return Promise.resolve(queued);
    if (this.failure) return Promise.reject(this.failure);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiter = undefined;
        reject(new MigrationError(`no answer within ${timeoutMs} ms`));
      }, timeoutMs);
      this.waiter = {
        resolve: (m) => {
          clearTimeout(timer);
          resolve(m);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      };
    });
  }

  close(): void {
    this.socket.end();
  }
}

function sameToken(a: string, b: string): boolean {
  const h = (s: string): Buffer => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(a), h(b));
}

/** Parses "host:port". */
export function parseAddress(to: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(to);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new MigrationError(`"${to}" is not host:port`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

/** Source side: moves vm to the daemon listening at `to`. */
export async function migrateOut(vm: VirtualMachine, to: string, token: string): Promise<MigrationStats> {
  const { host, port } = parseAddress(to);
  const t0 = process.hrtime.bigint();
  const socket = await new Promise<Socket>((resolve, reject) => {
    const s = connect(port, host);
    s.once('connect', () => resolve(s));
    s.once('error', (e) => reject(new MigrationError(`cannot reach ${to}: ${e.message}`)));
  });
  const ch = new Channel(socket);
  let paused = false;
  let bytes = 0;
  let pages = 0;
  let rounds = 0;
  try {
    ch.send({ type: 'hello', version: MIGRATION_VERSION, token, name: vm.name, memory: vm.config.memory });
    const ready = await ch.next();
    if (ready.type === 'error') throw new MigrationError(`${to} refused: ${ready.message}`);
    if (ready.type !== 'ready') throw new MigrationError(`${to} answered ${ready.type}, not ready`);
    for (let round = 0; round <= MAX_ROUNDS; round++) {
      const r = await withTimeout(vm.copyPages(round), STEP_TIMEOUT_MS, `copying pages (round ${round})`);
      ch.send({ type: 'pages', data: r.data });
      bytes += r.data.length;
      pages += r.count;
      rounds = round + 1;
      if (round > 0 && r.count <= SMALL_ROUND) break;
    }
    const tPause = process.hrtime.bigint();
    paused = true;
    const final = await withTimeout(vm.saveFinal(), STEP_TIMEOUT_MS, 'the last copy');
    ch.send({ type: 'final', data: final.data! });
    bytes += final.bytes;
    pages += final.pages;
    const answer = await ch.next();
    if (answer.type === 'error') throw new MigrationError(`${to} could not start the VM: ${answer.message}`);
    if (answer.type !== 'running') throw new MigrationError(`${to} answered ${answer.type}, not running`);
    const running = process.hrtime.bigint();
    // Committed: the VM runs there. It ends here.
    await vm.migrated(to);
    ch.close();
    return {
      ms: Number(running - t0) / 1e6,
      downtime_ms: Number(running - tPause) / 1e6,
      rounds, pages, bytes, destination_id: answer.id,
    };
  } catch (err) {
    // Not committed: the VM runs on here (unpaused if the last step paused it).
    vm.abortMigration();
    socket.destroy();
    void paused;
    throw err instanceof MigrationError ? err : new MigrationError((err as Error).message);
  }
}

export interface ListenOptions {
  port: number;
  address?: string;
  token: string;
  onMigrated?: (vm: VirtualMachine) => void;
  onError?: (err: Error) => void;
}

/** Destination side: takes VMs in, while listening (only when asked to). */
export class MigrationListener {
  private constructor(private readonly server: Server, readonly address: string, readonly port: number) {}

  static async listen(host: Host, opts: ListenOptions): Promise<MigrationListener> {
    if (opts.token.length < 16) throw new MigrationError('token: use at least 16 characters');
    const server = createServer((socket) => {
      void receive(host, new Channel(socket), opts).catch((err: Error) => opts.onError?.(err));
    });
    const address = opts.address ?? '127.0.0.1';
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(opts.port, address, () => resolve());
    });
    const a = server.address();
    return new MigrationListener(server, address, typeof a === 'object' && a ? a.port : opts.port);
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }
}

async function receive(host: Host, ch: Channel, opts: ListenOptions): Promise<void> {
  const refuse = (message: string): never => {
    ch.send({ type: 'error', message });
    ch.close();
    throw new MigrationError(message);
  };
  try {
    const hello = await ch.next();
    if (hello.type !== 'hello') return refuse('expected hello');
    if (hello.version !== MIGRATION_VERSION) return refuse(`migration version ${hello.version}; this host speaks ${MIGRATION_VERSION}`);
    if (!sameToken(hello.token, opts.token)) return refuse('wrong token');
    const same = host.get(hello.name);
    if (same && same.state !== 'exited') return refuse(`a VM named "${hello.name}" already runs here`);
    ch.send({ type: 'ready' });
    const pages = new Map<number, Uint8Array>();
    for (;;) {
      const m = await ch.next();
      if (m.type === 'pages') {
        for (let o = 0; o + 4 + PAGE <= m.data.length; o += 4 + PAGE) {
          const p = new DataView(m.data.buffer, m.data.byteOffset + o, 4).getUint32(0, true);
          pages.set(p, m.data.slice(o + 4, o + 4 + PAGE));
        }
        continue;
      }
      if (m.type !== 'final') return refuse(`unexpected ${m.type}`);
      let snapshot: Snapshot;
      try {
        snapshot = decodeSnapshot('migration', m.data);
      } catch (err) {
        return refuse((err as Error).message);
      }
      for (const [p, data] of snapshot.pages) pages.set(p, data);
      let vm: VirtualMachine;
      try {
        vm = await host.restore({ snapshot: { ...snapshot, pages } });
      } catch (err) {
        return refuse((err as Error).message);
      }
      ch.send({ type: 'running', id: vm.id });
      opts.onMigrated?.(vm);
      ch.close();
      return;
    }
  } catch (err) {
    ch.socket.destroy();
    throw err;
  }
}
