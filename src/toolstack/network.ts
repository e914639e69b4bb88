// Host networking for VMs: the bridges their taps join. Made here with
// rtnetlink (src/sys/netlink.ts), never with `ip`, `brctl` or a script.
import { linkIndex, Rtnetlink } from '../sys/netlink.js';
import { DEFAULT_BRIDGE, type DeviceEntry } from '../vmm/device-page.js';

export interface BridgeConfig {
  name: string;
  /** Address of the host on the bridge, e.g. "10.0.0.1/24" (none: the bridge has no address). */
  address?: string;
}

export const DEFAULT_BRIDGE_CONFIG: BridgeConfig = { name: DEFAULT_BRIDGE, address: '10.0.0.1/24' };

const ready = new Set<string>();

/** Creates the bridge if it is missing, gives it its address and brings it up. Idempotent. */
export function ensureBridge(config: BridgeConfig): void {
  if (ready.has(config.name) && linkIndex(config.name)) return;
  const nl = new Rtnetlink();
  try {
    let created = false;
    if (!linkIndex(config.name)) {
      try {
        nl.createBridge(config.name);
        created = true;
      } catch (err) {
        if ((err as { code?: string }).code !== 'EEXIST') throw err;
      }
    }
    const index = linkIndex(config.name);
    // A bridge of our own stays quiet in IPv6 (one found is left as it is).
    // The kernel forgets this if a port with an MTU below 1280 shrinks the
    // bridge's MTU for a while: the bridge may then make a link-local address.
    if (created) nl.noIpv6Address(index);
    if (config.address) {
      const m = /^(\d+\.\d+\.\d+\.\d+)\/(\d+)$/.exec(config.address);
      if (!m) throw new RangeError(`bridge address "${config.address}" is not a.b.c.d/len`);
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

/** A locally administered MAC for a VM's device: 02:4c:<vm id, 3 bytes>:<device id>. */
export function defaultMac(vmId: number, deviceId: number): string {
  const b = [0x02, 0x4c, (vmId >> 16) & 0xff, (vmId >> 8) & 0xff, vmId & 0xff, deviceId & 0xff];
  return b.map((x) => x.toString(16).padStart(2, '0')).join(':');
}

/** Fills in what a net device entry leaves out (MAC, MTU, bridge); others unchanged. */
export function completeDevices(vmId: number, devices: DeviceEntry[], bridge: string): DeviceEntry[] {
  return devices.map((d) => (d.type === 'net' ? { mtu: 1500, bridge, ...d, mac: d.mac ?? defaultMac(vmId, d.id) } : d));
}
