// Entry point of an executor thread (a worker) in a library host: runs one
// Executor, which hears its host through a message port and an eventfd.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import * as libc from '../sys/libc.js';
import { Executor } from './executor.js';
import { serializeError, type ProcessEvent, type ProcessRequest } from './protocol.js';

interface ExecutorWorkerData {
  port: MessagePort;
  control: SharedArrayBuffer;
  wakeFd: number;
}

const { port, control, wakeFd } = workerData as ExecutorWorkerData;
libc.setThreadName('lvm-executor');
const post = (ev: ProcessEvent): void => port.postMessage(ev);
try {
  const executor = new Executor(new Int32Array(control), wakeFd);
  executor.setPort({ receive: () => receiveMessageOnPort(port)?.message as ProcessRequest | undefined, send: post });
  post({ ev: 'ready', tid: libc.gettid(), pid: libc.getpid() });
  executor.loop();
} catch (err) {
  post({ ev: 'fatal', error: serializeError(err) });
}
port.close();
