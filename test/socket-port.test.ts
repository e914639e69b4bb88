// The executor's end of its link (src/vmm/socket-port.ts), over a real unix
// socket: console output held back while the toolstack does not read must
// not follow the hello that already carries it as history (a re-adopting
// daemon heard such lines twice).
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import * as libc from '../src/sys/libc.js';
import type { Executor } from '../src/vmm/executor.js';
import type { ProcessEvent, ProcessRequest } from '../src/vmm/protocol.js';
import { SocketPort } from '../src/vmm/socket-port.js';
import { encodeFrame, FrameDecoder } from '../src/vmm/wire.js';
import { sleep } from './helpers.js';

/** The part of an Executor a SocketPort uses: its fd watches, driven by hand here. */
class Loop {
  readonly handlers = new Map<number, (events: number) => void>();
  port!: SocketPort;
  watch(fd: number, _events: number, h: (events: number) => void): void {
    this.handlers.set(fd, h);
  }
  unwatch(fd: number): void {
    this.handlers.delete(fd);
  }
  dropPendingKicks(): void {}
  handle(req: ProcessRequest): void {
    if (req.op === 'hello') this.port.send({ ev: 'hello', id: 1, pid: 1, tid: 1, vms: [], pools: {} });
  }
  /** Runs every handler once, as an epoll loop would when all are ready. */
  turn(): void {
    for (const h of [...this.handlers.values()]) h(libc.EPOLLIN | libc.EPOLLOUT);
  }
}

void describe('SocketPort', () => {
  const dir = mkdtempSync(join(tmpdir(), 'lightvm-sp-'));
  after(() => rmSync(dir, { recursive: true, force: true }));

  void it('console held while the toolstack did not read is not sent after the hello that answers it', async () => {
    const loop = new Loop();
    const port = new SocketPort(loop as unknown as Executor, join(dir, 'x.sock'));
    loop.port = port;
    const client: Socket = connect(join(dir, 'x.sock'));
    await new Promise((r) => client.once('connect', r));
    try {
      await exchange(loop, port, client);
    } finally {
      client.destroy();
      port.close();
    }
  });
});

async function exchange(loop: Loop, port: SocketPort, client: Socket): Promise<void> {
  {
    client.pause();
    await sleep(20);
    loop.turn();
    // Lines until the socket is full and the rest is held by the port.
    const line = new Uint8Array(4096).fill(0x41);
    for (let i = 0; i < 2000 && port.heldBytes(7) === 0; i++) port.send({ ev: 'console', vmId: 7, data: line });
    assert.ok(port.heldBytes(7) > 0, 'the port never held console output');
    client.write(encodeFrame({ op: 'hello' }));
    const got: ProcessEvent[] = [];
    const decoder = new FrameDecoder();
    client.on('data', (b: Buffer) => got.push(...(decoder.push(b) as ProcessEvent[])));
    client.resume();
    const t0 = Date.now();
    while (!got.some((e) => e.ev === 'hello') && Date.now() - t0 < 5000) {
      loop.turn();
      await sleep(5);
    }
    for (let i = 0; i < 20; i++) {
      loop.turn();
      await sleep(5);
    }
    const at = got.findIndex((e) => e.ev === 'hello');
    assert.ok(at >= 0, 'no hello answered');
    assert.ok(at > 0, 'nothing was sent before the hello: the test did not fill the socket');
    assert.deepEqual(got.slice(at + 1).map((e) => e.ev), [], 'frames from before the hello came after it');
    // Output after the hello goes out as usual.
    port.send({ ev: 'console', vmId: 7, data: line });
    for (let i = 0; i < 20 && got.length === at + 1; i++) {
      loop.turn();
      await sleep(5);
    }
    assert.equal(got.at(-1)?.ev, 'console');
  }
}
