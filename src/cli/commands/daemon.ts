import type { Command } from 'commander';
import { fail, intOption } from '../output.js';

/** "4:16,8:2" → { 4: 16, 8: 2 }: prepared shells per memory size in MiB. */
export function parsePool(spec: string): Record<number, number> {
  const out: Record<number, number> = {};
  for (const part of spec.split(',').filter(Boolean)) {
    const m = /^(\d+):(\d+)$/.exec(part.trim());
    if (!m) throw new Error(`--pool: "${part}" is not MiB:count (e.g. 4:16)`);
    out[Number(m[1])] = Number(m[2]);
  }
  return out;
}

interface DaemonOpts {
  socket?: string;
  runtimeDir?: string;
  vmsPerExecutor?: number;
  spare?: number;
  pool?: string;
  logLevel?: string;
  destroyOnStop?: boolean;
  bridge?: string;
  bridgeAddress?: string;
  allowPath?: string[];
  devices?: string;
}

export function daemonCommand(cmd: Command): Command {
  return cmd
    .option('--socket <path>', 'API socket (default: $LIGHTVM_SOCKET or <runtime-dir>/lightvmd.sock)')
    .option('--runtime-dir <dir>', 'runtime directory (default: $XDG_RUNTIME_DIR/lightvm or /run/lightvm)')
    .option('--vms-per-executor <n>', 'most VMs one executor process holds', intOption('--vms-per-executor', 1, 5000))
    .option('--spare <n>', 'executors started ahead of need', intOption('--spare', 0, 64))
    .option('--pool <MiB:count,...>', 'prepared shells to keep, per memory size', '4:8')
    .option('--log-level <level>', 'trace, debug, info, warn, error', 'info')
    .option('--destroy-on-stop', 'on SIGTERM destroy the VMs (default: save them, and restore them at the next start)')
    .option('--bridge <name>', 'bridge that VM taps join (created if missing)', 'lvbr0')
    .option('--bridge-address <cidr>', 'host address on the bridge, or none', '10.0.0.1/24')
    .option('--allow-path <dir>', 'a directory whose files API requests may name (images, disks, snapshots), besides the runtime directory and the built-in images; repeatable',
      (dir: string, dirs: string[]) => [...dirs, dir], [] as string[])
    .option('--devices <mode>', 'noxs (device page only) or xenstore (each create and destroy also does libxl\'s XenStore steps, against a store and backend the daemon starts)', 'noxs')
    .action(async (opts: DaemonOpts) => {
      try {
        if (opts.devices !== 'noxs' && opts.devices !== 'xenstore') throw new Error(`--devices: "${opts.devices}" is not noxs or xenstore`);
        // Loaded here: the daemon's modules (fastify, pino) cost ~0.2 s to
        // load, which no other command should pay.
        const { runDaemon } = await import('../../daemon/main.js');
        await runDaemon({
          socket: opts.socket, runtimeDir: opts.runtimeDir, vmsPerExecutor: opts.vmsPerExecutor,
          spare: opts.spare, pool: parsePool(opts.pool ?? ''), logLevel: opts.logLevel, destroyOnStop: opts.destroyOnStop,
          bridge: opts.bridge, bridgeAddress: opts.bridgeAddress, allowPaths: opts.allowPath,
          devices: opts.devices,
        });
      } catch (err) {
        fail(err);
      }
    });
}

export function registerDaemon(program: Command): void {
  const d = program.command('daemon').description('run lightvmd in the foreground (or: daemon stop)');
  daemonCommand(d);
  d.command('stop')
    .description('stop a running daemon: its VMs are saved and come back with the next one (--destroy: they end)')
    .option('--runtime-dir <dir>', 'runtime directory')
    .option('--socket <path>', 'API socket')
    .option('--destroy', 'destroy the VMs instead of saving them')
    .action(async (_opts: unknown, cmd: Command) => {
      // The options may have been given after "daemon" or after "stop".
      const opts = cmd.optsWithGlobals<{ runtimeDir?: string; socket?: string; destroy?: boolean }>();
      try {
        const [{ Client }, { defaultRuntimeDir, defaultSocketPath }] = await Promise.all([import('../client.js'), import('../../daemon/paths.js')]);
        const client = new Client(opts.socket ?? defaultSocketPath(opts.runtimeDir ?? defaultRuntimeDir()));
        const info = await client.request<{ pid: number }>('GET', '/v1/host');
        await client.request('POST', '/v1/daemon/stop', { destroy: opts.destroy === true });
        client.close();
        // Wait until the process is gone.
        for (let i = 0; i < 600; i++) {
          try {
            process.kill(info.pid, 0);
          } catch {
            return;
          }
          await new Promise((r) => setTimeout(r, 50));
        }
        throw new Error(`daemon (pid ${info.pid}) did not stop within 30 s`);
      } catch (err) {
        fail(err);
      }
    });
}
