// The guest ABI is defined twice: guest/include/lightvm/abi.h (C) and
// src/vmm/abi.ts (TypeScript). This compiles a program against the header
// that prints every #define, struct size and field offset, and compares them
// with the TypeScript side, naming each one that differs. It also checks the
// other way round: nothing in abi.ts lacks a counterpart in the header.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as abi from '../src/vmm/abi.js';
import { compileAndRunJson, GUEST_INCLUDE, jsonProbe, layoutMismatches, uncoveredNumbers } from './helpers.js';

const camel = (s: string): string => s.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());

const HEADER = join(GUEST_INCLUDE, 'lightvm', 'abi.h');

/**
 * The mirror in abi.ts of a #define of abi.h: LVM_X is X, and a name whose
 * prefix is an exported object is that object's member (LVM_HC_POLL is
 * HC.POLL, NOXS_DEV_NET is NOXS_DEV.NET).
 */
function defineMirror(name: string): string | undefined {
  const bare = name.replace(/^LVM_/, '');
  if (bare in abi) return bare;
  for (const [obj, value] of Object.entries(abi)) {
    if (value === null || typeof value !== 'object' || !bare.startsWith(`${obj}_`)) continue;
    const key = bare.slice(obj.length + 1);
    if (key in value) return `${obj}.${key}`;
  }
  return undefined;
}

/** The abi.ts object holding a struct's size and offsets: lvm_hc_poll is HC_STRUCT.poll, noxs_header NOXS_HEADER. */
function structMirror(struct: string): string {
  const bare = struct.replace(/^lvm_/, '');
  return bare.startsWith('hc_') ? `HC_STRUCT.${camel(bare.slice(3))}` : bare.toUpperCase();
}

/**
 * Widths (bytes) with which src/vmm/machine.ts, hypercalls.ts and
 * device-page.ts read or write each field: the header must agree.
 */
const WIDTH: Record<string, Record<string, number>> = {
  lvm_hc_walltime: { nsecs: 8 },
  lvm_hc_console_write: { data: 8, len: 8 },
  lvm_hc_poll: { timeout_nsecs: 8, ready_set: 8 },
  lvm_hc_halt: { status: 8 },
  lvm_hc_net_write: { device: 8, data: 8, len: 8, ret: 8 },
  lvm_hc_net_read: { device: 8, data: 8, capacity: 8, len: 8, ret: 8 },
  lvm_boot_info: {
    magic: 4, abi_version: 4, mem_size: 8, kernel_end: 8, cmdline: 8, cmdline_len: 8, device_page: 8, tsc_hz: 8, platform: 8,
  },
  noxs_header: { magic: 4, version: 2, device_count: 2, generation: 4, flags: 4, vm_id: 8, name: abi.NOXS_NAME_MAX },
  noxs_device: {
    type: 2, flags: 2, id: 4, backend: 8, mac: 6, mtu: 2, ipv4_addr: 4, ipv4_netmask: 4, ipv4_gateway: 4,
  },
  lvm_xenstore_ring: {
    req: abi.XENSTORE_RING_BYTES, rsp: abi.XENSTORE_RING_BYTES, req_cons: 4, req_prod: 4, rsp_cons: 4, rsp_prod: 4,
    server_features: 4, connection: 4, error: 4,
  },
};


/** Reads a dotted path (e.g. "HC_STRUCT.poll.readySet") out of the abi module. */
function tsValue(path: string): unknown {
  let v: unknown = abi;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(k in v)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

interface ParsedHeader {
  defines: string[];
  structs: Map<string, string[]>;
}

/** The #defines with a value, and every struct's field names, of abi.h. */
function parseHeader(text: string): ParsedHeader {
  const clean = text.replace(/\/\*[\s\S]*?\*\//g, '');
  const defines = [...clean.matchAll(/^#define[ \t]+(\w+)[ \t]+\S.*$/gm)].map((m) => m[1]!);
  const structs = new Map<string, string[]>();
  for (const m of clean.matchAll(/struct\s+(\w+)\s*\{([^}]*)\};/g)) {
    const fields = [...m[2]!.matchAll(/(\w+)\s*(?:\[[^\]]*\])?\s*;/g)].map((f) => f[1]!);
    structs.set(m[1]!, fields);
  }
  return { defines, structs };
}

interface Check {
  /** The C side, as printed by the probe. */
  c: string;
  /** The TypeScript side, a path into abi.ts (or a description). */
  ts: string;
  expected: bigint | undefined;
}

/** A value of abi.ts as a bigint (numbers and bigints), undefined if absent. */
function tsNumber(path: string): bigint | undefined {
  const v = tsValue(path);
  return typeof v === 'number' || typeof v === 'bigint' ? BigInt(v) : undefined;
}

void describe('guest ABI: guest/include/lightvm/abi.h against src/vmm/abi.ts', () => {
  const header = parseHeader(readFileSync(HEADER, 'utf8'));
  const checks: Check[] = [];
  const problems: string[] = [];
  let probed = new Map<string, bigint>();

  for (const name of header.defines) {
    const ts = defineMirror(name);
    if (!ts) {
      problems.push(`#define ${name} in abi.h has no mirror in src/vmm/abi.ts`);
      continue;
    }
    checks.push({ c: name, ts, expected: tsNumber(ts) });
  }
  for (const [struct, fields] of header.structs) {
    if (struct === 'noxs_page') continue; // checked on its own below
    const ts = structMirror(struct);
    if (tsValue(ts) === undefined) {
      problems.push(`struct ${struct} in abi.h has no mirror in src/vmm/abi.ts (expected ${ts})`);
      continue;
    }
    checks.push({ c: `sizeof(struct ${struct})`, ts: `${ts}.size`, expected: tsNumber(`${ts}.size`) });
    for (const field of fields) {
      if (field.startsWith('reserved')) continue;
      const path = `${ts}.${camel(field)}`;
      checks.push({ c: `offsetof(struct ${struct}, ${field})`, ts: path, expected: tsNumber(path) });
    }
  }
  for (const [struct, fields] of Object.entries(WIDTH)) {
    for (const [field, width] of Object.entries(fields)) {
      if (!header.structs.get(struct)?.includes(field)) problems.push(`struct ${struct} has no field ${field} (WIDTH table)`);
      checks.push({ c: `sizeof(((struct ${struct} *)0)->${field})`, ts: `width of ${struct}.${field} as src uses it`, expected: BigInt(width) });
    }
  }
  // The device page: a header then NOXS_MAX_DEVICES entries, one page exactly.
  checks.push({ c: 'sizeof(struct noxs_page)', ts: 'NOXS_PAGE_SIZE', expected: BigInt(abi.NOXS_PAGE_SIZE) });
  checks.push({ c: 'offsetof(struct noxs_page, header)', ts: 'header at 0', expected: 0n });
  checks.push({
    c: 'sizeof(((struct noxs_page *)0)->devices) / sizeof(struct noxs_device)', ts: 'NOXS_MAX_DEVICES', expected: BigInt(abi.NOXS_MAX_DEVICES),
  });
  for (let i = 0; i < abi.NOXS_MAX_DEVICES; i++) {
    checks.push({ c: `offsetof(struct noxs_page, devices[${i}])`, ts: `noxsDeviceOffset(${i})`, expected: BigInt(abi.noxsDeviceOffset(i)) });
  }

  before(() => {
    probed = compileAndRunJson(jsonProbe(['lightvm/abi.h'], checks.map((c) => [c.c, c.c])), [GUEST_INCLUDE]);
  });

  void it('finds what it expects in the header (the parser is not fooling us)', () => {
    assert.ok(header.defines.length >= 21, `only ${header.defines.length} #defines parsed`);
    assert.ok(header.defines.includes('LVM_HC_PIO_BASE') && header.defines.includes('NOXS_MAX_DEVICES'));
    for (const s of ['lvm_hc_walltime', 'lvm_hc_console_write', 'lvm_hc_poll', 'lvm_hc_halt', 'lvm_boot_info', 'noxs_header',
      'noxs_device', 'noxs_page']) {
      assert.ok(header.structs.has(s), `struct ${s} not parsed`);
    }
    assert.deepEqual(header.structs.get('lvm_boot_info'),
      ['magic', 'abi_version', 'mem_size', 'kernel_end', 'cmdline', 'cmdline_len', 'device_page', 'tsc_hz', 'platform']);
    assert.ok(checks.length > 100, `only ${checks.length} checks`);
  });

  void it('every #define and struct of abi.h has a TypeScript mirror', () => {
    assert.deepEqual(problems, []);
  });

  void it('every number, struct size, field offset and field width matches', () => {
    assert.deepEqual(layoutMismatches(checks, probed, 'src/vmm/abi.ts', 'abi.h'), []);
  });

  void it('nothing in abi.ts lacks a counterpart in abi.h', () => {
    assert.deepEqual(uncoveredNumbers(checks, abi), []);
  });

  void it('HC_COUNT is one past the highest hypercall and the numbers are distinct', () => {
    const numbers = Object.values(abi.HC);
    assert.equal(new Set(numbers).size, numbers.length);
    assert.equal(abi.HC_COUNT, Math.max(...numbers) + 1);
  });
});
