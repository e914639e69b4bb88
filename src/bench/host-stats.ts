// Host-wide readings for density benchmarks: memory from /proc/meminfo
// (kernel included) and CPU time from /proc/stat.
import { readdirSync, readFileSync } from 'node:fs';

/** MemAvailable in KiB: what the host could still give, kernel memory included. */
export function memAvailableKiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  if (!m) throw new Error('/proc/meminfo has no MemAvailable');
  return Number(m[1]);
}

/** Jiffies spent busy and in total, summed over all CPUs. */
export function cpuJiffies(): { busy: number; total: number } {
  const line = readFileSync('/proc/stat', 'utf8').split('\n')[0]!;
  const f = line.trim().split(/\s+/).slice(1).map(Number);
  // user nice system idle iowait irq softirq steal guest guest_nice
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Host CPU used over `ms`, in percent of one core. */
export async function busyPercentOfOneCore(ms: number): Promise<number> {
  const a = cpuJiffies();
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuJiffies();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const hz = 100; // USER_HZ: /proc/stat counts in 1/100 s on Linux
  return Math.round(((b.busy - a.busy) / hz / seconds) * 100 * 1000) / 1000;
}

/** CPU time (jiffies) of these processes, threads included. */
export function processJiffies(pids: number[]): number {
  let n = 0;
  for (const pid of pids) {
    try {
      const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
      n += Number(f[11]) + Number(f[12]);
    } catch {
      // Gone meanwhile.
    }
  }
  return n;
}

/** Pids of processes (kernel threads included) whose name starts with prefix. */
export function pidsNamed(prefix: string): number[] {
  const out: number[] = [];
  for (const d of readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      if (readFileSync(`/proc/${d}/comm`, 'utf8').startsWith(prefix)) out.push(Number(d));
    } catch {
      // Gone meanwhile.
    }
  }
  return out;
}

/**
 * Over ms: host CPU, the CPU of the given processes, and of the kernel's
 * DAMON threads (kdamond: when the host runs DAMON, it checks page access
 * bits through every VM's MMU notifier, at a cost that grows with the VMs),
 * each in percent of one core.
 */
export async function idleBreakdown(ms: number, pids: number[]): Promise<{ host: number; lightvm: number; kdamond: number }> {
  const damon = pidsNamed('kdamond');
  const a = cpuJiffies();
  const l0 = processJiffies(pids);
  const k0 = processJiffies(damon);
  const t0 = process.hrtime.bigint();
  await new Promise((r) => setTimeout(r, ms));
  const b = cpuJiffies();
  const seconds = Number(process.hrtime.bigint() - t0) / 1e9;
  const pct = (j: number): number => Math.round((j / 100 / seconds) * 100 * 1000) / 1000;
  return { host: pct(b.busy - a.busy), lightvm: pct(processJiffies(pids) - l0), kdamond: pct(processJiffies(damon) - k0) };
}
