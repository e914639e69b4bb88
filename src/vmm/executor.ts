// The executor: runs the vCPUs of its VMs on one thread. Runnable VMs take
// turns in KVM_RUN; a VM waiting in POLL is parked in a deadline heap and
// holds no thread; when nothing is runnable the thread sleeps in epoll_wait
// until the earliest deadline or a message from its host. A VM that runs
// past its slice while others wait is interrupted by a thread-directed
// timer signal; the host interrupts the thread the same way (a "kick").
import { Kvm } from '../kvm/kvm.js';
import { GuestArenas } from '../kvm/memory.js';
import type { Rtnetlink } from '../sys/netlink.js';
import * as libc from '../sys/libc.js';
import type { VmExit } from './exit.js';
import { ImageCache } from './image-cache.js';
import { stopLinuxVms, type LinuxEntry } from './linux-vms.js';
import { Machine, monotonicNs, Outcome } from './machine.js';
import type { NetDevice } from './net.js';
import { Pools } from './pools.js';
import {
  CONTROL_IN_GUEST, CONTROL_PENDING, KICK_SIGNAL,
  type AdoptedVm, type CreateRequest, type FailedRestore, type ProcessEvent, type ProcessRequest, type Timings,
} from './protocol.js';
import { carryOut } from './requests.js';
import { Scheduler } from './scheduler.js';
import { disarm, type Service } from './services.js';
import type { Snapshot } from './snapshot.js';
import { restoreStep, type Restoring } from './vm-creation.js';
import { appendHistory, netCounters, newEntry, type Entry } from './vm-entry.js';
import { isHeld, isWaiting, transition } from './vm-state.js';

/** How long a VM may hold the executor while others are runnable. */
export const SLICE_NS = 10_000_000;
/** Longest a new VM runs before the toolstack hears that it started. */
const ANNOUNCE_NS = 1_000_000;
/**
 * Longest sleep: the thread returns to JavaScript now and then, so that a
 * process exiting without stopping it waits at most this long for it. An
 * executor process (which stops its thread itself) sleeps far longer:
 * thousands of idle VMs over dozens of executors must cost no CPU.
 */
const MAX_SLEEP_NS = 1_000_000_000;
const MAX_SLEEP_PROCESS_NS = 60_000_000_000;
/** Background work waits until no request has come for this long. */
const QUIET_NS = 2_000_000;
/** Ended VMs waiting to be freed before the executor frees them at once. */
const MAX_DYING = 64;
/** Shortest timer the executor arms: below this, signals cost more than lateness. */
const MIN_TIMER_NS = 50_000;

/** How an executor talks to its toolstack. */
export interface ExecutorPort {
  /** The next request posted through shared memory (threads), if any. */
  receive(): ProcessRequest | undefined;
  send(ev: ProcessEvent): void;
  /** Hold what is sent until uncork(), then send it together (where that saves wake-ups). */
  cork?(): void;
  uncork?(): void;
  /** Send what is held now, and go on holding. */
  flushCorked?(): void;
}

export interface ExecutorOptions {
  /** Keep console history and ended VMs' records until told to forget them
   *  (an executor process, whose toolstack may restart). */
  keepRecords?: boolean;
  id?: number;
  /**
   * Longest one turn() may take (a slice in a guest, or a sleep): an
   * executor on a thread that also runs an event loop returns to it this
   * often (see InlineExecutor).
   */
  turnNs?: number;
  /**
   * Carve guest memory from the two arenas (default). Without them each VM
   * maps its own: cheaper for a process that runs one VM, since making the
   * 4 GiB arena's view costs a full V8 collection (external memory
   * pressure: 7-37 ms measured here).
   */
  arenas?: boolean;
}

type FdHandler = (events: number) => void;

/**
 * Its members without `private` are shared with the files of its concerns
 * (requests.ts, vm-creation.ts, migration.ts, services.ts, scheduler.ts, vm-devices.ts,
 * linux-vms.ts), which take the executor as their first argument.
 */
export class Executor {
  readonly kvm: Kvm;
  /** Where its VMs' RAM and device pages come from, shared with its preparer. */
  private readonly arenas: GuestArenas | undefined;
  readonly images = new ImageCache();
  readonly vms = new Map<number, Entry>();
  readonly linuxVms = new Map<number, LinuxEntry>();
  /** Restores reading their files, a chunk per turn (see restoreStep). */
  restoring: Restoring[] = [];
  private restoreTurn = false;
  /** 'started' events not yet sent: see start(). */
  private unannounced: ProcessEvent[] = [];
  /** Its VMs' turns: the run queue, the VMs parked in POLL, the slice timer. */
  readonly scheduler: Scheduler;
  /** Prepared shells, from a preparer thread that runs only while a pool target is set. */
  readonly pools: Pools;
  private readonly epfd: number;
  private readonly events = new Uint8Array(libc.EPOLL_EVENT_SIZE * 16);
  private readonly kickSet = libc.sigset(KICK_SIGNAL);
  private stopping = false;
  port: ExecutorPort = { receive: () => undefined, send: () => {} };
  private readonly watches = new Map<number, FdHandler>();
  readonly ended = new Map<number, AdoptedVm>();
  /**
   * Restores from a file that failed after their request was taken, kept
   * (like ended VMs) until the toolstack forgets them: one that failed while
   * no toolstack was connected is still said in the next one's hello.
   */
  readonly failedRestores = new Map<number, FailedRestore>();
  /** Ended VMs not yet freed. */
  private readonly dying: { e: Entry; exit: VmExit }[] = [];
  private lastRequestNs = 0;
  /** Set after a slice: background work may take one step before the next guest. */
  private backgroundTurn = false;
  /** When epoll last returned: the start of a request's handling here. */
  wokeNs = 0;
  nl: Rtnetlink | undefined;
  readonly services = new Map<number, Service>();
  readonly keepRecords: boolean;
  private readonly turnNs: number;
  readonly id: number;

  /**
   * wakeFd is an eventfd owned by the host: it signals it after posting a
   * request, and closes it only after this executor has stopped.
   */
  constructor(private readonly control: Int32Array, private readonly wakeFd: number, options: ExecutorOptions = {}) {
    this.keepRecords = options.keepRecords ?? false;
    this.turnNs = options.turnNs ?? Infinity;
    this.id = options.id ?? 0;
    // The kick signal is blocked on this thread except inside KVM_RUN (see
    // Machine: vCPU signal mask), so it can never be lost between a check
    // and the entry; it is ignored process-wide, so it never runs a handler.
    libc.ignoreSignal(KICK_SIGNAL);
    libc.blockSignals(this.kickSet);
    this.kvm = Kvm.open();
    // 4 GiB of address space: a host with strict overcommit may refuse it,
    // and then each VM maps its own memory (slower at scale, but it works).
    try {
      this.arenas = options.arenas === false ? undefined : GuestArenas.create();
    } catch {
      this.arenas = undefined;
    }
    this.epfd = libc.epollCreate();
    this.watch(this.wakeFd, libc.EPOLLIN, () => libc.eventfdDrain(this.wakeFd));
    this.scheduler = new Scheduler((e, exit) => this.end(e, exit));
    this.pools = new Pools(this.kvm, this.wakeFd, this.arenas, (ev) => this.emit(ev));
  }

  setPort(port: ExecutorPort): void {
    this.port = port;
  }

  /** Wakes this thread when fd is ready; handler runs on this thread. */
  watch(fd: number, events: number, handler: FdHandler): void {
    libc.epollCtl(this.epfd, this.watches.has(fd) ? libc.EPOLL_CTL_MOD : libc.EPOLL_CTL_ADD, fd, events, fd);
    this.watches.set(fd, handler);
  }

  unwatch(fd: number): void {
    if (!this.watches.delete(fd)) return;
    try {
      libc.epollCtl(this.epfd, libc.EPOLL_CTL_DEL, fd, 0, 0);
    } catch {
      // Already closed: the kernel dropped it from the set.
    }
  }

  /** Takes kick signals that arrived while no guest ran (they would cut the next KVM_RUN short). */
  dropPendingKicks(): void {
    while (libc.takePendingSignal(this.kickSet) !== 0);
  }

  /** Runs until asked to stop. */
  loop(): void {
    while (!this.stopping) this.turn();
    this.shutdown();
  }

  /**
   * One step of the loop: the pending requests, or one step of background
   * work, or one guest's slice, or a sleep until a deadline, a ready fd or
   * a request.
   */
  turn(): void {
    if (Atomics.load(this.control, CONTROL_PENDING) !== 0) {
      Atomics.store(this.control, CONTROL_PENDING, 0);
      this.drainRequests();
      return;
    }
    this.scheduler.wakeExpired(monotonicNs());
    // Background work (freeing ended VMs) goes one step at a time: when no
    // guest is runnable, or as one turn among busy guests after a slice,
    // never ahead of a request.
    if ((this.scheduler.runnable === 0 || this.backgroundTurn) && this.hasBackgroundWork() && this.quiet()) {
      this.backgroundTurn = false;
      this.poll(0);
      if (Atomics.load(this.control, CONTROL_PENDING) !== 0) return;
      this.reapOne();
      return;
    }
    // A restore reading its file takes turns with the runnable guests: a chunk, a slice, a chunk.
    // Its fds are served first: with no guest runnable nothing else polls them, and a request would wait for the whole file.
    if (this.restoring.length > 0 && (this.scheduler.runnable === 0 || this.restoreTurn)) {
      this.restoreTurn = false;
      this.poll(0);
      if (Atomics.load(this.control, CONTROL_PENDING) !== 0) return;
      restoreStep(this);
      return;
    }
    const next = this.scheduler.next();
    if (next) {
      this.runSlice(next);
      this.restoreTurn = true;
      return;
    }
    this.sleep();
  }

  /** True while it holds a VM, a service or an ended VM not yet freed, or has a request to read. */
  get busy(): boolean {
    return this.vms.size > 0 || this.linuxVms.size > 0 || this.services.size > 0 || this.restoring.length > 0 || this.hasBackgroundWork() || Atomics.load(this.control, CONTROL_PENDING) !== 0;
  }

  private drainRequests(): void {
    for (let req = this.port.receive(); req; req = this.port.receive()) this.handle(req);
  }

  /** Carries out one request from the toolstack (requests.ts). */
  handle(req: ProcessRequest): void {
    this.lastRequestNs = monotonicNs();
    carryOut(this, req);
  }

  /** Asked to stop: the loop ends after this turn. */
  requestStop(): void {
    this.stopping = true;
  }

  /** A frame reached one of a VM's taps: a VM parked in POLL wakes. */
  frameArrived(e: Entry, dev: NetDevice): void {
    dev.pending = true;
    this.deviceReady(e);
  }

  /** A device of e is ready: if it waits in POLL, it wakes with the ready set. */
  deviceReady(e: Entry): void {
    if (isWaiting(e) && this.vms.get(e.vmId) === e) this.scheduler.wakeUp(e, e.machine.readySet());
  }

  /** Why a request about vmId finds no VM it can serve here. */
  missing(vmId: number, what: string): string {
    return this.linuxVms.has(vmId) ? `VM ${vmId} is a Linux VM: ${what} of a Linux VM is not supported yet` : `no VM ${vmId} on this executor`;
  }

  /** A prepared shell of this size if one is wanted and ready (warm), else a new one. */
  shell(memory: number, wantPrepared: boolean): { machine: Machine; warm: boolean } {
    const prepared = wantPrepared ? this.pools.take(memory) : undefined;
    if (prepared) return { machine: prepared, warm: true };
    return { machine: new Machine(this.kvm, memory, undefined, this.arenas), warm: false };
  }

  /** Sends the 'started' events held back. */
  private announce(): void {
    if (this.unannounced.length === 0) return;
    const evs = this.unannounced;
    this.unannounced = [];
    for (const ev of evs) this.port.send(ev);
  }

  /** Sends an event; whatever the toolstack hears of a VM comes after its start. */
  emit(ev: ProcessEvent): void {
    this.announce();
    this.port.send(ev);
  }

  /** Takes a loaded machine in: it runs from now on (or waits, parked or paused, as restored). */
  start(req: CreateRequest, machine: Machine, timings: Timings, warm: boolean, restored?: Snapshot): Entry {
    const vmId = req.vmId;
    const e = newEntry(req, machine, timings, warm);
    // The boot marker is news at once: the guest may run on for a while.
    machine.onBoot = () => {
      e.timings.bootNs = machine.firstHypercallNs;
      this.emit({
        ev: 'booted', vmId, bootNs: machine.firstHypercallNs,
        instructions: e.countInstructions ? machine.instructionCount : undefined,
      });
      this.port.flushCorked?.();
    };
    machine.onConsole = (data) => {
      if (this.keepRecords) e.console = appendHistory(e.console, data);
      this.emit({ ev: 'console', vmId, data: data.slice() });
    };
    machine.consoleWait = (bytes) => e.consoleRate.spend(bytes, monotonicNs());
    this.vms.set(vmId, e);
    // The fds its modules watch (a service's taps keep their own watch: they outlive the VM).
    for (const w of machine.bus.watches) {
      this.watch(w.fd, w.events, () => {
        if (w.onReady()) this.deviceReady(e);
      });
    }
    const paused = restored?.header.paused === true;
    this.unannounced.push({ ev: 'started', vmId, warm, timings, paused, memory: machine.memSize });
    // A new VM is announced after its first entry (or at its first event,
    // its boot marker within a few hundred instructions): a write wakes the
    // toolstack, and here that costs the boot ~0.05 ms. A restored VM is
    // announced at once: it may compute for a whole slice before it exits.
    if (restored) this.announce();
    if (restored?.header.parked) this.scheduler.parkRestored(e);
    else this.scheduler.makeRunnable(e);
    if (paused) this.scheduler.hold(e, 'paused');
    return e;
  }

  private runSlice(e: Entry): void {
    transition(e, 'running');
    // Bound the time in the guest while others wait: runnable VMs for their
    // turn, parked VMs for their deadline, an inline executor its event loop
    // (turnNs). Nothing waits: no timer at all.
    let until = Math.min(this.scheduler.runnable > 0 || this.hasBackgroundWork() ? SLICE_NS : Infinity, this.turnNs);
    // A guest that never exits still gets announced, soon.
    if (this.unannounced.length) until = Math.min(until, ANNOUNCE_NS);
    const top = this.scheduler.earliest();
    if (top) until = Math.min(until, Math.max(MIN_TIMER_NS, top.deadlineNs - monotonicNs()));
    this.scheduler.armTimer(until);
    Atomics.store(this.control, CONTROL_IN_GUEST, 1);
    // What the guest says in this slice (console lines, its end) goes out in
    // one write at its end; only the boot marker goes at once (onBoot).
    this.port.cork?.();
    try {
      const t0 = monotonicNs();
      const outcome = e.machine.run(this.control);
      e.cpuNs += monotonicNs() - t0;
      this.announce();
      Atomics.store(this.control, CONTROL_IN_GUEST, 0);
      const m = e.machine;
      switch (outcome) {
        case Outcome.Interrupted:
          // Take the kick (or timer) signal that interrupted KVM_RUN, then
          // serve whatever woke us: a request on a socket, a deadline.
          this.dropPendingKicks();
          // VMs whose deadline passed during this slice queued up before
          // its end: they go first (a guest spinning alone was stopped for
          // them, and must not take another whole slice ahead of them).
          this.scheduler.wakeExpired(monotonicNs());
          this.scheduler.makeRunnable(e);
          this.backgroundTurn = true;
          this.poll(0);
          break;
        case Outcome.Parked:
          this.scheduler.park(e);
          break;
        case Outcome.Ended:
          this.end(e, m.exit ?? { kind: 'crash', code: 'internal-error', reason: 'ended without a stated reason' });
          break;
      }
    } finally {
      this.port.uncork?.();
    }
  }

  /** Ends a VM: frees everything it held, then reports how it ended. */
  /**
   * Ends a VM: it never runs again from here on. Freeing its KVM objects and
   * memory (hundreds of µs, mostly in the kernel) waits until the executor
   * has nothing better to do, so a destroy never delays a request.
   */
  end(e: Entry, exit: VmExit): void {
    e.timings.endNs = monotonicNs();
    for (const w of e.machine.bus.watches) this.unwatch(w.fd);
    if (e.serviceId !== undefined) {
      const svc = this.services.get(e.serviceId);
      if (svc?.vmId === e.vmId) svc.vmId = undefined;
    }
    this.scheduler.remove(e);
    this.vms.delete(e.vmId);
    transition(e, 'ended');
    this.dying.push({ e, exit });
    if (this.keepRecords) this.ended.set(e.vmId, { ...this.record(e), state: 'exited', exit });
    this.emit({
      ev: 'exit', vmId: e.vmId, exit, timings: e.timings, exits: e.machine.exitCount,
      instructions: e.countInstructions ? e.machine.instructionCount : undefined,
      nets: netCounters(e.machine),
    });
    if (this.dying.length > MAX_DYING) this.reapOne();
  }

  /** Frees one ended VM and reports its end; false if none is waiting. */
  private reapOne(): boolean {
    const d = this.dying.shift();
    if (!d) return false;
    const { e } = d;
    e.timings.destroyNs = monotonicNs();
    e.machine.close();
    e.timings.destroyedNs = monotonicNs();
    this.emit({ ev: 'freed', vmId: e.vmId, destroyNs: e.timings.destroyNs, destroyedNs: e.timings.destroyedNs });
    return true;
  }

  /**
   * True once no request has come for QUIET_NS (or too many ended VMs wait
   * to be freed): background work must not land between the requests of a
   * burst.
   */
  private quiet(): boolean {
    return monotonicNs() - this.lastRequestNs >= QUIET_NS || this.dying.length > MAX_DYING / 2;
  }

  private hasBackgroundWork(): boolean {
    return this.dying.length > 0;
  }

  record(e: Entry): AdoptedVm {
    return {
      config: e.config, state: isHeld(e) ? 'paused' : 'running', migrationPaused: e.state === 'migrating' || undefined, warm: e.warm, timings: e.timings,
      exit: undefined, console: e.console,
    };
  }

  private sleep(): void {
    this.announce();
    this.pools.tend();
    const top = this.scheduler.earliest();
    // Bounded, so that the thread returns to JavaScript now and then and
    // can be terminated even if its host vanished without a word.
    const now = monotonicNs();
    const cap = this.keepRecords ? MAX_SLEEP_PROCESS_NS : MAX_SLEEP_NS;
    let timeout = Math.min(top ? Math.max(0, top.deadlineNs - now) : cap, cap, this.turnNs);
    // Pool sizes that failed are asked for again, a dead preparer replaced, in time.
    timeout = Math.min(timeout, this.pools.dueNs(now) - now);
    // Background work waits for the quiet period to end.
    if (this.hasBackgroundWork()) timeout = Math.min(timeout, Math.max(0, this.lastRequestNs + QUIET_NS - now));
    this.scheduler.armTimer(Infinity);
    this.poll(timeout);
  }

  /** Waits up to timeoutNs for ready fds and runs their handlers; returns how many were ready. */
  private poll(timeoutNs: number): number {
    const n = libc.epollWait(this.epfd, this.events, timeoutNs);
    this.wokeNs = monotonicNs();
    const v = new DataView(this.events.buffer);
    for (let i = 0; i < n; i++) {
      const o = i * libc.EPOLL_EVENT_SIZE;
      const fd = Number(v.getBigUint64(o + 4, true));
      this.watches.get(fd)?.(v.getUint32(o, true));
    }
    return n;
  }

  private shutdown(): void {
    for (const r of this.restoring.splice(0)) {
      r.reader.close();
      r.machine.close();
    }
    for (const id of [...this.services.keys()]) disarm(this, id);
    for (const e of [...this.vms.values()]) this.end(e, { kind: 'destroyed' });
    while (this.reapOne());
    stopLinuxVms(this);
    const preparerGone = this.pools.stop();
    this.scheduler.close();
    this.emit({ ev: 'stopped' });
    this.onStop?.();
    libc.close(this.epfd);
    this.kvm.close();
    // A preparer that never said it stopped may still write into the arenas.
    if (preparerGone) this.arenas?.close();
  }

  /** Runs once the executor has stopped, before its epoll set is closed. */
  onStop: (() => void) | undefined;
}
