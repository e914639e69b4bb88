// `lightvm bench ...`: each benchmark prints one JSON object, with ratios
// against peers measured in the same run.
// Each benchmark's modules are loaded when it runs, not by every command.
import { spawnSync } from 'node:child_process';
import type { Command } from 'commander';
import { fail, intOption } from '../output.js';

type Progress = (done: number, total: number, phase?: string) => void;

/**
 * Runs a benchmark with a progress bar on a terminal (none with --json or
 * when stderr is not one), then prints its result.
 */
async function report(json: boolean | undefined, label: string, work: (progress: Progress) => Promise<unknown>): Promise<void> {
  const { Bar, Presets } = await import('cli-progress');
  const bar = !json && process.stderr.isTTY
    ? new Bar({ format: `{phase} [{bar}] {value}/{total} {eta_formatted}` }, Presets.shades_classic)
    : undefined;
  let started = false;
  const progress: Progress = (done, total, phase = label) => {
    if (!bar) return;
    if (!started) {
      bar.start(total, done, { phase });
      started = true;
    }
    bar.setTotal(total);
    bar.update(done, { phase });
  };
  try {
    const result = await work(progress);
    bar?.stop();
    process.stdout.write(`${JSON.stringify(result, null, json ? undefined : 2)}\n`);
  } catch (err) {
    bar?.stop();
    fail(err);
  }
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks that print ratios against peers measured in the same run');

  bench
    .command('boot')
    .description('boot time of the noop guest against the KVM floor, fork+exec and QEMU')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 2, 100000), 200)
    .option('--json', 'print one JSON object')
    .action((opts: { runs: number; json?: boolean }) => report(opts.json, 'booting', async (progress) => {
      const { benchBoot, daemonMeasure } = await import('../../bench/boot.js');
      return benchBoot({ runs: opts.runs, onProgress: progress }, [await daemonMeasure()]);
    }));

  bench
    .command('snapshot')
    .description('save, restore and live migration of an idle guest, idle and with many VMs running')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 3, 10000), 20)
    .option('--loaded-vms <n>', 'VMs running for the loaded measurements (0: skip)', intOption('--loaded-vms', 0, 20000), 1000)
    .option('--json', 'print one JSON object')
    .action((opts: { runs: number; loadedVms: number; json?: boolean }) => report(opts.json, 'snapshot', async (progress) =>
      (await import('../../bench/snapshot.js')).benchSnapshot({ runs: opts.runs, loadedVms: opts.loadedVms, onProgress: (phase, done, total) => progress(done, total, phase) })));

  bench
    .command('scale')
    .description('start VMs one after another through the daemon; flat creation time, memory and idle CPU per VM, vs crun')
    .option('--vms <n>', 'VMs to start', intOption('--vms', 10, 30000), 10000)
    .option('--pool <n>', 'prepared shells the daemon keeps', intOption('--pool', 0, 4096), 64)
    .option('--concurrency <n>', 'creation requests in flight at once (1: strictly one after another)', intOption('--concurrency', 1, 64), 1)
    .option('--vms-per-executor <n>', 'VMs per executor process', intOption('--vms-per-executor', 1, 5000))
    .option('--idle-seconds <s>', 'seconds over which idle CPU is measured', intOption('--idle-seconds', 1, 600), 10)
    .option('--warmup-vms <n>', 'VMs created and destroyed before the measured series (the daemon\'s JIT warms up)', intOption('--warmup-vms', 0, 5000), 300)
    .option('--samples', 'include every creation time in the output')
    .option('--json', 'print one JSON object')
    .action((opts: { vms: number; pool: number; concurrency: number; vmsPerExecutor?: number; idleSeconds: number; warmupVms: number; samples?: boolean; json?: boolean }) =>
      report(opts.json, 'starting VMs', async (progress) => {
        const { benchScale } = await import('../../bench/scale.js');
        const result: Record<string, unknown> = await benchScale({
          vms: opts.vms, pool: opts.pool, concurrency: opts.concurrency, vmsPerExecutor: opts.vmsPerExecutor, idleSeconds: opts.idleSeconds,
          warmupVms: opts.warmupVms, onProgress: (done, total) => progress(done, total),
        });
        if (!opts.samples) delete result.create_ms;
        return result;
      }));

  bench
    .command('xenstore')
    .description('creation time of the N-th VM kept running, noxs (prepared shell, cold) against --devices xenstore (libxl\'s store steps), real VMs through a daemon per series; --control-path: the store steps alone, no VM')
    .option('--vms <n>', 'VMs (or domains) to create per series, all kept until the series ends', intOption('--vms', 2, 30000), 300)
    .option('--window <n>', 'creations in the first and the last window (default a tenth of --vms, at most 100)', intOption('--window', 1, 15000))
    .option('--control-path', 'the xenstore mode\'s store steps only, with a frontend per domain on its own connection: no VM, no daemon')
    .option('--broadcast', 'leave each VM\'s bridge port getting broadcasts (by default they are turned off once it is made: each boot\'s ARP would wake every VM kept running)')
    .option('--svg <file>', 'also draw the creation time against the VMs running')
    .option('--json', 'print one JSON object')
    .action((opts: { vms: number; window?: number; controlPath?: boolean; broadcast?: boolean; svg?: string; json?: boolean }) => report(opts.json, opts.controlPath ? 'domains' : 'VMs', async (progress) => {
      const { renderXenstoreFigure } = await import('../../bench/figures.js');
      if (opts.controlPath) {
        const { benchXenstoreControlPath } = await import('../../bench/xenstore.js');
        const r = await benchXenstoreControlPath({ vms: opts.vms, window: opts.window, onProgress: progress });
        if (opts.svg) await renderXenstoreFigure(r.points, opts.svg, `${opts.vms} domains created and kept; control path only: store and dom0 backend processes, no VM`);
        return r;
      }
      const { benchXenstoreVms } = await import('../../bench/xenstore-vms.js');
      const r = await benchXenstoreVms({ vms: opts.vms, window: opts.window, broadcast: opts.broadcast, onProgress: progress });
      if (opts.svg) {
        await renderXenstoreFigure(r.points, opts.svg,
          [`${opts.vms} VMs per series, a daemon each (daytime, one vif${opts.broadcast ? ', broadcasts flooded' : ', ports out of broadcast'}), each kept running`,
            'clock (the bench\'s): POST /v1/vms written to its 201 reply read (VM running; xenstore mode: its vif Connected)'],
          'Creation time of the N-th VM: noxs against xenstore mode', 'VMs already running');
      }
      return r;
    }));

  bench
    .command('figures')
    .description('creation time and memory per VM against the number of running VMs, as SVG charts in bench/results/')
    .option('--vms <n>', 'VMs to reach', intOption('--vms', 10, 30000), 2000)
    .option('--step <n>', 'VMs started between two measurements', intOption('--step', 1, 30000), 500)
    .option('--samples <n>', 'creations per series per step', intOption('--samples', 3, 1000), 20)
    .option('--out <dir>', 'output directory (default bench/results)')
    .action((opts: { vms: number; step: number; samples: number; out?: string }) => report(true, 'running VMs', async (progress) => {
      const { benchFigures } = await import('../../bench/figures-run.js');
      const r = await benchFigures({
        vms: opts.vms, step: opts.step, samples: opts.samples, outDir: opts.out,
        onProgress: (running, total) => {
          progress(running, total);
          if (!process.stderr.isTTY) process.stderr.write(`${running}/${total} VMs running\n`);
        },
      });
      return { bench: 'figures', files: [...r.files, r.json], creation_points: r.data.creation.length, memory: r.data.memory };
    }));

  bench
    .command('disk')
    .description('host cost per 4 KiB virtio-blk request (single and batched) vs pread/pwrite from C, and the kv guest\'s ops/s; in a private network namespace')
    .option('--requests <n>', '4 KiB requests per series', intOption('--requests', 10, 1000000), 2000)
    .option('--kv-ops <n>', 'kv operations', intOption('--kv-ops', 20, 1000000), 2000)
    .option('--dir <dir>', 'where the disk files go (default /dev/shm, else the temporary directory)')
    .option('--json', 'print one JSON object')
    .action((opts: { requests: number; kvOps: number; dir?: string; json?: boolean }) => {
      if (!inOwnNetns()) return;
      return report(opts.json, 'disk', async (progress) => (await import('../../bench/disk.js'))
        .benchDisk({ requests: opts.requests, kvOps: opts.kvOps, dir: opts.dir, onProgress: (phase, done, total) => progress(done, total, phase) }));
    });

  bench
    .command('containers')
    .description('ctr run and podman run with LightVM (shim, lightvm-oci) vs runc, and many tasks through one containerd')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 3, 10000), 10)
    .option('--tasks <n>', 'long-lived tasks started one after another through one containerd', intOption('--tasks', 10, 20000), 1000)
    .option('--json', 'print one JSON object')
    .action((opts: { runs: number; tasks: number; json?: boolean }) => report(opts.json, 'containers', async (progress) =>
      (await import('../../bench/containers.js')).benchContainers({ runs: opts.runs, tasks: opts.tasks, onProgress: (phase, done, total) => progress(done, total, phase) })));

  bench
    .command('tinyx')
    .description('a Tinyx image (kernel + initramfs): its size, the least RAM that serves, the time to its first answer under QEMU microvm (TCG)')
    .argument('[app]', 'a recipe: nginx, redis-server, busybox-httpd', 'nginx')
    .option('-o, --output <dir>', 'where the image is built', 'tinyx-bench')
    .option('--json', 'print one JSON object')
    .action((app: string, opts: { output: string; json?: boolean }) => report(opts.json, 'tinyx', async (progress) => {
      const { benchTinyx } = await import('../../bench/tinyx.js');
      return benchTinyx({ app, out: opts.output, onProgress: (d, t, phase) => progress(d, t, phase) });
    }));

  bench
    .command('net')
    .description('vif set-up, daytime first byte (running and just-in-time), ping, vs a crun container\'s veth set-up; in a private network namespace')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 3, 10000), 30)
    .option('--json', 'print one JSON object')
    .action((opts: { runs: number; json?: boolean }) => {
      if (!inOwnNetns()) return;
      return report(opts.json, 'net', async (progress) => {
        const [{ Rtnetlink }, { benchNet }] = await Promise.all([import('../../sys/netlink.js'), import('../../bench/net.js')]);
        const nl = new Rtnetlink();
        nl.setUp(1); // lo
        nl.close();
        return benchNet({ runs: opts.runs, onProgress: (phase, done, total) => progress(done, total, phase) });
      });
    });
}

/**
 * A benchmark with bridges and taps runs in a network namespace of its own,
 * never touching the host's network: true in it; otherwise runs this
 * command again inside one and exits with its status.
 */
function inOwnNetns(): boolean {
  if (process.env.LIGHTVM_BENCH_NETNS === '1') return true;
  const r = spawnSync('unshare', ['-n', '--', process.execPath, ...process.execArgv, ...process.argv.slice(1)], {
    stdio: 'inherit', env: { ...process.env, LIGHTVM_BENCH_NETNS: '1' },
  });
  if (r.error) fail(new Error(`this benchmark needs unshare (util-linux) and root: ${r.error.message}`));
  process.exit(r.status ?? 1);
}
