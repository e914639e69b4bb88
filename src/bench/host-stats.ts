// Host-wide readings for density benchmarks: memory from /proc/meminfo
// (kernel included) and CPU time from /proc/stat.
import { readdirSync, readFileSync } from 'node:fs';

/** MemAvailable in KiB: what the host could still give, kernel memory included. */
export function memAvailableKiB(): number {
  const m = /^MemAvailable:\s+(\d+) kB/m.exec(readFileSync('/proc/meminfo', 'utf8'));
  if (!m) throw new Error('/proc/meminfo has no MemAvailable');
  return Number(m[1]);
}

/** The /proc/meminfo lines that say where memory went, in KiB. */
export interface MemoryKinds {
  available: number;
  anon: number;
  slab: number;
  vmalloc: number;
  kernelStack: number;
  pageTables: number;
  secPageTables: number;
}

export function memoryKinds(): MemoryKinds {
  const text = readFileSync('/proc/meminfo', 'utf8');
  const kib = (key: string): number => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? 0);
  return {
    available: kib('MemAvailable'), anon: kib('AnonPages'), slab: kib('Slab'), vmalloc: kib('VmallocUsed'),
    kernelStack: kib('KernelStack'), pageTables: kib('PageTables'), secPageTables: kib('SecPageTables'),
  };
}

/**
 * Per VM, where the memory a set of VMs took went: user space (anonymous
 * pages: guest RAM and the executors' heaps), and the kernel's slab,
 * vmalloc, stacks and page tables; `other` is what no meminfo line names
 * (here: KVM's per-vCPU MMU caches, which a vCPU's first run fills).
 */
export function memoryPerVm(before: MemoryKinds, after: MemoryKinds, vms: number): Record<string, number> {
  const per = (k: keyof MemoryKinds, sign = 1): number => Math.round(((after[k] - before[k]) * sign) / vms);
  const out = {
    total: per('available', -1), anon: per('anon'), slab: per('slab'), vmalloc: per('vmalloc'),
    kernel_stack: per('kernelStack'), page_tables: per('pageTables'), sec_page_tables: per('secPageTables'),
  };
  return { ...out, other: out.total - out.anon - out.slab - out.vmalloc - out.kernel_stack - out.page_tables - out.sec_page_tables };
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

/**
 * Waits until these processes have been quiet (at most one jiffy of CPU in
 * each of 3 seconds in a row) or maxMs passed: the work a burst leaves behind
 * (pool refill, V8's garbage collection some seconds after the burst) is not
 * idle cost. One quiet second was not enough: V8's collections came after it.
 * And not before minMs: V8's memory reducer collects ~8 s after allocation
 * stops, so a daemon quiet for 3 s may still have that to come. Returns the
 * ms waited.
 */
export async function settle(pids: number[], maxMs: number, minMs = 0): Promise<number> {
  const t0 = Date.now();
  let quiet = 0;
  for (;;) {
    const a = processJiffies(pids);
    await new Promise((r) => setTimeout(r, 1000));
    quiet = processJiffies(pids) - a <= 1 ? quiet + 1 : 0;
    if ((quiet >= 3 && Date.now() - t0 >= minMs) || Date.now() - t0 >= maxMs) return Date.now() - t0;
  }
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
