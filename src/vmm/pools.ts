// An executor's pools of prepared shells: the target depth asked for per
// memory size, and the preparer thread that fills them, started while a
// target is set and stopped (or replaced, after a wait) otherwise.
import type { Kvm } from '../kvm/kvm.js';
import type { GuestArenas } from '../kvm/memory.js';
import { workerThreads } from '../sys/builtins.js';
import * as libc from '../sys/libc.js';
import { type Machine, monotonicNs } from './machine.js';
import { serializeError, type ProcessEvent } from './protocol.js';
import { nextBackoffNs, ShellSupply } from './shell-supply.js';
import { startWorker } from './workers.js';

/** Longest an executor that stops waits for its preparer's last word. */
const PREPARER_STOP_MS = 5_000;

export class Pools {
  /** Shells from a preparer thread, which runs only while a pool target is set. */
  private supply: ShellSupply | undefined;
  /** After a preparer died or could not start: no new one before this (monotonic ns), and how long that wait was. */
  private preparerRestartNs = 0;
  private preparerBackoffNs = 0;
  private readonly poolTargets = new Map<number, number>();
  private poolChanged = false;

  /** wakeFd: the executor's eventfd, which the preparer signals when it hands a shell over. */
  constructor(
    private readonly kvm: Kvm, private readonly wakeFd: number, private readonly arenas: GuestArenas | undefined,
    private readonly emit: (ev: ProcessEvent) => void,
  ) {}

  setTarget(memory: number, target: number): void {
    this.poolTargets.set(memory, target);
    this.supply?.setTarget(memory, target);
    this.poolChanged = true;
    this.updatePreparer();
  }

  /** Ready shells per memory size. */
  depths(): Map<number, number> {
    return this.supply?.depths() ?? new Map<number, number>();
  }

  /** A ready shell of this size, if any. */
  take(memory: number): Machine | undefined {
    return this.supply?.take(memory);
  }

  /**
   * Before the executor sleeps: takes in what the preparer handed over, frees
   * a stopped one, and tells the toolstack the pools' depths if they changed.
   */
  tend(): void {
    this.supply?.drain();
    // Also what a request drained or took: the pool's depth is news.
    if (this.supply?.changed()) this.poolChanged = true;
    this.settlePreparer();
    if (this.poolChanged) {
      // Pool depth is news for the toolstack, but never on a VM's boot path.
      this.poolChanged = false;
      const depths = this.depths();
      for (const memory of this.poolTargets.keys()) this.emit({ ev: 'pool', memory, depth: depths.get(memory) ?? 0 });
      const f = this.supply?.failure;
      if (f && this.supply) {
        this.supply.failure = undefined;
        this.emit({ ev: 'pool-error', memory: f.memory, error: f.error });
      }
    }
  }

  /**
   * When the executor must wake next for its pools (monotonic ns; Infinity
   * if never): a pool size that failed is asked for again, a dead preparer
   * replaced. Starts a preparer now if one is wanted and its wait is over.
   */
  dueNs(now: number): number {
    let due = Infinity;
    if (this.supply?.received) this.preparerBackoffNs = 0;
    const retryAt = this.supply?.retry(now);
    if (retryAt !== undefined) due = retryAt;
    if (!this.supply) {
      this.updatePreparer();
      if (!this.supply && this.preparerRestartNs > now) due = Math.min(due, this.preparerRestartNs);
    }
    return due;
  }

  /**
   * A preparer thread costs memory (a V8 isolate): it runs only while this
   * executor holds a pool, which the toolstack moves to the executor it fills.
   * This thread starts and stops it itself (it never returns to its event
   * loop, so all it hears from the preparer comes over their channel).
   */
  private updatePreparer(): void {
    let want = false;
    for (const t of this.poolTargets.values()) if (t > 0) want = true;
    if (want && !this.supply && monotonicNs() >= this.preparerRestartNs) {
      try {
        this.supply = this.startPreparer();
      } catch (err) {
        // No thread to be had now (no memory, no fd): try again later, as for a dead one.
        this.delayPreparer();
        for (const [memory, t] of this.poolTargets) if (t > 0) this.emit({ ev: 'pool-error', memory, error: serializeError(err) });
      }
    } else if (!want) {
      this.supply?.stop();
    }
    // Wanted again while the old one stops: dueNs() starts a new one once it is settled.
  }

  private startPreparer(): ShellSupply {
    const { port1, port2 } = new (workerThreads().MessageChannel)();
    const worker = startWorker('preparer', {
      workerData: { executor: port1, wakeFd: this.wakeFd, arenas: this.arenas?.share },
      transferList: [port1],
      resourceLimits: { maxOldGenerationSizeMb: 64, maxYoungGenerationSizeMb: 2 },
    });
    // It ends by itself once stopped; it never keeps the process alive.
    worker.unref();
    const supply = new ShellSupply(this.kvm, port2, this.arenas);
    for (const [memory, target] of this.poolTargets) supply.setTarget(memory, target);
    return supply;
  }

  /**
   * No new preparer for a while: one that dies at start would cost a
   * thread's start-up (tens of ms of CPU) in a loop. The wait doubles per
   * failure in a row; a shell handed over resets it (see dueNs()).
   */
  private delayPreparer(): void {
    this.preparerBackoffNs = nextBackoffNs(this.preparerBackoffNs);
    this.preparerRestartNs = monotonicNs() + this.preparerBackoffNs;
  }

  /** Once a stopped preparer's last shell is in, frees what it left (dueNs() then starts a new one if a pool is wanted). */
  private settlePreparer(): void {
    if (!this.supply?.stopped) return;
    if (this.supply.died) this.delayPreparer();
    this.supply.close();
    this.supply = undefined;
    // Its thread has ended (its V8 heap with it), but glibc keeps that
    // thread's malloc arena: ~MiBs per executor, held until trimmed.
    libc.mallocTrim();
    this.poolChanged = true;
  }

  /**
   * Stops the preparer and frees every shell it handed over, the last ones
   * included. A preparer that died says nothing: it is waited for only so
   * long. True if no preparer is left.
   */
  stop(): boolean {
    const supply = this.supply;
    if (!supply) return true;
    this.supply = undefined;
    supply.stop();
    const nap = new Int32Array(new SharedArrayBuffer(4));
    for (const until = Date.now() + PREPARER_STOP_MS; Date.now() < until;) {
      supply.drain();
      if (supply.stopped) break;
      Atomics.wait(nap, 0, 0, 1);
    }
    supply.close();
    return supply.stopped;
  }
}
