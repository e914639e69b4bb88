// `lightvm bench xenstore` with real VMs on a few of them: three series
// (noxs from a shell, noxs cold, xenstore mode), each through a daemon of
// its own, each VM kept running; the xenstore series' store counts are the
// ones libxl's steps make (the name check reads one name per domain
// listed: the count here timing cannot move).
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { benchXenstoreVms } from '../src/bench/xenstore-vms.js';
import { within } from './helpers.js';

const skip = !existsSync('/dev/kvm') ? 'needs /dev/kvm'
  : process.env.LIGHTVM_NETNS !== '1' ? 'needs root and a network namespace of its own (npm test provides one)' : false;

void describe('bench xenstore (real VMs)', { skip }, () => {
  void it('reports noxs and xenstore mode from the same run, with the store\'s counts per create', async () => {
    const r = await within(benchXenstoreVms({ vms: 12, window: 3 }), 180_000, 'bench xenstore --vms 12');
    assert.deepEqual(Object.keys(r.results), ['noxs_shell', 'noxs_cold', 'xenstore']);
    for (const [k, s] of Object.entries(r.results)) {
      assert.equal(s.n, 12, k);
      for (const f of ['first_p50_ms', 'first_p90_ms', 'last_p50_ms', 'last_p90_ms'] as const) assert.ok(s[f] > 0, `${k}.${f}`);
      assert.match(s.interval, /^POST \/v1\/vms .* to the 201 reply parsed/);
      assert.equal(r.create_ms[k]?.length, 12);
    }
    assert.equal(r.results.noxs_cold.from_shell, 0);
    // Domains 1-3 list 1-3 names (dom0's and those before), 10-12 list 10-12.
    assert.deepEqual(r.name_reads_per_create, { first: 2, last: 11 });
    assert.ok(r.xenstore_ops_per_create.first >= 120, JSON.stringify(r.xenstore_ops_per_create));
    assert.ok(r.watch_events_per_create.first > 0);
    for (const k of Object.keys(r.breakdown.last).filter((x) => x.endsWith('_ms'))) assert.ok(r.breakdown.last[k as keyof typeof r.breakdown.last] as number >= 0, k);
    assert.ok(r.breakdown.first.domain_make_p50_ms > 0 && r.breakdown.first.connect_p50_ms > 0, JSON.stringify(r.breakdown.first));
    assert.ok(Number.isFinite(r.ratios.xenstore_over_noxs_shell_first_p50));
    assert.equal(r.points.length, 3 * 12);
    // Each series' creates cut at the reply's stamps: every stage measured, the tap's set-up among them.
    for (const [k, s] of Object.entries(r.results)) {
      const st = s.stages as { first: Record<string, { p50: number; p90: number } | number | number[]>; last: typeof s.stages };
      for (const stage of ['to_api_ms', 'api_ms', 'to_executor_ms', 'executor_queue_ms', 'shell_ms', 'load_ms', 'to_started_ms', 'reply_ms', 'to_bench_ms']) {
        const v = st.first[stage] as { p50: number } | undefined;
        assert.ok(v && v.p50 >= 0 && Number.isFinite(v.p50), `${k}.stages.first.${stage}: ${JSON.stringify(v)}`);
      }
      assert.ok((st.first.net_ms as { p50: number }).p50 > 0, `${k}: no tap set-up time`);
      if (k === 'noxs_cold') assert.equal(st.first.from_shell, 0);
    }
    // The shell series alone: its windows' creates that took a shell, no more than the window.
    const so = r.results.noxs_shell.shell_only;
    assert.ok(so.first_n <= 3 && so.last_n <= 3 && so.first_n + so.last_n > 0, JSON.stringify(so));
  });

  void it('refuses a run whose windows do not fit, naming the option', async () => {
    await assert.rejects(benchXenstoreVms({ vms: 1 }), /--vms must be an integer >= 2 \(got 1\)/);
    await assert.rejects(benchXenstoreVms({ vms: 10, window: 6 }), /a window of 6 does not fit twice in 10 creations/);
  });
});
