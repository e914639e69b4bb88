// Linux's boot_params layout is defined twice: guest/include/lightvm/
// boot_params.h (read by our bzImage test guest) and src/vmm/boot-params.ts
// (written by the monitor). This compiles a probe against the header and
// compares every #define, field offset and struct size with the TypeScript
// side, and checks that nothing on either side lacks its counterpart. The
// offsets themselves are checked against boot.rst's table in
// test/linux-bzimage.test.ts (a real kernel's header read through them).
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { before, describe, it } from 'node:test';
import * as bp from '../src/vmm/boot-params.js';
import { compileAndRunJson, GUEST_INCLUDE, jsonProbe, layoutMismatches, uncoveredNumbers, type LayoutCheck } from './helpers.js';

const HEADER = join(GUEST_INCLUDE, 'lightvm', 'boot_params.h');
const camel = (s: string): string => s.replace(/_([a-z0-9])/g, (_m, c: string) => c.toUpperCase());

function tsNumber(path: string): bigint | undefined {
  let v: unknown = bp;
  for (const k of path.split('.')) {
    if (v === null || typeof v !== 'object' || !(k in v)) return undefined;
    v = (v as Record<string, unknown>)[k];
  }
  return typeof v === 'number' || typeof v === 'bigint' ? BigInt(v) : undefined;
}

/** A struct's field names (arrays included, reserved ones left out) as the header has them. */
function structFields(text: string, name: string): string[] {
  const m = new RegExp(`struct\\s+${name}\\s*\\{([^}]*)\\}`).exec(text);
  if (!m) return [];
  return [...m[1]!.matchAll(/(\w+)\s*(?:\[[^\]]*\])?\s*;/g)].map((f) => f[1]!).filter((f) => !f.startsWith('reserved'));
}

void describe('boot_params: guest/include/lightvm/boot_params.h against src/vmm/boot-params.ts', () => {
  const text = readFileSync(HEADER, 'utf8').replace(/\/\*[\s\S]*?\*\//g, '');
  const defines = [...text.matchAll(/^#define[ \t]+(LVM_LINUX_\w+)[ \t]+\S.*$/gm)].map((m) => m[1]!);
  const header = structFields(text, 'lvm_setup_header');
  const params = structFields(text, 'lvm_boot_params');
  const e820 = structFields(text, 'lvm_e820_entry');
  const checks: LayoutCheck[] = [];
  for (const d of defines) {
    const ts = d.replace(/^LVM_LINUX_/, '');
    checks.push({ c: d, ts, expected: tsNumber(ts) });
  }
  for (const f of header) {
    checks.push({ c: `offsetof(struct lvm_boot_params, hdr.${f})`, ts: `SETUP_HEADER.${camel(f)}`, expected: tsNumber(`SETUP_HEADER.${camel(f)}`) });
  }
  for (const f of params) {
    checks.push({ c: `offsetof(struct lvm_boot_params, ${f})`, ts: `BOOT_PARAMS.${camel(f)}`, expected: tsNumber(`BOOT_PARAMS.${camel(f)}`) });
  }
  checks.push({ c: 'sizeof(struct lvm_boot_params)', ts: 'BOOT_PARAMS.size', expected: tsNumber('BOOT_PARAMS.size') });
  for (const f of e820) {
    checks.push({ c: `offsetof(struct lvm_e820_entry, ${f})`, ts: `E820_ENTRY.${f}`, expected: tsNumber(`E820_ENTRY.${f}`) });
  }
  checks.push({ c: 'sizeof(struct lvm_e820_entry)', ts: 'E820_ENTRY.size', expected: tsNumber('E820_ENTRY.size') });
  let probed = new Map<string, bigint>();

  before(() => {
    probed = compileAndRunJson(jsonProbe(['lightvm/boot_params.h'], checks.map((c) => [c.c, c.c])), [GUEST_INCLUDE]);
  });

  void it('parses what it expects from the header', () => {
    assert.ok(defines.length >= 14, `only ${defines.length} #defines parsed`);
    assert.equal(header.length, 39, `setup header fields parsed: ${header.join(' ')}`);
    assert.deepEqual(params, ['ext_ramdisk_image', 'ext_ramdisk_size', 'ext_cmd_line_ptr', 'e820_entries', 'sentinel', 'hdr', 'e820_table']);
    assert.deepEqual(e820, ['addr', 'len', 'type']);
  });

  void it('every number, offset and size matches', () => {
    assert.deepEqual(layoutMismatches(checks, probed, 'src/vmm/boot-params.ts', 'boot_params.h'), []);
  });

  void it('nothing in boot-params.ts lacks a counterpart in the header', () => {
    assert.deepEqual(uncoveredNumbers(checks, bp), []);
  });
});
