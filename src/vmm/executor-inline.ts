// An executor on the caller's own thread, run one turn at a time between
// turns of its event loop: for a process that does nothing but run its VMs
// (`lightvm run`). It saves what an executor thread costs to start, a
// second V8 isolate that loads the monitor's modules again (most of a
// one-VM process's start-up, measured in bench boot's lightvm_run_process).
//
// A turn returns within turnNs (a guest's slice ends on the executor's
// timer, a sleep times out), so the event loop, signal handlers included,
// runs at least that often; while it holds no VM, no turn runs at all.
import { EventEmitter } from 'node:events';
import * as libc from '../sys/libc.js';
import { Executor } from './executor.js';
import {
  CONTROL_PENDING, CONTROL_WORDS, serializeError,
  type ExecutorEvent, type ExecutorRequest, type ProcessEvent, type ProcessRequest, type SerializedError,
} from './protocol.js';

export interface InlineExecutorEvents {
  event: [ExecutorEvent];
  /** The executor failed; every VM on it is lost. */
  lost: [SerializedError];
}

/** Longest the event loop waits for an inline executor's turn. */
export const INLINE_TURN_NS = 10_000_000;

let nextInlineId = 1;

export class InlineExecutor extends EventEmitter<InlineExecutorEvents> {
  readonly id = nextInlineId++;
  /** VMs placed on this executor (kept by the host). */
  load = 0;
  private readonly control = new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4));
  private readonly wakeFd: number;
  private readonly executor: Executor;
  private readonly requests: ProcessRequest[] = [];
  /**
   * Events of the last turn, delivered one per turn of the event loop as a
   * thread's messages are, so that what a listener awaits (a create's
   * promise) has settled before the next event comes (its console).
   */
  private readonly outbox: ExecutorEvent[] = [];
  private scheduled = false;
  private alive = true;
  private ended = false;

  constructor() {
    super();
    this.wakeFd = libc.eventfd();
    try {
      this.executor = new Executor(this.control, this.wakeFd, { turnNs: INLINE_TURN_NS, arenas: false });
    } catch (err) {
      libc.close(this.wakeFd);
      throw err;
    }
    this.executor.setPort({
      receive: () => this.requests.shift(),
      send: (ev: ProcessEvent) => this.outbox.push(ev as ExecutorEvent),
    });
  }

  get isAlive(): boolean {
    return this.alive;
  }

  send(req: ExecutorRequest): void {
    if (!this.alive) throw new Error('executor is not running');
    this.requests.push(req);
    Atomics.store(this.control, CONTROL_PENDING, 1);
    this.schedule();
  }

  /** Nothing to do: turns run while the executor is busy, and keep the process alive meanwhile. */
  setBusy(): void {}

  private schedule(): void {
    if (this.scheduled || (!this.alive && this.outbox.length === 0)) return;
    this.scheduled = true;
    setImmediate(() => this.pump());
  }

  private pump(): void {
    this.scheduled = false;
    const ev = this.outbox.shift();
    if (ev) {
      this.schedule();
      this.emit('event', ev);
      return;
    }
    if (!this.alive) return;
    try {
      this.executor.turn();
    } catch (err) {
      this.alive = false;
      this.emit('lost', serializeError(err));
      return;
    }
    if (this.executor.busy || this.outbox.length) this.schedule();
  }

  /** Gives up on it (a request it did not answer in time): its VMs are reported lost; stop() frees them. */
  fail(reason: string): void {
    if (!this.alive) return;
    this.alive = false;
    this.emit('lost', { name: 'ExecutorError', message: `inline executor ${this.id} ${reason}` });
  }

  /** Destroys its VMs and ends it, on this thread, now (also after it failed: what it holds is freed). */
  stop(): Promise<void> {
    if (this.ended) return Promise.resolve();
    this.ended = true;
    this.alive = false;
    this.requests.push({ op: 'stop' });
    Atomics.store(this.control, CONTROL_PENDING, 1);
    try {
      this.executor.loop();
      // What it said as it stopped (VMs destroyed, freed) is heard now.
      for (let ev = this.outbox.shift(); ev; ev = this.outbox.shift()) this.emit('event', ev);
    } catch (err) {
      return Promise.reject(err instanceof Error ? err : new Error(String(err)));
    } finally {
      libc.close(this.wakeFd);
    }
    return Promise.resolve();
  }
}
