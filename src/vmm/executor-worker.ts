// Entry point of an executor thread (a worker): runs one Executor. In an
// executor process it also serves the toolstack's socket itself.
import { receiveMessageOnPort, workerData, type MessagePort } from 'node:worker_threads';
import * as libc from '../sys/libc.js';
import { Executor } from './executor.js';
import { serializeError, type ProcessEvent, type ProcessRequest } from './protocol.js';
import { SocketPort } from './socket-port.js';

export interface ServeOptions {
  socketPath: string;
  id: number;
}

interface ExecutorWorkerData {
  port: MessagePort;
  control: SharedArrayBuffer;
  wakeFd: number;
  serve?: ServeOptions;
}

const { port, control, wakeFd, serve } = workerData as ExecutorWorkerData;
libc.setThreadName(serve ? `lvm-executor-${serve.id}` : 'lvm-executor');
const post = (ev: ProcessEvent): void => port.postMessage(ev);
try {
  const executor = new Executor(new Int32Array(control), wakeFd, {
    keepRecords: serve !== undefined, id: serve?.id,
    wantPreparer: (want) => post({ ev: 'preparer-wanted', want }),
  });
  const receive = (): ProcessRequest | undefined => receiveMessageOnPort(port)?.message as ProcessRequest | undefined;
  if (serve) {
    // The host thread only starts and stops us; the toolstack talks on the socket.
    const socket = new SocketPort(executor, serve.socketPath);
    executor.setPort({
      receive, send: (ev) => socket.send(ev),
      cork: () => socket.cork(), uncork: () => socket.uncork(), flushCorked: () => socket.flushCorked(),
    });
    executor.onStop = () => socket.close();
  } else {
    executor.setPort({ receive, send: post });
  }
  post({ ev: 'ready', tid: libc.gettid(), pid: libc.getpid() });
  executor.loop();
  if (serve) post({ ev: 'stopped' });
} catch (err) {
  post({ ev: 'fatal', error: serializeError(err) });
}
port.close();
