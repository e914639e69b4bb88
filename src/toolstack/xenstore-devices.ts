// `--devices xenstore`: a Host whose every create and destroy also does
// what libxl does in XenStore (xenstore-mode.ts), against a store and a
// dom0 backend that run as processes of their own (`lightvm xenstored`,
// `lightvm xenstore-backend`), as xenstored and netback/xenconsoled do on
// Xen. The VM's devices are the noxs ones as before: this adds the control
// path's cost, not a second data path.
//
// Per create: XenstoreMode.create (name check, /local/domain/<id>,
// /vm/<uuid>, console 0, each net device as a vif up to its backend's
// InitWait and hotplug-status), then the VM is launched, then each vif's
// frontend is walked to Connected and both ends are awaited Connected. The
// frontend's walk (netfront's part, in the guest on Xen) is done here on a
// connection bound as the domain, with the domain's permissions: our
// guests' frontends are the noxs device page. A VM that ends (destroyed or
// not) has its entries removed as libxl__destroy_domid does; a destroy
// resolves after that. Restored, adopted and served (just-in-time) VMs
// are not put in the store: none of them is made by libxl's create.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { XsClient } from '../xenstore/client.js';
import { frontConnect } from '../xenstore/frontend.js';
import type { DeviceEntry } from '../vmm/device-page.js';
import { PACKAGE_ROOT } from './images.js';
import { XenstoreMode, type XsCreatePhases } from './xenstore-mode.js';

export type DeviceMode = 'noxs' | 'xenstore';
export const DEVICE_MODES: readonly DeviceMode[] = ['noxs', 'xenstore'];

/** What a Host asks of a device store around each VM it creates (Host.deviceStore). */
export interface DeviceStore {
  /** Before the VM is launched; a refusal (a name another domain has) refuses the create. */
  /** Resolves with the milliseconds of each of its steps (and counts, named so). */
  create(vm: { id: number; name: string; memoryMiB: number; image: string; cmdline: string; devices: readonly DeviceEntry[] }): Promise<Record<string, number>>;
  /** Once the VM runs: its devices' handshakes, to Connected; resolves with their milliseconds. */
  connect(id: number): Promise<number>;
  /** After the VM ended: its entries go. A VM the store never had is no error. */
  remove(id: number): Promise<void>;
}

/** A lightvm subcommand as a process of its own; resolves once `ready` holds. */
export async function startLightvmPeer(args: string[], ready: () => boolean | Promise<boolean>, what: string): Promise<ChildProcess> {
  const fromSource = import.meta.url.endsWith('.ts');
  const cli = join(PACKAGE_ROOT, fromSource ? 'src/cli/main.ts' : 'dist/cli/main.js');
  // Its stdin is a pipe from here (--with-parent): it ends when this process does, even by SIGKILL.
  const child = spawn(process.execPath, [...(fromSource ? ['--import', 'tsx'] : []), cli, ...args, '--with-parent'], { stdio: ['pipe', 'ignore', 'pipe'], cwd: PACKAGE_ROOT });
  // Its words are kept for an error: the lines it says when all is well would clutter the output.
  let said = '';
  child.stderr!.on('data', (d: Buffer) => { said = (said + d.toString()).slice(-2000); });
  for (let i = 0; ; i++) {
    let ok = false;
    try {
      ok = await ready();
    } catch {
      // Not answering yet.
    }
    if (ok) break;
    if (child.exitCode !== null || i > 600) {
      child.kill('SIGKILL');
      throw new Error(`${what} did not start${said ? `: ${said.trim()}` : ''}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
  (child as ChildProcess & { said: () => string }).said = () => said;
  return child;
}

/** Ends a peer started above and waits for it. */
export function stopPeer(p: ChildProcess): Promise<void> {
  return new Promise<void>((resolve) => {
    if (p.exitCode !== null || p.signalCode !== null) { resolve(); return; }
    p.once('exit', () => resolve());
    p.kill('SIGTERM');
  });
}

/** Longest wait for a frontend's handshake (libxl's LIBXL_INIT_TIMEOUT). */
const CONNECT_TIMEOUT_MS = 10_000;

export class XenstoreDevices implements DeviceStore {
  /** Each domain's frontend connection, bound as the domain (its ring, on Xen). */
  private readonly fronts = new Map<number, XsClient>();
  private readonly vifs = new Map<number, number>();
  /** Told when a peer process ends while the mode is in use. */
  onPeerExit: (what: string, code: number | null, said: string) => void = () => {};
  private closing = false;

  private constructor(readonly socket: string, private readonly tool: XenstoreMode, private readonly peers: { p: ChildProcess; what: string }[]) {
    for (const { p, what } of peers) {
      p.once('exit', (code) => {
        if (!this.closing) this.onPeerExit(what, code, (p as ChildProcess & { said?: () => string }).said?.() ?? '');
      });
    }
  }

  /** Starts a store on `socket` and a backend on it, and connects as dom0's toolstack. */
  static async start(socket: string): Promise<XenstoreDevices> {
    if (existsSync(socket)) rmSync(socket);
    const peers: { p: ChildProcess; what: string }[] = [];
    let counters: XsClient | undefined;
    try {
      const xsd = await startLightvmPeer(['xenstored', '--socket', socket], () => existsSync(socket), 'lightvm xenstored');
      peers.push({ p: xsd, what: 'lightvm xenstored' });
      const c = counters = await XsClient.connect(socket);
      // The backend is ready once its watch on /local/domain/0/backend is in the store.
      const watches = async (): Promise<number> => ((await c.stats()) as { watches: number }).watches;
      const before = await watches();
      const be = await startLightvmPeer(['xenstore-backend', '--socket', socket], async () => (await watches()) > before, 'lightvm xenstore-backend');
      peers.push({ p: be, what: 'lightvm xenstore-backend' });
      const tool = await XenstoreMode.open(socket);
      return new XenstoreDevices(socket, tool, peers);
    } catch (err) {
      await Promise.all(peers.map(({ p }) => stopPeer(p)));
      throw err;
    } finally {
      counters?.close();
    }
  }

  async create(vm: { id: number; name: string; memoryMiB: number; image: string; cmdline: string; devices: readonly DeviceEntry[] }): Promise<XsCreatePhases & Record<string, number>> {
    const vifs = vm.devices.filter((d) => d.type === 'net').map((d) => ({ mac: (d.mac ?? '').toLowerCase(), bridge: d.bridge ?? '' }));
    const phases = await this.tool.create(vm.id, {
      name: vm.name, uuid: randomUUID(), memoryKiB: vm.memoryMiB * 1024, vcpus: 1, kernel: vm.image, cmdline: vm.cmdline, vifs,
    });
    this.vifs.set(vm.id, vifs.length);
    return { ...phases };
  }

  async connect(id: number): Promise<number> {
    const t0 = performance.now();
    const n = this.vifs.get(id) ?? 0;
    if (n > 0) {
      const front = await XsClient.connect(this.socket);
      this.fronts.set(id, front);
      await front.bind(id);
      // netfront's probe of each vif: the ring it would grant and the event channel it would bind (nominal numbers).
      await Promise.all(Array.from({ length: n }, (_v, devid) => frontConnect(front, `device/vif/${devid}`, 8 + devid, 3 + devid, CONNECT_TIMEOUT_MS)));
      await this.tool.waitConnected(id, CONNECT_TIMEOUT_MS);
    }
    return performance.now() - t0;
  }

  async remove(id: number): Promise<void> {
    if (!this.vifs.has(id)) return;
    this.vifs.delete(id);
    try {
      await this.tool.destroy(id);
    } finally {
      // The domain is gone: so is its ring.
      this.fronts.get(id)?.close();
      this.fronts.delete(id);
    }
  }

  /** Domains in the store now (dom0 not counted). */
  get domains(): number {
    return this.vifs.size;
  }

  /** Ends the toolstack's connection, the backend and the store (whose tree goes with it). */
  async close(): Promise<void> {
    this.closing = true;
    for (const f of this.fronts.values()) f.close();
    this.fronts.clear();
    this.tool.close();
    // The backend first: the store going away first would end it in error.
    for (const { p } of [...this.peers].reverse()) await stopPeer(p);
    if (existsSync(this.socket)) rmSync(this.socket, { force: true });
  }
}
