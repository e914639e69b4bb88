// `lightvm bench scale`: start VMs one after another through a real daemon,
// each an idle guest that stays parked, and record what every creation
// cost, how much host memory a VM takes and how much CPU idle VMs burn,
// beside crun and fork+exec measured in the same run. Flatness is last over
// first window, on p50 and on p90. crun and fork+exec are references, not
// a like-for-like pair: each is a whole process run to its exit (nothing is
// kept running), while a creation here is an API round trip to a VM that
// stays; so no ratio is made of them.
import { availableParallelism, release } from 'node:os';
import { crunAvailable, crunRun, prepareBundle } from './crun.js';
import { startDaemon, waitForPool } from './daemon-peer.js';
import { idleBreakdown, memAvailableKiB, memoryKinds, memoryPerVm, settle } from './host-stats.js';
import { RawHttpClient } from './http-client.js';
import { forkExec, kvmFloorHold } from './peers.js';
import { ratio, summarize } from './stats.js';

export interface ScaleOptions {
  vms: number;
  /**
   * Creation requests in flight at once (1: strictly one after another).
   * VMs are still started in order, and each one's creation time is its
   * own request's.
   */
  concurrency?: number;
  /** Prepared shells the daemon keeps (per memory size 4 MiB). */
  pool?: number;
  vmsPerExecutor?: number;
  /** Seconds over which idle CPU is measured. */
  idleSeconds?: number;
  /**
   * VMs created and destroyed before the measured series: a new daemon's
   * first few hundred requests run its JavaScript unoptimised, which would
   * make the first VMs look slow and the series look flatter than it is.
   */
  warmupVms?: number;
  onProgress?: (created: number, total: number) => void;
}

export interface ScaleResult {
  [k: string]: unknown;
  vms: number;
  create_ms: number[];
}

const WINDOW = 500;

export async function benchScale(opts: ScaleOptions): Promise<ScaleResult> {
  const pool = opts.pool ?? 64;
  const fork = summarize(await forkExec(200));
  // Median of three: MemAvailable moves by itself here.
  const holds = [await kvmFloorHold(1000), await kvmFloorHold(1000), await kvmFloorHold(1000)];
  const median = (xs: number[]): number => Math.round(xs.sort((a, b) => a - b)[1]!);
  const floorKiB = median(holds.map((h) => h.mem_per_vm_kib));
  // The kernel's own meminfo lines: steadier than MemAvailable, which the host's reclaim moves.
  const floorKernelKiB = median(holds.map((h) => h.kernel_per_vm_kib));
  const crunSkip = crunAvailable();
  let crun: ReturnType<typeof summarize> | null = null;
  if (!crunSkip) {
    const bundle = await prepareBundle();
    try {
      crun = summarize(await crunRun(bundle, 50));
    } finally {
      await bundle.cleanup();
    }
  }

  const args = ['--pool', `4:${pool}`];
  if (opts.vmsPerExecutor) args.push('--vms-per-executor', String(opts.vmsPerExecutor));
  const memBeforeDaemon = memAvailableKiB();
  const daemon = await startDaemon(args);
  const raw = new RawHttpClient(daemon.socket);
  try {
    await waitForPool(daemon.client, 4, pool, 120_000);
    const request = raw.prepare('POST', '/v1/vms', { image: 'daytime', cmdline: 'stay', wait: 'booted' });
    const warmup = opts.warmupVms ?? 300;
    if (warmup > 0) {
      const ids: number[] = [];
      for (let i = 0; i < warmup; i++) ids.push((await raw.send<{ vm: { id: number } }>(request)).vm.id);
      for (const id of ids) await daemon.client.request('DELETE', `/v1/vms/${id}`);
      await waitForPool(daemon.client, 4, pool, 120_000);
      // Until the executors have freed what was destroyed (they do it when idle).
      const { executors } = await daemon.client.request<{ executors: { pid: number }[] }>('GET', '/v1/host');
      await settle([daemon.process.pid!, ...executors.map((e) => e.pid)], 40_000, 12_000);
    }
    const kindsBefore = memoryKinds();
    const memBefore = kindsBefore.available;
    const createMs: number[] = [];
    let error: string | undefined;
    const concurrency = opts.concurrency ?? 1;
    // One connection per request in flight: HTTP/1.1 answers in order on each.
    const lanes = [raw, ...Array.from({ length: concurrency - 1 }, () => new RawHttpClient(daemon.socket))];
    let next = 0;
    const t0 = process.hrtime.bigint();
    await Promise.all(lanes.map(async (lane) => {
      while (!error && next < opts.vms) {
        const i = next++;
        let sent = 0n;
        try {
          await lane.send(request, (ns) => (sent = ns));
        } catch (err) {
          error = `VM ${i + 1}: ${(err as Error).message}`;
          return;
        }
        createMs[i] = Number(process.hrtime.bigint() - sent) / 1e6;
        if ((i + 1) % 100 === 0) opts.onProgress?.(i + 1, opts.vms);
      }
    }));
    for (const lane of lanes.slice(1)) lane.close();
    // After a failure, only the VMs created before it count.
    if (error) {
      const gap = createMs.findIndex((x) => x === undefined);
      if (gap >= 0) createMs.length = gap;
    }
    const elapsedS = Number(process.hrtime.bigint() - t0) / 1e9;
    const reached = createMs.length;
    // Let the pool refill and every process of ours go idle (V8's last
    // collection after the burst included) before reading memory and CPU:
    // both are the steady state of 10,000 idle VMs.
    await waitForPool(daemon.client, 4, pool, 120_000).catch(() => {});
    const host = await daemon.client.request<{ vms: number; executors: { pid: number }[]; daemon_rss_kib: number }>('GET', '/v1/host');
    const ours = [daemon.process.pid!, ...host.executors.map((e) => e.pid)];
    const settledMs = await settle(ours, 40_000, 12_000);
    const kindsAfter = memoryKinds();
    const memAfter = kindsAfter.available;
    const idle = await idleBreakdown((opts.idleSeconds ?? 10) * 1000, ours);
    const byKind = reached ? memoryPerVm(kindsBefore, kindsAfter, reached) : null;
    if (!reached) throw new Error(`bench scale: no VM was created${error ? `: ${error}` : ''}`);
    const window = Math.min(WINDOW, Math.max(1, Math.floor(reached / 2)));
    const first = summarize(createMs.slice(0, window));
    const last = summarize(createMs.slice(-window));
    const result: ScaleResult = {
      bench: 'scale',
      vms: reached,
      requested: opts.vms,
      concurrency,
      warmup_vms: warmup,
      ...(error ? { error } : {}),
      create_interval: 'POST /v1/vms (daytime, stay, wait: booted) bytes sent on a kept-alive socket to the reply parsed; each VM stays running',
      flatness_window_vms: window,
      create_p50_first_ms: first.p50_ms,
      create_p50_last_ms: last.p50_ms,
      create_p90_first_ms: first.p90_ms,
      create_p90_last_ms: last.p90_ms,
      last_over_first: ratio(last.p50_ms, first.p50_ms),
      last_over_first_p50: ratio(last.p50_ms, first.p50_ms),
      last_over_first_p90: ratio(last.p90_ms, first.p90_ms),
      rate_vms_per_s: Math.round(reached / elapsedS),
      host_mem_per_vm_kib: reached ? Math.round((memBefore - memAfter) / reached) : null,
      host_mem_per_vm_by_kind_kib: byKind,
      host_mem_daemon_and_pool_kib: memBeforeDaemon - memBefore,
      kvm_floor_mem_per_vm_kib: floorKiB,
      // Ours by the same kernel lines as the floor's (Slab, VmallocUsed, KernelStack, PageTables).
      kernel_per_vm_kib: byKind ? (byKind.slab ?? 0) + (byKind.vmalloc ?? 0) + (byKind.kernel_stack ?? 0) + (byKind.page_tables ?? 0) : null,
      kvm_floor_kernel_per_vm_kib: floorKernelKiB,
      mem_over_kvm_floor: reached ? ratio((memBefore - memAfter) / reached, floorKiB) : null,
      idle_settle_s: Math.round(settledMs / 100) / 10,
      idle_cpu_pct: idle.host,
      idle_cpu_lightvm_pct: idle.lightvm,
      idle_cpu_kdamond_pct: idle.kdamond,
      executors: host.executors.length,
      running_vms: host.vms,
      crun_p50_ms: crun?.p50_ms ?? null,
      crun_interval: 'reference, not a pair: fork of `crun run` of a `true` container to its exit (CLI start, create, start, run, delete; nothing kept running)',
      ...(crunSkip ? { skipped: { crun: crunSkip } } : {}),
      fork_exec_p50_ms: fork.p50_ms,
      fork_exec_interval: 'reference: fork, exec of a static `true`, wait (C)',
      lightvm_create_p50_ms: summarize(createMs).p50_ms,
      lightvm_create_p90_ms: summarize(createMs).p90_ms,
      host: { kernel: release(), cpus: availableParallelism(), node: process.version },
      create_ms: createMs,
    };
    return result;
  } finally {
    raw.close();
    await daemon.stop();
  }
}
