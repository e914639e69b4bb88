#!/usr/bin/env node
// containerd-shim-lightvm-v1, the runtime v2 shim io.containerd.lightvm.v1.
//   start   prints the unix:// address of this host's server for that
//           containerd (starting the server if none answers) and nothing else
//   delete  destroys a task's VM when containerd lost the server; prints a
//           DeleteResponse
//   serve   the server itself: the task service for every task over ttrpc
// containerd passes -namespace, -address, -publish-binary, -id (and -bundle
// for delete) in Go's flag style, the bundle as cwd and TTRPC_ADDRESS.
// The package bin (bin/containerd-shim-lightvm-v1, sh) answers `start` and
// `delete` itself while the server is up; this `start` runs when none is,
// and loads nothing but Node's own modules.
import { spawn } from 'node:child_process';
import { mkdirSync, openSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defaultSocketPath } from '../daemon/paths.js';
import { answers, serverSocket } from './address.js';

const BOOL_FLAGS = new Set(['debug', 'v', 'version']);

function parseGoFlags(argv: string[]): { flags: Map<string, string>; command: string | undefined } {
  const flags = new Map<string, string>();
  let command: string | undefined;
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (!a.startsWith('-')) {
      command ??= a;
      continue;
    }
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    if (eq >= 0) flags.set(body.slice(0, eq), body.slice(eq + 1));
    else if (BOOL_FLAGS.has(body)) flags.set(body, 'true');
    else flags.set(body, argv[++i] ?? '');
  }
  return { flags, command };
}

async function start(flags: Map<string, string>): Promise<void> {
  const address = flags.get('address') ?? '';
  const daemonSocket = defaultSocketPath();
  const sock = serverSocket(address, daemonSocket);
  if (Buffer.byteLength(sock) > 106) throw new Error(`the server socket path ${sock} is longer than 106 bytes: set LIGHTVM_SHIM_DIR to a shorter directory`);
  if (!(await answers(sock))) {
    const dir = join(sock, '..');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    // The server must not hold our stdout/stderr: containerd reads them to EOF.
    const log = openSync(sock.replace(/\.sock$/, '.log'), 'a', 0o600);
    const child = spawn(process.execPath, ['--no-warnings', fileURLToPath(import.meta.url), 'serve', '-socket', sock, '-address', address], {
      detached: true, stdio: ['ignore', log, log], cwd: dir,
    });
    child.unref();
    const t0 = Date.now();
    while (!(await answers(sock))) {
      if (child.exitCode !== null) throw new Error(`the shim server exited with ${child.exitCode} (log: ${sock.replace(/\.sock$/, '.log')})`);
      if (Date.now() - t0 > 15_000) throw new Error(`the shim server did not listen on ${sock} within 15 s`);
      await new Promise((r) => setTimeout(r, 10));
    }
  }
  const url = `unix://${sock}`;
  // containerd reads <bundle>/address to reconnect after its own restart.
  writeFileSync('address', url);
  process.stdout.write(url);
}

const { flags, command } = parseGoFlags(process.argv.slice(2));
try {
  if (flags.has('v') || flags.has('version')) {
    process.stdout.write(`containerd-shim-lightvm-v1:\n  Version: ${(await import('./task-service.js')).SHIM_VERSION}\n`);
  } else if (command === 'start') {
    await start(flags);
  } else if (command === 'delete') {
    await (await import('./delete.js')).deleteTask(flags);
  } else if (command === 'serve') {
    await (await import('./serve.js')).serve(flags);
  } else {
    throw new Error(`unknown command "${command ?? ''}" (start, delete, serve)`);
  }
} catch (err) {
  process.stderr.write(`containerd-shim-lightvm-v1: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
