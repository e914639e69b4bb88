// `lightvm bench net --json` with tiny counts, as a user runs it (it makes
// its own network namespace): vif set-up beside its C floor and the peers'
// procedures, each with its interval; real numbers only; nothing left
// behind (podman's storage mount, crun's bundle).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli', 'main.js');
const ALWAYS = ['vif_setup', 'vif_floor_c', 'daytime_first_byte', 'jit_first_byte', 'ping_rtt'];
const PEERS = ['vif_hotplug_script', 'crun_veth_cni_style', 'podman_api_start_bridge', 'podman_api_start_none'];

const leftovers = (): string[] => [
  ...readdirSync(tmpdir()).filter((f) => /^lightvm-(podman|crun)-/.test(f)),
  ...readFileSync('/proc/self/mounts', 'utf8').split('\n').filter((l) => l.includes('/lightvm-podman-')),
];

void describe('bench net', () => {
  void it('--runs 3 --json: vif_setup, vif_floor_c and the peers\' procedures with p50, p90, n, interval; no NaN; nothing left behind', async () => {
    const before = leftovers();
    const stdout = await new Promise<string>((resolve, reject) => {
      execFile(process.execPath, [CLI, 'bench', 'net', '--runs', '3', '--json'], { timeout: 600_000, maxBuffer: 16 << 20 }, (err, out, stderr) => {
        if (err) reject(new Error(`bench net failed: ${stderr}`));
        else resolve(out);
      });
    });
    assert.doesNotMatch(stdout, /NaN|Infinity/);
    const r = JSON.parse(stdout) as {
      results: Record<string, { p50_ms: number; p90_ms: number; n: number; interval: string } | null>;
      skipped?: Record<string, string>; ratios: Record<string, number | null>; targets: Record<string, { met: boolean | null }>;
    };
    for (const k of [...ALWAYS, ...PEERS]) {
      assert.ok(k in r.results, `results has no ${k}`);
      const x = r.results[k];
      if (!x) {
        assert.ok(PEERS.includes(k) && (r.skipped?.[k]?.length ?? 0) > 5, `${k} is null without a reason`);
        continue;
      }
      assert.ok(x.n >= 3, `${k}: n = ${x.n}`);
      assert.ok(Number.isFinite(x.p50_ms) && x.p50_ms > 0 && x.p90_ms >= x.p50_ms, `${k}: ${JSON.stringify(x)}`);
      assert.ok(x.interval.length > 20, `${k} does not say what it timed`);
    }
    assert.equal(typeof r.ratios.vif_setup_over_vif_floor_c, 'number');
    assert.equal(typeof r.targets.vif_setup_vs_vif_floor_c!.met, 'boolean');
    assert.deepEqual(leftovers().filter((l) => !before.includes(l)), [], 'bench net left files or mounts behind');
  });
});
