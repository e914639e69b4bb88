// Shared by the container front-end tests: bundles and rootfs tarballs holding
// a guest image, the built lightvm-oci behind an executable wrapper (what
// podman and containerd exec), and whether a peer client is installed.
import { execFileSync, spawnSync } from 'node:child_process';
import { chmodSync, copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { guestImage, ROOT } from './helpers.js';

export const OCI_MAIN = join(ROOT, 'dist', 'oci', 'main.js');

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
  writeFileSync(file, `#!/bin/sh\nexec "${process.execPath}" --no-warnings "${OCI_MAIN}" --lightvm-socket "${socket}" "$@"\n`);
  chmodSync(file, 0o755);
  return file;
}
