// The libc calls LightVM needs, declared once with fixed prototypes.
// Nothing outside src/sys may import koffi or know a syscall.
import koffi from './koffi.js';
import { SysError, EINTR, EAGAIN } from './errors.js';

const libc = koffi.load('libc.so.6');

// Fixed prototypes: ioctl and fcntl are variadic in C, but on x86-64 a
// fixed-argument call is ABI-compatible and avoids koffi's slower variadic
// path.
const c = {
  open: libc.func('int open(const char *path, int flags, int mode)'),
  close: libc.func('int close(int fd)'),
  fcntlValue: libc.func('int fcntl(int fd, int cmd, int arg)'),
  read: libc.func('long read(int fd, void *buf, size_t len)'),
  write: libc.func('long write(int fd, const void *buf, size_t len)'),
  preadv: libc.func('long preadv(int fd, void *iov, int iovcnt, int64_t off)'),
  pwritev: libc.func('long pwritev(int fd, void *iov, int iovcnt, int64_t off)'),
  ioctlValue: libc.func('int ioctl(int fd, unsigned long req, unsigned long arg)'),
  ioctlBuffer: libc.func('int ioctl(int fd, unsigned long req, void *arg)'),
  mmap: libc.func('void *mmap(void *addr, size_t len, int prot, int flags, int fd, int64_t off)'),
  munmap: libc.func('int munmap(uintptr_t addr, size_t len)'),
  madvise: libc.func('int madvise(uintptr_t addr, size_t len, int advice)'),
  mincore: libc.func('int mincore(uintptr_t addr, size_t len, void *vec)'),
  eventfd: libc.func('int eventfd(unsigned int initval, int flags)'),
  epollCreate1: libc.func('int epoll_create1(int flags)'),
  epollCtl: libc.func('int epoll_ctl(int epfd, int op, int fd, void *event)'),
  epollPwait2: libc.func('int epoll_pwait2(int epfd, void *events, int maxevents, void *timeout, void *sigmask)'),
  socket: libc.func('int socket(int domain, int type, int protocol)'),
  bind: libc.func('int bind(int fd, void *addr, uint32_t len)'),
  listen: libc.func('int listen(int fd, int backlog)'),
  connect: libc.func('int connect(int fd, void *addr, uint32_t len)'),
  accept4: libc.func('int accept4(int fd, void *addr, void *len, int flags)'),
  gettid: libc.func('int gettid()'),
  setpriority: libc.func('int setpriority(int which, uint32_t who, int prio)'),
  schedSetscheduler: libc.func('int sched_setscheduler(int pid, int policy, void *param)'),
  prctlName: libc.func('int prctl(int option, const char *name, unsigned long a3, unsigned long a4, unsigned long a5)'),
  getpid: libc.func('int getpid()'),
  unshare: libc.func('int unshare(int flags)'),
  mallocTrim: libc.func('int malloc_trim(size_t pad)'),
  tgkill: libc.func('int tgkill(int tgid, int tid, int sig)'),
  pthreadSigmask: libc.func('int pthread_sigmask(int how, void *set, void *oldset)'),
  sigtimedwait: libc.func('int sigtimedwait(void *set, void *info, void *timeout)'),
  signal: libc.func('uintptr_t signal(int sig, uintptr_t handler)'),
  timerCreate: libc.func('int timer_create(int clock, void *sevp, void *timerid)'),
  timerSettime: libc.func('int timer_settime(uintptr_t timerid, int flags, void *value, void *old)'),
  timerDelete: libc.func('int timer_delete(uintptr_t timerid)'),
};

/** An address in this process, as returned by mmap. */
export type Pointer = unknown;

function fail(call: string, detail?: string): never {
  throw new SysError(call, koffi.errno(), detail);
}

export { EAGAIN as EAGAIN_ERRNO } from './errors.js';

export const O_RDWR = 0o2;
export const O_CLOEXEC = 0o2000000;
export const O_NONBLOCK = 0o4000;

export function open(path: string, flags: number, mode = 0): number {
  const fd = c.open(path, flags | O_CLOEXEC, mode) as number;
  if (fd < 0) fail('open', path);
  return fd;
}

export function close(fd: number): void {
  // close never retries: on Linux the fd is released even when it reports EINTR.
  if ((c.close(fd) as number) < 0 && koffi.errno() !== EINTR) fail('close', `fd ${fd}`);
}

const F_DUPFD_CLOEXEC = 1030;

/**
 * Moves fd to the lowest free number at or above min (close-on-exec) and
 * closes the old number, which becomes free again. Returns the new fd.
 */
export function moveFdUp(fd: number, min: number): number {
  const moved = c.fcntlValue(fd, F_DUPFD_CLOEXEC, min) as number;
  if (moved < 0) fail('fcntl F_DUPFD_CLOEXEC', `fd ${fd}`);
  close(fd);
  return moved;
}

/**
 * A signal that arrives meanwhile (a profiler's SIGPROF, say) makes some
 * ioctls give up with EINTR before they did anything: KVM_CREATE_VM does,
 * while it locks the process's mappings. Those are simply made again.
 */
const EINTR_RETRIES = 100;

/** ioctl whose argument is a plain value; returns the call's result. */
export function ioctl(fd: number, req: number, arg = 0, name = 'ioctl'): number {
  let r = c.ioctlValue(fd, req, arg) as number;
  for (let i = 0; r < 0 && koffi.errno() === EINTR && i < EINTR_RETRIES; i++) r = c.ioctlValue(fd, req, arg) as number;
  if (r < 0) fail(name);
  return r;
}

/** ioctl that may fail with EINTR (KVM_RUN): returns -errno instead of throwing. */
export function ioctlRaw(fd: number, req: number, arg = 0): number {
  const r = c.ioctlValue(fd, req, arg) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** ioctl whose argument points at a struct held in buf (read and written in place). */
export function ioctlStruct(fd: number, req: number, buf: Uint8Array, name = 'ioctl'): number {
  let r = c.ioctlBuffer(fd, req, buf) as number;
  for (let i = 0; r < 0 && koffi.errno() === EINTR && i < EINTR_RETRIES; i++) r = c.ioctlBuffer(fd, req, buf) as number;
  if (r < 0) fail(name);
  return r;
}

export const PROT_READ = 1;
export const PROT_WRITE = 2;
export const MAP_SHARED = 0x01;
export const MAP_PRIVATE = 0x02;
export const MAP_ANONYMOUS = 0x20;
export const MAP_NORESERVE = 0x4000;
export const MADV_DONTNEED = 4;
/** Reclaim these pages now (anonymous ones go to swap). */
export const MADV_PAGEOUT = 21;

export function mmap(len: number, prot: number, flags: number, fd = -1, offset = 0): Pointer {
  const p = c.mmap(null, len, prot, flags, fd, offset) as Pointer;
  if (koffi.address(p) === 0xffffffffffffffffn) fail('mmap', `${len} bytes`);
  return p;
}

/** Unmaps a mapping, given as mmap returned it or by its address. */
export function munmap(p: Pointer | bigint, len: number): void {
  if ((c.munmap(typeof p === 'bigint' ? p : address(p), len) as number) < 0) fail('munmap', `${len} bytes`);
}

export function madvise(addr: bigint, len: number, advice: number): void {
  if ((c.madvise(addr, len, advice) as number) < 0) fail('madvise');
}

/** How many pages of [addr, addr+len) are resident in memory. */
export function residentPages(addr: bigint, len: number): number {
  const vec = residentMap(addr, len);
  let n = 0;
  for (let i = 0; i < vec.length; i++) n += vec[i]! & 1;
  return n;
}

/** One byte per page of [addr, addr+len): bit 0 set if the page is resident. */
export function residentMap(addr: bigint, len: number): Uint8Array {
  const vec = new Uint8Array(Math.ceil(len / 4096));
  if ((c.mincore(addr, len, vec) as number) < 0) fail('mincore');
  return vec;
}

/** A zero-copy view of len bytes at p (a pointer or an address). Valid only until p is unmapped. */
export function view(p: Pointer | bigint, len: number): ArrayBuffer {
  return koffi.view(p, len);
}

export function address(p: Pointer): bigint {
  return koffi.address(p);
}

export const EFD_CLOEXEC = 0o2000000;
export const EFD_NONBLOCK = 0o4000;

export function eventfd(flags = EFD_CLOEXEC | EFD_NONBLOCK): number {
  const fd = c.eventfd(0, flags) as number;
  if (fd < 0) fail('eventfd');
  return fd;
}

const counter = new BigUint64Array(1);
const counterBytes = new Uint8Array(counter.buffer);

/** Adds 1 to an eventfd counter. */
export function eventfdSignal(fd: number): void {
  counter[0] = 1n;
  if ((c.write(fd, counterBytes, 8) as number) < 0 && koffi.errno() !== 11) fail('write', 'eventfd');
}

/** Reads and clears an eventfd counter (0 if it was clear). */
export function eventfdDrain(fd: number): bigint {
  counter[0] = 0n;
  const r = c.read(fd, counterBytes, 8) as number;
  if (r < 0) {
    if (koffi.errno() === 11) return 0n;
    fail('read', 'eventfd');
  }
  return counter[0] ?? 0n;
}

export function read(fd: number, buf: Uint8Array, len = buf.length): number {
  const r = c.read(fd, buf, len) as number;
  return r < 0 ? -koffi.errno() : r;
}

export function write(fd: number, buf: Uint8Array, len = buf.length): number {
  const r = c.write(fd, buf, len) as number;
  return r < 0 ? -koffi.errno() : r;
}

/** struct iovec on x86-64: u64 base, u64 len (as four u32 words). */
const IOVEC_WORDS = 4;
/** At most this many iovecs in one preadv/pwritev (the kernel's IOV_MAX). */
export const IOV_MAX = 1024;

/**
 * A scatter list of host memory for one preadv/pwritev: the segments are
 * addresses in this process (guest RAM, straight), so the file's bytes move
 * with no copy and one system call per list.
 */
export class IoVectors {
  private readonly words: Uint32Array;
  private readonly lens: number[] = [];
  private count = 0;

  constructor(readonly capacity: number) {
    if (!Number.isInteger(capacity) || capacity < 1 || capacity > IOV_MAX) throw new RangeError(`an iovec list holds 1..${IOV_MAX} entries, not ${capacity}`);
    this.words = new Uint32Array(capacity * IOVEC_WORDS);
  }

  get length(): number {
    return this.count;
  }

  clear(): void {
    this.count = 0;
  }

  /** Adds len bytes at address (numbers: user-space addresses are below 2^47). */
  add(address: number, len: number): void {
    if (this.count === this.capacity) throw new RangeError(`iovec list full (${this.capacity} entries)`);
    const w = this.count * IOVEC_WORDS;
    this.words[w] = address >>> 0;
    this.words[w + 1] = Math.floor(address / 0x1_0000_0000);
    this.words[w + 2] = len >>> 0;
    this.words[w + 3] = 0;
    this.lens[this.count++] = len;
  }

  /**
   * preadv (or pwritev) of the whole list at offset; a short transfer goes
   * on from where it stopped. Returns the bytes moved (fewer than asked only
   * at the file's end on a read, or when a write moves nothing), or -errno.
   */
  transfer(fd: number, write: boolean, offset: number): number {
    const call = write ? c.pwritev : c.preadv;
    let first = 0;
    let done = 0;
    for (;;) {
      const view = first === 0 ? this.words : this.words.subarray(first * IOVEC_WORDS);
      const r = call(fd, view, this.count - first, offset + done) as number;
      if (r < 0) {
        if (koffi.errno() === EINTR) continue;
        return -koffi.errno();
      }
      if (r === 0) return done;
      done += r;
      // Skip the segments it filled; trim the one it stopped in.
      let left = r;
      while (first < this.count && left >= this.lens[first]!) left -= this.lens[first++]!;
      if (first === this.count) return done;
      if (left > 0) {
        const w = first * IOVEC_WORDS;
        const base = this.words[w]! + this.words[w + 1]! * 0x1_0000_0000 + left;
        const rest = this.lens[first]! - left;
        this.lens[first] = rest;
        this.words[w] = base >>> 0;
        this.words[w + 1] = Math.floor(base / 0x1_0000_0000);
        this.words[w + 2] = rest;
      }
    }
  }
}

export const EPOLL_CTL_ADD = 1;
export const EPOLL_CTL_DEL = 2;
export const EPOLL_CTL_MOD = 3;
export const EPOLLIN = 0x001;
export const EPOLLOUT = 0x004;
export const EPOLLERR = 0x008;
export const EPOLLHUP = 0x010;
export const EPOLLET = 1 << 31;
/** struct epoll_event is packed on x86-64: u32 events, u64 data. */
export const EPOLL_EVENT_SIZE = 12;

export function epollCreate(): number {
  const fd = c.epollCreate1(O_CLOEXEC) as number;
  if (fd < 0) fail('epoll_create1');
  return fd;
}

const epollEvent = new Uint8Array(EPOLL_EVENT_SIZE);
const epollEventView = new DataView(epollEvent.buffer);

export function epollCtl(epfd: number, op: number, fd: number, events: number, data: number): void {
  epollEventView.setUint32(0, events, true);
  epollEventView.setBigUint64(4, BigInt(data), true);
  if ((c.epollCtl(epfd, op, fd, epollEvent) as number) < 0) fail('epoll_ctl', `fd ${fd}`);
}

/**
 * Waits for events; timeoutNs < 0 waits forever. Fills buf with packed
 * epoll_event records and returns how many (0 on timeout or EINTR).
 */
export function epollWait(epfd: number, buf: Uint8Array, timeoutNs: number): number {
  let ts: BigInt64Array | null = null;
  if (timeoutNs >= 0) {
    ts = new BigInt64Array(2);
    ts[0] = BigInt(Math.floor(timeoutNs / 1e9));
    ts[1] = BigInt(Math.floor(timeoutNs % 1e9));
  }
  const n = c.epollPwait2(epfd, buf, Math.floor(buf.length / EPOLL_EVENT_SIZE), ts, null) as number;
  if (n < 0) {
    if (koffi.errno() === EINTR) return 0;
    fail('epoll_pwait2');
  }
  return n;
}

const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;

/** A non-blocking unix stream socket listening at path (which must not exist). */
export function listenUnix(path: string, backlog = 16): number {
  // struct sockaddr_un: sa_family_t (u16), then up to 108 bytes of path.
  const pathBytes = new TextEncoder().encode(path);
  if (pathBytes.length >= 108) throw new SysError('bind', 36 /* ENAMETOOLONG */, path);
  const addr = new Uint8Array(2 + 108);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(pathBytes, 2);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  if ((c.bind(fd, addr, 2 + pathBytes.length + 1) as number) < 0 || (c.listen(fd, backlog) as number) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new SysError('bind', errno, path);
  }
  return fd;
}

/** A non-blocking unix stream socket connected to path (a listener there must be up). */
export function connectUnix(path: string): number {
  const pathBytes = new TextEncoder().encode(path);
  if (pathBytes.length >= 108) throw new SysError('connect', 36 /* ENAMETOOLONG */, path);
  const addr = new Uint8Array(2 + 108);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(pathBytes, 2);
  const fd = c.socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  // A unix socket connects at once or not at all (EAGAIN: the listener's backlog is full).
  if ((c.connect(fd, addr, 2 + pathBytes.length + 1) as number) < 0) {
    const errno = koffi.errno();
    close(fd);
    throw new SysError('connect', errno, path);
  }
  return fd;
}

/** Accepts a connection, non-blocking; -1 if none is waiting. */
export function acceptNonBlocking(fd: number): number {
  const r = c.accept4(fd, null, null, SOCK_NONBLOCK | SOCK_CLOEXEC) as number;
  if (r < 0) {
    if (koffi.errno() === EAGAIN) return -1;
    fail('accept4');
  }
  return r;
}

export function gettid(): number {
  return c.gettid() as number;
}

/** Lowers (or raises) the calling thread's scheduling priority: Linux nice is per thread. */
export function setThreadNice(nice: number): void {
  if ((c.setpriority(0 /* PRIO_PROCESS */, gettid(), nice) as number) < 0) fail('setpriority');
}

/**
 * Makes the calling thread run only when a CPU has nothing else to do
 * (SCHED_IDLE): background work that must never delay anything else.
 */
export function setThreadIdle(): void {
  const param = new Int32Array(1);
  if ((c.schedSetscheduler(0, 5 /* SCHED_IDLE */, new Uint8Array(param.buffer)) as number) < 0) fail('sched_setscheduler');
}

const CLONE_NEWNET = 0x40000000;

/**
 * Moves the calling thread (only it: a network namespace belongs to a
 * task) into a new, empty network namespace, which ends with the thread.
 * Needs CAP_SYS_ADMIN.
 */
export function unshareNetwork(): void {
  if ((c.unshare(CLONE_NEWNET) as number) < 0) fail('unshare(CLONE_NEWNET)');
}

/** Names the calling thread (PR_SET_NAME; at most 15 bytes), as top -H and /proc show it. */
export function setThreadName(name: string): void {
  if ((c.prctlName(15 /* PR_SET_NAME */, name.slice(0, 15), 0, 0, 0) as number) < 0) fail('prctl(PR_SET_NAME)');
}

/** Gives the C heap's free memory back to the kernel (glibc keeps what an ended thread's arena held). */
export function mallocTrim(): void {
  c.mallocTrim(0);
}

export function getpid(): number {
  return c.getpid() as number;
}

/** Sends sig to one thread; false if that thread is gone. */
export function tgkill(pid: number, tid: number, sig: number): boolean {
  return (c.tgkill(pid, tid, sig) as number) === 0;
}

// Signal sets as the kernel sees them: 64 bits (the libc sigset_t is larger,
// but only its first 8 bytes are read by the kernel).
const SIGSET_BYTES = 128;

export function sigset(...signals: number[]): Uint8Array {
  const set = new Uint8Array(SIGSET_BYTES);
  for (const s of signals) set[(s - 1) >> 3]! |= 1 << ((s - 1) & 7);
  return set;
}

export const SIG_BLOCK = 0;
export const SIG_UNBLOCK = 1;
export const SIGHUP = 1;
export const SIGPIPE = 13;

export function blockSignals(set: Uint8Array): void {
  const r = c.pthreadSigmask(SIG_BLOCK, set, null) as number;
  if (r !== 0) throw new SysError('pthread_sigmask', r);
}

/** Takes one pending signal of set without waiting; returns it, or 0 if none. */
export function takePendingSignal(set: Uint8Array): number {
  const zero = new BigInt64Array(2);
  const r = c.sigtimedwait(set, null, zero) as number;
  return r > 0 ? r : 0;
}

/** Sets a signal's disposition to "ignore". */
export function ignoreSignal(sig: number): void {
  c.signal(sig, 1);
}

const CLOCK_MONOTONIC = 1;
const SIGEV_THREAD_ID = 4;

/** A POSIX timer that sends sig to the calling thread. */
export function threadTimerCreate(sig: number): bigint {
  // struct sigevent: sigev_value (8), sigev_signo (4), sigev_notify (4), _tid (4) at 16.
  const sev = new Uint8Array(64);
  const v = new DataView(sev.buffer);
  v.setInt32(8, sig, true);
  v.setInt32(12, SIGEV_THREAD_ID, true);
  v.setInt32(16, gettid(), true);
  const id = new BigUint64Array(1);
  if ((c.timerCreate(CLOCK_MONOTONIC, sev, new Uint8Array(id.buffer)) as number) < 0) fail('timer_create');
  return id[0] ?? 0n;
}

/** Arms a timer to fire every intervalNs (0 disarms it). */
export function threadTimerSet(timer: bigint, intervalNs: number): void {
  // struct itimerspec: it_interval then it_value, each { tv_sec, tv_nsec }.
  const spec = new BigInt64Array(4);
  const sec = BigInt(Math.floor(intervalNs / 1e9));
  const nsec = BigInt(intervalNs % 1e9);
  spec[0] = sec;
  spec[1] = nsec;
  spec[2] = sec;
  spec[3] = nsec;
  if ((c.timerSettime(timer, 0, new Uint8Array(spec.buffer), null) as number) < 0) fail('timer_settime');
}

/** Arms a timer to fire once, afterNs from now. */
export function threadTimerOnce(timer: bigint, afterNs: number): void {
  const spec = new BigInt64Array(4);
  spec[2] = BigInt(Math.floor(afterNs / 1e9));
  spec[3] = BigInt(Math.floor(afterNs % 1e9));
  if ((c.timerSettime(timer, 0, new Uint8Array(spec.buffer), null) as number) < 0) fail('timer_settime');
}

export function threadTimerDelete(timer: bigint): void {
  c.timerDelete(timer);
}
