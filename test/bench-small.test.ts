// bench scale, figures and snapshot with tiny counts, as a user runs them:
// their JSON holds real numbers only (no NaN, nothing negative), scale's
// flatness is on p50 and p90, and the creation chart says what it measured
// (LightVM VMs kept running; the peer line is a reference).
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ROOT, tempDir } from './helpers.js';

const CLI = join(ROOT, 'dist', 'cli', 'main.js');

function bench(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(process.execPath, [CLI, 'bench', ...args], { timeout: 900_000, maxBuffer: 64 << 20 }, (err, out, stderr) => {
      if (err) reject(new Error(`bench ${args.join(' ')} failed: ${stderr}`));
      else resolve(out);
    });
  });
}

/** Every number in a JSON value, with its path. */
function numbers(v: unknown, path = ''): [string, number][] {
  if (typeof v === 'number') return [[path, v]];
  if (v && typeof v === 'object') return Object.entries(v).flatMap(([k, x]) => numbers(x, `${path}.${k}`));
  return [];
}

/**
 * No NaN anywhere, and no negative time or count. Memory figures are
 * differences of MemAvailable (and meminfo lines), which other processes
 * on this shared host move by more than 20 VMs hold: they may be negative
 * at these counts, so they are checked for being numbers only.
 */
function assertRealNumbers(text: string, what: string): Record<string, unknown> {
  assert.doesNotMatch(text, /NaN|Infinity/, what);
  const r = JSON.parse(text) as Record<string, unknown>;
  for (const [path, v] of numbers(r)) {
    const memory = /mem|kib|kernel/i.test(path);
    assert.ok(Number.isFinite(v) && (memory || v >= 0), `${what}: ${path} = ${v}`);
  }
  return r;
}

void describe('bench scale, figures and snapshot with tiny counts', () => {
  const { dir, cleanup } = tempDir('bench-small');
  after(cleanup);

  void it('scale --vms 20: flatness on p50 and p90, the creation interval named, crun a reference without a ratio', async () => {
    const r = assertRealNumbers(await bench(['scale', '--vms', '20', '--pool', '8', '--warmup-vms', '0', '--idle-seconds', '1', '--json']), 'scale');
    assert.equal(r.vms, 20);
    for (const k of ['last_over_first_p50', 'last_over_first_p90', 'create_p50_first_ms', 'create_p90_last_ms']) {
      assert.ok(typeof r[k] === 'number' && (r[k] as number) > 0, `${k} = ${String(r[k])}`);
    }
    assert.match(String(r.create_interval), /wait: booted/);
    assert.ok(!('crun_over_lightvm' in r), 'a ratio of unlike intervals is back');
  });

  void it('figures --vms 10: the creation chart names what it measured and has no crun line', async () => {
    const r = JSON.parse(await bench(['figures', '--vms', '10', '--step', '10', '--samples', '3', '--out', dir])) as { files: string[] };
    const svg = readFileSync(r.files.find((f) => f.endsWith('creation-time.svg'))!, 'utf8');
    assert.match(svg, /LightVM VMs already running/);
    assert.doesNotMatch(svg, /containers already running/);
    assert.doesNotMatch(svg, />crun</);
    const data = assertRealNumbers(readFileSync(join(dir, 'figures.json'), 'utf8'), 'figures.json') as { creation: { series: string }[] };
    assert.deepEqual([...new Set(data.creation.map((c) => c.series))], ['lightvm warm', 'lightvm cold', 'fork+exec']);
  });

  void it('snapshot --runs 3 --loaded-vms 0: real numbers', async () => {
    assertRealNumbers(await bench(['snapshot', '--runs', '3', '--loaded-vms', '0', '--json']), 'snapshot');
  });
});
