// Shared by the container front-end tests: bundles and rootfs tarballs holding
// a guest image, the built lightvm-oci behind an executable wrapper (what
// podman and containerd exec), and whether a peer client is installed.
import { execFileSync, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { guestImage, ROOT, sleep } from './helpers.js';

export const OCI_MAIN = join(ROOT, 'dist', 'oci', 'main.js');
/** The package's bin (sh): answers state, start and delete from the disk when it can, else runs OCI_MAIN. */
export const OCI_BIN = join(ROOT, 'bin', 'lightvm-oci');

export function have(cmd: string, ...args: string[]): boolean {
  return spawnSync(cmd, args.length ? args : ['--version'], { stdio: 'ignore' }).status === 0;
}

/** A bundle dir with config.json and a rootfs holding `guest` at /unikernel.elf. */
export function makeBundle(dir: string, guest: string, config: Record<string, unknown> = {}): string {
  mkdirSync(join(dir, 'rootfs'), { recursive: true });
  copyFileSync(guestImage(guest), join(dir, 'rootfs', 'unikernel.elf'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    ociVersion: '1.0.2', root: { path: 'rootfs' }, process: { args: ['/unikernel.elf'], cwd: '/' }, ...config,
  }));
  return dir;
}

/** A rootfs tarball with `guest` at /unikernel.elf (for podman import). */
export function rootfsTar(dir: string, guest: string): string {
  const fs = join(dir, `${guest}-rootfs`);
  mkdirSync(fs, { recursive: true });
  copyFileSync(guestImage(guest), join(fs, 'unikernel.elf'));
  const tar = join(dir, `${guest}.tar`);
  execFileSync('tar', ['-C', fs, '-cf', tar, 'unikernel.elf']);
  return tar;
}

/**
 * An executable that runs the built lightvm-oci with this node and the
 * daemon's socket: what podman (--runtime) and containerd (runc binary) exec.
 */
export function ociWrapper(dir: string, socket: string): string {
  const file = join(dir, 'lightvm-oci');
  writeFileSync(file, `#!/bin/sh\nLIGHTVM_NODE="${process.execPath}" exec "${OCI_BIN}" --lightvm-socket "${socket}" "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}

export const SHIM_MAIN = join(ROOT, 'dist', 'shim', 'main.js');
/** The package's bin (sh): answers start and delete itself when it can, else runs SHIM_MAIN with $LIGHTVM_NODE. */
export const SHIM_BIN = join(ROOT, 'bin', 'containerd-shim-lightvm-v1');

export interface Ctr {
  status: number | null;
  stdout: string;
  stderr: string;
}

export interface PrivateContainerd {
  sock: string;
  /** The shim servers' directory ($LIGHTVM_SHIM_DIR). */
  shimDir: string;
  ctr(...args: string[]): Ctr;
  log(): string;
  start(): Promise<void>;
  stop(): Promise<void>;
  /** Pids of the shim servers of this containerd. */
  servers(): number[];
}

/**
 * A containerd of its own under dir (root, state, sockets; CRI off unless
 * `cri` gives its extra config), with containerd-shim-lightvm-v1 (the built
 * one) on its PATH and the daemon's socket in its environment.
 */
export function privateContainerd(dir: string, daemonSocket: string, cri?: string): PrivateContainerd {
  const sock = join(dir, 'c.sock');
  const bin = join(dir, 'bin');
  const shimDir = join(dir, 's');
  mkdirSync(bin, { recursive: true });
  const shim = join(bin, 'containerd-shim-lightvm-v1');
  writeFileSync(shim, `#!/bin/sh\nLIGHTVM_NODE="${process.execPath}" exec "${SHIM_BIN}" "$@"\n`);
  chmodSync(shim, 0o755);
  writeFileSync(join(dir, 'config.toml'), [
    'version = 2', `root = "${dir}/root"`, `state = "${dir}/state"`, ...(cri ? [] : ['disabled_plugins = ["io.containerd.grpc.v1.cri"]']),
    '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`, cri ?? '', '',
  ].join('\n'));
  let child: ChildProcess | undefined;
  let log = '';
  const ctr = (...args: string[]): Ctr => {
    const r = spawnSync('ctr', ['--address', sock, ...args], { encoding: 'utf8', timeout: 60_000 });
    return { status: r.status, stdout: r.stdout, stderr: r.stderr };
  };
  return {
    sock, shimDir, ctr,
    log: () => log,
    async start() {
      const c = spawn('containerd', ['--config', join(dir, 'config.toml')], {
        stdio: ['ignore', 'pipe', 'pipe'],
        // Short idle: the test's servers go when their tasks do.
        env: { ...process.env, PATH: `${bin}:${process.env.PATH}`, LIGHTVM_SOCKET: daemonSocket, LIGHTVM_SHIM_DIR: shimDir, LIGHTVM_SHIM_IDLE_MS: '1000' },
      });
      c.stderr!.setEncoding('utf8').on('data', (s: string) => (log += s));
      c.stdout!.resume();
      child = c;
      const t0 = Date.now();
      while (spawnSync('ctr', ['--address', sock, 'version'], { stdio: 'ignore', timeout: 5000 }).status !== 0) {
        if (c.exitCode !== null) throw new Error(`containerd exited with ${c.exitCode}: ${log.slice(-2000)}`);
        if (Date.now() - t0 > 30_000) throw new Error(`containerd did not serve ${sock} within 30 s`);
        await sleep(100);
      }
    },
    async stop() {
      const c = child;
      child = undefined;
      if (!c || c.exitCode !== null) return;
      const gone = new Promise((r) => c.once('exit', r));
      c.kill('SIGTERM');
      await gone;
    },
    servers() {
      const r = spawnSync('pgrep', ['-f', `${SHIM_MAIN} serve -socket ${shimDir}`], { encoding: 'utf8' });
      return r.stdout.trim().split('\n').filter(Boolean).map(Number);
    },
  };
}

/** Everything a test's containerd left: tasks killed and removed, servers killed, snapshots unmounted. */
export async function cleanContainerd(c: PrivateContainerd, dir: string, ns = 'default'): Promise<void> {
  const n = ['-n', ns];
  for (const t of c.ctr(...n, 'task', 'ls', '-q').stdout.split('\n').filter(Boolean)) c.ctr(...n, 'task', 'rm', '-f', t);
  for (const x of c.ctr(...n, 'c', 'ls', '-q').stdout.split('\n').filter(Boolean)) c.ctr(...n, 'c', 'rm', x);
  await c.stop();
  for (const pid of c.servers()) process.kill(pid, 'SIGKILL');
  spawnSync('sh', ['-c', `grep -o "${dir}[^ ]*" /proc/mounts | sort -r | xargs -r umount`]);
}
