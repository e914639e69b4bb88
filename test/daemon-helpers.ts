// Shared by the daemon test files: a real lightvmd (the built CLI, dist/) on a
// temporary runtime directory, raw HTTP over its unix socket, the CLI as a
// user runs it, and what the daemon and its executor processes hold (open
// descriptors) for the leak checks. Nothing here fakes KVM or the daemon.
import { execFile, execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readlinkSync, rmSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { ApiErrorBody, HostInfo, PoolView } from '../src/daemon/schemas.js';
import { ROOT, scaled, sleep } from './helpers.js';

export const CLI = join(ROOT, 'dist', 'cli', 'main.js');

/** The API's view of a VM (the vm schema's type, src/daemon/view.ts). */
export type { VmView } from '../src/daemon/view.js';

/** The API's answers (src/daemon/schemas.ts: the types of their schemas). */
export type { ApiErrorBody, HostInfo, PoolView };

// ---- raw HTTP on the daemon's socket ----

export interface Reply {
  status: number;
  headers: http.IncomingHttpHeaders;
  text: string;
  /** The body parsed as JSON, or undefined if it is not JSON. */
  json: unknown;
}

export interface RequestOptions {
  /** Sent as JSON (content-type application/json). */
  body?: unknown;
  /** Sent as is, with the headers given. */
  raw?: string | Buffer;
  headers?: Record<string, string>;
  agent?: http.Agent;
  timeoutMs?: number;
}

/** One HTTP request on a unix socket; resolves with whatever status comes back. */
export function request(socket: string, method: string, path: string, opts: RequestOptions = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let data: string | Buffer | undefined = opts.raw;
    const headers: Record<string, string | number> = { ...(opts.headers ?? {}) };
    if (opts.body !== undefined) {
      data = JSON.stringify(opts.body);
      headers['content-type'] ??= 'application/json';
    }
    if (data !== undefined) headers['content-length'] = Buffer.byteLength(data);
    const req = http.request({ socketPath: socket, method, path, headers, agent: opts.agent ?? false }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('error', reject);
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        let json: unknown;
        try {
          json = text ? JSON.parse(text) : undefined;
        } catch {
          json = undefined;
        }
        resolve({ status: res.statusCode ?? 0, headers: res.headers, text, json });
      });
    });
    const timeoutMs = scaled(opts.timeoutMs ?? 30_000);
    req.setTimeout(timeoutMs, () => req.destroy(new Error(`${method} ${path}: no answer after ${timeoutMs} ms`)));
    req.on('error', reject);
    req.end(data);
  });
}

/** A request that must succeed with `status`; returns the JSON body. */
export async function ok<T>(socket: string, method: string, path: string, body?: unknown, status = 200): Promise<T> {
  const r = await request(socket, method, path, body === undefined ? {} : { body });
  if (r.status !== status) throw new Error(`${method} ${path}: expected ${status}, got ${r.status}: ${r.text}`);
  return r.json as T;
}

/** A response body read as it arrives (console with follow, events). */
export interface Stream {
  status: number;
  /** Everything received so far. */
  text(): string;
  /** Resolves when the server ends the body. */
  ended: Promise<void>;
  close(): void;
}

export function openStream(socket: string, path: string): Promise<Stream> {
  return new Promise((resolve, reject) => {
    let text = '';
    const req = http.request({ socketPath: socket, method: 'GET', path, agent: false }, (res) => {
      res.setEncoding('utf8');
      res.on('data', (s: string) => (text += s));
      const ended = new Promise<void>((r) => {
        res.on('end', () => r());
        res.on('close', () => r());
      });
      resolve({ status: res.statusCode ?? 0, text: () => text, ended, close: () => req.destroy() });
    });
    req.on('error', (err) => {
      // After close() the request is destroyed on purpose.
      if (!req.destroyed || (err as NodeJS.ErrnoException).code !== 'ECONNRESET') reject(err);
    });
    req.end();
  });
}

// ---- a real daemon ----

export interface TestDaemon {
  runtimeDir: string;
  socket: string;
  pid: number;
  child: ChildProcess;
  /** What the daemon wrote on stderr so far. */
  stderr(): string;
  /** Its log so far (pino, one JSON object per line, on stdout; --log-level warn) and its stderr. */
  log(): string;
  host(): Promise<HostInfo>;
  /**
   * SIGTERM, waits for the daemon to exit, then checks that no process
   * (daemon or executor) mentioning the runtime directory is left; kills
   * and names any that are, and removes the directory. settle (default
   * true): first wait until no executor is still starting.
   */
  stop(opts?: { settle?: boolean; timeoutMs?: number }): Promise<void>;
}

/** Processes whose command line mentions `dir` (pgrep -f), by pid. */
export function processesOf(dir: string): { pid: number; cmd: string }[] {
  try {
    const out = execFileSync('pgrep', ['-af', dir], { encoding: 'utf8' });
    return out.trim().split('\n').filter(Boolean).map((l) => {
      const sp = l.indexOf(' ');
      return { pid: Number(l.slice(0, sp)), cmd: l.slice(sp + 1) };
    });
  } catch {
    return []; // pgrep exits 1 when nothing matches
  }
}

/** Executor processes (executor-main) of a runtime directory. */
export function executorProcesses(dir: string): { pid: number; cmd: string }[] {
  return processesOf(dir).filter((p) => p.cmd.includes('executor-main'));
}

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

export interface StartOptions {
  /** More daemon options (--pool, --vms-per-executor, ...). */
  args?: string[];
  /** Let the daemon create the runtime directory itself (a subdirectory "run" of a new temporary one). */
  subdir?: boolean;
  /** Start the daemon under this umask (e.g. "000"), to see that modes are set, not inherited. */
  umask?: string;
  prefix?: string;
  /** An existing runtime directory (another daemon's, stopped): this daemon's stop() removes it. */
  runtimeDir?: string;
  /** Only the default path roots (runtime directory, built-in images): no ALLOW_TEST_PATHS. */
  confined?: boolean;
  /** More environment for the daemon (e.g. LIGHTVM_START_TIMEOUT_MS). */
  env?: Record<string, string>;
}

/**
 * The tests' files (images built into temporary directories, disks,
 * snapshots, the repo's examples) lie in these: a daemon allows only its
 * runtime directory and the built-in images unless told more.
 */
export const ALLOW_TEST_PATHS = ['--allow-path', tmpdir(), '--allow-path', ROOT];

/**
 * Waits until every executor process of the runtime directory is one the
 * daemon lists (none is still starting), the same for 300 ms in a row.
 */
export async function settle(socket: string, runtimeDir: string, timeoutMs = 10_000): Promise<void> {
  timeoutMs = scaled(timeoutMs);
  const t0 = Date.now();
  let sameSince = 0;
  let last = '';
  for (;;) {
    let h: HostInfo;
    try {
      h = await ok<HostInfo>(socket, 'GET', '/v1/host');
    } catch {
      return; // not serving: nothing to wait for
    }
    const listed = h.executors.map((e) => e.pid).sort().join(',');
    const running = executorProcesses(runtimeDir).map((p) => p.pid).sort().join(',');
    const now = `${listed}|${running}`;
    if (listed === running && now === last) {
      if (Date.now() - sameSince >= 300) return;
    } else {
      sameSince = Date.now();
    }
    last = now;
    if (Date.now() - t0 > timeoutMs) throw new Error(`executors did not settle within ${timeoutMs} ms: listed ${listed}, running ${running}`);
    await sleep(50);
  }
}

// A test file stopped by a signal (the runner's timeout, ^C) still runs its
// 'exit' handlers, which take its daemons and their executors down.
for (const [sig, n] of [['SIGTERM', 15], ['SIGINT', 2], ['SIGHUP', 1]] as const) {
  process.once(sig, () => process.exit(128 + n));
}

/**
 * Starts `lightvm daemon` (the built CLI) on a new temporary runtime
 * directory and waits until it answers GET /v1/host.
 */
export async function startTestDaemon(options: StartOptions = {}): Promise<TestDaemon> {
  const base = options.runtimeDir ?? mkdtempSync(join(tmpdir(), `lightvm-t${options.prefix ?? 'd'}-`));
  const runtimeDir = options.subdir ? join(base, 'run') : base;
  const socket = join(runtimeDir, 'lightvmd.sock');
  const argv = [CLI, 'daemon', '--runtime-dir', runtimeDir, '--log-level', 'warn', ...(options.confined ? [] : ALLOW_TEST_PATHS), ...(options.args ?? [])];
  const env = { ...process.env, ...options.env };
  const child = options.umask === undefined
    ? spawn(process.execPath, argv, { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env })
    // exec: the daemon is the shell's process itself, so child.pid is the daemon's.
    : spawn('/bin/sh', ['-c', `umask ${options.umask}; exec "$0" "$@"`, process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'], cwd: ROOT, env });
  let stderr = '';
  let log = '';
  child.stderr!.setEncoding('utf8');
  child.stderr!.on('data', (s: string) => {
    stderr += s;
    log += s;
  });
  child.stdout!.setEncoding('utf8');
  child.stdout!.on('data', (s: string) => (log += s));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Whatever happens to the test process, the daemon goes with it, and so do
  // its executors: they are detached (they outlive a daemon by design), and
  // one left running a guest that spins takes a core from every later test.
  const reap = (): void => {
    child.kill('SIGKILL');
    for (const p of processesOf(base)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  };
  process.once('exit', reap);
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`lightvmd exited with ${child.exitCode} before it served: ${stderr}`);
    if (existsSync(socket)) {
      try {
        const r = await request(socket, 'GET', '/v1/host', { timeoutMs: 2000 });
        if (r.status === 200) break;
      } catch {
        // Not listening yet.
      }
    }
    if (Date.now() - t0 > scaled(30_000)) {
      child.kill('SIGKILL');
      throw new Error(`lightvmd did not serve ${socket} within ${scaled(30)} s: ${stderr}`);
    }
    await sleep(20);
  }
  let stopped = false;
  return {
    runtimeDir, socket, pid: child.pid!, child,
    stderr: () => stderr,
    log: () => log,
    host: () => ok<HostInfo>(socket, 'GET', '/v1/host'),
    async stop(opts: { settle?: boolean; timeoutMs?: number } = {}) {
      if (stopped) return;
      stopped = true;
      process.off('exit', reap);
      const alive = (): boolean => child.exitCode === null && child.signalCode === null;
      // A daemon stopped while it starts an executor leaves that executor
      // behind (see daemon.test.ts): the other files wait until none is starting.
      if (alive() && opts.settle !== false) await settle(socket, runtimeDir).catch(() => {});
      if (alive()) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), scaled(opts.timeoutMs ?? 20_000));
        await exited;
        clearTimeout(t);
      }
      // Executors exit right after the daemon's stop: give them a moment.
      const t1 = Date.now();
      while (processesOf(base).length && Date.now() - t1 < scaled(5000)) await sleep(50);
      const left = processesOf(base);
      for (const p of left) {
        try {
          process.kill(p.pid, 'SIGKILL');
        } catch {
          // Gone meanwhile.
        }
      }
      rmSync(base, { recursive: true, force: true });
      if (left.length) {
        throw new Error(`processes left behind by the daemon of ${runtimeDir}: ${left.map((p) => `${p.pid} ${p.cmd}`).join('; ')}`);
      }
    },
  };
}

// ---- the CLI ----

export interface CliResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** Runs `node dist/cli/main.js ...args` to its end. */
export function lightvm(args: string[], timeoutMs = 20_000): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [CLI, ...args], { timeout: scaled(timeoutMs), cwd: ROOT }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, stdout, stderr });
    });
  });
}

/** Output as lines, without the final newline. */
export const outLines = (s: string): string[] => s.replace(/\n$/, '').split('\n').filter((l, i, all) => l !== '' || all.length > 1);

// ---- what other processes hold ----

/** Targets of a process's open descriptors ("anon_inode:kvm-vm", "socket:[123]", ...), sorted, fd numbers left out. */
export function fdTargets(pid: number): string[] {
  const out: string[] = [];
  for (const fd of readdirSync(`/proc/${pid}/fd`)) {
    try {
      // Socket and pipe inodes differ from one connection to the next: count their kind only.
      out.push(readlinkSync(`/proc/${pid}/fd/${fd}`).replace(/:\[\d+\]$/, ''));
    } catch {
      // Closed while we read.
    }
  }
  return out.sort();
}

/** "a -> b" differences of two sorted lists of descriptor targets, by kind and count. */
export function fdDiff(before: string[], after: string[]): string {
  const count = (l: string[]): Map<string, number> => {
    const m = new Map<string, number>();
    for (const x of l) m.set(x, (m.get(x) ?? 0) + 1);
    return m;
  };
  const a = count(before);
  const b = count(after);
  const keys = [...new Set([...a.keys(), ...b.keys()])].sort();
  return keys.filter((k) => a.get(k) !== b.get(k)).map((k) => `${k}: ${a.get(k) ?? 0} -> ${b.get(k) ?? 0}`).join(', ');
}

/** Polls an async condition every 20 ms until it holds; fails with `what` after timeoutMs. */
export async function until(what: string, cond: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  timeoutMs = scaled(timeoutMs);
  const t0 = Date.now();
  while (!(await cond())) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(20);
  }
}
