// The hypercall table. Each call reads its argument struct at a
// guest-physical address, checks every pointer and length, and tells the
// vCPU loop what to do next. Device modules add their calls with register().
import { CONSOLE_WRITE_MAX, HC, HC_STRUCT, POLL_CONTROL } from './abi.js';
import { exitStatus, GuestFault } from './exit.js';
import type { Machine } from './machine.js';

/** What the vCPU loop does after a hypercall. */
export const Next = {
  /** Re-enter the guest at once. */
  Resume: 0,
  /** The guest waits: park it until its deadline or a device is ready. */
  Park: 1,
  /** The guest is done. */
  Halt: 2,
} as const;
export type Next = (typeof Next)[keyof typeof Next];

export type Hypercall = (m: Machine, arg: number) => Next;

const table: (Hypercall | undefined)[] = new Array<Hypercall | undefined>(64).fill(undefined);
const names: string[] = [];

export function register(nr: number, name: string, call: Hypercall): void {
  if (table[nr]) throw new Error(`hypercall ${nr} is registered twice (${names[nr]} and ${name})`);
  table[nr] = call;
  names[nr] = name;
}

export function lookup(nr: number): Hypercall | undefined {
  return table[nr];
}

export const HYPERCALL_SLOTS = table.length;

/** Wall-clock nanoseconds; µs precision is what the host clock gives here. */
function wallNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}

register(HC.WALLTIME, 'WALLTIME', (m, arg) => {
  const s = m.argStruct(arg, HC_STRUCT.walltime.size, 'WALLTIME');
  s.setBigUint64(HC_STRUCT.walltime.nsecs, wallNs(), true);
  return Next.Resume;
});

register(HC.CONSOLE_WRITE, 'CONSOLE_WRITE', (m, arg) => {
  const s = m.argStruct(arg, HC_STRUCT.consoleWrite.size, 'CONSOLE_WRITE');
  const data = s.getBigUint64(HC_STRUCT.consoleWrite.data, true);
  const len = s.getBigUint64(HC_STRUCT.consoleWrite.len, true);
  if (len > BigInt(CONSOLE_WRITE_MAX)) {
    throw new GuestFault('bad-hypercall', `CONSOLE_WRITE length ${len} exceeds the limit of ${CONSOLE_WRITE_MAX} bytes`);
  }
  // Past its console's rate, the guest waits (parked) until it is back under it.
  return m.console(m.guestBytes(data, Number(len), 'CONSOLE_WRITE buffer')) ? Next.Park : Next.Resume;
});

register(HC.POLL, 'POLL', (m, arg) => {
  const s = m.argStruct(arg, HC_STRUCT.poll.size, 'POLL');
  const timeout = s.getBigUint64(HC_STRUCT.poll.timeoutNsecs, true);
  if (m.shutdownRequested) {
    s.setBigUint64(HC_STRUCT.poll.readySet, POLL_CONTROL, true);
    return Next.Resume;
  }
  const ready = m.netReady();
  s.setBigUint64(HC_STRUCT.poll.readySet, ready, true);
  if (timeout === 0n || ready !== 0n) return Next.Resume;
  m.parkUntil(arg, timeout);
  return Next.Park;
});

register(HC.HALT, 'HALT', (m, arg) => {
  const s = m.argStruct(arg, HC_STRUCT.halt.size, 'HALT');
  m.halt(exitStatus(s.getBigInt64(HC_STRUCT.halt.status, true)));
  return Next.Halt;
});

