import type { EventEmitter } from 'node:events';
import type { ExecutorEvent, ExecutorRequest, SerializedError } from '../vmm/protocol.js';

export interface ExecutorLinkEvents {
  event: [ExecutorEvent];
  /** The executor is gone; every VM on it is lost. */
  lost: [SerializedError];
}

/** An executor as the toolstack drives it: a thread here, or a process. */
export interface ExecutorLink extends EventEmitter<ExecutorLinkEvents> {
  readonly id: number;
  /** VMs placed on it (kept by the toolstack). */
  load: number;
  readonly isAlive: boolean;
  send(req: ExecutorRequest): void;
  /** Keeps this process alive while the executor has VMs (threads only). */
  setBusy(busy: boolean): void;
  /** Destroys its VMs and ends it. */
  stop(): Promise<void>;
  /** Ends an executor that no longer answers: its VMs are reported lost with the reason. */
  fail(reason: string): void;
  /** The toolstack has recorded this VM's end or failure (an executor process keeps records until then). */
  forget?(vmId: number): void;
}
