// The core module every VM has: WALLTIME, CONSOLE_WRITE, POLL and HALT.
// POLL parks the VM (it then holds no thread) until its deadline or until
// a device of another module is ready; this module keeps where the guest's
// POLL struct is, so that a wake-up writes the ready set into it.
import { CONSOLE_WRITE_MAX, HC, HC_STRUCT, POLL_CONTROL } from '../abi.js';
import { Next, type DeviceModule, type VmContext } from '../devices.js';
import { exitStatus, GuestFault, type ExitStatus } from '../exit.js';

export interface CoreHooks {
  /** Hands console output on; how long (ns) the guest must now wait for its console's rate, or 0. */
  console(data: Uint8Array): number;
  halt(status: ExitStatus): void;
  /** The host asked the guest to end (the device page's flag). */
  shutdownRequested(): boolean;
}

/** Wall-clock nanoseconds; µs precision is what the host clock gives here. */
function wallNs(): bigint {
  return BigInt(Math.round((performance.timeOrigin + performance.now()) * 1000)) * 1000n;
}

/** Timeouts above a year are a year: still "forever" for the guest, but finite for the heap. */
const MAX_TIMEOUT_NS = 31_536_000_000_000_000n;

export class CoreModule implements DeviceModule {
  readonly name = 'core';
  /** GPA of the struct of the POLL the guest waits in. */
  pollArg = 0;
  /** Monotonic ns at which that POLL times out (or the console's wait ends). */
  deadlineNs = 0;
  /** Parked by its console's rate, not in a POLL: a wake writes no ready set. */
  holding = false;
  /** What the hold interrupted (a device's queue served in part): run before the guest resumes. */
  private afterHold: (() => number) | undefined;

  constructor(private readonly vm: VmContext, hooks: CoreHooks, private readonly now: () => number) {
    const g = vm.guest;
    const bus = vm.bus;
    bus.hypercall(HC.WALLTIME, this.name, (arg) => {
      g.argStruct(arg, HC_STRUCT.walltime.size, 'WALLTIME').setBigUint64(HC_STRUCT.walltime.nsecs, wallNs(), true);
      return Next.Resume;
    });
    bus.hypercall(HC.CONSOLE_WRITE, this.name, (arg) => {
      const s = g.argStruct(arg, HC_STRUCT.consoleWrite.size, 'CONSOLE_WRITE');
      const data = s.getBigUint64(HC_STRUCT.consoleWrite.data, true);
      const len = s.getBigUint64(HC_STRUCT.consoleWrite.len, true);
      if (len > BigInt(CONSOLE_WRITE_MAX)) {
        throw new GuestFault('bad-hypercall', `CONSOLE_WRITE length ${len} exceeds the limit of ${CONSOLE_WRITE_MAX} bytes`);
      }
      // Past its console's rate, the guest waits (parked) until it is back under it.
      return this.hold(hooks.console(g.bytes(data, Number(len), 'CONSOLE_WRITE buffer')));
    });
    bus.hypercall(HC.POLL, this.name, (arg) => {
      const s = g.argStruct(arg, HC_STRUCT.poll.size, 'POLL');
      const timeout = s.getBigUint64(HC_STRUCT.poll.timeoutNsecs, true);
      if (hooks.shutdownRequested()) {
        s.setBigUint64(HC_STRUCT.poll.readySet, POLL_CONTROL, true);
        return Next.Resume;
      }
      const ready = bus.ready();
      s.setBigUint64(HC_STRUCT.poll.readySet, ready, true);
      if (timeout === 0n || ready !== 0n) return Next.Resume;
      this.holding = false;
      this.pollArg = arg;
      this.deadlineNs = this.now() + Number(timeout > MAX_TIMEOUT_NS ? MAX_TIMEOUT_NS : timeout);
      return Next.Park;
    });
    bus.hypercall(HC.HALT, this.name, (arg) => {
      hooks.halt(exitStatus(g.argStruct(arg, HC_STRUCT.halt.size, 'HALT').getBigInt64(HC_STRUCT.halt.status, true)));
      return Next.Halt;
    });
  }

  /**
   * The guest waits waitNs (parked, not in a POLL) for its console's rate;
   * then, before it resumes, then() serves what the wait held back and says
   * how long to wait again. 0 or less: no wait.
   */
  hold(waitNs: number, then?: () => number): Next {
    if (waitNs <= 0) return Next.Resume;
    this.holding = true;
    this.deadlineNs = this.now() + waitNs;
    this.afterHold = then;
    return Next.Park;
  }

  /** Runs what a hold interrupted; Next.Park if that holds the guest again. */
  resumeHeld(): Next {
    const then = this.afterHold;
    this.afterHold = undefined;
    return then ? this.hold(then(), then) : Next.Resume;
  }

  /** Ends a POLL: writes which devices are ready into the guest's struct. */
  wake(readySet: bigint): void {
    // Held for its console's rate, it waits in no POLL: nothing to answer.
    if (!this.holding) this.vm.guest.ram.setBigUint64(this.pollArg + HC_STRUCT.poll.readySet, readySet);
    this.holding = false;
    this.deadlineNs = 0;
  }

  /** A restored VM waits in the POLL it was saved in, for the time it had left. */
  parkAgain(arg: number, remainingNs: number): void {
    this.pollArg = arg;
    this.deadlineNs = this.now() + remainingNs;
  }

  close(): void {}
}
