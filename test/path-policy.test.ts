// Issue 10 F18: the daemon runs as root, so the files an API request names
// (images, disks, snapshot files) must lie under the directories it is
// configured with: its runtime directory, the built-in images and each
// --allow-path. A path outside, or a symlink inside that leads out, is
// refused with 403 path-not-allowed naming the field, the path and the
// allowed directories, before anything is read or written.
import assert from 'node:assert/strict';
import { copyFileSync, existsSync, mkdirSync, readdirSync, realpathSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PathPolicy, PathRefusedError } from '../src/toolstack/path-policy.js';
import type { DeviceEntry } from '../src/vmm/device-page.js';
import { encodeSnapshot } from '../src/vmm/snapshot.js';
import { ok, request, settle, startTestDaemon, type ApiErrorBody, type HostInfo, type TestDaemon, type VmView } from './daemon-helpers.js';
import { GUEST_BUILD, guestImage, tempDir } from './helpers.js';

/** Runs f, which must throw PathRefusedError; returns it. */
function refusal(f: () => unknown): PathRefusedError {
  try {
    f();
  } catch (err) {
    assert.ok(err instanceof PathRefusedError, String(err));
    return err;
  }
  assert.fail('not refused');
}

void describe('PathPolicy (F18)', () => {
  const root = tempDir('pp-root');
  const out = tempDir('pp-out');
  // A sibling whose name starts with the root's: not inside it.
  const sibling = `${root.dir}x`;
  let policy: PathPolicy;
  before(() => {
    mkdirSync(join(root.dir, 'sub'));
    writeFileSync(join(root.dir, 'a.elf'), 'a');
    writeFileSync(join(root.dir, '..x'), 'dots');
    writeFileSync(join(out.dir, 'secret'), 's');
    symlinkSync(join(root.dir, 'a.elf'), join(root.dir, 'in-link'));
    symlinkSync(join(out.dir, 'secret'), join(root.dir, 'out-link'));
    symlinkSync(out.dir, join(root.dir, 'out-dir'));
    mkdirSync(sibling);
    writeFileSync(join(sibling, 'b'), 'b');
    policy = new PathPolicy([{ dir: root.dir, what: '--allow-path' }]);
  });
  after(() => {
    root.cleanup();
    out.cleanup();
    rmSync(sibling, { recursive: true, force: true });
  });

  void it('allows a file under a root, or the root itself, and gives its real path', () => {
    assert.equal(policy.check(join(root.dir, 'a.elf'), 'image'), join(root.dir, 'a.elf'));
    assert.equal(policy.check(root.dir, 'file'), root.dir);
    assert.equal(policy.check(join(root.dir, 'sub', '..', 'a.elf'), 'image'), join(root.dir, 'a.elf'));
    // A name that starts with two dots is still inside.
    assert.equal(policy.check(join(root.dir, '..x'), 'image'), join(root.dir, '..x'));
  });

  void it('refuses a path outside, naming the field, the path and the roots', () => {
    for (const path of ['/etc/passwd', '/etc/no-such-file', join(sibling, 'b'), `${root.dir}/../${root.dir.split('/').at(-1)}x/b`]) {
      const e = refusal(() => policy.check(path, 'devices.2.path'));
      assert.equal(e.field, 'devices.2.path');
      assert.equal(e.message, `devices.2.path: ${path} is outside the directories this daemon may use (${root.dir}): start it with --allow-path DIR to add one`);
    }
  });

  void it('a symlink inside a root is judged by where it leads, which the refusal does not say', () => {
    assert.equal(policy.check(join(root.dir, 'in-link'), 'image'), join(root.dir, 'a.elf'));
    for (const path of [join(root.dir, 'out-link'), join(root.dir, 'out-dir', 'secret'), join(root.dir, 'out-dir', 'new.snap')]) {
      const e = refusal(() => policy.check(path, 'file'));
      assert.match(e.message, /^file: .* leads \(through a symlink\) outside the directories this daemon may use/);
      assert.ok(!e.message.includes(out.dir), e.message);
    }
  });

  void it('a file not there yet (a save target) is judged by its nearest existing directory', () => {
    assert.equal(policy.check(join(root.dir, 'sub', 'new.snap'), 'file'), join(root.dir, 'sub', 'new.snap'));
    assert.equal(policy.check(join(root.dir, 'no', 'such', 'dir.snap'), 'file'), join(root.dir, 'no', 'such', 'dir.snap'));
    // ".." after a missing directory goes up from where it is, not out of view.
    refusal(() => policy.check(join(root.dir, 'missing', '..', '..', 'elsewhere.snap'), 'file'));
  });

  void it('roots: resolved once, a missing optional one skipped, a missing or non-directory one refused', () => {
    const p = new PathPolicy([
      { dir: join(root.dir, 'out-dir'), what: '--allow-path' },
      { dir: out.dir, what: '--allow-path' },
      { dir: join(root.dir, 'none'), what: 'built-in images', optional: true },
    ]);
    assert.deepEqual(p.roots, [out.dir]);
    assert.throws(() => new PathPolicy([{ dir: join(root.dir, 'none'), what: '--allow-path' }]),
      { message: `--allow-path ${join(root.dir, 'none')}: no such directory` });
    assert.throws(() => new PathPolicy([{ dir: join(root.dir, 'a.elf'), what: '--allow-path' }]),
      { message: `--allow-path ${join(root.dir, 'a.elf')}: not a directory` });
  });

  void it('checkDevices: each disk by its real path, other devices as they were, a refusal naming devices.N.path', () => {
    const net: DeviceEntry = { type: 'net', id: 0, mac: '02:00:00:00:00:01' };
    const devices: DeviceEntry[] = [net, { type: 'block', id: 1, path: join(root.dir, 'in-link') }];
    assert.deepEqual(policy.checkDevices(devices), [net, { type: 'block', id: 1, path: join(root.dir, 'a.elf') }]);
    assert.equal(devices[1]!.path, join(root.dir, 'in-link'), 'the request is not changed');
    const e = refusal(() => policy.checkDevices([net, net, { type: 'block', id: 2, path: '/dev/sda' }], 'a.snap: its disk '));
    assert.equal(e.field, 'devices.2.path');
    assert.match(e.message, /^devices\.2\.path: a\.snap: its disk \/dev\/sda is outside/);
  });
});

/** A whole snapshot file of a 4 MiB VM that never ran: its header names `image` and `devices`. */
function snapshotFile(image: string, devices: DeviceEntry[] = []): Buffer {
  return encodeSnapshot({
    header: {
      vm: { id: 7, name: 'crafted', memory: 4 << 20, cmdline: '', devices },
      image: { path: image, sha256: null }, msrs: [], parked: null, paused: false, savedAt: new Date(0).toISOString(), kernel: 'crafted',
    },
    vcpu: { regs: new Uint8Array(144), sregs: new Uint8Array(312), xsave: new Uint8Array(4096), events: new Uint8Array(64), msrs: [] },
    devicePage: new Uint8Array(4096), memory: new Uint8Array(4 << 20), pages: [], console: new Uint8Array(0),
  });
}

// Whether a VM can boot here: the refusals below come before any VM is
// built and are checked anywhere; what an allowed path then does needs KVM.
const KVM = existsSync('/dev/kvm');

void describe('a daemon keeps to its directories (F18)', () => {
  let d: TestDaemon;
  const extra = tempDir('pp-extra');
  const outside = tempDir('pp-outside');
  let roots: string[];
  before(async () => {
    // confined: none of the tests' usual --allow-path (the temporary directory, the repo).
    d = await startTestDaemon({ confined: true, args: ['--pool', '4:0', '--allow-path', extra.dir], prefix: 'pp' });
    roots = [realpathSync(d.runtimeDir), realpathSync(GUEST_BUILD), realpathSync(extra.dir)];
    for (const dir of [extra.dir, outside.dir]) {
      copyFileSync(guestImage('hello'), join(dir, 'hello.elf'));
      writeFileSync(join(dir, 'disk.img'), Buffer.alloc(4096));
      writeFileSync(join(dir, 'small.img'), Buffer.alloc(100));
    }
    // Symlinks in the runtime directory: to a file outside, to a directory outside, to a disk inside.
    symlinkSync(join(outside.dir, 'hello.elf'), join(d.runtimeDir, 'hello-link.elf'));
    symlinkSync(outside.dir, join(d.runtimeDir, 'out'));
    symlinkSync(join(extra.dir, 'small.img'), join(d.runtimeDir, 'small-link.img'));
  });
  after(async () => {
    await d.stop();
    extra.cleanup();
    outside.cleanup();
  });

  /** A 403 path-not-allowed naming `field`, `path` and every root, and never where a symlink leads. */
  const assertRefused = (r: { status: number; text: string; json: unknown }, field: string, path: string): string => {
    assert.equal(r.status, 403, r.text);
    const e = (r.json as ApiErrorBody).error;
    assert.equal(e.code, 'path-not-allowed');
    assert.equal(e.field, field);
    assert.ok(e.message.includes(path), e.message);
    assert.ok(e.message.includes(`(${roots.join(', ')})`), e.message);
    assert.ok(path.startsWith(outside.dir) || !e.message.includes(outside.dir), `says where a symlink leads: ${e.message}`);
    return e.message;
  };
  const outsideFiles = (): string[] => readdirSync(outside.dir).sort();

  void it('GET /v1/host lists the directories it allows', async () => {
    const h = await ok<HostInfo & { allowed_paths: string[]; runtime_dir: string }>(d.socket, 'GET', '/v1/host');
    assert.deepEqual(h.allowed_paths, roots);
    assert.equal(h.runtime_dir, d.runtimeDir);
  });

  void it('create: an image or disk outside is refused, whether the file exists or not', async () => {
    for (const image of [join(outside.dir, 'hello.elf'), join(outside.dir, 'none.elf'), '/etc/passwd']) {
      assertRefused(await request(d.socket, 'POST', '/v1/vms', { body: { image } }), 'image', image);
    }
    for (const disk of [join(outside.dir, 'disk.img'), '/etc/shadow']) {
      const devices = [{ type: 'block', id: 0, path: join(extra.dir, 'disk.img') }, { type: 'block', id: 1, path: disk }];
      assertRefused(await request(d.socket, 'POST', '/v1/vms', { body: { image: 'hello', devices } }), 'devices.1.path', disk);
    }
    // Inside (through a symlink that stays inside): past the policy, to the disk checks.
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: 'hello', devices: [{ type: 'block', id: 0, path: join(d.runtimeDir, 'small-link.img') }] } });
    assert.equal(r.status, 422, r.text);
    assert.equal((r.json as ApiErrorBody).error.field, 'devices.0.path');
    assert.match((r.json as ApiErrorBody).error.message, /small\.img holds 100 bytes, less than one 512-byte sector/);
  });

  void it('a symlink in an allowed directory that leads out is refused (create, restore)', async () => {
    const link = join(d.runtimeDir, 'hello-link.elf');
    assert.match(assertRefused(await request(d.socket, 'POST', '/v1/vms', { body: { image: link } }), 'image', link), /leads \(through a symlink\) outside/);
    writeFileSync(join(outside.dir, 'a.snap'), snapshotFile(guestImage('hello')));
    const file = join(d.runtimeDir, 'out', 'a.snap');
    assert.match(assertRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file } }), 'file', file), /leads \(through a symlink\) outside/);
  });

  void it('restore: a file outside is refused, and so is a file inside whose snapshot names an image or disk outside', async () => {
    const out = join(outside.dir, 'a.snap');
    writeFileSync(out, snapshotFile(guestImage('hello')));
    assertRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file: out } }), 'file', out);
    assertRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file: '/etc/passwd' } }), 'file', '/etc/passwd');

    const image = join(outside.dir, 'hello.elf');
    const named = join(d.runtimeDir, 'names-image.snap');
    writeFileSync(named, snapshotFile(image));
    assert.match(assertRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file: named } }), 'file', image),
      new RegExp(`^file: ${named}: its image ${image} is outside`));
    const disk = join(d.runtimeDir, 'names-disk.snap');
    writeFileSync(disk, snapshotFile(guestImage('hello'), [{ type: 'block', id: 0, mac: '02:00:00:00:00:07', path: '/etc/shadow' }]));
    assert.match(assertRefused(await request(d.socket, 'POST', '/v1/restore', { body: { file: disk } }), 'file', '/etc/shadow'),
      new RegExp(`^devices\\.0\\.path: ${disk}: its disk /etc/shadow is outside`));
    assert.deepEqual(outsideFiles(), ['a.snap', 'disk.img', 'hello.elf', 'small.img']);
  });

  void it('services: an image or disk outside is refused before an executor is taken for it', async () => {
    // With KVM the earlier creates and the daemon's spares have executors: none is added.
    await settle(d.socket, d.runtimeDir);
    const pids = async (): Promise<number[]> => (await d.host()).executors.map((e) => e.pid).sort();
    const executors = await pids();
    const dev = { type: 'net', id: 0, ipv4: { addr: '10.0.0.78', netmask: '255.255.255.0', gateway: '10.0.0.1' } };
    const image = join(outside.dir, 'hello.elf');
    assertRefused(await request(d.socket, 'POST', '/v1/services', { body: { name: 'pp-svc', image, devices: [dev] } }), 'image', image);
    const disk = join(outside.dir, 'disk.img');
    assertRefused(await request(d.socket, 'POST', '/v1/services', { body: { name: 'pp-svc', image: 'daytime', devices: [dev, { type: 'block', id: 1, path: disk }] } }),
      'devices.1.path', disk);
    assert.deepEqual((await ok<{ services: unknown[] }>(d.socket, 'GET', '/v1/services')).services, []);
    await settle(d.socket, d.runtimeDir);
    assert.deepEqual(await pids(), executors, 'no executor was started for them');
  });

  void it('with a VM: save outside or through a symlink out is refused and writes nothing; inside, create, save and restore work',
    { skip: !KVM && 'no /dev/kvm on this host: this part boots VMs' }, async () => {
      const { vm, console } = await ok<{ vm: VmView; console: string }>(d.socket, 'POST', '/v1/vms', {
        image: join(extra.dir, 'hello.elf'), wait: 'exit', devices: [{ type: 'block', id: 0, path: join(extra.dir, 'disk.img') }],
      }, 201);
      assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
      assert.match(console, /Hello from LightVM!/);
      await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'ctr' }, 201);
      const before = outsideFiles();
      for (const file of [join(outside.dir, 'ctr.snap'), join(d.runtimeDir, 'out', 'ctr.snap'), '/etc/lightvm-pp.snap']) {
        assertRefused(await request(d.socket, 'POST', '/v1/vms/ctr/save', { body: { file, checkpoint: true } }), 'file', file);
      }
      assert.ok(!existsSync('/etc/lightvm-pp.snap'));
      assert.deepEqual(outsideFiles(), before, 'nothing written outside, no temporary file either');
      const inside = join(d.runtimeDir, 'ctr.snap');
      await ok(d.socket, 'POST', '/v1/vms/ctr/save', { file: inside, checkpoint: true });
      const { vm: copy } = await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/restore', { file: inside, name: 'copy-in' }, 201);
      assert.equal(copy.state, 'running');
    });

  void it('an --allow-path that is no directory: the daemon does not start, and says which', async () => {
    const missing = join(outside.dir, 'no-such-dir');
    await assert.rejects(startTestDaemon({ confined: true, args: ['--allow-path', missing], prefix: 'pp2' }),
      (e: Error) => e.message.includes(`--allow-path ${missing}: no such directory`));
  });
});
