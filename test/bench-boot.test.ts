// `lightvm bench boot --json` with tiny counts, as a user runs it: every
// pair the issue names is there (or skipped with a reason), each result is
// real numbers with the interval it timed, and a sampler that returns no
// time is an error naming it, not a number.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { checkSamples } from '../src/bench/stats.js';
import { ROOT } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli', 'main.js');

const REQUIRED = [
  'lightvm_run_process', 'qemu_process', 'runc_process', 'fork_exec', 'node_start', 'lightvm_api_roundtrip',
  'podman_api_start', 'docker_api_start', 'lightvm_api_lifecycle', 'podman_api_lifecycle', 'lightvm_cold', 'kvm_floor', 'kvm_floor_monitor', 'lightvm_warm',
];
/** What this host always has: no peer package is needed for these. */
const ALWAYS = ['lightvm_run_process', 'fork_exec', 'node_start', 'lightvm_api_roundtrip', 'lightvm_api_lifecycle', 'lightvm_cold', 'kvm_floor', 'kvm_floor_monitor', 'lightvm_warm'];

interface Result {
  p50_ms: number;
  p90_ms: number;
  n: number;
  interval: string;
}

/** Every number in a JSON value, with its path. */
function numbers(v: unknown, path = ''): [string, number][] {
  if (typeof v === 'number') return [[path, v]];
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => numbers(x, `${path}.${k}`));
  return [];
}

void describe('bench boot', () => {
  void it('--runs 2 --json: every pair with p50, p90, n and its interval, or skipped with the reason; ratios and targets are numbers', async () => {
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [CLI, 'bench', 'boot', '--runs', '2', '--json'], { timeout: 600_000, maxBuffer: 16 << 20 }, (err, out, stderr) => {
        if (err) reject(new Error(`bench boot failed: ${stderr}`));
        else resolve(out);
      });
    });
    // JSON.stringify writes NaN and Infinity as null: parse the text itself for them too.
    assert.doesNotMatch(stdout, /NaN|Infinity/);
    const r = JSON.parse(stdout) as { results: Record<string, Result | null>; skipped?: Record<string, string>; ratios: Record<string, number | null>;
      targets: Record<string, { value: number | null; met: boolean | null }>; lightvm_run_process_phases_ms: Record<string, number> | null };
    for (const k of REQUIRED) {
      assert.ok(k in r.results, `results has no ${k}`);
      const x = r.results[k];
      if (!x) {
        assert.ok(r.skipped?.[k] && r.skipped[k].length > 10, `${k} is null without a reason in skipped`);
        assert.ok(!ALWAYS.includes(k), `${k} needs no peer and must be measured: ${r.skipped?.[k]}`);
        continue;
      }
      assert.equal(x.n, 2, `${k}: n`);
      for (const f of ['p50_ms', 'p90_ms'] as const) assert.ok(Number.isFinite(x[f]) && x[f] > 0, `${k}.${f} = ${x[f]}`);
      assert.ok(x.p90_ms >= x.p50_ms, `${k}: p90 < p50`);
      assert.ok(typeof x.interval === 'string' && x.interval.length > 20, `${k} does not say what it timed`);
    }
    for (const [path, v] of numbers(r)) assert.ok(Number.isFinite(v) && v >= 0, `${path} = ${v}`);
    assert.equal(typeof r.ratios.lightvm_run_process_over_node_start, 'number');
    assert.equal(typeof r.targets.lightvm_run_process_vs_node_start!.met, 'boolean');
    assert.equal(typeof r.targets.lightvm_cold_vs_kvm_floor_monitor!.met, 'boolean');
    // Where the run process's time goes, as it reports itself.
    for (const k of ['node_bootstrap_ms', 'modules_ms', 'vm_ms', 'request_to_boot_ms']) {
      assert.ok((r.lightvm_run_process_phases_ms?.[k] ?? -1) > 0, `phases: ${k}`);
    }
  });

  void it('a sampler that got no time is an error naming it', () => {
    assert.deepEqual(checkSamples('x', [0.5, 1], 2), [0.5, 1]);
    assert.throws(() => checkSamples('lightvm_warm', undefined, 2), /lightvm_warm: the sampler returned no samples/);
    assert.throws(() => checkSamples('lightvm_warm', [1], 2), /lightvm_warm: the sampler returned 1 samples, not 2/);
    assert.throws(() => checkSamples('lightvm_warm', [1, NaN], 2), /lightvm_warm: sample 1 is NaN/);
    assert.throws(() => checkSamples('kvm_floor', [-0.2, 1], 2), /kvm_floor: sample 0 is -0.2/);
    assert.throws(() => checkSamples('kvm_floor', [1, undefined], 2), /kvm_floor: sample 1 is undefined/);
  });
});
