// A dom0 backend of our own, standing in for the kernel's netback (vif) and
// xenconsoled (console): it watches /local/domain/0/backend as they do and
// answers the xenbus state machine (io/xenbus.h's XenbusState). It moves no
// data: the VM's devices work through the executor as before; this is the
// control path's share of a device's set-up.
//
// vif, as netback's xenbus.c does it: at the device's probe (its backend
// directory written, state Initialising) InitWait; Connected once the
// frontend says Initialised (or Connected) and the hotplug script has said
// hotplug-status "connected"; Closed when the toolstack writes Closing.
// console 0: xenconsoled has no state machine for it; it reads the
// frontend's ring-ref and port (domain_create_ring) and the toolstack does
// not wait on it; removal is just the toolstack's rm (libxl__devices_destroy).
import { XsClient, XsReplyError } from './client.js';
import { Watcher } from './watcher.js';

export const XenbusState = {
  Unknown: 0, Initialising: 1, InitWait: 2, Initialised: 3, Connected: 4, Closing: 5, Closed: 6,
} as const;

const BACKEND_ROOT = '/local/domain/0/backend';
/** <root>/<kind>/<domid>/<devid>, then the key that changed if any. */
const DEVICE = /^\/local\/domain\/0\/backend\/(vif|console)\/(\d+)\/(\d+)(?:\/(.*))?$/;

interface Device {
  kind: 'vif' | 'console';
  dir: string;
  frontend?: string;
  frontToken?: string;
  /** The console's frontend keys as xenconsoled reads them. */
  ring?: { ref: string; port: string };
}

export interface BackendStats {
  /** Devices this backend has seen and not yet seen removed. */
  devices: number;
  connected: number;
  events: number;
}

export class XsBackend {
  private readonly devices = new Map<string, Device>();
  private chain = Promise.resolve();
  private connected = 0;
  /** The first error any device's handling hit (the store refused something it should not have). */
  failure: Error | undefined;
  /** Told of each device's failed handling (the backend goes on with the others). */
  onFailure: (err: Error) => void = () => {};

  /** Resolves when the store's connection ends. */
  readonly closed: Promise<void>;

  private constructor(private readonly w: Watcher) {
    this.closed = new Promise((resolve) => w.xs.raw.once('close', () => resolve()));
  }

  static async start(socket: string): Promise<XsBackend> {
    const xs = await XsClient.connect(socket);
    const be = new XsBackend(new Watcher(xs));
    // The backend directory may not exist yet: a watch does not need it to.
    await be.w.watch(BACKEND_ROOT, (path) => be.serial(() => be.onBackend(path)), 'backend');
    return be;
  }

  stats(): BackendStats {
    return { devices: this.devices.size, connected: this.connected, events: this.w.events };
  }

  close(): void {
    this.w.xs.close();
  }

  /** One event at a time, in order, as a xenbus watch thread runs them. */
  private serial(f: () => Promise<void>): void {
    this.chain = this.chain.then(f).catch((e: unknown) => {
      this.failure ??= e as Error;
      this.onFailure(e as Error);
    });
  }

  private get xs(): XsClient {
    return this.w.xs;
  }

  private async read(path: string): Promise<string | undefined> {
    try {
      return await this.xs.read(path);
    } catch (e) {
      if (e instanceof XsReplyError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }

  private async onBackend(path: string): Promise<void> {
    const m = DEVICE.exec(path);
    if (!m) {
      // A parent removed (libxl__xs_path_cleanup takes empty parents too): the devices under it are gone.
      for (const dev of [...this.devices.values()]) {
        if (dev.dir.startsWith(`${path}/`) && (await this.read(dev.dir)) === undefined) await this.forget(dev);
      }
      return;
    }
    const [, kind, domid, devid, key] = m as unknown as [string, 'vif' | 'console', string, string, string | undefined];
    const dir = `${BACKEND_ROOT}/${kind}/${domid}/${devid}`;
    // Only what netback's watches look at: the state, the hotplug script's word, and the directory going away.
    if (key !== undefined && key !== 'state' && key !== 'hotplug-status') return;
    const state = await this.read(`${dir}/state`);
    let dev = this.devices.get(dir);
    if (state === undefined) {
      if (dev && (await this.read(dir)) === undefined) await this.forget(dev);
      return;
    }
    if (!dev) {
      if (Number(state) !== XenbusState.Initialising) return;
      dev = { kind, dir };
      this.devices.set(dir, dev);
      await this.probe(dev);
      return;
    }
    if (Number(state) === XenbusState.Closing) {
      await this.xs.write(`${dir}/state`, String(XenbusState.Closed));
      return;
    }
    if (kind === 'vif') await this.maybeConnect(dev);
  }

  private async probe(dev: Device): Promise<void> {
    dev.frontend = await this.read(`${dev.dir}/frontend`);
    if (!dev.frontend) throw new Error(`backend ${dev.dir}: no frontend key`);
    if (dev.kind === 'console') {
      const [ref, port] = await Promise.all([this.read(`${dev.frontend}/ring-ref`), this.read(`${dev.frontend}/port`)]);
      if (ref === undefined || port === undefined) throw new Error(`console ${dev.frontend}: no ring-ref or port`);
      dev.ring = { ref, port };
      return;
    }
    await this.xs.write(`${dev.dir}/state`, String(XenbusState.InitWait));
    // netback's xenbus_watch_otherend: the frontend's state.
    const front = `${dev.frontend}/state`;
    dev.frontToken = await this.w.watch(front, () => this.serial(() => this.maybeConnect(dev)));
  }

  private async maybeConnect(dev: Device): Promise<void> {
    if (!this.devices.has(dev.dir) || !dev.frontend) return;
    const [be, fe, hotplug] = await Promise.all([
      this.read(`${dev.dir}/state`), this.read(`${dev.frontend}/state`), this.read(`${dev.dir}/hotplug-status`),
    ]);
    if (Number(be) !== XenbusState.InitWait) return;
    const f = Number(fe);
    if ((f === XenbusState.Initialised || f === XenbusState.Connected) && hotplug === 'connected') {
      // netback's connect(): the frontend's ring-ref and event-channel are what it maps.
      // (netfront names it tx-ring-ref; the libOS's generic frontend, xs_front_connect, ring-ref.)
      const [tx, ref, evtchn] = await Promise.all([
        this.read(`${dev.frontend}/tx-ring-ref`), this.read(`${dev.frontend}/ring-ref`), this.read(`${dev.frontend}/event-channel`),
      ]);
      if ((tx ?? ref) === undefined || evtchn === undefined) throw new Error(`vif ${dev.frontend}: Initialised without a ring-ref or event-channel`);
      await this.xs.write(`${dev.dir}/state`, String(XenbusState.Connected));
      this.connected++;
    }
  }

  /** The frontend's watch is gone from the store before the device leaves the count (tests wait on the count). */
  private async forget(dev: Device): Promise<void> {
    if (dev.frontToken && dev.frontend) await this.w.unwatch(`${dev.frontend}/state`, dev.frontToken).catch(() => {});
    this.devices.delete(dev.dir);
  }
}
