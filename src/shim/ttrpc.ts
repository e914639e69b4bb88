// ttrpc, containerd's RPC over a unix socket (containerd/ttrpc PROTOCOL.md),
// unary calls only, which is all the task and events APIs use. There is no
// ttrpc for JavaScript on npm, hence this one. A frame is a 10-byte header
// (u32 BE length, u32 BE stream id, u8 type, u8 flags) and at most 4 MiB of
// data; a Request frame (type 1) carries a ttrpc.Request, a Response frame
// (type 2) a ttrpc.Response on the same stream id. Client streams are odd.
import net from 'node:net';
import { create, fromBinary, toBinary, type DescMessage, type DescService, type MessageInitShape, type MessageShape } from '@bufbuild/protobuf';
import type { GenService } from '@bufbuild/protobuf/codegenv2';
import { RequestSchema, ResponseSchema } from './gen/ttrpc_pb.js';

export const HEADER = 10;
export const MAX_DATA = 4 << 20;
export const TYPE_REQUEST = 1;
export const TYPE_RESPONSE = 2;

/** gRPC status codes containerd maps back to its errors (errdefs.FromGRPC). */
export const Code = {
  OK: 0, CANCELLED: 1, UNKNOWN: 2, INVALID_ARGUMENT: 3, DEADLINE_EXCEEDED: 4, NOT_FOUND: 5, ALREADY_EXISTS: 6,
  FAILED_PRECONDITION: 9, UNIMPLEMENTED: 12, INTERNAL: 13, UNAVAILABLE: 14,
} as const;

/** An error with a status code, sent back as the call's status. */
export class TtrpcError extends Error {
  constructor(readonly code: number, message: string) {
    super(message);
    this.name = 'TtrpcError';
  }
}

export function frame(stream: number, type: number, data: Uint8Array): Buffer {
  if (data.length > MAX_DATA) throw new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc message of ${data.length} bytes exceeds ${MAX_DATA}`);
  const b = Buffer.allocUnsafe(HEADER + data.length);
  b.writeUInt32BE(data.length, 0);
  b.writeUInt32BE(stream, 4);
  b[8] = type;
  b[9] = 0;
  b.set(data, HEADER);
  return b;
}

/** Cuts a byte stream into frames; a frame over MAX_DATA is a protocol error. */
export class FrameReader {
  private buf: Buffer = Buffer.alloc(0);
  constructor(private readonly onFrame: (stream: number, type: number, data: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buf = this.buf.length === 0 ? chunk : Buffer.concat([this.buf, chunk]);
    while (this.buf.length >= HEADER) {
      const len = this.buf.readUInt32BE(0);
      if (len > MAX_DATA) throw new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc frame of ${len} bytes exceeds ${MAX_DATA}`);
      if (this.buf.length < HEADER + len) return;
      const stream = this.buf.readUInt32BE(4);
      const type = this.buf[8]!;
      const data = this.buf.subarray(HEADER, HEADER + len);
      this.buf = this.buf.subarray(HEADER + len);
      this.onFrame(stream, type, data);
    }
  }
}

export interface CallContext {
  /** The request's metadata (containerd sends containerd-namespace-ttrpc). */
  metadata: Map<string, string>;
}

type Handler = (payload: Uint8Array, ctx: CallContext) => Promise<Uint8Array>;

type Methods<S> = S extends GenService<infer R> ? R : never;

/** Implementations of a service's methods, by their local names (create, start...). */
export type ServiceImpl<S> = {
  [K in keyof Methods<S>]?: (req: MessageShape<Methods<S>[K]['input']>, ctx: CallContext) => Promise<MessageInitShape<Methods<S>[K]['output']>>;
};

export class TtrpcServer {
  private readonly methods = new Map<string, Handler>();
  private readonly sockets = new Set<net.Socket>();
  private server: net.Server | undefined;
  /** Called when a connection opens or closes (the shim exits when idle). */
  onConnect: (() => void) | undefined;
  onDisconnect: (() => void) | undefined;

  /** Registers every implemented method of a service; the others answer Unimplemented. */
  addService<S extends DescService>(service: S, impl: ServiceImpl<S>): void {
    for (const m of service.methods) {
      const fn = (impl as Record<string, ((req: unknown, ctx: CallContext) => Promise<unknown>) | undefined>)[m.localName];
      if (!fn) continue;
      const input = m.input as DescMessage;
      const output = m.output as DescMessage;
      this.methods.set(`${service.typeName}/${m.name}`, async (payload, ctx) => {
        let req: unknown;
        try {
          req = fromBinary(input, payload);
        } catch (err) {
          throw new TtrpcError(Code.INVALID_ARGUMENT, `${m.name}: malformed ${input.typeName}: ${(err as Error).message}`);
        }
        const res = await fn.call(impl, req, ctx);
        return toBinary(output, create(output, res as MessageInitShape<DescMessage>));
      });
    }
  }

  get connections(): number {
    return this.sockets.size;
  }

  listen(path: string): Promise<void> {
    const server = net.createServer((sock) => this.serve(sock));
    this.server = server;
    return new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(path, () => {
        server.off('error', reject);
        resolve();
      });
    });
  }

  close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    return new Promise((r) => (this.server ? this.server.close(() => r()) : r()));
  }

  private serve(sock: net.Socket): void {
    this.sockets.add(sock);
    this.onConnect?.();
    const reader = new FrameReader((stream, type, data) => {
      if (type !== TYPE_REQUEST) return; // Data frames (streams) are not used by these APIs.
      void this.dispatch(data).then((res) => {
        if (!sock.destroyed) sock.write(frame(stream, TYPE_RESPONSE, res));
      });
    });
    sock.on('data', (chunk: Buffer) => {
      try {
        reader.push(chunk);
      } catch {
        sock.destroy();
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.sockets.delete(sock);
      this.onDisconnect?.();
    });
  }

  private async dispatch(data: Buffer): Promise<Uint8Array> {
    let status = { code: Code.OK as number, message: '' };
    let payload: Uint8Array = new Uint8Array(0);
    try {
      let req;
      try {
        req = fromBinary(RequestSchema, data);
      } catch (err) {
        throw new TtrpcError(Code.INVALID_ARGUMENT, `malformed ttrpc request: ${(err as Error).message}`);
      }
      const h = this.methods.get(`${req.service}/${req.method}`);
      if (!h) throw new TtrpcError(Code.UNIMPLEMENTED, `${req.service}/${req.method} is not implemented`);
      payload = await h(req.payload, { metadata: new Map(req.metadata.map((kv) => [kv.key, kv.value])) });
    } catch (err) {
      status = err instanceof TtrpcError ? { code: err.code, message: err.message } : { code: Code.INTERNAL, message: (err as Error).message };
    }
    return toBinary(ResponseSchema, create(ResponseSchema, { status, payload }));
  }
}

/** A ttrpc client on one connection (the shim's to containerd, for events; tests). */
export class TtrpcClient {
  private next = 1;
  private readonly pending = new Map<number, { resolve: (b: Uint8Array) => void; reject: (e: Error) => void }>();
  private closed: Error | undefined;

  private constructor(private readonly sock: net.Socket) {
    const reader = new FrameReader((stream, type, data) => {
      const p = this.pending.get(stream);
      if (type !== TYPE_RESPONSE || !p) return;
      this.pending.delete(stream);
      try {
        const res = fromBinary(ResponseSchema, data);
        if (res.status && res.status.code !== Code.OK) p.reject(new TtrpcError(res.status.code, res.status.message));
        else p.resolve(res.payload);
      } catch (err) {
        p.reject(err as Error);
      }
    });
    sock.on('data', (c: Buffer) => {
      try {
        reader.push(c);
      } catch (err) {
        sock.destroy(err as Error);
      }
    });
    sock.on('error', () => {});
    sock.on('close', () => {
      this.closed = new TtrpcError(Code.UNAVAILABLE, 'ttrpc connection closed');
      for (const p of this.pending.values()) p.reject(this.closed);
      this.pending.clear();
    });
  }

  static connect(path: string): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const sock = net.connect(path);
      sock.once('error', reject);
      sock.once('connect', () => {
        sock.off('error', reject);
        resolve(new TtrpcClient(sock));
      });
    });
  }

  get isClosed(): boolean {
    return this.closed !== undefined;
  }

  async call<I extends DescMessage, O extends DescMessage>(service: string, method: string, input: I, req: MessageInitShape<I>, output: O, metadata: Record<string, string> = {}): Promise<MessageShape<O>> {
    if (this.closed) throw this.closed;
    const stream = this.next;
    this.next += 2;
    const payload = toBinary(input, create(input, req));
    const data = toBinary(RequestSchema, create(RequestSchema, {
      service, method, payload, metadata: Object.entries(metadata).map(([key, value]) => ({ key, value })),
    }));
    const res = await new Promise<Uint8Array>((resolve, reject) => {
      this.pending.set(stream, { resolve, reject });
      this.sock.write(frame(stream, TYPE_REQUEST, data));
    });
    return fromBinary(output, res);
  }

  close(): void {
    this.sock.destroy();
  }
}
