// lightvmd: the control plane. It owns the VM registry (a Host), the fleet
// of executor processes, the shell pool policy and the REST API on a unix
// socket. It never maps guest memory and never runs a vCPU.
import { chmodSync, lstatSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync, unlinkSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { dirname, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Logger } from 'pino';
import { ExecutorFleet, type FleetOptions } from '../toolstack/fleet.js';
import { Host, type CreateOptions } from '../toolstack/host.js';
import { BUILTIN_DIR } from '../toolstack/images.js';
import { MigrationListener } from '../toolstack/migration.js';
import { PathPolicy } from '../toolstack/path-policy.js';
import type { BridgeConfig } from '../toolstack/network.js';
import { XenstoreDevices, type DeviceMode } from '../toolstack/xenstore-devices.js';
import { VirtualMachine } from '../toolstack/vm.js';
import type { VmStats } from '../vmm/protocol.js';
import { fileKind } from '../vmm/regular-file.js';
import { buildServer } from './server.js';

export interface DaemonOptions {
  runtimeDir: string;
  socketPath: string;
  vmsPerExecutor?: number;
  spareExecutors?: number;
  idleStopMs?: number;
  /** The bridge VMs' taps join by default, and the host's address on it. */
  bridge?: BridgeConfig;
  /** Prepared shells kept ready, per memory size in MiB. */
  pool?: Record<number, number>;
  /**
   * Directories, besides the runtime directory and the built-in images,
   * whose files requests may name (images, disks, snapshots).
   */
  allowPaths?: string[];
  /**
   * noxs (the default): a VM's devices are its device page only. xenstore:
   * each create and destroy also does libxl's XenStore steps, against a
   * store and a dom0 backend this daemon starts (<runtimeDir>/xenstored.sock).
   */
  devices?: DeviceMode;
  /** Longest silence of an executor about a VM it starts (Host.startTimeoutMs). */
  startTimeoutMs?: number;
  logger: Logger;
}

/** True if something accepts connections on this unix socket. */
function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}

/**
 * The socket path may be taken only where nothing is or a socket is that
 * nothing answers on (a daemon killed outright left it): anything else at
 * that path is someone's file, refused and left as it is (issue 10 F16).
 * Returns whether a stale socket is there to remove.
 */
function checkSocketPath(path: string): boolean {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw new Error(`socket ${path}: cannot be looked at: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, { cause: err });
  }
  if (!st.isSocket()) throw new Error(`socket ${path} is not a socket but ${fileKind(st)}: refused, and left as it is (name a free path with --socket)`);
  return true;
}

/** Removes a stale socket, and only a socket (whatever was put there since it was checked stays). */
function removeSocket(path: string): void {
  try {
    if (lstatSync(path).isSocket()) unlinkSync(path);
  } catch {
    // Gone already.
  }
}

/**
 * VM ids are never reused across daemons: they are handed out from blocks
 * whose end is written down before the first id of the block is used (one
 * small write per block, not per VM).
 */
class IdBlocks {
  private next = 1;
  private end = 0;

  constructor(private readonly file: string) {
    try {
      this.next = this.end = Number(readFileSync(file, 'utf8').trim()) || 1;
    } catch {
      // First start.
    }
  }

  take(atLeast: number): number {
    if (atLeast > this.next) this.next = atLeast;
    if (this.next >= this.end) {
      this.end = this.next + ID_BLOCK;
      writeFileSync(this.file, `${this.end}\n`, { mode: 0o600 });
    }
    return this.next++;
  }
}

const ID_BLOCK = 1000;

/** Where a stopping daemon leaves its VMs for the next one. */
export function savedDir(runtimeDir: string): string {
  return join(runtimeDir, 'saved');
}

async function saveAll(host: Host, runtimeDir: string, log: Logger): Promise<void> {
  const dir = savedDir(runtimeDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // A service's VM is not saved: the service is (saveServices), and boots another at its next packet.
  const ofServices = new Set(host.listServices().map((s) => s.vm));
  const live = host.list().filter((vm) => vm.state !== 'exited' && vm.state !== 'armed' && !ofServices.has(vm));
  // A save that never answers (an executor stuck in the kernel) must not keep the daemon from stopping.
  const results = await Promise.allSettled(live.map((vm) => Promise.race([
    vm.save(join(dir, `${vm.id}.snap`)),
    new Promise<never>((_, reject) => setTimeout(() => reject(new Error('no answer within 60 s')), 60_000).unref()),
  ])));
  results.forEach((r, i) => {
    const vm = live[i]!;
    if (r.status === 'fulfilled') log.info({ vm: vm.id, name: vm.name, bytes: r.value.bytes }, 'vm saved for the next daemon');
    else log.error({ vm: vm.id, name: vm.name, err: (r.reason as Error).message }, 'vm could not be saved: it is lost');
  });
}

async function restoreSaved(host: Host, runtimeDir: string, log: Logger): Promise<void> {
  const dir = savedDir(runtimeDir);
  let files: string[];
  try {
    files = readdirSync(dir).filter((f) => /^\d+\.snap$/.test(f)).sort((a, b) => parseInt(a) - parseInt(b));
  } catch {
    return;
  }
  for (const f of files) {
    const file = join(dir, f);
    try {
      const vm = await host.restore({ file, keepId: true });
      rmSync(file);
      log.info({ vm: vm.id, name: vm.name }, 'vm restored from the last daemon');
    } catch (err) {
      renameSync(file, `${file}.failed`);
      log.error({ file, err: (err as Error).message }, 'saved vm could not be restored; kept as .failed');
    }
  }
}

const SERVICES_FILE = 'services.json';

/** A stopping daemon's services, for the next one to serve again. */
function saveServices(host: Host, runtimeDir: string, log: Logger): void {
  const defs = host.listServices().filter((s) => s.isActive).map((s) => s.definition);
  if (defs.length === 0) return;
  const dir = savedDir(runtimeDir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  writeFileSync(join(dir, SERVICES_FILE), `${JSON.stringify(defs)}\n`, { mode: 0o600 });
  log.info({ services: defs.map((d) => d.name) }, 'services saved for the next daemon');
}

async function serveSaved(host: Host, runtimeDir: string, log: Logger): Promise<void> {
  const file = join(savedDir(runtimeDir), SERVICES_FILE);
  let defs: (CreateOptions & { name: string; idleMs: number })[];
  try {
    defs = JSON.parse(readFileSync(file, 'utf8')) as typeof defs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    renameSync(file, `${file}.failed`);
    log.error({ file, err: (err as Error).message }, 'saved services could not be read; kept as .failed');
    return;
  }
  rmSync(file);
  for (const def of Array.isArray(defs) ? defs : []) {
    // One a re-adopted executor still serves is there already.
    if (host.getService(def.name)) continue;
    try {
      await host.serve(def);
      log.info({ service: def.name }, 'service served again from the last daemon');
    } catch (err) {
      log.error({ service: def.name, err: (err as Error).message }, 'saved service could not be served again');
    }
  }
}

export class Daemon {
  readonly host: Host;
  readonly fleet: ExecutorFleet;
  readonly server: FastifyInstance;
  readonly startedAt = new Date();
  /** In `--devices xenstore`: the store, its backend and the toolstack's connection. */
  xenstore: XenstoreDevices | undefined;
  private constructor(readonly options: DaemonOptions, host: Host, fleet: ExecutorFleet, server: FastifyInstance) {
    this.host = host;
    this.fleet = fleet;
    this.server = server;
  }

  static async start(options: DaemonOptions): Promise<Daemon> {
    const log = options.logger;
    mkdirSync(options.runtimeDir, { recursive: true, mode: 0o700 });
    const pathPolicy = new PathPolicy([
      { dir: options.runtimeDir, what: 'runtime directory' },
      { dir: BUILTIN_DIR, what: 'built-in images', optional: true },
      ...(options.allowPaths ?? []).map((dir) => ({ dir, what: '--allow-path' })),
    ]);
    // One daemon per runtime directory: a second one would take the first one's executors.
    if (await answers(options.socketPath)) {
      throw new Error(`a daemon already runs on ${options.socketPath} (stop it first: lightvm daemon stop)`);
    }
    // Before anything starts: a path that is not ours to take stops the daemon here.
    checkSocketPath(options.socketPath);
    const fleetOptions: FleetOptions = {
      runtimeDir: options.runtimeDir,
      vmsPerExecutor: options.vmsPerExecutor,
      spare: options.spareExecutors,
      idleStopMs: options.idleStopMs,
      onAdoptError: (id, err) => log.error({ executor: id, err: err.message }, 'executor not re-adopted: its socket is served but it did not answer; its VMs are not managed'),
    };
    const { fleet, adopted } = await ExecutorFleet.start(fleetOptions);
    const host = new Host(fleet, new IdBlocks(join(options.runtimeDir, 'next-id')));
    if (options.bridge) host.bridge = options.bridge;
    host.pathPolicy = pathPolicy;
    if (options.startTimeoutMs !== undefined) host.startTimeoutMs = options.startTimeoutMs;
    for (const { link, vms, services, restoring, failedRestores } of adopted) {
      for (const a of vms) {
        const vm = new VirtualMachine(link, a.config);
        vm.adoptState(a);
        // An ended VM stays on record (exit, console) like any other.
        if (a.state === 'exited') link.forget(a.config.vmId);
        host.adopt(link, vm);
      }
      // Its services, with their taps and their armed or running VMs: visible, and stoppable, again.
      for (const s of services) host.adoptService(link, s);
      // A restore the last daemon asked for and never heard the end of: on record now, and its end said.
      for (const r of restoring) {
        host.adoptRestore(link, r).then(
          (vm) => log.info({ vm: vm.id, name: vm.name }, 'vm restored (a restore the last daemon asked for)'),
          (err: Error) => log.error({ vm: r.config.vmId, name: r.config.name, err: err.message }, 'restore the last daemon asked for failed: no VM'),
        );
      }
      // One that failed while no daemon was there to hear it.
      for (const f of failedRestores) {
        log.error({ vm: f.config.vmId, name: f.config.name, err: f.error.message }, 'restore the last daemon asked for failed: no VM');
        link.forget(f.config.vmId);
      }
      link.release();
      log.info({ executor: link.id, pid: link.pid, vms: vms.length, services: services.length, restoring: restoring.length }, 're-adopted executor');
    }
    host.on('vm', ({ type, vm }) => {
      if (type === 'exited') {
        (vm.executor as { forget?: (id: number) => void }).forget?.(vm.id);
        log.info({ vm: vm.id, name: vm.name, exit: vm.exitInfo }, 'vm ended');
      }
    });
    host.on('executor-lost', (e) => log.error(e, 'executor lost: its VMs are gone'));
    host.on('pool-error', (e) => log.warn(e, 'shells could not be prepared: creates go cold until a retry succeeds'));
    host.on('bridge-error', (e) => log.warn(e, 'a bridge LightVM made could not be removed'));
    host.on('store-error', (e) => log.warn(e, 'a VM\'s XenStore entries could not all be removed'));
    let xenstore: XenstoreDevices | undefined;
    if (options.devices === 'xenstore') {
      try {
        xenstore = await XenstoreDevices.start(join(options.runtimeDir, 'xenstored.sock'));
      } catch (err) {
        await host.close();
        throw new Error(`--devices xenstore: ${(err as Error).message}`, { cause: err });
      }
      xenstore.onPeerExit = (what, code, said) => log.error({ code, said }, `${what} ended: creates in xenstore mode fail from now on`);
      host.deviceStore = xenstore;
    }
    // Shells an adopted executor still holds go; the pool is set anew below.
    for (const { link } of adopted) for (const memory of link.pools.keys()) link.send({ op: 'pool', memory, target: 0 });
    for (const [mib, count] of Object.entries(options.pool ?? {})) fleet.setPool(Number(mib) * 1048576, count);
    await restoreSaved(host, options.runtimeDir, log);
    await serveSaved(host, options.runtimeDir, log);

    const daemon = new Daemon(options, host, fleet, undefined as unknown as FastifyInstance);
    daemon.xenstore = xenstore;
    try {
      const server = await buildServer(daemon);
      (daemon as { server: FastifyInstance }).server = server;
      mkdirSync(dirname(options.socketPath), { recursive: true, mode: 0o700 });
      if (checkSocketPath(options.socketPath)) removeSocket(options.socketPath);
      await server.listen({ path: options.socketPath });
      chmodSync(options.socketPath, 0o600);
    } catch (err) {
      // Nothing half-started stays behind: executors we started go too.
      await host.close();
      await xenstore?.close();
      throw err;
    }
    log.info({ socket: options.socketPath, runtimeDir: options.runtimeDir }, 'lightvmd listening');
    return daemon;
  }

  /** Set by whoever runs the daemon: a stop asked for through the API. */
  onStopRequest: ((destroy: boolean) => void) | undefined;
  private listener: MigrationListener | undefined;

  get migrationListening(): { address: string; port: number } | null {
    return this.listener ? { address: this.listener.address, port: this.listener.port } : null;
  }

  /** Accepts live migrations on a TCP port (only when asked to), from senders with the token. */
  async listenForMigrations(opts: { port: number; address?: string; token: string }): Promise<void> {
    await this.stopListening();
    const log = this.options.logger;
    this.listener = await MigrationListener.listen(this.host, {
      ...opts,
      onMigrated: (vm) => log.info({ vm: vm.id, name: vm.name }, 'vm migrated in'),
      onError: (err) => log.warn({ err: err.message }, 'incoming migration failed'),
    });
    log.info(this.migrationListening, 'listening for migrations');
  }

  async stopListening(): Promise<void> {
    const l = this.listener;
    this.listener = undefined;
    await l?.close();
  }

  /** Per-VM counters from every executor (only vm's, from its executor, when given). */
  async stats(vm?: VirtualMachine): Promise<{ id: number; executor: number; cpu_ns: number; exits: number; console_throttled_ms: number; resident_kib: number; nets: VmStats['nets'] }[]> {
    return (await this.host.stats(vm)).map((s) => ({
      id: s.vmId, executor: s.executor, cpu_ns: s.cpuNs, exits: s.exits, console_throttled_ms: Math.round(s.consoleThrottledNs / 1e6),
      resident_kib: Math.round(s.residentKiB), nets: s.nets,
    }));
  }

  /**
   * Stops serving and stops the executors. Every running VM is first saved
   * (runtimeDir/saved), to be restored by the next daemon with its name and
   * id, unless destroy is asked for.
   */
  async stop(options: { destroy?: boolean } = {}): Promise<void> {
    await this.stopListening();
    await this.server.close();
    if (!options.destroy) {
      saveServices(this.host, this.options.runtimeDir, this.options.logger);
      await saveAll(this.host, this.options.runtimeDir, this.options.logger);
    }
    await this.host.close();
    await this.xenstore?.close();
    removeSocket(this.options.socketPath);
  }
}
