// `lightvm bench boot`: how fast a VM starts, against its peers, all
// measured in one run and interleaved so that machine noise falls on all of
// them. Pairs time the same interval (each result's `interval` says where
// its clock starts and stops):
//   process per instance: lightvm_run_process, qemu_process, runc_process,
//     crun_process, fork_exec, node_start;
//   API per instance: lightvm_api_roundtrip, podman_api_start (and
//     docker_api_start where dockerd runs);
//   floors: lightvm_cold against kvm_floor and kvm_floor_monitor (C);
//     lightvm_warm (to the boot marker) beside the round trip.
import { execFile } from 'node:child_process';
import { existsSync, statSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Host } from '../toolstack/host.js';
import { PACKAGE_ROOT, resolveImage } from '../toolstack/images.js';
import { crunAvailable, crunRun, prepareBundle, type Bundle } from './crun.js';
import { startDaemon, waitForPool } from './daemon-peer.js';
import { RawHttpClient } from './http-client.js';
import { forkExec, kvmFloor, kvmFloorMonitor, processRuns, qemuBoot, which } from './peers.js';
import { PodmanService, podmanAvailable } from './podman.js';
import { runcAvailable, runcRun } from './runc.js';
import { checkSamples, ratio, summarize, type Result } from './stats.js';

const execFileP = promisify(execFile);

export interface BootBenchOptions {
  runs: number;
  /** QEMU boots are ~50 ms each: at most this many. */
  qemuRuns?: number;
  /** Container runs and podman API starts (~0.1-0.5 s each): at most this many. */
  containerRuns?: number;
  /** lightvm_run_process and node_start (~0.1 s each): at most this many. */
  processRuns?: number;
  onProgress?: (done: number, total: number) => void;
}

/** One or more series measured together: the samples of each, n per call, in ms. */
export interface Measure {
  /** Series name → where its clock starts and stops. */
  series: Record<string, string>;
  /** At most this many samples in all (slow peers); default: --runs. */
  limit?: number;
  sample(n: number): Promise<Record<string, number[]>>;
  stop?(): Promise<void>;
}

/** The CLI the way a user runs it: the package's bin (dist/cli/lightvm.cjs) with this Node. */
function cliPath(): string {
  return join(PACKAGE_ROOT, 'dist', 'cli', 'lightvm.cjs');
}

/**
 * lightvm_warm and lightvm_api_roundtrip from the same requests: a real
 * daemon on its socket, a create of the noop guest from a prepared shell
 * (wait: booted), on one kept-alive connection.
 */
export async function daemonMeasure(): Promise<Measure> {
  const POOL = 16;
  const daemon = await startDaemon(['--pool', `4:${POOL}`]);
  const { client } = daemon;
  const raw = new RawHttpClient(daemon.socket);
  try {
    await waitForPool(client, 4, POOL);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  const request = raw.prepare('POST', '/v1/vms', { image: 'noop', wait: 'booted' });
  const toExit = raw.prepare('POST', '/v1/vms', { image: 'noop', wait: 'exit' });
  /** Create to the end of the delete: the whole life cycle of a noop VM. */
  const lifecycle = async (): Promise<number> => {
    let t0 = 0n;
    const r = await raw.send<{ vm: { id: number; exit: { kind: string; status?: number } | null } }>(toExit, (ns) => (t0 = ns));
    if (r.vm.exit?.kind !== 'halt' || r.vm.exit.status !== 0) throw new Error(`lightvm_api_lifecycle: VM ${r.vm.id} ended ${JSON.stringify(r.vm.exit)}`);
    const del = await raw.request(raw.prepare('DELETE', `/v1/vms/${r.vm.id}`));
    if (del.status >= 300) throw new Error(`lightvm_api_lifecycle: DELETE of VM ${r.vm.id}: HTTP ${del.status} ${del.body}`);
    return Number(process.hrtime.bigint() - t0) / 1e6;
  };
  const one = async (): Promise<{ warm: number; roundtrip: number }> => {
    let t0 = 0n;
    const r = await raw.send<{ vm: { id: number; warm: boolean }; timings: { bootNs: number } }>(request, (ns) => (t0 = ns));
    const t1 = process.hrtime.bigint();
    if (!r.vm.warm) throw new Error('lightvm_warm: the VM did not come from a prepared shell');
    if (!(r.timings.bootNs > 0)) throw new Error(`lightvm_warm: the reply for VM ${r.vm.id} has no boot marker`);
    return { warm: (r.timings.bootNs - Number(t0)) / 1e6, roundtrip: Number(t1 - t0) / 1e6 };
  };
  for (let i = 0; i < 10; i++) await one();
  await lifecycle();
  return {
    series: {
      lightvm_warm: 'API request bytes sent (kept-alive unix socket) to the guest\'s first hypercall, stamped by the executor; from a prepared shell',
      lightvm_api_roundtrip: 'API request bytes sent to its reply (201, "booted": the VM runs) parsed by the client; REST create from a prepared shell through lightvmd and its executor process',
      lightvm_api_lifecycle: 'API create (wait: exit) of the noop guest from a prepared shell, request bytes sent to the reply of its DELETE: create, run to its exit, delete',
    },
    // Back to back, from a full pool that refills in the background between rounds.
    sample: async (n) => {
      await waitForPool(client, 4, POOL);
      const out = { lightvm_warm: [] as number[], lightvm_api_roundtrip: [] as number[], lightvm_api_lifecycle: [] as number[] };
      for (let i = 0; i < n; i++) {
        const s = await one();
        out.lightvm_warm.push(s.warm);
        out.lightvm_api_roundtrip.push(s.roundtrip);
      }
      await waitForPool(client, 4, POOL);
      for (let i = 0; i < n; i++) out.lightvm_api_lifecycle.push(await lifecycle());
      return out;
    },
    stop: async () => {
      raw.close();
      await daemon.stop();
    },
  };
}

/** Whether a Docker Engine answers on its default socket. */
function dockerSocket(): string | undefined {
  const s = '/var/run/docker.sock';
  return existsSync(s) ? s : undefined;
}

/** Measures that may not be available; each says why not. */
async function peerMeasures(opts: BootBenchOptions, skipped: Record<string, string>, cleanups: (() => Promise<void>)[]): Promise<Measure[]> {
  const out: Measure[] = [];
  const containerRuns = Math.min(opts.containerRuns ?? 30, opts.runs);
  const noop = resolveImage('noop');
  const qemu = which('qemu-system-x86_64');
  if (!qemu) skipped.qemu_process = 'qemu-system-x86_64 not found (scripts/install-peers.sh installs it)';
  else {
    out.push({
      series: { qemu_process: 'Node spawn() of qemu-system-x86_64 -M microvm (KVM) booting the same noop image to its exit (isa-debug-exit), exit event' },
      limit: Math.min(opts.qemuRuns ?? 30, opts.runs),
      sample: async (n) => {
        const s: number[] = [];
        for (let i = 0; i < n; i++) {
          const q = await qemuBoot(qemu, noop);
          if (q.status !== 0) throw new Error(`qemu_process: noop under QEMU exited ${q.status}`);
          s.push(q.ms);
        }
        return { qemu_process: s };
      },
    });
  }
  let bundle: Bundle | undefined;
  const needBundle = async (): Promise<Bundle> => (bundle ??= await prepareBundle());
  cleanups.push(async () => bundle?.cleanup());
  const runcWhy = runcAvailable();
  if (runcWhy) skipped.runc_process = runcWhy;
  else {
    out.push({
      series: { runc_process: 'fork (C loop) of `runc run` of a static busybox `true` bundle to the wait that reaps runc: CLI start, create, start, run, delete' },
      limit: containerRuns,
      sample: async (n) => ({ runc_process: await runcRun(await needBundle(), n) }),
    });
  }
  const crunWhy = crunAvailable();
  if (crunWhy) skipped.crun_process = crunWhy;
  else {
    out.push({
      series: { crun_process: 'fork (C loop) of `crun run` of the same bundle to the wait that reaps crun (in a private mount namespace without the hybrid cgroup mount)' },
      limit: containerRuns,
      sample: async (n) => ({ crun_process: await crunRun(await needBundle(), n) }),
    });
  }
  const podmanWhy = podmanAvailable();
  if (podmanWhy) skipped.podman_api_start = skipped.podman_api_lifecycle = podmanWhy;
  else {
    let service: PodmanService | undefined;
    try {
      service = await PodmanService.start();
      const s = service;
      out.push({
        series: {
          podman_api_start: 'podman system service (Docker-compatible REST, runc): create request bytes sent to the start reply (204), a `true` container; wait and delete off the clock',
          podman_api_lifecycle: 'podman system service: create request bytes sent to the delete reply: create, start, wait for the `true` container\'s exit, delete',
        },
        limit: Math.min(containerRuns, 20),
        sample: async (n) => {
          const r = await s.lifecycles(n);
          return { podman_api_start: r.start, podman_api_lifecycle: r.lifecycle };
        },
        stop: () => s.stop(),
      });
    } catch (err) {
      skipped.podman_api_start = skipped.podman_api_lifecycle = (err as Error).message;
    }
  }
  if (!dockerSocket()) skipped.docker_api_start = 'dockerd is not running here (no /var/run/docker.sock)';
  else skipped.docker_api_start = 'a running dockerd is not measured: its images and containers are the host\'s, and this benchmark touches none';
  return out;
}

function baseMeasures(host: Host, noop: string, opts: BootBenchOptions): Measure[] {
  const processLimit = Math.min(opts.processRuns ?? 50, opts.runs);
  return [
    {
      series: {
        lightvm_cold: 'in-process Host.create (no prepared shell) to the guest\'s first hypercall (executor stamp), plus the VM\'s destroy; run and exit notice off the clock',
        lightvm_cold_e2e: 'in-process Host.create to the exit notice on the caller\'s thread (boot, the guest\'s run to HALT); destroy off the clock',
      },
      sample: async (n) => {
        const cold: number[] = [];
        const e2e: number[] = [];
        for (let i = 0; i < n; i++) {
          const t0 = process.hrtime.bigint();
          const vm = await host.create({ image: noop, warm: false });
          const exit = await vm.exited;
          const t1 = process.hrtime.bigint();
          await vm.freed;
          if (exit.kind !== 'halt' || exit.status !== 0) throw new Error(`lightvm_cold: noop guest did not exit 0: ${JSON.stringify(exit)}`);
          const t = vm.timings!;
          if (!(t.bootNs > 0)) throw new Error(`lightvm_cold: VM ${vm.name} has no boot marker`);
          cold.push((t.bootNs - Number(t0) + (t.destroyedNs - (t.destroyNs ?? t.endNs))) / 1e6);
          e2e.push(Number(t1 - t0) / 1e6);
        }
        return { lightvm_cold: cold, lightvm_cold_e2e: e2e };
      },
    },
    {
      series: { kvm_floor: 'C: KVM_CREATE_VM, 4 KiB slot, vCPU, real-mode run to HLT, destroy (one open /dev/kvm)' },
      sample: async (n) => ({ kvm_floor: await kvmFloor(n) }),
    },
    {
      series: { kvm_floor_monitor: 'C: what our monitor must do: VM, 4 MiB RAM slot and a read-only device-page slot, vCPU, 64-bit entry state, run to the first hypercall, destroy' },
      sample: async (n) => ({ kvm_floor_monitor: await kvmFloorMonitor(n) }),
    },
    {
      series: { fork_exec: 'C: fork, exec of a static `true`, wait for its exit' },
      sample: async (n) => ({ fork_exec: await forkExec(n) }),
    },
    {
      series: { node_start: 'fork (C loop) of `node -e 0` to the wait that reaps it' },
      limit: processLimit,
      sample: async (n) => ({ node_start: await processRuns(n, process.execPath, ['-e', '0']) }),
    },
    {
      series: { lightvm_run_process: 'fork (C loop) of `node dist/cli/lightvm.cjs run noop` (the bin) to the wait that reaps it: Node start, module loading, KVM set-up, boot, halt, teardown, exit' },
      limit: processLimit,
      sample: async (n) => ({ lightvm_run_process: await processRuns(n, process.execPath, [cliPath(), 'run', 'noop']) }),
    },
  ];
}

/** Where lightvm_run_process's time goes: the phases `lightvm run noop --json` reports of itself (medians). */
async function runBreakdown(runs: number): Promise<Record<string, number> | null> {
  const all: Record<string, number[]> = {};
  for (let i = 0; i < runs; i++) {
    try {
      // An empty environment, as the samples have (processRuns): NODE_EXTRA_CA_CERTS, where
      // set, alone adds ~100 ms to Node's bootstrap here.
      const { stdout } = await execFileP(process.execPath, [cliPath(), 'run', 'noop', '--json'], { env: {} });
      const r = JSON.parse(stdout) as { timings: Record<string, number | null>; process: Record<string, number> };
      for (const [k, v] of Object.entries({ ...r.process, ...r.timings })) if (typeof v === 'number') (all[k] ??= []).push(v);
    } catch {
      return null;
    }
  }
  return Object.fromEntries(Object.entries(all).map(([k, v]) => [k, summarize(v).p50_ms]));
}

type Target = { target: string; value: number | null; met: boolean | null };

function target(results: Record<string, Result | null>, a: string, b: string, op: '<=' | '>=', limit: number): Target {
  const x = results[a];
  const y = results[b];
  if (!x || !y) return { target: `${op} ${limit}`, value: null, met: null };
  const value = ratio(x.p50_ms, y.p50_ms);
  return { target: `${op} ${limit}`, value, met: op === '<=' ? value <= limit : value >= limit };
}

export async function benchBoot(opts: BootBenchOptions, extra: Measure[] = []): Promise<Record<string, unknown>> {
  const runs = opts.runs;
  const batch = Math.min(10, runs);
  const rounds = Math.ceil(runs / batch);
  const noop = resolveImage('noop');
  const skipped: Record<string, string> = {};
  const measures: Measure[] = [...extra];
  const cleanups: (() => Promise<void>)[] = [];
  let host: Host | undefined;
  let outcome: { ok: Record<string, unknown> } | { error: unknown };
  try {
    host = await Host.start({ executors: 1 });
    measures.push(...baseMeasures(host, noop, opts), ...(await peerMeasures(opts, skipped, cleanups)));
    const samples: Record<string, number[]> = {};
    const intervals: Record<string, string> = {};
    for (const m of measures) {
      for (const [k, v] of Object.entries(m.series)) {
        samples[k] = [];
        intervals[k] = v;
      }
    }
    // Warm-up: JIT, page cache, the first VM on the host costs double.
    for (let i = 0; i < 20; i++) await (await host.create({ image: noop, warm: false })).freed;
    for (const m of measures) await m.sample(1);

    for (let r = 0; r < rounds; r++) {
      const n = Math.min(batch, runs - r * batch);
      for (const m of measures) {
        const names = Object.keys(m.series);
        // Slow peers spread their samples over the rounds.
        const want = m.limit === undefined ? n : Math.ceil((m.limit * (r + 1)) / rounds) - samples[names[0]!]!.length;
        if (want <= 0) continue;
        const got = await m.sample(want);
        for (const k of names) samples[k]!.push(...checkSamples(k, got[k], want));
      }
      opts.onProgress?.(Math.min(runs, (r + 1) * batch), runs);
    }

    const results: Record<string, Result | null> = {};
    for (const [k, v] of Object.entries(samples)) {
      if (!v.length) throw new Error(`${k}: no samples were taken`);
      results[k] = { ...summarize(v), interval: intervals[k]! };
    }
    for (const k of Object.keys(skipped)) results[k] ??= null;
    const p50 = (k: string): number | null => results[k]?.p50_ms ?? null;
    const ratios: Record<string, number | null> = {};
    const pairs: [string, string][] = [
      ['lightvm_run_process', 'node_start'], ['qemu_process', 'lightvm_run_process'], ['runc_process', 'lightvm_run_process'],
      ['crun_process', 'lightvm_run_process'], ['lightvm_run_process', 'fork_exec'],
      ['lightvm_api_roundtrip', 'fork_exec'], ['lightvm_api_roundtrip', 'podman_api_start'], ['lightvm_api_lifecycle', 'podman_api_lifecycle'],
      ['lightvm_warm', 'fork_exec'],
      ['lightvm_cold', 'kvm_floor_monitor'], ['lightvm_cold', 'kvm_floor'], ['kvm_floor_monitor', 'kvm_floor'], ['lightvm_cold', 'fork_exec'],
    ];
    for (const [a, b] of pairs) {
      const x = p50(a);
      const y = p50(b);
      ratios[`${a}_over_${b}`] = x !== null && y !== null ? ratio(x, y) : null;
    }
    const targets: Record<string, Target> = {
      lightvm_run_process_vs_node_start: target(results, 'lightvm_run_process', 'node_start', '<=', 1.5),
      lightvm_api_roundtrip_vs_fork_exec: target(results, 'lightvm_api_roundtrip', 'fork_exec', '<=', 1.2),
      lightvm_api_roundtrip_vs_podman_api_start: target(results, 'lightvm_api_roundtrip', 'podman_api_start', '<=', 0.02),
      lightvm_cold_vs_kvm_floor_monitor: target(results, 'lightvm_cold', 'kvm_floor_monitor', '<=', 1.3),
      lightvm_warm_vs_fork_exec: target(results, 'lightvm_warm', 'fork_exec', '<=', 1.0),
    };

    // Guest instructions from entry to the first hypercall (single-stepped).
    const bootInstructions: Record<string, number | null> = {};
    for (const image of ['noop', 'hello']) {
      const vm = await host.create({ image, warm: false, countInstructions: true });
      await vm.exited;
      bootInstructions[image] = vm.instructions ?? null;
    }
    const imageBytes = Object.fromEntries(['noop', 'hello', 'daytime'].map((i) => [i, statSync(resolveImage(i)).size]));
    outcome = { ok: {
      bench: 'boot',
      runs,
      results,
      ...(Object.keys(skipped).length ? { skipped } : {}),
      ratios,
      targets,
      // What a `lightvm run noop` process spends where, as it reports itself (p50 of a few runs).
      lightvm_run_process_phases_ms: await runBreakdown(Math.min(5, runs)),
      boot_instructions: bootInstructions,
      image_bytes: imageBytes,
      rss_run_hello_kib: await runHelloRss(),
      // Load average when it ended: numbers from a busy host compare only with their own peers.
      host: { kernel: release(), node: process.version, cpus: availableParallelism(), loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
    } };
  } catch (error) {
    outcome = { error };
  }
  // Every peer is stopped and cleaned up; what failed to be is an error, not a leak left quietly.
  const failed: string[] = [];
  for (const stop of [...measures.map((m) => m.stop), ...cleanups]) await stop?.().catch((err: Error) => failed.push(err.message));
  await host?.close();
  if ('error' in outcome) throw outcome.error;
  if (failed.length) throw new Error(`bench boot could not clean up: ${failed.join('; ')}`);
  return outcome.ok;
}

/** Max RSS of a whole `lightvm run hello` process, as it reports itself. */
async function runHelloRss(): Promise<number | null> {
  try {
    const { stdout } = await execFileP(process.execPath, [cliPath(), 'run', 'hello', '--json']);
    return (JSON.parse(stdout) as { max_rss_kib: number }).max_rss_kib;
  } catch {
    return null;
  }
}
