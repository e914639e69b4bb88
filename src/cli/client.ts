// A small client of the lightvmd REST API over its unix socket.
import http from 'node:http';
import { defaultSocketPath } from '../daemon/paths.js';

export class ApiError extends Error {
  constructor(readonly status: number, readonly code: string, message: string, readonly field: string | null) {
    super(message);
    this.name = 'ApiError';
  }
}

export class DaemonNotRunningError extends Error {
  constructor(socket: string, cause: string) {
    super(`the daemon is not running (${cause} at ${socket}): start it with "npx lightvm daemon"`);
    this.name = 'DaemonNotRunningError';
  }
}

/**
 * Bodies above this size ask the daemon first (Expect: 100-continue): it
 * refuses one over its limit before the body is sent. Small bodies, nearly
 * every request, go at once and save the round trip.
 */
const ASK_FIRST_BYTES = 16 * 1024;
const asksFirst = (data: string): boolean => data.length > ASK_FIRST_BYTES;

export class Client {
  readonly socketPath: string;
  private readonly agent = new http.Agent({ keepAlive: true });

  constructor(socketPath = defaultSocketPath()) {
    this.socketPath = socketPath;
  }

  /** Sends a request; resolves with the parsed JSON reply, rejects with ApiError on 4xx/5xx. */
  request<T>(method: string, path: string, body?: unknown): Promise<T> {
    return new Promise((resolve, reject) => {
      const data = body === undefined ? undefined : JSON.stringify(body);
      let answered = false;
      const req = http.request({
        socketPath: this.socketPath, path, method, agent: this.agent,
        headers: data ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data), ...(asksFirst(data) ? { expect: '100-continue' } : {}) } : {},
      }, (res) => {
        answered = true;
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('end', () => {
          const text = Buffer.concat(chunks).toString();
          let json: unknown;
          try {
            json = text ? JSON.parse(text) : {};
          } catch {
            reject(new ApiError(res.statusCode ?? 0, 'bad-reply', `daemon replied with non-JSON: ${text.slice(0, 200)}`, null));
            return;
          }
          if ((res.statusCode ?? 500) >= 400) {
            const e = (json as { error?: { code: string; message: string; field: string | null } }).error;
            reject(new ApiError(res.statusCode ?? 500, e?.code ?? 'error', e?.message ?? text, e?.field ?? null));
          } else {
            resolve(json as T);
          }
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        // The daemon answered before it read the whole body (a 413) and closed: its answer is the reply.
        if (answered && (err.code === 'EPIPE' || err.code === 'ECONNRESET')) return;
        if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new DaemonNotRunningError(this.socketPath, err.code === 'ENOENT' ? 'no socket' : 'connection refused'));
        else reject(err);
      });
      if (data !== undefined && asksFirst(data)) {
        // The body goes only once the daemon says it will take it: a 413 comes instead, before any of it.
        req.on('continue', () => req.end(data));
        req.flushHeaders();
      } else {
        req.end(data);
      }
    });
  }

  /** Streams a response body (console, events) to onData until it ends, or until signal aborts it (then it resolves). */
  stream(path: string, onData: (chunk: Buffer) => void, signal?: AbortSignal): Promise<void> {
    return new Promise((resolve, reject) => {
      const req = http.request({ socketPath: this.socketPath, path, method: 'GET', signal }, (res) => {
        if ((res.statusCode ?? 500) >= 400) {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const e = (JSON.parse(Buffer.concat(chunks).toString() || '{}') as { error?: { code: string; message: string; field: string | null } }).error;
            reject(new ApiError(res.statusCode ?? 500, e?.code ?? 'error', e?.message ?? 'error', e?.field ?? null));
          });
          return;
        }
        res.on('data', onData);
        res.on('end', () => resolve());
        res.on('error', (err) => (signal?.aborted ? resolve() : reject(err)));
        res.on('close', () => {
          if (signal?.aborted) resolve();
        });
      });
      req.on('error', (err: NodeJS.ErrnoException) => {
        if (signal?.aborted) resolve();
        else if (err.code === 'ENOENT' || err.code === 'ECONNREFUSED') reject(new DaemonNotRunningError(this.socketPath, err.code === 'ENOENT' ? 'no socket' : 'connection refused'));
        else reject(err);
      });
      req.end();
    });
  }

  close(): void {
    this.agent.destroy();
  }
}
