// `lightvm bench xenstore --control-path`: creation time of the N-th domain in the
// xenstore toolstack mode while the N-1 before it are kept, with the store
// operations and watch events each creation costs and where its time goes.
// The store (`lightvm xenstored`) and the dom0 backend (`lightvm
// xenstore-backend`) run as processes of their own, as xenstored and
// netback/xenconsoled do on Xen; the toolstack and each domain's frontend
// (on a connection bound as that domain, as its ring would be) run here.
// This is the control path only: no VM is built (xenstore-vms.ts is the
// same with real VMs, beside noxs).
import type { ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { XenstoreMode, type XsCreatePhases, type XsDomainConfig } from '../toolstack/xenstore-mode.js';
import { startLightvmPeer, stopPeer } from '../toolstack/xenstore-devices.js';
import { XsClient } from '../xenstore/client.js';
import { frontConnect } from '../xenstore/frontend.js';
import { summarize } from './stats.js';

export interface XenstoreBenchOptions {
  vms: number;
  /** Creations per window (first and last); default a tenth of vms, 1 to 100. */
  window?: number;
  onProgress?: (done: number, total: number) => void;
}

interface Sample {
  total_ms: number;
  name_check_ms: number;
  name_reads: number;
  toolstack_ms: number;
  backend_wait_ms: number;
  handshake_ms: number;
  store_ops: number;
  watch_events: number;
  toolstack_requests: number;
}

const CONTROL_INTERVAL = 'control path only, no VM: XenstoreMode.create (libxl__domain_make with the name check over every domain, ' +
  'libxl__build_post and INTRODUCE, console 0, one vif to its backend\'s InitWait and hotplug-status) and the frontend\'s walk to Connected on a ' +
  'connection bound as the domain, to both ends read Connected by the toolstack; the N-1 domains before it kept (after a window made and destroyed to warm up); store and backend are processes of their own';

export function domainConfig(i: number): XsDomainConfig {
  const hex = (v: number): string => v.toString(16).padStart(2, '0');
  return {
    name: `daytime-${i}`,
    uuid: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
    memoryKiB: 4096, vcpus: 1, kernel: 'daytime.elf', cmdline: 'ip=10.0.0.2',
    vifs: [{ mac: `00:16:3e:${hex((i >> 16) & 0xff)}:${hex((i >> 8) & 0xff)}:${hex(i & 0xff)}`, bridge: 'xenbr0' }],
  };
}

/** One domain made, its frontend (the guest's part) walked to Connected, and both ends seen Connected by the toolstack. */
async function createOne(tool: XenstoreMode, socket: string, domid: number, cfg: XsDomainConfig, guests: XsClient[]): Promise<{ phases: XsCreatePhases; created: number }> {
  const phases = await tool.create(domid, cfg);
  const created = performance.now();
  const guest = await XsClient.connect(socket);
  guests.push(guest);
  await guest.bind(domid);
  await frontConnect(guest, 'device/vif/0', 8, 3, 10_000);
  await tool.waitConnected(domid);
  return { phases, created };
}

async function storeCounters(xs: XsClient): Promise<{ ops: number; events: number }> {
  const s = await xs.stats() as { ops: Record<string, number>; watch_events: number };
  return { ops: Object.values(s.ops).reduce((a, b) => a + b, 0), events: s.watch_events };
}

export type XenstoreReport = ReturnType<typeof report>;

export async function benchXenstoreControlPath(opts: XenstoreBenchOptions): Promise<XenstoreReport> {
  const n = opts.vms;
  if (!Number.isInteger(n) || n < 2) throw new RangeError(`bench xenstore: --vms must be an integer >= 2 (got ${n})`);
  const window = opts.window ?? Math.min(100, Math.max(1, Math.floor(n / 10)));
  if (n + window > 0x7fef) throw new RangeError(`bench xenstore: ${n} domains and a warm-up of ${window} need more domain ids than there are`);
  if (!Number.isInteger(window) || window < 1 || window * 2 > n) throw new RangeError(`bench xenstore: a window of ${window} does not fit twice in ${n} creations`);
  const dir = mkdtempSync(join(tmpdir(), 'lightvm-bench-xs-'));
  const socket = join(dir, 'xenstored.sock');
  const peers: ChildProcess[] = [];
  const guests: XsClient[] = [];
  let tool: XenstoreMode | undefined;
  let stats: XsClient | undefined;
  const reap = (): void => { for (const p of peers) p.kill('SIGKILL'); };
  process.once('exit', reap);
  try {
    // Watches and transactions of dom0 have no quota; guests own few nodes each.
    peers.push(await startLightvmPeer(['xenstored', '--socket', socket], () => existsSync(socket), 'lightvm xenstored'));
    const counters = await XsClient.connect(socket);
    stats = counters;
    // The backend is ready once its watch on /local/domain/0/backend is in the store.
    const watches = async (): Promise<number> => ((await counters.stats()) as { watches: number }).watches;
    const before = await watches();
    peers.push(await startLightvmPeer(['xenstore-backend', '--socket', socket], async () => (await watches()) > before, 'lightvm xenstore-backend'));
    tool = await XenstoreMode.open(socket);
    // Warm-up, not counted: a window of domains made and destroyed first, so that the first
    // window measures the store's growth from empty and not this process's and the peers' JIT.
    for (let i = 1; i <= window; i++) await createOne(tool, socket, n + i, { ...domainConfig(n + i), name: `warmup-${i}` }, guests);
    for (let i = 1; i <= window; i++) await tool.destroy(n + i);
    for (const g of guests.splice(0)) g.close();
    const samples: Sample[] = [];
    for (let i = 1; i <= n; i++) {
      const c0 = await storeCounters(stats);
      const req0 = tool.xs.requests;
      const t0 = performance.now();
      const { phases, created: t1 } = await createOne(tool, socket, i, domainConfig(i), guests);
      const t2 = performance.now();
      const req1 = tool.xs.requests;
      const c1 = await storeCounters(stats);
      const createMs = t1 - t0;
      samples.push({
        total_ms: t2 - t0,
        name_check_ms: phases.name_check_ms,
        name_reads: phases.name_reads,
        toolstack_ms: createMs - phases.backend_wait_ms,
        backend_wait_ms: phases.backend_wait_ms,
        handshake_ms: t2 - t1,
        // The closing stats request is counted in c1: not one of the creation's.
        store_ops: c1.ops - c0.ops - 1,
        watch_events: c1.events - c0.events,
        toolstack_requests: req1 - req0,
      });
      opts.onProgress?.(i, n);
    }
    const destroyMs: number[] = [];
    for (let i = n; i >= 1; i--) {
      const t0 = performance.now();
      await tool.destroy(i);
      destroyMs.push(performance.now() - t0);
    }
    const left = (await stats.stats()) as { nodes: number; domains: number; watches: number };
    return report(n, window, samples, destroyMs, left);
  } finally {
    process.off('exit', reap);
    for (const g of guests) g.close();
    tool?.close();
    stats?.close();
    await Promise.all(peers.map(stopPeer));
    rmSync(dir, { recursive: true, force: true });
  }
}

const mean = (xs: number[]): number => Math.round((xs.reduce((a, b) => a + b, 0) / xs.length) * 10) / 10;
const round = (x: number): number => Math.round(x * 1000) / 1000;

/** The JSON `bench xenstore` prints; its type is XenstoreReport. */
function report(n: number, window: number, samples: Sample[], destroyMs: number[], left: { nodes: number; domains: number }) {
  const first = samples.slice(0, window);
  const last = samples.slice(n - window);
  const p = (xs: Sample[], k: keyof Sample) => summarize(xs.map((x) => x[k]));
  const f = p(first, 'total_ms');
  const l = p(last, 'total_ms');
  const breakdown = (xs: Sample[]): Record<string, number> => ({
    name_check_p50_ms: p(xs, 'name_check_ms').p50_ms,
    toolstack_p50_ms: p(xs, 'toolstack_ms').p50_ms,
    backend_wait_p50_ms: p(xs, 'backend_wait_ms').p50_ms,
    guest_handshake_p50_ms: p(xs, 'handshake_ms').p50_ms,
  });
  const per = (k: 'store_ops' | 'watch_events' | 'toolstack_requests' | 'name_reads') => ({ first: mean(first.map((x) => x[k])), last: mean(last.map((x) => x[k])) });
  const points: { series: string; running: number; p50_ms: number; p90_ms: number }[] = [];
  for (let i = 0; i + window <= n; i += window) {
    const s = p(samples.slice(i, i + window), 'total_ms');
    points.push({ series: 'xenstore mode, control path (no VM)', running: i, p50_ms: s.p50_ms, p90_ms: s.p90_ms });
  }
  const noVm = 'needs real VMs: measured by lightvm bench xenstore without --control-path';
  return {
    bench: 'xenstore',
    vms: n,
    window,
    results: {
      xenstore_control_path: {
        first_p50_ms: f.p50_ms, first_p90_ms: f.p90_ms, last_p50_ms: l.p50_ms, last_p90_ms: l.p90_ms, n: samples.length,
        interval: CONTROL_INTERVAL,
      },
      noxs_cold: null,
      noxs_shell: null,
    },
    skipped: { xenstore: noVm, noxs_cold: noVm, noxs_shell: noVm },
    growth: { p50: round(l.p50_ms / f.p50_ms), p90: round(l.p90_ms / f.p90_ms) },
    breakdown: { first: breakdown(first), last: breakdown(last) },
    xenstore_ops_per_create: per('store_ops'),
    watch_events_per_create: per('watch_events'),
    toolstack_requests_per_create: per('toolstack_requests'),
    name_reads_per_create: per('name_reads'),
    destroy: { ...summarize(destroyMs), interval: 'XenstoreMode.destroy of each domain, last made first: vif closed through the backend, every entry removed, RELEASE' },
    left_after_destroy: { nodes: left.nodes, domains: left.domains },
    points,
    host: { node: process.version },
  };
}
