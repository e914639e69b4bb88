// The Tinyx kernel: Debian's linux-source, configured from tinyconfig plus
// what a single-application VM needs, built once per configuration (the
// cache key is the source package and the options) with a progress line.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { copyFileSync, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join } from 'node:path';
import { DebianPackages } from './packages.js';

/** Options on top of tinyconfig, and why each is there. */
export const KERNEL_OPTIONS: Record<string, string> = {
  '64BIT': 'x86-64 entry (the 64-bit boot protocol and PVH)',
  PRINTK: 'boot messages: how far a boot got',
  TTY: 'a console', SERIAL_8250: 'the early UART at 0x3f8', SERIAL_8250_CONSOLE: 'console=ttyS0',
  BLK_DEV_INITRD: 'the initramfs', RD_XZ: 'which is xz-compressed',
  BINFMT_ELF: 'programs', BINFMT_SCRIPT: '/init is a shell script',
  PROC_FS: '/proc', SYSFS: '/sys', DEVTMPFS: '/dev', TMPFS: '/tmp', SHMEM: 'tmpfs',
  MULTIUSER: 'setuid: nginx drops to nobody', FUTEX: 'glibc threads and locks', EPOLL: 'nginx, redis',
  EVENTFD: 'redis', SIGNALFD: 'event loops', TIMERFD: 'event loops', POSIX_TIMERS: 'glibc clocks',
  FILE_LOCKING: 'flock in daemons', ADVISE_SYSCALLS: 'madvise in allocators (jemalloc)',
  NET: 'networking', INET: 'IPv4, TCP', UNIX: 'AF_UNIX', IP_PNP: 'ip= on the command line configures eth0',
  NETDEVICES: 'network devices', NET_CORE: 'network devices',
  VIRTIO_MENU: 'virtio', VIRTIO: 'virtio', VIRTIO_MMIO: 'virtio-mmio transport (microvm, our monitor)',
  VIRTIO_MMIO_CMDLINE_DEVICES: 'devices declared by virtio_mmio.device=', VIRTIO_NET: 'the vif',
  // No block layer (CONFIG_BLOCK, off in tinyconfig): the app lives in the
  // initramfs. A disk for Linux guests comes with them (CONFIG_BLOCK, VIRTIO_BLK).
  VIRTIO_CONSOLE: 'a virtio console',
  HYPERVISOR_GUEST: 'guest support', PARAVIRT: 'paravirtual clock', PVH: 'PVH entry for an uncompressed vmlinux',
  KVM_GUEST: 'kvmclock', NO_HZ_IDLE: 'no timer ticks while idle (each exit is dear)', HZ_100: 'few ticks',
  UNWINDER_GUESS: 'no ORC tables: smaller, no objtool pass', CC_OPTIMIZE_FOR_SIZE: 'small', KERNEL_XZ: 'the smallest bzImage',
};

export interface Kernel {
  bzImage: string;
  vmlinux: string;
  config: string;
  version: string;
  cached: boolean;
}

type Progress = (done: number, total: number, what: string) => void;

function run(cmd: string, args: string[], cwd: string, onLine?: (l: string) => void): Promise<string> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    let partial = '';
    const take = (b: Buffer): void => {
      const s = partial + b.toString('utf8');
      const lines = s.split('\n');
      partial = lines.pop()!;
      for (const l of lines) {
        tail = `${tail}${l}\n`.slice(-4000);
        onLine?.(l);
      }
    };
    p.stdout.on('data', take);
    p.stderr.on('data', take);
    p.on('error', reject);
    p.on('close', (code) => (code === 0 ? resolve(tail) : reject(new Error(`${cmd} ${args.join(' ')} failed (exit ${code}):\n${tail}${partial}`))));
  });
}

/** Unpacks Debian's linux-source into the cache once; returns the tree. */
async function source(cache: string, log: (l: string) => void): Promise<{ tree: string; version: string }> {
  const pkgs = new DebianPackages(cache, log);
  const name = await sourcePackage();
  await pkgs.add(name);
  const tarball = pkgs.lookup(`usr/src/${name}.tar.xz`);
  if (!tarball) throw new Error(`${name} holds no usr/src/${name}.tar.xz`);
  const version = pkgs.version(name)!;
  // One tree per source package, its version in a marker: kbuild's objects
  // name the tree's path, so a tree that moved would rebuild every one.
  const tree = join(cache, 'src', name);
  const marker = join(tree, '.tinyx-version');
  if (!existsSync(marker) || readFileSync(marker, 'utf8') !== version) {
    log(`unpacking ${name} ${version} (about 1.3 GB; once)`);
    const tmp = `${tree}.partial`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    // system tar and xz: a 1.3 GB tree of 80,000 files is their job, not a JS stream's
    await run('tar', ['-xJf', tarball.abs, '--strip-components=1', '-C', tmp], cache);
    rmSync(tree, { recursive: true, force: true });
    renameSync(tmp, tree);
    writeFileSync(marker, version);
  }
  return { tree, version };
}

// The linux-source-X.Y package the metapackage linux-source points to.
async function sourcePackage(): Promise<string> {
  const out = await run('apt-cache', ['depends', 'linux-source'], '/');
  const m = /Depends: (linux-source-[0-9.]+)/.exec(out);
  if (!m) throw new Error('apt-cache knows no linux-source-X.Y package (is the Debian main archive in apt\'s sources?)');
  return m[1]!;
}

export async function buildKernel(cache: string, opts: { log?: (l: string) => void; progress?: Progress; options?: Record<string, string> } = {}): Promise<Kernel> {
  const log = opts.log ?? (() => {});
  const options = opts.options ?? KERNEL_OPTIONS;
  const { tree, version } = await source(cache, log);
  const fragment = Object.keys(options).sort().map((o) => `CONFIG_${o}=y`).join('\n') + '\n';
  const key = createHash('sha256').update(`${version}\n${fragment}`).digest('hex').slice(0, 16);
  const outDir = join(cache, 'kernels', key);
  const result = { bzImage: join(outDir, 'bzImage'), vmlinux: join(outDir, 'vmlinux'), config: join(outDir, 'config'), version };
  if (existsSync(result.bzImage)) return { ...result, cached: true };
  const obj = join(cache, 'obj', key);
  mkdirSync(obj, { recursive: true });
  writeFileSync(join(obj, 'tinyx.fragment'), fragment);
  log(`configuring Linux ${version}: tinyconfig + ${Object.keys(options).length} options`);
  await run('make', [`O=${obj}`, 'tinyconfig'], tree);
  await run('sh', ['scripts/kconfig/merge_config.sh', '-m', '-O', obj, join(obj, '.config'), join(obj, 'tinyx.fragment')], tree);
  await run('make', [`O=${obj}`, 'olddefconfig'], tree);
  const config = readFileSync(join(obj, '.config'), 'utf8');
  const lost = Object.keys(options).filter((o) => !new RegExp(`^CONFIG_${o}=y$`, 'm').test(config));
  if (lost.length) throw new Error(`Linux ${version} did not take CONFIG_${lost.join(', CONFIG_')} (a dependency is missing from the options)`);
  // kbuild prints one line per object; the last build of this tree tells how many to expect
  const countFile = join(cache, 'kernels', 'objects');
  const expected = existsSync(countFile) ? Number(readFileSync(countFile, 'utf8')) || 1000 : 1000;
  let done = 0;
  await run('make', [`O=${obj}`, `-j${Math.max(1, cpus().length)}`, 'bzImage'], tree, (l) => {
    const m = /^\s+(CC|AS|LD|AR|GEN|OBJCOPY|HOSTCC)\s+(\S+)/.exec(l);
    if (m) opts.progress?.(++done, Math.max(expected, done), m[2]!);
  });
  mkdirSync(outDir, { recursive: true });
  writeFileSync(countFile, String(done));
  copyFileSync(join(obj, 'arch/x86/boot/bzImage'), result.bzImage);
  copyFileSync(join(obj, 'vmlinux'), result.vmlinux);
  copyFileSync(join(obj, '.config'), result.config);
  return { ...result, cached: false };
}
