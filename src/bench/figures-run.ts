// `lightvm bench figures`: the paper's scaling figure. VMs are started one
// after another up to --vms; at every step, with that many VMs running, a
// few more are created cold and warm through the daemon, beside fork+exec
// at the same moments (a reference: a whole process, nothing of it kept
// running), and host memory per VM is read. crun is left out: `crun run` is
// a whole CLI life cycle with no container kept running, not a creation
// beside N running containers. The data and SVG charts go to bench/results/.
import { mkdirSync, writeFileSync } from 'node:fs';
import { release } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../toolstack/images.js';
import { startDaemon, waitForPool } from './daemon-peer.js';
import type { FigureData } from './figures.js';
import { memAvailableKiB } from './host-stats.js';
import { RawHttpClient } from './http-client.js';
import { forkExec } from './peers.js';
import { summarize } from './stats.js';

export const RESULTS_DIR = join(PACKAGE_ROOT, 'bench', 'results');

export interface FiguresOptions {
  vms: number;
  step: number;
  samples: number;
  outDir?: string;
  onProgress?: (running: number, total: number) => void;
}

export async function benchFigures(opts: FiguresOptions): Promise<{ data: FigureData; files: string[]; json: string }> {
  const outDir = opts.outDir ?? RESULTS_DIR;
  const POOL = Math.max(16, opts.samples + 4);
  const memBase = memAvailableKiB();
  const daemon = await startDaemon(['--pool', `4:${POOL}`]);
  const raw = new RawHttpClient(daemon.socket);
  const creation: FigureData['creation'] = [];
  const memory: FigureData['memory'] = [];
  const idle = raw.prepare('POST', '/v1/vms', { image: 'daytime', cmdline: 'stay', wait: 'booted' });
  const create = async (body: Buffer): Promise<{ ms: number; id: number }> => {
    let t0 = 0n;
    const r = await raw.send<{ vm: { id: number } }>(body, (ns) => (t0 = ns));
    return { ms: Number(process.hrtime.bigint() - t0) / 1e6, id: r.vm.id };
  };
  try {
    await waitForPool(daemon.client, 4, POOL, 120_000);
    const memStart = memAvailableKiB();
    let running = 0;
    const measure = async (): Promise<void> => {
      await waitForPool(daemon.client, 4, POOL, 120_000);
      const point = (series: string, samples: number[]): void => {
        const s = summarize(samples);
        creation.push({ series, running, p50_ms: s.p50_ms, p90_ms: s.p90_ms });
      };
      const warm: number[] = [];
      const cold: number[] = [];
      const made: number[] = [];
      // Warm and cold in turn, so that both meet the same moment: right after
      // a fill step the host is still busy with the VMs just made (warm ones
      // first, then cold ones, made warm look slower than cold).
      const coldReq = raw.prepare('POST', '/v1/vms', { image: 'daytime', cmdline: 'stay', wait: 'booted', warm: false });
      for (let i = 0; i < opts.samples; i++) {
        const w = await create(idle);
        warm.push(w.ms);
        made.push(w.id);
        const c = await create(coldReq);
        cold.push(c.ms);
        made.push(c.id);
      }
      for (const id of made) await raw.send(raw.prepare('DELETE', `/v1/vms/${id}`));
      point('lightvm warm', warm);
      point('lightvm cold', cold);
      point('fork+exec', await forkExec(opts.samples));
      if (running > 0) memory.push({ running, kib_per_vm: Math.round((memStart - memAvailableKiB()) / running) });
    };
    await measure();
    while (running < opts.vms) {
      const target = Math.min(opts.vms, running + opts.step);
      for (; running < target; running++) await create(idle);
      opts.onProgress?.(running, opts.vms);
      await measure();
    }
  } finally {
    raw.close();
    await daemon.stop();
  }
  // The kernel goes on freeing the VMs for a while after their processes
  // have exited: read what is left once MemAvailable stops rising (<= 30 s).
  let left = memBase - memAvailableKiB();
  for (let i = 0, freeing = true; i < 30 && freeing; i++) {
    await new Promise((r) => setTimeout(r, 1000));
    const now = memBase - memAvailableKiB();
    freeing = left - now >= 1024;
    left = now;
  }
  const data: FigureData = {
    creation, memory,
    title: `${new Date().toISOString().slice(0, 10)}, Linux ${release()}, daemon and executors included (${Math.round(left / 1024)} MiB left in use after stop)`,
  };
  mkdirSync(outDir, { recursive: true });
  const { renderFigures } = await import('./figures.js');
  const files = await renderFigures(data, outDir);
  const json = join(outDir, 'figures.json');
  writeFileSync(json, `${JSON.stringify({ ...data, crun: 'left out: a whole `crun run` with nothing kept running is not a creation beside N running' }, null, 2)}\n`);
  return { data, files, json };
}
