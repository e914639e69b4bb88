// `lightvm bench boot`: how fast a VM boots, against its peers, all measured
// in one run and interleaved so that machine noise falls on all of them.
import { execFile } from 'node:child_process';
import { statSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Host } from '../toolstack/host.js';
import { PACKAGE_ROOT, resolveImage } from '../toolstack/images.js';
import { startDaemon, waitForPool } from './daemon-peer.js';
import { RawHttpClient } from './http-client.js';
import { forkExec, kvmFloor, qemuBoot, which } from './peers.js';
import { ratio, summarize, type Percentiles } from './stats.js';

const execFileP = promisify(execFile);

export interface BootBenchOptions {
  runs: number;
  /** QEMU boots are ~50 ms each: at most this many. */
  qemuRuns?: number;
  onProgress?: (done: number, total: number) => void;
}

/** Extra measurements that need a daemon (issue: split toolstack) plug in here. */
export type ExtraSampler = (round: number, batch: number) => Promise<number[]>;

/**
 * lightvm_warm: API request to the noop guest's boot marker, from a
 * prepared shell, through a real daemon on its socket. The boot marker is
 * stamped by the executor on the shared monotonic clock, so the sample ends
 * at the guest's first hypercall, not when the reply gets back.
 */
export async function warmSampler(): Promise<{ sampler: ExtraSampler; stop: () => Promise<void> }> {
  const POOL = 16;
  const daemon = await startDaemon(['--pool', `4:${POOL}`]);
  const { client } = daemon;
  // The noop guest ends at its first hypercall: no destroy request needed.
  const raw = new RawHttpClient(daemon.socket);
  try {
    await waitForPool(client, 4, POOL);
  } catch (err) {
    await daemon.stop();
    throw err;
  }
  const request = raw.prepare('POST', '/v1/vms', { image: 'noop', wait: 'booted' });
  const one = async (): Promise<number> => {
    let t0 = 0n;
    const r = await raw.send<{ vm: { id: number; warm: boolean }; timings: { bootNs: number } }>(request, (ns) => (t0 = ns));
    if (!r.vm.warm) throw new Error('lightvm_warm: the VM did not come from a prepared shell');
    return (r.timings.bootNs - Number(t0)) / 1e6;
  };
  for (let i = 0; i < 10; i++) await one();
  return {
    stop: async () => {
      raw.close();
      await daemon.stop();
    },
    // Back to back, like the other loops, from a full pool that refills
    // in the background between rounds.
    sampler: async (_round, n) => {
      await waitForPool(client, 4, POOL);
      const out: number[] = [];
      for (let i = 0; i < n; i++) out.push(await one());
      return out;
    },
  };
}

export async function benchBoot(opts: BootBenchOptions, extra: Record<string, ExtraSampler> = {}): Promise<Record<string, unknown>> {
  const runs = opts.runs;
  const batch = Math.min(10, runs);
  const rounds = Math.ceil(runs / batch);
  const qemu = which('qemu-system-x86_64');
  const qemuRuns = Math.min(opts.qemuRuns ?? 30, runs);
  const noop = resolveImage('noop');
  // lightvm_cold is the definition: request to the boot marker, plus
  // the destroy. lightvm_cold_e2e also counts the guest's run after its
  // first hypercall and the exit notice reaching the caller's thread.
  const samples: Record<string, number[]> = { lightvm_cold: [], lightvm_cold_e2e: [], kvm_floor: [], fork_exec: [], qemu_microvm: [] };
  for (const k of Object.keys(extra)) samples[k] = [];
  let qemuSkipped: string | undefined = qemu ? undefined : 'qemu-system-x86_64 not found (scripts/install-peers.sh installs it)';

  const host = await Host.start({ executors: 1 });
  try {
    // Warm-up: JIT, page cache, the first VM on the host costs double.
    for (let i = 0; i < 20; i++) await (await host.create({ image: noop, warm: false })).freed;
    await kvmFloor(5);
    await forkExec(5);

    for (let r = 0; r < rounds; r++) {
      const n = Math.min(batch, runs - r * batch);
      for (let i = 0; i < n; i++) {
        const t0 = process.hrtime.bigint();
        const vm = await host.create({ image: noop, warm: false });
        const exit = await vm.exited;
        const t1 = process.hrtime.bigint();
        await vm.freed;
        if (exit.kind !== 'halt' || exit.status !== 0) throw new Error(`noop guest did not exit 0: ${JSON.stringify(exit)}`);
        const t = vm.timings!;
        samples.lightvm_cold!.push((t.bootNs - Number(t0) + (t.destroyedNs - (t.destroyNs ?? t.endNs))) / 1e6);
        samples.lightvm_cold_e2e!.push(Number(t1 - t0) / 1e6);
      }
      samples.kvm_floor!.push(...(await kvmFloor(n)));
      samples.fork_exec!.push(...(await forkExec(n)));
      for (const [k, sampler] of Object.entries(extra)) samples[k]!.push(...(await sampler(r, n)));
      if (qemu && !qemuSkipped && samples.qemu_microvm!.length < Math.ceil((qemuRuns * (r + 1)) / rounds)) {
        try {
          const q = await qemuBoot(qemu, noop);
          if (q.status !== 0) throw new Error(`noop under QEMU exited ${q.status}`);
          samples.qemu_microvm!.push(q.ms);
        } catch (err) {
          qemuSkipped = `qemu failed: ${(err as Error).message}`;
        }
      }
      opts.onProgress?.(Math.min(runs, (r + 1) * batch), runs);
    }

    const results: Record<string, Percentiles | null> = {};
    for (const [k, v] of Object.entries(samples)) results[k] = v.length ? summarize(v) : null;
    if (qemuSkipped) results.qemu_microvm = null;
    const cold = results.lightvm_cold!.p50_ms;
    const floor = results.kvm_floor!.p50_ms;
    const fork = results.fork_exec!.p50_ms;
    const q = results.qemu_microvm;
    const ratios: Record<string, number | null> = {
      lightvm_cold_over_kvm_floor: ratio(cold, floor),
      lightvm_cold_over_fork_exec: ratio(cold, fork),
      qemu_microvm_over_lightvm_cold: q ? ratio(q.p50_ms, cold) : null,
    };
    const targets: Record<string, { target: string; value: number | null; met: boolean | null }> = {
      lightvm_cold_vs_kvm_floor: { target: '<= 1.5', value: ratios.lightvm_cold_over_kvm_floor!, met: ratios.lightvm_cold_over_kvm_floor! <= 1.5 },
      lightvm_cold_vs_fork_exec: { target: '<= 3', value: ratios.lightvm_cold_over_fork_exec!, met: ratios.lightvm_cold_over_fork_exec! <= 3 },
      qemu_microvm_vs_lightvm_cold: {
        target: '>= 30', value: ratios.qemu_microvm_over_lightvm_cold ?? null,
        met: ratios.qemu_microvm_over_lightvm_cold == null ? null : ratios.qemu_microvm_over_lightvm_cold >= 30,
      },
    };
    if (results.lightvm_warm) {
      ratios.lightvm_warm_over_fork_exec = ratio(results.lightvm_warm.p50_ms, fork);
      targets.lightvm_warm_vs_fork_exec = { target: '<= 1.0', value: ratios.lightvm_warm_over_fork_exec, met: ratios.lightvm_warm_over_fork_exec <= 1.0 };
    }

    // Guest instructions from entry to the first hypercall (single-stepped).
    const bootInstructions: Record<string, number | null> = {};
    for (const image of ['noop', 'hello']) {
      const vm = await host.create({ image, warm: false, countInstructions: true });
      await vm.exited;
      bootInstructions[image] = vm.instructions ?? null;
    }
    const imageBytes = Object.fromEntries(['noop', 'hello', 'daytime'].map((i) => [i, statSync(resolveImage(i)).size]));
    return {
      bench: 'boot',
      runs,
      results,
      ...(qemuSkipped ? { skipped: { qemu_microvm: qemuSkipped } } : {}),
      ratios,
      targets,
      boot_instructions: bootInstructions,
      image_bytes: imageBytes,
      rss_run_hello_kib: await runHelloRss(),
      host: { kernel: release(), node: process.version },
    };
  } finally {
    await host.close();
  }
}

/** Max RSS of a whole `lightvm run hello` process, as it reports itself. */
async function runHelloRss(): Promise<number | null> {
  const cli = join(PACKAGE_ROOT, 'dist', 'cli', 'main.js');
  try {
    const { stdout } = await execFileP(process.execPath, [cli, 'run', 'hello', '--json']);
    return (JSON.parse(stdout) as { max_rss_kib: number }).max_rss_kib;
  } catch {
    return null;
  }
}
