// The library API: a Host runs VMs on executors. By default the executors
// are threads of this process; the daemon uses a fleet of executor
// processes instead (see fleet.ts) through the same Host.
//   const host = await Host.start();
//   const vm = await host.create({ image: 'hello' });
//   const exit = await vm.exited; console.log(vm.consoleText());
//   await host.close();
import { EventEmitter } from 'node:events';
import { closeSync, openSync, readSync } from 'node:fs';
import { resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import type { DeviceEntry } from '../vmm/device-page.js';
import { validateDevicePage } from '../vmm/device-page.js';
import { InlineExecutor } from '../vmm/executor-inline.js';
import { ExecutorThread } from '../vmm/executor-thread.js';
import { MAX_MEMORY, MIN_MEMORY } from '../vmm/layout.js';
import { BZIMAGE_HEAD_BYTES, looksLikeBzImage } from '../vmm/linux/bzimage.js';
import type { AdoptedRestore, AdoptedService, CreateRequest, ExecutorEvent, ExecutorRequest, SerializedError, VmStats } from '../vmm/protocol.js';
import type { ExecutorLink } from './executor-link.js';
import { decodeSnapshot, readSnapshotHeader, type Snapshot, type SnapshotHeader } from '../vmm/snapshot.js';
import type { VmConfig } from '../vmm/vm-schema.js';
import { FieldError } from '../vmm/field-error.js';
import { isBuiltinName, resolveImage } from './images.js';
import { checkDisks } from './disks.js';
import type { PathPolicy } from './path-policy.js';
import { bridgesOf, BridgeError, completeDevices, DEFAULT_BRIDGE_CONFIG, ensureBridge, removeIdleBridges, type BridgeConfig } from './network.js';
import { VirtualMachine, VmCreateError } from './vm.js';
import type { DeviceStore } from './xenstore-devices.js';

export { VirtualMachine, VmCreateError, CONSOLE_KEEP } from './vm.js';
export type { VmState, VirtualMachineEvents } from './vm.js';

export const DEFAULT_MEMORY_MIB = 4;
/** Ended VMs whose record (exit, console) stays visible until destroyed; oldest go first. */
export const KEEP_EXITED = 1024;

export interface HostOptions {
  /** Executor threads (default: one per core). */
  executors?: number;
  /**
   * One executor on this thread instead, run between turns of the event
   * loop (which then waits for it up to 10 ms at a time): no thread and no
   * second V8 isolate to start. For a process that only runs its VMs, as
   * `lightvm run` does.
   */
  inline?: boolean;
}

export interface RestoreOptions {
  file?: string;
  data?: Uint8Array;
  /** Already decoded and checked (live migration). */
  snapshot?: Snapshot;
  name?: string;
  /** Keep the VM id the snapshot has (if free). */
  keepId?: boolean;
  warm?: boolean;
}

/** A VM to create: its configuration (vm-schema.ts) with memory in MiB, the rest defaulted, and how. */
export interface CreateOptions extends Partial<Pick<VmConfig, 'name' | 'cmdline' | 'devices'>> {
  /** ELF path, or the name of a built-in image ("hello", "noop", "daytime", test guests). */
  image: string;
  memoryMiB?: number;
  /** Use a prepared shell when one is ready (default true). */
  warm?: boolean;
  /** With a Linux kernel (bzImage) as image: the initial ramdisk's path. */
  initrd?: string;
  /** Count guest instructions from entry to the first hypercall (slow: single-steps). */
  countInstructions?: boolean;
  /** Stamp the request path (monotonic ns) into the VM's timings. */
  trace?: { apiNs?: number };
}

/**
 * A Linux kernel is told from an ELF by its boot protocol header ("HdrS"):
 * then the VM is a Linux VM, with its initrd if given. Built-in images are
 * ours (ELF): not read here.
 */
function linuxBoot(image: string, builtin: boolean, initrd: string | undefined, policy: PathPolicy | undefined): CreateRequest['linux'] {
  let kernel = false;
  if (!builtin) {
    const head = new Uint8Array(BZIMAGE_HEAD_BYTES);
    let fd: number | undefined;
    try {
      fd = openSync(image, 'r');
      kernel = looksLikeBzImage(head.subarray(0, readSync(fd, head, 0, head.length, 0)));
    } catch {
      // Not readable here: the executor names the problem when it opens it.
    } finally {
      if (fd !== undefined) closeSync(fd);
    }
  }
  if (!kernel) {
    if (initrd !== undefined) throw new FieldError('initrd', `only a Linux kernel (bzImage) takes an initrd, and ${image} is not one`);
    return undefined;
  }
  if (initrd === undefined) return {};
  const path = resolve(initrd);
  return { initrd: policy ? policy.check(path, 'initrd') : path };
}

/** Where VMs run: picks (or starts) an executor for each new VM. */
export interface Placement {
  /** Every live executor. */
  executors(): Iterable<ExecutorLink>;
  /**
   * The executor for a new VM of this many bytes; may start one. The VM is
   * counted in the executor's load at once, so concurrent picks spread.
   */
  pick(memory: number): Promise<ExecutorLink>;
  /** Called with each executor as it joins (also those present at start). */
  onExecutor(listener: (ex: ExecutorLink) => void): void;
  close(): Promise<void>;
}

/** A fixed set of executor threads in this process (or one inline executor), least-loaded first. */
export class ThreadPlacement implements Placement {
  private constructor(private readonly threads: (ExecutorThread | InlineExecutor)[]) {}

  static inline(): ThreadPlacement {
    return new ThreadPlacement([new InlineExecutor()]);
  }

  static async start(n: number): Promise<ThreadPlacement> {
    if (!Number.isInteger(n) || n < 1 || n > 64) throw new RangeError(`executors must be 1..64, got ${n}`);
    const started = await Promise.allSettled(Array.from({ length: n }, () => ExecutorThread.start()));
    const ok = started.flatMap((r) => (r.status === 'fulfilled' ? [r.value] : []));
    const failed = started.find((r) => r.status === 'rejected');
    if (failed) {
      await Promise.all(ok.map((t) => t.stop()));
      throw (failed as PromiseRejectedResult).reason;
    }
    for (const t of ok) t.setBusy(false);
    return new ThreadPlacement(ok);
  }

  executors(): Iterable<ExecutorLink> {
    return this.threads.filter((t) => t.isAlive);
  }

  pick(): Promise<ExecutorLink> {
    let best: ExecutorThread | InlineExecutor | undefined;
    for (const t of this.threads) if (t.isAlive && (!best || t.load < best.load)) best = t;
    if (!best) return Promise.reject(new Error('no executor is running'));
    best.load++;
    best.setBusy(true);
    return Promise.resolve(best);
  }

  onExecutor(listener: (ex: ExecutorLink) => void): void {
    for (const t of this.threads) listener(t);
  }

  async close(): Promise<void> {
    await Promise.all(this.threads.map((t) => t.stop()));
  }
}

export interface HostEvents {
  /** A VM was created, ended, or lost. */
  vm: [{ type: 'created' | 'exited'; vm: VirtualMachine }];
  /** An executor died; lists what was lost. */
  'executor-lost': [{ executor: number; reason: string; vms: { id: number; name: string }[] }];
  /** An executor could not prepare shells of this size (it tries again later; creates meanwhile go cold). */
  'pool-error': [{ executor: number; memory: number; reason: string }];
  /** A bridge LightVM made could not be removed. */
  'bridge-error': [{ reason: string }];
  /** A VM's XenStore entries could not all be removed when it ended. */
  'store-error': [{ vm: number; reason: string }];
}

interface PendingCreate {
  vm: VirtualMachine;
  resolve: (vm: VirtualMachine) => void;
  reject: (err: Error) => void;
  /** When the executor last said something of it (Date.now()): the request sent, or a restore's progress. */
  heardAt: number;
  /** A restore's bytes read, as last reported, of its file's total (as first reported). */
  read: number;
  total?: number;
}

/**
 * Longest silence of an executor about a create, restore or arm: from the
 * request until its answer or, for a restore reading its file, between two
 * reports of its progress (one per chunk of the file), so that a large
 * file on a loaded host is not cut off while it is read.
 */
export const START_TIMEOUT_MS = 30_000;

/**
 * Refuses a name made of digits only: wherever a VM is named (the API's
 * paths, the CLI) a number is its id, so VM "17" could never be reached by
 * its name while a VM with id 17 exists.
 */
export function checkName(name: string): void {
  if (/^\d+$/.test(name)) {
    throw new VmCreateError({
      name: 'NameError', field: 'name',
      message: `name: "${name}" is all digits, which reads as a VM id: a name needs a letter or one of _ . -`,
    });
  }
}

/** A just-in-time service (see Host.serve). */
export class JitService {
  readonly name: string;
  readonly idleMs: number;
  /** Its current VM: armed, or running after the first packet. */
  vm: VirtualMachine | undefined;
  /** VMs it has booted so far. */
  boots = 0;
  private active = true;

  constructor(private readonly host: Host, readonly executor: ExecutorLink, readonly id: number,
    private readonly options: CreateOptions & { name: string; idleMs: number }) {
    this.name = options.name;
    this.idleMs = options.idleMs;
  }

  /** @internal Arms the next VM; when it ends, arms another. */
  async arm(): Promise<void> {
    this.follow(await this.host.armVm(this.executor, this, this.options, this.vm === undefined));
  }

  /** @internal Takes vm (armed, or already running) as its current VM; when it ends, arms the next. */
  follow(vm: VirtualMachine): void {
    this.vm = vm;
    if (vm.state === 'armed') vm.once('booted', () => this.boots++);
    else this.boots++;
    void vm.exited.then(() => {
      if (this.active && this.executor.isAlive) void this.arm().catch(() => (this.active = false));
    });
  }

  get isActive(): boolean {
    return this.active;
  }

  /** What it was made with: serve() with this makes the same service again. */
  get definition(): CreateOptions & { name: string; idleMs: number } {
    return { ...this.options };
  }

  /** Stops serving: the running VM (if any) ends and the taps go. */
  async stop(): Promise<void> {
    if (!this.active) return;
    this.active = false;
    this.host.endService(this);
    const vm = this.vm;
    if (this.executor.isAlive) this.executor.send({ op: 'disarm', serviceId: this.id });
    if (vm && vm.state !== 'exited') await vm.exited;
  }
}

export class Host extends EventEmitter<HostEvents> {
  readonly placement: Placement;
  private readonly vms = new Map<number, VirtualMachine>();
  /** Ended VMs, oldest first: bounded, so nothing here grows with the VMs ever run. */
  private readonly ended = new Map<number, VirtualMachine>();
  private readonly byName = new Map<string, VirtualMachine>();
  private readonly creating = new Map<number, PendingCreate>();
  private nextId = 1;
  private closed = false;

  /** The bridge net devices join unless they name another. */
  bridge: BridgeConfig = DEFAULT_BRIDGE_CONFIG;
  /**
   * Set by a daemon: the directories images, disks and snapshots must lie
   * in. Unset (the library), any file the process can open will do.
   */
  pathPolicy: PathPolicy | undefined;
  /**
   * Set by a daemon in `--devices xenstore`: each create also makes the
   * VM's entries in a XenStore as libxl does, and each VM that ends has
   * them removed (xenstore-devices.ts). Unset: noxs only.
   */
  deviceStore: DeviceStore | undefined;
  /** START_TIMEOUT_MS unless set (a daemon's tests make it short). */
  startTimeoutMs = START_TIMEOUT_MS;

  /** ids: where VM ids come from (default: 1, 2, 3... in this process). */
  constructor(placement: Placement, private readonly ids?: { take(atLeast: number): number }) {
    super();
    this.placement = placement;
    placement.onExecutor((ex) => {
      ex.on('event', (ev) => this.onEvent(ex, ev));
      ex.on('lost', (err) => this.onLost(ex, err));
    });
  }

  /** Starts executor threads in this process. Fails at once if /dev/kvm cannot be used. */
  static async start(options: HostOptions = {}): Promise<Host> {
    if (options.inline) return new Host(ThreadPlacement.inline());
    return new Host(await ThreadPlacement.start(options.executors ?? availableParallelism()));
  }

  /** Creates and starts a VM; resolves once it is loaded and running. */
  async create(options: CreateOptions): Promise<VirtualMachine> {
    if (this.closed) throw new Error('host is closed');
    const memoryMiB = options.memoryMiB ?? DEFAULT_MEMORY_MIB;
    if (!Number.isInteger(memoryMiB) || memoryMiB * 1048576 < MIN_MEMORY || memoryMiB * 1048576 > MAX_MEMORY) {
      throw new VmCreateError({
        name: 'RangeError', field: 'memory',
        message: `memory: ${memoryMiB} MiB is not a whole number from ${MIN_MEMORY / 1048576} to ${MAX_MEMORY / 1048576}`,
      });
    }
    if (options.name !== undefined) checkName(options.name);
    const id = this.newId();
    const name = options.name ?? `vm${id}`;
    let devices = completeDevices(id, options.devices ?? [], this.bridge.name);
    let image: string;
    let linux: CreateRequest['linux'];
    const same = this.byName.get(name);
    try {
      if (same && same.state !== 'exited') throw new FieldError('name', `a VM named "${name}" already exists`);
      validateDevicePage({ vmId: id, name, devices });
      devices = this.hostDevices(devices);
      image = resolveImage(options.image);
      if (this.pathPolicy && !isBuiltinName(options.image)) image = this.pathPolicy.check(image, 'image');
      linux = linuxBoot(image, isBuiltinName(options.image), options.initrd, this.pathPolicy);
      // Checked whole before anything is made: a refused create leaves no bridge.
      this.ensureBridges(devices);
      // An ended VM gives its name up to a new one.
      if (same) this.drop(same);
    } catch (err) {
      throw VmCreateError.from(err);
    }
    const config: CreateRequest = {
      op: 'create', vmId: id, name, image, memory: memoryMiB * 1048576,
      cmdline: options.cmdline ?? '', devices, warm: options.warm ?? true,
      countInstructions: options.countInstructions,
      ...(linux ? { linux } : {}),
      trace: options.trace ? { ...options.trace } : undefined,
    };
    const store = this.deviceStore;
    if (!store) return this.launch(config, config);
    // The store's steps run with the name reserved; the entries of the ended VM it replaces are gone first.
    let times: Record<string, number> = {};
    const before = async (): Promise<void> => {
      await same?.storeCleanup;
      try {
        times = await store.create({ id, name, memoryMiB, image, cmdline: config.cmdline, devices });
      } catch (err) {
        const e = err as Error;
        throw new VmCreateError({ name: 'XenstoreError', message: e.message, field: /with name/.test(e.message) ? 'name' : undefined });
      }
    };
    let vm: VirtualMachine;
    try {
      vm = await this.launch(config, config, before);
    } catch (err) {
      // Made in the store but not launched: its entries go (a create-failed VM never sends an exit).
      await store.remove(id).catch(() => {});
      throw err;
    }
    // A VM that ends meanwhile has its entries removed (onEvent): its handshake is then moot.
    const connected = store.connect(id);
    try {
      const ms = await Promise.race([connected, vm.exited.then(() => undefined)]);
      vm.storeTimes = { ...times, ...(ms !== undefined ? { connect_ms: ms } : {}) };
    } catch (err) {
      await vm.destroy().catch(() => {});
      throw new VmCreateError({ name: 'XenstoreError', message: `VM ${id} (${name}): ${(err as Error).message}` });
    } finally {
      connected.catch(() => {});
    }
    return vm;
  }

  /**
   * Places a VM on an executor and sends it the request that starts it;
   * resolves when the executor says it runs. The name is reserved before
   * the first await, so that concurrent creates see it.
   */
  private async launch(config: CreateRequest, request: ExecutorRequest, before?: () => Promise<void>): Promise<VirtualMachine> {
    const executor = await this.reserve(config.name, async () => {
      await before?.();
      return this.placement.pick(config.memory);
    });
    const vm = new VirtualMachine(executor, config);
    this.holdBridges(vm);
    return this.bounded(executor, config, request.op, new Promise((resolve, reject) => {
      this.creating.set(config.vmId, { vm, resolve, reject, heardAt: Date.now(), read: -1 });
      this.vms.set(config.vmId, vm);
      this.byName.set(config.name, vm);
      if (config.trace) config.trace.sentNs = Number(process.hrtime.bigint());
      try {
        executor.send(request);
      } catch (err) {
        // Not sent (too large for the link, or the executor is gone): nothing was made.
        this.onEvent(executor, { ev: 'create-failed', vmId: config.vmId, error: { name: 'Error', message: (err as Error).message } });
      }
    }));
  }

  /**
   * A create's answer is awaited until the executor has said nothing of it
   * for startTimeoutMs: an executor silent that long is ended (its VMs
   * reported lost), which fails this create too. A restore's progress
   * counts only when its bytes read grow, and they cannot grow past its
   * file's size: nothing waits on an executor forever. One timer per
   * create, set again at its expiry (not at each report).
   */
  private bounded(executor: ExecutorLink, config: CreateRequest, what: string, p: Promise<VirtualMachine>): Promise<VirtualMachine> {
    const limit = this.startTimeoutMs;
    let timer: NodeJS.Timeout;
    const check = (): void => {
      const pending = this.creating.get(config.vmId);
      if (!pending) return;
      const silent = Date.now() - pending.heardAt;
      if (silent < limit) {
        timer = setTimeout(check, limit - silent);
        return;
      }
      const said = pending.read >= 0 ? `made no progress on the ${what} of VM ${config.vmId} (${config.name}) for ${limit} ms (${pending.read} bytes of its file read)`
        : `did not answer the ${what} of VM ${config.vmId} (${config.name}) within ${limit} ms`;
      executor.fail(said);
    };
    timer = setTimeout(check, limit);
    p.then(() => clearTimeout(timer), () => clearTimeout(timer));
    return p;
  }

  /**
   * Takes in a restore an executor was reading its file for when this
   * toolstack connected (a daemon restart): its VM is on record (its name
   * and id taken) and starts, or fails, as any restore's does, under the
   * same bound. Resolves once it runs.
   */
  adoptRestore(executor: ExecutorLink, r: AdoptedRestore): Promise<VirtualMachine> {
    const config = r.config;
    const vm = new VirtualMachine(executor, config);
    this.nextId = Math.max(this.nextId, vm.id + 1);
    this.holdBridges(vm);
    this.place(executor, +1);
    return this.bounded(executor, config, 'restore', new Promise((resolve, reject) => {
      this.creating.set(vm.id, { vm, resolve, reject, heardAt: Date.now(), read: r.read, total: r.total });
      this.vms.set(vm.id, vm);
      this.byName.set(vm.name, vm);
    }));
  }

  /**
   * Starts a VM from a snapshot (a file, or its bytes), checked whole
   * before anything is created. Keeps the saved name unless given one, and
   * the saved id when asked (a daemon restart).
   */
  async restore(options: RestoreOptions): Promise<VirtualMachine> {
    if (this.closed) throw new Error('host is closed');
    const label = options.file ?? 'snapshot';
    let file = options.file && !options.data && !options.snapshot ? options.file : undefined;
    let snapshot: Snapshot | undefined;
    let header: SnapshotHeader;
    let devices: DeviceEntry[];
    try {
      if (file) {
        // The executor reads and checks the whole file; here only what placing it needs.
        if (this.pathPolicy) file = this.pathPolicy.check(file, 'file');
        header = await readSnapshotHeader(file);
      } else {
        snapshot = options.snapshot ?? decodeSnapshot(label, options.data ?? new Uint8Array(0));
        header = snapshot.header;
      }
      // A snapshot names the files its VM needs: they are held to the same rules as a create's.
      if (this.pathPolicy) this.pathPolicy.check(header.image.path, 'file', `${label}: its image `);
      devices = this.hostDevices(header.vm.devices, `${label}: its disk `);
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') throw new VmCreateError({ name: 'SnapshotError', field: 'file', file: label, message: `${label}: no such file` });
      throw VmCreateError.from(err, { field: 'file', file: label });
    }
    const h = header.vm;
    const id = options.keepId && !this.get(h.id) ? h.id : this.newId();
    this.nextId = Math.max(this.nextId, id + 1);
    const name = options.name ?? h.name;
    // A daemon's own saved VMs come back as they were; any other restore names its VM as a create does.
    if (!options.keepId) checkName(name);
    const same = this.byName.get(name);
    if (same && same.state !== 'exited') {
      throw new VmCreateError({ name: 'Error', field: 'name', message: `name: a VM named "${name}" already exists (restore with another name)` });
    }
    try {
      // Its taps join the bridges they were on (a stopping daemon removed those it had made).
      this.ensureBridges(h.devices);
    } catch (err) {
      throw VmCreateError.from(err, { field: 'file', file: label });
    }
    if (same) this.drop(same);
    const config: CreateRequest = {
      op: 'create', vmId: id, name, image: header.image.path, memory: h.memory,
      cmdline: h.cmdline, devices, warm: options.warm ?? true,
    };
    return this.launch(config, { op: 'restore', config, snapshot, file });
  }

  /**
   * The devices as an executor may be given them, for every way a VM is
   * made (create, restore, incoming migration, a service's VM): each disk's
   * path inside the allowed roots (then named by its real path, which the
   * executor opens) and a regular file of a sector or more that the VM may
   * use as asked. Throws a FieldError naming the device's field and path;
   * nothing is made before.
   */
  private hostDevices(devices: DeviceEntry[], what = ''): DeviceEntry[] {
    // The policy first: a refused path is not even looked at.
    const checked = this.pathPolicy ? this.pathPolicy.checkDevices(devices, what) : devices;
    checkDisks(checked, what);
    return checked;
  }

  private nextServiceId = 1;

  private newId(): number {
    const id = this.ids ? this.ids.take(this.nextId) : this.nextId;
    this.nextId = id + 1;
    return id;
  }
  private readonly services = new Map<string, JitService>();

  /**
   * A just-in-time service: a VM of this configuration boots from a
   * prepared shell when the first packet for it (for its address or MAC)
   * reaches its tap, answers it, and is stopped after idleMs without
   * traffic; then the next one waits, armed, the same way. Needs a net
   * device with a static address (ip= on the command line, or ipv4).
   */
  async serve(options: CreateOptions & { name: string; idleMs: number }): Promise<JitService> {
    checkName(options.name);
    if (this.services.has(options.name) || this.get(options.name)) {
      throw new VmCreateError({ name: 'Error', field: 'name', message: `name: "${options.name}" is taken` });
    }
    if (this.pathPolicy) {
      // Refused before an executor is taken for it (each armed VM is checked again: armVm).
      try {
        this.pathPolicy.check(resolveImage(options.image), 'image');
        this.hostDevices(options.devices ?? []);
      } catch (err) {
        throw VmCreateError.from(err);
      }
    }
    const executor = await this.placement.pick(MIN_MEMORY);
    const svc = new JitService(this, executor, this.nextServiceId++, options);
    this.services.set(options.name, svc);
    try {
      await svc.arm();
    } catch (err) {
      // The failed VM gave its place back (create-failed); the taps, if any, go.
      this.services.delete(options.name);
      executor.send({ op: 'disarm', serviceId: svc.id });
      throw err;
    }
    return svc;
  }

  /**
   * Takes in a service an executor kept while no toolstack was there (a
   * daemon restart after a crash): its taps, its armed VM or its running
   * one (adopted already), and the VMs it arms from now on.
   */
  adoptService(executor: ExecutorLink, a: AdoptedService): JitService {
    const c = a.config;
    const svc = new JitService(this, executor, a.serviceId, {
      name: c.name, idleMs: a.idleMs, image: c.image, memoryMiB: c.memory / 1048576, cmdline: c.cmdline, devices: c.devices,
    });
    this.services.set(c.name, svc);
    this.nextServiceId = Math.max(this.nextServiceId, a.serviceId + 1);
    let vm = a.vmId !== undefined ? this.vms.get(a.vmId) : undefined;
    if (!vm && a.armedVmId !== undefined) {
      vm = new VirtualMachine(executor, { ...c, vmId: a.armedVmId });
      vm.state = 'armed';
      this.adopt(executor, vm);
    }
    if (vm) {
      svc.follow(vm);
    } else {
      // Between two VMs when its toolstack went: the next one is armed now, in a place of its own.
      this.place(executor, +1);
      void svc.arm().catch(() => void svc.stop());
    }
    return svc;
  }

  listServices(): JitService[] {
    return [...this.services.values()];
  }

  getService(name: string): JitService | undefined {
    return this.services.get(name);
  }

  /** @internal Registers a service's next VM, armed; resolves once the executor holds its taps. */
  armVm(executor: ExecutorLink, svc: JitService, options: CreateOptions & { name: string }, first: boolean): Promise<VirtualMachine> {
    const id = this.newId();
    let config: CreateRequest;
    try {
      config = {
        op: 'create', vmId: id, name: options.name, image: resolveImage(options.image),
        memory: (options.memoryMiB ?? DEFAULT_MEMORY_MIB) * 1048576, cmdline: options.cmdline ?? '',
        devices: completeDevices(svc.id, options.devices ?? [], this.bridge.name), warm: true,
      };
      if (this.pathPolicy) config.image = this.pathPolicy.check(config.image, 'image');
      config.devices = this.hostDevices(config.devices);
      validateDevicePage({ vmId: id, name: config.name, devices: config.devices });
      this.ensureBridges(config.devices);
    } catch (err) {
      // The place serve() took for the first one is given back.
      if (first) this.place(executor, -1);
      return Promise.reject(VmCreateError.from(err));
    }
    // The first VM's place was taken by serve(); each next one takes its own.
    if (!first) this.place(executor, +1);
    const old = this.byName.get(config.name);
    if (old && old.state === 'exited') this.drop(old);
    const vm = new VirtualMachine(executor, config);
    vm.state = 'armed';
    this.holdBridges(vm);
    return this.bounded(executor, config, 'arm', new Promise((resolve, reject) => {
      this.creating.set(id, { vm, resolve, reject, heardAt: Date.now(), read: -1 });
      this.vms.set(id, vm);
      this.byName.set(config.name, vm);
      executor.send({ op: 'arm', serviceId: svc.id, vmId: id, config, idleMs: svc.idleMs });
    }));
  }

  /** @internal */
  endService(svc: JitService): void {
    this.services.delete(svc.name);
  }

  /** VMs (live, starting or armed) per bridge their taps join: a bridge LightVM made goes with its last. */
  private readonly bridgeUsers = new Map<string, number>();
  /** The VMs counted in bridgeUsers, with their bridges. */
  private readonly bridgesHeld = new Map<number, Set<string>>();

  /** Every bridge this host's VMs were to join: close() removes those of them LightVM made that are idle. */
  private readonly bridgesUsed = new Set<string>();

  /** Makes the bridges these devices join (a link of that name that is no bridge is refused, by its field). */
  private ensureBridges(devices: readonly DeviceEntry[]): void {
    for (const b of bridgesOf(devices, this.bridge.name)) {
      try {
        ensureBridge(b === this.bridge.name ? this.bridge : { name: b });
        this.bridgesUsed.add(b);
      } catch (err) {
        const i = devices.findIndex((d) => d.type === 'net' && (d.bridge ?? this.bridge.name) === b);
        // The kernel's EINVAL (a name it refuses) names no field: this one is the bridge.
        const field = `devices.${i}.bridge`;
        throw err instanceof BridgeError ? new BridgeError(err.message, field) : new FieldError(field, `bridge "${b}" cannot be made: ${(err as Error).message}`);
      }
    }
  }

  private holdBridges(vm: VirtualMachine): void {
    const names = bridgesOf(vm.config.devices, this.bridge.name);
    if (names.size === 0 || this.bridgesHeld.has(vm.id)) return;
    this.bridgesHeld.set(vm.id, names);
    for (const b of names) this.bridgeUsers.set(b, (this.bridgeUsers.get(b) ?? 0) + 1);
  }

  /** A VM gave its taps back: a bridge LightVM made (not the default one, kept until close) goes with its last port. */
  private releaseBridges(vmId: number): void {
    const names = this.bridgesHeld.get(vmId);
    if (!names) return;
    this.bridgesHeld.delete(vmId);
    const idle: string[] = [];
    for (const b of names) {
      const n = (this.bridgeUsers.get(b) ?? 1) - 1;
      if (n > 0) {
        this.bridgeUsers.set(b, n);
        continue;
      }
      this.bridgeUsers.delete(b);
      if (b !== this.bridge.name) idle.push(b);
    }
    if (idle.length === 0) return;
    try {
      removeIdleBridges(idle, (b) => this.bridgeUsers.has(b));
    } catch (err) {
      this.emit('bridge-error', { reason: (err as Error).message });
    }
  }

  private readonly reserved = new Set<string>();
  private async reserve<T>(name: string, work: () => Promise<T>): Promise<T> {
    if (this.reserved.has(name)) {
      throw new VmCreateError({ name: 'Error', field: 'name', message: `name: a VM named "${name}" already exists` });
    }
    this.reserved.add(name);
    try {
      return await work();
    } finally {
      this.reserved.delete(name);
    }
  }

  /** Takes in a VM that already runs on an executor (daemon restart). */
  adopt(executor: ExecutorLink, vm: VirtualMachine): void {
    this.byName.set(vm.name, vm);
    this.nextId = Math.max(this.nextId, vm.id + 1);
    if (vm.state === 'exited') {
      this.forget(vm);
      return;
    }
    this.vms.set(vm.id, vm);
    this.holdBridges(vm);
    this.place(executor, +1);
  }

  /** Live VMs, then the ended ones still on record. */
  list(): VirtualMachine[] {
    return [...this.vms.values(), ...this.ended.values()];
  }

  /** Live VMs only. */
  get running(): number {
    return this.vms.size;
  }

  get(idOrName: number | string): VirtualMachine | undefined {
    const byId = (id: number): VirtualMachine | undefined => this.vms.get(id) ?? this.ended.get(id);
    if (typeof idOrName === 'number') return byId(idOrName);
    if (/^\d+$/.test(idOrName)) return byId(Number(idOrName)) ?? this.byName.get(idOrName);
    return this.byName.get(idOrName);
  }

  private statsRequest = 0;
  /** Stats answers awaited, by executor and request id (one listener per executor, however many callers). */
  private readonly statsWaiters = new Map<string, (vms: VmStats[]) => void>();

  /**
   * Per-VM counters (CPU time, exits, resident memory, network frames) from
   * every executor, or only vm's from its own executor (a poll per VM, as
   * containerd's metrics make, costs one VM's answer, not every VM's).
   */
  async stats(vm?: VirtualMachine): Promise<(VmStats & { executor: number })[]> {
    const requestId = ++this.statsRequest;
    const executors = vm ? [vm.executor] : [...this.placement.executors()];
    const answers = executors.map((ex) => new Promise<(VmStats & { executor: number })[]>((resolve) => {
      const key = `${ex.id}:${requestId}`;
      // An executor that does not answer in time is left out of this answer.
      const timer = setTimeout(() => done([]), 2000);
      const done = (vms: VmStats[]): void => {
        clearTimeout(timer);
        this.statsWaiters.delete(key);
        resolve(vms.map((v) => ({ ...v, executor: ex.id })));
      };
      this.statsWaiters.set(key, done);
      try {
        ex.send(vm ? { op: 'stats', requestId, vmId: vm.id } : { op: 'stats', requestId });
      } catch {
        done([]);
      }
    }));
    return (await Promise.all(answers)).flat();
  }

  /** Keeps `count` prepared shells of this memory size on every executor thread. */
  setPool(memoryMiB: number, countPerExecutor: number): void {
    for (const ex of this.placement.executors()) ex.send({ op: 'pool', memory: memoryMiB * 1048576, target: countPerExecutor });
  }

  get executorCount(): number {
    return [...this.placement.executors()].length;
  }

  /** Destroys every VM and stops the executors. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.placement.close();
    // The taps are gone: so go the bridges LightVM made that this host used
    // and nobody else's port is on. Only those: another process's idle bridge
    // is not ours to remove, and a host that used none (a `lightvm run` with
    // no vif) asks the kernel nothing.
    try {
      removeIdleBridges(this.bridgesUsed, () => false);
    } catch (err) {
      this.emit('bridge-error', { reason: (err as Error).message });
    }
  }

  private place(ex: ExecutorLink, delta: number): void {
    ex.load += delta;
    ex.setBusy(ex.load > 0);
  }

  /** Moves an ended VM to the bounded record of ended VMs. */
  private forget(vm: VirtualMachine): void {
    this.vms.delete(vm.id);
    this.ended.set(vm.id, vm);
    vm.once('removed', () => this.drop(vm));
    if (this.ended.size > KEEP_EXITED) this.drop(this.ended.values().next().value!);
  }

  private drop(vm: VirtualMachine): void {
    this.ended.delete(vm.id);
    if (this.byName.get(vm.name) === vm) this.byName.delete(vm.name);
  }

  private onEvent(ex: ExecutorLink, ev: ExecutorEvent): void {
    if (ev.ev === 'pool-error') this.emit('pool-error', { executor: ex.id, memory: ev.memory, reason: ev.error.message });
    if (ev.ev === 'stats') this.statsWaiters.get(`${ex.id}:${ev.requestId}`)?.(ev.vms);
    if (!('vmId' in ev)) return;
    const pending = this.creating.get(ev.vmId);
    if (ev.ev === 'restore-progress') {
      // Only bytes read count, and never past the file's end: a report repeated is no progress.
      if (pending) pending.total ??= ev.total;
      if (pending && ev.read > pending.read && ev.read <= pending.total!) {
        pending.read = ev.read;
        pending.heardAt = Date.now();
      }
      return;
    }
    if (ev.ev === 'create-failed') {
      this.creating.delete(ev.vmId);
      // A failed restore's record goes: heard here, it is not said again in a later hello.
      ex.forget?.(ev.vmId);
      const vm = this.vms.get(ev.vmId);
      if (vm) {
        this.vms.delete(vm.id);
        if (this.byName.get(vm.name) === vm) this.byName.delete(vm.name);
      }
      this.place(ex, -1);
      this.releaseBridges(ev.vmId);
      pending?.reject(new VmCreateError(ev.error));
      return;
    }
    const vm = this.vms.get(ev.vmId) ?? this.ended.get(ev.vmId);
    if (!vm) return;
    if (ev.ev === 'armed') {
      this.creating.delete(ev.vmId);
      pending?.resolve(vm);
      return;
    }
    if (ev.ev === 'started') {
      vm.warm = ev.warm;
      if (vm.state === 'armed') vm.state = 'running';
      if (ev.paused) vm.state = 'paused';
      vm.timings = ev.timings;
      this.creating.delete(ev.vmId);
      pending?.resolve(vm);
      this.emit('vm', { type: 'created', vm });
      return;
    }
    vm.handle(ev);
    if (ev.ev === 'exit') {
      const store = this.deviceStore;
      // Its destroy resolves once this is done (VirtualMachine.destroy awaits storeCleanup).
      if (store) vm.storeCleanup = store.remove(vm.id).catch((err: unknown) => { this.emit('store-error', { vm: vm.id, reason: (err as Error).message }); });
      this.forget(vm);
      this.emit('vm', { type: 'exited', vm });
    }
    // An ended VM counts on its executor until its resources are freed.
    if (ev.ev === 'freed') {
      this.place(ex, -1);
      this.releaseBridges(ev.vmId);
    }
  }

  private onLost(ex: ExecutorLink, err: SerializedError): void {
    const lost: { id: number; name: string }[] = [];
    for (const vm of [...this.vms.values()]) {
      if (vm.executor !== ex) continue;
      lost.push({ id: vm.id, name: vm.name });
      const pending = this.creating.get(vm.id);
      if (pending) {
        this.creating.delete(vm.id);
        pending.reject(new VmCreateError({ name: 'ExecutorError', message: `executor lost: ${err.message}` }));
      }
      vm.lost(`executor ${ex.id} lost: ${err.message}`);
      this.releaseBridges(vm.id);
      this.forget(vm);
      this.emit('vm', { type: 'exited', vm });
    }
    // Ended VMs it had not freed yet: their resources went with it.
    for (const vm of this.ended.values()) if (vm.executor === ex) vm.lost(err.message);
    ex.load = 0;
    this.emit('executor-lost', { executor: ex.id, reason: err.message, vms: lost });
  }
}
