// lightvm bench containers, small: every pair measured on both sides in the
// same run, the tasks left running all counted by the daemon, the shim
// server's fds within what its tasks explain, the shim binary's start and
// delete answered in sh faster than in Node, nothing left behind.
import { spawnSync } from 'node:child_process';
import { readdirSync } from 'node:fs';
import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { benchContainers, containersUnavailable } from '../src/bench/containers.js';

interface Pair {
  lightvm: { p50_ms: number; p90_ms: number; n: number };
  runc: { p50_ms: number; p90_ms: number; n: number };
  runc_over_lightvm_p50: number;
}

void describe('bench containers', { skip: containersUnavailable() ?? false }, () => {
  // podman's side is left out here: oci.test.ts runs podman with lightvm-oci.
  void it('ctr with LightVM vs runc, and 10 tasks through one containerd', async () => {
    const before = readdirSync('/tmp').filter((f) => f.startsWith('lvbc-'));
    const r = await benchContainers({ runs: 2, tasks: 10, podman: false }) as Record<string, unknown>;
    for (const key of ['ctr_run_exit', 'ctr_run_running']) {
      const p = r[key] as Pair;
      assert.equal(p.lightvm.n, 2, key);
      assert.equal(p.runc.n, 2, key);
      assert.ok(p.lightvm.p50_ms > 0 && p.runc.p50_ms > 0, key);
      assert.equal(p.runc_over_lightvm_p50, Math.round((p.runc.p50_ms / p.lightvm.p50_ms) * 100) / 100);
    }
    assert.deepEqual(r.podman, { skipped: 'not asked for' });
    const parts = r.parts as Record<string, { p50_ms: number; n: number }>;
    for (const k of ['ctr_version', 'ctr_container_create', 'shim_start_sh', 'shim_start_node', 'shim_delete_sh', 'shim_delete_node']) {
      assert.ok(parts[k]!.n === 10 && parts[k]!.p50_ms > 0, `${k}: ${JSON.stringify(parts[k])}`);
    }
    // The sh answers start no Node: a Node start alone is tens of ms, more on a loaded host.
    assert.ok(parts.shim_start_sh!.p50_ms < parts.shim_start_node!.p50_ms, JSON.stringify(parts));
    assert.ok(parts.shim_delete_sh!.p50_ms < parts.shim_delete_node!.p50_ms, JSON.stringify(parts));
    const tasks = r.tasks as { tasks: number; vms_running: number; shim_server: { fds: number; rss_kib: number } | null };
    assert.equal(tasks.tasks, 10);
    assert.equal(tasks.vms_running, 10, 'every task is a running VM');
    assert.ok(tasks.shim_server, 'the shim server was found');
    // Per task: containerd's connection and the stdout fifo; plus a few dozen of Node's own.
    assert.ok(tasks.shim_server.fds < 10 * 3 + 60, `shim server fds ${tasks.shim_server.fds}`);
    assert.deepEqual(readdirSync('/tmp').filter((f) => f.startsWith('lvbc-')), before, 'the benchmark removed its directory');
    assert.equal(spawnSync('pgrep', ['-f', 'serve -socket /tmp/lvbc-']).status, 1, 'no shim server left');
  });
});
