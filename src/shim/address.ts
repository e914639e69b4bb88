// Where a containerd's shim server listens, and whether it answers there.
// bin/containerd-shim-lightvm-v1 (sh) computes the same paths to answer
// `start` and `delete` without Node: keep the two in step.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { join } from 'node:path';

/** One server per containerd (its events go back to it) and daemon, on a short fixed path. */
export function serverSocket(address: string, daemonSocket: string): string {
  const dir = process.env.LIGHTVM_SHIM_DIR ?? '/run/lightvm-shim';
  const key = createHash('sha256').update(`${address}|${daemonSocket}`).digest('hex').slice(0, 16);
  return join(dir, `${key}.sock`);
}

/** "<pid> <start time>" of the server listening on sock, while it takes new tasks. */
export function pidFile(sock: string): string {
  return sock.replace(/\.sock$/, '.pid');
}

/** This process's pid and start time (field 22 of /proc/self/stat), as the sh start checks them. */
export function processIdentity(): string {
  const stat = readFileSync('/proc/self/stat', 'utf8');
  const fields = stat.slice(stat.lastIndexOf(') ') + 2).split(' ');
  return `${process.pid} ${fields[19]}`;
}

/** In a task's bundle while it may have a VM: its `delete` then needs the daemon (Node). */
export const VM_MARKER = 'lightvm-vm';

export function answers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.once('error', () => resolve(false));
  });
}
