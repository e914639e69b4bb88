// `lightvm doctor`: can this host run LightVM as planned? One line per
// check, with the fix. Its work is loaded only when the command runs.
import type { Command } from 'commander';

interface DoctorCliOptions {
  json?: boolean;
  vms: number;
  vmsPerExecutor?: number;
  socket?: string;
  runtimeDir?: string;
}

export function registerDoctor(program: Command): void {
  program
    .command('doctor')
    .description('check this host: KVM, tun, bridges, limits for the planned VMs, the daemon, gcc, benchmark peers')
    .option('--json', 'print one JSON object: { ok, checks: [{ id, status, verdict, fix }] }')
    .option('--vms <n>', 'VMs you plan to run at once (limits and memory are checked against them)', (v) => positive('--vms', v), 1000)
    .option('--vms-per-executor <n>', "the daemon's --vms-per-executor (default 500)", (v) => positive('--vms-per-executor', v))
    .option('--socket <path>', 'daemon API socket (default: $LIGHTVM_SOCKET or <runtime-dir>/lightvmd.sock)')
    .option('--runtime-dir <dir>', 'daemon runtime directory')
    .action(async (opts: DoctorCliOptions) => {
      const { fail } = await import('../output.js');
      try {
        const [{ doctor }, { formatResults }, { defaultRuntimeDir, defaultSocketPath }, { DEFAULT_VMS_PER_EXECUTOR }] = await Promise.all([
          import('../../doctor/doctor.js'), import('../../doctor/check.js'), import('../../daemon/paths.js'), import('../../toolstack/fleet.js'),
        ]);
        const results = await doctor({
          vms: opts.vms,
          vmsPerExecutor: opts.vmsPerExecutor ?? DEFAULT_VMS_PER_EXECUTOR,
          socket: opts.socket ?? defaultSocketPath(opts.runtimeDir ?? defaultRuntimeDir()),
        });
        const ok = results.every((r) => r.status !== 'fail');
        process.stdout.write(opts.json ? `${JSON.stringify({ ok, planned_vms: opts.vms, checks: results })}\n` : formatResults(results));
        process.exitCode = ok ? 0 : 1;
      } catch (err) {
        fail(err);
      }
    });
}

function positive(name: string, value: string): number {
  const n = Number(value);
  if (!/^\d+$/.test(value) || n < 1 || !Number.isSafeInteger(n)) throw new Error(`${name}: "${value}" is not a whole number of at least 1`);
  return n;
}
