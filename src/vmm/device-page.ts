// noxs: one page per VM that describes its devices. The host writes it; the
// guest sees it through a read-only memory slot. No central store exists.
import { GuestMemory } from '../kvm/memory.js';
import { XENSTORE_RING_GPA } from './layout.js';
import {
  NOXS_DEVICE, NOXS_HEADER, NOXS_MAGIC, NOXS_MAX_DEVICES, NOXS_NAME_MAX, NOXS_PAGE_SIZE, NOXS_VERSION,
  noxsDeviceOffset,
} from './abi.js';
import type { DeviceEntry, VmConfig } from './vm-schema.js';
import { FieldError } from './field-error.js';

/** A device as a VM's configuration has it: the schema of a device (vm-schema.ts) is its one definition. */
export type { DeviceEntry };
export type DeviceType = DeviceEntry['type'];

/** The bridge a net device's tap joins unless its entry names another. */
export const DEFAULT_BRIDGE = 'lvbr0';
const TYPE_CODE: Record<DeviceType, number> = { console: 1, net: 2, block: 3, xenstore: 4 };

/** What the device page shows: the VM's id, name and devices (its configuration, vm-schema.ts). */
export type DevicePageContents = { vmId: VmConfig['id'] } & Pick<VmConfig, 'name'> & { devices: readonly DeviceEntry[] };

/** A configuration the device page cannot hold; names the field. */
export class DeviceConfigError extends FieldError {
  constructor(field: string, reason: string) {
    super(field, reason);
    this.name = 'DeviceConfigError';
  }
}

function parseMac(field: string, mac: string): number[] {
  const parts = mac.split(':');
  if (parts.length !== 6 || parts.some((p) => !/^[0-9a-fA-F]{2}$/.test(p))) {
    throw new DeviceConfigError(field, `"${mac}" is not a MAC address like 02:00:00:00:00:01`);
  }
  return parts.map((p) => parseInt(p, 16));
}

function parseIpv4(field: string, ip: string): number {
  const parts = ip.split('.');
  if (parts.length !== 4 || parts.some((p) => !/^\d{1,3}$/.test(p) || Number(p) > 255)) {
    throw new DeviceConfigError(field, `"${ip}" is not an IPv4 address`);
  }
  // Network byte order in memory: the first octet first.
  return parts.reduce((acc, p, i) => acc | (Number(p) << (8 * i)), 0) >>> 0;
}

/** A xenstore device: one per VM (one ring page), the store's socket path, a domain id the store can hold. */
function checkXenstore(field: string, d: DeviceEntry, earlier: DeviceEntry[]): void {
  if (earlier.some((x) => x.type === 'xenstore')) throw new DeviceConfigError(`${field}.type`, 'a VM has one xenstore device at most (one ring page)');
  if (typeof d.path !== 'string' || !d.path.startsWith('/')) throw new DeviceConfigError(`${field}.path`, 'the xenstore socket must be an absolute path');
  if (d.domid !== undefined && (!Number.isInteger(d.domid) || d.domid < 1 || d.domid > 32751)) {
    throw new DeviceConfigError(`${field}.domid`, `${d.domid} is not a guest domain id in 1..32751`);
  }
}

const scratch = new DataView(new ArrayBuffer(NOXS_PAGE_SIZE));

/** Checks a configuration without writing anything. */
export function validateDevicePage(c: DevicePageContents): void {
  encode(scratch, c);
}

/** Writes everything but the generation counter. */
function encode(v: DataView, c: DevicePageContents): void {
  const name = new TextEncoder().encode(c.name);
  if (name.length >= NOXS_NAME_MAX) throw new DeviceConfigError('name', `"${c.name}" is longer than ${NOXS_NAME_MAX - 1} bytes`);
  if (c.devices.length > NOXS_MAX_DEVICES) {
    throw new DeviceConfigError('devices', `${c.devices.length} devices is more than the ${NOXS_MAX_DEVICES} a device page holds`);
  }
  const ids = new Set<number>();
  c.devices.forEach((d, i) => {
    const field = `devices.${i}`;
    const o = noxsDeviceOffset(i);
    if (!(d.type in TYPE_CODE)) throw new DeviceConfigError(`${field}.type`, `unknown device type "${String(d.type)}"`);
    if (!Number.isInteger(d.id) || d.id < 0 || d.id > 62) throw new DeviceConfigError(`${field}.id`, `${d.id} is not an id in 0..62`);
    if (ids.has(d.id)) throw new DeviceConfigError(`${field}.id`, `id ${d.id} is used twice`);
    ids.add(d.id);
    v.setUint16(o + NOXS_DEVICE.type, TYPE_CODE[d.type], true);
    v.setUint32(o + NOXS_DEVICE.id, d.id, true);
    if (d.type === 'xenstore') checkXenstore(field, d, c.devices.slice(0, i));
    // A xenstore device's backend is where its ring page lies, whatever the entry said.
    v.setBigUint64(o + NOXS_DEVICE.backend, BigInt(d.type === 'xenstore' ? XENSTORE_RING_GPA : d.backend ?? 0), true);
    if (d.mac !== undefined) parseMac(`${field}.mac`, d.mac).forEach((b, j) => v.setUint8(o + NOXS_DEVICE.mac + j, b));
    if (d.mtu !== undefined) {
      if (!Number.isInteger(d.mtu) || d.mtu < 68 || d.mtu > 65535) throw new DeviceConfigError(`${field}.mtu`, `${d.mtu} is not in 68..65535`);
      v.setUint16(o + NOXS_DEVICE.mtu, d.mtu, true);
    }
    if (d.ipv4) {
      v.setUint32(o + NOXS_DEVICE.ipv4Addr, parseIpv4(`${field}.ipv4.addr`, d.ipv4.addr), true);
      v.setUint32(o + NOXS_DEVICE.ipv4Netmask, parseIpv4(`${field}.ipv4.netmask`, d.ipv4.netmask), true);
      if (d.ipv4.gateway) v.setUint32(o + NOXS_DEVICE.ipv4Gateway, parseIpv4(`${field}.ipv4.gateway`, d.ipv4.gateway), true);
    }
  });
  v.setUint32(NOXS_HEADER.magic, NOXS_MAGIC, true);
  v.setUint16(NOXS_HEADER.version, NOXS_VERSION, true);
  v.setUint16(NOXS_HEADER.deviceCount, c.devices.length, true);
  v.setBigUint64(NOXS_HEADER.vmId, BigInt(c.vmId), true);
  new Uint8Array(v.buffer, v.byteOffset + NOXS_HEADER.name, NOXS_NAME_MAX).set(name);
}

/** The device page of one VM. */
export class DevicePage {
  readonly memory: GuestMemory;
  private generation = 0;

  constructor(memory = new GuestMemory(NOXS_PAGE_SIZE)) {
    this.memory = memory;
  }

  /**
   * Replaces the page's contents. The generation is odd while the page
   * changes and even once it is whole, so a guest can read it consistently.
   */
  write(c: DevicePageContents): void {
    validateDevicePage(c);
    const v = this.memory.view;
    this.generation += 1;
    v.setUint32(NOXS_HEADER.generation, this.generation, true);
    this.memory.bytes.fill(0, NOXS_HEADER.generation + 4);
    this.memory.bytes.fill(0, 0, NOXS_HEADER.generation);
    encode(v, c);
    this.generation += 1;
    v.setUint32(NOXS_HEADER.generation, this.generation, true);
  }

  /** Sets header flags (e.g. a shutdown request) as a new generation. */
  setFlags(flags: number): void {
    const v = this.memory.view;
    v.setUint32(NOXS_HEADER.generation, ++this.generation, true);
    v.setUint32(NOXS_HEADER.flags, v.getUint32(NOXS_HEADER.flags, true) | flags, true);
    v.setUint32(NOXS_HEADER.generation, ++this.generation, true);
  }

  get flags(): number {
    return this.memory.view.getUint32(NOXS_HEADER.flags, true);
  }

  clear(): void {
    this.memory.bytes.fill(0);
  }

  /**
   * Puts back a saved page under a (possibly) new VM id and name, as a new
   * generation so that a guest that reads it again sees the change.
   */
  restore(saved: Uint8Array, who: { vmId: number; name: string }): void {
    const v = this.memory.view;
    const generation = Math.max(this.generation, new DataView(saved.buffer, saved.byteOffset).getUint32(NOXS_HEADER.generation, true));
    this.memory.bytes.set(saved);
    this.generation = generation + 1;
    v.setUint32(NOXS_HEADER.generation, this.generation, true);
    v.setBigUint64(NOXS_HEADER.vmId, BigInt(who.vmId), true);
    const name = new TextEncoder().encode(who.name);
    if (name.length >= NOXS_NAME_MAX) throw new DeviceConfigError('name', `"${who.name}" is longer than ${NOXS_NAME_MAX - 1} bytes`);
    this.memory.bytes.fill(0, NOXS_HEADER.name, NOXS_HEADER.name + NOXS_NAME_MAX);
    this.memory.bytes.set(name, NOXS_HEADER.name);
    this.generation += 1;
    v.setUint32(NOXS_HEADER.generation, this.generation, true);
  }

  /** A copy of the page as the guest sees it. */
  snapshot(): Uint8Array {
    return this.memory.bytes.slice();
  }

  close(): void {
    this.memory.close();
  }
}
