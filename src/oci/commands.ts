// The commands of lightvm-oci, with runc's shapes, exit codes and state JSON.
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { constants as fsc } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ApiError, Client } from '../cli/client.js';
import { checkElf, readBundle } from '../container/bundle.js';
import { placeKernel, removeKernel } from '../container/kernel-copy.js';
import { vmNameFor } from '../container/names.js';
import { mkfifo } from '../sys/fifo.js';
import { close } from '../sys/libc.js';
import { openPty, sendFd, type Pty } from '../sys/terminal.js';
import { flagValue, parseArgs, UsageError, type FlagSpec, type ParsedArgs } from './args.js';
import {
  checkId, containerDir, fifoPath, localStatus, monitorAlive, OCI_VERSION, procStat, readRecord, stateJson, writeRecord,
  type ContainerRecord, type Status,
} from './state.js';

export const VERSION = '0.1.0';
/** Default shutdown grace (ms) between the guest's shutdown request and a destroy; annotation org.lightvm.grace_ms. */
export const DEFAULT_GRACE_MS = 5000;
const GRACE_ANNOTATION = 'org.lightvm.grace_ms';
const MONITOR = join(dirname(fileURLToPath(import.meta.url)), 'monitor-main.js');

/** An error of a command: one line on stderr, exit 1. */
export class OciError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'OciError';
  }
}

export interface Globals {
  root: string;
  /** The daemon's socket (--lightvm-socket, $LIGHTVM_SOCKET, the default). */
  socket: string;
}

export type Command = (g: Globals, argv: string[]) => Promise<number>;

function parse(argv: string[], spec: FlagSpec, cmd: string, ids: [number, number]): ParsedArgs {
  const p = parseArgs(argv, spec, cmd);
  const [min, max] = ids;
  if (p.positional.length < min || p.positional.length > max) {
    throw new UsageError(`${cmd}: expects ${min === max ? min : `${min} to ${max}`} argument(s), got ${p.positional.length}${p.positional.length ? ` (${p.positional.join(' ')})` : ''}`);
  }
  return p;
}

function mustRecord(g: Globals, id: string): ContainerRecord {
  const rec = readRecord(g.root, id);
  if (!rec) throw new OciError(`container ${id} does not exist`);
  return rec;
}

interface VmState {
  vm: { state: string };
}

/** Status with paused from the daemon. */
async function status(g: Globals, rec: ContainerRecord): Promise<Status> {
  const s = localStatus(g.root, rec);
  if (s !== 'running') return s;
  const client = new Client(rec.socket);
  try {
    const r = await client.request<VmState>('GET', `/v1/vms/${rec.vm}`);
    return r.vm.state === 'paused' ? 'paused' : 'running';
  } catch {
    return 'running';
  } finally {
    client.close();
  }
}

const createFlags: FlagSpec = {
  flags: {
    bundle: 'value', 'console-socket': 'value', 'pid-file': 'value', 'pidfd-socket': 'value',
    'no-pivot': 'bool', 'no-new-keyring': 'bool', 'preserve-fds': 'value',
  },
  aliases: { b: 'bundle' },
};

/** create: validates the bundle, records the container, starts its monitor, writes the pid file last. */
async function create(g: Globals, argv: string[], opts: { detachMonitor: boolean } = { detachMonitor: true }): Promise<{ rec: ContainerRecord; monitor: ReturnType<typeof spawn> }> {
  const p = parse(argv, createFlags, 'create', [1, 1]);
  const id = p.positional[0]!;
  checkId(id);
  const spec = readBundle(flagValue(p, 'bundle') ?? process.cwd());
  const consoleSocket = flagValue(p, 'console-socket');
  if (spec.terminal && !consoleSocket) throw new OciError(`${join(spec.bundle, 'config.json')}: process.terminal is true: create needs --console-socket`);
  const graceText = spec.annotations[GRACE_ANNOTATION];
  const graceMs = graceText === undefined ? DEFAULT_GRACE_MS : Number(graceText);
  if (!Number.isInteger(graceMs) || graceMs < 0 || graceMs > 600_000) {
    throw new OciError(`${join(spec.bundle, 'config.json')}: annotations["${GRACE_ANNOTATION}"]: "${graceText}" is not a whole number of ms from 0 to 600000`);
  }
  // The daemon must be there now: `start` cannot report errors of the container's process.
  const client = new Client(g.socket);
  let runtimeDir: string;
  try {
    ({ runtime_dir: runtimeDir } = await client.request<{ runtime_dir: string }>('GET', '/v1/host'));
  } finally {
    client.close();
  }
  mkdirSync(g.root, { recursive: true, mode: 0o711 });
  const dir = containerDir(g.root, id);
  try {
    mkdirSync(dir, { mode: 0o700 });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') throw new OciError(`container with id exists: ${id}`);
    throw err;
  }
  let monitor: ReturnType<typeof spawn> | undefined;
  let pty: Pty | undefined;
  const vm = vmNameFor(resolve(g.root), id);
  let kernel: string | undefined;
  try {
    // A copy: the daemon reads it later, whatever becomes of the rootfs (or of its mount namespace).
    kernel = placeKernel(runtimeDir, spec.kernelHostPath, vm);
    checkElf(kernel, `${spec.kernelPath} in the rootfs (copied)`);
    mkfifo(fifoPath(dir), 0o600);
    const rec: ContainerRecord = {
      id, bundle: spec.bundle, rootfs: spec.rootfs, created: new Date().toISOString(), annotations: spec.annotations,
      vm, socket: g.socket, kernel, kernelPath: spec.kernelPath, cmdline: spec.cmdline,
      memoryMiB: spec.memoryMiB, terminal: spec.terminal, graceMs, monitorPid: 0, monitorStart: '',
    };
    // The monitor inherits our stdio: the caller's pipes (or fifos) are the container's.
    // With a terminal, its stdio is a pty's slave and the caller gets the master.
    if (spec.terminal) {
      pty = openPty();
      sendFd(consoleSocket!, pty.master, pty.name);
    }
    const stdio = pty ? [pty.slave, pty.slave, pty.slave] : 'inherit';
    monitor = spawn(process.execPath, ['--no-warnings', MONITOR, g.root, id], { stdio, detached: opts.detachMonitor });
    const pid = monitor.pid;
    if (pid === undefined) throw new OciError(`container ${id}: the monitor process did not start`);
    const st = procStat(pid);
    if (!st) throw new OciError(`container ${id}: the monitor process (pid ${pid}) ended at once`);
    rec.monitorPid = pid;
    rec.monitorStart = st.start;
    writeRecord(g.root, rec);
    const pidFile = flagValue(p, 'pid-file');
    if (pidFile) {
      // Last, whole: callers take the container as created once this file exists.
      const abs = resolve(pidFile);
      const tmp = join(dirname(abs), `.${id}.pid.tmp`);
      writeFileSync(tmp, String(pid));
      renameSync(tmp, abs);
    }
    return { rec, monitor };
  } catch (err) {
    if (monitor?.pid) monitor.kill('SIGKILL');
    rmSync(dir, { recursive: true, force: true });
    removeKernel(kernel);
    throw err;
  } finally {
    if (pty) {
      close(pty.master);
      close(pty.slave);
    }
  }
}

const createCmd: Command = async (g, argv) => {
  const { monitor } = await create(g, argv);
  // The monitor lives on after us (reparented to the caller's subreaper).
  monitor.unref();
  return 0;
};

/** start: opens exec.fifo, which lets the monitor go on. */
async function start(g: Globals, id: string): Promise<void> {
  const rec = mustRecord(g, id);
  const s = localStatus(g.root, rec);
  if (s !== 'created') throw new OciError(`cannot start a container that is ${s}: ${id}`);
  const fifo = fifoPath(containerDir(g.root, id));
  // Non-blocking: a monitor that died must not leave us waiting forever.
  const fh = await open(fifo, fsc.O_RDONLY | fsc.O_NONBLOCK);
  try {
    const buf = Buffer.alloc(1);
    const t0 = Date.now();
    for (;;) {
      let n = 0;
      try {
        n = (await fh.read(buf, 0, 1, null)).bytesRead;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EAGAIN') throw err;
      }
      if (n > 0) break;
      if (!monitorAlive(rec)) throw new OciError(`cannot start container ${id}: its monitor (pid ${rec.monitorPid}) has exited`);
      if (Date.now() - t0 > 10_000) throw new OciError(`cannot start container ${id}: its monitor (pid ${rec.monitorPid}) did not answer within 10 s`);
      await new Promise((r) => setTimeout(r, 2));
    }
  } finally {
    await fh.close();
  }
  rmSync(fifo, { force: true });
}

const startCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: {} }, 'start', [1, 1]);
  await start(g, p.positional[0]!);
  return 0;
};

const stateCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: {} }, 'state', [1, 1]);
  const rec = mustRecord(g, p.positional[0]!);
  process.stdout.write(`${JSON.stringify(stateJson(rec, await status(g, rec)), null, 2)}\n`);
  return 0;
};

const SIGNALS: Record<string, number> = { ...constants.signals } as unknown as Record<string, number>;

export function parseSignal(s: string): number {
  if (/^\d+$/.test(s)) {
    const n = Number(s);
    if (n >= 1 && n <= 64) return n;
  } else {
    const name = s.toUpperCase().startsWith('SIG') ? s.toUpperCase() : `SIG${s.toUpperCase()}`;
    const n = SIGNALS[name];
    if (n !== undefined) return n;
  }
  throw new UsageError(`kill: unknown signal "${s}"`);
}

function signalMonitor(rec: ContainerRecord, sig: number): void {
  if (!monitorAlive(rec)) return;
  try {
    process.kill(rec.monitorPid, sig);
  } catch {
    // Gone meanwhile.
  }
}

/** Ends the VM now (a SIGKILL cannot be caught by the monitor) and then the monitor. */
async function destroy(rec: ContainerRecord): Promise<void> {
  const client = new Client(rec.socket);
  try {
    await client.request('DELETE', `/v1/vms/${rec.vm}`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  } finally {
    client.close();
  }
  signalMonitor(rec, constants.signals.SIGKILL);
}

const STOPPING = new Set<number>([constants.signals.SIGTERM, constants.signals.SIGINT, constants.signals.SIGHUP, constants.signals.SIGQUIT]);

const killCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: { all: 'bool' }, aliases: { a: 'all' } }, 'kill', [1, 2]);
  const id = p.positional[0]!;
  const sig = parseSignal(p.positional[1] ?? 'SIGTERM');
  const rec = mustRecord(g, id);
  const s = localStatus(g.root, rec);
  if (s === 'stopped') {
    if (p.flags.has('all')) return 0;
    throw new OciError(`container ${id} is not running`);
  }
  if (s === 'created') {
    // No VM yet: the monitor, blocked on its fifo, dies of the signal itself.
    signalMonitor(rec, sig);
    return 0;
  }
  if (sig === constants.signals.SIGKILL) await destroy(rec);
  else if (STOPPING.has(sig)) signalMonitor(rec, sig);
  else throw new OciError(`kill: signal ${sig} means nothing to a VM (SIGTERM, SIGINT, SIGHUP and SIGQUIT stop it with a grace, SIGKILL at once)`);
  return 0;
};

const deleteCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: { force: 'bool' }, aliases: { f: 'force' } }, 'delete', [1, 1]);
  const id = p.positional[0]!;
  const force = p.flags.has('force');
  checkId(id);
  let rec: ContainerRecord | undefined;
  try {
    rec = readRecord(g.root, id);
  } catch (err) {
    if (!force) throw err;
  }
  const dir = containerDir(g.root, id);
  if (!rec) {
    // runc: delete --force of a container that does not exist succeeds.
    if (force) {
      rmSync(dir, { recursive: true, force: true });
      return 0;
    }
    throw new OciError(`container ${id} does not exist`);
  }
  const s = localStatus(g.root, rec);
  if (s !== 'stopped' && !force) throw new OciError(`cannot delete container ${id} that is not stopped: ${s}`);
  // Also when stopped: the monitor may have died without its VM ending (the daemon's lease ends it too).
  await destroy(rec);
  rmSync(dir, { recursive: true, force: true });
  removeKernel(rec.kernel);
  return 0;
};

const runCmd: Command = async (g, argv) => {
  const p = parseArgs(argv, { flags: { ...createFlags.flags, detach: 'bool', keep: 'bool', 'no-subreaper': 'bool' }, aliases: { ...createFlags.aliases, d: 'detach' } }, 'run');
  const detach = p.flags.has('detach');
  const createArgv = argv.filter((a) => !/^(-d|--detach|--keep|--no-subreaper)(=.*)?$/.test(a));
  const { rec, monitor } = await create(g, createArgv, { detachMonitor: detach });
  if (detach) {
    monitor.unref();
    await start(g, rec.id);
    return 0;
  }
  const exited = new Promise<number>((r) => monitor.once('exit', (code, sig) => r(code ?? 128 + (sig ? constants.signals[sig] : 0))));
  // ^C or a TERM to `run` stops the container the same way.
  const forward = (sig: NodeJS.Signals): void => void monitor.kill(sig);
  for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.on(s, forward);
  try {
    await start(g, rec.id);
    const code = await exited;
    if (!p.flags.has('keep')) {
      await destroy(rec).catch(() => {});
      rmSync(containerDir(g.root, rec.id), { recursive: true, force: true });
      removeKernel(rec.kernel);
    }
    return code;
  } finally {
    for (const s of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) process.off(s, forward);
  }
};

const psCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: { format: 'value' }, aliases: { f: 'format' } }, 'ps', [1, 1]);
  const rec = mustRecord(g, p.positional[0]!);
  const pids = localStatus(g.root, rec) === 'stopped' ? [] : [rec.monitorPid];
  const format = flagValue(p, 'format') ?? 'table';
  if (format === 'json') process.stdout.write(`${JSON.stringify(pids)}\n`);
  else if (format === 'table') process.stdout.write(`PID\n${pids.map((x) => `${x}\n`).join('')}`);
  else throw new UsageError(`ps: --format: "${format}" is neither table nor json`);
  return 0;
};

const listCmd: Command = async (g, argv) => {
  const p = parse(argv, { flags: { format: 'value', quiet: 'bool' }, aliases: { f: 'format', q: 'quiet' } }, 'list', [0, 0]);
  const ids = existsSync(g.root) ? readdirSync(g.root).filter((d) => existsSync(join(g.root, d, 'state.json'))).sort() : [];
  if (p.flags.has('quiet')) {
    process.stdout.write(ids.map((i) => `${i}\n`).join(''));
    return 0;
  }
  const states: Record<string, unknown>[] = [];
  for (const id of ids) {
    const rec = readRecord(g.root, id);
    if (rec) states.push(stateJson(rec, await status(g, rec)));
  }
  const format = flagValue(p, 'format') ?? 'table';
  if (format === 'json') {
    process.stdout.write(`${JSON.stringify(states)}\n`);
  } else if (format === 'table') {
    const rows = [['ID', 'PID', 'STATUS', 'BUNDLE', 'CREATED', 'OWNER'], ...states.map((s) => [s.id, s.pid, s.status, s.bundle, s.created, 'root'].map(String))];
    const w = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    process.stdout.write(rows.map((r) => r.map((c, i) => c.padEnd(w[i]!)).join('   ').trimEnd()).join('\n') + '\n');
  } else {
    throw new UsageError(`list: --format: "${format}" is neither table nor json`);
  }
  return 0;
};

const featuresCmd: Command = async (_g, argv) => {
  parse(argv, { flags: {} }, 'features', [0, 0]);
  process.stdout.write(`${JSON.stringify({
    ociVersionMin: '1.0.0',
    ociVersionMax: OCI_VERSION,
    hooks: [],
    mountOptions: [],
    annotations: { 'org.lightvm.kernel': 'path of the unikernel in the rootfs (else process.args[0], else /unikernel.elf)', [GRACE_ANNOTATION]: 'ms between the guest\'s shutdown request and a destroy' },
  }, null, 2)}\n`);
  return 0;
};

function pauseLike(op: 'pause' | 'unpause', want: Status): Command {
  const name = op === 'pause' ? 'pause' : 'resume';
  return async (g, argv) => {
    const p = parse(argv, { flags: {} }, name, [1, 1]);
    const rec = mustRecord(g, p.positional[0]!);
    const s = await status(g, rec);
    if (s !== want) throw new OciError(`cannot ${name} container ${rec.id} that is ${s}`);
    const client = new Client(rec.socket);
    try {
      await client.request('POST', `/v1/vms/${rec.vm}/${op}`);
    } finally {
      client.close();
    }
    return 0;
  };
}

function unsupported(name: string, later = ''): Command {
  return async () => {
    throw new OciError(`${name} is not supported by lightvm-oci${later}`);
  };
}

export const COMMANDS: Record<string, Command> = {
  create: createCmd,
  start: startCmd,
  state: stateCmd,
  kill: killCmd,
  delete: deleteCmd,
  run: runCmd,
  ps: psCmd,
  list: listCmd,
  features: featuresCmd,
  pause: pauseLike('pause', 'running'),
  resume: pauseLike('unpause', 'paused'),
  exec: unsupported('exec', ': a unikernel VM has one process'),
  update: unsupported('update'),
  checkpoint: unsupported('checkpoint', ' yet (lightvm save does it for a VM)'),
  restore: unsupported('restore', ' yet (lightvm restore does it for a VM)'),
  events: unsupported('events'),
};
