// `lightvm top`: a live table of VMs like xentop, with CPU and memory per VM
// and a line per executor.
import type { Command } from 'commander';
import type { HostInfo, VmStatsView } from '../../daemon/schemas.js';
import type { VmView } from '../../daemon/view.js';
import type { Client } from '../client.js';
import { fail, intOption } from '../output.js';
import { table } from './vm.js';

type Stat = VmStatsView;

async function frame(c: Client, prev: Map<number, Stat>, intervalMs: number): Promise<string> {
  const [host, { vms }, { vms: stats }] = await Promise.all([
    c.request<HostInfo>('GET', '/v1/host'),
    c.request<{ vms: VmView[] }>('GET', '/v1/vms'),
    c.request<{ vms: Stat[] }>('GET', '/v1/stats'),
  ]);
  const byId = new Map(stats.map((s) => [s.id, s]));
  const lines: string[] = [];
  lines.push(`lightvm top - ${new Date().toTimeString().slice(0, 8)}  up ${host.uptime_s}s  ${host.vms} VMs  ${host.executors.length} executors  daemon ${(host.daemon_rss_kib / 1024).toFixed(1)} MiB`);
  lines.push(`pools: ${host.pools.map((p) => `${p.memory_mib}MiB ${p.depth}/${p.target}`).join('  ') || 'none'}`);
  lines.push('');
  const rows = [['ID', 'NAME', 'STATE', 'CPU%', 'CPU(ms)', 'EXITS', 'MEM(KiB)', 'MAXMEM(MiB)', 'EXEC']];
  for (const vm of vms) {
    const s = byId.get(vm.id);
    const p = prev.get(vm.id);
    const cpuPct = s && p ? ((s.cpu_ns - p.cpu_ns) / (intervalMs * 1e6)) * 100 : 0;
    rows.push([
      String(vm.id), vm.name, vm.state, cpuPct.toFixed(1), s ? (s.cpu_ns / 1e6).toFixed(1) : '-',
      s ? String(s.exits) : '-', s ? String(s.resident_kib) : '-', String(vm.memory_mib), String(vm.executor),
    ]);
  }
  lines.push(table(rows).trimEnd());
  lines.push('');
  lines.push(table([['EXECUTOR', 'PID', 'VMS', 'SHELLS'], ...host.executors.map((e) => [String(e.id), String(e.pid), String(e.vms), String(e.shells)])]).trimEnd());
  prev.clear();
  for (const s of stats) prev.set(s.id, s);
  return `${lines.join('\n')}\n`;
}

export function registerTop(program: Command): void {
  program.command('top')
    .description('live table of VMs: state, CPU, memory, per executor (like xentop)')
    .option('--socket <path>', 'daemon API socket')
    .option('-d, --delay <s>', 'seconds between updates', intOption('--delay', 1, 3600), 1)
    .option('-b, --batch', 'print frames one after another instead of redrawing')
    .option('-n, --iterations <n>', 'stop after n frames', intOption('--iterations', 1, 1e9))
    .action(async (opts: { socket?: string; delay: number; batch?: boolean; iterations?: number }) => {
      const { Client } = await import('../client.js');
      const c = new Client(opts.socket);
      const prev = new Map<number, Stat>();
      try {
        for (let i = 0; opts.iterations === undefined || i < opts.iterations; i++) {
          const out = await frame(c, prev, opts.delay * 1000);
          process.stdout.write(opts.batch || !process.stdout.isTTY ? out : `\x1b[H\x1b[2J${out}`);
          if (opts.iterations !== undefined && i + 1 >= opts.iterations) break;
          await new Promise((r) => setTimeout(r, opts.delay * 1000));
        }
      } catch (err) {
        fail(err);
      } finally {
        c.close();
      }
    });
}
