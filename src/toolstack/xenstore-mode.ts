// The `--devices xenstore` toolstack mode: what libxl does in the store when
// `xl create` makes a PV domain with a console and vifs, and when it destroys
// one, step for step (xen.git tools/libs/light). The point is the control
// path's cost: the VM's devices then work through the executor as in noxs.
//
// Kept, in libxl's order and transactions (each retried on EAGAIN):
//  1. libxl__domain_make: one transaction that removes and remakes
//     /local/domain/<id>, /vm/<uuid>, /libxl/<id> (mknod: write "" then
//     set_permissions; roperm n0,r<id>; rwperm n<id>; noperm n0), calls
//     libxl__domain_rename, whose uniqueness check (libxl_name_to_domid)
//     reads every domain's /local/domain/<d>/name outside the transaction:
//     the O(N) step, and writes name; then cpu, memory, device,
//     device/suspend/event-channel, control and its feature keys, data,
//     drivers, feature, attr, error, vm/uuid, vm/name, the two
//     platform-feature keys and /libxl/<id>/type.
//  2. libxl__build_post: one transaction of memory/static-max, target,
//     videoram, domid, store/port, store/ring-ref, cpu/<n>/availability and
//     the /vm entries libxl__domain_build writes for PV (image/ostype,
//     image/kernel, start_time, image/cmdline); then xs_introduce_domain.
//  3. libxl__device_console_add (console 0): libxl__device_generic_add in
//     its own transaction: the /libxl copy, frontend /local/domain/<id>/console
//     owned by dom0 and readable by the domain (console 0's exception),
//     backend /local/domain/0/backend/console/<id>/0; not waited on.
//  4. libxl__device_add_async for each vif: a transaction that checks the
//     device is not there (libxl__device_exists) and runs generic_add with
//     netback's keys (libxl__set_xenstore_nic); then
//     libxl__wait_device_connection: a watch on the backend's state until
//     InitWait; then the hotplug script (vif-bridge), whose only store
//     write is hotplug-status "connected" (the script's own work, tap and
//     bridge, is the executor's here, as in noxs).
//  Destroy (libxl__destroy_domid, libxl__devices_destroy): each vif's
//  online 0 and state Closing in a transaction, a watch until Closed, then
//  libxl__device_destroy (frontend, /libxl and backend paths removed with
//  their empty parents); the console's entries removed at once; then
//  /vm/<uuid>, /local/domain/<id>, /libxl/<id>; then the hypervisor's
//  domain destroy, which makes xenstored fire @releaseDomain: RELEASE here.
// Left out, and why: the domain-id "recent" check and the hypercalls
// (xc_domain_create, memory, vCPUs: the executor's KVM calls stand for
// them), the JSON user data (/var/lib/xen/userdata files: not the store),
// the domain-config lock file, xenconsoled's log files, stubdoms and QEMU
// (a PV guest without a device model), vkb/vfb/disks (the bench's guest has
// one vif), xs_set_features_domain and per-domain quotas (our store has no
// such calls), and the waits xl's own event loop adds around libxl.
import { XsClient, XsReplyError } from '../xenstore/client.js';
import { XenbusState } from '../xenstore/backend.js';
import { Watcher } from '../xenstore/watcher.js';
import { XsType, splitStrings, strings } from '../xenstore/wire.js';

export interface XsVif {
  mac: string;
  bridge: string;
}

export interface XsDomainConfig {
  name: string;
  uuid: string;
  memoryKiB: number;
  vcpus: number;
  kernel: string;
  cmdline: string;
  vifs: XsVif[];
}

/** Milliseconds spent in each libxl step of one create. */
export interface XsCreatePhases {
  name_check_ms: number;
  /** Names the check read (every listed domain's, dom0's included): N for the N-th domain. */
  name_reads: number;
  domain_make_ms: number;
  build_post_ms: number;
  console_ms: number;
  vifs_ms: number;
  /** Inside vifs_ms: from each vif's transaction to its backend's InitWait. */
  backend_wait_ms: number;
}

interface Domain {
  name: string;
  uuid: string;
  vifs: number;
}

const DOMID_MAX = 0x7fef;
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;
/** libxl's LIBXL_INIT_TIMEOUT and LIBXL_DESTROY_TIMEOUT are 10 s. */
const DEVICE_TIMEOUT_MS = 10_000;
const RETRIES = 100;

export class XenstoreMode {
  /** The hypervisor's domain list (libxl_list_domain): here, the domains this toolstack made, and dom0. */
  private readonly domains = new Map<number, Domain>();
  private readonly w: Watcher;

  private constructor(readonly xs: XsClient) {
    this.w = new Watcher(xs);
  }

  /** Connects as dom0 and names dom0 as xen-init-dom0 does, if no one has. */
  static async open(socket: string): Promise<XenstoreMode> {
    const xs = await XsClient.connect(socket);
    const mode = new XenstoreMode(xs);
    try {
      if ((await mode.readMaybe('/local/domain/0/name')) === undefined) {
        await xs.write('/local/domain/0/name', 'Domain-0');
        await xs.write('/local/domain/0/domid', '0');
      }
    } catch (err) {
      xs.close();
      throw err;
    }
    return mode;
  }

  close(): void {
    this.xs.close();
  }

  get watchEvents(): number {
    return this.w.events;
  }

  private async readMaybe(path: string, tx = 0): Promise<string | undefined> {
    try {
      return await this.xs.read(path, tx);
    } catch (e) {
      if (e instanceof XsReplyError && e.errno === 'ENOENT') return undefined;
      throw e;
    }
  }

  /** xs_rm inside a transaction, whose failure libxl does not check (the path may not be there). */
  private async rmQuiet(path: string, tx: number): Promise<void> {
    await this.xs.rm(path, tx).catch((e: unknown) => {
      if (!(e instanceof XsReplyError && e.errno === 'ENOENT')) throw e;
    });
  }

  private async mknod(path: string, perms: string[], tx: number): Promise<void> {
    await this.xs.write(path, '', tx);
    await this.xs.setPerms(path, perms, tx);
  }

  /** A transaction run until it commits without EAGAIN, as libxl's retry_transaction loops. */
  private async transaction(what: string, body: (tx: number) => Promise<void>): Promise<void> {
    for (let i = 0; i < RETRIES; i++) {
      const tx = await this.xs.transactionStart();
      try {
        await body(tx);
      } catch (err) {
        await this.xs.transactionEnd(tx, false).catch(() => {});
        throw err;
      }
      try {
        await this.xs.transactionEnd(tx, true);
        return;
      } catch (e) {
        if (!(e instanceof XsReplyError && e.errno === 'EAGAIN')) throw e;
      }
    }
    throw new Error(`${what}: the store kept answering EAGAIN (${RETRIES} tries)`);
  }

  /** libxl_name_to_domid: every listed domain's name, read one by one outside any transaction. */
  private async nameToDomid(name: string): Promise<{ holder: number | undefined; reads: number }> {
    let reads = 0;
    for (const domid of [0, ...this.domains.keys()]) {
      reads++;
      if ((await this.readMaybe(`/local/domain/${domid}/name`)) === name) return { holder: domid, reads };
    }
    return { holder: undefined, reads };
  }

  /** Steps 1-4 above: when it resolves the domain may be unpaused (its vifs' backends wait in InitWait). */
  async create(domid: number, cfg: XsDomainConfig): Promise<XsCreatePhases> {
    checkConfig(domid, cfg);
    if (this.domains.has(domid)) throw new Error(`xenstore mode: domain ${domid} exists already`);
    const dom = `/local/domain/${domid}`;
    const vm = `/vm/${cfg.uuid}`;
    const libxl = `/libxl/${domid}`;
    const ro = ['n0', `r${domid}`];
    const rw = [`n${domid}`];
    const no = ['n0'];
    const phases: XsCreatePhases = { name_check_ms: 0, name_reads: 0, domain_make_ms: 0, build_post_ms: 0, console_ms: 0, vifs_ms: 0, backend_wait_ms: 0 };
    let t0 = performance.now();
    await this.transaction(`domain ${domid} (${cfg.name}): libxl__domain_make`, async (tx) => {
      phases.name_check_ms = 0;
      await this.rmQuiet(dom, tx);
      await this.mknod(dom, ro, tx);
      await this.rmQuiet(vm, tx);
      await this.mknod(vm, ro, tx);
      await this.rmQuiet(libxl, tx);
      await this.mknod(libxl, no, tx);
      await this.mknod(`${libxl}/device`, no, tx);
      await this.xs.write(`${dom}/vm`, vm, tx);
      // libxl__domain_rename(old_name NULL): the uniqueness check, then the name in both places.
      const c0 = performance.now();
      const { holder, reads } = await this.nameToDomid(cfg.name);
      phases.name_check_ms += performance.now() - c0;
      phases.name_reads = reads;
      if (holder !== undefined && holder !== domid) throw new Error(`xenstore mode: domain with name "${cfg.name}" already exists (domain ${holder})`);
      await this.xs.write(`${dom}/name`, cfg.name, tx);
      await this.xs.write(`${vm}/name`, cfg.name, tx);
      await this.mknod(`${dom}/cpu`, ro, tx);
      await this.mknod(`${dom}/memory`, ro, tx);
      await this.mknod(`${dom}/device`, ro, tx);
      await this.mknod(`${dom}/device/suspend/event-channel`, rw, tx);
      await this.mknod(`${dom}/control`, ro, tx);
      for (const k of ['shutdown', 'feature-poweroff', 'feature-reboot', 'feature-suspend', 'sysrq']) await this.mknod(`${dom}/control/${k}`, rw, tx);
      for (const k of ['data', 'drivers', 'feature', 'attr', 'error']) await this.mknod(`${dom}/${k}`, rw, tx);
      await this.xs.write(`${vm}/uuid`, cfg.uuid, tx);
      await this.xs.write(`${vm}/name`, cfg.name, tx);
      await this.xs.write(`${dom}/control/platform-feature-multiprocessor-suspend`, '1', tx);
      await this.xs.write(`${dom}/control/platform-feature-xs_reset_watches`, '1', tx);
      await this.xs.write(`${libxl}/type`, 'pv', tx);
    });
    phases.domain_make_ms = performance.now() - t0;
    this.domains.set(domid, { name: cfg.name, uuid: cfg.uuid, vifs: cfg.vifs.length });
    try {
      t0 = performance.now();
      await this.buildPost(domid, cfg);
      phases.build_post_ms = performance.now() - t0;
      t0 = performance.now();
      await this.consoleAdd(domid);
      phases.console_ms = performance.now() - t0;
      t0 = performance.now();
      // libxl adds a domain's nics together (libxl__multidev) and waits for all.
      const waits = await Promise.all(cfg.vifs.map((vif, devid) => this.vifAdd(domid, devid, vif)));
      phases.vifs_ms = performance.now() - t0;
      phases.backend_wait_ms = Math.max(0, ...waits);
    } catch (err) {
      await this.destroy(domid).catch(() => {});
      throw err;
    }
    return phases;
  }

  private async buildPost(domid: number, cfg: XsDomainConfig): Promise<void> {
    const dom = `/local/domain/${domid}`;
    const vm = await this.xs.read(`${dom}/vm`);
    // Ring frame and event channel: what xc_dom_build would have allocated; here, nominal numbers.
    const ents: [string, string][] = [
      ['memory/static-max', String(cfg.memoryKiB)], ['memory/target', String(cfg.memoryKiB)], ['memory/videoram', '0'],
      ['domid', String(domid)], ['store/port', '1'], ['store/ring-ref', '0'],
      ...Array.from({ length: cfg.vcpus }, (_v, i): [string, string] => [`cpu/${i}/availability`, 'online']),
    ];
    const start = Date.now() / 1000;
    const vments: [string, string][] = [
      ['image/ostype', 'linux'], ['image/kernel', cfg.kernel], ['start_time', start.toFixed(2)], ['image/cmdline', cfg.cmdline],
    ];
    await this.transaction(`domain ${domid}: libxl__build_post`, async (tx) => {
      for (const [k, v] of ents) await this.xs.write(`${dom}/${k}`, v, tx);
      for (const [k, v] of vments) await this.xs.write(`${vm}/${k}`, v, tx);
    });
    await this.xs.introduce(domid, 0, 1);
  }

  /**
   * libxl__device_generic_add: the /libxl copy, the frontend (owned by the
   * domain and readable by the backend, or for console 0 the reverse) and
   * the backend (dom0's, readable by the domain).
   */
  private async genericAdd(tx: number, domid: number, kind: 'vif' | 'console', devid: number,
    bents: [string, string][], fents: [string, string][], roFents: [string, string][]): Promise<void> {
    const front = kind === 'console' ? `/local/domain/${domid}/console` : `/local/domain/${domid}/device/${kind}/${devid}`;
    const back = `/local/domain/0/backend/${kind}/${domid}/${devid}`;
    const libxl = `/libxl/${domid}/device/${kind}/${devid}`;
    const frontPerms = [`n${domid}`, 'r0'];
    const roFrontPerms = ['n0', `r${domid}`];
    const backPerms = ['n0', `r${domid}`];
    await this.rmQuiet(libxl, tx);
    await this.xs.write(`${libxl}/frontend`, front, tx);
    await this.xs.write(`${libxl}/backend`, back, tx);
    await this.rmQuiet(front, tx);
    await this.xs.mkdir(front, tx);
    await this.xs.setPerms(front, kind === 'console' ? roFrontPerms : frontPerms, tx);
    await this.xs.write(`${front}/backend`, back, tx);
    // libxl__xs_writev_perms: each key written, then given the set's permissions.
    for (const [k, v] of fents) { await this.xs.write(`${front}/${k}`, v, tx); await this.xs.setPerms(`${front}/${k}`, frontPerms, tx); }
    for (const [k, v] of roFents) { await this.xs.write(`${front}/${k}`, v, tx); await this.xs.setPerms(`${front}/${k}`, roFrontPerms, tx); }
    await this.rmQuiet(back, tx);
    await this.xs.mkdir(back, tx);
    await this.xs.setPerms(back, backPerms, tx);
    await this.xs.write(`${back}/frontend`, front, tx);
    for (const [k, v] of bents) await this.xs.write(`${back}/${k}`, v, tx);
    for (const [k, v] of bents) await this.xs.write(`${libxl}/${k}`, v, tx);
  }

  /** libxl__device_console_add for console 0 of a PV domain (with its build state: port and ring-ref). */
  private async consoleAdd(domid: number): Promise<void> {
    const back: [string, string][] = [
      ['frontend-id', String(domid)], ['online', '1'], ['state', String(XenbusState.Initialising)], ['protocol', 'vt100'],
    ];
    const front: [string, string][] = [['backend-id', '0']];
    const roFront: [string, string][] = [
      ['limit', '1048576'], ['type', 'xenconsoled'], ['output', 'pty'], ['tty', ''], ['port', '2'], ['ring-ref', '0'],
    ];
    await this.transaction(`domain ${domid}: console`, (tx) => this.genericAdd(tx, domid, 'console', 0, back, front, roFront));
  }

  /** libxl__device_add_async with libxl__set_xenstore_nic, then libxl__wait_device_connection and the hotplug script. Resolves with the wait's milliseconds. */
  private async vifAdd(domid: number, devid: number, vif: XsVif): Promise<number> {
    const back: [string, string][] = [
      ['frontend-id', String(domid)], ['online', '1'], ['state', String(XenbusState.Initialising)],
      ['script', '/etc/xen/scripts/vif-bridge'], ['mac', vif.mac], ['bridge', vif.bridge], ['handle', String(devid)],
      ['type', 'vif'], ['hotplug-status', ''],
    ];
    const front: [string, string][] = [
      ['backend-id', '0'], ['state', String(XenbusState.Initialising)], ['handle', String(devid)], ['mac', vif.mac], ['trusted', '1'],
    ];
    const roFront: [string, string][] = [['mtu', '1500']];
    const backPath = `/local/domain/0/backend/vif/${domid}/${devid}`;
    await this.transaction(`domain ${domid}: vif ${devid}`, async (tx) => {
      // libxl__device_exists: the backend's directory, read in the transaction.
      if ((await this.readMaybe(backPath, tx)) !== undefined) throw new Error(`xenstore mode: domain ${domid}: vif ${devid} already exists in the store`);
      await this.genericAdd(tx, domid, 'vif', devid, back, front, roFront);
    });
    const t0 = performance.now();
    await this.w.until(`${backPath}/state`, (s) => Number(s) === XenbusState.InitWait, DEVICE_TIMEOUT_MS, `domain ${domid}: vif ${devid}'s backend to reach InitWait`);
    const waited = performance.now() - t0;
    // vif-bridge's `xenstore-write "$XENBUS_PATH/hotplug-status" connected` (the script's success_).
    await this.xs.write(`${backPath}/hotplug-status`, 'connected');
    return waited;
  }

  /** Until each vif's backend and frontend are Connected: the guest's handshake, seen from dom0. */
  async waitConnected(domid: number, timeoutMs = DEVICE_TIMEOUT_MS): Promise<void> {
    const d = this.domains.get(domid);
    if (!d) throw new Error(`xenstore mode: no domain ${domid}`);
    await Promise.all(Array.from({ length: d.vifs }, async (_v, devid) => {
      const connected = (s: string | undefined): boolean => Number(s) === XenbusState.Connected;
      await this.w.until(`/local/domain/${domid}/device/vif/${devid}/state`, connected, timeoutMs, `domain ${domid}: vif ${devid}'s frontend to be Connected`);
      await this.w.until(`/local/domain/0/backend/vif/${domid}/${devid}/state`, connected, timeoutMs, `domain ${domid}: vif ${devid}'s backend to be Connected`);
    }));
  }

  /** libxl__destroy_domid's store part; the domain's entries are gone when it resolves. */
  async destroy(domid: number): Promise<void> {
    const d = this.domains.get(domid);
    if (!d) throw new Error(`xenstore mode: no domain ${domid}`);
    const errors: unknown[] = [];
    await Promise.all(Array.from({ length: d.vifs }, (_v, devid) => this.vifRemove(domid, devid).catch((e: unknown) => { errors.push(e); })));
    await this.deviceDestroy(domid, 'console', 0);
    const vm = await this.readMaybe(`/local/domain/${domid}/vm`);
    if (vm) await this.xs.rm(vm);
    await this.xs.rm(`/local/domain/${domid}`);
    await this.xs.rm(`/libxl/${domid}`).catch(() => {});
    this.domains.delete(domid);
    if (await this.isIntroduced(domid)) await this.xs.release(domid);
    if (errors.length) throw errors[0] as Error;
  }

  private async isIntroduced(domid: number): Promise<boolean> {
    const r = await this.xs.request(XsType.IS_DOMAIN_INTRODUCED, strings(String(domid)));
    return splitStrings(r.payload)[0] === 'T';
  }

  /** libxl__initiate_device_generic_remove: online 0 and Closing, a wait for Closed, then libxl__device_destroy. */
  private async vifRemove(domid: number, devid: number): Promise<void> {
    const back = `/local/domain/0/backend/vif/${domid}/${devid}`;
    let present = true;
    await this.transaction(`domain ${domid}: vif ${devid} removal`, async (tx) => {
      const state = await this.readMaybe(`${back}/state`, tx);
      present = state !== undefined;
      if (!present) return;
      await this.xs.write(`${back}/online`, '0', tx);
      if (Number(state) !== XenbusState.Closed) await this.xs.write(`${back}/state`, String(XenbusState.Closing), tx);
    });
    try {
      if (present) await this.w.until(`${back}/state`, (s) => Number(s) === XenbusState.Closed, DEVICE_TIMEOUT_MS, `domain ${domid}: vif ${devid}'s backend to close`);
    } finally {
      await this.deviceDestroy(domid, 'vif', devid);
    }
  }

  /** libxl__device_destroy: frontend, /libxl and backend paths removed, each with its parents left empty (libxl__xs_path_cleanup). */
  private async deviceDestroy(domid: number, kind: 'vif' | 'console', devid: number): Promise<void> {
    const front = kind === 'console' ? `/local/domain/${domid}/console` : `/local/domain/${domid}/device/${kind}/${devid}`;
    await this.transaction(`domain ${domid}: ${kind} ${devid} destroy`, async (tx) => {
      await this.pathCleanup(front, tx);
      await this.pathCleanup(`/libxl/${domid}/device/${kind}/${devid}`, tx);
      await this.pathCleanup(`/local/domain/0/backend/${kind}/${domid}/${devid}`, tx);
    });
  }

  /** libxl__xs_path_cleanup: rm the path, then each parent while it is empty. */
  private async pathCleanup(path: string, tx: number): Promise<void> {
    await this.rmQuiet(path, tx);
    for (let p = path.slice(0, path.lastIndexOf('/')); p.split('/').length > 2; p = p.slice(0, p.lastIndexOf('/'))) {
      let children: string[];
      try {
        children = await this.xs.directory(p, tx);
      } catch (e) {
        if (e instanceof XsReplyError && e.errno === 'ENOENT') continue;
        throw e;
      }
      if (children.length > 0) break;
      await this.rmQuiet(p, tx);
    }
  }
}

function checkConfig(domid: number, cfg: XsDomainConfig): void {
  const where = `xenstore mode: domain ${domid}`;
  if (!Number.isInteger(domid) || domid < 1 || domid > DOMID_MAX) throw new Error(`xenstore mode: domain id ${domid} is not between 1 and ${DOMID_MAX}`);
  if (!/^[A-Za-z0-9_.-]{1,64}$/.test(cfg.name)) throw new Error(`${where}: name ${JSON.stringify(cfg.name.slice(0, 80))} is not 1-64 of A-Z a-z 0-9 _ . -`);
  if (!UUID.test(cfg.uuid)) throw new Error(`${where}: uuid ${JSON.stringify(cfg.uuid.slice(0, 80))} is not a lower-case UUID`);
  if (!Number.isInteger(cfg.memoryKiB) || cfg.memoryKiB < 1) throw new Error(`${where}: memoryKiB must be a positive integer`);
  if (!Number.isInteger(cfg.vcpus) || cfg.vcpus < 1 || cfg.vcpus > 128) throw new Error(`${where}: vcpus must be 1-128`);
  if (cfg.vifs.length > 16) throw new Error(`${where}: at most 16 vifs (it has ${cfg.vifs.length})`);
  cfg.vifs.forEach((v, i) => {
    if (!/^([0-9a-f]{2}:){5}[0-9a-f]{2}$/.test(v.mac)) throw new Error(`${where}: vif ${i}: mac ${JSON.stringify(v.mac.slice(0, 40))} is not xx:xx:xx:xx:xx:xx`);
    if (!/^[A-Za-z0-9_.-]{1,15}$/.test(v.bridge)) throw new Error(`${where}: vif ${i}: bridge ${JSON.stringify(v.bridge.slice(0, 40))} is not an interface name`);
  });
  for (const [k, v] of [['kernel', cfg.kernel], ['cmdline', cfg.cmdline]] as const) {
    if (v.length > 1024) throw new Error(`${where}: ${k} longer than 1024 characters`);
  }
}
