// The npm package as a user gets it: packed from a clean copy of the repo
// (npm pack runs prepack: dist, the images and the libOS SDK are built
// then), installed from the tarball into an empty directory with a fresh
// npm cache (dependencies come from the registry), and used there through
// npx as the README says; again with install scripts blocked, and again
// installed globally into a temporary prefix.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { cpSync, existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { promisify } from 'node:util';
import { isAlive, ok, processesOf, request } from './daemon-helpers.js';
import { ROOT, sleep, tempDir } from './helpers.js';

const exec = promisify(execFile);

const GREETING = 'Hello from LightVM!';
const EXAMPLE_LINE = 'Hello, world, from a unikernel of my own!';

let work: { dir: string; cleanup: () => void };
let tarball = '';
let cache = '';

/** The environment of a user's shell: none of the npm variables `npm test` set for us. */
function userEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [k, v] of Object.entries(process.env)) {
    if (!k.startsWith('npm_') && k !== 'NODE_OPTIONS' && !k.startsWith('LIGHTVM_SOCKET') && k !== 'LIGHTVM_RUNTIME_DIR') env[k] = v;
  }
  return { ...env, npm_config_cache: cache, npm_config_update_notifier: 'false', npm_config_fund: 'false', npm_config_audit: 'false', ...extra };
}

/**
 * npm with the registry in reach: the tests run in a network namespace of
 * their own (scripts/in-netns.sh), so npm alone runs in the one we came from.
 */
function withRegistry(argv: string[]): string[] {
  const host = process.env.LIGHTVM_HOST_NETNS;
  return host && existsSync(host) ? ['nsenter', `--net=${host}`, ...argv] : argv;
}

interface Run {
  stdout: string;
  stderr: string;
}

async function run(argv: string[], cwd: string, env = userEnv(), timeout = 180_000): Promise<Run> {
  try {
    const r = await exec(argv[0]!, argv.slice(1), { cwd, env, timeout, maxBuffer: 32 << 20 });
    return { stdout: r.stdout, stderr: r.stderr };
  } catch (err) {
    const e = err as Error & { stdout?: string; stderr?: string; code?: number };
    throw new Error(`${argv.join(' ')} (in ${cwd}) failed (${e.code ?? e.message}):\n${e.stdout ?? ''}\n${e.stderr ?? ''}`, { cause: err });
  }
}

/** An empty project directory, as `npm init -y` would leave it. */
function emptyProject(name: string): string {
  const dir = join(work.dir, name);
  mkdirSync(dir);
  writeFileSync(join(dir, 'package.json'), `${JSON.stringify({ name, version: '1.0.0', private: true }, null, 2)}\n`);
  return dir;
}

async function install(dir: string, args: string[] = []): Promise<Run> {
  return run(withRegistry(['npm', 'install', '--no-audit', '--no-fund', ...args, tarball]), dir);
}

/** A daemon from an installed package; stop() takes it and its executors down whatever happened. */
async function startDaemon(bin: string, cwd: string, args: string[] = []): Promise<{ socket: string; runtimeDir: string; stop(): Promise<void> }> {
  const runtimeDir = join(work.dir, `run-${Date.now()}`);
  const socket = join(runtimeDir, 'lightvmd.sock');
  const child = spawn(bin, ['daemon', '--runtime-dir', runtimeDir, '--log-level', 'warn', '--pool', '4:1', ...args],
    { cwd, env: userEnv(), stdio: ['ignore', 'ignore', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (b: Buffer) => (stderr += b.toString()));
  const reap = (): void => {
    child.kill('SIGKILL');
    for (const p of processesOf(runtimeDir)) {
      try {
        process.kill(p.pid, 'SIGKILL');
      } catch {
        // Gone meanwhile.
      }
    }
  };
  process.once('exit', reap);
  const t0 = Date.now();
  for (;;) {
    if (child.exitCode !== null) throw new Error(`the installed daemon exited with ${child.exitCode}: ${stderr}`);
    const r = existsSync(socket) ? await request(socket, 'GET', '/v1/host', { timeoutMs: 2000 }).catch(() => null) : null;
    if (r?.status === 200) break;
    if (Date.now() - t0 > 30_000) {
      reap();
      throw new Error(`the installed daemon did not serve ${socket} within 30 s: ${stderr}`);
    }
    await sleep(50);
  }
  return {
    socket, runtimeDir,
    async stop() {
      await run([bin, 'daemon', 'stop', '--destroy', '--runtime-dir', runtimeDir], cwd);
      const t1 = Date.now();
      while ((isAlive(child.pid!) && child.exitCode === null) || processesOf(runtimeDir).length) {
        if (Date.now() - t1 > 10_000) break;
        await sleep(50);
      }
      const left = processesOf(runtimeDir);
      reap();
      process.off('exit', reap);
      assert.deepEqual(left, [], 'processes left behind by the daemon');
    },
  };
}

/** Connects to the guest's TCP service, sends a line, and reads until the guest closes. */
function talk(host: string, port: number, line: string, timeoutMs = 20_000): Promise<string> {
  return new Promise((resolve, reject) => {
    let text = '';
    const s = net.connect({ host, port });
    const t = setTimeout(() => s.destroy(new Error(`no end of the conversation with ${host}:${port} after ${timeoutMs} ms: ${JSON.stringify(text)}`)), timeoutMs);
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      text += d;
      if (text.includes('say something') && !text.includes(line.toUpperCase())) {
        s.write(`${line}\n`);
        s.end();
      }
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(text);
    });
    s.on('error', (err) => {
      clearTimeout(t);
      reject(err);
    });
  });
}

void describe('the npm package, installed as a user installs it', { timeout: 600_000 }, () => {
  before(async () => {
    work = tempDir('package');
    cache = join(work.dir, 'npm-cache');
    // A clean copy of what git would commit, with the repo's dependencies for the build.
    const src = join(work.dir, 'src');
    const { stdout } = await run(['git', 'ls-files', '-z', '--cached', '--others', '--exclude-standard'], ROOT);
    for (const f of stdout.split('\0').filter(Boolean)) {
      if (existsSync(join(ROOT, f))) cpSync(join(ROOT, f), join(src, f));
    }
    symlinkSync(join(ROOT, 'node_modules'), join(src, 'node_modules'));
    await run(['npm', 'pack', '--pack-destination', work.dir], src);
    const tgz = readdirSync(work.dir).filter((f) => f.endsWith('.tgz'));
    assert.equal(tgz.length, 1, `one tarball: ${tgz.join(', ')}`);
    tarball = join(work.dir, tgz[0]!);
  });

  after(() => work?.cleanup());

  let app = '';

  void it('ships the built images and the SDK, not the sources or build leftovers', async () => {
    const { stdout } = await run(['tar', '-tzf', tarball], work.dir);
    const files = stdout.split('\n').filter(Boolean);
    for (const f of ['package/dist/cli/main.js', 'package/guest/build/hello.elf', 'package/guest/build/sdk/lib/liblvm.a',
      'package/guest/build/sdk/lib/liblvm-ip.a', 'package/guest/build/sdk/include/lightvm/lvm.h', 'package/guest/build/sdk/cflags',
      'package/examples/hello.c', 'package/examples/upcase.c', 'package/bench/floor/kvm_floor.c', 'package/contrib/lightvmd.service']) {
      assert.ok(files.includes(f), `${f} is in the package`);
    }
    for (const bad of [/\/src\//, /guest\/lib\//, /bench\/floor\/build\//, /\.o$/, /\.map$/, /^package\/test\//]) {
      assert.deepEqual(files.filter((f) => bad.test(f) && !f.includes('/sdk/')), [], `nothing matching ${bad}`);
    }
  });

  void it('from the tarball into an empty directory, fresh npm cache: npx lightvm run hello, build the example and run it', async () => {
    app = emptyProject('app');
    await install(app);
    const hello = await run(['npx', 'lightvm', 'run', 'hello'], app);
    assert.match(hello.stdout, new RegExp(GREETING));

    cpSync(join(app, 'node_modules', 'lightvm', 'examples'), join(app, 'examples'), { recursive: true });
    const built = await run(['npx', 'lightvm', 'build', 'examples/hello.c', '-o', 'h.elf'], app);
    assert.match(built.stdout, /^built .*h\.elf \(\d+ bytes, entry 0x100100\)$/m);
    const mine = await run(['npx', 'lightvm', 'run', './h.elf'], app);
    assert.match(mine.stdout, new RegExp(`^${EXAMPLE_LINE}$`, 'm'));
  });

  void it('from the installed package: the daemon, create, the TCP example answering on its vif, and doctor --json all passed', async () => {
    assert.ok(app, 'installed by the test before');
    const bin = join(app, 'node_modules', '.bin', 'lightvm');
    await run(['npx', 'lightvm', 'build', '--net', 'examples/upcase.c', '-o', 'upcase.elf'], app);
    // The example's image is the app's: the daemon reads only files under the directories it allows.
    const d = await startDaemon(bin, app, ['--bridge', 'lvpkg0', '--bridge-address', '10.77.0.1/24', '--allow-path', app]);
    try {
      writeFileSync(join(app, 'upcase.cfg'), `name = "upcase"\nkernel = "./upcase.elf"\nvif = [ 'ip=10.77.0.2/24,gateway=10.77.0.1' ]\n`);
      const created = await run(['npx', 'lightvm', 'create', 'upcase.cfg', '--socket', d.socket], app);
      assert.match(created.stdout, /^created upcase /);
      const reply = await talk('10.77.0.2', 7777, 'hello, unikernel');
      assert.match(reply, /^upcase: client 1, say something\r\n/);
      assert.match(reply, /HELLO, UNIKERNEL\n/);
      const vms = await ok<{ vms: { name: string; state: string }[] }>(d.socket, 'GET', '/v1/vms');
      assert.deepEqual(vms.vms.map((v) => [v.name, v.state]), [['upcase', 'running']]);

      // The host as the installed package sees it, its daemon included.
      const doctor = JSON.parse((await run(['npx', 'lightvm', 'doctor', '--json', '--socket', d.socket], app)).stdout) as
        { ok: boolean; checks: { id: string; status: string; verdict: string }[] };
      assert.deepEqual(doctor.checks.filter((c) => c.status !== 'pass'), [], 'every check passes');
      assert.ok(doctor.ok && doctor.checks.length >= 10);
      assert.match(doctor.checks.find((c) => c.id === 'daemon')!.verdict, /the daemon answers at .*: pid \d+, API \S+, 1 VMs/);
      assert.match(doctor.checks.find((c) => c.id === 'gcc')!.verdict, /node_modules\/lightvm\/guest\/build\/sdk/);
    } finally {
      await d.stop();
    }
  });

  void it('with install scripts blocked (--ignore-scripts): koffi loads its prebuilt binary, hello boots', async () => {
    const dir = emptyProject('app-no-scripts');
    await install(dir, ['--ignore-scripts']);
    const hello = await run(['npx', 'lightvm', 'run', 'hello'], dir);
    assert.match(hello.stdout, new RegExp(GREETING));
  });

  void it('installed globally (npm install -g into a temporary prefix): lightvm run hello, daemon and create', async () => {
    const prefix = join(work.dir, 'global');
    await run(withRegistry(['npm', 'install', '-g', '--prefix', prefix, '--no-audit', '--no-fund', tarball]), work.dir);
    const bin = join(prefix, 'bin', 'lightvm');
    const cwd = emptyProject('elsewhere');
    assert.match((await run([bin, 'run', 'hello'], cwd)).stdout, new RegExp(GREETING));
    const d = await startDaemon(bin, cwd);
    try {
      writeFileSync(join(cwd, 'hello.cfg'), 'name = "g1"\nkernel = "hello"\n');
      assert.match((await run([bin, 'create', 'hello.cfg', '--socket', d.socket], cwd)).stdout, /^created g1 /);
      let out = '';
      for (let i = 0; i < 100 && !out.includes(GREETING); i++) {
        out = (await run([bin, 'console', 'g1', '--socket', d.socket], cwd)).stdout;
        if (!out.includes(GREETING)) await sleep(100);
      }
      assert.match(out, new RegExp(GREETING));
    } finally {
      await d.stop();
    }
  });
});

void describe('install scripts in the repo', () => {
  void it('every dependency with an install script is decided in package.json: none is pending', async () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { allowScripts?: Record<string, boolean> };
    // Dev only: @bufbuild/buf (npm run proto; its platform package carries the binary) and
    // protobufjs (under @grpc/proto-loader of the CRI test; its postinstall only checks versions).
    assert.deepEqual(pkg.allowScripts, { '@bufbuild/buf': false, esbuild: false, koffi: false, protobufjs: false });
    const { stdout } = await run(['npm', 'approve-scripts', '--allow-scripts-pending'], ROOT, { ...process.env });
    assert.match(stdout, /No packages with unreviewed install scripts/);
  });
});
