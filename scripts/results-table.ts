// README's results table, made from bench/results/*.json: `npm run results-table`
// rewrites the part of README.md between its two results-table markers.
// Every row names what each side's clock timed (the `interval` each
// benchmark writes next to its numbers).
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

interface Series {
  p50_ms: number;
  p90_ms: number;
  n: number;
  interval: string;
}

export const START = '<!-- results-table:start (npm run results-table) -->';
export const END = '<!-- results-table:end -->';

const fmt = (ms: number): string => (ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2));
const cell = (s: Series): string => `${fmt(s.p50_ms)} (${fmt(s.p90_ms)})`;
const esc = (s: string): string => s.replace(/\|/g, '\\|');

function load(dir: string, name: string): Record<string, unknown> | undefined {
  const f = join(dir, `${name}.json`);
  return existsSync(f) ? (JSON.parse(readFileSync(f, 'utf8')) as Record<string, unknown>) : undefined;
}

function pairRows(file: string, results: Record<string, Series | null> | undefined, pairs: [string, string][]): string[] {
  if (!results) return [];
  const rows: string[] = [];
  for (const [a, b] of pairs) {
    const x = results[a];
    const y = results[b];
    if (!x || !y) continue;
    rows.push(`| **${a}**: ${esc(x.interval)} | ${cell(x)} | **${b}**: ${esc(y.interval)} | ${cell(y)} | ${(x.p50_ms / y.p50_ms).toFixed(2)}x | ${file} |`);
  }
  return rows;
}

function loadNote(r: Record<string, unknown> | undefined): string {
  const l = (r?.host as { loadavg?: number[] } | undefined)?.loadavg;
  return l ? ` (load average ${l[0]} when it ended)` : '';
}

type Clocked = { clock?: string; lightvm?: Omit<Series, 'interval'>; runc?: Omit<Series, 'interval'> } | undefined;

const row = (ours: string, oi: string, o: Omit<Series, 'interval'>, peer: string, pi: string, q: Omit<Series, 'interval'>, file: string): string =>
  `| **${ours}**: ${esc(oi)} | ${cell({ ...o, interval: '' })} | **${peer}**: ${esc(pi)} | ${cell({ ...q, interval: '' })} | ${(o.p50_ms / q.p50_ms).toFixed(2)}x | ${file} |`;

/** bench containers: each engine with LightVM vs with runc, the 1,000-task flatness, the shim's sh bin vs Node. */
function containerRows(ct: Record<string, unknown> | undefined): string[] {
  if (!ct) return [];
  const rows: string[] = [];
  const vsRunc = (c: Clocked, ours: string, peer: string): void => {
    if (c?.clock && c.lightvm && c.runc) rows.push(row(ours, c.clock, c.lightvm, peer, `${c.clock}, the same`, c.runc, 'containers.json'));
  };
  vsRunc(ct.ctr_run_exit as Clocked, 'ctr run --rm, our shim', 'ctr run --rm, runc through the same containerd');
  vsRunc(ct.ctr_run_running as Clocked, 'ctr run -d, our shim', 'ctr run -d, runc');
  const pm = ct.podman as Record<string, Clocked> | undefined;
  vsRunc(pm?.run_exit, 'podman run --rm, lightvm-oci', 'podman run --rm, runc');
  vsRunc(pm?.run_running, 'podman run -d, lightvm-oci', 'podman run -d, runc');
  const t = ct.tasks as { clock?: string; tasks?: number; window?: number; first?: Omit<Series, 'interval'>; last?: Omit<Series, 'interval'> } | undefined;
  if (t?.clock && t.first && t.last) {
    rows.push(row(`the last ${t.window} of ${t.tasks} tasks through one containerd, our shim`, t.clock, t.last, `the first ${t.window}`, `${t.clock}, the same`, t.first, 'containers.json'));
  }
  const parts = ct.parts as Record<string, Omit<Series, 'interval'> | string | undefined> | undefined;
  for (const op of ['start', 'delete'] as const) {
    const sh = parts?.[`shim_${op}_sh`];
    const node = parts?.[`shim_${op}_node`];
    if (typeof parts?.clock === 'string' && typeof sh === 'object' && typeof node === 'object') {
      // The clock without its note on ctr container create (another part).
      const clock = parts.clock.replace(/ \(.*\)$/, '');
      rows.push(row(`containerd-shim-lightvm-v1 ${op}, the sh bin`, clock, sh, `the same ${op} by dist/shim/main.js (Node)`, 'the same clock', node, 'containers.json'));
    }
  }
  return rows;
}

/** The table (between and including the markers) for the results in dir. */
export function resultsTable(dir: string): string {
  const boot = load(dir, 'boot');
  const net = load(dir, 'net');
  const scale = load(dir, 'scale');
  const rows = [
    ...pairRows('boot.json', boot?.results as Record<string, Series | null> | undefined, [
      ['lightvm_run_process', 'node_start'], ['lightvm_run_process', 'qemu_process'], ['lightvm_run_process', 'runc_process'],
      ['lightvm_run_process', 'crun_process'], ['lightvm_run_process', 'fork_exec'],
      ['lightvm_api_roundtrip', 'fork_exec'], ['lightvm_api_roundtrip', 'podman_api_start'],
      ['lightvm_api_lifecycle', 'podman_api_lifecycle'], ['lightvm_warm', 'fork_exec'],
      ['lightvm_cold', 'kvm_floor_monitor'], ['lightvm_cold', 'kvm_floor'],
    ]),
    ...pairRows('net.json', net?.results as Record<string, Series | null> | undefined, [
      ['vif_setup', 'vif_floor_c'], ['vif_setup', 'vif_hotplug_script'], ['vif_setup', 'crun_veth_cni_style'],
      ['podman_api_start_bridge', 'podman_api_start_none'],
    ]),
  ];
  if (scale) {
    const s = scale as Record<string, number | string | undefined>;
    const interval = String(s.create_interval ?? 'POST /v1/vms (wait: booted) to its reply, each VM kept running');
    const p90 = s.last_over_first_p90 ?? (s.create_p90_last_ms && s.create_p90_first_ms ? Math.round((Number(s.create_p90_last_ms) / Number(s.create_p90_first_ms)) * 100) / 100 : '?');
    rows.push(`| **creation, last ${s.flatness_window_vms ?? 500} of ${s.vms} VMs**: ${esc(interval)} | ${s.create_p50_last_ms} (${s.create_p90_last_ms}) | **the first ${s.flatness_window_vms ?? 500}**, same interval | ${s.create_p50_first_ms} (${s.create_p90_first_ms}) | p50 ${s.last_over_first_p50 ?? s.last_over_first}x, p90 ${p90}x | scale.json |`);
  }
  const xs = load(dir, 'xenstore');
  const xr = xs?.results as Record<string, (Series & { first_p50_ms: number; first_p90_ms: number; last_p50_ms: number; last_p90_ms: number }) | null> | undefined;
  if (xr?.xenstore && xr.noxs_shell) {
    const x = xr.xenstore;
    const y = xr.noxs_shell;
    const w = Number(xs!.window);
    const n = Number(xs!.vms);
    for (const [which, a, b] of [[`first ${w}`, x.first_p50_ms, y.first_p50_ms], [`last ${w}`, x.last_p50_ms, y.last_p50_ms]] as const) {
      const p90 = which.startsWith('first') ? [x.first_p90_ms, y.first_p90_ms] : [x.last_p90_ms, y.last_p90_ms];
      rows.push(`| **xenstore mode, the ${which} of ${n} VMs**: ${esc(x.interval)} | ${a} (${p90[0]}) | **noxs from a prepared shell**, the same VMs and interval | ${b} (${p90[1]}) | ${(a / b).toFixed(2)}x | xenstore.json |`);
    }
  }
  const ct = load(dir, 'containers');
  rows.push(...containerRows(ct));
  const notes = [
    boot ? `boot.json: ${boot.runs} runs${loadNote(boot)}` : undefined,
    net ? `net.json: ${net.runs} runs${loadNote(net)}` : undefined,
    xs ? `xenstore.json: ${xs.vms} VMs per series${loadNote(xs)}` : undefined,
    ct ? `containers.json: ${(ct.ctr_run_exit as { lightvm?: Series } | undefined)?.lightvm?.n ?? '?'} runs, ${(ct.tasks as { tasks?: number } | undefined)?.tasks ?? '?'} tasks${loadNote(ct)}` : undefined,
  ].filter(Boolean).join('; ');
  return [
    START,
    '| ours: what its clock times | p50 (p90) ms | peer: what its clock times | p50 (p90) ms | ours / peer (p50) | file |',
    '|---|---|---|---|---|---|',
    ...rows,
    '',
    notes ? `${notes}. Peers are measured in the same run, interleaved; a ratio compares p50s.` : '',
    END,
  ].join('\n');
}

/** README text with its table replaced by resultsTable(dir). */
export function withTable(readme: string, dir: string): string {
  const a = readme.indexOf(START);
  const b = readme.indexOf(END);
  if (a < 0 || b < a) throw new Error(`README.md has no "${START}" ... "${END}" section`);
  return readme.slice(0, a) + resultsTable(dir) + readme.slice(b + END.length);
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) {
  const root = fileURLToPath(new URL('..', import.meta.url));
  const readme = join(root, 'README.md');
  writeFileSync(readme, withTable(readFileSync(readme, 'utf8'), join(root, 'bench', 'results')));
  process.stdout.write('README.md: results table regenerated from bench/results\n');
}
