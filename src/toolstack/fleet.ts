// The daemon's executors: processes, each holding a bounded number of VMs.
// Why a bound: in one process every KVM_CREATE_VM, destroy and munmap costs
// more for each VM that process already holds (KVM_CREATE_VM locks every VMA
// of the process; every munmap visits every VM's MMU notifier), while VMs
// held by other processes cost nothing. But each executor process costs too:
// ~160 ms of CPU to start (its thread and its preparer's) and ~11 MiB of its
// own memory. Measured with `bench scale --vms 10000`, a bound of 500 beat
// 250 on every count (645-653 vs 501-529 VMs/s, last/first 1.26-1.30 vs
// 1.50-1.55, 40 KiB less anonymous memory per VM); against 1,000 the rate
// did not separate (1,114 vs 1,049-1,109 VMs/s) and 1,000 saved 11 KiB per
// VM, but its last 500 VMs went to executors already holding 500 (last/first
// 2.1-2.5). So VMs fill one executor up to the bound, a spare executor is
// started ahead of need, and executors left empty are stopped after a while.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { AdoptedRestore, AdoptedService, AdoptedVm, FailedRestore } from '../vmm/protocol.js';
import type { ExecutorLink } from './executor-link.js';
import { ExecutorProcess } from './executor-process.js';
import type { Placement } from './host.js';

export const DEFAULT_VMS_PER_EXECUTOR = 500;

export interface FleetOptions {
  /** Executor sockets and logs go to dir/executors. */
  runtimeDir: string;
  /** Most VMs (prepared shells included) one executor holds. */
  vmsPerExecutor?: number;
  /** Executors kept started, with room, beyond the one being filled. */
  spare?: number;
  /** An empty executor beyond the spare is stopped after this long. */
  idleStopMs?: number;
  /** An executor of an earlier daemon that serves its socket but could not be re-adopted. */
  onAdoptError?: (id: number, err: Error) => void;
}

export interface AdoptedExecutor {
  link: ExecutorProcess;
  vms: AdoptedVm[];
  services: AdoptedService[];
  restoring: AdoptedRestore[];
  failedRestores: FailedRestore[];
}

export class ExecutorFleet implements Placement {
  readonly dir: string;
  readonly bound: number;
  private readonly spare: number;
  private readonly idleStopMs: number;
  private readonly links = new Map<number, ExecutorProcess>();
  private readonly listeners: ((ex: ExecutorLink) => void)[] = [];
  private starting: Promise<ExecutorProcess> | undefined;
  private nextId = 1;
  private readonly poolTargets = new Map<number, number>();
  private poolHolder: ExecutorProcess | undefined;
  private readonly idleSince = new Map<number, number>();
  private readonly timer: NodeJS.Timeout;
  private closed = false;

  private constructor(opts: FleetOptions) {
    this.dir = join(opts.runtimeDir, 'executors');
    this.bound = opts.vmsPerExecutor ?? DEFAULT_VMS_PER_EXECUTOR;
    this.spare = opts.spare ?? 1;
    this.idleStopMs = opts.idleStopMs ?? 30_000;
    // One timer for the whole fleet, never one per VM.
    this.timer = setInterval(() => this.housekeeping(), 2_000).unref();
  }

  /**
   * Starts the fleet: re-adopts the executors still running from an earlier
   * daemon (their VMs are returned), then starts what is missing. An
   * adopted executor's events are held until its link is released, once
   * its VMs are on record.
   */
  static async start(opts: FleetOptions): Promise<{ fleet: ExecutorFleet; adopted: AdoptedExecutor[] }> {
    const fleet = new ExecutorFleet(opts);
    mkdirSync(fleet.dir, { recursive: true, mode: 0o700 });
    const adopted: AdoptedExecutor[] = [];
    for (const f of readdirSync(fleet.dir)) {
      const m = /^(\d+)\.sock$/.exec(f);
      if (!m) continue;
      const id = Number(m[1]);
      try {
        const { link, hello } = await ExecutorProcess.connect(id, join(fleet.dir, f));
        fleet.add(link);
        adopted.push({ link, vms: hello.vms, services: hello.services ?? [], restoring: hello.restoring ?? [], failedRestores: hello.failedRestores ?? [] });
      } catch (err) {
        // A socket nobody serves: its executor died with the old daemon.
        // One that is served but did not answer is left alone (its process
        // may still run VMs), and said so; its id is never given again.
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ECONNREFUSED' || code === 'ENOENT') rmSync(join(fleet.dir, f), { force: true });
        else opts.onAdoptError?.(id, err as Error);
      }
      fleet.nextId = Math.max(fleet.nextId, id + 1);
    }
    return { fleet, adopted };
  }

  executors(): Iterable<ExecutorLink> {
    return [...this.links.values()].filter((l) => l.isAlive);
  }

  processes(): ExecutorProcess[] {
    return [...this.links.values()].filter((l) => l.isAlive);
  }

  onExecutor(listener: (ex: ExecutorLink) => void): void {
    this.listeners.push(listener);
    for (const l of this.links.values()) listener(l);
  }

  private room(ex: ExecutorProcess): number {
    return this.bound - ex.load - ex.shells;
  }

  /** The lowest-numbered executor with room: VMs fill executors in turn. */
  private active(): ExecutorProcess | undefined {
    let best: ExecutorProcess | undefined;
    for (const ex of this.links.values()) {
      if (!ex.isAlive || ex.load >= this.bound) continue;
      if (!best || ex.id < best.id) best = ex;
    }
    return best;
  }

  async pick(): Promise<ExecutorLink> {
    let ex = this.active();
    // Concurrent picks may all wait for one new executor: each checks for room again.
    while (!ex) {
      if (this.closed) throw new Error('the executor fleet is stopped');
      await this.startOne();
      ex = this.active();
    }
    if (this.closed) throw new Error('the executor fleet is stopped');
    ex.load++;
    this.idleSince.delete(ex.id);
    this.placePool(ex);
    this.keepSpare();
    return ex;
  }

  /**
   * The pool stays with the executor being filled until the shells it holds
   * cover the room it has left; then it goes to the next executor, which so
   * prepares its shells while this one uses up its own. (Moved only once
   * the first is full, the next one's first ~100 VMs found no shell ready.)
   */
  private placePool(active: ExecutorProcess): void {
    const left = this.bound - active.load;
    const next = active.shells >= left ? this.next(active) : undefined;
    if (!next) {
      this.movePool(active);
      return;
    }
    this.movePool(next, left);
    // What it still needs, and no more: the rest of its shells are freed.
    for (const [memory, target] of this.poolTargets) {
      const t = Math.min(target, left);
      if (active.poolTargets.get(memory) !== t) active.send({ op: 'pool', memory, target: t });
    }
  }

  /** The executor filled after this one: the lowest-numbered other one with room. */
  private next(active: ExecutorProcess): ExecutorProcess | undefined {
    let best: ExecutorProcess | undefined;
    for (const ex of this.links.values()) {
      if (ex === active || !ex.isAlive || ex.load >= this.bound) continue;
      if (!best || ex.id < best.id) best = ex;
    }
    return best;
  }

  /** Keeps `count` prepared shells of `memory` bytes on the executor being filled. */
  setPool(memory: number, count: number): void {
    this.poolTargets.set(memory, count);
    const ex = this.active();
    if (ex) {
      this.poolHolder = undefined;
      this.movePool(ex);
    } else if (count > 0) {
      void this.startOne().then((e) => this.movePool(e), () => {});
    }
  }

  poolDepth(memory: number): number {
    let n = 0;
    for (const ex of this.links.values()) n += ex.pools.get(memory) ?? 0;
    return n;
  }

  get targets(): ReadonlyMap<number, number> {
    return this.poolTargets;
  }

  /** Makes ex the pool's holder; the old holder keeps at most oldKeeps shells. */
  private movePool(ex: ExecutorProcess, oldKeeps = 0): void {
    if (this.poolHolder === ex) return;
    const old = this.poolHolder;
    this.poolHolder = ex;
    for (const [memory, target] of this.poolTargets) {
      if (old?.isAlive) old.send({ op: 'pool', memory, target: Math.min(target, oldKeeps) });
      ex.send({ op: 'pool', memory, target: Math.max(0, Math.min(target, this.room(ex) - 1)) });
    }
  }

  /** Starts an executor unless one is already starting. */
  private startOne(): Promise<ExecutorProcess> {
    this.starting ??= (async () => {
      try {
        const ex = await ExecutorProcess.spawn(this.nextId++, this.dir);
        this.add(ex);
        ex.release();
        return ex;
      } finally {
        this.starting = undefined;
      }
    })();
    return this.starting;
  }

  private add(ex: ExecutorProcess): void {
    this.links.set(ex.id, ex);
    ex.on('lost', () => {
      this.links.delete(ex.id);
      if (this.poolHolder === ex) this.poolHolder = undefined;
      rmSync(ex.socketPath, { force: true });
      if (!this.closed) this.keepSpare();
    });
    for (const l of this.listeners) l(ex);
  }

  /** Starts an executor ahead of need when too few have room. */
  private keepSpare(): void {
    if (this.closed || this.starting) return;
    let withRoom = 0;
    for (const ex of this.links.values()) if (ex.isAlive && ex.load < this.bound * 0.9) withRoom++;
    if (withRoom < 1 + this.spare) void this.startOne().catch(() => {});
  }

  private housekeeping(): void {
    const now = Date.now();
    // The pool follows the executor being filled, also when no create came to move it.
    const active = this.active();
    if (active) this.placePool(active);
    this.keepSpare();
    const live = this.processes();
    let empty = live.filter((ex) => ex.load === 0);
    for (const ex of live) if (ex.load > 0) this.idleSince.delete(ex.id);
    // Keep the lowest-numbered empty executors as the spare.
    empty = empty.sort((a, b) => a.id - b.id).slice(1 + this.spare);
    for (const ex of empty) {
      if (ex === this.poolHolder) continue;
      const since = this.idleSince.get(ex.id) ?? now;
      this.idleSince.set(ex.id, since);
      if (now - since >= this.idleStopMs) {
        this.idleSince.delete(ex.id);
        this.links.delete(ex.id);
        void ex.stop();
      }
    }
  }

  /** Stops every executor and its VMs. */
  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    // One still starting is stopped too, not left behind.
    await this.starting?.catch(() => {});
    await Promise.all([...this.links.values()].map((ex) => ex.stop()));
    this.links.clear();
  }

  /** Lets go of every executor, leaving it and its VMs running (daemon restart). */
  detachAll(): void {
    this.closed = true;
    clearInterval(this.timer);
    for (const ex of this.links.values()) ex.detach();
    this.links.clear();
  }
}
