// Checks of what LightVM itself needs around it: a VM that really boots,
// the daemon's socket, gcc for `lightvm build`, the benchmarks' peers.
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { which } from '../bench/peers.js';
import { KvmUnavailableError } from '../kvm/errors.js';
import { buildUnikernel, SDK_DIR } from '../sdk/build.js';
import { Host } from '../toolstack/host.js';
import { PACKAGE_ROOT } from '../toolstack/images.js';
import { describeExit } from '../vmm/exit.js';
import { fail, pass, warn, type CheckResult, type DoctorOptions } from './check.js';

const GREETING = 'Hello from LightVM!';

/** Boots the built-in hello in this process, as `lightvm run hello` does. */
export async function checkBoot(): Promise<CheckResult> {
  const t0 = process.hrtime.bigint();
  let host: Host;
  try {
    host = await Host.start({ executors: 1 });
  } catch (err) {
    // From the executor thread the error comes back rebuilt: known by its name.
    if (err instanceof KvmUnavailableError || (err as Error).name === 'KvmUnavailableError') {
      return fail('boot', 'not tried: /dev/kvm cannot be used (see kvm)', (err as Partial<KvmUnavailableError>).fix ?? 'see the kvm check');
    }
    throw err;
  }
  try {
    const vm = await host.create({ image: 'hello', memoryMiB: 4, warm: false });
    const exit = await vm.exited;
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    if (exit.kind === 'halt' && exit.status === 0 && vm.consoleText().includes(GREETING)) {
      return pass('boot', `the built-in hello booted, printed its line and exited 0 (${ms.toFixed(0)} ms with the host's start)`);
    }
    return fail('boot', `the built-in hello ${describeExit(exit)}; console: ${JSON.stringify(vm.consoleText().slice(0, 120))}`,
      'run `lightvm run hello` and report what it prints');
  } finally {
    await host.close();
  }
}

function writableDir(dir: string): string | null {
  // The nearest existing directory must be writable: the daemon creates the rest.
  for (let d = dir; ; d = dirname(d)) {
    if (existsSync(d)) {
      try {
        accessSync(d, constants.W_OK);
        return d;
      } catch {
        return null;
      }
    }
    if (d === dirname(d)) return null;
  }
}

function getHost(socket: string): Promise<{ pid: number; vms: number; version: string }> {
  return new Promise((resolve, reject) => {
    const req = http.get({ socketPath: socket, path: '/v1/host', timeout: 3000 }, (res) => {
      let text = '';
      res.setEncoding('utf8');
      res.on('data', (s: string) => (text += s));
      res.on('end', () => {
        try {
          if (res.statusCode !== 200) throw new Error(`HTTP ${res.statusCode}`);
          resolve(JSON.parse(text) as { pid: number; vms: number; version: string });
        } catch (err) {
          reject(err as Error);
        }
      });
    });
    req.on('timeout', () => req.destroy(Object.assign(new Error('no answer within 3 s'), { code: 'ETIMEDOUT' })));
    req.on('error', reject);
  });
}

export async function checkDaemon(opts: DoctorOptions): Promise<CheckResult> {
  const id = 'daemon';
  if (!existsSync(opts.socket)) {
    const dir = writableDir(dirname(opts.socket));
    return dir
      ? pass(id, `no daemon running (no socket at ${opts.socket}); \`lightvm daemon\` can listen there`)
      : fail(id, `no daemon running, and ${dirname(opts.socket)} cannot be made by this user`,
        'set LIGHTVM_RUNTIME_DIR (or XDG_RUNTIME_DIR) to a directory of yours, or run the daemon as root');
  }
  if (!statSync(opts.socket).isSocket()) return fail(id, `${opts.socket} is not a socket`, 'remove it, or point --socket at the daemon');
  try {
    const h = await getHost(opts.socket);
    return pass(id, `the daemon answers at ${opts.socket}: pid ${h.pid}, API ${h.version}, ${h.vms} VMs`);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EACCES') return fail(id, `no permission to talk to the daemon at ${opts.socket} (mode 0600)`, 'run lightvm as the daemon\'s user (or root)');
    if (code === 'ECONNREFUSED') return fail(id, `nothing answers at ${opts.socket} (a daemon that died left its socket)`, 'start `lightvm daemon`: it replaces the stale socket');
    return fail(id, `the daemon at ${opts.socket} did not answer: ${(err as Error).message}`, 'see its log; restart it');
  }
}

/** gcc really builds the shipped example against the shipped SDK. */
export async function checkBuild(): Promise<CheckResult> {
  const id = 'gcc';
  const cc = process.env.CC ?? 'gcc';
  let version: string;
  try {
    version = execFileSync(cc, ['--version'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n')[0]!;
  } catch {
    return warn(id, `${cc} not found: \`lightvm build\` cannot compile unikernels (running VMs does not need it)`, 'install gcc and binutils (Debian: apt-get install gcc)');
  }
  const dir = mkdtempSync(join(tmpdir(), 'lightvm-doctor-'));
  let said = '';
  try {
    await buildUnikernel({ sources: [join(PACKAGE_ROOT, 'examples', 'hello.c')], output: join(dir, 'hello.elf'), diagnostics: (b) => (said += b.toString()) });
    return pass(id, `${version}: builds examples/hello.c against the libOS SDK (${SDK_DIR})`);
  } catch (err) {
    const first = said.split('\n').find((l) => /error/.test(l)) ?? '';
    return warn(id, `${version} could not build examples/hello.c: ${(err as Error).message}${first ? `: ${first.trim()}` : ''}`,
      'see the compiler\'s message: `lightvm build -v examples/hello.c` prints the command');
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/** What each benchmark runs besides LightVM (src/bench): missing ones skip that comparison. */
const PEERS: { tool: string; for: string }[] = [
  { tool: 'qemu-system-x86_64', for: 'bench boot: the same image under QEMU microvm' },
  { tool: 'crun', for: 'bench scale and net: containers' },
  { tool: 'busybox', for: "bench scale and net: the containers' rootfs" },
  { tool: 'unshare', for: 'bench scale and net: private namespaces for crun' },
  { tool: 'ip', for: "bench net: crun's veth set-up" },
  { tool: 'bash', for: "bench net: crun's veth set-up script" },
  { tool: 'make', for: 'the C floor programs (built on first use)' },
];

export function checkPeers(): CheckResult[] {
  const install = `sh ${join(PACKAGE_ROOT, 'scripts', 'install-peers.sh')} (Debian, as root)`;
  return PEERS.map((p) => {
    const at = which(p.tool);
    return at ? pass(`peer:${p.tool}`, `${at} (${p.for})`) : warn(`peer:${p.tool}`, `${p.tool} not found: ${p.for} is skipped`, install);
  });
}
