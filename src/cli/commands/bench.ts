import type { Command } from 'commander';
import { benchBoot, warmSampler } from '../../bench/boot.js';
import { benchSnapshot } from '../../bench/snapshot.js';
import { fail, intOption } from '../output.js';

function progress(json: boolean) {
  return (done: number, total: number): void => {
    if (!json && process.stderr.isTTY) process.stderr.write(`\r${done}/${total}`);
  };
}

export function registerBench(program: Command): void {
  const bench = program.command('bench').description('benchmarks that print ratios against peers measured in the same run');
  bench
    .command('boot')
    .description('boot time of the noop guest against the KVM floor, fork+exec and QEMU')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 10, 100000), 200)
    .option('--json', 'print one JSON object')
    .action(async (opts: { runs: number; json?: boolean }) => {
      try {
        const warm = await warmSampler();
        let result;
        try {
          result = await benchBoot({ runs: opts.runs, onProgress: progress(opts.json === true) }, { lightvm_warm: warm.sampler });
        } finally {
          await warm.stop();
        }
        if (!opts.json && process.stderr.isTTY) process.stderr.write('\n');
        process.stdout.write(`${JSON.stringify(result, null, opts.json ? undefined : 2)}\n`);
      } catch (err) {
        fail(err);
      }
    });

  bench
    .command('snapshot')
    .description('save, restore and live migration of an idle guest, idle and with many VMs running')
    .option('--runs <n>', 'samples per measurement', intOption('--runs', 3, 10000), 20)
    .option('--loaded-vms <n>', 'VMs running for the loaded measurements (0: skip)', intOption('--loaded-vms', 0, 20000), 1000)
    .option('--json', 'print one JSON object')
    .action(async (opts: { runs: number; loadedVms: number; json?: boolean }) => {
      try {
        const result = await benchSnapshot({
          runs: opts.runs, loadedVms: opts.loadedVms,
          onProgress: (phase, done, total) => {
            if (!opts.json && process.stderr.isTTY) process.stderr.write(`\r${phase} ${done}/${total}   `);
          },
        });
        if (!opts.json && process.stderr.isTTY) process.stderr.write('\n');
        process.stdout.write(`${JSON.stringify(result, null, opts.json ? undefined : 2)}\n`);
      } catch (err) {
        fail(err);
      }
    });
}
