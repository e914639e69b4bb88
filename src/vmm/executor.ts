// The executor: runs the vCPUs of its VMs on one thread. Runnable VMs take
// turns in KVM_RUN; a VM waiting in POLL is parked in a deadline heap and
// holds no thread; when nothing is runnable the thread sleeps in epoll_wait
// until the earliest deadline or a message from its host. A VM that runs
// past its slice while others wait is interrupted by a thread-directed
// timer signal; the host interrupts the thread the same way (a "kick").
import { Kvm } from '../kvm/kvm.js';
import * as libc from '../sys/libc.js';
import { POLL_CONTROL } from './abi.js';
import { DeadlineHeap, type HeapItem } from './deadline-heap.js';
import type { VmExit } from './exit.js';
import { ImageCache } from './image-cache.js';
import { Machine, monotonicNs, Outcome } from './machine.js';
import {
  CONTROL_IN_GUEST, CONTROL_PENDING, KICK_SIGNAL, serializeError,
  type CreateRequest, type ExecutorEvent, type ExecutorRequest, type Timings,
} from './protocol.js';

/** How long a VM may hold the executor while others are runnable. */
export const SLICE_NS = 10_000_000;
const MAX_SLEEP_NS = 1_000_000_000;

interface Entry extends HeapItem {
  vmId: number;
  machine: Machine;
  timings: Timings;
  paused: boolean;
  queued: boolean;
  /** Woken (deadline passed) while paused: runnable on unpause. */
  wokeWhilePaused: boolean;
  bootReported: boolean;
  countInstructions: boolean;
  cpuNs: number;
}

export interface ExecutorPort {
  receive(): ExecutorRequest | undefined;
  send(ev: ExecutorEvent): void;
}

export class Executor {
  private readonly kvm: Kvm;
  private readonly images = new ImageCache();
  private readonly vms = new Map<number, Entry>();
  private runQueue: Entry[] = [];
  private readonly parked = new DeadlineHeap<Entry>();
  private readonly pool = new Map<number, Machine[]>();
  private readonly poolTarget = new Map<number, number>();
  private readonly epfd: number;
  private readonly events = new Uint8Array(libc.EPOLL_EVENT_SIZE * 16);
  private readonly kickSet = libc.sigset(KICK_SIGNAL);
  private readonly timer: bigint;
  private timerArmed = false;
  private stopping = false;

  /**
   * wakeFd is an eventfd owned by the host: it signals it after posting a
   * request, and closes it only after this executor has stopped.
   */
  constructor(private readonly port: ExecutorPort, private readonly control: Int32Array, private readonly wakeFd: number) {
    // The kick signal is blocked on this thread except inside KVM_RUN (see
    // Machine: vCPU signal mask), so it can never be lost between a check
    // and the entry; it is ignored process-wide, so it never runs a handler.
    libc.ignoreSignal(KICK_SIGNAL);
    libc.blockSignals(this.kickSet);
    this.kvm = Kvm.open();
    this.epfd = libc.epollCreate();
    libc.epollCtl(this.epfd, libc.EPOLL_CTL_ADD, this.wakeFd, libc.EPOLLIN, 0);
    this.timer = libc.threadTimerCreate(KICK_SIGNAL);
  }

  /** Runs until asked to stop. */
  loop(): void {
    while (!this.stopping) {
      if (Atomics.load(this.control, CONTROL_PENDING) !== 0) {
        Atomics.store(this.control, CONTROL_PENDING, 0);
        this.drainRequests();
        continue;
      }
      this.wakeExpired(monotonicNs());
      const next = this.runQueue.shift();
      if (next) {
        this.runSlice(next);
        continue;
      }
      if (this.refillOne()) continue;
      this.sleep();
    }
    this.shutdown();
  }

  private drainRequests(): void {
    for (let req = this.port.receive(); req; req = this.port.receive()) this.handle(req);
  }

  private handle(req: ExecutorRequest): void {
    switch (req.op) {
      case 'create':
        this.create(req);
        break;
      case 'destroy': {
        const e = this.vms.get(req.vmId);
        if (e) this.end(e, { kind: 'destroyed' });
        break;
      }
      case 'pause': {
        const e = this.vms.get(req.vmId);
        if (e && !e.paused) e.paused = true;
        this.port.send({ ev: 'paused', vmId: req.vmId, ok: e !== undefined });
        break;
      }
      case 'unpause': {
        const e = this.vms.get(req.vmId);
        if (e?.paused) {
          e.paused = false;
          if (e.wokeWhilePaused || (e.heapIndex < 0 && !e.queued)) {
            e.wokeWhilePaused = false;
            this.enqueue(e);
          }
        }
        this.port.send({ ev: 'unpaused', vmId: req.vmId, ok: e !== undefined });
        break;
      }
      case 'shutdown': {
        const e = this.vms.get(req.vmId);
        if (!e) break;
        e.machine.requestShutdown();
        if (e.heapIndex >= 0) {
          // Parked in POLL: end the wait now so the guest sees the request.
          this.parked.remove(e);
          e.machine.wake(POLL_CONTROL);
          if (e.paused) e.wokeWhilePaused = true;
          else this.enqueue(e);
        }
        break;
      }
      case 'pool':
        this.poolTarget.set(req.memory, req.target);
        this.trimPool(req.memory);
        this.port.send({ ev: 'pool', memory: req.memory, depth: this.pool.get(req.memory)?.length ?? 0 });
        break;
      case 'stats':
        this.port.send({
          ev: 'stats', requestId: req.requestId,
          vms: [...this.vms.values()].map((e) => ({
            vmId: e.vmId, cpuNs: e.cpuNs, exits: e.machine.exitCount,
            residentKiB: (e.machine.ram.residentBytes() + e.machine.devicePage.memory.residentBytes()) / 1024,
          })),
        });
        break;
      case 'stop':
        this.stopping = true;
        break;
    }
  }

  private create(req: CreateRequest): void {
    const timings: Timings = { trace: req.trace, requestNs: monotonicNs(), shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 };
    let machine: Machine | undefined;
    let warm: boolean;
    try {
      if (this.vms.has(req.vmId)) throw new Error(`VM id ${req.vmId} already exists on this executor`);
      const image = this.images.get(req.image);
      const shells = req.warm ? this.pool.get(req.memory) : undefined;
      machine = shells?.pop();
      warm = machine !== undefined;
      if (warm) this.port.send({ ev: 'pool', memory: req.memory, depth: shells!.length });
      machine ??= new Machine(this.kvm, req.memory);
      timings.shellNs = monotonicNs();
      machine.load(image, { vmId: req.vmId, name: req.name, cmdline: req.cmdline, devices: req.devices });
      if (req.countInstructions) machine.countInstructions();
      timings.loadedNs = monotonicNs();
    } catch (err) {
      machine?.close();
      this.port.send({ ev: 'create-failed', vmId: req.vmId, error: serializeError(err) });
      return;
    }
    const vmId = req.vmId;
    machine.onConsole = (data) => this.port.send({ ev: 'console', vmId, data: data.slice() });
    const e: Entry = {
      vmId, machine, timings, deadlineNs: 0, heapIndex: -1, paused: false, queued: false,
      wokeWhilePaused: false, bootReported: false, countInstructions: req.countInstructions === true, cpuNs: 0,
    };
    this.vms.set(vmId, e);
    this.port.send({ ev: 'started', vmId, warm, timings });
    this.enqueue(e);
  }

  private enqueue(e: Entry): void {
    e.queued = true;
    this.runQueue.push(e);
  }

  private runSlice(e: Entry): void {
    e.queued = false;
    if (e.paused || !this.vms.has(e.vmId)) return;
    const others = this.runQueue.length > 0;
    if (others !== this.timerArmed) {
      libc.threadTimerSet(this.timer, others ? SLICE_NS : 0);
      this.timerArmed = others;
    }
    Atomics.store(this.control, CONTROL_IN_GUEST, 1);
    const t0 = monotonicNs();
    const outcome = e.machine.run(this.control);
    e.cpuNs += monotonicNs() - t0;
    Atomics.store(this.control, CONTROL_IN_GUEST, 0);
    const m = e.machine;
    if (!e.bootReported && m.firstHypercallNs !== 0) {
      e.bootReported = true;
      e.timings.bootNs = m.firstHypercallNs;
      if (outcome !== Outcome.Ended) {
        this.port.send({ ev: 'booted', vmId: e.vmId, bootNs: m.firstHypercallNs, instructions: e.countInstructions ? m.instructionCount : undefined });
      }
    }
    switch (outcome) {
      case Outcome.Interrupted:
        // Take the kick (or slice timer) signal that interrupted KVM_RUN.
        while (libc.takePendingSignal(this.kickSet) !== 0);
        this.enqueue(e);
        break;
      case Outcome.Parked:
        e.deadlineNs = m.deadlineNs;
        this.parked.push(e);
        break;
      case Outcome.Ended:
        this.end(e, m.exit ?? { kind: 'crash', code: 'internal-error', reason: 'ended without a stated reason' });
        break;
    }
  }

  private wakeExpired(now: number): void {
    for (let top = this.parked.peek(); top && top.deadlineNs <= now; top = this.parked.peek()) {
      this.parked.pop();
      top.machine.wake(0n);
      if (top.paused) top.wokeWhilePaused = true;
      else this.enqueue(top);
    }
  }

  /** Ends a VM: frees everything it held, then reports how it ended. */
  private end(e: Entry, exit: VmExit): void {
    e.timings.endNs = monotonicNs();
    this.parked.remove(e);
    this.vms.delete(e.vmId);
    if (e.queued) this.runQueue = this.runQueue.filter((x) => x !== e);
    e.machine.close();
    e.timings.destroyedNs = monotonicNs();
    this.port.send({
      ev: 'exit', vmId: e.vmId, exit, timings: e.timings, exits: e.machine.exitCount,
      instructions: e.countInstructions ? e.machine.instructionCount : undefined,
    });
  }

  /** Prepares one shell if a pool is short; true if it did work. */
  private refillOne(): boolean {
    for (const [memory, target] of this.poolTarget) {
      const shells = this.pool.get(memory) ?? [];
      if (shells.length >= target) continue;
      try {
        shells.push(new Machine(this.kvm, memory));
      } catch (err) {
        this.poolTarget.set(memory, 0);
        this.port.send({ ev: 'fatal', error: serializeError(err) });
        return false;
      }
      this.pool.set(memory, shells);
      this.port.send({ ev: 'pool', memory, depth: shells.length });
      return true;
    }
    return false;
  }

  private trimPool(memory: number): void {
    const shells = this.pool.get(memory) ?? [];
    const target = this.poolTarget.get(memory) ?? 0;
    while (shells.length > target) shells.pop()!.close();
  }

  private sleep(): void {
    const top = this.parked.peek();
    // Bounded, so that the thread returns to JavaScript now and then and
    // can be terminated even if its host vanished without a word.
    const timeout = Math.min(top ? Math.max(0, top.deadlineNs - monotonicNs()) : MAX_SLEEP_NS, MAX_SLEEP_NS);
    if (this.timerArmed) {
      libc.threadTimerSet(this.timer, 0);
      this.timerArmed = false;
    }
    const n = libc.epollWait(this.epfd, this.events, timeout);
    if (n > 0) libc.eventfdDrain(this.wakeFd);
  }

  private shutdown(): void {
    for (const e of [...this.vms.values()]) this.end(e, { kind: 'destroyed' });
    for (const memory of this.pool.keys()) {
      this.poolTarget.set(memory, 0);
      this.trimPool(memory);
    }
    libc.threadTimerDelete(this.timer);
    libc.close(this.epfd);
    this.kvm.close();
    this.port.send({ ev: 'stopped' });
  }
}
