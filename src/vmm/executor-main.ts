// An executor process: runs VMs on its main thread and serves the toolstack
// on a unix socket. The process outlives the daemon that started it: if the
// daemon dies, the VMs keep running and a new daemon re-adopts them by
// connecting to the same socket.
//
// The executor runs here, on the main thread, and never returns to the
// event loop: a worker thread for it would cost another V8 isolate (~7.5 MiB
// and ~25 ms of CPU per executor) while this thread had nothing else to do.
// So nothing here may rely on the event loop: no timers, no JS signal
// handlers (SIGTERM and SIGINT keep their default action, which frees every
// VM with the process), no stream that is not synchronous.
import { chmodSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as libc from '../sys/libc.js';
import { Executor } from './executor.js';
import { CONTROL_WORDS } from './protocol.js';
import { SocketPort } from './socket-port.js';

const { values } = parseArgs({ options: { socket: { type: 'string' }, id: { type: 'string' } } });
if (!values.socket || !values.id) {
  process.stderr.write('usage: executor-main --socket PATH --id N\n');
  process.exit(2);
}
const socketPath = values.socket;
const id = Number(values.id);

libc.setThreadName(`lvm-executor-${id}`);
// The toolstack may vanish; that is not our end. (Ignored, not handled:
// a handler would wait for an event loop that never turns.)
libc.ignoreSignal(libc.SIGHUP);
libc.ignoreSignal(libc.SIGPIPE);

rmSync(socketPath, { force: true });
let code = 0;
try {
  // Requests come on the socket only: the control word and the eventfd are
  // for the shell preparer's wake-ups.
  const executor = new Executor(new Int32Array(new SharedArrayBuffer(CONTROL_WORDS * 4)), libc.eventfd(), { keepRecords: true, id });
  const socket = new SocketPort(executor, socketPath);
  executor.setPort(socket);
  executor.onStop = () => socket.close();
  chmodSync(socketPath, 0o600);
  // Tell the parent (if any) that the socket is ready; nothing else goes to
  // stdout (a pipe: written at once, not through the event loop).
  process.stdout.write('ready\n');
  // Until the toolstack says stop (or terminate): the VMs are then gone.
  executor.loop();
} catch (err) {
  process.stderr.write(`executor ${id}: ${(err as Error).stack ?? String(err)}\n`);
  code = 70;
}
rmSync(socketPath, { force: true });
process.exit(code);
