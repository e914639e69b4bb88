// The device modules a VM's configuration asks for beyond core and noxs:
// virtio (block, console), xenstore, and net with its taps.
import { Rtnetlink } from '../sys/netlink.js';
import { DEFAULT_BRIDGE } from './device-page.js';
import type { Executor } from './executor.js';
import { type Machine, monotonicNs } from './machine.js';
import { NetModule } from './modules/net.js';
import { setUpXenstore } from './modules/xenstore.js';
import { NetDevice } from './net.js';
import type { CreateRequest, Timings } from './protocol.js';
import { setUpBlock } from './virtio/blk.js';
import { setUpConsole } from './virtio/console.js';

/**
 * Sets up the device modules of the VM's configuration beyond core and noxs:
 * virtio, xenstore, net (on taps of its own, or on lentNets: a just-in-time
 * service's, which outlive its VM).
 */
export function attachDevices(x: Executor, machine: Machine, req: CreateRequest, timings: Timings, lentNets?: NetDevice[]): void {
  attachVirtio(x, machine, req);
  setUpXenstore(machine, req.devices);
  if (lentNets) machine.add(new NetModule(machine, lentNets));
  else attachNets(x, machine, req, timings);
}

/** A virtio module per block device (its disk file opened) and console device, each with its MMIO window. */
function attachVirtio(x: Executor, machine: Machine, req: CreateRequest): void {
  req.devices.forEach((d, i) => {
    if (d.type === 'block') machine.add(setUpBlock(machine, d, i));
    else if (d.type === 'console') machine.add(setUpConsole(machine, d));
  });
}

/** Creates the VM's network devices (a tap each, on its bridge, up) and its net module; none without a net device. */
function attachNets(x: Executor, machine: Machine, req: CreateRequest, timings: Timings): void {
  const t0 = monotonicNs();
  const devs: NetDevice[] = [];
  try {
    for (const [i, d] of req.devices.entries()) {
      if (d.type !== 'net') continue;
      x.nl ??= new Rtnetlink();
      devs.push(NetDevice.create(d.id, `lv${req.vmId}n${d.id}`, d.bridge ?? DEFAULT_BRIDGE, d.mtu ?? 1500, d.mac!, x.nl, `devices.${i}`));
    }
  } catch (err) {
    for (const dev of devs) dev.close();
    throw err;
  }
  if (devs.length === 0) return;
  machine.add(new NetModule(machine, devs));
  timings.netSetupNs = monotonicNs() - t0;
}
