// An executor process: one executor thread running VMs, and a main thread
// that serves the toolstack on a unix socket. The process outlives the
// daemon that started it: if the daemon dies, the VMs keep running and a
// new daemon re-adopts them by connecting to the same socket.
import { chmodSync, rmSync } from 'node:fs';
import { createServer, type Socket } from 'node:net';
import { parseArgs } from 'node:util';
import { ExecutorThread } from './executor-thread.js';
import type { AdoptedVm, ExecutorEvent, ProcessEvent, ProcessRequest } from './protocol.js';
import { encodeFrame, FrameDecoder } from './wire.js';

/** Console bytes an executor keeps per VM for a toolstack that reconnects. */
const CONSOLE_HISTORY = 16 * 1024;

const { values } = parseArgs({ options: { socket: { type: 'string' }, id: { type: 'string' } } });
if (!values.socket || !values.id) {
  process.stderr.write('usage: executor-main --socket PATH --id N\n');
  process.exit(2);
}
const socketPath = values.socket;
const id = Number(values.id);
const vms = new Map<number, AdoptedVm>();
const pools: Record<number, number> = {};
let client: Socket | undefined;

function send(ev: ProcessEvent): void {
  if (client && !client.destroyed) client.write(encodeFrame(ev));
}

function appendConsole(vm: AdoptedVm, data: Uint8Array): void {
  const joined = new Uint8Array(Math.min(CONSOLE_HISTORY, vm.console.length + data.length));
  const keepOld = Math.max(0, joined.length - data.length);
  joined.set(vm.console.subarray(vm.console.length - keepOld), 0);
  joined.set(data.subarray(Math.max(0, data.length - joined.length)), keepOld);
  vm.console = joined;
}

function track(ev: ExecutorEvent): void {
  if (!('vmId' in ev)) {
    if (ev.ev === 'pool') pools[ev.memory] = ev.depth;
    return;
  }
  const vm = vms.get(ev.vmId);
  if (!vm) return;
  switch (ev.ev) {
    case 'started':
      vm.warm = ev.warm;
      vm.timings = ev.timings;
      break;
    case 'create-failed':
      vms.delete(ev.vmId);
      break;
    case 'console':
      appendConsole(vm, ev.data);
      break;
    case 'paused':
      if (ev.ok && vm.state === 'running') vm.state = 'paused';
      break;
    case 'unpaused':
      if (ev.ok && vm.state === 'paused') vm.state = 'running';
      break;
    case 'exit':
      vm.state = 'exited';
      vm.exit = ev.exit;
      vm.timings = ev.timings;
      break;
    default:
      break;
  }
}

const thread = await ExecutorThread.start();
thread.on('event', (ev) => {
  track(ev);
  send(ev);
});
thread.on('lost', (error) => {
  // The executor thread is gone and with it every VM of this process.
  send({ ev: 'executor-lost', error });
  process.stderr.write(`executor ${id}: executor thread lost: ${error.message}\n`);
  process.exit(70);
});

function handle(req: ProcessRequest): void {
  switch (req.op) {
    case 'hello':
      send({ ev: 'hello', id, pid: process.pid, vms: [...vms.values()], pools });
      return;
    case 'forget':
      if (vms.get(req.vmId)?.state === 'exited') vms.delete(req.vmId);
      return;
    case 'terminate':
      void shutdown();
      return;
    case 'create':
      if (req.trace) req.trace.relayNs = Number(process.hrtime.bigint());
      vms.set(req.vmId, { config: req, state: 'running', warm: false, timings: undefined, exit: undefined, console: new Uint8Array(0) });
      break;
    default:
      break;
  }
  thread.send(req);
}

async function shutdown(): Promise<void> {
  await thread.stop();
  server.close();
  client?.end();
  rmSync(socketPath, { force: true });
  process.exit(0);
}

rmSync(socketPath, { force: true });
const server = createServer((socket) => {
  // One toolstack at a time: a new connection (a restarted daemon) replaces the old.
  if (client && client !== socket) client.destroy();
  client = socket;
  socket.setNoDelay(true);
  const decoder = new FrameDecoder();
  socket.on('data', (chunk) => {
    let msgs: unknown[];
    try {
      msgs = decoder.push(chunk);
    } catch (err) {
      process.stderr.write(`executor ${id}: bad frame from toolstack: ${(err as Error).message}\n`);
      socket.destroy();
      return;
    }
    for (const m of msgs) handle(m as ProcessRequest);
  });
  socket.on('error', () => {});
  socket.on('close', () => {
    if (client === socket) client = undefined;
  });
});
server.listen(socketPath, () => {
  chmodSync(socketPath, 0o600);
  // Tell the parent (if any) that the socket is ready.
  process.stdout.write('ready\n');
});
for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => void shutdown());
// The toolstack may vanish; its socket closing is not our end.
process.on('SIGHUP', () => {});
process.on('SIGPIPE', () => {});
