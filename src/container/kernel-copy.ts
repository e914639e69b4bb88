// A container's kernel, copied where its daemon may read it: under the
// daemon's runtime directory (GET /v1/host runtime_dir), which every daemon
// allows whatever its --allow-path, unlike a bundle's rootfs or a
// snapshotter's layers. A copy also outlives what becomes of the rootfs.
import { closeSync, constants, mkdirSync, openSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';

export function kernelCopyPath(runtimeDir: string, vm: string): string {
  return join(runtimeDir, 'kernels', `${vm}.elf`);
}

/** Copies `source` (a real path: symlinks already resolved inside the rootfs) for the VM `vm`; returns the copy's path. */
export function placeKernel(runtimeDir: string, source: string, vm: string): string {
  mkdirSync(join(runtimeDir, 'kernels'), { recursive: true, mode: 0o700 });
  const dest = kernelCopyPath(runtimeDir, vm);
  // Whole or not at all: a daemon restoring the VM later reads this file.
  // A new name of our own (O_EXCL), mode 0600 from the start.
  const tmp = `${dest}.${randomBytes(6).toString('hex')}.tmp`;
  try {
    // O_NOFOLLOW: a rootfs changed into a symlink since it was resolved is not followed out of it.
    const fd = openSync(source, constants.O_RDONLY | constants.O_NOFOLLOW);
    let bytes: Buffer;
    try {
      bytes = readFileSync(fd);
    } finally {
      closeSync(fd);
    }
    writeFileSync(tmp, bytes, { mode: 0o600, flag: 'wx' });
    renameSync(tmp, dest);
  } catch (err) {
    rmSync(tmp, { force: true });
    throw new Error(`kernel ${source}: cannot copy it to ${dest}: ${(err as Error).message}`, { cause: err });
  }
  return dest;
}

export function removeKernel(path: string | undefined): void {
  if (path) rmSync(path, { force: true });
}
