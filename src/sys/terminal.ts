// Pseudo-terminals and passing a descriptor over a unix socket (SCM_RIGHTS):
// the console-socket protocol of OCI runtimes (runc docs/terminals.md), which
// Node cannot speak by itself.
import koffi from './koffi.js';
import { SysError } from './errors.js';
import { close } from './libc.js';

const libc = koffi.load('libc.so.6');
const iovec = koffi.struct('lvm_iovec', { base: 'void *', len: 'size_t' });
const msghdr = koffi.struct('lvm_msghdr', {
  name: 'void *', namelen: 'uint32', iov: koffi.pointer(iovec), iovlen: 'size_t', control: 'void *', controllen: 'size_t', flags: 'int',
});
const c = {
  openpty: libc.func('int openpty(_Out_ int *amaster, _Out_ int *aslave, void *name, void *termp, void *winp)'),
  ptsname: libc.func('int ptsname_r(int fd, _Out_ char *buf, size_t len)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  connect: libc.func('int connect(int fd, void *addr, uint32_t len)'),
  sendmsg: libc.func('sendmsg', 'long', ['int', koffi.pointer(msghdr), 'int']),
  fcntl: libc.func('int fcntl(int fd, int cmd, int arg)'),
};

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const F_SETFD = 2;
const FD_CLOEXEC = 1;
/** struct cmsghdr (len, level, type) then one int, padded: CMSG_SPACE(4) and CMSG_LEN(4). */
const CMSG_SPACE_FD = 24;
const CMSG_LEN_FD = 20;
const SUN_PATH_MAX = 107;

export interface Pty {
  master: number;
  slave: number;
  /** /dev/pts/N */
  name: string;
}

/** A new pty pair, both close-on-exec (a child gets the slave as its stdio, by dup2). */
export function openPty(): Pty {
  const m = [0];
  const s = [0];
  if ((c.openpty(m, s, null, null, null) as number) < 0) throw new SysError('openpty', koffi.errno());
  c.fcntl(m[0]!, F_SETFD, FD_CLOEXEC);
  c.fcntl(s[0]!, F_SETFD, FD_CLOEXEC);
  const buf = Buffer.alloc(128);
  const err = c.ptsname(m[0]!, buf, buf.length) as number;
  if (err !== 0) {
    close(m[0]!);
    close(s[0]!);
    throw new SysError('ptsname_r', err);
  }
  return { master: m[0]!, slave: s[0]!, name: buf.toString('utf8', 0, buf.indexOf(0)) };
}

/** Connects to a unix socket and sends one message: `data` with exactly one descriptor. */
export function sendFd(socketPath: string, fd: number, data: string): void {
  if (Buffer.byteLength(socketPath) > SUN_PATH_MAX) throw new SysError('connect', 36 /* ENAMETOOLONG */, socketPath);
  const s = c.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (s < 0) throw new SysError('socket', koffi.errno());
  try {
    const addr = Buffer.alloc(110);
    addr.writeUInt16LE(AF_UNIX, 0);
    addr.write(socketPath, 2, 'utf8');
    if ((c.connect(s, addr, 2 + Buffer.byteLength(socketPath) + 1) as number) < 0) throw new SysError('connect', koffi.errno(), socketPath);
    const body = Buffer.from(`${data}\0`);
    const control = Buffer.alloc(CMSG_SPACE_FD);
    control.writeBigUInt64LE(BigInt(CMSG_LEN_FD), 0);
    control.writeInt32LE(SOL_SOCKET, 8);
    control.writeInt32LE(SCM_RIGHTS, 12);
    control.writeInt32LE(fd, 16);
    const n = c.sendmsg(s, { name: null, namelen: 0, iov: [{ base: body, len: body.length }], iovlen: 1, control, controllen: CMSG_SPACE_FD, flags: 0 }, 0) as number;
    if (n < 0) throw new SysError('sendmsg', koffi.errno(), socketPath);
  } finally {
    close(s);
  }
}
