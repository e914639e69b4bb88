#!/usr/bin/env node
// lightvm-oci: an OCI runtime with runc's command line (for podman, Docker,
// containerd's runc shim) whose containers are LightVM VMs run by lightvmd.
// A failure is one line on stderr and exit 1; with --log F --log-format json
// also a {"level":"error","msg","time"} line appended to F (containerd shows
// the last one).
import { appendFileSync } from 'node:fs';
import { parseArgs, UsageError, type FlagSpec } from './args.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { COMMANDS, VERSION, type Globals } from './commands.js';
import { DEFAULT_ROOT, OCI_VERSION } from './state.js';

const globalFlags: FlagSpec = {
  flags: {
    root: 'value', log: 'value', 'log-format': 'value', 'systemd-cgroup': 'bool', debug: 'bool', rootless: 'value', criu: 'value',
    'lightvm-socket': 'value', version: 'bool', help: 'bool',
  },
  aliases: { v: 'version', h: 'help' },
};

const USAGE = `usage: lightvm-oci [--root DIR] [--log FILE] [--log-format text|json] [--lightvm-socket PATH] COMMAND [flags] ID
commands: create start state kill delete run ps list features pause resume
The container's process is args[0] of the bundle's config.json (or the annotation org.lightvm.kernel), a unikernel ELF in the rootfs; the rest of args is its command line.
`;

let logFile: string | undefined;
let logFormat = 'text';

function logError(msg: string): void {
  if (!logFile) return;
  const time = new Date().toISOString();
  const line = logFormat === 'json' ? JSON.stringify({ level: 'error', msg, time }) : `time="${time}" level=error msg=${JSON.stringify(msg)}`;
  try {
    appendFileSync(logFile, `${line}\n`);
  } catch {
    // The log is a courtesy: the error is on stderr anyway.
  }
}

async function main(argv: string[]): Promise<number> {
  const g = parseArgs(argv, globalFlags, 'lightvm-oci', true);
  logFile = typeof g.flags.get('log') === 'string' ? g.flags.get('log') as string : undefined;
  const fmt = g.flags.get('log-format');
  if (typeof fmt === 'string') {
    if (fmt !== 'text' && fmt !== 'json') throw new UsageError(`--log-format: "${fmt}" is neither text nor json`);
    logFormat = fmt;
  }
  if (g.flags.has('version')) {
    process.stdout.write(`lightvm-oci version ${VERSION}\nspec: ${OCI_VERSION}\n`);
    return 0;
  }
  const [cmd, ...rest] = g.rest;
  if (g.flags.has('help') || !cmd || cmd === 'help') {
    process.stdout.write(USAGE);
    return cmd || g.flags.has('help') ? 0 : 1;
  }
  const run = COMMANDS[cmd];
  if (!run) throw new UsageError(`unknown command "${cmd}" (${Object.keys(COMMANDS).join(', ')})`);
  const globals: Globals = {
    // Never $XDG_RUNTIME_DIR: podman calls state without --root.
    root: typeof g.flags.get('root') === 'string' ? g.flags.get('root') as string : DEFAULT_ROOT,
    socket: typeof g.flags.get('lightvm-socket') === 'string' ? g.flags.get('lightvm-socket') as string : defaultSocketPath(),
  };
  return run(globals, rest);
}

try {
  process.exitCode = await main(process.argv.slice(2));
} catch (err) {
  const msg = (err as Error).message;
  logError(msg);
  process.stderr.write(`lightvm-oci: ${msg}\n`);
  process.exitCode = 1;
}
