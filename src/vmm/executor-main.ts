// An executor process: one executor thread that runs VMs and serves the
// toolstack on a unix socket itself. The process outlives the daemon that
// started it: if the daemon dies, the VMs keep running and a new daemon
// re-adopts them by connecting to the same socket.
import { chmodSync, rmSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { ExecutorThread } from './executor-thread.js';

const { values } = parseArgs({ options: { socket: { type: 'string' }, id: { type: 'string' } } });
if (!values.socket || !values.id) {
  process.stderr.write('usage: executor-main --socket PATH --id N\n');
  process.exit(2);
}
const socketPath = values.socket;
const id = Number(values.id);

rmSync(socketPath, { force: true });
const thread = await ExecutorThread.start({ socketPath, id });
chmodSync(socketPath, 0o600);
thread.setBusy(true);
thread.on('event', (ev) => {
  if (ev.ev === 'stopped') {
    // Told to terminate by the toolstack: the VMs are gone, and so are we.
    rmSync(socketPath, { force: true });
    process.exit(0);
  }
});
thread.on('lost', (error) => {
  process.stderr.write(`executor ${id}: executor thread lost: ${error.message}\n`);
  rmSync(socketPath, { force: true });
  process.exit(70);
});
// Tell the parent (if any) that the socket is ready; nothing else goes to stdout.
process.stdout.write('ready\n');
const stop = (): void => {
  void thread.stop().then(() => process.exit(0));
};
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
// The toolstack may vanish; that is not our end.
process.on('SIGHUP', () => {});
process.on('SIGPIPE', () => {});
