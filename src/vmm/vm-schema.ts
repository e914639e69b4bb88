// What a VM is made of, as JSON schemas: the one definition of a VM's name,
// cmdline and devices that the API's create (src/daemon/schemas.ts) and a
// snapshot or migration stream (src/vmm/snapshot.ts) both check against. A
// snapshot is guest-controlled input (its SHA-256 is a checksum, not a
// signature): every field is checked here, and every address and length
// against its RAM, before anything is built from it.
import { createRequire } from 'node:module';
import type { Ajv as AjvType, ErrorObject, ValidateFunction } from 'ajv';
import { HC_STRUCT, NOXS_MAX_DEVICES } from './abi.js';
import { DeviceConfigError, validateDevicePage } from './device-page.js';
import { FieldError } from './field-error.js';
import type { SchemaType } from './schema-type.js';
import { PAGE_SIZE } from '../kvm/memory.js';
import { MAX_MEMORY, MIN_MEMORY } from './layout.js';
import { CONSOLE_HELD } from './socket-port.js';
import { LVM_VIRTIO_QUEUE_MAX, VIRTQ_AVAIL, VIRTQ_DESC, VIRTQ_USED, VIRTQ_USED_ELEM } from './virtio/abi.js';

export const NAME_MAX = 63;
export const CMDLINE_MAX = 512;
export const PATH_MAX = 4096;
/** Devices of one VM at most: what its device page holds. */
export const MAX_DEVICES = NOXS_MAX_DEVICES;
/** A snapshot's console section at most: what the executor holds of one VM's console on its way out. */
export const CONSOLE_SECTION_MAX = CONSOLE_HELD;

export const vmName = {
  type: 'string', minLength: 1, maxLength: NAME_MAX, pattern: '^[A-Za-z0-9][A-Za-z0-9_.-]*$',
  description: 'letters, digits, _ . - (not digits only: a number names a VM by its id)',
} as const;

export const vmCmdline = { type: 'string', maxLength: CMDLINE_MAX } as const;

export const hostPath = { type: 'string', minLength: 1, maxLength: PATH_MAX } as const;

/** Checked as an address where it is written into the device page (validateDevicePage). */
const ipv4Address = { type: 'string', maxLength: 15 } as const;

/** One device of a VM: what the device page shows of it, and its host side (bridge, disk file, store). */
export const device = {
  type: 'object',
  required: ['type', 'id'],
  additionalProperties: false,
  properties: {
    type: { type: 'string', enum: ['console', 'net', 'block', 'xenstore'] },
    id: { type: 'integer', minimum: 0, maximum: 62 },
    backend: { type: 'integer', minimum: 0, maximum: 2 ** 53 - 1, description: 'its backend: a virtio device\'s MMIO window (set by the host)' },
    mac: { type: 'string', pattern: '^[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}$', description: 'net: like 02:00:00:00:00:01' },
    mtu: { type: 'integer', minimum: 68, maximum: 65535 },
    bridge: { type: 'string', minLength: 1, maxLength: 15, description: 'net: the bridge its tap joins (host side, not in the device page)' },
    path: { ...hostPath, description: 'block: the disk file on the host, an absolute path; xenstore: the socket of the store (lightvm xenstored)' },
    domid: { type: 'integer', minimum: 1, maximum: 32751, description: 'xenstore: the domain id the VM is in the store (default: its id)' },
    readonly: { type: 'boolean', description: 'block: the guest may only read the disk' },
    ipv4: {
      type: 'object',
      required: ['addr', 'netmask'],
      additionalProperties: false,
      properties: { addr: ipv4Address, netmask: ipv4Address, gateway: ipv4Address },
    },
  },
} as const;

export type DeviceEntry = SchemaType<typeof device>;

export const devices = { type: 'array', maxItems: MAX_DEVICES, items: device } as const;

/** A device as a running VM has it: a net device has its MAC and bridge, a block device its disk. */
const completeDevice = {
  allOf: [
    device,
    { if: { properties: { type: { const: 'net' } } }, then: { required: ['mac', 'bridge'] } },
    { if: { properties: { type: { const: 'block' } } }, then: { required: ['path'] } },
    { if: { properties: { type: { const: 'xenstore' } } }, then: { required: ['path'] } },
  ],
} as const;

const hex64 = { type: 'string', pattern: '^0x[0-9a-f]{1,16}$' } as const;

/**
 * A VM's configuration, the one definition of it: a snapshot's header holds
 * it as it is; the executor's create request (protocol.ts), a Machine
 * (MachineConfig) and the device page (DevicePageContents) take their parts
 * of it by type; the API's create body and a cfg file give it with memory in
 * MiB and the devices not yet complete.
 */
export const vmConfig = {
  type: 'object',
  required: ['id', 'name', 'memory', 'cmdline', 'devices'],
  properties: {
    id: { type: 'integer', minimum: 1, maximum: 2 ** 53 - 1 },
    name: vmName,
    memory: { type: 'integer', minimum: MIN_MEMORY, maximum: MAX_MEMORY, multipleOf: 1048576, description: 'bytes of guest RAM, whole MiB' },
    cmdline: vmCmdline,
    devices: { ...devices, items: completeDevice },
  },
} as const;

export type VmConfig = SchemaType<typeof vmConfig>;

/** The JSON header of a snapshot file and of a migration stream's final state. */
export const snapshotHeader = {
  type: 'object',
  required: ['vm', 'image', 'msrs', 'parked', 'paused'],
  properties: {
    vm: vmConfig,
    image: {
      type: 'object',
      required: ['path'],
      properties: { path: hostPath, sha256: { type: ['string', 'null'], pattern: '^[0-9a-f]{64}$' } },
    },
    msrs: {
      type: 'array', maxItems: 256,
      items: { type: 'array', minItems: 2, maxItems: 2, items: [{ type: 'integer', minimum: 0, maximum: 0xffffffff }, hex64] },
    },
    parked: {
      type: ['object', 'null'],
      required: ['arg', 'remainingNs'],
      additionalProperties: false,
      properties: { arg: { type: 'integer', minimum: 0 }, remainingNs: { type: 'number', minimum: 0, maximum: 2 ** 63 } },
    },
    paused: { type: 'boolean' },
    savedAt: { type: 'string', maxLength: 64 },
    kernel: { type: 'string', maxLength: 256 },
  },
} as const;

/** A virtio device module's saved state (src/vmm/virtio/mmio.ts, queue.ts). */
const virtioState = {
  type: 'object',
  required: ['status', 'driverFeatures', 'queues', 'interrupt'],
  additionalProperties: false,
  properties: {
    status: { type: 'integer', minimum: 0, maximum: 255 },
    driverFeatures: hex64,
    interrupt: { type: 'integer', minimum: 0, maximum: 3 },
    queues: {
      type: 'array', maxItems: 8,
      items: {
        type: 'object',
        required: ['size', 'ready', 'desc', 'avail', 'used', 'lastAvail'],
        additionalProperties: false,
        properties: {
          size: { type: 'integer', enum: [0, ...Array.from({ length: Math.log2(LVM_VIRTIO_QUEUE_MAX) + 1 }, (_, i) => 2 ** i)] },
          ready: { type: 'boolean' },
          desc: hex64, avail: hex64, used: hex64,
          lastAvail: { type: 'integer', minimum: 0, maximum: 0xffff },
        },
      },
    },
  },
} as const;

export interface QueueShape { size: number; ready: boolean; desc: string; avail: string; used: string }

/** A refusal of one field: field is a path such as header.vm.devices[3].mac. */
export class VmStateError extends FieldError {
  constructor(field: string, reason: string) {
    super(field, reason);
    this.name = 'VmStateError';
  }
}

// ajv is loaded and the checks compiled on the first snapshot read, not at
// import: `lightvm run` imports this module and must not pay for ajv.
let compiled: { header: ValidateFunction; virtio: ValidateFunction } | undefined;
function checks(): { header: ValidateFunction; virtio: ValidateFunction } {
  if (!compiled) {
    const { Ajv } = createRequire(import.meta.url)('ajv') as { Ajv: typeof AjvType };
    const ajv = new Ajv({ allErrors: false, strict: false });
    compiled = { header: ajv.compile(snapshotHeader), virtio: ajv.compile(virtioState) };
  }
  return compiled;
}

/** "/vm/devices/3/mac" under "header" → "header.vm.devices[3].mac". */
function fieldOf(root: string, pointer: string): string {
  let out = root;
  for (const raw of pointer.split('/').slice(1)) {
    const part = raw.replace(/~1/g, '/').replace(/~0/g, '~');
    out += /^\d+$/.test(part) ? `[${part}]` : `.${part}`;
  }
  return out;
}

/** What was found, short and printable (a name may hold escapes or newlines: JSON shows them). */
function shown(v: unknown): string {
  const s = v === undefined ? 'undefined' : JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 60)}... (${s.length} characters)` : s;
}

function valueAt(root: unknown, pointer: string): unknown {
  let v = root;
  for (const part of pointer.split('/').slice(1)) v = (v as Record<string, unknown> | undefined)?.[part];
  return v;
}

function refuse(root: string, data: unknown, e: ErrorObject): never {
  if (e.keyword === 'required') {
    const missing = (e.params as { missingProperty: string }).missingProperty;
    throw new VmStateError(fieldOf(root, `${e.instancePath}/${missing}`), 'missing');
  }
  if (e.keyword === 'additionalProperties') {
    const extra = (e.params as { additionalProperty: string }).additionalProperty;
    throw new VmStateError(fieldOf(root, `${e.instancePath}/${extra}`), 'is not a field of it');
  }
  const value = valueAt(data, e.instancePath);
  const what = e.keyword === 'maxItems' || e.keyword === 'maxLength'
    ? `${Array.isArray(value) ? value.length : String(value).length} ${Array.isArray(value) ? 'items' : 'characters'}`
    : shown(value);
  throw new VmStateError(fieldOf(root, e.instancePath), `${what} ${e.message ?? 'is not valid'}`);
}

/** The header's fields and every address in it against its RAM; throws VmStateError naming the field. */
export function validateSnapshotHeader(h: unknown): void {
  const checkSnapshotHeader = checks().header;
  if (!checkSnapshotHeader(h)) refuse('header', h, checkSnapshotHeader.errors![0]!);
  const { vm, parked } = h as { vm: { memory: number; devices: unknown[] }; parked: { arg: number } | null };
  if (parked && !inRam(vm.memory, parked.arg, HC_STRUCT.poll.size)) {
    throw new VmStateError('header.parked.arg', `POLL argument at 0x${parked.arg.toString(16)} (${HC_STRUCT.poll.size} bytes) lies outside ${vm.memory / 1048576} MiB of guest RAM`);
  }
  try {
    // What the device page holds: unique ids, addresses that parse.
    validateDevicePage({ vmId: 1, name: 'x', devices: vm.devices as DeviceEntry[] });
  } catch (err) {
    if (!(err instanceof DeviceConfigError)) throw err;
    const field = err.field.replace(/^devices\.(\d+)/, 'header.vm.devices[$1]');
    throw new VmStateError(field, err.reason);
  }
}

/** The console section: no more than a VM's console holds. */
export function validateConsoleSection(bytes: number): void {
  if (bytes > CONSOLE_SECTION_MAX) throw new VmStateError('section console', `${bytes} bytes is more than the ${CONSOLE_SECTION_MAX} a VM's console holds`);
}

/**
 * A device module's saved state: it must be a module of one of the VM's
 * devices, of the shape that module saves, its queues inside RAM.
 */
export function validateDeviceState(name: string, state: unknown, vm: { memory: number; devices: readonly { type: string; id: number }[] }): void {
  const field = `section devices.${name}`;
  const m = /^virtio-(blk|console)\.(\d+)$/.exec(name);
  const type = m?.[1] === 'blk' ? 'block' : m?.[1];
  if (!m || !vm.devices.some((d) => d.type === type && d.id === Number(m[2]))) {
    throw new VmStateError(field, 'is the state of no device of this VM');
  }
  const checkVirtioState = checks().virtio;
  if (!checkVirtioState(state)) refuse(field, state, checkVirtioState.errors![0]!);
  (state as { queues: QueueShape[] }).queues.forEach((q, i) => {
    if (!q.ready) return;
    const areas: [string, string, number][] = [
      ['desc', q.desc, VIRTQ_DESC.size * q.size],
      ['avail', q.avail, VIRTQ_AVAIL.RING + 2 * q.size + 2],
      ['used', q.used, VIRTQ_USED.RING + VIRTQ_USED_ELEM.size * q.size + 2],
    ];
    if (q.size === 0) throw new VmStateError(`${field}.queues[${i}].size`, 'is 0 in a ready queue');
    for (const [k, at, len] of areas) {
      if (!inRam(vm.memory, Number(BigInt(at)), len)) {
        throw new VmStateError(`${field}.queues[${i}].${k}`, `${at} (${len} bytes) lies outside ${vm.memory / 1048576} MiB of guest RAM`);
      }
    }
  });
}

/** As GuestAccess.inRam: page 0 is never RAM a guest structure may use. */
function inRam(memory: number, gpa: number, len: number): boolean {
  return gpa >= PAGE_SIZE && gpa + len <= memory;
}
