// A real lightvmd for benchmarks: started as its own process on a
// temporary runtime directory, stopped (with its executors) at the end.
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Client } from '../cli/client.js';
import { PACKAGE_ROOT } from '../toolstack/images.js';

export interface BenchDaemon {
  client: Client;
  socket: string;
  runtimeDir: string;
  process: ChildProcess;
  stop(): Promise<void>;
}

export async function startDaemon(args: string[] = []): Promise<BenchDaemon> {
  const runtimeDir = mkdtempSync(join(tmpdir(), 'lightvm-bench-'));
  const socket = join(runtimeDir, 'lightvmd.sock');
  const fromSource = import.meta.url.endsWith('.ts');
  const cli = join(PACKAGE_ROOT, fromSource ? 'src/cli/main.ts' : 'dist/cli/main.js');
  // A benchmark's VMs are not worth keeping: they end with the daemon.
  const child = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), cli, 'daemon', '--runtime-dir', runtimeDir,
    '--log-level', 'warn', '--destroy-on-stop', ...args], { stdio: ['ignore', 'ignore', 'inherit'], cwd: PACKAGE_ROOT });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  // Whatever happens to the benchmark, its daemon (and the daemon's executors) go with it.
  const reap = (): void => void child.kill('SIGTERM');
  process.once('exit', reap);
  for (let i = 0; !existsSync(socket); i++) {
    if (child.exitCode !== null || i > 600) throw new Error('lightvmd did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  const client = new Client(socket);
  return {
    client, socket, runtimeDir, process: child,
    async stop() {
      process.off('exit', reap);
      client.close();
      child.kill('SIGTERM');
      await exited;
      rmSync(runtimeDir, { recursive: true, force: true });
    },
  };
}

/** Waits until the daemon's pool for this size holds at least `depth` warmed-up shells. */
export async function waitForPool(client: Client, memoryMiB: number, depth: number, timeoutMs = 30_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const { pools } = await client.request<{ pools: { memory_mib: number; warm: number }[] }>('GET', '/v1/pool');
    if ((pools.find((p) => p.memory_mib === memoryMiB)?.warm ?? 0) >= depth) return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`pool of ${memoryMiB} MiB shells did not reach ${depth} within ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
