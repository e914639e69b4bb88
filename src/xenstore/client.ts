// A xs_wire client over a unix socket: for the toolstack's xenstore mode, the
// backend, and tests. Requests are answered in order; watch events arrive
// between replies and go to `onEvent`.
import { createConnection, type Socket } from 'node:net';
import { FrameReader, XsType, encode, splitStrings, strings, type XsMessage } from './wire.js';

/** A reply of type ERROR: its errno name is the message. */
export class XsReplyError extends Error {
  constructor(readonly errno: string, readonly request: string) {
    super(`${request}: ${errno}`);
  }
}

export class XsClient {
  private readonly reader = new FrameReader();
  private readonly pending = new Map<number, { resolve: (m: XsMessage) => void; reject: (e: Error) => void; what: string }>();
  private nextReq = 1;
  onEvent: (path: string, token: string) => void = () => {};

  private constructor(private readonly socket: Socket) {
    socket.on('data', (chunk: Buffer) => {
      for (const m of this.reader.push(chunk)) {
        if (m.type === XsType.WATCH_EVENT) {
          const [path, token] = splitStrings(m.payload);
          this.onEvent(path ?? '', token ?? '');
          continue;
        }
        const p = this.pending.get(m.reqId);
        if (!p) continue;
        this.pending.delete(m.reqId);
        if (m.type === XsType.ERROR) p.reject(new XsReplyError(splitStrings(m.payload)[0] ?? 'EIO', p.what));
        else p.resolve(m);
      }
    });
    socket.on('close', () => {
      for (const p of this.pending.values()) p.reject(new Error(`${p.what}: the store closed the connection`));
      this.pending.clear();
    });
    socket.on('error', () => {});
  }

  static connect(path: string): Promise<XsClient> {
    return new Promise((resolve, reject) => {
      const s = createConnection(path);
      s.once('connect', () => { s.off('error', reject); resolve(new XsClient(s)); });
      s.once('error', reject);
    });
  }

  request(type: number, payload: Buffer, txId = 0): Promise<XsMessage> {
    const reqId = this.nextReq++;
    const what = `${Object.entries(XsType).find(([, v]) => v === type)?.[0] ?? type} ${splitStrings(payload)[0] ?? ''}`;
    return new Promise((resolve, reject) => {
      if (this.socket.destroyed) { reject(new Error(`${what}: the connection is closed`)); return; }
      this.pending.set(reqId, { resolve, reject, what });
      this.socket.write(encode({ type, reqId, txId, payload }));
    });
  }

  async read(path: string, tx = 0): Promise<string> {
    return (await this.request(XsType.READ, strings(path), tx)).payload.toString('utf8');
  }

  async write(path: string, value: string, tx = 0): Promise<void> {
    await this.request(XsType.WRITE, Buffer.concat([strings(path), Buffer.from(value, 'utf8')]), tx);
  }

  async mkdir(path: string, tx = 0): Promise<void> {
    await this.request(XsType.MKDIR, strings(path), tx);
  }

  async rm(path: string, tx = 0): Promise<void> {
    await this.request(XsType.RM, strings(path), tx);
  }

  async directory(path: string, tx = 0): Promise<string[]> {
    return splitStrings((await this.request(XsType.DIRECTORY, strings(path), tx)).payload);
  }

  async setPerms(path: string, perms: string[], tx = 0): Promise<void> {
    await this.request(XsType.SET_PERMS, strings(path, ...perms), tx);
  }

  async getPerms(path: string, tx = 0): Promise<string[]> {
    return splitStrings((await this.request(XsType.GET_PERMS, strings(path), tx)).payload);
  }

  async watch(path: string, token: string): Promise<void> {
    await this.request(XsType.WATCH, strings(path, token));
  }

  async unwatch(path: string, token: string): Promise<void> {
    await this.request(XsType.UNWATCH, strings(path, token));
  }

  async transactionStart(): Promise<number> {
    return Number(splitStrings((await this.request(XsType.TRANSACTION_START, strings(''))).payload)[0]);
  }

  async transactionEnd(tx: number, commit: boolean): Promise<void> {
    await this.request(XsType.TRANSACTION_END, strings(commit ? 'T' : 'F'), tx);
  }

  async introduce(domid: number, mfn = 0, port = 0): Promise<void> {
    await this.request(XsType.INTRODUCE, strings(String(domid), String(mfn), String(port)));
  }

  async release(domid: number): Promise<void> {
    await this.request(XsType.RELEASE, strings(String(domid)));
  }

  /** Make this connection act as `domid` (introduced first), as an executor does for a guest's ring. */
  async bind(domid: number): Promise<void> {
    await this.request(XsType.CONTROL, strings('lightvm-bind', String(domid)));
  }

  async stats(): Promise<Record<string, unknown>> {
    return JSON.parse((await this.request(XsType.CONTROL, strings('lightvm-stats'))).payload.toString('utf8')) as Record<string, unknown>;
  }

  /** Requests this client has sent (each one a round trip to the store). */
  get requests(): number {
    return this.nextReq - 1;
  }

  /** The raw socket, for tests that must send what no client would. */
  get raw(): Socket {
    return this.socket;
  }

  close(): void {
    this.socket.destroy();
  }
}
