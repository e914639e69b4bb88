// The wire of live migration: a channel between two daemons that share a
// token, which never crosses the wire. A handshake in the clear (each side
// sends a fresh nonce; each proves it knows the token with an HMAC over
// both nonces and its role) is followed by sealed records: AES-256-GCM with
// keys derived (HKDF) from the token and both nonces, one key and one
// counter per direction, so a record cannot be read, changed, replayed or
// reordered by whoever sits on the path. Before the peer has proved itself
// only a few bytes are buffered; after, the socket is paused while the
// reader lags (no unbounded buffering on either side).
import type { Socket } from 'node:net';
import { crypto } from '../sys/builtins.js';

export const PROTOCOL = 2;
/** Largest handshake message (JSON). */
export const HANDSHAKE_MAX = 1024;
/** Bytes buffered from a peer that has not proved itself yet. */
const PREAUTH_BUFFER = 2 * (4 + HANDSHAKE_MAX);
/** Largest plaintext of one sealed record (longer messages go in several). */
export const RECORD_MAX = 1 << 20;
const TAG = 16;
const SEALED_MAX = 2 + RECORD_MAX + TAG;
/** Past this many buffered bytes the socket is paused until the reader catches up. */
const HIGH_WATER = 4 * SEALED_MAX;
const NONCE_BYTES = 32;

export class MigrationError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MigrationError';
  }
}

export type Role = 'source' | 'destination';
export const KINDS = ['ready', 'pages', 'final', 'restored', 'commit', 'running', 'ack', 'error'] as const;
export type Kind = (typeof KINDS)[number];

/** One sealed record: a whole message, or a part of one (more: parts follow). */
export interface SealedRecord {
  kind: Kind;
  more: boolean;
  body: Buffer;
}

export function newNonce(): Buffer {
  return crypto().randomBytes(NONCE_BYTES);
}

/** Parses a hex nonce from the peer. */
export function nonceOf(value: unknown, what: string): Buffer {
  if (typeof value !== 'string' || !/^[0-9a-f]{64}$/.test(value)) throw new MigrationError(`${what}: not a ${NONCE_BYTES}-byte hex nonce`);
  return Buffer.from(value, 'hex');
}

/** What `role` sends to prove it knows the token, bound to both nonces. */
export function proofOf(token: string, role: Role, sourceNonce: Buffer, destinationNonce: Buffer): string {
  return crypto().createHmac('sha256', token).update(`lightvm-migration-${PROTOCOL} ${role}\n`).update(sourceNonce).update(destinationNonce).digest('hex');
}

export function sameProof(a: unknown, b: string): boolean {
  if (typeof a !== 'string' || a.length !== b.length) return false;
  return crypto().timingSafeEqual(Buffer.from(a), Buffer.from(b));
}

function directionKey(token: string, salt: Buffer, from: Role): Buffer {
  return Buffer.from(crypto().hkdfSync('sha256', token, salt, `lightvm-migration-${PROTOCOL} from ${from}`, 32));
}

/** Framed messages on a socket, read one at a time: clear JSON for the handshake, then sealed records. */
export class Channel {
  private chunks: Buffer[] = [];
  private size = 0;
  private failure: Error | undefined;
  private wake: (() => void) | undefined;
  private keys: { send: Buffer; recv: Buffer } | undefined;
  private sent = 0n;
  private received = 0n;
  /** Milliseconds spent sealing and opening records. */
  cryptoMs = 0;

  constructor(readonly socket: Socket) {
    socket.setNoDelay(true);
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.size += chunk.length;
      if (!this.keys && this.size > PREAUTH_BUFFER) {
        this.fail(new MigrationError(`${this.size} bytes sent before the peer proved it knows the token (at most ${PREAUTH_BUFFER})`));
        socket.destroy();
        return;
      }
      if (this.size > HIGH_WATER) socket.pause();
      this.wake?.();
    });
    socket.on('error', (err) => this.fail(new MigrationError(err.message)));
    socket.on('close', () => this.fail(new MigrationError('the other side closed the connection')));
  }

  private fail(err: Error): void {
    this.failure ??= err;
    this.wake?.();
  }

  /** Takes n bytes off the front, or nothing if fewer are buffered. */
  private take(n: number): Buffer | undefined {
    if (this.size < n) return undefined;
    const all = this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
    const out = all.subarray(0, n);
    const rest = all.subarray(n);
    this.chunks = rest.length ? [rest] : [];
    this.size = rest.length;
    if (this.size <= HIGH_WATER && this.socket.isPaused()) this.socket.resume();
    return out;
  }

  /** One frame (u32 length, then that many bytes) of at most max bytes, within timeoutMs. */
  private async frame(max: number, timeoutMs: number, what: string): Promise<Buffer> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.size >= 4) {
        const head = this.chunks[0]!.length >= 4 ? this.chunks[0]! : Buffer.concat(this.chunks, this.size);
        const len = head.readUInt32LE(0);
        if (len > max) {
          this.socket.destroy();
          throw new MigrationError(`${what}: a frame of ${len} bytes (at most ${max})`);
        }
        const f = this.take(4 + len);
        if (f) return f.subarray(4);
      }
      if (this.failure) throw this.failure;
      const left = deadline - Date.now();
      if (left <= 0) throw new MigrationError(`${what}: no answer within ${timeoutMs} ms`);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(done, left);
        function done(): void {
          clearTimeout(timer);
          resolve();
        }
        this.wake = done;
      });
      this.wake = undefined;
    }
  }

  /** A handshake message, in the clear (it holds nothing secret). */
  sendClear(message: Record<string, unknown>): void {
    const body = Buffer.from(JSON.stringify(message));
    const head = Buffer.alloc(4);
    head.writeUInt32LE(body.length, 0);
    this.socket.write(Buffer.concat([head, body]));
  }

  async nextClear(timeoutMs: number, what: string): Promise<Record<string, unknown>> {
    const body = await this.frame(HANDSHAKE_MAX, timeoutMs, what);
    let m: unknown;
    try {
      m = JSON.parse(body.toString('utf8'));
    } catch {
      throw new MigrationError(`${what}: not a migration handshake message`);
    }
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new MigrationError(`${what}: not a migration handshake message`);
    return m as Record<string, unknown>;
  }

  /** From here on every record is sealed with keys only holders of the token can derive. */
  seal(token: string, role: Role, sourceNonce: Buffer, destinationNonce: Buffer): void {
    const salt = Buffer.concat([sourceNonce, destinationNonce]);
    const other: Role = role === 'source' ? 'destination' : 'source';
    this.keys = { send: directionKey(token, salt, role), recv: directionKey(token, salt, other) };
  }

  private iv(counter: bigint): Buffer {
    const iv = Buffer.alloc(12);
    iv.writeBigUInt64BE(counter, 4);
    return iv;
  }

  /** Sends one record. */
  send(kind: Kind, body: Uint8Array = new Uint8Array(0), more = false): void {
    if (!this.keys) throw new Error('migration channel: send before the handshake');
    if (body.length > RECORD_MAX) throw new Error(`migration record of ${body.length} bytes`);
    const t0 = performance.now();
    const cipher = crypto().createCipheriv('aes-256-gcm', this.keys.send, this.iv(this.sent++));
    const head = Buffer.from([KINDS.indexOf(kind), more ? 1 : 0]);
    const parts = [cipher.update(head), cipher.update(body), cipher.final(), cipher.getAuthTag()];
    const len = Buffer.alloc(4);
    len.writeUInt32LE(parts.reduce((n, p) => n + p.length, 0), 0);
    this.cryptoMs += performance.now() - t0;
    this.socket.write(Buffer.concat([len, ...parts]));
  }

  /** Sends a message of any length, in records of at most RECORD_MAX bytes. */
  sendMessage(kind: Kind, body: Uint8Array, recordBytes = RECORD_MAX): void {
    if (body.length === 0) return this.send(kind, body);
    for (let o = 0; o < body.length; o += recordBytes) {
      const end = Math.min(body.length, o + recordBytes);
      this.send(kind, body.subarray(o, end), end < body.length);
    }
  }

  sendJson(kind: Kind, value: unknown): void {
    this.send(kind, Buffer.from(JSON.stringify(value)));
  }

  /** The next sealed record, within timeoutMs; one that fails to open ends the channel. */
  async next(timeoutMs: number, what: string): Promise<SealedRecord> {
    if (!this.keys) throw new Error('migration channel: read before the handshake');
    const f = await this.frame(SEALED_MAX, timeoutMs, what);
    const t0 = performance.now();
    try {
      if (f.length < 2 + TAG) throw new Error('short');
      const decipher = crypto().createDecipheriv('aes-256-gcm', this.keys.recv, this.iv(this.received++));
      decipher.setAuthTag(f.subarray(f.length - TAG));
      const plain = Buffer.concat([decipher.update(f.subarray(0, f.length - TAG)), decipher.final()]);
      const kind = KINDS[plain[0]!];
      if (!kind || plain[1]! > 1) throw new Error('kind');
      return { kind, more: plain[1] === 1, body: plain.subarray(2) };
    } catch {
      this.socket.destroy();
      throw new MigrationError(`${what}: a record that does not open with the session's key (altered, replayed, or from someone without the token)`);
    } finally {
      this.cryptoMs += performance.now() - t0;
    }
  }

  close(): void {
    this.socket.end();
  }

  destroy(): void {
    this.socket.destroy();
  }
}

/** The JSON body of a record (error, running). */
export function jsonOf(r: SealedRecord): Record<string, unknown> {
  try {
    const v: unknown = JSON.parse(r.body.toString('utf8'));
    if (typeof v === 'object' && v !== null) return v as Record<string, unknown>;
  } catch {
    // Below.
  }
  throw new MigrationError(`a ${r.kind} record whose body is not a JSON object`);
}
