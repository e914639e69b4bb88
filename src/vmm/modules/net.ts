// The net module: a VM's network devices (a tap each, see ../net.ts), the
// NET_WRITE and NET_READ hypercalls, and the watch of each tap in the
// executor's epoll set: a frame makes the device ready and wakes a VM
// parked in POLL. A VM without net devices has no such module and so no
// NET_* calls. A just-in-time service's taps outlive its VMs: they are
// lent to the module (not owned), and the service keeps their watch.
import * as libc from '../../sys/libc.js';
import { HC, HC_STRUCT } from '../abi.js';
import { Next, type DeviceModule, type VmContext } from '../devices.js';
import { GuestFault } from '../exit.js';
import { ETH_HEADER, type NetCounters, type NetDevice } from '../net.js';

export class NetModule implements DeviceModule {
  readonly name = 'net';
  /** By device id. */
  readonly devices: (NetDevice | undefined)[] = [];

  constructor(vm: VmContext, devices: NetDevice[]) {
    for (const d of devices) {
      this.devices[d.id] = d;
      if (d.owned) vm.bus.watch({ fd: d.tap.fd, events: libc.EPOLLIN | libc.EPOLLET, onReady: () => (d.pending = true) });
    }
    const g = vm.guest;
    vm.bus.hypercall(HC.NET_WRITE, this.name, (arg) => {
      const s = g.argStruct(arg, HC_STRUCT.netWrite.size, 'NET_WRITE');
      const dev = this.device(s.getBigUint64(HC_STRUCT.netWrite.device, true), 'NET_WRITE');
      const len = s.getBigUint64(HC_STRUCT.netWrite.len, true);
      let ok = false;
      if (len > BigInt(dev.mtu + ETH_HEADER) || len < BigInt(ETH_HEADER)) dev.counters.txDropped++;
      else ok = dev.write(g.bytes(s.getBigUint64(HC_STRUCT.netWrite.data, true), Number(len), 'NET_WRITE buffer'));
      s.setBigInt64(HC_STRUCT.netWrite.ret, ok ? 0n : -1n, true);
      return Next.Resume;
    });
    vm.bus.hypercall(HC.NET_READ, this.name, (arg) => {
      const s = g.argStruct(arg, HC_STRUCT.netRead.size, 'NET_READ');
      const dev = this.device(s.getBigUint64(HC_STRUCT.netRead.device, true), 'NET_READ');
      const cap = s.getBigUint64(HC_STRUCT.netRead.capacity, true);
      const room = Number(cap > 65536n ? 65536n : cap);
      const n = dev.read(g.writableBytes(s.getBigUint64(HC_STRUCT.netRead.data, true), room, 'NET_READ buffer'));
      s.setBigUint64(HC_STRUCT.netRead.len, BigInt(Math.max(0, n)), true);
      s.setBigInt64(HC_STRUCT.netRead.ret, n < 0 ? -1n : 0n, true);
      return Next.Resume;
    });
  }

  private device(id: bigint, call: string): NetDevice {
    const dev = id < 64n ? this.devices[Number(id)] : undefined;
    if (!dev) throw new GuestFault('bad-hypercall', `${call} on device ${id}, which is not one of its network devices`);
    return dev;
  }

  ready(): bigint {
    let bits = 0n;
    for (const d of this.devices) if (d?.pending) bits |= 1n << BigInt(d.id);
    return bits;
  }

  counters(): (NetCounters & { id: number; tap: string })[] {
    return this.devices.flatMap((d) => (d ? [{ id: d.id, tap: d.tap.name, ...d.counters }] : []));
  }

  /** Last frame in or out on any device (monotonic ns), 0 if none yet. */
  lastTrafficNs(): number {
    let t = 0;
    for (const d of this.devices) if (d && d.lastTrafficNs > t) t = d.lastTrafficNs;
    return t;
  }

  close(): void {
    for (const d of this.devices) if (d?.owned) d.close();
  }
}
