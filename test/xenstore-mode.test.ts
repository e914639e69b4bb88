// The xenstore toolstack mode's control path with no VM: libxl's create and
// destroy steps (src/toolstack/xenstore-mode.ts) for many domains against
// a real store on a unix socket and our dom0 backend, each domain's
// frontend walked to Connected on a connection bound as that domain (with
// its permissions, as its ring would be). What it leaves is read back with
// Debian's xenstore-ls, a client nobody here wrote.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { XenstoreMode, type XsDomainConfig } from '../src/toolstack/xenstore-mode.js';
import { XsBackend } from '../src/xenstore/backend.js';
import { XsClient, XsReplyError } from '../src/xenstore/client.js';
import { frontConnect } from '../src/xenstore/frontend.js';
import { startXenstored, type Xenstored } from '../src/xenstore/server.js';
import { walkPaths } from '../src/xenstore/tree.js';
import { tempDir, waitFor, within } from './helpers.js';

const run = promisify(execFile);
const haveUtils = spawnSync('sh', ['-c', 'command -v xenstore-ls']).status === 0;
const DOMAINS = 40;

const config = (i: number): XsDomainConfig => ({
  name: `daytime-${i}`,
  uuid: `00000000-0000-4000-8000-${i.toString(16).padStart(12, '0')}`,
  memoryKiB: 4096, vcpus: 1, kernel: 'daytime.elf', cmdline: 'ip=10.0.0.2',
  vifs: [{ mac: `00:16:3e:00:${(i >> 8).toString(16).padStart(2, '0')}:${(i & 0xff).toString(16).padStart(2, '0')}`, bridge: 'xenbr0' }],
});

/** Every node of the live tree: path, value and permissions (what xenstore-ls -p prints). */
function snapshot(xsd: Xenstored): string[] {
  return [...walkPaths(xsd.store.root, '/')].map(([p, n]) => `${p}=${n.value.toString()} ${n.perms.map((x) => `${x.access}${x.domid}`).join(',')}`);
}

/** xenstore-ls -p output as path -> "value (perms)". */
function parseLs(out: string, root: string): Map<string, string> {
  const m = new Map<string, string>();
  const stack: string[] = [];
  for (const line of out.split('\n')) {
    const r = /^( *)(\S+) = "(.*?)"[ .]*\((.*)\)$/.exec(line);
    if (!r) continue;
    stack.length = r[1]!.length;
    stack.push(r[2]!);
    m.set(`${root}/${stack.join('/')}`, `"${r[3]}" (${r[4]})`);
  }
  return m;
}

void describe('xenstore mode: libxl\'s store steps for many domains, no VM', () => {
  const { dir, cleanup } = tempDir('xsmode');
  const socket = join(dir, 'xenstored.sock');
  let xsd: Xenstored;
  let backend: XsBackend;
  let tool: XenstoreMode;
  let observer: XsClient;
  const released: string[] = [];
  const guests: XsClient[] = [];
  let baseline: string[] = [];

  before(async () => {
    xsd = await startXenstored({ socket });
    backend = await XsBackend.start(socket);
    tool = await XenstoreMode.open(socket);
    observer = await XsClient.connect(socket);
    observer.onEvent = (path) => { if (path === '@releaseDomain') released.push(path); };
    await observer.watch('@releaseDomain', 'rel');
    await waitFor('the initial @releaseDomain event', () => released.length === 1, 5000);
    baseline = snapshot(xsd);
  });
  after(async () => {
    try {
      for (const g of guests) g.close();
      observer.close();
      tool.close();
      backend.close();
    } finally {
      await xsd.close();
      cleanup();
    }
  });

  /** What the guest does once unpaused: its frontend, as itself. */
  async function guestConnects(domid: number): Promise<void> {
    const g = await XsClient.connect(socket);
    guests.push(g);
    await g.bind(domid);
    const seen = await within(frontConnect(g, 'device/vif/0', 8, 3, 10_000), 15_000, `domain ${domid}'s frontend`);
    assert.deepEqual(seen.backendStates, [2, 4]);
  }

  void it(`creates ${DOMAINS} domains; each one's devices reach Connected on both ends`, async () => {
    for (let d = 1; d <= DOMAINS; d++) {
      await within(tool.create(d, config(d)), 15_000, `create ${d}`);
      assert.equal(await observer.read(`/local/domain/0/backend/vif/${d}/0/state`), '2', 'created: the backend waits in InitWait');
      await guestConnects(d);
      await within(tool.waitConnected(d), 15_000, `domain ${d} connected`);
    }
    assert.equal(backend.failure, undefined);
    assert.deepEqual(backend.stats().connected, DOMAINS);
    assert.equal(xsd.store.domains.size, DOMAINS);
  });

  void it('leaves the tree and permissions libxl leaves, as xenstore-ls -p shows them', { skip: haveUtils ? false : 'xenstore-utils not installed (scripts/install-peers.sh)' }, async () => {
    const d = 7;
    const env = { ...process.env, XENSTORED_PATH: socket };
    const local = parseLs((await run('xenstore-ls', ['-p', `/local/domain/${d}`], { env, timeout: 20_000 })).stdout, `/local/domain/${d}`);
    const back = parseLs((await run('xenstore-ls', ['-p', `/local/domain/0/backend/vif/${d}`], { env, timeout: 20_000 })).stdout, `/local/domain/0/backend/vif/${d}`);
    const vm = parseLs((await run('xenstore-ls', ['-p', `/vm/${config(d).uuid}`], { env, timeout: 20_000 })).stdout, `/vm/${config(d).uuid}`);
    const h = `/local/domain/${d}`;
    const want: [Map<string, string>, string, string][] = [
      // libxl__domain_make: roperm (n0,r<id>) for the domain's own directories, rwperm (n<id>) for what the guest writes.
      [local, `${h}/name`, `"daytime-${d}" (n0,r${d})`],
      [local, `${h}/vm`, `"/vm/${config(d).uuid}" (n0,r${d})`],
      [local, `${h}/control`, `"" (n0,r${d})`],
      [local, `${h}/control/shutdown`, `"" (n${d})`],
      [local, `${h}/control/platform-feature-xs_reset_watches`, `"1" (n0,r${d})`],
      [local, `${h}/data`, `"" (n${d})`],
      [local, `${h}/device/suspend/event-channel`, `"" (n${d})`],
      [local, `${h}/memory/target`, `"4096" (n0,r${d})`],
      [local, `${h}/store/ring-ref`, `"0" (n0,r${d})`],
      // libxl__device_generic_add: a vif's frontend is the guest's, readable by the backend's domain...
      [local, `${h}/device/vif/0`, `"" (n${d},r0)`],
      [local, `${h}/device/vif/0/backend`, `"/local/domain/0/backend/vif/${d}/0" (n${d},r0)`],
      [local, `${h}/device/vif/0/mac`, `"${config(d).vifs[0]!.mac}" (n${d},r0)`],
      [local, `${h}/device/vif/0/mtu`, `"1500" (n0,r${d})`],
      [local, `${h}/device/vif/0/state`, `"4" (n${d},r0)`],
      [local, `${h}/device/vif/0/ring-ref`, `"8" (n${d},r0)`],
      // ...console 0's is dom0's, readable by the guest.
      [local, `${h}/console`, `"" (n0,r${d})`],
      [local, `${h}/console/type`, `"xenconsoled" (n0,r${d})`],
      // The backend is dom0's, readable by the guest.
      [back, `/local/domain/0/backend/vif/${d}/0`, `"" (n0,r${d})`],
      [back, `/local/domain/0/backend/vif/${d}/0/frontend`, `"${h}/device/vif/0" (n0,r${d})`],
      [back, `/local/domain/0/backend/vif/${d}/0/state`, `"4" (n0,r${d})`],
      [back, `/local/domain/0/backend/vif/${d}/0/hotplug-status`, `"connected" (n0,r${d})`],
      [vm, `/vm/${config(d).uuid}/name`, `"daytime-${d}" (n0,r${d})`],
      [vm, `/vm/${config(d).uuid}/image/ostype`, `"linux" (n0,r${d})`],
    ];
    for (const [map, path, line] of want) assert.equal(map.get(path), line, path);
  });

  void it('a guest may write its frontend but not its backend, and cannot see another domain', async () => {
    const g = await XsClient.connect(socket);
    guests.push(g);
    await g.bind(3);
    const refused = (e: unknown): boolean => e instanceof XsReplyError && e.errno === 'EACCES';
    await assert.rejects(g.write('/local/domain/0/backend/vif/3/0/state', '4'), refused);
    await assert.rejects(g.write('name', 'other'), refused);
    await assert.rejects(g.read('/local/domain/4/name'), refused);
    await assert.rejects(g.read('/local/domain/0/backend/vif/4/0/state'), refused);
    assert.equal(await g.read('/local/domain/0/backend/vif/3/0/state'), '4');
    await g.write('data/x', 'y');
    await g.write('control/shutdown', 'poweroff');
  });

  void it('refuses a name another domain has, naming it, and leaves the store as it was', async () => {
    const before = snapshot(xsd);
    await assert.rejects(tool.create(DOMAINS + 1, { ...config(5), uuid: config(DOMAINS + 1).uuid }),
      /^Error: xenstore mode: domain with name "daytime-5" already exists \(domain 5\)$/);
    assert.deepEqual(snapshot(xsd), before);
    assert.equal(xsd.store.domains.has(DOMAINS + 1), false);
  });

  void it('destroy removes every domain\'s entries and fires @releaseDomain for each', async () => {
    for (let d = 1; d <= DOMAINS; d++) await within(tool.destroy(d), 15_000, `destroy ${d}`);
    await waitFor('a @releaseDomain per domain', () => released.length === 1 + DOMAINS, 10_000);
    await waitFor('the backend to forget every device', () => backend.stats().devices === 0, 10_000);
    assert.equal(backend.failure, undefined);
    assert.equal(xsd.store.domains.size, 0);
    // What creates add and destroys do not remove is /libxl itself (xen-init-dom0 makes it on a Xen host).
    assert.deepEqual(snapshot(xsd).filter((l) => !l.startsWith('/libxl=')), baseline);
    assert.equal(xsd.store.stats().watches, 2, 'the backend\'s and the observer\'s watches only');
  });
});
