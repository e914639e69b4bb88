// Entry point of an executor thread (a worker): runs one Executor.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import * as libc from '../sys/libc.js';
import { Executor } from './executor.js';
import { serializeError, type ExecutorEvent, type ExecutorRequest } from './protocol.js';

interface ExecutorWorkerData {
  port: MessagePort;
  control: SharedArrayBuffer;
  wakeFd: number;
}

const { port, control, wakeFd } = workerData as ExecutorWorkerData;
const send = (ev: ExecutorEvent): void => port.postMessage(ev);
try {
  const executor = new Executor(
    { receive: () => receiveMessageOnPort(port)?.message as ExecutorRequest | undefined, send },
    new Int32Array(control),
    wakeFd,
  );
  send({ ev: 'ready', tid: libc.gettid(), pid: libc.getpid() });
  executor.loop();
} catch (err) {
  send({ ev: 'fatal', error: serializeError(err) });
}
port.close();
