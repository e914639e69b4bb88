// xl-style commands on the daemon's API: create, list, destroy, pause,
// unpause, shutdown, console (attach: console.ts).
import { resolve } from 'node:path';
import type { Command } from 'commander';
import type { VmView } from '../../daemon/view.js';
import { describeExit } from '../../vmm/exit.js';
import { parseCfg, readCfgFile } from '../cfg.js';
import type { Client } from '../client.js';
import { fail } from '../output.js';

interface Common {
  socket?: string;
}

/** The API client, loaded on use: node:http stays off the paths that do not talk to the daemon. */
async function client(opts: Common): Promise<Client> {
  const { Client } = await import('../client.js');
  return new Client(opts.socket);
}

/** Runs an API command, printing one clear line on failure. */
async function api(opts: Common, work: (c: Client) => Promise<void>): Promise<void> {
  let c: Client | undefined;
  try {
    c = await client(opts);
    await work(c);
  } catch (err) {
    fail(err);
  } finally {
    c?.close();
  }
}

/** A request too large for the daemon comes from the cfg file: the refusal names it. */
function namingFile(file: string): (err: unknown) => never {
  return (err) => {
    if (err instanceof Error && (err as { status?: number }).status === 413) throw new Error(`${file}: ${err.message}`, { cause: err });
    throw err;
  };
}

function describe(vm: VmView): string {
  if (!vm.exit) return vm.state;
  if (vm.exit.kind === 'halt') return `exited ${vm.exit.status}`;
  return describeExit(vm.exit);
}

export function registerVmCommands(program: Command): void {
  const socket = ['--socket <path>', 'daemon API socket'] as const;

  program.command('create')
    .description('create a VM from a config file (xl-style or JSON) and start it')
    .argument('<cfg>', 'config file: name, kernel, memory, cmdline, vif')
    .option(...socket)
    .option('--json', 'print the VM as JSON')
    .action((file: string, opts: Common & { json?: boolean }) => api(opts, async (c) => {
      const cfg = parseCfg(file, readCfgFile(file));
      const { vm } = await c.request<{ vm: VmView }>('POST', '/v1/vms', cfg).catch(namingFile(file));
      process.stdout.write(opts.json ? `${JSON.stringify(vm)}\n` : `created ${vm.name} (id ${vm.id}) on executor ${vm.executor}${vm.warm ? ', from a prepared shell' : ''}\n`);
    }));

  program.command('list')
    .description('list VMs')
    .option(...socket)
    .option('--json', 'print JSON')
    .action((opts: Common & { json?: boolean }) => api(opts, async (c) => {
      const { vms } = await c.request<{ vms: VmView[] }>('GET', '/v1/vms');
      if (opts.json) {
        process.stdout.write(`${JSON.stringify(vms)}\n`);
        return;
      }
      const rows = [['ID', 'NAME', 'STATE', 'MEM(MiB)', 'EXEC', 'IMAGE']];
      for (const vm of vms) rows.push([String(vm.id), vm.name, describe(vm), String(vm.memory_mib), String(vm.executor), vm.image]);
      process.stdout.write(table(rows));
    }));

  for (const [name, desc] of [
    ['destroy', 'destroy a VM at once'],
    ['pause', 'pause a VM (its vCPU stops at once)'],
    ['unpause', 'resume a paused VM'],
    ['shutdown', 'ask a VM to end cleanly; destroy it if it has not after --grace ms'],
  ] as const) {
    const cmd = program.command(name).description(desc).argument('<vm>', 'VM name or id').option(...socket);
    if (name === 'shutdown') cmd.option('--grace <ms>', 'how long to wait before destroying', '10000');
    cmd.action((vm: string, opts: Common & { grace?: string }) => api(opts, async (c) => {
      const path = `/v1/vms/${encodeURIComponent(vm)}`;
      const reply = name === 'destroy'
        ? await c.request<{ vm: VmView }>('DELETE', path)
        : await c.request<{ vm: VmView }>('POST', `${path}/${name}`, name === 'shutdown' ? { grace_ms: Number(opts.grace) } : undefined);
      process.stdout.write(`${reply.vm.name}: ${describe(reply.vm)}\n`);
    }));
  }

  program.command('save')
    .description('save a VM to a snapshot file; it ends, as in xl, unless --checkpoint')
    .argument('<vm>', 'VM name or id')
    .argument('<file>', 'snapshot file to write')
    .option('--checkpoint', 'keep the VM running')
    .option(...socket)
    .action((vm: string, file: string, opts: Common & { checkpoint?: boolean }) => api(opts, async (c) => {
      const r = await c.request<{ vm: VmView; snapshot: { file: string; bytes: number; pages: number; ms: number } }>(
        'POST', `/v1/vms/${encodeURIComponent(vm)}/save`, { file: resolve(file), checkpoint: opts.checkpoint === true });
      process.stdout.write(`${r.vm.name}: saved to ${r.snapshot.file} (${Math.ceil(r.snapshot.bytes / 1024)} KiB, ${r.snapshot.pages} pages, ${r.snapshot.ms.toFixed(2)} ms)${opts.checkpoint ? ', still running' : ''}\n`);
    }));

  program.command('restore')
    .description('start a VM from a snapshot file')
    .argument('<file>', 'snapshot file')
    .option('--name <name>', 'name for the restored VM (default: the saved one)')
    .option(...socket)
    .action((file: string, opts: Common & { name?: string }) => api(opts, async (c) => {
      const r = await c.request<{ vm: VmView }>('POST', '/v1/restore', { file: resolve(file), ...(opts.name ? { name: opts.name } : {}) });
      process.stdout.write(`restored ${r.vm.name} (id ${r.vm.id}) on executor ${r.vm.executor}${r.vm.warm ? ', into a prepared shell' : ''}\n`);
    }));

  program.command('migrate')
    .description('live-migrate a VM to the daemon listening at host:port (see: migration listen)')
    .argument('<vm>', 'VM name or id')
    .argument('<to>', 'host:port of the receiving daemon')
    .requiredOption('--token <token>', 'the token the receiving daemon was given (never sent: both sides prove they hold it)')
    .option('--timeout <ms>', 'bound on every wait for the destination (default 10000)', (v) => Number(v))
    .option(...socket)
    .action((vm: string, to: string, opts: Common & { token: string; timeout?: number }) => api(opts, async (c) => {
      const r = await c.request<{ vm: VmView; migration: { ms: number; downtime_ms: number; rounds: number; pages: number; destination_id: number } }>(
        'POST', `/v1/vms/${encodeURIComponent(vm)}/migrate`, { to, token: opts.token, ...(opts.timeout !== undefined ? { timeout_ms: opts.timeout } : {}) });
      const m = r.migration;
      process.stdout.write(`${r.vm.name}: migrated to ${to} (id ${m.destination_id} there) in ${m.ms.toFixed(1)} ms, ${m.downtime_ms.toFixed(1)} ms down, ${m.rounds} rounds, ${m.pages} pages\n`);
    }));

  const migration = program.command('migration').description('incoming live migrations');
  migration.command('listen')
    .description('accept migrations on a TCP port from senders with the token')
    .requiredOption('--port <port>', 'TCP port (0: any free port)')
    .requiredOption('--token <token>', 'shared secret, at least 16 characters')
    .option('--address <address>', 'address to listen on', '127.0.0.1')
    .option(...socket)
    .action((opts: Common & { port: string; token: string; address: string }) => api(opts, async (c) => {
      const r = await c.request<{ listening: { address: string; port: number } }>('PUT', '/v1/migration/listen',
        { port: Number(opts.port), token: opts.token, address: opts.address });
      process.stdout.write(`listening for migrations on ${r.listening.address}:${r.listening.port}\n`);
    }));
  migration.command('stop')
    .description('stop accepting migrations')
    .option(...socket)
    .action((opts: Common) => api(opts, async (c) => {
      await c.request('DELETE', '/v1/migration/listen');
      process.stdout.write('not listening for migrations\n');
    }));

  program.command('serve')
    .description('serve a VM just in time: it boots on the first packet for it and stops when idle (until Ctrl-C)')
    .argument('<cfg>', 'config file with a vif that has a static ip')
    .requiredOption('--jit', 'boot on the first packet (the only mode for now)')
    .option('--idle <ms>', 'stop the VM after this long without traffic', '30000')
    .option(...socket)
    .action((file: string, opts: Common & { idle: string }) => api(opts, async (c) => {
      const cfg = parseCfg(file, readCfgFile(file));
      if (!cfg.name) throw new Error(`${file}: name: a service needs a name`);
      const r = await c.request<{ service: { name: string; vm: VmView | null } }>('POST', '/v1/services', { ...cfg, idle_ms: Number(opts.idle) }).catch(namingFile(file));
      const ip = /(?:^|\s)ip=([\d.]+)/.exec(cfg.cmdline ?? '')?.[1] ?? cfg.devices?.find((d) => d.ipv4)?.ipv4?.addr ?? '?';
      process.stdout.write(`serving ${r.service.name} at ${ip}: a VM boots on the first packet (Ctrl-C stops)\n`);
      await new Promise<void>((resolve) => {
        process.once('SIGINT', resolve);
        process.once('SIGTERM', resolve);
      });
      await c.request('DELETE', `/v1/services/${encodeURIComponent(r.service.name)}`);
      process.stdout.write(`stopped serving ${r.service.name}\n`);
    }));

  program.command('console')
    .description("attach this terminal to a VM's console: its output here, your keys to its virtio-console, Ctrl-] detaches " +
      '(on a terminal, or with --attach); otherwise print it, and with -f follow it until the VM ends')
    .argument('<vm>', 'VM name or id')
    .option('-f, --follow', 'keep printing what the VM writes (no input)')
    .option('-a, --attach', 'attach even when stdin is not a terminal: what it reads goes to the guest')
    .option('-p, --print', 'print what the VM wrote so far and exit, even on a terminal')
    .option(...socket)
    .action((vm: string, opts: Common & { follow?: boolean; attach?: boolean; print?: boolean }) => api(opts, async (c) => {
      if (opts.attach && (opts.follow || opts.print)) throw new Error('console: --attach does not go with -f or --print');
      const interactive = process.stdin.isTTY && process.stdout.isTTY && !opts.follow && !opts.print;
      if (opts.attach || interactive) {
        const { attach } = await import('./console.js');
        await attach(c, vm, { stdin: process.stdin, stdout: process.stdout, stderr: process.stderr });
        return;
      }
      await c.stream(`/v1/vms/${encodeURIComponent(vm)}/console${opts.follow ? '?follow=true' : ''}`, (b) => process.stdout.write(b));
    }));
}

export function table(rows: string[][]): string {
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => (r[i] ?? '').length)));
  return rows.map((r) => r.map((cell, i) => (i === r.length - 1 ? cell : cell.padEnd(widths[i]!))).join('  ')).join('\n') + '\n';
}
