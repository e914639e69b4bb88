// The xs_wire protocol: a 16-byte header (type, request id, transaction id,
// payload length; little-endian u32 each) followed by the payload, usually
// NUL-terminated strings. Numbers and error names are Xen's public
// io/xs_wire.h; clients nobody here wrote (xenstore-utils) speak it.

export const XsType = {
  CONTROL: 0,
  DIRECTORY: 1,
  READ: 2,
  GET_PERMS: 3,
  WATCH: 4,
  UNWATCH: 5,
  TRANSACTION_START: 6,
  TRANSACTION_END: 7,
  INTRODUCE: 8,
  RELEASE: 9,
  GET_DOMAIN_PATH: 10,
  WRITE: 11,
  MKDIR: 12,
  RM: 13,
  SET_PERMS: 14,
  WATCH_EVENT: 15,
  ERROR: 16,
  IS_DOMAIN_INTRODUCED: 17,
  RESUME: 18,
  SET_TARGET: 19,
  RESET_WATCHES: 21,
  DIRECTORY_PART: 22,
} as const;
export type XsTypeName = keyof typeof XsType;

const typeNames = new Map<number, XsTypeName>(Object.entries(XsType).map(([k, v]) => [v, k as XsTypeName]));
export function typeName(type: number): string {
  return typeNames.get(type) ?? `type ${type}`;
}

/** The errno names a store may answer with (xs_wire.h's xsd_errors, plus the later E2BIG and EPERM). */
export type XsErrno =
  | 'EINVAL' | 'EACCES' | 'EEXIST' | 'EISDIR' | 'ENOENT' | 'ENOMEM' | 'ENOSPC' | 'EIO'
  | 'ENOTEMPTY' | 'ENOSYS' | 'EROFS' | 'EBUSY' | 'EAGAIN' | 'EISCONN' | 'E2BIG' | 'EPERM';

/** A request refused with one of the store's errno names. */
export class XsError extends Error {
  constructor(readonly errno: XsErrno, detail?: string) {
    super(detail ? `${errno}: ${detail}` : errno);
  }
}

export const HEADER_BYTES = 16;
/** XENSTORE_PAYLOAD_MAX: the largest payload either side may send. */
export const PAYLOAD_MAX = 4096;

export interface XsMessage {
  type: number;
  reqId: number;
  txId: number;
  payload: Buffer;
}

export function encode(m: XsMessage): Buffer {
  const out = Buffer.allocUnsafe(HEADER_BYTES + m.payload.length);
  out.writeUInt32LE(m.type, 0);
  out.writeUInt32LE(m.reqId >>> 0, 4);
  out.writeUInt32LE(m.txId >>> 0, 8);
  out.writeUInt32LE(m.payload.length, 12);
  m.payload.copy(out, HEADER_BYTES);
  return out;
}

/** Strings joined with a NUL after each, as most replies and requests are. */
export function strings(...parts: string[]): Buffer {
  return Buffer.from(parts.map((p) => `${p}\0`).join(''), 'utf8');
}

/** Split a payload at NULs; a trailing NUL ends the last string rather than starting an empty one. */
export function splitStrings(payload: Buffer): string[] {
  if (payload.length === 0) return [];
  const text = payload.toString('utf8');
  const parts = text.split('\0');
  if (text.endsWith('\0')) parts.pop();
  return parts;
}

/**
 * Cuts a byte stream into messages. A header announcing more than PAYLOAD_MAX
 * is a protocol error: the peer is not speaking xs_wire, and nothing it sends
 * after can be framed, so the caller closes the connection.
 */
export class FrameReader {
  private buffered: Buffer[] = [];
  private bytes = 0;

  push(chunk: Buffer): XsMessage[] {
    this.buffered.push(chunk);
    this.bytes += chunk.length;
    const out: XsMessage[] = [];
    for (;;) {
      if (this.bytes < HEADER_BYTES) break;
      const all = this.buffered.length === 1 ? this.buffered[0]! : Buffer.concat(this.buffered, this.bytes);
      this.buffered = [all];
      const len = all.readUInt32LE(12);
      if (len > PAYLOAD_MAX) throw new XsError('E2BIG', `a message announces ${len} payload bytes (at most ${PAYLOAD_MAX})`);
      if (this.bytes < HEADER_BYTES + len) break;
      out.push({
        type: all.readUInt32LE(0),
        reqId: all.readUInt32LE(4),
        txId: all.readUInt32LE(8),
        payload: Buffer.from(all.subarray(HEADER_BYTES, HEADER_BYTES + len)),
      });
      const rest = all.subarray(HEADER_BYTES + len);
      this.buffered = rest.length ? [rest] : [];
      this.bytes = rest.length;
    }
    return out;
  }
}
