// A minimal HTTP/1.1 client for benchmarks: one kept-alive unix socket,
// requests written as one prepared buffer, so that a sample starts when
// the request's bytes leave, not when a general-purpose client starts
// building them. Only bodies with Content-Length (or none) are understood:
// what lightvmd answers, and podman's create and start.
import { connect, type Socket } from 'node:net';

export class RawHttpClient {
  private socket: Socket | undefined;
  private buf: Buffer = Buffer.alloc(0);
  private waiter: ((b: { status: number; body: string }) => void) | undefined;
  private failer: ((e: Error) => void) | undefined;

  constructor(private readonly socketPath: string) {}

  private async open(): Promise<Socket> {
    if (this.socket && !this.socket.destroyed) return this.socket;
    const s = connect(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      s.once('connect', resolve);
      s.once('error', reject);
    });
    s.setNoDelay(true);
    s.on('data', (chunk: Buffer) => this.onData(chunk));
    s.on('error', (e) => this.failer?.(e));
    s.on('close', () => this.failer?.(new Error('connection closed')));
    this.socket = s;
    return s;
  }

  private onData(chunk: Buffer): void {
    this.buf = this.buf.length ? Buffer.concat([this.buf, chunk]) : chunk;
    const end = this.buf.indexOf('\r\n\r\n');
    if (end < 0) return;
    const head = this.buf.subarray(0, end).toString('latin1');
    const m = /content-length:\s*(\d+)/i.exec(head);
    const len = m ? Number(m[1]) : 0;
    if (this.buf.length < end + 4 + len) return;
    const status = Number(head.slice(9, 12));
    const body = this.buf.subarray(end + 4, end + 4 + len).toString('utf8');
    this.buf = this.buf.subarray(end + 4 + len);
    const w = this.waiter;
    this.waiter = undefined;
    w?.({ status, body });
  }

  /** Prepares a request; send() then writes it. */
  prepare(method: string, path: string, body?: unknown): Buffer {
    const data = body === undefined ? '' : JSON.stringify(body);
    const head = `${method} ${path} HTTP/1.1\r\nHost: localhost\r\n` +
      (data ? `Content-Type: application/json\r\nContent-Length: ${Buffer.byteLength(data)}\r\n` : '') + '\r\n';
    return Buffer.from(head + data);
  }

  /** Sends a prepared request and parses its JSON reply; onSent is called with the time its bytes went out. */
  async send<T>(request: Buffer, onSent?: (ns: bigint) => void): Promise<T> {
    const { status, body } = await this.request(request, onSent);
    if (status >= 400) throw new Error(`HTTP ${status}: ${body}`);
    return JSON.parse(body) as T;
  }

  /** Sends a prepared request; the reply's status and body, whatever they are. */
  async request(request: Buffer, onSent?: (ns: bigint) => void): Promise<{ status: number; body: string }> {
    const s = await this.open();
    const reply = new Promise<{ status: number; body: string }>((resolve, reject) => {
      this.waiter = resolve;
      this.failer = reject;
    });
    onSent?.(process.hrtime.bigint());
    s.write(request);
    return reply;
  }

  close(): void {
    this.socket?.destroy();
  }
}
