// The shell preparer: a thread beside each executor that keeps prepared
// shells ready (VM, memory, slots, vCPU, 64-bit state, warm-up run) so that
// preparing never takes the executor thread from a request. It runs at a
// low priority and hands each shell over as file descriptors and addresses.
import { workerData, type MessagePort } from 'node:worker_threads';
import { Kvm } from '../kvm/kvm.js';
import { GuestArenas, type ArenasShare } from '../kvm/memory.js';
import * as libc from '../sys/libc.js';
import { Machine, type ShellParts } from './machine.js';
import { serializeError, type SerializedError } from './protocol.js';

/** Executor → preparer. */
export type PreparerRequest =
  | { op: 'target'; memory: number; target: number }
  /** count shells of this size were taken (or freed): make as many again. */
  | { op: 'taken'; memory: number; count: number }
  | { op: 'stop' };

/**
 * Preparer → executor. 'stopped' is the last message: every shell handed
 * over comes before it on the same channel.
 */
export type PreparerMessage =
  | { kind: 'shell'; parts: ShellParts }
  | { kind: 'failed'; memory: number; error: SerializedError }
  | { kind: 'stopped' }
  /** Its last word before the thread ends on an error nobody expected. */
  | { kind: 'died'; error: SerializedError };

interface PreparerData {
  /** The channel with the executor thread: shells out, targets and takes in. */
  executor: MessagePort;
  /** The executor's eventfd: signalled after each shell so it can report the pool. */
  wakeFd: number;
  /** The executor's arenas: shells' RAM and device pages come from them (if it has them). */
  arenas: ArenasShare | undefined;
}

const { executor, wakeFd, arenas: share } = workerData as PreparerData;
const arenas = share ? GuestArenas.attach(share) : undefined;
// Preparing is background work: it runs only on an otherwise idle CPU.
libc.setThreadIdle();
libc.setThreadName('lvm-preparer');
const kvm = Kvm.open();
const targets = new Map<number, number>();
/** Shells handed over and not yet taken, per memory size. */
const ready = new Map<number, number>();
let stopping = false;
let scheduled = false;

function schedule(): void {
  if (scheduled || stopping) return;
  scheduled = true;
  setImmediate(step);
}

/** Prepares one shell where one is missing, then yields to messages. */
function step(): void {
  scheduled = false;
  if (stopping) return;
  for (const [memory, target] of targets) {
    const have = ready.get(memory) ?? 0;
    if (have >= target) continue;
    let m: Machine | undefined;
    try {
      m = new Machine(kvm, memory, undefined, arenas);
      // The first entry is the costly one (KVM's MMU set-up, its per-VM
      // thread): here, not on a request. A later first entry on the
      // executor's thread costs ~10 µs more than on the same thread.
      for (let tries = 1; !m.warmUp(); tries++) {
        if (tries >= 3) throw new Error('shell warm-up: KVM_RUN interrupted three times');
      }
    } catch (err) {
      m?.close();
      targets.set(memory, 0);
      executor.postMessage({ kind: 'failed', memory, error: serializeError(err) } satisfies PreparerMessage);
      libc.eventfdSignal(wakeFd);
      return;
    }
    ready.set(memory, have + 1);
    executor.postMessage({ kind: 'shell', parts: m.detach() } satisfies PreparerMessage);
    libc.eventfdSignal(wakeFd);
    schedule();
    return;
  }
}

// The executor's thread never returns to its event loop: everything, the
// stop included, goes over the one channel, and wakes it by its eventfd.
executor.on('message', (req: PreparerRequest) => {
  if (req.op === 'stop') {
    stopping = true;
    kvm.close();
    executor.postMessage({ kind: 'stopped' } satisfies PreparerMessage);
    libc.eventfdSignal(wakeFd);
    executor.close();
    return;
  }
  if (req.op === 'target') targets.set(req.memory, req.target);
  else ready.set(req.memory, Math.max(0, (ready.get(req.memory) ?? 0) - req.count));
  schedule();
});

// An error nobody expected ends this thread. The executor's thread never
// runs the event loop that would see this worker's 'error': it hears it
// here, as a failure of every pool size wanted, serves those from cold, and
// starts a new preparer after a while (Executor.settlePreparer).
process.on('uncaughtException', (err) => {
  for (const [memory, target] of targets) {
    if (target > 0) executor.postMessage({ kind: 'failed', memory, error: serializeError(err) } satisfies PreparerMessage);
  }
  executor.postMessage({ kind: 'died', error: serializeError(err) } satisfies PreparerMessage);
  libc.eventfdSignal(wakeFd);
  process.exit(1);
});
