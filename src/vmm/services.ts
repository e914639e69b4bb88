// Just-in-time services: a service's taps stay on the bridge while no VM
// runs; the first frame for it boots its armed VM, which ends after its idle
// time without traffic.
import * as libc from '../sys/libc.js';
import { Rtnetlink } from '../sys/netlink.js';
import { DEFAULT_BRIDGE } from './device-page.js';
import type { Executor } from './executor.js';
import { monotonicNs } from './machine.js';
import { NetDevice } from './net.js';
import { serializeError, type CreateRequest, type ProcessRequest, type Timings } from './protocol.js';
import { placeVirtio } from './virtio/mmio.js';
import { launch, newTimings } from './vm-creation.js';

export interface Service {
  id: number;
  config: CreateRequest;
  /** Its taps by device id: they stay on the bridge between VMs. */
  nets: (NetDevice | undefined)[];
  /** Its IPv4 address (the frames that boot it are for this address or its MAC). */
  ip: Uint8Array | undefined;
  idleNs: number;
  /** The id its next VM gets, once armed. */
  armedVmId?: number;
  /** Its VM, while one runs. */
  vmId?: number;
}

/** The service's address: ip= on its command line, else its first net device's. */
function serviceAddress(config: CreateRequest): Uint8Array | undefined {
  const m = /(?:^|\s)ip=(\d+\.\d+\.\d+\.\d+)/.exec(config.cmdline);
  const ip = m?.[1] ?? config.devices.find((d) => d.type === 'net')?.ipv4?.addr;
  return ip ? new Uint8Array(ip.split('.').map(Number)) : undefined;
}

/** A frame a just-in-time VM must answer: to its MAC, an ARP request for its address, or IPv4 to it. */
function isFor(svc: Service, dev: NetDevice, f: Uint8Array): boolean {
  if (f.length < 14) return false;
  let mine = true;
  for (let i = 0; i < 6; i++) if (f[i] !== dev.macBytes[i]) mine = false;
  if (mine) return true;
  const ip = svc.ip;
  if (!ip) return false;
  const type = (f[12]! << 8) | f[13]!;
  const at = (o: number): boolean => f.length >= o + 4 && f[o] === ip[0] && f[o + 1] === ip[1] && f[o + 2] === ip[2] && f[o + 3] === ip[3];
  if (type === 0x0806) return f.length >= 42 && f[21] === 1 && at(38);
  if (type === 0x0800) return at(30);
  return false;
}

export function arm(x: Executor, req: Extract<ProcessRequest, { op: 'arm' }>): void {
  let svc = x.services.get(req.serviceId);
  try {
    // The image is checked now, not when the first packet is waiting for it.
    x.images.get(req.config.image);
    if (!svc) {
      const created: Service = { id: req.serviceId, config: req.config, nets: [], ip: serviceAddress(req.config), idleNs: req.idleMs * 1e6 };
      x.nl ??= new Rtnetlink();
      for (const [i, d] of req.config.devices.entries()) {
        if (d.type !== 'net') continue;
        const dev = NetDevice.create(d.id, `lvs${req.serviceId}n${d.id}`, d.bridge ?? DEFAULT_BRIDGE, d.mtu ?? 1500, d.mac!, x.nl, `devices.${i}`);
        dev.owned = false;
        created.nets[d.id] = dev;
        x.watch(dev.tap.fd, libc.EPOLLIN | libc.EPOLLET, () => serviceFrame(x, created, dev));
      }
      if (!created.nets.some(Boolean)) throw new Error('a just-in-time service needs a network device');
      svc = created;
      x.services.set(svc.id, svc);
    }
  } catch (err) {
    for (const dev of svc?.nets ?? []) dev?.close();
    x.emit({ ev: 'create-failed', vmId: req.vmId, error: serializeError(err) });
    return;
  }
  svc.config = req.config;
  svc.idleNs = req.idleMs * 1e6;
  svc.armedVmId = req.vmId;
  x.emit({ ev: 'armed', vmId: req.vmId });
  // Frames that came while no VM was armed: one of them may be for us.
  for (const dev of svc.nets) if (dev) serviceFrame(x, svc, dev);
}

/** A frame reached a service's tap: to its VM if it runs, else maybe the packet that boots it. */
function serviceFrame(x: Executor, svc: Service, dev: NetDevice): void {
  if (svc.vmId !== undefined) {
    const e = x.vms.get(svc.vmId);
    if (e) x.frameArrived(e, dev);
    return;
  }
  const seenNs = monotonicNs();
  dev.drainTap((f) => dev.held.length > 0 || isFor(svc, dev, f));
  if (svc.armedVmId !== undefined && svc.nets.some((d) => d && d.held.length > 0)) bootService(x, svc, seenNs);
}

function bootService(x: Executor, svc: Service, firstFrameNs: number): void {
  const vmId = svc.armedVmId!;
  svc.armedVmId = undefined;
  const req: CreateRequest = { ...svc.config, devices: placeVirtio(svc.config.devices), vmId, warm: true, trace: { firstFrameNs } };
  const lent = svc.nets.filter((d): d is NetDevice => d !== undefined);
  for (const dev of lent) {
    dev.pending = dev.held.length > 0;
    dev.lastTrafficNs = firstFrameNs;
  }
  const e = launch(x, req, newTimings(req.trace), { image: req.image, lentNets: lent });
  if (!e) return;
  svc.vmId = vmId;
  e.serviceId = svc.id;
  e.idleNs = svc.idleNs;
}

export function disarm(x: Executor, serviceId: number): void {
  const svc = x.services.get(serviceId);
  if (!svc) return;
  x.services.delete(serviceId);
  // The taps go first: whoever hears that the service's VM ended may look
  // for them at once. The VM ends in this same turn, before it could run.
  for (const dev of svc.nets) {
    if (!dev) continue;
    x.unwatch(dev.tap.fd);
    dev.close();
  }
  const e = svc.vmId !== undefined ? x.vms.get(svc.vmId) : undefined;
  if (e) x.end(e, { kind: 'destroyed' });
  if (svc.armedVmId !== undefined) {
    // The VM that never booted ends too, holding nothing.
    const now = monotonicNs();
    const timings: Timings = { requestNs: now, shellNs: now, loadedNs: now, bootNs: 0, endNs: now, destroyNs: now, destroyedNs: now };
    x.emit({ ev: 'exit', vmId: svc.armedVmId, exit: { kind: 'destroyed' }, timings, exits: 0 });
    x.emit({ ev: 'freed', vmId: svc.armedVmId, destroyNs: now, destroyedNs: now });
  }
}
