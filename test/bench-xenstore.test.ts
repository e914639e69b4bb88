// `lightvm bench xenstore` on a few domains: its store and backend
// processes start and end, the report has each number it promises, the
// name check reads one name per domain listed (the step whose cost grows
// with N, and the one count here that timing cannot move), and destroy
// leaves the store as it was.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { benchXenstoreControlPath } from '../src/bench/xenstore.js';
import { within } from './helpers.js';

void describe('bench xenstore (control path, no VM)', () => {
  void it('reports the N-th domain\'s creation, its store operations, and leaves nothing', async () => {
    const r = await within(benchXenstoreControlPath({ vms: 20, window: 5 }), 120_000, 'bench xenstore --vms 20');
    const s = r.results.xenstore_control_path;
    for (const k of ['first_p50_ms', 'first_p90_ms', 'last_p50_ms', 'last_p90_ms'] as const) assert.ok(s[k] > 0, k);
    assert.equal(s.n, 20);
    assert.match(s.interval, /^control path only, no VM/);
    assert.equal(r.results.noxs_cold, null);
    assert.match(r.skipped.noxs_shell, /needs real VMs/);
    // Domains 1-5 list 1-5 names (dom0's and those before), 16-20 list 16-20.
    assert.deepEqual(r.name_reads_per_create, { first: 3, last: 18 });
    // libxl's steps are well over a hundred requests whatever the timing (the waits' reads vary with it: no exact count).
    assert.ok(r.toolstack_requests_per_create.first >= 120, JSON.stringify(r.toolstack_requests_per_create));
    assert.ok(r.xenstore_ops_per_create.first >= r.toolstack_requests_per_create.first, JSON.stringify(r.xenstore_ops_per_create));
    assert.ok(r.watch_events_per_create.first > 0);
    assert.deepEqual(r.left_after_destroy, { nodes: 9, domains: 0 });
    assert.equal(r.points.length, 4);
    for (const k of ['name_check_p50_ms', 'toolstack_p50_ms', 'backend_wait_p50_ms', 'guest_handshake_p50_ms']) assert.ok((r.breakdown.last[k] ?? -1) >= 0, k);
  });

  void it('refuses a run whose windows do not fit, naming the option', async () => {
    await assert.rejects(benchXenstoreControlPath({ vms: 1 }), /--vms must be an integer >= 2 \(got 1\)/);
    await assert.rejects(benchXenstoreControlPath({ vms: 10, window: 6 }), /a window of 6 does not fit twice in 10 creations/);
  });
});
