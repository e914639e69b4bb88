// Where a containerd's shim server listens, and whether it answers there.
import { createHash } from 'node:crypto';
import net from 'node:net';
import { join } from 'node:path';

/** One server per containerd (its events go back to it) and daemon, on a short fixed path. */
export function serverSocket(address: string, daemonSocket: string): string {
  const dir = process.env.LIGHTVM_SHIM_DIR ?? '/run/lightvm-shim';
  const key = createHash('sha256').update(`${address}|${daemonSocket}`).digest('hex').slice(0, 16);
  return join(dir, `${key}.sock`);
}

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

