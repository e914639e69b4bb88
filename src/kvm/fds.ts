import * as libc from '../sys/libc.js';

/**
 * KVM gives each VM a debugfs directory named "<thread id>-<fd>" holding ~70
 * files (the VM's and its vCPUs' statistics): here 65 KiB of kernel memory
 * and ~110 µs per VM, a sixth of a VM's kernel memory. KVM skips the
 * directory when that name exists already (it logs a rate-limited
 * "duplicate directory" line). So VM and vCPU fds are moved up to
 * FD_FLOOR or above as soon as they are made: the fd number a thread's
 * next VM gets is the one its last VM had, whose directory still exists,
 * and only one VM per thread at a time has a directory. Statistics stay
 * readable through KVM_GET_STATS_FD. LIGHTVM_KVM_DEBUGFS=1 keeps every
 * VM's directory (for debugging; the fds are then left where they are).
 */
const FD_FLOOR = 1024;
const keepDebugfs = process.env.LIGHTVM_KVM_DEBUGFS === '1';

/**
 * VM fds made so far by this process. Moving an fd to FD_FLOOR grows the
 * process's fd table, and with threads sharing it the kernel waits for an
 * RCU grace period: 12-17 ms here, the largest single cost of a `lightvm
 * run`. A process with one VM has nothing to share a directory with, so
 * the first VM and its vCPUs keep their fds; parking starts with the
 * second (whose own directory is then the one the later VMs reuse).
 */
let vmsMade = 0;

/**
 * A new VM or vCPU fd, moved up to FD_FLOOR unless debugfs is kept or it
 * belongs to the process's first VM. Where the fd limit is below FD_FLOOR
 * the fd stays: the VM then simply has its directory.
 */
export function parkFd(fd: number, kind: 'vm' | 'vcpu'): number {
  if (kind === 'vm') vmsMade++;
  if (keepDebugfs || fd >= FD_FLOOR || vmsMade < 2) return fd;
  try {
    return libc.moveFdUp(fd, FD_FLOOR);
  } catch {
    return fd;
  }
}
