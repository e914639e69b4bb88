// containerd.task.v2.Task for LightVM: every task of every namespace in one
// server process, each task a VM run by lightvmd. Create finds the unikernel
// in the rootfs mounts (without mounting them) and opens the task's stdout;
// Start has the daemon run the VM, leased to this process's connection, and
// copies its console to stdout; exits come back as Wait replies and
// /tasks/exit events. The task pid is this server's (a kill -9 of it makes
// containerd run `delete` per task, which destroys the VMs; an executor's pid
// would invite a kill that takes hundreds of VMs down).
import { constants as fsc, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampFromDate, type Any, type Timestamp } from '@bufbuild/protobuf/wkt';
import { ApiError, Client } from '../cli/client.js';
import { readBundle } from '../container/bundle.js';
import { placeKernel, removeKernel } from '../container/kernel-copy.js';
import { vmNameFor } from '../container/names.js';
import { TaskCreateSchema, TaskDeleteSchema, TaskExitSchema, TaskPausedSchema, TaskResumedSchema, TaskStartSchema } from './gen/events_pb.js';
import { MetricsSchema } from './gen/metrics_pb.js';
import { Status, Task as TaskService, type CreateTaskRequest } from './gen/task_pb.js';
import type { Mount } from './gen/types_pb.js';
import { VM_MARKER } from './address.js';
import type { EventPublisher } from './events.js';
import { Code, TtrpcError, type CallContext, type ServiceImpl } from './ttrpc.js';

export const SHIM_VERSION = '0.1.0';
/** How long the daemon waits for this server to take a new VM's lease. */
const LEASE_MS = 10_000;
const DEFAULT_GRACE_MS = 5000;
const EXIT_CRASHED = 125;
const SIGKILL = 9;
const STOP_SIGNALS = new Set([1, 2, 3, 15]);
const NS_KEY = 'containerd-namespace-ttrpc';

interface Task {
  ns: string;
  id: string;
  bundle: string;
  vm: string;
  /** No VM: a CRI pod sandbox (pause container) is a placeholder. */
  sandbox: boolean;
  /** The kernel in the rootfs layers; its copy under the daemon's runtime directory once started. */
  kernel: string;
  kernelCopy: string | undefined;
  cmdline: string;
  memoryMiB: number;
  graceMs: number;
  stdin: string;
  stdout: string;
  stderr: string;
  terminal: boolean;
  out: net.Socket | undefined;
  status: Status;
  exitStatus: number;
  exitedAt: Date | undefined;
  /** The signal that ended it (128+n when its VM is destroyed). */
  signal: number | undefined;
  exited: Promise<void>;
  markExited: () => void;
}

function nsOf(ctx: CallContext): string {
  return ctx.metadata.get(NS_KEY) ?? ctx.metadata.get('containerd-namespace') ?? 'default';
}

/** Host directories that may hold the kernel, from the task's rootfs mounts (nothing is mounted). */
export function layerDirs(mounts: Mount[], bundle: string): string[] {
  if (mounts.length === 0) return [join(bundle, 'rootfs')];
  const dirs: string[] = [];
  for (const m of mounts) {
    if (m.type === 'overlay') {
      const opt = (k: string): string | undefined => m.options.find((o) => o.startsWith(`${k}=`))?.slice(k.length + 1);
      const upper = opt('upperdir');
      if (upper) dirs.push(upper);
      dirs.push(...(opt('lowerdir') ?? '').split(':').filter(Boolean));
    } else if (m.type === 'bind' || m.options.includes('bind') || m.options.includes('rbind')) {
      dirs.push(m.source);
    } else {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `rootfs: a ${m.type} mount of ${m.source} cannot be read without mounting it (overlay and bind are)`);
    }
  }
  return dirs;
}

/** Opens a fifo (or file) for writing without blocking: the client holds the read side. */
function openOut(path: string, what: string): net.Socket | undefined {
  if (!path) return undefined;
  const file = path.startsWith('file://') ? path.slice(7) : path;
  if (/^[a-z]+:\/\//.test(file)) throw new TtrpcError(Code.INVALID_ARGUMENT, `${what}: ${path}: only fifo and file:// outputs are supported`);
  let fd: number;
  try {
    fd = openSync(file, fsc.O_WRONLY | fsc.O_NONBLOCK);
  } catch (err) {
    throw new TtrpcError(Code.INVALID_ARGUMENT, `${what}: cannot open ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const sock = new net.Socket({ fd, readable: false, writable: true });
  sock.on('error', () => {});
  return sock;
}

export class LightvmTasks {
  readonly tasks = new Map<string, Task>();
  /** A task was deleted (the server exits once none is left and nobody is connected). */
  onEmpty: (() => void) | undefined;

  constructor(private readonly daemon: Client, private readonly events: EventPublisher, private readonly scope: string) {}

  private get(ctx: CallContext, id: string): Task {
    const t = this.tasks.get(`${nsOf(ctx)}/${id}`);
    if (!t) throw new TtrpcError(Code.NOT_FOUND, `task ${id} not found in namespace ${nsOf(ctx)}`);
    return t;
  }

  private noExec(execId: string): void {
    if (execId) throw new TtrpcError(Code.UNIMPLEMENTED, 'exec processes: a unikernel VM has one process');
  }

  /** Ends a task whose VM is gone: records the status, publishes /tasks/exit. */
  private finish(t: Task, status: number): void {
    if (t.status === Status.STOPPED) return;
    t.status = Status.STOPPED;
    t.exitStatus = status;
    t.exitedAt = new Date();
    t.out?.end();
    t.out = undefined;
    this.events.publish(t.ns, '/tasks/exit', TaskExitSchema, {
      containerId: t.id, id: t.id, pid: process.pid, exitStatus: status, exitedAt: timestampFromDate(t.exitedAt),
    });
    t.markExited();
  }

  private create(req: CreateTaskRequest, ctx: CallContext): Task {
    const ns = nsOf(ctx);
    if (this.tasks.has(`${ns}/${req.id}`)) throw new TtrpcError(Code.ALREADY_EXISTS, `task ${req.id} already exists in namespace ${ns}`);
    if (req.checkpoint) throw new TtrpcError(Code.UNIMPLEMENTED, 'create from a checkpoint is not supported yet');
    // A CRI pod sandbox (the pause container) is a placeholder: the pod's VMs are its containers.
    const sandbox = isSandbox(req.bundle);
    let spec;
    if (!sandbox) {
      try {
        spec = readBundle(req.bundle, { roots: layerDirs(req.rootfs, req.bundle) });
      } catch (err) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, (err as Error).message);
      }
    }
    const grace = spec?.annotations['org.lightvm.grace_ms'];
    let markExited = (): void => {};
    const exited = new Promise<void>((r) => (markExited = r));
    const t: Task = {
      ns, id: req.id, bundle: req.bundle, vm: vmNameFor(`${this.scope}/${ns}`, req.id), sandbox,
      kernel: spec?.kernelHostPath ?? '', kernelCopy: undefined, cmdline: spec?.cmdline ?? '', memoryMiB: spec?.memoryMiB ?? 4,
      graceMs: grace !== undefined && /^\d+$/.test(grace) ? Number(grace) : DEFAULT_GRACE_MS,
      stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal,
      out: undefined, status: Status.CREATED, exitStatus: 0, exitedAt: undefined, signal: undefined,
      exited, markExited,
    };
    t.out = openOut(req.stdout, 'stdout');
    // Nothing goes to stderr (the console is one stream): open and close it, which its reader sees as its end.
    if (req.stderr && !req.terminal) openOut(req.stderr, 'stderr')?.end();
    this.tasks.set(`${ns}/${req.id}`, t);
    this.events.publish(ns, '/tasks/create', TaskCreateSchema, {
      containerId: req.id, bundle: req.bundle, rootfs: req.rootfs, pid: process.pid,
      io: { stdin: req.stdin, stdout: req.stdout, stderr: req.stderr, terminal: req.terminal },
    });
    return t;
  }

  private async start(t: Task): Promise<void> {
    if (t.status !== Status.CREATED) throw new TtrpcError(Code.FAILED_PRECONDITION, `task ${t.id} is not created (it was started before)`);
    if (!t.sandbox) {
      try {
        // The daemon reads no file outside its allowed directories: the layers are not among them.
        const { runtime_dir: runtimeDir } = await this.daemon.request<{ runtime_dir: string }>('GET', '/v1/host');
        t.kernelCopy ??= placeKernel(runtimeDir, t.kernel, t.vm);
        // Before the VM exists: a `delete` run for this task must then ask the daemon.
        writeFileSync(join(t.bundle, VM_MARKER), `${t.vm}\n`);
        await this.daemon.request('POST', '/v1/vms', { image: t.kernelCopy, name: t.vm, memory: t.memoryMiB, cmdline: t.cmdline, lease_ms: LEASE_MS });
      } catch (err) {
        throw new TtrpcError(err instanceof ApiError && err.status < 500 ? Code.FAILED_PRECONDITION : Code.UNAVAILABLE, `task ${t.id}: the VM did not start: ${(err as Error).message}`);
      }
    }
    t.status = Status.RUNNING;
    this.events.publish(t.ns, '/tasks/start', TaskStartSchema, { containerId: t.id, pid: process.pid });
    if (!t.sandbox) void this.follow(t);
  }

  /** Copies the console to stdout while holding the VM's lease; then the exit. */
  private async follow(t: Task): Promise<void> {
    let lease = true;
    let written = 0;
    for (;;) {
      let skip = written;
      try {
        await this.daemon.stream(`/v1/vms/${t.vm}/console?follow=true${lease ? '&lease=true' : ''}`, (b) => {
          if (skip >= b.length) {
            skip -= b.length;
            return;
          }
          const chunk = skip > 0 ? b.subarray(skip) : b;
          skip = 0;
          written += chunk.length;
          t.out?.write(chunk);
        });
      } catch (err) {
        if (!(err instanceof ApiError)) await new Promise((r) => setTimeout(r, 200));
      }
      lease = false;
      if (t.status === Status.STOPPED) return;
      try {
        const { vm } = await this.daemon.request<{ vm: { state: string; exit: { kind: string; status?: number } | null } }>('GET', `/v1/vms/${t.vm}`);
        if (vm.state !== 'exited') continue;
        await this.daemon.request('DELETE', `/v1/vms/${t.vm}`).catch(() => {});
        const e = vm.exit;
        this.finish(t, e?.kind === 'halt' ? (e.status ?? 0) & 0xff : e?.kind === 'destroyed' ? 128 + (t.signal ?? SIGKILL) : EXIT_CRASHED);
        return;
      } catch (err) {
        // Destroyed (Kill 9, the shim's delete): its record went with it.
        if (err instanceof ApiError && err.status === 404) {
          this.finish(t, 128 + (t.signal ?? SIGKILL));
          return;
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }

  private async kill(t: Task, signal: number, all: boolean): Promise<void> {
    if (t.status === Status.STOPPED) {
      if (all) return;
      throw new TtrpcError(Code.NOT_FOUND, `task ${t.id}: process already finished`);
    }
    t.signal ??= signal;
    if (t.status === Status.CREATED || t.sandbox) {
      this.finish(t, 128 + signal);
      return;
    }
    if (signal === SIGKILL) {
      await this.daemon.request('DELETE', `/v1/vms/${t.vm}?wait=false`).catch((err: unknown) => {
        if (!(err instanceof ApiError && err.status === 404)) throw err;
      });
    } else if (STOP_SIGNALS.has(signal)) {
      this.daemon.request('POST', `/v1/vms/${t.vm}/shutdown`, { grace_ms: t.graceMs }).catch(() => {});
    } else {
      throw new TtrpcError(Code.INVALID_ARGUMENT, `task ${t.id}: signal ${signal} means nothing to a VM (SIGTERM, SIGINT, SIGHUP, SIGQUIT stop it with a grace, SIGKILL at once)`);
    }
  }

  private async pauseResume(t: Task, op: 'pause' | 'unpause'): Promise<void> {
    const want = op === 'pause' ? Status.RUNNING : Status.PAUSED;
    if (t.status !== want) throw new TtrpcError(Code.FAILED_PRECONDITION, `task ${t.id} is ${Status[t.status].toLowerCase()}, not ${Status[want].toLowerCase()}`);
    if (!t.sandbox) {
      try {
        await this.daemon.request('POST', `/v1/vms/${t.vm}/${op}`);
      } catch (err) {
        throw new TtrpcError(Code.FAILED_PRECONDITION, `task ${t.id}: ${(err as Error).message}`);
      }
    }
    t.status = op === 'pause' ? Status.PAUSED : Status.RUNNING;
    if (op === 'pause') this.events.publish(t.ns, '/tasks/paused', TaskPausedSchema, { containerId: t.id });
    else this.events.publish(t.ns, '/tasks/resumed', TaskResumedSchema, { containerId: t.id });
  }

  /**
   * The VM's CPU time and memory as cgroups v1 metrics, what runc's shim
   * answers on this kind of host: ctr task metrics and the CRI plugin
   * (kubelet's container stats) decode them by the Any's bare type name.
   * Memory usage is the guest memory backed by host pages, its limit the
   * guest's size; CPU is the executor's time running the guest (one vCPU).
   */
  private async metrics(t: Task): Promise<Any> {
    let cpuNs = 0;
    let residentKiB = 0;
    let memoryMiB = t.memoryMiB;
    if (!t.sandbox) {
      if (t.status !== Status.RUNNING && t.status !== Status.PAUSED) throw new TtrpcError(Code.NOT_FOUND, `task ${t.id} has no running VM to measure`);
      try {
        const { stats } = await this.daemon.request<{ stats: { cpu_ns: number; resident_kib: number; memory_mib: number } }>('GET', `/v1/vms/${t.vm}/stats`);
        ({ cpu_ns: cpuNs, resident_kib: residentKiB, memory_mib: memoryMiB } = stats);
      } catch (err) {
        // Ended meanwhile (409) or destroyed (404): containerd skips a NotFound quietly.
        if (err instanceof ApiError && (err.status === 404 || err.status === 409)) throw new TtrpcError(Code.NOT_FOUND, `task ${t.id}: its VM has ended`);
        throw new TtrpcError(Code.UNAVAILABLE, `task ${t.id}: the daemon gave no stats: ${(err as Error).message}`);
      }
    }
    const cpu = BigInt(Math.round(cpuNs));
    const rss = BigInt(residentKiB) * 1024n;
    const m = create(MetricsSchema, {
      cpu: { usage: { total: cpu, perCpu: [cpu] } },
      memory: { rss, totalRss: rss, usage: { usage: rss, limit: BigInt(Math.round(memoryMiB * 1048576)) } },
    });
    return { $typeName: 'google.protobuf.Any', typeUrl: MetricsSchema.typeName, value: toBinary(MetricsSchema, m) };
  }

  private exitedAt(t: Task): Timestamp | undefined {
    return t.exitedAt ? timestampFromDate(t.exitedAt) : undefined;
  }

  /** Forgets a task, ending its VM if it still runs (the `delete` of a lost server does the same from outside). */
  private async remove(t: Task): Promise<void> {
    this.tasks.delete(`${t.ns}/${t.id}`);
    t.out?.end();
    let gone = true;
    if (!t.sandbox && t.status !== Status.CREATED && t.status !== Status.STOPPED) {
      gone = await this.daemon.request('DELETE', `/v1/vms/${t.vm}`).then(() => true, (err: unknown) => err instanceof ApiError && err.status === 404);
    }
    removeKernel(t.kernelCopy);
    // Its VM is gone: containerd's `delete` after Shutdown is answered without Node.
    if (gone) rmSync(join(t.bundle, VM_MARKER), { force: true });
    if (this.tasks.size === 0) this.onEmpty?.();
  }

  readonly service: ServiceImpl<typeof TaskService> = {
    create: async (req, ctx) => ({ pid: (this.create(req, ctx), process.pid) }),
    start: async (req, ctx) => {
      this.noExec(req.execId);
      await this.start(this.get(ctx, req.id));
      return { pid: process.pid };
    },
    wait: async (req, ctx) => {
      this.noExec(req.execId);
      const t = this.get(ctx, req.id);
      await t.exited;
      return { exitStatus: t.exitStatus, exitedAt: this.exitedAt(t) };
    },
    kill: async (req, ctx) => {
      this.noExec(req.execId);
      await this.kill(this.get(ctx, req.id), req.signal, req.all);
      return {};
    },
    delete: async (req, ctx) => {
      this.noExec(req.execId);
      const t = this.get(ctx, req.id);
      if (t.status === Status.RUNNING || t.status === Status.PAUSED) throw new TtrpcError(Code.FAILED_PRECONDITION, `task ${t.id} must be stopped before it is deleted`);
      if (t.status === Status.CREATED) this.finish(t, 128 + SIGKILL);
      await this.remove(t);
      this.events.publish(t.ns, '/tasks/delete', TaskDeleteSchema, {
        containerId: t.id, id: t.id, pid: process.pid, exitStatus: t.exitStatus, exitedAt: this.exitedAt(t),
      });
      return { pid: process.pid, exitStatus: t.exitStatus, exitedAt: this.exitedAt(t) };
    },
    state: async (req, ctx) => {
      const t = this.get(ctx, req.id);
      return {
        id: t.id, bundle: t.bundle, pid: process.pid, status: t.status, stdin: t.stdin, stdout: t.stdout, stderr: t.stderr,
        terminal: t.terminal, exitStatus: t.exitStatus, exitedAt: this.exitedAt(t), execId: req.execId,
      };
    },
    pids: async (req, ctx) => {
      this.get(ctx, req.id);
      return { processes: [{ pid: process.pid }] };
    },
    connect: async () => ({ shimPid: process.pid, taskPid: process.pid, version: SHIM_VERSION }),
    shutdown: async () => {
      if (this.tasks.size === 0) this.onEmpty?.();
      return {};
    },
    pause: async (req, ctx) => {
      await this.pauseResume(this.get(ctx, req.id), 'pause');
      return {};
    },
    resume: async (req, ctx) => {
      await this.pauseResume(this.get(ctx, req.id), 'unpause');
      return {};
    },
    resizePty: async (req, ctx) => {
      this.get(ctx, req.id);
      return {};
    },
    closeIO: async (req, ctx) => {
      this.get(ctx, req.id);
      return {};
    },
    stats: async (req, ctx) => ({ stats: await this.metrics(this.get(ctx, req.id)) }),
  };
}

function isSandbox(bundle: string): boolean {
  try {
    const cfg = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { annotations?: Record<string, string> };
    return cfg.annotations?.['io.kubernetes.cri.container-type'] === 'sandbox';
  } catch {
    return false;
  }
}
