// The executor's side of the shell preparer: takes in the shells it hands
// over (each already run once: see Machine.warmUp) and gives them out to
// requests.
import type { MessagePort } from 'node:worker_threads';
import type { Kvm } from '../kvm/kvm.js';
import type { GuestArenas } from '../kvm/memory.js';
import { Machine, monotonicNs } from './machine.js';
import type { PreparerMessage, PreparerRequest } from './preparer.js';
import type { SerializedError } from './protocol.js';
import { workerThreads } from '../sys/builtins.js';

/** A pool size whose preparation failed is tried again after this, doubling per failure in a row. */
const RETRY_FIRST_NS = 1e9;
const RETRY_MAX_NS = 60e9;

/** The wait after one more failure in a row, given the last wait (0: none yet). */
export function nextBackoffNs(lastNs: number): number {
  return Math.min(RETRY_MAX_NS, Math.max(RETRY_FIRST_NS, lastNs * 2));
}

interface Retry {
  atNs: number;
  backoffNs: number;
  /** The preparer has not been asked again yet. */
  due: boolean;
}

export class ShellSupply {
  /** Ready shells per memory size. */
  private readonly shells = new Map<number, Machine[]>();
  private readonly targets = new Map<number, number>();
  /** Shells taken since the preparer was last told, per memory size. */
  private readonly taken = new Map<number, number>();
  /** A preparation failure not yet reported. */
  failure: { memory: number; error: SerializedError } | undefined;
  /** Shells came in or went out since the last changed() (a request may drain the channel too). */
  private dirty = false;
  /** Asked to stop / has said it stopped: nothing comes after that. */
  stopping = false;
  stopped = false;
  /** The preparer's thread ended without being asked to (it said so first). */
  died = false;
  /** Shells the preparer has handed over. */
  received = 0;
  /**
   * Sizes whose preparation failed: the preparer gave them up, and is asked
   * again later (a failure may pass: no memory, no fd left for a while).
   */
  private readonly retries = new Map<number, Retry>();

  constructor(private readonly kvm: Kvm, private readonly port: MessagePort, private readonly arenas?: GuestArenas) {}

  /** Takes in what the preparer has handed over. */
  drain(): void {
    this.tellTaken();
    const { receiveMessageOnPort } = workerThreads();
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
      const msg = m.message as PreparerMessage;
      this.dirty = true;
      if (msg.kind === 'stopped' || msg.kind === 'died') {
        this.stopped = true;
        this.died = msg.kind === 'died';
        continue;
      }
      if (msg.kind === 'failed') {
        this.failure = { memory: msg.memory, error: msg.error };
        const backoffNs = nextBackoffNs(this.retries.get(msg.memory)?.backoffNs ?? 0);
        this.retries.set(msg.memory, { atNs: monotonicNs() + backoffNs, backoffNs, due: true });
        continue;
      }
      const memory = msg.parts.memSize;
      this.retries.delete(memory);
      this.received++;
      const machine = new Machine(this.kvm, memory, msg.parts, this.arenas);
      const list = this.shells.get(memory) ?? [];
      if (list.length >= (this.targets.get(memory) ?? 0)) {
        // More than wanted (the target went down meanwhile): free it now.
        machine.close();
        this.post({ op: 'taken', memory, count: 1 });
        continue;
      }
      list.push(machine);
      this.shells.set(memory, list);
    }
  }

  /** A prepared shell of this size, or undefined if none is ready. */
  take(memory: number): Machine | undefined {
    let list = this.shells.get(memory);
    if (!list?.length) {
      this.drain();
      list = this.shells.get(memory);
    }
    const machine = list?.shift();
    if (!machine) return undefined;
    // The preparer hears of it at the next drain, off the request's path:
    // a message to its thread costs the request ~20 µs here.
    this.taken.set(memory, (this.taken.get(memory) ?? 0) + 1);
    this.dirty = true;
    return machine;
  }

  setTarget(memory: number, target: number): void {
    this.targets.set(memory, target);
    this.post({ op: 'target', memory, target });
    const list = this.shells.get(memory) ?? [];
    let freed = 0;
    for (; list.length > target; freed++) list.pop()!.close();
    if (freed) this.post({ op: 'taken', memory, count: freed });
  }

  /** Shells ready per memory size (each already run once). */
  depths(): Map<number, number> {
    const out = new Map<number, number>();
    for (const memory of new Set([...this.targets.keys(), ...this.shells.keys()])) out.set(memory, this.shells.get(memory)?.length ?? 0);
    return out;
  }

  /**
   * Asks the preparer again for the sizes whose retry time has come; returns
   * when the next retry is due (monotonic ns), or undefined if none waits.
   */
  retry(nowNs: number): number | undefined {
    let next: number | undefined;
    for (const [memory, r] of this.retries) {
      if (!r.due) continue;
      if (r.atNs <= nowNs) {
        r.due = false;
        this.post({ op: 'target', memory, target: this.targets.get(memory) ?? 0 });
      } else {
        next = Math.min(next ?? r.atNs, r.atNs);
      }
    }
    return next;
  }

  /** True once after shells came in or were taken, however that happened. */
  changed(): boolean {
    const d = this.dirty;
    this.dirty = false;
    return d;
  }

  /** Asks the preparer to stop; it says 'stopped' after its last shell. */
  stop(): void {
    if (this.stopping) return;
    this.port.postMessage({ op: 'stop' } satisfies PreparerRequest);
    this.stopping = true;
  }

  /** Frees every shell held; call after the preparer has stopped (or died). */
  close(): void {
    this.drain();
    for (const list of this.shells.values()) for (const m of list) m.close();
    this.shells.clear();
    this.port.close();
  }

  private tellTaken(): void {
    for (const [memory, count] of this.taken) this.post({ op: 'taken', memory, count });
    this.taken.clear();
  }

  private post(req: PreparerRequest): void {
    // A stopping preparer hears nothing more.
    if (!this.stopping) this.port.postMessage(req);
  }
}
