// `containerd-shim-lightvm-v1 serve`: the server of every task of one
// containerd, detached from the `start` that spawned it.
import { renameSync, rmSync, writeFileSync } from 'node:fs';
import pino from 'pino';
import { Client } from '../cli/client.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { EventPublisher } from './events.js';
import { Task } from './gen/task_pb.js';
import { answers, pidFile, processIdentity } from './address.js';
import { LightvmTasks } from './task-service.js';
import { TtrpcServer } from './ttrpc.js';

/** How long a server with no task and no connection waits before it exits ($LIGHTVM_SHIM_IDLE_MS). */
const IDLE_MS = Number(process.env.LIGHTVM_SHIM_IDLE_MS ?? 30_000);
/**
 * How long a leaving server still serves after removing its pid file: a sh
 * `start` that read the file just before prints our address, and
 * containerd's connection must still find us (it then keeps us).
 */
const LEAVE_GRACE_MS = 5000;

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
  // The sh `start` answers with our address while this file names us.
  const pids = pidFile(sock);
  const identity = processIdentity();
  const announce = (): void => {
    writeFileSync(`${pids}.tmp`, `${identity}\n`);
    renameSync(`${pids}.tmp`, pids);
  };
  const withdraw = (): void => rmSync(pids, { force: true });
  announce();
  log.info({ socket: sock, containerd: ttrpcAddress, daemon: daemon.socketPath }, 'shim server listening');
  // Exits once no task is left and nobody has been connected for IDLE_MS: a
  // server started afresh costs a Node start and its modules (~0.5-1 s here),
  // which ctr run --rm one after another would otherwise pay every time.
  let idleTimer: NodeJS.Timeout | undefined;
  let leaving = false;
  const busy = (): boolean => tasks.tasks.size > 0 || server.connections > 0;
  const maybeExit = (): void => {
    clearTimeout(idleTimer);
    if (busy()) return;
    idleTimer = setTimeout(() => {
      if (busy()) return;
      withdraw();
      leaving = true;
      idleTimer = setTimeout(leave, LEAVE_GRACE_MS);
    }, IDLE_MS);
  };
  const leave = (): void => {
    if (busy()) return;
    void (async () => {
      // The path first: a server started meanwhile may bind it before we are closed.
      rmSync(sock, { force: true });
      await server.close();
      await events.flushed();
      events.close();
      daemon.close();
      log.info('no task left: shim server exits');
      log.flush();
      process.exit(0);
    })();
  };
  tasks.onEmpty = maybeExit;
  server.onDisconnect = maybeExit;
  server.onConnect = (): void => {
    clearTimeout(idleTimer);
    if (!leaving) return;
    leaving = false;
    announce();
  };
  process.on('SIGTERM', () => {
    withdraw();
    rmSync(sock, { force: true });
    process.exit(0);
  });
}

