// What an executor keeps of each VM it runs, shared by the files of its
// concerns (executor.ts, migration.ts, ...).
import { ConsoleRate } from './console-rate.js';
import type { HeapItem } from './deadline-heap.js';
import type { Machine } from './machine.js';
import { monotonicNs } from './machine.js';
import type { NetModule } from './modules/net.js';
import type { CreateRequest, Timings } from './protocol.js';
import type { ResumeTo, VmState } from './vm-state.js';

/** Console bytes kept per VM for a toolstack that reconnects (executor processes). */
export const CONSOLE_HISTORY = 16 * 1024;

export interface Entry extends HeapItem {
  vmId: number;
  machine: Machine;
  timings: Timings;
  /** See vm-state.ts; 'migrating' is paused by a live migration's last step (not by the user). */
  state: VmState;
  /** Where a held VM goes when let go. */
  resume: ResumeTo;
  countInstructions: boolean;
  cpuNs: number;
  /** A just-in-time service's VM: its id, and the idle time that ends it. */
  serviceId?: number;
  idleNs?: number;
  config: CreateRequest;
  warm: boolean;
  /** The last CONSOLE_HISTORY bytes of console, when kept. */
  console: Uint8Array;
  /** Its console's rate (CONSOLE_WRITE and virtio-console spend it). */
  consoleRate: ConsoleRate;
}

/** A new entry for a loaded machine, not yet runnable. */
export function newEntry(req: CreateRequest, machine: Machine, timings: Timings, warm: boolean): Entry {
  return {
    vmId: req.vmId, machine, timings, deadlineNs: 0, heapIndex: -1, state: 'created', resume: 'runnable',
    countInstructions: req.countInstructions === true, cpuNs: 0,
    config: req, warm, console: new Uint8Array(0), consoleRate: new ConsoleRate(monotonicNs()),
  };
}

export function netOf(m: Machine): NetModule | undefined {
  return m.module('net') as NetModule | undefined;
}

export function netCounters(m: Machine): ReturnType<NetModule['counters']> {
  return netOf(m)?.counters() ?? [];
}

export function lastTraffic(m: Machine): number {
  return netOf(m)?.lastTrafficNs() || monotonicNs();
}

/** history with data appended, its last CONSOLE_HISTORY bytes. */
export function appendHistory(history: Uint8Array, data: Uint8Array): Uint8Array {
  const out = new Uint8Array(Math.min(CONSOLE_HISTORY, history.length + data.length));
  const keepOld = Math.max(0, out.length - data.length);
  out.set(history.subarray(history.length - keepOld), 0);
  out.set(data.subarray(Math.max(0, data.length - out.length)), keepOld);
  return out;
}
