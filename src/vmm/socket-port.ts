// An executor process's link to its toolstack: a unix socket served by the
// executor thread itself, in its own epoll loop, so that a request reaches
// the thread that runs the VMs without a hop through another thread.
import * as libc from '../sys/libc.js';
import type { Executor, ExecutorPort } from './executor.js';
import type { ProcessEvent, ProcessRequest } from './protocol.js';
import { encodeFrame, FrameDecoder } from './wire.js';

/** Frames queued for a slow toolstack before console output is dropped. */
const MAX_QUEUED = 8 << 20;

export class SocketPort implements ExecutorPort {
  private readonly listenFd: number;
  private conn = -1;
  private decoder = new FrameDecoder();
  private readonly readBuf = new Uint8Array(256 * 1024);
  private queue: Buffer[] = [];
  private queued = 0;
  /** Frames held while a batch of requests is handled, written at its end in one go. */
  private corked: Buffer[] | undefined;
  private corkDepth = 0;
  dropped = 0;

  constructor(private readonly executor: Executor, path: string) {
    this.listenFd = libc.listenUnix(path);
    executor.watch(this.listenFd, libc.EPOLLIN, () => this.accept());
  }

  receive(): ProcessRequest | undefined {
    return undefined;
  }

  send(ev: ProcessEvent): void {
    if (this.conn < 0) return;
    // A slow reader may miss console output, never anything else.
    if (ev.ev === 'console' && this.queued > MAX_QUEUED) {
      this.dropped += ev.data.length;
      return;
    }
    const frame = encodeFrame(ev);
    if (this.corked) this.corked.push(frame);
    else this.writeFrames(frame);
  }

  /**
   * Holds what is sent from now until uncork(), then writes it in one go:
   * each write wakes the toolstack, and here a wake-up costs the writer
   * ~50 µs. Nests.
   */
  cork(): void {
    if (this.corkDepth++ === 0) this.corked = [];
  }

  uncork(): void {
    if (--this.corkDepth > 0) return;
    this.flushCorked();
    this.corked = undefined;
  }

  /** Writes what is held so far, and goes on holding. */
  flushCorked(): void {
    if (!this.corked?.length) return;
    const frames = this.corked;
    this.corked = [];
    if (this.conn >= 0) this.writeFrames(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
  }

  /** Writes encoded frames, behind any already queued. */
  private writeFrames(frames: Buffer): void {
    if (this.queue.length) {
      this.queue.push(frames);
      this.queued += frames.length;
      return;
    }
    this.writeOut(frames);
  }

  private writeOut(frame: Buffer): void {
    let off = 0;
    while (off < frame.length) {
      const n = libc.write(this.conn, frame.subarray(off));
      if (n > 0) {
        off += n;
        continue;
      }
      if (n === -libc.EAGAIN_ERRNO) {
        const rest = frame.subarray(off);
        this.queue.push(rest);
        this.queued += rest.length;
        this.executor.watch(this.conn, libc.EPOLLIN | libc.EPOLLOUT, (ev) => this.ready(ev));
        return;
      }
      this.disconnect();
      return;
    }
  }

  private flush(): void {
    while (this.queue.length) {
      const frame = this.queue.shift()!;
      this.queued -= frame.length;
      const before = this.queue.length;
      this.writeOut(frame);
      if (this.conn < 0 || this.queue.length > before) return;
    }
    this.executor.watch(this.conn, libc.EPOLLIN, (ev) => this.ready(ev));
  }

  private accept(): void {
    for (;;) {
      const fd = libc.acceptNonBlocking(this.listenFd);
      if (fd < 0) return;
      // One toolstack at a time: a new one (a restarted daemon) replaces the old.
      this.disconnect();
      this.conn = fd;
      this.decoder = new FrameDecoder();
      this.executor.watch(fd, libc.EPOLLIN, (ev) => this.ready(ev));
    }
  }

  private ready(events: number): void {
    if (events & libc.EPOLLOUT) this.flush();
    if (this.conn < 0 || !(events & (libc.EPOLLIN | libc.EPOLLHUP | libc.EPOLLERR))) return;
    // The toolstack kicks after each request; the signal is spent now.
    this.executor.dropPendingKicks();
    for (;;) {
      const n = libc.read(this.conn, this.readBuf);
      if (n === -libc.EAGAIN_ERRNO) return;
      if (n <= 0) {
        this.disconnect();
        return;
      }
      let msgs: unknown[];
      try {
        msgs = this.decoder.push(Buffer.from(this.readBuf.subarray(0, n)));
      } catch {
        this.disconnect();
        return;
      }
      // What handling these requests says goes out in one write.
      this.cork();
      try {
        for (const m of msgs) this.executor.handle(m as ProcessRequest);
      } finally {
        this.uncork();
      }
      if (this.conn < 0) return;
    }
  }

  private disconnect(): void {
    if (this.conn < 0) return;
    this.executor.unwatch(this.conn);
    libc.close(this.conn);
    this.conn = -1;
    this.queue = [];
    this.queued = 0;
  }

  close(): void {
    this.disconnect();
    this.executor.unwatch(this.listenFd);
    libc.close(this.listenFd);
  }
}
