// Host networking for VMs: the bridges their taps join. Made here with
// rtnetlink (src/sys/netlink.ts), never with `ip`, `brctl` or a script.
import { linkIndex, Rtnetlink } from '../sys/netlink.js';
import { DEFAULT_BRIDGE, type DeviceEntry } from '../vmm/device-page.js';
import { FieldError } from '../vmm/field-error.js';

export interface BridgeConfig {
  name: string;
  /** Address of the host on the bridge, e.g. "10.0.0.1/24" (none: the bridge has no address). */
  address?: string;
}

export const DEFAULT_BRIDGE_CONFIG: BridgeConfig = { name: DEFAULT_BRIDGE, address: '10.0.0.1/24' };

const ready = new Set<string>();

/**
 * The alias LightVM gives a bridge it makes: the kernel keeps it with the
 * link, so whoever comes next (a daemon after a crash) knows the bridge is
 * ours to remove. A bridge someone else made is never removed.
 */
export const MADE_ALIAS = 'made on demand by lightvm';

/** A bridge that cannot be used (a link of that name that is not a bridge). */
export class BridgeError extends FieldError {
  constructor(message: string, field = 'bridge') {
    super(field, message, { message });
    this.name = 'BridgeError';
  }
}

/**
 * Creates the bridge if it is missing, gives it its address and brings it
 * up. Idempotent. A link of that name that is not a bridge is refused
 * before anything is done to it.
 */
export function ensureBridge(config: BridgeConfig): void {
  if (ready.has(config.name) && linkIndex(config.name)) return;
  let m: RegExpExecArray | null = null;
  if (config.address) {
    m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(config.address);
    if (!m) throw new RangeError(`bridge address "${config.address}" is not a.b.c.d/len`);
  }
  const nl = new Rtnetlink();
  try {
    let created = false;
    const found = nl.link(config.name);
    if (found && found.kind !== 'bridge') {
      throw new BridgeError(`bridge: "${config.name}" is a ${found.kind || 'network device'} link, not a bridge (left as it is)`);
    }
    if (!found) {
      try {
        nl.createBridge(config.name);
        created = true;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') throw err;
        const now = nl.link(config.name);
        if (now?.kind !== 'bridge') throw new BridgeError(`bridge: "${config.name}" is a ${now?.kind || 'network device'} link, not a bridge (left as it is)`);
      }
    }
    const index = linkIndex(config.name);
    // A bridge of our own stays quiet in IPv6 (one found is left as it is).
    // The kernel forgets this if a port with an MTU below 1280 shrinks the
    // bridge's MTU for a while: the bridge may then make a link-local address.
    if (created) {
      nl.setAlias(index, MADE_ALIAS);
      nl.noIpv6Address(index);
    }
    if (m) {
      try {
        nl.addAddress(index, m[1]!, Number(m[2]));
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') throw err;
      }
    }
    nl.setUp(index);
    ready.add(config.name);
  } finally {
    nl.close();
  }
}

/**
 * Removes the bridges LightVM made (MADE_ALIAS) that have no port left and
 * that inUse does not claim: those named, or, without names, every one in
 * this network namespace. Returns the names removed.
 */
export function removeIdleBridges(names: Iterable<string> | undefined, inUse: (name: string) => boolean): string[] {
  const wanted = names ? new Set(names) : undefined;
  if (wanted?.size === 0) return [];
  const nl = new Rtnetlink();
  const removed: string[] = [];
  try {
    const links = nl.links();
    const withPorts = new Set(links.map((l) => l.master).filter(Boolean));
    for (const l of links) {
      if (l.kind !== 'bridge' || l.alias !== MADE_ALIAS || withPorts.has(l.index)) continue;
      if ((wanted && !wanted.has(l.name)) || inUse(l.name)) continue;
      try {
        nl.deleteLink(l.index);
        removed.push(l.name);
      } catch (err) {
        // Gone meanwhile: what was wanted.
        if ((err as { code?: string }).code !== 'ENODEV') throw err;
      }
      ready.delete(l.name);
    }
  } finally {
    nl.close();
  }
  return removed;
}

/** The bridges a VM's net devices join. */
export function bridgesOf(devices: readonly DeviceEntry[], fallback: string): Set<string> {
  return new Set(devices.filter((d) => d.type === 'net').map((d) => d.bridge ?? fallback));
}

/** A locally administered MAC for a VM's device: 02:4c:<vm id, 3 bytes>:<device id>. */
export function defaultMac(vmId: number, deviceId: number): string {
  const b = [0x02, 0x4c, (vmId >> 16) & 0xff, (vmId >> 8) & 0xff, vmId & 0xff, deviceId & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Fills in what a net device entry leaves out (MAC, MTU, bridge); others unchanged. */
export function completeDevices(vmId: number, devices: DeviceEntry[], bridge: string): DeviceEntry[] {
  return devices.map((d) => (d.type === 'net' ? { mtu: 1500, bridge, ...d, mac: d.mac ?? defaultMac(vmId, d.id) } : d));
}
