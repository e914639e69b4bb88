// `lightvm tinyx build <app>`: a kernel and an initramfs holding one
// application, its libraries, BusyBox and an init; and a cfg for it.
import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { initramfs, type CpioEntry } from './cpio.js';
import { elfDeps } from './elf-deps.js';
import { buildKernel, type Kernel } from './kernel.js';
import { DebianPackages, HostFiles, type FileSource } from './packages.js';
import { RECIPES, type Recipe } from './recipes.js';
import { closure, closureEntries } from './rootfs.js';

export class TinyxError extends Error {}

/** Directories every image has, made before its files. */
const TOP_DIRS = ['bin', 'dev', 'etc', 'proc', 'sys', 'tmp', 'run', 'root', 'var'];

export interface TinyxImage {
  app: string;
  kernel: string;
  initramfs: string;
  cfg: string;
  kernelBytes: number;
  initramfsBytes: number;
  packages: string[];
  libraries: Record<string, string>;
  recipe: Recipe;
  kernelCached: boolean;
}

export interface BuildOptions {
  out: string;
  cache?: string;
  log?: (line: string) => void;
  progress?: (done: number, total: number, what: string) => void;
  /** Skip the kernel (for tests of the root file system alone). */
  noKernel?: boolean;
  /** xz preset for the initramfs, 0-9 (default 9: smallest; the tests take 0, which is fast). */
  xzLevel?: number;
}

export const defaultCache = (): string => join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lightvm', 'tinyx');

// Guest addresses for the cfg: the same defaults as a LightVM vif.
const GUEST_IP = '10.0.2.15';
const GATEWAY = '10.0.2.2';

/** The kernel command line: console on the UART, eth0 from ip=, reboot (exit) on panic or when init ends. */
export function cmdline(ip = GUEST_IP, gw = GATEWAY): string {
  return `console=ttyS0 reboot=t panic=-1 ip=${ip}::${gw}:255.255.255.0::eth0:off`;
}

function initScript(r: Recipe): string {
  return [
    '#!/bin/busybox sh',
    '# Tinyx init: the kernel configured eth0 from ip=; mount what programs expect, run the app, power off.',
    '/bin/busybox mount -t proc proc /proc',
    '/bin/busybox mount -t sysfs sys /sys',
    '/bin/busybox mount -t devtmpfs dev /dev',
    '/bin/busybox mount -t tmpfs tmp /tmp',
    '/bin/busybox ip link set lo up',
    `echo "tinyx: starting ${r.name}"`,
    r.command,
    `echo "tinyx: ${r.name} exited with $?"`,
    '/bin/busybox reboot -f',
    '',
  ].join('\n');
}

function recipeFor(app: string): { recipe: Recipe; source: 'packages' | 'host' } {
  const known = RECIPES[app];
  if (known) return { recipe: known, source: 'packages' };
  if (app.includes('/')) {
    const path = resolve(app);
    if (!existsSync(path)) throw new TinyxError(`${app}: no such file (an app is a Debian package name, a recipe (${Object.keys(RECIPES).join(', ')}), or a path to an ELF program)`);
    if (!elfDeps(path)) throw new TinyxError(`${app}: not an ELF program`);
    return {
      recipe: { name: path.split('/').pop()!, packages: [], program: path, command: path, files: {}, check: { port: 0, send: '', expect: '' }, memoryMiB: 32 },
      source: 'host',
    };
  }
  // a package with no recipe: its program is found after it is fetched
  return { recipe: { name: app, packages: [app], program: '', command: '', files: {}, check: { port: 0, send: '', expect: '' }, memoryMiB: 32 }, source: 'packages' };
}

/** The program of a package without a recipe: an ELF in a bin directory, the one named like the package first. */
function programOf(pkgs: DebianPackages, name: string): string {
  const hit = ['usr/sbin', 'usr/bin', 'sbin', 'bin'].map((d) => `${d}/${name}`).find((p) => pkgs.lookup(p));
  if (!hit) throw new TinyxError(`package ${name} has no program /usr/sbin/${name}, /usr/bin/${name}, /sbin/${name} or /bin/${name}: give the program's path instead`);
  return `/${hit}`;
}

export async function buildTinyx(app: string, opts: BuildOptions): Promise<TinyxImage> {
  const cache = opts.cache ?? defaultCache();
  const log = opts.log ?? (() => {});
  const { recipe: r, source: kind } = recipeFor(app);
  const pkgs = new DebianPackages(cache, log);
  await pkgs.add('busybox-static');
  for (const p of r.packages) await pkgs.add(p);
  const program = r.program || programOf(pkgs, app);
  const recipe = r.program ? r : { ...r, program, command: program };
  const source: FileSource = kind === 'host' ? new HostFiles() : pkgs;
  log(`resolving the libraries of ${recipe.program}`);
  const c = await closure(source, [recipe.program]);

  const entries: CpioEntry[] = TOP_DIRS.map((d) => ({ path: d, kind: 'dir', mode: d === 'tmp' ? 0o1777 : 0o755 }));
  entries.push({ path: 'dev/console', kind: 'chardev', mode: 0o600, rdev: [5, 1] });
  // BusyBox comes from its package whatever the app's source (a host program's closure is the host's)
  const busybox = pkgs.lookup('bin/busybox');
  if (!busybox) throw new TinyxError('busybox-static holds no /bin/busybox');
  if (!c.files.has('bin/busybox')) c.files.set('bin/busybox', busybox);
  const files = closureEntries(c).filter((e) => !TOP_DIRS.includes(e.path));
  const have = new Set(files.map((e) => e.path));
  for (const applet of ['sh', 'mount', 'ip', 'reboot', 'poweroff', 'cat', 'ls', 'echo', 'sleep', 'mkdir']) {
    if (!have.has(`bin/${applet}`)) files.push({ path: `bin/${applet}`, kind: 'symlink', mode: 0o777, data: 'busybox' });
  }
  entries.push(...files);
  const extra: Record<string, string> = {
    'etc/passwd': 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\nwww-data:x:33:33:www-data:/var/www:/bin/false\n',
    'etc/group': 'root:x:0:\nnogroup:x:65534:\nwww-data:x:33:\n',
    ...recipe.files,
  };
  const dirs = new Set(entries.filter((e) => e.kind === 'dir').map((e) => e.path));
  for (const [path, text] of Object.entries(extra)) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        entries.push({ path: d, kind: 'dir', mode: 0o755 });
      }
    }
    entries.push({ path, kind: 'file', mode: 0o644, data: text });
  }
  for (const d of recipe.dirs ?? []) if (!dirs.has(d)) entries.push({ path: d, kind: 'dir', mode: 0o755 });
  entries.push({ path: 'init', kind: 'file', mode: 0o755, data: initScript(recipe) });

  mkdirSync(opts.out, { recursive: true });
  const initrd = join(opts.out, 'initramfs.cpio.xz');
  const initrdBytes = initramfs(entries, opts.xzLevel);
  writeFileSync(initrd, initrdBytes);
  let kernel: Kernel | null = null;
  const kernelPath = join(opts.out, 'bzImage');
  if (!opts.noKernel) {
    kernel = await buildKernel(cache, { log, progress: opts.progress });
    copyFileSync(kernel.bzImage, kernelPath);
  }
  const cfg = join(opts.out, `${recipe.name}.cfg`);
  writeFileSync(cfg, [
    `# Tinyx image of ${recipe.name} (lightvm tinyx build)`,
    `name = "${recipe.name}"`,
    `kernel = "${kernelPath}"`,
    `ramdisk = "${initrd}"`,
    `cmdline = "${cmdline()}"`,
    `memory = ${recipe.memoryMiB}`,
    `vif = [ 'ip=${GUEST_IP}/24,gateway=${GATEWAY}' ]`,
    '',
  ].join('\n'));
  return {
    app, kernel: kernelPath, initramfs: initrd, cfg,
    kernelBytes: kernel ? statSync(kernelPath).size : 0,
    initramfsBytes: initrdBytes.length,
    packages: pkgs.names(),
    libraries: Object.fromEntries(c.libraries),
    recipe,
    kernelCached: kernel?.cached ?? false,
  };
}

/** A directory tinyx build wrote: its kernel, initramfs and the cfg's cmdline and memory. */
export function readTinyxDir(dir: string): { kernel: string; initrd: string; cmdline: string; memoryMiB: number } {
  const kernel = join(dir, 'bzImage');
  const initrd = join(dir, 'initramfs.cpio.xz');
  for (const f of [kernel, initrd]) if (!existsSync(f)) throw new TinyxError(`${dir}: no ${f.split('/').pop()} (not a directory tinyx build wrote)`);
  const cfgFile = readdirSync(dir).find((f) => f.endsWith('.cfg'));
  if (!cfgFile) throw new TinyxError(`${dir}: no .cfg (not a directory tinyx build wrote)`);
  const text = readFileSync(join(dir, cfgFile), 'utf8');
  const cmd = /^cmdline = "(.*)"$/m.exec(text);
  const mem = /^memory = (\d+)$/m.exec(text);
  if (!cmd || !mem) throw new TinyxError(`${join(dir, cfgFile)}: no cmdline or memory line`);
  return { kernel, initrd, cmdline: cmd[1]!, memoryMiB: Number(mem[1]) };
}
