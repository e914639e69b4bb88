// `lightvm bench xenstore` with real VMs: creation time of the N-th VM
// while the N-1 before it keep running, through a real daemon, for noxs
// (the default path: the device page, from a prepared shell when the pool
// has one), noxs cold (warm: false) and `--devices xenstore` (libxl's
// store steps around the same boot, xenstore-devices.ts), in one run, one
// daemon per series, the same VM in each: daytime with one vif. The
// clock, per create: the request's bytes written on a kept-alive socket to
// the reply parsed (201, the VM running; in xenstore mode after its vif is
// Connected on both ends), in this process.
//
// All the VMs' taps are on one bridge, and each VM announces its address
// at boot with a gratuitous ARP, a broadcast: on a bridge that floods it,
// the N-th boot wakes the N-1 VMs before it (three exits each, measured),
// which on a host that emulates guest instructions grows every series with
// N by itself. Unless `broadcast` is asked for, each VM's bridge port stops
// receiving broadcasts once it is made (bcast_flood off, outside the
// clock), so that the figure is the control path's; with it, the series
// show the shared segment's cost too.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { XsClient } from '../xenstore/client.js';
import { startDaemon, waitForPool, type BenchDaemon } from './daemon-peer.js';
import { RawHttpClient } from './http-client.js';
import { ratio, summarize } from './stats.js';

export interface XenstoreVmsOptions {
  vms: number;
  /** Creations per window (first and last); default a tenth of vms, 1 to 100. */
  window?: number;
  /** Leave broadcasts flooding to every VM's port (see above). */
  broadcast?: boolean;
  onProgress?: (done: number, total: number) => void;
}

const SERIES = {
  // Labels short enough for the figure's legend: the default path (a prepared shell when the pool has one), warm: false, --devices xenstore.
  noxs_shell: { args: [] as string[], warm: true, label: 'noxs, shell' },
  noxs_cold: { args: [] as string[], warm: false, label: 'noxs, cold' },
  xenstore: { args: ['--devices', 'xenstore'], warm: true, label: 'xenstore mode' },
} as const;
export type SeriesName = keyof typeof SERIES;

// Deep enough to ride out a stretch where the preparer falls behind (other
// jobs on the 2 cores): with 8, runs of 10-30 creates in a row found it
// empty (a 1000-VM run: 76 cold of 1000, 14-45 per 100 in bursts), each a
// cold create in a series meant to be from a shell. bench scale keeps 64 too.
const POOL = 64;
const BRIDGE = ['--bridge', 'lvbxs0', '--bridge-address', '10.88.0.1/16'];
const STAGES_INTERVAL = 'each create cut at the stamps of its reply (CLOCK_MONOTONIC): bench sent → daemon API handler (to_api) → sent to the executor (api) → executor loop awake (to_executor) → create begun (executor_queue) → shell taken (shell) → loaded, tap included (load; net: the tap alone) → daemon heard it started (to_started: its first guest entry, the event, the daemon) → reply sent (reply) → reply parsed here (to_bench)';
const INTERVAL = 'POST /v1/vms (daytime, one vif, a name of its own) bytes written on a kept-alive unix socket to the 201 reply parsed ' +
  '(the VM running; in xenstore mode, after libxl\'s store steps, the boot, and the vif Connected on both ends); the N-1 VMs before it kept running';

export interface Sample {
  ms: number;
  warm: boolean;
  /** xenstore mode: the store's steps (XenstoreMode.create phases and the handshake), from the reply. */
  store?: Record<string, number>;
  store_ops?: number;
  watch_events?: number;
  /** Where the create's time went, from the reply's stamps (ms): see STAGES. */
  stages?: Record<Stage, number>;
  executor: number;
}

/**
 * A create's path, cut at the stamps the daemon and the executor put in
 * the reply's timings (all CLOCK_MONOTONIC, the bench's clock too): the
 * daemon's API handler, the request sent to the executor, the executor's
 * loop awake, its create begun, the shell taken, the VM loaded (its tap
 * made and on the bridge: net_ms of it), the daemon done with it (host.create
 * resolved: the 'started' event, sent after the VM's first entry, heard),
 * the reply sent, and the reply parsed here.
 */
const STAGES = ['to_api_ms', 'api_ms', 'to_executor_ms', 'executor_queue_ms', 'shell_ms', 'load_ms', 'net_ms', 'to_started_ms', 'reply_ms', 'to_bench_ms'] as const;
type Stage = typeof STAGES[number];

interface ReplyTimings {
  trace?: { apiNs?: number; sentNs?: number; wokeNs?: number; createdNs?: number; replyNs?: number };
  requestNs: number; shellNs: number; loadedNs: number; netSetupNs?: number;
}

function stagesOf(t: ReplyTimings | null | undefined, sentNs: number, parsedNs: number): Record<Stage, number> | undefined {
  const tr = t?.trace;
  if (!t || !tr?.apiNs || !tr.sentNs || !tr.wokeNs || !tr.createdNs || !tr.replyNs) return undefined;
  const ms = (a: number, b: number): number => (b - a) / 1e6;
  return {
    to_api_ms: ms(sentNs, tr.apiNs), api_ms: ms(tr.apiNs, tr.sentNs), to_executor_ms: ms(tr.sentNs, tr.wokeNs),
    executor_queue_ms: ms(tr.wokeNs, t.requestNs), shell_ms: ms(t.requestNs, t.shellNs), load_ms: ms(t.shellNs, t.loadedNs),
    net_ms: (t.netSetupNs ?? 0) / 1e6, to_started_ms: ms(t.loadedNs, tr.createdNs), reply_ms: ms(tr.createdNs, tr.replyNs),
    to_bench_ms: ms(tr.replyNs, parsedNs),
  };
}

interface Reply {
  vm: { id: number; state: string; warm?: boolean; executor: number };
  timings: ReplyTimings | null;
  xenstore: Record<string, number> | null;
}

/** The i-th VM: its own name and address (10.88.0.10 on; none is contacted). */
const vmBody = (series: SeriesName, i: number): unknown => ({
  image: 'daytime', name: `${series.replace('_', '-')}-${i}`, warm: SERIES[series].warm,
  devices: [{ type: 'net', id: 0, ipv4: { addr: `10.88.${((i + 10) >> 8) & 0xff}.${(i + 10) & 0xff}`, netmask: '255.255.0.0', gateway: '10.88.0.1' } }],
});

async function storeCounters(xs: XsClient): Promise<{ ops: number; events: number }> {
  const s = await xs.stats() as { ops: Record<string, number>; watch_events: number };
  return { ops: Object.values(s.ops).reduce((a, b) => a + b, 0), events: s.watch_events };
}

/** The VM's tap (the executor names it lv<id>n<device>) no longer gets the bridge's broadcasts. */
function quietPort(id: number): void {
  execFileSync('ip', ['link', 'set', 'dev', `lv${id}n0`, 'type', 'bridge_slave', 'bcast_flood', 'off'], { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Each series' 1-minute load average when its daemon started and when its last create was answered. */
const loads: Partial<Record<SeriesName, [number, number]>> = {};

export async function runSeries(series: SeriesName, n: number, window: number, broadcast: boolean, onProgress?: (done: number) => void): Promise<Sample[]> {
  const load0 = loadavg()[0]!;
  const daemon: BenchDaemon = await startDaemon(['--pool', `4:${POOL}`, ...BRIDGE, ...SERIES[series].args]);
  const raw = new RawHttpClient(daemon.socket);
  let xs: XsClient | undefined;
  try {
    const host = await daemon.client.request<{ xenstore_socket: string | null }>('GET', '/v1/host');
    if (host.xenstore_socket) xs = await XsClient.connect(host.xenstore_socket);
    await waitForPool(daemon.client, 4, POOL, 120_000);
    const create = async (i: number): Promise<Sample> => {
      const c0 = xs ? await storeCounters(xs) : undefined;
      let sent = 0n;
      const r = await raw.send<Reply>(raw.prepare('POST', '/v1/vms', vmBody(series, i)), (ns) => (sent = ns));
      const parsed = process.hrtime.bigint();
      const ms = Number(parsed - sent) / 1e6;
      if (r.vm?.state !== 'running') throw new Error(`bench xenstore: ${series}: VM ${i} is ${r.vm?.state ?? 'not made'}: ${JSON.stringify(r).slice(0, 300)}`);
      const c1 = xs ? await storeCounters(xs) : undefined;
      if (!broadcast) quietPort(r.vm.id);
      return {
        ms, warm: r.vm.warm === true, executor: r.vm.executor, stages: stagesOf(r.timings, Number(sent), Number(parsed)), ...(r.xenstore ? { store: r.xenstore } : {}),
        // The closing stats request is counted in c1: not one of the creation's.
        ...(c0 && c1 ? { store_ops: c1.ops - c0.ops - 1, watch_events: c1.events - c0.events } : {}),
      };
    };
    // Warm-up, not counted: a window made and destroyed, so that the first window measures N small, not the daemon's JIT.
    const warm: number[] = [];
    for (let i = 0; i < window; i++) {
      warm.push((await raw.send<Reply>(raw.prepare('POST', '/v1/vms', { ...vmBody(series, 30000 + i) as object, name: `warmup-${i}` }))).vm.id);
      if (!broadcast) quietPort(warm.at(-1)!);
    }
    for (const id of warm) await daemon.client.request('DELETE', `/v1/vms/${id}`);
    await waitForPool(daemon.client, 4, POOL, 120_000);
    const samples: Sample[] = [];
    for (let i = 1; i <= n; i++) {
      samples.push(await create(i));
      onProgress?.(i);
    }
    loads[series] = [Math.round(load0 * 100) / 100, Math.round(loadavg()[0]! * 100) / 100];
    return samples;
  } finally {
    xs?.close();
    raw.close();
    // --destroy-on-stop: the VMs end with the daemon (and in xenstore mode the store with them).
    await daemon.stop();
  }
}

export type XenstoreVmsReport = Awaited<ReturnType<typeof benchXenstoreVms>>;

export async function benchXenstoreVms(opts: XenstoreVmsOptions) {
  const n = opts.vms;
  if (!Number.isInteger(n) || n < 2) throw new RangeError(`bench xenstore: --vms must be an integer >= 2 (got ${n})`);
  const window = opts.window ?? Math.min(100, Math.max(1, Math.floor(n / 10)));
  if (!Number.isInteger(window) || window < 1 || window * 2 > n) throw new RangeError(`bench xenstore: a window of ${window} does not fit twice in ${n} creations`);
  if (n > 30000) throw new RangeError(`bench xenstore: ${n} VMs need more domain ids than a store has`);
  if (!existsSync('/dev/kvm')) throw new Error('bench xenstore: real VMs need /dev/kvm (--control-path measures the store steps without VMs)');
  const names = Object.keys(SERIES) as SeriesName[];
  const samples = {} as Record<SeriesName, Sample[]>;
  const broadcast = opts.broadcast === true;
  for (const [k, s] of names.entries()) samples[s] = await runSeries(s, n, window, broadcast, (i) => opts.onProgress?.(k * n + i, names.length * n));
  const first = (s: SeriesName): Sample[] => samples[s].slice(0, window);
  const shellOnly = (f: Sample[], l: Sample[]) => {
    const a = summarize(f.filter((x) => x.warm).map((x) => x.ms));
    const b = summarize(l.filter((x) => x.warm).map((x) => x.ms));
    return { first_p50_ms: a.p50_ms, first_p90_ms: a.p90_ms, first_n: a.n, last_p50_ms: b.p50_ms, last_p90_ms: b.p90_ms, last_n: b.n, growth_p50: ratio(b.p50_ms, a.p50_ms), growth_p90: ratio(b.p90_ms, a.p90_ms) };
  };
  // Per window: each stage's p50 and p90, how many creates took a shell, and on which executors they ran.
  const stages = (part: Sample[]) => ({
    ...Object.fromEntries(STAGES.map((k) => {
      const v = summarize(part.map((x) => x.stages?.[k] ?? 0));
      return [k, { p50: v.p50_ms, p90: v.p90_ms }];
    })),
    from_shell: part.filter((x) => x.warm).length,
    executors: [...new Set(part.map((x) => x.executor))],
  });
  const last = (s: SeriesName): Sample[] => samples[s].slice(n - window);
  const results = Object.fromEntries(names.map((s) => {
    const f = summarize(first(s).map((x) => x.ms));
    const l = summarize(last(s).map((x) => x.ms));
    return [s, {
      first_p50_ms: f.p50_ms, first_p90_ms: f.p90_ms, last_p50_ms: l.p50_ms, last_p90_ms: l.p90_ms, n: samples[s].length,
      from_shell: samples[s].filter((x) => x.warm).length,
      // The creates of each window that took a prepared shell, alone (a create the pool had none for is a cold one).
      shell_only: shellOnly(first(s), last(s)),
      loadavg_1min: loads[s],
      growth_p50: ratio(l.p50_ms, f.p50_ms), growth_p90: ratio(l.p90_ms, f.p90_ms),
      label: SERIES[s].label, interval: INTERVAL,
      stages: { first: stages(first(s)), last: stages(last(s)), interval: STAGES_INTERVAL },
    }];
  })) as Record<SeriesName, { first_p50_ms: number; first_p90_ms: number; last_p50_ms: number; last_p90_ms: number; n: number; from_shell: number; growth_p50: number; growth_p90: number; label: string; interval: string; stages: unknown; shell_only: { first_p50_ms: number; first_p90_ms: number; first_n: number; last_p50_ms: number; last_p90_ms: number; last_n: number; growth_p50: number; growth_p90: number }; loadavg_1min: [number, number] | undefined }>;
  const xs = samples.xenstore;
  const p50 = (xs: Sample[], f: (x: Sample) => number | undefined): number => summarize(xs.map((x) => f(x) ?? 0)).p50_ms;
  const breakdown = (part: Sample[]) => ({
    name_check_p50_ms: p50(part, (x) => x.store?.name_check_ms),
    domain_make_p50_ms: p50(part, (x) => x.store?.domain_make_ms),
    build_post_p50_ms: p50(part, (x) => x.store?.build_post_ms),
    console_p50_ms: p50(part, (x) => x.store?.console_ms),
    vifs_p50_ms: p50(part, (x) => x.store?.vifs_ms),
    backend_wait_p50_ms: p50(part, (x) => x.store?.backend_wait_ms),
    connect_p50_ms: p50(part, (x) => x.store?.connect_ms),
    // Per create, the clock less every store step: the noxs path (boot from a shell), the API, and waiting its turn.
    rest_p50_ms: p50(part, (x) => x.ms - ['domain_make_ms', 'build_post_ms', 'console_ms', 'vifs_ms', 'connect_ms'].reduce((a, k) => a + (x.store?.[k] ?? 0), 0)),
  });
  const mean = (part: Sample[], f: (x: Sample) => number | undefined): number => Math.round((part.reduce((a, x) => a + (f(x) ?? 0), 0) / part.length) * 10) / 10;
  const per = (f: (x: Sample) => number | undefined) => ({ first: mean(xs.slice(0, window), f), last: mean(xs.slice(n - window), f) });
  // The figure's points: p50 and p90 of each half-window, against the VMs running before it.
  const step = Math.max(1, Math.floor(window / 2));
  const points: { series: string; running: number; p50_ms: number; p90_ms: number }[] = [];
  for (const s of names) {
    for (let i = 0; i + step <= n; i += step) {
      const w = summarize(samples[s].slice(i, i + step).map((x) => x.ms));
      points.push({ series: SERIES[s].label, running: i, p50_ms: w.p50_ms, p90_ms: w.p90_ms });
    }
  }
  return {
    bench: 'xenstore',
    vms: n,
    window,
    broadcast: broadcast
      ? 'flooded: each boot\'s gratuitous ARP reaches every VM kept running'
      : 'each VM\'s bridge port set bcast_flood off once it is made (outside the clock): a boot\'s gratuitous ARP wakes no other VM',
    results,
    ratios: {
      xenstore_over_noxs_shell_first_p50: ratio(results.xenstore.first_p50_ms, results.noxs_shell.first_p50_ms),
      xenstore_over_noxs_shell_last_p50: ratio(results.xenstore.last_p50_ms, results.noxs_shell.last_p50_ms),
      xenstore_over_noxs_cold_first_p50: ratio(results.xenstore.first_p50_ms, results.noxs_cold.first_p50_ms),
      xenstore_over_noxs_cold_last_p50: ratio(results.xenstore.last_p50_ms, results.noxs_cold.last_p50_ms),
    },
    breakdown: { first: breakdown(first('xenstore')), last: breakdown(last('xenstore')), interval: 'the xenstore series\' creates, as the daemon timed each store step (the create reply\'s xenstore field); the rest of a create is the noxs path' },
    xenstore_ops_per_create: per((x) => x.store_ops),
    watch_events_per_create: per((x) => x.watch_events),
    name_reads_per_create: per((x) => x.store?.name_reads),
    points,
    create_ms: Object.fromEntries(names.map((s) => [s, samples[s].map((x) => Math.round(x.ms * 1000) / 1000)])),
    host: { kernel: release(), cpus: availableParallelism(), node: process.version, loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
  };
}
