// `containerd-shim-lightvm-v1 serve`: the server of every task of one
// containerd, detached from the `start` that spawned it.
import { rmSync } from 'node:fs';
import pino from 'pino';
import { Client } from '../cli/client.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { EventPublisher } from './events.js';
import { Task } from './gen/task_pb.js';
import { answers } from './address.js';
import { LightvmTasks } from './task-service.js';
import { TtrpcServer } from './ttrpc.js';

/** How long a server with no task and no connection waits before it exits ($LIGHTVM_SHIM_IDLE_MS). */
const IDLE_MS = Number(process.env.LIGHTVM_SHIM_IDLE_MS ?? 30_000);

export async function serve(flags: Map<string, string>): Promise<void> {
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
  // Exits once no task is left and nobody has been connected for IDLE_MS: a
  // server started afresh costs a Node start and its modules (~0.5-1 s here),
  // which ctr run --rm one after another would otherwise pay every time.
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
    }, IDLE_MS);
  };
  tasks.onEmpty = maybeExit;
  server.onDisconnect = maybeExit;
  process.on('SIGTERM', () => {
    rmSync(sock, { force: true });
    process.exit(0);
  });
}

