// An executor process's link to its toolstack: a unix socket served by the
// executor thread itself, in its own epoll loop, so that a request reaches
// the thread that runs the VMs without a hop through another thread.
//
// The stream is a sequence of whole frames, in the order they were sent:
// what a write leaves unwritten stays at the head of the queue, ahead of
// every later frame (the socket is non-blocking; the thread never waits for
// a slow reader). While the link is backed up, console output is held per
// VM, up to CONSOLE_HELD bytes each: beyond that it is dropped and counted,
// and the count goes with that VM's next console frame. Anything else a VM
// sends first lets out what its console holds, so each VM's frames keep
// their order.
import * as libc from '../sys/libc.js';
import type { Executor, ExecutorPort } from './executor.js';
import type { ProcessEvent, ProcessRequest } from './protocol.js';
import { encodeFrame, FrameDecoder, MAX_FRAME } from './wire.js';

/** Console bytes held per VM while the toolstack does not keep up; more is dropped (and counted). */
export const CONSOLE_HELD = 256 * 1024;

interface HeldConsole {
  chunks: Uint8Array[];
  bytes: number;
  /** Dropped since the last console frame of this VM went out. */
  dropped: number;
}

export class SocketPort implements ExecutorPort {
  private readonly listenFd: number;
  private conn = -1;
  private decoder = new FrameDecoder();
  private readonly readBuf = new Uint8Array(256 * 1024);
  /** Encoded bytes not yet written, oldest first; the head's first headOff bytes are written. */
  private queue: Buffer[] = [];
  private headOff = 0;
  /** Console output held while the queue is not empty, by VM. */
  private held = new Map<number, HeldConsole>();
  /** Frames held while a batch of requests is handled, written at its end in one go. */
  private corked: Buffer[] | undefined;
  private corkDepth = 0;
  private corkedBytes = 0;
  /** Console bytes dropped for a slow toolstack, all VMs. */
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
    // The hello's records carry each VM's console history up to now, and
    // the toolstack ignores what came before it: console held back from
    // before the hello, sent after it, would be heard twice.
    if (ev.ev === 'hello') this.held.clear();
    if (ev.ev === 'console' && this.backedUp()) {
      this.hold(ev.vmId, ev.data, ev.dropped ?? 0);
      return;
    }
    const vmId = 'vmId' in ev ? ev.vmId : undefined;
    if (vmId !== undefined && this.held.has(vmId)) this.releaseHeld(vmId);
    this.push(this.encode(ev));
  }

  /**
   * A frame the toolstack accepts: one beyond MAX_FRAME (a snapshot or page
   * copy of a large VM sent back whole) would make it drop the link, so the
   * request it answers fails instead, saying why.
   */
  private encode(ev: ProcessEvent): Buffer {
    const frame = encodeFrame(ev);
    if (frame.length - 4 <= MAX_FRAME || !('requestId' in ev) || !('vmId' in ev)) return frame;
    const message = `its answer of ${frame.length - 4} bytes exceeds the ${MAX_FRAME} bytes a frame to the toolstack may have`;
    return encodeFrame({ ev: 'save-failed', requestId: ev.requestId, vmId: ev.vmId, error: { name: 'Error', message } });
  }

  /**
   * Holds what is sent from now until uncork(), then writes it in one go:
   * each write wakes the toolstack, and here a wake-up costs the writer
   * ~50 µs. Nests.
   */
  cork(): void {
    if (this.corkDepth++ === 0) {
      this.corked = [];
      this.corkedBytes = 0;
    }
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
    this.corkedBytes = 0;
    if (this.conn >= 0) this.enqueue(frames.length === 1 ? frames[0]! : Buffer.concat(frames));
  }

  /** Console bytes this port holds for a VM that the toolstack has not yet been sent. */
  heldBytes(vmId: number): number {
    return this.held.get(vmId)?.bytes ?? 0;
  }

  /** True while frames wait for the socket (or a batch grows large): console output is then held. */
  private backedUp(): boolean {
    return this.queue.length > 0 || this.corkedBytes > CONSOLE_HELD;
  }

  private hold(vmId: number, data: Uint8Array, dropped: number): void {
    let h = this.held.get(vmId);
    if (!h) {
      h = { chunks: [], bytes: 0, dropped: 0 };
      this.held.set(vmId, h);
    }
    h.dropped += dropped;
    const room = CONSOLE_HELD - h.bytes;
    const take = Math.min(room, data.length);
    if (take > 0) {
      h.chunks.push(take === data.length ? data : data.subarray(0, take));
      h.bytes += take;
    }
    if (take < data.length) {
      h.dropped += data.length - take;
      this.dropped += data.length - take;
    }
  }

  /** Sends a VM's held console as one frame. */
  private releaseHeld(vmId: number): void {
    this.push(this.takeHeld(vmId));
  }

  /** A VM's held console, as one frame, no longer held. */
  private takeHeld(vmId: number): Buffer {
    const h = this.held.get(vmId)!;
    this.held.delete(vmId);
    const data = h.chunks.length === 1 ? h.chunks[0]! : new Uint8Array(Buffer.concat(h.chunks));
    return encodeFrame({ ev: 'console', vmId, data, ...(h.dropped ? { dropped: h.dropped } : {}) });
  }

  private push(frame: Buffer): void {
    if (!this.corked) {
      this.enqueue(frame);
      return;
    }
    this.corked.push(frame);
    this.corkedBytes += frame.length;
  }

  /** Writes encoded frames behind any already queued, as much as the socket takes now. */
  private enqueue(frames: Buffer): void {
    this.queue.push(frames);
    if (this.queue.length === 1) this.flush();
  }

  /** Writes from the head of the queue until it is empty or the socket is full. */
  private flush(): void {
    while (this.conn >= 0) {
      const head = this.queue[0];
      if (!head) {
        // Drained: what the consoles held goes now, then reading only.
        if (this.held.size) {
          for (const vmId of [...this.held.keys()]) this.queue.push(this.takeHeld(vmId));
          continue;
        }
        this.executor.watch(this.conn, libc.EPOLLIN, (ev) => this.ready(ev));
        return;
      }
      const n = libc.write(this.conn, head.subarray(this.headOff));
      if (n > 0) {
        this.headOff += n;
        if (this.headOff === head.length) {
          this.queue.shift();
          this.headOff = 0;
        }
        continue;
      }
      if (n === -libc.EAGAIN_ERRNO) {
        this.executor.watch(this.conn, libc.EPOLLIN | libc.EPOLLOUT, (ev) => this.ready(ev));
        return;
      }
      this.disconnect();
      return;
    }
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
    if (events & libc.EPOLLOUT && this.queue.length) this.flush();
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
    // The next toolstack starts from a hello: what was not written is in its records (console history).
    this.queue = [];
    this.headOff = 0;
    this.held.clear();
  }

  close(): void {
    this.disconnect();
    this.executor.unwatch(this.listenFd);
    libc.close(this.listenFd);
  }
}
