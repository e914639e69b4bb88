import type { Command } from 'commander';
import type { VmView } from '../../daemon/view.js';
import { Host, type VirtualMachine } from '../../toolstack/host.js';
import type { DeviceEntry } from '../../vmm/device-page.js';
import { describeExit, processExitCode, type VmExit } from '../../vmm/exit.js';
import { parseDisk, parseVif } from '../cfg.js';
import { fail, ms } from '../output.js';
import { RUN_OPTIONS, type RunOptions } from './run-args.js';

// The parser main.ts tries first, from the same module (run.bundle.cjs holds both).
export { parseRunArgs } from './run-args.js';

/** Exit code of `lightvm run` when the VM ended without an exit status. */
export const EXIT_CRASHED = 125;

export function registerRun(program: Command): void {
  const cmd = program
    .command('run')
    .description('boot an image, stream its console, exit with its exit status')
    .argument('<image>', 'path to an ELF image or a Linux kernel (bzImage), or a built-in: noop, hello, daytime');
  for (const o of RUN_OPTIONS) {
    if (o.multiple) cmd.option(o.flags, o.description, (v: string, all: string[]) => [...all, v], []);
    else if (o.parse) cmd.option(o.flags, o.description, o.parse);
    else cmd.option(o.flags, o.description);
  }
  cmd.action((image: string, opts: RunOptions) => runCommand(image, opts));
}

/** `lightvm run` itself: sets the exit code, or prints one line and exits on an error. */
export async function runCommand(image: string, opts: RunOptions): Promise<void> {
  try {
    process.exitCode = await run(image, opts);
  } catch (err) {
    fail(err);
  }
}

/** --vif and --disk as devices: nets first, then disks, ids in that order (as in a cfg file). */
function devicesOf(opts: RunOptions): DeviceEntry[] {
  const nets = (opts.vif ?? []).map((spec, i) => parseVif('--vif', 0, i, spec));
  return [...nets, ...(opts.disk ?? []).map((spec, i) => parseDisk('--disk', 0, i, nets.length + i, spec, process.cwd()))];
}

async function run(image: string, opts: RunOptions): Promise<number> {
  // Where this process's time went before the command ran is worked out from
  // t0 in --json only: the global `performance` loads node:perf_hooks (~1 ms).
  const t0 = process.hrtime.bigint();
  // The VM runs on this thread: a process that runs one VM needs no other.
  const host = await Host.start({ inline: true });
  let vm: VirtualMachine | undefined;
  const onSignal = (): void => {
    void vm?.destroy();
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const requested = process.hrtime.bigint();
    vm = await host.create({
      image, memoryMiB: opts.memory, cmdline: opts.cmdline, initrd: opts.initrd, name: opts.name,
      warm: false, countInstructions: opts.countInstructions, devices: devicesOf(opts),
    });
    if (!opts.json) vm.on('console', (b) => process.stdout.write(b));
    const exit = await vm.exited;
    await vm.freed;
    const t = vm.timings!;
    const phases = {
      host_start_ms: ms(Number(requested - t0)),
      create_ms: ms(t.shellNs - t.requestNs),
      load_ms: ms(t.loadedNs - t.shellNs),
      boot_ms: t.bootNs ? ms(t.bootNs - t.loadedNs) : null,
      request_to_boot_ms: t.bootNs ? ms(t.bootNs - Number(requested)) : null,
      run_ms: t.bootNs ? ms(t.endNs - t.bootNs) : ms(t.endNs - t.loadedNs),
      destroy_ms: ms(t.destroyedNs - (t.destroyNs ?? t.endNs)),
      total_ms: ms(t.destroyedNs - Number(requested)),
    };
    if (opts.json) {
      const closing = process.hrtime.bigint();
      await host.close();
      const actionMs = performance.now() - Number(process.hrtime.bigint() - t0) / 1e6;
      const processMs = {
        node_bootstrap_ms: ms(performance.nodeTiming.bootstrapComplete * 1e6),
        modules_ms: ms((actionMs - performance.nodeTiming.bootstrapComplete) * 1e6),
        vm_ms: ms(Number(closing - t0)),
        close_ms: ms(Number(process.hrtime.bigint() - closing)),
      };
      // The fields it shares with the API's view of a VM are that view's.
      const view: Pick<VmView, 'image' | 'name' | 'memory_mib' | 'exit'> = { image: vm.image, name: vm.name, memory_mib: vm.memoryMiB, exit };
      process.stdout.write(`${JSON.stringify({
        ...view, console: vm.consoleText(),
        timings: phases, process: processMs, exits: vm.exitCount, instructions: vm.instructions ?? null,
        max_rss_kib: process.resourceUsage().maxRSS,
      })}\n`);
    } else {
      if (opts.timing) {
        process.stderr.write(Object.entries(phases).map(([k, v]) => `${k.padEnd(20)} ${v}`).join('\n') + '\n');
        process.stderr.write(`${'vm_exits'.padEnd(20)} ${vm.exitCount}\n`);
      }
      if (vm.instructions !== undefined) process.stderr.write(`${'boot_instructions'.padEnd(20)} ${vm.instructions}\n`);
      if (exit.kind !== 'halt') process.stderr.write(`lightvm: VM ${vm.name} ${describeExit(exit)}\n`);
    }
    return exitCode(exit);
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await host.close();
  }
}

export function exitCode(exit: VmExit): number {
  return exit.kind === 'halt' ? processExitCode(exit.status) : EXIT_CRASHED;
}
