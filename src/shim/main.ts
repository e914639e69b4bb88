#!/usr/bin/env node
// containerd-shim-lightvm-v1, the runtime v2 shim io.containerd.lightvm.v1.
//   start   prints the unix:// address of this host's server for that
//           containerd (starting the server if none answers) and nothing else
//   delete  destroys a task's VM when containerd lost the server; prints a
//           DeleteResponse
//   serve   the server itself: the task service for every task over ttrpc
// containerd passes -namespace, -address, -publish-binary, -id (and -bundle
// for delete) in Go's flag style, the bundle as cwd and TTRPC_ADDRESS.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, openSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import pino from 'pino';
import { ApiError, Client } from '../cli/client.js';
import { vmNameFor } from '../container/names.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { EventPublisher } from './events.js';
import { DeleteResponseSchema, Task } from './gen/task_pb.js';
import { LightvmTasks, SHIM_VERSION } from './task-service.js';
import { TtrpcServer } from './ttrpc.js';

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

/** One server per containerd (its events go back to it) and daemon, on a short fixed path. */
function serverSocket(address: string, daemonSocket: string): string {
  const dir = process.env.LIGHTVM_SHIM_DIR ?? '/run/lightvm-shim';
  const key = createHash('sha256').update(`${address}|${daemonSocket}`).digest('hex').slice(0, 16);
  return join(dir, `${key}.sock`);
}

function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
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

/** The task's VM, destroyed; a DeleteResponse on stdout (exit 128+SIGKILL). */
async function deleteTask(flags: Map<string, string>): Promise<void> {
  const ns = flags.get('namespace') ?? 'default';
  const id = flags.get('id') ?? '';
  const vm = vmNameFor(`${flags.get('address') ?? ''}/${ns}`, id);
  const client = new Client(defaultSocketPath());
  try {
    await client.request('DELETE', `/v1/vms/${vm}`);
  } catch (err) {
    if (!(err instanceof ApiError && err.status === 404)) throw err;
  } finally {
    client.close();
  }
  process.stdout.write(toBinary(DeleteResponseSchema, create(DeleteResponseSchema, { pid: 0, exitStatus: 128 + 9, exitedAt: timestampNow() })));
}

async function serve(flags: Map<string, string>): Promise<void> {
  const sock = flags.get('socket');
  if (!sock) throw new Error('serve: -socket is required');
  const address = flags.get('address') ?? '';
  const log = pino({ base: { pid: process.pid } }, pino.destination(2));
  const ttrpcAddress = process.env.TTRPC_ADDRESS ?? `${address}.ttrpc`;
  const events = new EventPublisher(ttrpcAddress.replace(/^unix:\/\//, ''), log);
  const daemon = new Client(defaultSocketPath());
  const tasks = new LightvmTasks(daemon, events, address);
  const server = new TtrpcServer();
  server.addService(Task, tasks.service);
  try {
    await server.listen(sock);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EADDRINUSE') throw err;
    // Another server answers there (a start raced us), or a dead one left its socket.
    if (await answers(sock)) return;
    rmSync(sock, { force: true });
    await server.listen(sock);
  }
  log.info({ socket: sock, containerd: ttrpcAddress, daemon: daemon.socketPath }, 'shim server listening');
  // Exits once no task is left and nobody is connected (for a second).
  let idleTimer: NodeJS.Timeout | undefined;
  const maybeExit = (): void => {
    clearTimeout(idleTimer);
    if (tasks.tasks.size > 0 || server.connections > 0) return;
    idleTimer = setTimeout(() => {
      if (tasks.tasks.size > 0 || server.connections > 0) return;
      void (async () => {
        await server.close();
        rmSync(sock, { force: true });
        await events.flushed();
        events.close();
        daemon.close();
        log.info('no task left: shim server exits');
        log.flush();
        process.exit(0);
      })();
    }, 1000);
  };
  tasks.onEmpty = maybeExit;
  server.onDisconnect = maybeExit;
  process.on('SIGTERM', () => {
    rmSync(sock, { force: true });
    process.exit(0);
  });
}

const { flags, command } = parseGoFlags(process.argv.slice(2));
try {
  if (flags.has('v') || flags.has('version')) {
    process.stdout.write(`containerd-shim-lightvm-v1:\n  Version: ${SHIM_VERSION}\n`);
  } else if (command === 'start') {
    await start(flags);
  } else if (command === 'delete') {
    await deleteTask(flags);
  } else if (command === 'serve') {
    await serve(flags);
  } else {
    throw new Error(`unknown command "${command ?? ''}" (start, delete, serve)`);
  }
} catch (err) {
  process.stderr.write(`containerd-shim-lightvm-v1: ${(err as Error).message}\n`);
  process.exitCode = 1;
}
