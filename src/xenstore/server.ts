// `lightvm xenstored`: the store served over a unix socket. Socket clients
// are dom0 (the toolstack, xenstore-utils, the backend) until a CONTROL
// `lightvm-bind` makes one a guest domain's forwarded ring.
import { lstatSync, unlinkSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { XenStore, type Quotas } from './store.js';
import { FrameReader, XsError, XsType, encode } from './wire.js';

/** A client that reads no replies or events is cut off once this much waits for it. */
const MAX_QUEUED_BYTES = 1 << 20;

export interface XenstoredOptions {
  socket: string;
  quotas?: Partial<Quotas>;
  store?: XenStore;
}

export interface Xenstored {
  store: XenStore;
  server: Server;
  close(): Promise<void>;
}

export async function startXenstored(opts: XenstoredOptions): Promise<Xenstored> {
  await clearStaleSocket(opts.socket);
  const store = opts.store ?? new XenStore(opts.quotas);
  const sockets = new Set<Socket>();
  const server = createServer((s) => serve(store, s, sockets));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.socket, () => { server.off('error', reject); resolve(); });
  });
  return {
    store, server,
    close: () => new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    }),
  };
}

function serve(store: XenStore, s: Socket, sockets: Set<Socket>): void {
  sockets.add(s);
  const reader = new FrameReader();
  const send = (buf: Buffer): void => {
    if (s.writableLength > MAX_QUEUED_BYTES) { s.destroy(); return; }
    s.write(buf);
  };
  const conn = store.connect(0, (payload) => send(encode({ type: XsType.WATCH_EVENT, reqId: 0, txId: 0, payload })));
  conn.onClose = () => s.destroy();
  s.on('data', (chunk: Buffer) => {
    let messages;
    try {
      messages = reader.push(chunk);
    } catch (err) {
      // Unframeable input: nothing after it can be read, so the connection ends (the store goes on).
      if (err instanceof XsError) { s.destroy(); return; }
      throw err;
    }
    for (const m of messages) {
      if (conn.closed) return;
      send(encode(conn.handle(m)));
    }
  });
  s.on('error', () => s.destroy());
  s.on('close', () => { sockets.delete(s); conn.close(); });
}

/** Take over a socket path only if it is a socket nobody answers on; never remove anything else. */
async function clearStaleSocket(path: string): Promise<void> {
  let st;
  try {
    st = lstatSync(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!st.isSocket()) throw new Error(`xenstored: ${path} exists and is not a socket; refusing to replace it`);
  const live = await new Promise<boolean>((resolve) => {
    const c = createConnection(path);
    c.once('connect', () => { c.destroy(); resolve(true); });
    c.once('error', () => resolve(false));
  });
  if (live) throw new Error(`xenstored: another store is serving on ${path}`);
  unlinkSync(path);
}
