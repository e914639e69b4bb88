// Live migration between two hosts over TCP. Pre-copy: the source copies
// every written page while the VM runs, then, for a few rounds, the pages
// written since (by the guest: KVM's dirty log; by the host: GuestMemory's
// marks); then it pauses the VM and sends
// the last dirty pages with the vCPU state (stop-and-copy). The destination
// restores the VM paused and says so; the source commits; the destination
// starts it and says so; only then does the source end its copy. Before the
// commit, anything that fails calls the migration off and the VM runs on at
// the source; the destination drops a copy that got no commit. After the
// commit, a source that hears nothing back holds its copy paused (it may run
// at the destination): the VM runs on at most one side, always. Both ends
// prove they hold the token (migration-channel.ts), and every wait for the
// peer is bounded.
import { connect, createServer, type Server, type Socket } from 'node:net';
import { MAX_MEMORY, MIN_MEMORY } from '../vmm/layout.js';
import { decodeSnapshot, type Snapshot } from '../vmm/snapshot.js';
import type { Host } from './host.js';
import {
  Channel, jsonOf, MigrationError, newNonce, nonceOf, PROTOCOL, proofOf, RECORD_MAX, sameProof, type SealedRecord,
} from './migration-channel.js';
import type { VirtualMachine } from './vm.js';

export { MigrationError } from './migration-channel.js';
export const MIGRATION_VERSION = PROTOCOL;
/** Pre-copy stops once a round has no more than this many dirty pages... */
const SMALL_ROUND = 32;
/** ...or after this many rounds. */
const MAX_ROUNDS = 8;
const PAGE = 4096;
const RECORD = 4 + PAGE;
/** A step the executor does not finish in this long calls the migration off. */
const STEP_TIMEOUT_MS = 30_000;
/** Default bound on every wait for the peer. */
export const PEER_TIMEOUT_MS = 10_000;
/** A connection must prove it holds the token within this long. */
const HANDSHAKE_MS = 5_000;
/** Connections still in their handshake at once; more are closed at once. */
const MAX_HANDSHAKES = 16;
/** The snapshot of a stop-and-copy: at most the VM's memory and this much more (state, console, header). */
const FINAL_EXTRA = 16 << 20;
/** An authenticated source may take this long between two rounds (its executor copies meanwhile). */
const BETWEEN_ROUNDS_MS = STEP_TIMEOUT_MS + PEER_TIMEOUT_MS;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new MigrationError(`${what} took more than ${ms} ms`)), ms);
  });
  return Promise.race([p, late]).finally(() => clearTimeout(timer));
}

export interface MigrationStats {
  /** Request to the VM running at the destination. */
  ms: number;
  /** The VM not running anywhere: paused here to running there. */
  downtime_ms: number;
  rounds: number;
  pages: number;
  bytes: number;
  destination_id: number;
  /** Time this side spent sealing and opening records (AES-256-GCM). */
  crypto_ms: number;
}

/** A failed migration; held: the VM is left paused here, as it may run at the destination. */
export class MigrationFailure extends MigrationError {
  constructor(message: string, readonly held: boolean) {
    super(message);
  }
}

/** Parses "host:port". */
export function parseAddress(to: string): { host: string; port: number } {
  const m = /^(.+):(\d{1,5})$/.exec(to);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port < 1 || port > 65535) throw new MigrationError(`"${to}" is not host:port`);
  return { host: m[1]!.replace(/^\[(.*)\]$/, '$1'), port };
}

function connectTo(host: string, port: number, to: string, timeoutMs: number): Promise<Socket> {
  return new Promise<Socket>((resolve, reject) => {
    const s = connect(port, host);
    const timer = setTimeout(() => {
      s.destroy();
      reject(new MigrationError(`cannot reach ${to}: no connection within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('connect', () => {
      clearTimeout(timer);
      resolve(s);
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(new MigrationError(`cannot reach ${to}: ${e.message}`));
    });
  });
}

/** Throws what an error record from the peer says, or that the record is not the one expected. */
function expect(r: SealedRecord, kind: SealedRecord['kind'], to: string, doing: string): void {
  if (r.kind === 'error') throw new MigrationError(`${to} ${doing}: ${String(jsonOf(r).message)}`);
  if (r.kind !== kind) throw new MigrationError(`${to} answered ${r.kind}, not ${kind}`);
}

/** Cuts page records (u32 page number, then its 4096 bytes) into record-sized pieces; returns how many. */
function sendPages(ch: Channel, data: Uint8Array): number {
  const per = Math.floor(RECORD_MAX / RECORD) * RECORD;
  ch.sendMessage('pages', data, per);
  return Math.max(1, Math.ceil(data.length / per));
}

export interface MigrateOptions {
  /** Bound on every wait for the destination (default PEER_TIMEOUT_MS). */
  timeoutMs?: number;
}

/** Source side: moves vm to the daemon listening at `to`. */
export async function migrateOut(vm: VirtualMachine, to: string, token: string, options: MigrateOptions = {}): Promise<MigrationStats> {
  const { host, port } = parseAddress(to);
  const timeoutMs = options.timeoutMs ?? PEER_TIMEOUT_MS;
  if (vm.migrating) throw new MigrationFailure(`VM ${vm.name} is already migrating`, false);
  vm.migrating = true;
  const t0 = process.hrtime.bigint();
  let ch: Channel | undefined;
  let committed = false;
  let bytes = 0;
  let pages = 0;
  let rounds = 0;
  try {
    ch = new Channel(await connectTo(host, port, to, timeoutMs));
    const ns = newNonce();
    ch.sendClear({ type: 'hello', version: PROTOCOL, nonce: ns.toString('hex') });
    const challenge = await ch.nextClear(timeoutMs, `${to}'s challenge`);
    if (challenge.type === 'error') throw new MigrationError(`${to} refused: ${String(challenge.message)}`);
    if (challenge.type !== 'challenge') throw new MigrationError(`${to} is not a LightVM migration listener of protocol ${PROTOCOL}`);
    const nd = nonceOf(challenge.nonce, `${to}'s challenge`);
    // The destination proves it holds the token before anything of the VM is sent.
    if (!sameProof(challenge.proof, proofOf(token, 'destination', ns, nd))) {
      throw new MigrationError(`${to} could not prove it holds this token (a wrong token, or not the destination it claims to be)`);
    }
    ch.sendClear({ type: 'auth', proof: proofOf(token, 'source', ns, nd), name: vm.name, memory: vm.config.memory, timeout_ms: timeoutMs });
    ch.seal(token, 'source', ns, nd);
    expect(await ch.next(timeoutMs, `${to}'s answer to the token`), 'ready', to, 'refused');
    for (let round = 0; round <= MAX_ROUNDS; round++) {
      const r = await withTimeout(vm.copyPages(round), STEP_TIMEOUT_MS, `copying pages (round ${round})`);
      const records = sendPages(ch, r.data);
      bytes += r.data.length;
      pages += r.count;
      rounds = round + 1;
      // Each record is acknowledged: a peer that stops reading is noticed within the bound, however large the round.
      for (let i = 0; i < records; i++) expect(await ch.next(timeoutMs, `${to}'s receipt of round ${round}`), 'ack', to, 'refused the pages');
      if (round > 0 && r.count <= SMALL_ROUND) break;
    }
    const tPause = process.hrtime.bigint();
    const final = await withTimeout(vm.saveFinal(), STEP_TIMEOUT_MS, 'the last copy');
    ch.sendMessage('final', final.data!);
    bytes += final.bytes;
    pages += final.pages;
    expect(await ch.next(timeoutMs, `${to}'s restore of the VM`), 'restored', to, 'could not start the VM');
    // From here the destination may run it: a silence now leaves the copy here held.
    committed = true;
    ch.send('commit');
    const answer = await ch.next(timeoutMs, `${to}'s start of the VM`);
    if (answer.kind === 'error') {
      // It dropped its copy before it said so: the VM runs on here.
      committed = false;
      throw new MigrationError(`${to} could not start the VM: ${String(jsonOf(answer).message)}`);
    }
    expect(answer, 'running', to, 'could not start the VM');
    const id = jsonOf(answer).id;
    const running = process.hrtime.bigint();
    // Committed: the VM runs there. It ends here.
    await vm.migrated(to);
    ch.close();
    return {
      ms: Number(running - t0) / 1e6,
      downtime_ms: Number(running - tPause) / 1e6,
      rounds, pages, bytes, destination_id: typeof id === 'number' ? id : -1,
      crypto_ms: Math.round(ch.cryptoMs * 1000) / 1000,
    };
  } catch (err) {
    ch?.destroy();
    const message = (err as Error).message;
    if (committed) {
      vm.holdAfterMigration();
      throw new MigrationFailure(`${message}: the VM may run at ${to}, so it is held paused here (unpause with force runs it here)`, true);
    }
    // Not committed: the VM runs on here (unpaused if the last step paused it).
    vm.abortMigration();
    throw new MigrationFailure(message, false);
  } finally {
    vm.migrating = false;
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
    let handshakes = 0;
    const server = createServer((socket) => {
      if (handshakes >= MAX_HANDSHAKES) {
        socket.destroy();
        opts.onError?.(new MigrationError(`${socket.remoteAddress ?? '?'}: ${MAX_HANDSHAKES} connections are in their handshake already`));
        return;
      }
      handshakes++;
      let counted = true;
      const authenticated = (): void => {
        if (counted) handshakes--;
        counted = false;
      };
      socket.once('close', authenticated);
      const peer = `${socket.remoteAddress ?? '?'}:${socket.remotePort ?? '?'}`;
      void receive(host, new Channel(socket), opts, authenticated).catch((err: Error) => opts.onError?.(new MigrationError(`from ${peer}: ${err.message}`)));
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

/**
 * The source's hello and proof; throws (after telling the peer why, in the
 * clear) if it is not one that holds the token. Returns its auth message,
 * the channel sealed from here on.
 */
async function handshake(ch: Channel, token: string): Promise<Record<string, unknown>> {
  const refuse = (message: string): never => {
    ch.sendClear({ type: 'error', message });
    ch.close();
    throw new MigrationError(message);
  };
  const hello = await ch.nextClear(HANDSHAKE_MS, 'the source\'s hello');
  if (hello.type !== 'hello') return refuse('expected hello');
  if (hello.version !== PROTOCOL) return refuse(`migration protocol ${String(hello.version)}; this host speaks ${PROTOCOL}`);
  const ns = nonceOf(hello.nonce, 'hello');
  const nd = newNonce();
  ch.sendClear({ type: 'challenge', nonce: nd.toString('hex'), proof: proofOf(token, 'destination', ns, nd) });
  const auth = await ch.nextClear(HANDSHAKE_MS, 'the source\'s proof');
  if (auth.type !== 'auth') return refuse('expected auth');
  if (!sameProof(auth.proof, proofOf(token, 'source', ns, nd))) return refuse('wrong token');
  ch.seal(token, 'destination', ns, nd);
  return auth;
}

/** What an authenticated source says it sends, or why that cannot be taken. */
function offerOf(auth: Record<string, unknown>): { name: string; memory: number; timeoutMs: number } | string {
  const { name, memory, timeout_ms: timeoutMs } = auth;
  if (typeof name !== 'string' || name.length === 0 || name.length > 63) return 'auth.name: not a VM name';
  if (typeof memory !== 'number' || !Number.isInteger(memory) || memory < MIN_MEMORY || memory > MAX_MEMORY || memory % PAGE) {
    return `auth.memory: ${String(memory)} is not a whole number of pages from ${MIN_MEMORY} to ${MAX_MEMORY}`;
  }
  if (typeof timeoutMs !== 'number' || !(timeoutMs >= 100 && timeoutMs <= 600_000)) return 'auth.timeout_ms: not 100..600000';
  return { name, memory, timeoutMs };
}

async function receive(host: Host, ch: Channel, opts: ListenOptions, authenticated: () => void): Promise<void> {
  let vm: VirtualMachine | undefined;
  const refuse = async (message: string): Promise<never> => {
    // Nothing half-received stays: a copy that was not committed goes.
    if (vm && vm.state !== 'exited') await vm.destroy();
    ch.sendJson('error', { message });
    ch.close();
    throw new MigrationError(message);
  };
  try {
    const offer = offerOf(await handshake(ch, opts.token));
    authenticated();
    if (typeof offer === 'string') return await refuse(offer);
    const { name, memory, timeoutMs } = offer;
    const same = host.get(name);
    if (same && same.state !== 'exited') return await refuse(`a VM named "${name}" already runs here`);
    ch.sendJson('ready', {});
    const pages = new Map<number, Uint8Array>();
    const maxPages = memory / PAGE;
    const finalParts: Buffer[] = [];
    let finalBytes = 0;
    for (;;) {
      const m = await ch.next(BETWEEN_ROUNDS_MS, 'the source\'s pages');
      if (m.kind === 'pages') {
        if (m.body.length % RECORD) return await refuse(`pages: ${m.body.length} bytes is not a whole number of page records`);
        for (let o = 0; o < m.body.length; o += RECORD) {
          const p = m.body.readUInt32LE(o);
          if (p >= maxPages) return await refuse(`pages: page ${p} lies outside the VM's ${memory} bytes`);
          pages.set(p, m.body.subarray(o + 4, o + RECORD));
        }
        ch.sendJson('ack', {});
        continue;
      }
      if (m.kind !== 'final') return await refuse(`unexpected ${m.kind}`);
      finalBytes += m.body.length;
      if (finalBytes > memory + FINAL_EXTRA) return await refuse(`final: more than ${memory + FINAL_EXTRA} bytes for a VM of ${memory}`);
      finalParts.push(m.body);
      if (m.more) continue;
      let snapshot: Snapshot;
      try {
        snapshot = decodeSnapshot('migration', Buffer.concat(finalParts, finalBytes));
      } catch (err) {
        return await refuse((err as Error).message);
      }
      for (const [p, data] of snapshot.pages) pages.set(p, data);
      const userPaused = snapshot.header.paused;
      try {
        // Paused until the source commits: until then it runs there.
        vm = await host.restore({ snapshot: { ...snapshot, header: { ...snapshot.header, paused: true }, pages } });
      } catch (err) {
        return await refuse((err as Error).message);
      }
      vm.migrating = true;
      ch.sendJson('restored', { id: vm.id });
      let commit: SealedRecord;
      try {
        commit = await ch.next(timeoutMs, 'the source\'s commit');
      } catch (err) {
        vm.migrating = false;
        await vm.destroy();
        throw err;
      }
      vm.migrating = false;
      if (commit.kind !== 'commit') return await refuse(`unexpected ${commit.kind}`);
      if (!userPaused && vm.state === 'paused') await vm.unpause({ force: true });
      ch.sendJson('running', { id: vm.id });
      opts.onMigrated?.(vm);
      ch.close();
      return;
    }
  } catch (err) {
    ch.destroy();
    throw err;
  }
}
