// The library API: a Host runs VMs on executor threads in this process.
//   const host = await Host.start();
//   const vm = await host.create({ image: 'hello' });
//   const exit = await vm.exited; console.log(vm.consoleText());
//   await host.close();
import { EventEmitter } from 'node:events';
import { availableParallelism } from 'node:os';
import type { DeviceEntry } from '../vmm/device-page.js';
import { validateDevicePage } from '../vmm/device-page.js';
import type { VmExit } from '../vmm/exit.js';
import { ExecutorThread } from '../vmm/executor-thread.js';
import { MAX_MEMORY, MIN_MEMORY } from '../vmm/layout.js';
import type { ExecutorEvent, SerializedError, Timings } from '../vmm/protocol.js';
import { resolveImage } from './images.js';

export const DEFAULT_MEMORY_MIB = 4;
/** Console bytes kept per VM for consoleText(); older output is dropped. */
export const CONSOLE_KEEP = 1 << 20;

export interface HostOptions {
  /** Executor threads (default: one per core). */
  executors?: number;
}

export interface CreateOptions {
  /** ELF path, or the name of a built-in image ("hello", "noop", "daytime", test guests). */
  image: string;
  name?: string;
  memoryMiB?: number;
  cmdline?: string;
  devices?: DeviceEntry[];
  /** Use a prepared shell when one is ready (default true). */
  warm?: boolean;
  /** Count guest instructions from entry to the first hypercall (slow: single-steps). */
  countInstructions?: boolean;
}

/** A VM that could not be created; kind, field and file say what was wrong. */
export class VmCreateError extends Error {
  readonly kind: string;
  readonly field?: string;
  readonly file?: string;
  constructor(e: SerializedError) {
    super(e.message);
    this.name = 'VmCreateError';
    this.kind = e.name;
    this.field = e.field;
    this.file = e.file;
  }
}

export type VmState = 'running' | 'paused' | 'exited';

export interface VirtualMachineEvents {
  console: [Buffer];
  booted: [number];
  exit: [VmExit];
}

/** One VM, as seen by the library user. */
export class VirtualMachine extends EventEmitter<VirtualMachineEvents> {
  readonly id: number;
  readonly name: string;
  readonly image: string;
  readonly memoryMiB: number;
  state: VmState = 'running';
  /** Whether it started from a prepared shell. */
  warm = false;
  timings: Timings | undefined;
  exitCount = 0;
  instructions: number | undefined;
  /** Resolves with the monotonic ns of the first hypercall. */
  readonly booted: Promise<number>;
  /** Resolves when the VM has ended and everything it held is freed. */
  readonly exited: Promise<VmExit>;
  private resolveBooted!: (ns: number) => void;
  private resolveExited!: (e: VmExit) => void;
  private readonly consoleChunks: Buffer[] = [];
  private consoleBytes = 0;
  private readonly pending = new Map<'pause' | 'unpause', () => void>();

  constructor(
    private readonly host: Host,
    readonly executor: ExecutorThread,
    id: number, name: string, image: string, memoryMiB: number,
  ) {
    super();
    this.id = id;
    this.name = name;
    this.image = image;
    this.memoryMiB = memoryMiB;
    this.booted = new Promise((r) => (this.resolveBooted = r));
    this.exited = new Promise((r) => (this.resolveExited = r));
    // Nobody need listen for boot: do not turn it into an unhandled rejection.
    void this.booted.catch(() => {});
  }

  /** The console output kept so far (the last CONSOLE_KEEP bytes). */
  consoleText(): string {
    return Buffer.concat(this.consoleChunks).toString('utf8');
  }

  /** Ends the VM now; resolves once its resources are freed. */
  async destroy(): Promise<VmExit> {
    if (this.state !== 'exited') this.executor.send({ op: 'destroy', vmId: this.id });
    return this.exited;
  }

  async pause(): Promise<void> {
    if (this.state !== 'running') throw new Error(`VM ${this.name} is ${this.state}, not running`);
    await this.request('pause');
    if (this.state === 'running') this.state = 'paused';
  }

  async unpause(): Promise<void> {
    if (this.state !== 'paused') throw new Error(`VM ${this.name} is ${this.state}, not paused`);
    await this.request('unpause');
    if (this.state === 'paused') this.state = 'running';
  }

  private request(op: 'pause' | 'unpause'): Promise<void> {
    return new Promise((resolve) => {
      this.pending.set(op, resolve);
      this.executor.send({ op, vmId: this.id });
    });
  }

  /** @internal */
  handle(ev: ExecutorEvent): void {
    switch (ev.ev) {
      case 'console': {
        const b = Buffer.from(ev.data.buffer, ev.data.byteOffset, ev.data.byteLength);
        this.consoleChunks.push(b);
        this.consoleBytes += b.length;
        while (this.consoleBytes > CONSOLE_KEEP && this.consoleChunks.length > 1) {
          this.consoleBytes -= this.consoleChunks.shift()!.length;
        }
        this.emit('console', b);
        break;
      }
      case 'booted':
        this.instructions = ev.instructions;
        this.resolveBooted(ev.bootNs);
        this.emit('booted', ev.bootNs);
        break;
      case 'paused':
      case 'unpaused': {
        const op = ev.ev === 'paused' ? 'pause' : 'unpause';
        this.pending.get(op)?.();
        this.pending.delete(op);
        break;
      }
      case 'exit':
        this.state = 'exited';
        this.timings = ev.timings;
        this.exitCount = ev.exits;
        if (ev.instructions !== undefined) this.instructions = ev.instructions;
        if (ev.timings.bootNs) this.resolveBooted(ev.timings.bootNs);
        for (const done of this.pending.values()) done();
        this.pending.clear();
        this.resolveExited(ev.exit);
        this.emit('exit', ev.exit);
        break;
      default:
        break;
    }
  }

  /** @internal The executor died under this VM. */
  lost(reason: string): void {
    if (this.state === 'exited') return;
    this.handle({
      ev: 'exit', vmId: this.id, exits: this.exitCount,
      exit: { kind: 'crash', code: 'executor-lost', reason },
      timings: this.timings ?? { requestNs: 0, shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 },
    });
  }
}

interface PendingCreate {
  vm: VirtualMachine;
  resolve: (vm: VirtualMachine) => void;
  reject: (err: Error) => void;
}

export class Host {
  private readonly executors: ExecutorThread[];
  private readonly vms = new Map<number, VirtualMachine>();
  private readonly creating = new Map<number, PendingCreate>();
  private nextId = 1;
  private closed = false;

  private constructor(executors: ExecutorThread[]) {
    this.executors = executors;
    for (const ex of executors) {
      ex.setBusy(false);
      ex.on('event', (ev) => this.onEvent(ex, ev));
      ex.on('lost', (err) => this.onLost(ex, err));
    }
  }

  /** Starts the executor threads. Fails at once if /dev/kvm cannot be used. */
  static async start(options: HostOptions = {}): Promise<Host> {
    const n = options.executors ?? availableParallelism();
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new RangeError(`executors must be 1..64, got ${n}`);
    const started = await Promise.allSettled(Array.from({ length: n }, () => ExecutorThread.start()));
    const ok = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(ok.map((t) => t.stop()));
      throw (failed as PromiseRejectedResult).reason;
    }
    return new Host(ok);
  }

  /** Creates and starts a VM; resolves once it is loaded and running. */
  create(options: CreateOptions): Promise<VirtualMachine> {
    if (this.closed) return Promise.reject(new Error('host is closed'));
    const memoryMiB = options.memoryMiB ?? DEFAULT_MEMORY_MIB;
    if (!Number.isInteger(memoryMiB) || memoryMiB * 1048576 < MIN_MEMORY || memoryMiB * 1048576 > MAX_MEMORY) {
      return Promise.reject(new VmCreateError({
        name: 'RangeError', field: 'memory',
        message: `memory: ${memoryMiB} MiB is not a whole number from ${MIN_MEMORY / 1048576} to ${MAX_MEMORY / 1048576}`,
      }));
    }
    const id = this.nextId++;
    const name = options.name ?? `vm${id}`;
    const devices = options.devices ?? [];
    let image: string;
    try {
      validateDevicePage({ vmId: id, name, devices });
      image = resolveImage(options.image);
    } catch (err) {
      const e = err as Error & { field?: string };
      return Promise.reject(new VmCreateError({ name: e.name, message: e.message, field: e.field }));
    }
    const executor = this.pickExecutor();
    const vm = new VirtualMachine(this, executor, id, name, image, memoryMiB);
    return new Promise((resolve, reject) => {
      this.creating.set(id, { vm, resolve, reject });
      this.vms.set(id, vm);
      this.place(executor, +1);
      executor.send({
        op: 'create', vmId: id, name, image, memory: memoryMiB * 1048576,
        cmdline: options.cmdline ?? '', devices, warm: options.warm ?? true,
        countInstructions: options.countInstructions,
      });
    });
  }

  list(): VirtualMachine[] {
    return [...this.vms.values()];
  }

  get(idOrName: number | string): VirtualMachine | undefined {
    if (typeof idOrName === 'number') return this.vms.get(idOrName);
    for (const vm of this.vms.values()) if (vm.name === idOrName) return vm;
    return undefined;
  }

  /** Keeps `count` prepared shells of this memory size on every executor. */
  setPool(memoryMiB: number, countPerExecutor: number): void {
    for (const ex of this.executors) ex.send({ op: 'pool', memory: memoryMiB * 1048576, target: countPerExecutor });
  }

  get executorCount(): number {
    return this.executors.length;
  }

  /** Destroys every VM and stops the executors. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(this.executors.map((ex) => ex.stop()));
  }

  private pickExecutor(): ExecutorThread {
    let best = this.executors[0]!;
    for (const ex of this.executors) if (ex.isAlive && (ex.load < best.load || !best.isAlive)) best = ex;
    return best;
  }

  private place(ex: ExecutorThread, delta: number): void {
    ex.load += delta;
    ex.setBusy(ex.load > 0);
  }

  private onEvent(ex: ExecutorThread, ev: ExecutorEvent): void {
    if (!('vmId' in ev)) return;
    const pending = this.creating.get(ev.vmId);
    if (ev.ev === 'create-failed') {
      this.creating.delete(ev.vmId);
      this.vms.delete(ev.vmId);
      this.place(ex, -1);
      pending?.reject(new VmCreateError(ev.error));
      return;
    }
    const vm = this.vms.get(ev.vmId);
    if (!vm) return;
    if (ev.ev === 'started') {
      vm.warm = ev.warm;
      vm.timings = ev.timings;
      this.creating.delete(ev.vmId);
      pending?.resolve(vm);
      return;
    }
    vm.handle(ev);
    if (ev.ev === 'exit') {
      this.vms.delete(ev.vmId);
      this.place(ex, -1);
    }
  }

  private onLost(ex: ExecutorThread, err: SerializedError): void {
    for (const vm of [...this.vms.values()]) {
      if (vm.executor !== ex) continue;
      const pending = this.creating.get(vm.id);
      if (pending) {
        this.creating.delete(vm.id);
        pending.reject(new VmCreateError({ name: 'ExecutorError', message: `executor lost: ${err.message}` }));
      }
      vm.lost(`executor lost: ${err.message}`);
      this.vms.delete(vm.id);
    }
    ex.load = 0;
  }
}
