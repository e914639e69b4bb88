// Named pipes (mkfifo has no Node API).
import koffi from './koffi.js';
import { SysError } from './errors.js';

const libc = koffi.load('libc.so.6');
const mkfifoC = libc.func('int mkfifo(const char *path, uint32_t mode)');

export function mkfifo(path: string, mode = 0o600): void {
  if ((mkfifoC(path, mode) as number) < 0) throw new SysError('mkfifo', koffi.errno(), path);
}
