// One VM as the toolstack's user sees it: state, console, exit, lifecycle.
import { EventEmitter } from 'node:events';
import type { VmExit } from '../vmm/exit.js';
import { FieldError } from '../vmm/field-error.js';
import type { AdoptedVm, CreateRequest, ExecutorEvent, SerializedError, Timings } from '../vmm/protocol.js';
import type { ExecutorLink } from './executor-link.js';

export interface SaveResult {
  file?: string;
  /** The snapshot itself, when no file was given. */
  data?: Uint8Array;
  bytes: number;
  /** Memory pages in it (those ever written and not zero). */
  pages: number;
  /** Time the executor took, capture to file written. */
  ms: number;
  /** The SHA-256 (hex) of every page of RAM as it was captured, when asked for. */
  sha256?: string;
}

/**
 * Longest wait for an executor's answer to a request about a VM (a pause, a
 * destroy, its resources freed); a save may take SAVE_TIMEOUT_MS. An
 * executor that does not answer in time is ended (its VMs reported lost):
 * the toolstack never waits forever.
 */
export const REQUEST_TIMEOUT_MS = 10_000;
export const SAVE_TIMEOUT_MS = 120_000;

/** Console bytes kept per VM for consoleText(); older output is dropped. */
export const CONSOLE_KEEP = 1 << 20;

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

  /** Of what refused the VM: a FieldError names the field and file; fallback names them for the others (and its file wins). */
  static from(err: unknown, fallback: { field?: string; file?: string } = {}): VmCreateError {
    const e = err instanceof Error ? err : new Error(String(err));
    const named = err instanceof FieldError ? err : undefined;
    return new VmCreateError({ name: e.name, message: e.message, field: named?.field ?? fallback.field, file: fallback.file ?? named?.file });
  }
}

/** armed: a just-in-time VM that boots when the first packet for it arrives. */
export type VmState = 'armed' | 'running' | 'paused' | 'exited';

export interface VirtualMachineEvents {
  console: [Buffer];
  booted: [number];
  exit: [VmExit];
  /** Its record was dropped (destroy of a VM that had already ended). */
  removed: [];
}

/** One VM, as seen by the library user. */
export class VirtualMachine extends EventEmitter<VirtualMachineEvents> {
  readonly id: number;
  readonly name: string;
  readonly image: string;
  readonly memoryMiB: number;
  state: VmState = 'running';
  /** How it ended, once it has. */
  exitInfo: VmExit | undefined;
  /**
   * Paused by the last step of a live migration whose outcome this daemon
   * never heard (it was restarted meanwhile): the VM may already run at the
   * destination, so it is not unpaused unless asked to with force.
   */
  migrationHold = false;
  /** A live migration moves it (the API shows it as migrating). */
  migrating = false;
  /** Whether it started from a prepared shell. */
  warm = false;
  timings: Timings | undefined;
  /** In `--devices xenstore`: the removal of its store entries, started when it ended. */
  storeCleanup: Promise<void> | undefined;
  /** In `--devices xenstore`: milliseconds of each store step of its create (DeviceStore). */
  storeTimes: Record<string, number> | undefined;
  exitCount = 0;
  instructions: number | undefined;
  /** Its network devices' frame counters, as they were when it ended. */
  netCounters: NonNullable<Extract<ExecutorEvent, { ev: 'exit' }>['nets']> = [];
  /** Resolves with the monotonic ns of the first hypercall. */
  readonly booted: Promise<number>;
  /** Resolves when the VM has ended: it never runs again. */
  readonly exited: Promise<VmExit>;
  /** Resolves when everything the VM held (KVM objects, memory) is given back. */
  readonly freed: Promise<void>;
  private resolveFreed!: () => void;
  private resolveBooted!: (ns: number) => void;
  private resolveExited!: (e: VmExit) => void;
  private readonly consoleChunks: Buffer[] = [];
  private consoleBytes = 0;
  /** Console bytes lost on the way here (a daemon that did not keep up, a snapshot's history cut). */
  consoleDropped = 0;
  private readonly pending = new Map<'pause' | 'unpause', () => void>();

  /** What it was created with. */
  readonly config: CreateRequest;
  readonly createdAt: Date;

  constructor(readonly executor: ExecutorLink, config: CreateRequest) {
    super();
    // The config goes to the executor with this stamp, and comes back with it on re-adoption.
    config.createdAt ??= Date.now();
    this.createdAt = new Date(config.createdAt);
    this.config = config;
    this.id = config.vmId;
    this.name = config.name;
    this.image = config.image;
    this.memoryMiB = config.memory / 1048576;
    this.booted = new Promise((r) => (this.resolveBooted = r));
    this.exited = new Promise((r) => (this.resolveExited = r));
    this.freed = new Promise((r) => (this.resolveFreed = r));
    // Nobody need listen for boot: do not turn it into an unhandled rejection.
    void this.booted.catch(() => {});
  }

  /** The console output kept so far (the last CONSOLE_KEEP bytes). */
  consoleText(): string {
    return Buffer.concat(this.consoleChunks).toString('utf8');
  }

  /** Ends the VM if it runs, then drops its record; resolves once its resources are freed. */
  async destroy(): Promise<VmExit> {
    if (this.state !== 'exited') this.executor.send({ op: 'destroy', vmId: this.id });
    const exit = await this.answer(this.exited, 'destroy', REQUEST_TIMEOUT_MS, true);
    await this.answer(this.freed, 'free of the resources', REQUEST_TIMEOUT_MS, true);
    await this.storeCleanup;
    this.emit('removed');
    return exit;
  }

  /**
   * Waits for the executor's answer to a request about this VM, at most
   * ms: one that does not answer is ended, which answers everything
   * pending (the VM is then lost).
   */
  private async answer<T>(p: Promise<T>, what: string, ms = REQUEST_TIMEOUT_MS, goneWillDo = false): Promise<T> {
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<void>((r) => (timer = setTimeout(r, ms)));
    try {
      const first = await Promise.race([p.then((value) => ({ value })), late]);
      if (first) return first.value;
      const reason = `did not answer the ${what} of VM ${this.id} (${this.name}) within ${ms} ms`;
      this.executor.fail(reason);
      // Ended with its executor: a destroy has what it asked for; anything else failed.
      const value = await p;
      if (goneWillDo) return value;
      throw Object.assign(new Error(`executor ${this.executor.id} ${reason}: it was ended, and the VM with it`), { name: 'ExecutorError' });
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Asks the guest to end cleanly; destroys it if it has not ended after
   * graceMs (a guest that never POLLs cannot hear the request).
   */
  async shutdown(graceMs = 10_000): Promise<VmExit> {
    if (this.state === 'exited') return this.exited;
    this.executor.send({ op: 'shutdown', vmId: this.id });
    let timer: NodeJS.Timeout | undefined;
    const late = new Promise<'late'>((r) => (timer = setTimeout(() => r('late'), graceMs)));
    const first = await Promise.race([this.exited, late]);
    clearTimeout(timer);
    return first === 'late' ? this.destroy() : first;
  }

  private readonly inputs = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();

  /**
   * Bytes for the guest's virtio-console (its receive queue), taken whole
   * or refused: rejects naming why (no such device, its input unread, ended).
   */
  consoleInput(data: Uint8Array): Promise<void> {
    if (this.state === 'exited') return Promise.reject(Object.assign(new Error(`VM ${this.name} has ended`), { name: 'VmEnded' }));
    return this.answer(new Promise((resolve, reject) => {
      const requestId = ++this.saveRequests;
      this.inputs.set(requestId, { resolve, reject });
      this.executor.send({ op: 'console-input', requestId, vmId: this.id, data });
    }), 'console input');
  }

  private saveRequests = 0;
  private readonly saves = new Map<number, { resolve: (r: SaveResult) => void; reject: (e: Error) => void }>();
  private readonly copies = new Map<number, { resolve: (r: { data: Uint8Array; count: number }) => void; reject: (e: Error) => void }>();

  /** Live migration: page records (round 0: every written page; then the pages dirtied since). */
  copyPages(round: number): Promise<{ data: Uint8Array; count: number }> {
    if (this.state === 'exited') return Promise.reject(new Error(`VM ${this.name} has ended`));
    return new Promise((resolve, reject) => {
      const requestId = ++this.saveRequests;
      this.copies.set(requestId, { resolve, reject });
      this.executor.send({ op: 'copy-pages', requestId, vmId: this.id, round });
    });
  }

  private readonly digests = new Map<number, { resolve: (sha256: string) => void; reject: (e: Error) => void }>();

  /** The SHA-256 (hex) of every page of the VM's RAM as it is now: paused, it says what the guest would run on. */
  memoryDigest(): Promise<string> {
    if (this.state === 'exited') return Promise.reject(new Error(`VM ${this.name} has ended`));
    return new Promise((resolve, reject) => {
      const requestId = ++this.saveRequests;
      this.digests.set(requestId, { resolve, reject });
      this.executor.send({ op: 'digest', requestId, vmId: this.id });
    });
  }

  /** Live migration's last step: pauses the VM and snapshots it with the pages dirtied since the last copy. */
  saveFinal(options: { digest?: boolean } = {}): Promise<SaveResult> {
    if (this.state === 'exited') return Promise.reject(new Error(`VM ${this.name} has ended`));
    return new Promise((resolve, reject) => {
      const requestId = ++this.saveRequests;
      this.saves.set(requestId, { resolve, reject });
      this.executor.send({ op: 'save', requestId, vmId: this.id, keep: true, final: true, digest: options.digest });
    });
  }

  /** Live migration called off: the VM runs on here. */
  abortMigration(): void {
    if (this.state !== 'exited') this.executor.send({ op: 'migration-abort', vmId: this.id });
  }

  /**
   * Live migration committed but unconfirmed: the VM may run at the
   * destination, so it stays paused here (its executor holds it so) until
   * unpaused with force.
   */
  holdAfterMigration(): void {
    if (this.state === 'exited') return;
    this.state = 'paused';
    this.migrationHold = true;
  }

  /** Ends the VM here because it now runs elsewhere. */
  async migrated(to: string): Promise<void> {
    if (this.state !== 'exited') this.executor.send({ op: 'destroy', vmId: this.id, exit: { kind: 'migrated', to } });
    await this.exited;
  }

  /**
   * Snapshots the VM, to a file (absolute path) or, without one, into the
   * result's data. It ends, as saved (like xl save), unless checkpoint.
   */
  save(file?: string, options: { checkpoint?: boolean } = {}): Promise<SaveResult> {
    if (this.state === 'exited') return Promise.reject(new Error(`VM ${this.name} has ended: nothing to save`));
    return this.answer(new Promise((resolve, reject) => {
      const requestId = ++this.saveRequests;
      this.saves.set(requestId, { resolve, reject });
      this.executor.send({ op: 'save', requestId, vmId: this.id, file, keep: options.checkpoint === true });
    }), 'save', SAVE_TIMEOUT_MS);
  }

  async pause(): Promise<void> {
    if (this.state !== 'running') throw new Error(`VM ${this.name} is ${this.state}, not running`);
    if (this.config.linux) throw new Error(`VM ${this.name} is a Linux VM: pausing a Linux VM is not supported yet`);
    await this.request('pause');
    if (this.state === 'running') this.state = 'paused';
  }

  async unpause(options: { force?: boolean } = {}): Promise<void> {
    if (this.state !== 'paused') throw new Error(`VM ${this.name} is ${this.state}, not paused`);
    if (this.migrationHold && !options.force) {
      throw new Error(`VM ${this.name} was paused by a live migration that may have completed: it may run at the destination (unpause with force to run it here anyway)`);
    }
    // Held by a migration: its executor turns the dirty log off (and unpauses it if the migration paused it).
    if (this.migrationHold) this.executor.send({ op: 'migration-abort', vmId: this.id });
    this.migrationHold = false;
    await this.request('unpause');
    if (this.state === 'paused') this.state = 'running';
  }

  private request(op: 'pause' | 'unpause'): Promise<void> {
    return this.answer(new Promise((resolve) => {
      this.pending.set(op, resolve);
      this.executor.send({ op, vmId: this.id });
    }), op);
  }

  /** Takes the state an executor reports for a VM it kept running (daemon restart). */
  adoptState(a: AdoptedVm): void {
    if (a.console.length) this.handle({ ev: 'console', vmId: this.id, data: a.console });
    this.warm = a.warm;
    this.timings = a.timings;
    if (a.timings?.bootNs) this.resolveBooted(a.timings.bootNs);
    if (a.state === 'paused') this.state = 'paused';
    this.migrationHold = a.migrationPaused === true;
    if (a.state === 'exited' && a.exit && a.timings) {
      this.handle({ ev: 'exit', vmId: this.id, exit: a.exit, timings: a.timings, exits: 0 });
      // Whether or not its executor has freed it yet, it no longer counts here.
      this.resolveFreed();
    }
  }

  /** @internal */
  handle(ev: ExecutorEvent): void {
    switch (ev.ev) {
      case 'console': {
        const b = Buffer.from(ev.data.buffer, ev.data.byteOffset, ev.data.byteLength);
        this.consoleDropped += ev.dropped ?? 0;
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
        if (this.timings) this.timings.bootNs = ev.bootNs;
        this.resolveBooted(ev.bootNs);
        this.emit('booted', ev.bootNs);
        break;
      case 'digest': {
        const d = this.digests.get(ev.requestId);
        this.digests.delete(ev.requestId);
        if (ev.sha256) d?.resolve(ev.sha256);
        else d?.reject(Object.assign(new Error(ev.error?.message ?? 'no digest'), { name: ev.error?.name ?? 'Error' }));
        break;
      }
      case 'console-input': {
        const w = this.inputs.get(ev.requestId);
        this.inputs.delete(ev.requestId);
        if (!ev.error) w?.resolve();
        else w?.reject(Object.assign(new Error(`VM ${this.name}: ${ev.error.message}`), { name: ev.error.name }));
        break;
      }
      case 'pages': {
        this.copies.get(ev.requestId)?.resolve({ data: ev.data, count: ev.count });
        this.copies.delete(ev.requestId);
        break;
      }
      case 'saved':
      case 'save-failed': {
        const copy = this.copies.get(ev.requestId);
        if (copy && ev.ev === 'save-failed') {
          this.copies.delete(ev.requestId);
          copy.reject(Object.assign(new Error(ev.error.message), { name: ev.error.name }));
          break;
        }
        const waiter = this.saves.get(ev.requestId);
        this.saves.delete(ev.requestId);
        if (ev.ev === 'saved') {
          waiter?.resolve({ file: ev.file, data: ev.data, bytes: ev.bytes, pages: ev.pages, ms: ev.ns / 1e6, sha256: ev.sha256 });
        } else {
          waiter?.reject(Object.assign(new Error(ev.error.message), { name: ev.error.name }));
        }
        break;
      }
      case 'freed':
        if (this.timings) {
          this.timings.destroyNs = ev.destroyNs;
          this.timings.destroyedNs = ev.destroyedNs;
        }
        this.resolveFreed();
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
        this.netCounters = ev.nets ?? [];
        if (ev.instructions !== undefined) this.instructions = ev.instructions;
        if (ev.timings.bootNs) this.resolveBooted(ev.timings.bootNs);
        for (const done of this.pending.values()) done();
        this.pending.clear();
        // Ended by its own save: that save's answer follows.
        if (ev.exit.kind !== 'saved') {
          for (const w of this.saves.values()) w.reject(new Error(`VM ${this.name} ended before it was saved`));
          this.saves.clear();
        }
        for (const w of this.copies.values()) w.reject(new Error(`VM ${this.name} ended during a migration`));
        this.copies.clear();
        for (const w of this.digests.values()) w.reject(new Error(`VM ${this.name} ended before its memory was read`));
        this.digests.clear();
        for (const w of this.inputs.values()) w.reject(Object.assign(new Error(`VM ${this.name} ended before it took its console input`), { name: 'VmEnded' }));
        this.inputs.clear();
        this.exitInfo = ev.exit;
        this.resolveExited(ev.exit);
        this.emit('exit', ev.exit);
        break;
      default:
        break;
    }
  }

  /** @internal The executor died under this VM. */
  lost(reason: string): void {
    // Its resources went with the executor.
    this.resolveFreed();
    if (this.state === 'exited') return;
    this.handle({
      ev: 'exit', vmId: this.id, exits: this.exitCount,
      exit: { kind: 'crash', code: 'executor-lost', reason },
      timings: this.timings ?? { requestNs: 0, shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 },
    });
  }
}

