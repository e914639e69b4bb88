// SchemaType (src/vmm/schema-type.ts) derives the TypeScript types of a VM's
// configuration from its JSON schemas. The type checks below fail `npm run
// typecheck` if a derived type is not exactly what is written here; the
// tests check that values of those types pass the schemas at run time.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Ajv } from 'ajv';
import type { SchemaType } from '../src/vmm/schema-type.js';
import type { SnapshotHeader } from '../src/vmm/snapshot.js';
import { device, type DeviceEntry, type VmConfig } from '../src/vmm/vm-schema.js';

/** true only if A and B are the same type (not merely assignable either way). */
type Same<A, B> = (<T>() => T extends A ? 1 : 2) extends (<T>() => T extends B ? 1 : 2) ? true : false;
const same = <A, B>(v: Same<A, B>): Same<A, B> => v;

const sample = {
  type: 'object',
  required: ['n', 'pair'],
  additionalProperties: false,
  properties: {
    n: { type: 'integer' },
    maybe: { type: ['string', 'null'] },
    kind: { type: 'string', enum: ['a', 'b'] },
    fixed: { const: 3 },
    pair: { type: 'array', items: [{ type: 'integer' }, { type: 'string' }] },
    list: { type: 'array', items: { type: 'boolean' } },
    either: { anyOf: [{ type: 'object', required: ['x'], properties: { x: { type: 'number' } } }, { type: 'null' }] },
    first: { allOf: [{ type: 'string' }, { if: { const: 'x' }, then: { maxLength: 1 } }] },
    free: {},
  },
} as const;

void describe('SchemaType', () => {
  void it('derives required and optional fields, lists, tuples, enums, const, anyOf and allOf', () => {
    type T = SchemaType<typeof sample>;
    assert.equal(same<T, {
      n: number; pair: [number, string];
      maybe?: string | null; kind?: 'a' | 'b'; fixed?: 3; list?: boolean[]; either?: { x: number } | null; first?: string; free?: unknown;
    }>(true), true);
    const v: T = { n: 1, pair: [2, 'b'], maybe: null, kind: 'a', fixed: 3, list: [true], either: { x: 1.5 }, first: 'y' };
    const check = new Ajv({ strict: false }).compile(sample);
    assert.ok(check(v), JSON.stringify(check.errors));
  });

  void it('DeviceEntry is the device schema\'s type, and an entry of it passes the schema', () => {
    assert.equal(same<DeviceEntry, {
      type: 'console' | 'net' | 'block' | 'xenstore'; id: number;
      backend?: number; mac?: string; mtu?: number; bridge?: string; path?: string; domid?: number; readonly?: boolean;
      ipv4?: { addr: string; netmask: string; gateway?: string };
    }>(true), true);
    const entry: DeviceEntry = { type: 'net', id: 0, mac: '02:00:00:00:00:01', bridge: 'lvbr0', ipv4: { addr: '10.0.0.2', netmask: '255.255.255.0' } };
    const check = new Ajv({ strict: false }).compile(device);
    assert.ok(check(entry), JSON.stringify(check.errors));
    assert.ok(!check({ ...entry, type: 'tape' }));
  });

  void it('a snapshot header\'s type is its schema\'s: the VM\'s configuration and the vCPU\'s state around it', () => {
    assert.equal(same<VmConfig, { id: number; name: string; memory: number; cmdline: string; devices: DeviceEntry[] }>(true), true);
    assert.equal(same<SnapshotHeader, {
      vm: VmConfig; image: { path: string; sha256?: string | null }; msrs: [number, string][];
      parked: { arg: number; remainingNs: number } | null; paused: boolean; savedAt?: string; kernel?: string;
    }>(true), true);
  });
});
