// VM configuration files, xl style (name = "x", memory = 4, vif = [ '...' ], disk = [ 'path,rw' ])
// or JSON. Written here because no library reads xl's format; the grammar
// we take is small: key = integer | "string" | 'string' | [ strings ].
import { closeSync, openSync, readSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import type { CreateBody } from '../daemon/schemas.js';
import type { DeviceEntry } from '../vmm/device-page.js';
import { FieldError } from '../vmm/field-error.js';

export class CfgError extends FieldError {
  declare readonly file: string;
  constructor(file: string, readonly line: number | null, field: string, reason: string) {
    super(field, reason, { file, message: `${file}${line ? `:${line}` : ''}: ${field}: ${reason}` });
    this.name = 'CfgError';
  }
}

/** What a cfg file gives: the API's create body (schemas.ts) without how to create (warm, wait, lease). */
export type VmCfg = Pick<CreateBody, 'image' | 'name' | 'memory' | 'cmdline' | 'initrd' | 'devices'>;

type Value = number | string | string[];

/** Largest configuration file read: a VM's is a few lines, and the daemon takes bodies of 64 KiB. */
export const CFG_MAX_BYTES = 1 << 20;
/** Most characters of the input an error quotes. */
const QUOTE_CHARS = 80;

/** At most n characters of s, saying when it was cut. */
function clip(s: string, n = QUOTE_CHARS): string {
  return s.length > n ? `${s.slice(0, n)}... (${s.length} characters)` : s;
}

/** s as an error quotes it: cut to QUOTE_CHARS, control characters escaped (JSON). */
function quote(s: string, n = QUOTE_CHARS): string {
  return s.length > n ? `${JSON.stringify(s.slice(0, n))}... (${s.length} characters)` : JSON.stringify(s);
}

/**
 * Reads a configuration file: at most CFG_MAX_BYTES, UTF-8 only. A path
 * with bytes that are not UTF-8 cannot pass through the API's JSON, so such
 * a file is refused naming its first such line rather than read with
 * replacement characters (which name some other file).
 */
export function readCfgFile(file: string): string {
  const bytes = readBounded(file);
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(bytes);
  } catch {
    throw new CfgError(file, firstNonUtf8Line(bytes), 'encoding', 'not UTF-8 text (a path with other bytes cannot be named here: rename it, or link to it from a UTF-8 name)');
  }
}

/** The file's bytes, refused past CFG_MAX_BYTES; a pipe is read up to one byte past the limit, no further. */
function readBounded(file: string): Uint8Array {
  let fd: number | undefined;
  try {
    fd = openSync(file, 'r');
    const buf = Buffer.allocUnsafe(CFG_MAX_BYTES + 1);
    let n = 0;
    for (let got = 1; got > 0 && n < buf.length; n += got) got = readSync(fd, buf, n, buf.length - n, null);
    if (n > CFG_MAX_BYTES) throw new CfgError(file, null, 'file', `larger than ${CFG_MAX_BYTES / 1024} KiB: a VM configuration is a few lines`);
    return buf.subarray(0, n);
  } catch (err) {
    if (err instanceof CfgError) throw err;
    const code = (err as NodeJS.ErrnoException).code;
    throw new Error(`${file}: ${code === 'ENOENT' ? 'no such file' : (err as Error).message}`, { cause: err });
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function firstNonUtf8Line(bytes: Uint8Array): number {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let line = 1;
  for (let start = 0; start <= bytes.length; line++) {
    let end = bytes.indexOf(0x0a, start);
    if (end < 0) end = bytes.length;
    try {
      decoder.decode(bytes.subarray(start, end));
    } catch {
      return line;
    }
    start = end + 1;
  }
  return line;
}

/**
 * A quoted string ('...' or "...", a backslash taking the next character
 * as it is) starting at t[at]: its value and the index past its closing
 * quote, or undefined if it is not closed. A scan, not a regular
 * expression: one of those backtracked through a long string until the
 * stack ran out.
 */
function readQuoted(t: string, at: number): { value: string; end: number } | undefined {
  const q = t[at];
  let value = '';
  let from = at + 1;
  for (let i = from; i < t.length; i++) {
    const c = t[i];
    if (c === '\\') {
      value += t.slice(from, i);
      from = ++i;
    } else if (c === q) {
      return { value: value + t.slice(from, i), end: i + 1 };
    }
  }
  return undefined;
}

const isSpace = (c: string | undefined): boolean => c !== undefined && /\s/.test(c);

function skipSpaces(t: string, i: number): number {
  while (isSpace(t[i])) i++;
  return i;
}

function parseList(file: string, line: number, key: string, inner: string): string[] {
  const items: string[] = [];
  let pos = skipSpaces(inner, 0);
  while (pos < inner.length) {
    const item = inner[pos] === '"' || inner[pos] === "'" ? readQuoted(inner, pos) : undefined;
    const after = item ? skipSpaces(inner, item.end) : pos;
    if (!item || (after < inner.length && inner[after] !== ',')) {
      throw new CfgError(file, line, key, `cannot read list item at ${quote(inner.slice(item ? after : pos), 20)}`);
    }
    items.push(item.value);
    pos = skipSpaces(inner, after + 1);
  }
  return items;
}

function parseValue(file: string, line: number, key: string, text: string): Value {
  const t = text.trim();
  if (/^-?\d+$/.test(t)) return Number(t);
  if (t[0] === '"' || t[0] === "'") {
    const str = readQuoted(t, 0);
    if (str && str.end === t.length) return str.value;
  }
  if (t.startsWith('[')) {
    if (!t.endsWith(']')) throw new CfgError(file, line, key, 'list is not closed with ]');
    return parseList(file, line, key, t.slice(1, -1));
  }
  throw new CfgError(file, line, key, `${quote(t)} is not a number, a quoted string or a list of quoted strings`);
}

/**
 * The line without its comment: from a # at its start or after a space,
 * outside quotes (a # in a quoted value is part of it). One scan.
 */
function stripComment(line: string): string {
  let inQuote: string | undefined;
  for (let i = 0; i < line.length; i++) {
    const c = line[i];
    if (inQuote !== undefined) {
      if (c === '\\') i++;
      else if (c === inQuote) inQuote = undefined;
    } else if (c === '"' || c === "'") {
      inQuote = c;
    } else if (c === '#' && (i === 0 || isSpace(line[i - 1]))) {
      return line.slice(0, i);
    }
  }
  return line;
}

/** Parses one vif spec: "mac=..,ip=10.0.0.2/24,gateway=..,mtu=1500". */
export function parseVif(file: string, line: number, index: number, spec: string): DeviceEntry {
  const dev: DeviceEntry = { type: 'net', id: index };
  const field = `vif[${index}]`;
  for (const part of spec.split(',').map((p) => p.trim()).filter(Boolean)) {
    const eq = part.indexOf('=');
    if (eq < 0) throw new CfgError(file, line, field, `${quote(part)} is not key=value`);
    const k = part.slice(0, eq).trim();
    const v = part.slice(eq + 1).trim();
    switch (k) {
      case 'mac':
        if (!/^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$/.test(v)) throw new CfgError(file, line, `${field}.mac`, `${quote(v)} is not a MAC address`);
        dev.mac = v.toLowerCase();
        break;
      case 'ip': {
        const m = /^(\d{1,3}(?:\.\d{1,3}){3})(?:\/(\d{1,2}))?$/.exec(v);
        if (!m) throw new CfgError(file, line, `${field}.ip`, `${quote(v)} is not an IPv4 address (a.b.c.d or a.b.c.d/len)`);
        const len = m[2] === undefined ? 24 : Number(m[2]);
        if (len > 32) throw new CfgError(file, line, `${field}.ip`, `prefix length ${len} is more than 32`);
        const mask = len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
        dev.ipv4 = { ...(dev.ipv4 ?? { netmask: '' }), addr: m[1]!, netmask: [24, 16, 8, 0].map((s) => (mask >>> s) & 255).join('.') };
        break;
      }
      case 'gateway':
        dev.ipv4 = { ...(dev.ipv4 ?? { addr: '', netmask: '' }), gateway: v };
        break;
      case 'mtu':
        if (!/^\d+$/.test(v)) throw new CfgError(file, line, `${field}.mtu`, `${quote(v)} is not a number`);
        dev.mtu = Number(v);
        break;
      case 'bridge':
        dev.bridge = v;
        break;
      default:
        throw new CfgError(file, line, field, `unknown vif key ${quote(k)} (known: mac, ip, gateway, mtu, bridge)`);
    }
  }
  return dev;
}

/**
 * Parses one disk spec: "path" or "path,rw" or "path,ro" (the path relative
 * to base, by default the configuration file's directory); id is its device id.
 */
export function parseDisk(file: string, line: number, index: number, id: number, spec: string, base = dirname(file)): DeviceEntry {
  const field = `disk[${index}]`;
  const parts = spec.split(',').map((p) => p.trim());
  const path = parts[0] ?? '';
  if (!path) throw new CfgError(file, line, field, 'no path: a disk is "path,rw" or "path,ro"');
  const access = parts[1] ?? 'rw';
  if (parts.length > 2 || (access !== 'rw' && access !== 'ro')) {
    throw new CfgError(file, line, field, `${quote(spec)} is not "path,rw" or "path,ro"`);
  }
  return { type: 'block', id, path: resolve(base, path), ...(access === 'ro' ? { readonly: true } : {}) };
}

/** Net devices from vif, then block devices from disk, ids in that order. */
function devicesOf(file: string, line: [number, number], vif: string[] | undefined, disk: string[] | undefined): DeviceEntry[] | undefined {
  if (!vif && !disk) return undefined;
  const nets = (vif ?? []).map((spec, i) => parseVif(file, line[0], i, spec));
  return [...nets, ...(disk ?? []).map((spec, i) => parseDisk(file, line[1], i, nets.length + i, spec))];
}

const KEYS = ['name', 'kernel', 'ramdisk', 'memory', 'cmdline', 'extra', 'vif', 'disk'] as const;

/** Reads an xl-style or JSON configuration; paths are relative to the file. */
export function parseCfg(file: string, text: string): VmCfg {
  const base = dirname(file);
  const imagePath = (image: string): string =>
    image.includes('/') && !isAbsolute(image) ? resolve(base, image) : image;
  const trimmed = text.trim();
  if (file.endsWith('.json') || trimmed.startsWith('{')) return parseJsonCfg(file, trimmed, imagePath);

  const values = new Map<string, { value: Value; line: number }>();
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const lineNo = i + 1;
    let line = stripComment(lines[i]!).trim();
    if (!line) continue;
    // A list may run over several lines (each piece looked at once: no rescans of the whole).
    if (line.includes('[')) {
      for (let closed = line.includes(']'); !closed && i + 1 < lines.length;) {
        const more = stripComment(lines[++i]!).trim();
        line += ` ${more}`;
        closed = more.includes(']');
      }
    }
    const eq = line.indexOf('=');
    const key = eq < 0 ? '' : line.slice(0, eq).trimEnd();
    if (!/^[A-Za-z_][A-Za-z0-9_]*$/.test(key)) throw new CfgError(file, lineNo, 'syntax', `expected key = value, got ${quote(line)}`);
    if (!(KEYS as readonly string[]).includes(key)) {
      throw new CfgError(file, lineNo, clip(key), `unknown key (known: ${KEYS.join(', ')})`);
    }
    if (values.has(key)) throw new CfgError(file, lineNo, key, `set twice (first on line ${values.get(key)!.line})`);
    const value = line.slice(eq + 1);
    values.set(key, { value: parseValue(file, lineNo, key, value.endsWith(';') ? value.slice(0, -1) : value), line: lineNo });
  }
  const get = <T extends Value>(key: string, type: 'number' | 'string' | 'list'): { value: T; line: number } | undefined => {
    const v = values.get(key);
    if (!v) return undefined;
    const ok = type === 'list' ? Array.isArray(v.value) : typeof v.value === type;
    if (!ok) throw new CfgError(file, v.line, key, `expected ${type === 'list' ? 'a list of strings' : `a ${type}`}`);
    return v as { value: T; line: number };
  };
  const kernel = get<string>('kernel', 'string');
  if (!kernel) throw new CfgError(file, null, 'kernel', 'missing: say which image to boot (kernel = "hello")');
  const cfg: VmCfg = { image: imagePath(kernel.value) };
  const name = get<string>('name', 'string');
  if (name) cfg.name = name.value;
  const memory = get<number>('memory', 'number');
  if (memory) cfg.memory = memory.value;
  const cmdline = get<string>('cmdline', 'string') ?? get<string>('extra', 'string');
  if (cmdline) cfg.cmdline = cmdline.value;
  const ramdisk = get<string>('ramdisk', 'string');
  if (ramdisk) cfg.initrd = resolve(base, ramdisk.value);
  const vif = get<string[]>('vif', 'list');
  const disk = get<string[]>('disk', 'list');
  const devices = devicesOf(file, [vif?.line ?? 0, disk?.line ?? 0], vif?.value, disk?.value);
  if (devices) cfg.devices = devices;
  return cfg;
}

function parseJsonCfg(file: string, text: string, imagePath: (s: string) => string): VmCfg {
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (err) {
    throw new CfgError(file, null, 'json', (err as Error).message);
  }
  if (typeof o !== 'object' || o === null || Array.isArray(o)) throw new CfgError(file, null, 'json', 'expected an object');
  const obj = o as Record<string, unknown>;
  const allowed = ['name', 'kernel', 'image', 'ramdisk', 'memory', 'cmdline', 'vif', 'disk', 'devices'];
  for (const k of Object.keys(obj)) if (!allowed.includes(k)) throw new CfgError(file, null, clip(k), `unknown key (known: ${allowed.join(', ')})`);
  const image = obj.image ?? obj.kernel;
  if (typeof image !== 'string' || !image) throw new CfgError(file, null, 'image', 'missing or not a string');
  const cfg: VmCfg = { image: imagePath(image) };
  if (obj.name !== undefined) {
    if (typeof obj.name !== 'string') throw new CfgError(file, null, 'name', 'expected a string');
    cfg.name = obj.name;
  }
  if (obj.memory !== undefined) {
    if (typeof obj.memory !== 'number' || !Number.isInteger(obj.memory)) throw new CfgError(file, null, 'memory', 'expected a whole number of MiB');
    cfg.memory = obj.memory;
  }
  if (obj.cmdline !== undefined) {
    if (typeof obj.cmdline !== 'string') throw new CfgError(file, null, 'cmdline', 'expected a string');
    cfg.cmdline = obj.cmdline;
  }
  if (obj.ramdisk !== undefined) {
    if (typeof obj.ramdisk !== 'string' || !obj.ramdisk) throw new CfgError(file, null, 'ramdisk', 'expected a path');
    cfg.initrd = resolve(dirname(file), obj.ramdisk);
  }
  for (const k of ['vif', 'disk'] as const) {
    const v = obj[k];
    if (v !== undefined && (!Array.isArray(v) || v.some((x) => typeof x !== 'string'))) throw new CfgError(file, null, k, 'expected a list of strings');
  }
  const devices = devicesOf(file, [0, 0], obj.vif as string[] | undefined, obj.disk as string[] | undefined);
  if (devices) cfg.devices = devices;
  if (obj.devices !== undefined) {
    if (!Array.isArray(obj.devices)) throw new CfgError(file, null, 'devices', 'expected a list');
    cfg.devices = [...(cfg.devices ?? []), ...(obj.devices as DeviceEntry[])];
  }
  return cfg;
}
