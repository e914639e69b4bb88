import { constants } from 'node:os';

const errnoNames = new Map<number, string>();
for (const [name, value] of Object.entries(constants.errno)) errnoNames.set(value, name);

/** A failed system call: carries the errno and the call that failed. */
export class SysError extends Error {
  readonly errno: number;
  readonly code: string;
  readonly call: string;

  constructor(call: string, errno: number, detail?: string) {
    const code = errnoNames.get(errno) ?? `errno ${errno}`;
    super(`${call} failed: ${code}${detail ? ` (${detail})` : ''}`);
    this.name = 'SysError';
    this.errno = errno;
    this.code = code;
    this.call = call;
  }
}

export const EINTR = constants.errno.EINTR;
export const EAGAIN = constants.errno.EAGAIN;
export const ENOENT = constants.errno.ENOENT;
export const EACCES = constants.errno.EACCES;
export const EPERM = constants.errno.EPERM;
