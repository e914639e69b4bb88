// The host's handle on one executor thread: starts the worker, posts
// requests and wakes (or kicks) the thread so it reads them at once.
import { EventEmitter } from 'node:events';
import type { Worker } from 'node:worker_threads';
import * as libc from '../sys/libc.js';
import {
  CONTROL_IN_GUEST, CONTROL_PENDING, CONTROL_WORDS, KICK_SIGNAL,
  type ExecutorEvent, type ExecutorRequest, type ProcessEvent, type SerializedError,
} from './protocol.js';
import { startWorker } from './workers.js';
import { workerThreads } from '../sys/builtins.js';

export class ExecutorError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ExecutorError';
  }
}

export interface ExecutorThreadEvents {
  event: [ExecutorEvent];
  /** The thread died; every VM on it is lost. */
  lost: [SerializedError];
}

let nextThreadId = 1;

export class ExecutorThread extends EventEmitter<ExecutorThreadEvents> {
  readonly id = nextThreadId++;
  /** VMs placed on this executor (kept by the host). */
  load = 0;
  private readonly worker: Worker;
  private readonly port: import('node:worker_threads').MessagePort;
  private readonly control: Int32Array;
  private readonly wakeFd: number;
  private tid = 0;
  private pid = 0;
  private alive = true;
  private readonly stopped: Promise<void>;

  private constructor() {
    super();
    const sab = new SharedArrayBuffer(CONTROL_WORDS * 4);
    this.control = new Int32Array(sab);
    this.wakeFd = libc.eventfd();
    const { port1, port2 } = new (workerThreads().MessageChannel)();
    this.port = port1;
    this.worker = startWorker('executor-worker', {
      workerData: { port: port2, control: sab, wakeFd: this.wakeFd },
      transferList: [port2],
      // An executor needs little JS heap: its VMs' memory is mapped, not
      // allocated. A small young generation keeps its memory per VM low
      // (V8 would otherwise grow it to tens of MiB of short-lived garbage).
      resourceLimits: { maxOldGenerationSizeMb: 256, maxYoungGenerationSizeMb: 4 },
    });
    this.port.on('message', (ev: ExecutorEvent | ProcessEvent) => {
      if (ev.ev === 'ready') {
        this.tid = ev.tid;
        this.pid = ev.pid;
      } else if (ev.ev === 'fatal' && this.alive) {
        this.alive = false;
        this.emit('lost', ev.error);
      }
      this.emit('event', ev as ExecutorEvent);
    });
    this.stopped = new Promise((resolve) => {
      this.worker.once('exit', (code) => {
        if (this.alive) {
          this.alive = false;
          this.emit('lost', { name: 'ExecutorError', message: `executor thread exited with code ${code}` });
        }
        libc.close(this.wakeFd);
        this.port.close();
        resolve();
      });
    });
    this.worker.on('error', (err) => {
      if (this.alive) {
        this.alive = false;
        this.emit('lost', { name: err.name, message: err.message });
      }
    });
  }

  /** Starts an executor thread. */
  static start(): Promise<ExecutorThread> {
    const t = new ExecutorThread();
    return new Promise((resolve, reject) => {
      const onEvent = (ev: ExecutorEvent): void => {
        if (ev.ev === 'ready') {
          t.off('lost', onLost);
          t.off('event', onEvent);
          resolve(t);
        }
      };
      const onLost = (err: SerializedError): void => {
        t.off('event', onEvent);
        reject(Object.assign(new ExecutorError(err.message), { name: err.name }));
      };
      t.on('event', onEvent);
      t.once('lost', onLost);
    });
  }

  get isAlive(): boolean {
    return this.alive;
  }

  send(req: ExecutorRequest): void {
    if (!this.alive) throw new ExecutorError('executor is not running');
    this.post(req);
  }

  private post(req: ExecutorRequest): void {
    this.port.postMessage(req);
    Atomics.store(this.control, CONTROL_PENDING, 1);
    libc.eventfdSignal(this.wakeFd);
    // A thread inside KVM_RUN does not read its eventfd: interrupt it.
    if (Atomics.load(this.control, CONTROL_IN_GUEST) !== 0) libc.tgkill(this.pid, this.tid, KICK_SIGNAL);
  }

  /** Keeps the process alive while this executor has VMs (and while it stops). */
  setBusy(busy: boolean): void {
    if (busy || this.stopping) {
      this.worker.ref();
      this.port.ref();
    } else {
      this.worker.unref();
      this.port.unref();
    }
  }

  private stopping = false;

  /** Ends a thread that no longer answers: its VMs are reported lost. */
  fail(reason: string): void {
    if (!this.alive) return;
    this.alive = false;
    this.emit('lost', { name: 'ExecutorError', message: `executor thread ${this.id} ${reason}; it was terminated with its VMs` });
    void this.worker.terminate();
  }

  /** Destroys the executor's VMs and ends the thread. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.setBusy(true);
    if (this.alive) {
      this.post({ op: 'stop' });
      this.alive = false;
    }
    await this.stopped;
  }
}
