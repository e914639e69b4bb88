// virtio-mmio's layout is defined twice: guest/include/lightvm/virtio.h (C)
// and src/vmm/virtio/abi.ts (TypeScript). As test/abi.test.ts does for the
// core ABI, this compiles a program against the header that prints every
// #define, struct size and field offset, compares them with the TypeScript
// side naming each that differs, and checks that nothing in abi.ts lacks a
// counterpart in the header.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as abi from '../src/vmm/virtio/abi.js';
import { compileAndRunJson, GUEST_INCLUDE, jsonProbe, layoutMismatches, uncoveredNumbers } from './helpers.js';

const camel = (s: string): string => s.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());
const HEADER = join(GUEST_INCLUDE, 'lightvm', 'virtio.h');

/** X is export X, or OBJ.KEY for the longest exported object OBJ with NAME = OBJ_KEY. */
function defineMirror(name: string): string | undefined {
  if (name in abi) return name;
  let best: string | undefined;
  for (const [obj, value] of Object.entries(abi)) {
    if (value === null || typeof value !== 'object' || !name.startsWith(`${obj}_`)) continue;
    const key = name.slice(obj.length + 1);
    if (key in value && (!best || obj.length > best.indexOf('.'))) best = `${obj}.${key}`;
  }
  return best;
}

function tsValue(path: string): unknown {
  let v: unknown = abi;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(k in v)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return v;
}

function tsNumber(path: string): bigint | undefined {
  const v = tsValue(path);
  return typeof v === 'number' || typeof v === 'bigint' ? BigInt(v) : undefined;
}

void describe('virtio ABI: guest/include/lightvm/virtio.h against src/vmm/virtio/abi.ts', () => {
  const clean = readFileSync(HEADER, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  const defines = [...clean.matchAll(/^#define[ \t]+(\w+)[ \t]+\S.*$/gm)].map((m) => m[1]!);
  const structs = [...clean.matchAll(/struct\s+(\w+)\s*\{([^}]*)\};/g)].map((m) =>
    [m[1]!, [...m[2]!.matchAll(/(\w+)\s*(?:\[[^\]]*\])?\s*;/g)].map((f) => f[1]!)] as const);
  const checks: { c: string; ts: string; expected: bigint | undefined }[] = [];
  const problems: string[] = [];
  for (const name of defines) {
    const ts = defineMirror(name);
    if (!ts) problems.push(`#define ${name} in virtio.h has no mirror in src/vmm/virtio/abi.ts`);
    else checks.push({ c: name, ts, expected: tsNumber(ts) });
  }
  for (const [struct, fields] of structs) {
    const ts = struct.toUpperCase();
    if (tsValue(ts) === undefined) {
      problems.push(`struct ${struct} in virtio.h has no mirror in src/vmm/virtio/abi.ts (expected ${ts})`);
      continue;
    }
    checks.push({ c: `sizeof(struct ${struct})`, ts: `${ts}.size`, expected: tsNumber(`${ts}.size`) });
    for (const f of fields) {
      checks.push({ c: `offsetof(struct ${struct}, ${f})`, ts: `${ts}.${camel(f)}`, expected: tsNumber(`${ts}.${camel(f)}`) });
    }
  }
  let probed = new Map<string, bigint>();
  before(() => {
    probed = compileAndRunJson(jsonProbe(['lightvm/virtio.h'], checks.map((c) => [c.c, c.c])), [GUEST_INCLUDE]);
  });

  void it('finds what it expects in the header (the parser is not fooling us)', () => {
    assert.ok(defines.includes('VIRTIO_MMIO_QUEUE_NOTIFY') && defines.includes('VIRTIO_BLK_T_GET_ID'));
    assert.deepEqual(structs.map(([s]) => s).sort(), ['virtio_blk_config', 'virtio_blk_req_header', 'virtq_desc', 'virtq_used_elem']);
    assert.ok(checks.length > 60, `only ${checks.length} checks`);
  });

  void it('every #define and struct of virtio.h has a TypeScript mirror', () => {
    assert.deepEqual(problems, []);
  });

  void it('every number, struct size and field offset matches', () => {
    assert.deepEqual(layoutMismatches(checks, probed, 'src/vmm/virtio/abi.ts', 'virtio.h'), []);
  });

  void it('nothing in abi.ts lacks a counterpart in virtio.h', () => {
    assert.deepEqual(uncoveredNumbers(checks, abi), []);
  });
});
