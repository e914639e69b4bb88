// An executor's turns: the run queue of runnable VMs, the deadline heap of
// the VMs parked in POLL, and the thread-directed timer that ends a slice.
// The changes of a VM's state (vm-state.ts) that move it between them are
// here, one function each.
import * as libc from '../sys/libc.js';
import { DeadlineHeap } from './deadline-heap.js';
import type { VmExit } from './exit.js';
import { KICK_SIGNAL } from './protocol.js';
import { lastTraffic, type Entry } from './vm-entry.js';
import { isHeld, transition } from './vm-state.js';

export class Scheduler {
  private runQueue: Entry[] = [];
  private readonly parked = new DeadlineHeap<Entry>();
  private readonly timer = libc.threadTimerCreate(KICK_SIGNAL);
  private timerArmed = false;

  /** idleEnd: ends a just-in-time VM whose idle time passed without traffic. */
  constructor(private readonly idleEnd: (e: Entry, exit: VmExit) => void) {}

  /** How many VMs wait for a slice. */
  get runnable(): number {
    return this.runQueue.length;
  }

  /** The VM whose turn it is, out of the run queue. */
  next(): Entry | undefined {
    return this.runQueue.shift();
  }

  /** The parked VM with the earliest deadline. */
  earliest(): Entry | undefined {
    return this.parked.peek();
  }

  /** Into the run queue; a held VM goes there when let go. */
  makeRunnable(e: Entry): void {
    this.parked.remove(e);
    if (isHeld(e)) {
      e.resume = 'runnable';
      return;
    }
    transition(e, 'runnable');
    this.runQueue.push(e);
  }

  /** Waits in POLL until its deadline or a device is ready. */
  park(e: Entry): void {
    transition(e, 'parked');
    e.deadlineNs = e.machine.deadlineNs;
    if (e.idleNs !== undefined) e.deadlineNs = Math.min(e.deadlineNs, lastTraffic(e.machine) + e.idleNs);
    this.parked.push(e);
  }

  /** Ends a POLL wait: the guest finds readySet in its struct. */
  wakeUp(e: Entry, readySet: bigint): void {
    e.machine.wake(readySet);
    this.makeRunnable(e);
  }

  /** Paused (by the user) or migrating (a migration's last step): it stops running here. A parked VM's deadline goes on. */
  hold(e: Entry, as: 'paused' | 'migrating'): void {
    const was = e.state;
    transition(e, as);
    if (was === 'runnable') this.runQueue = this.runQueue.filter((x) => x !== e);
    e.resume = was === 'parked' ? 'parked' : 'runnable';
  }

  /** Lets a held VM go: back to the run queue, or to its POLL wait if that has not ended. */
  release(e: Entry): void {
    transition(e, e.resume);
    if (e.resume === 'runnable') this.runQueue.push(e);
  }

  /** Wakes the parked VMs whose deadline has passed (a just-in-time VM past its idle time ends). */
  wakeExpired(now: number): void {
    for (let top = this.parked.peek(); top && top.deadlineNs <= now; top = this.parked.peek()) {
      this.parked.pop();
      if (top.idleNs !== undefined && now < top.machine.deadlineNs) {
        // Its idle time, not the guest's: stop it if no frame came meanwhile.
        const idleEnd = lastTraffic(top.machine) + top.idleNs;
        if (now >= idleEnd) {
          this.idleEnd(top, { kind: 'idle', ms: Math.round(top.idleNs / 1e6) });
        } else {
          top.deadlineNs = Math.min(top.machine.deadlineNs, idleEnd);
          this.parked.push(top);
        }
        continue;
      }
      this.wakeUp(top, 0n);
    }
  }

  /** A restored VM that was waiting in POLL when saved waits on, until the deadline it restored with. */
  parkRestored(e: Entry): void {
    transition(e, 'parked');
    e.deadlineNs = e.machine.deadlineNs;
    this.parked.push(e);
  }

  /** An ending VM leaves the queue and the heap. */
  remove(e: Entry): void {
    this.parked.remove(e);
    if (e.state === 'runnable') this.runQueue = this.runQueue.filter((x) => x !== e);
  }

  /** Interrupts the next slice after ns (Infinity: no timer at all). */
  armTimer(ns: number): void {
    if (ns !== Infinity) {
      libc.threadTimerOnce(this.timer, ns);
      this.timerArmed = true;
    } else if (this.timerArmed) {
      libc.threadTimerSet(this.timer, 0);
      this.timerArmed = false;
    }
  }

  close(): void {
    libc.threadTimerDelete(this.timer);
  }
}
