// The toolstack's handle on one executor process: spawns it (detached, so
// that it outlives the daemon) or connects to one already running, and
// exchanges framed messages with it over its unix socket.
import { spawn, type ChildProcess } from 'node:child_process';
import { EventEmitter } from 'node:events';
import { closeSync, openSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as libc from '../sys/libc.js';
import { KICK_SIGNAL, type AdoptedRestore, type FailedRestore, type AdoptedService, type AdoptedVm, type ExecutorRequest, type ProcessEvent, type ProcessRequest, type SerializedError } from '../vmm/protocol.js';
import { encodeFrame, FrameDecoder, MAX_FRAME } from '../vmm/wire.js';
import type { ExecutorLink, ExecutorLinkEvents } from './executor-link.js';
import { PACKAGE_ROOT } from './images.js';

const fromSource = import.meta.url.endsWith('.ts');
const MAIN = fileURLToPath(new URL(`../vmm/executor-main.${fromSource ? 'ts' : 'js'}`, import.meta.url));

/** Longest wait for an executor to accept a connection, and then for its hello. */
const HELLO_TIMEOUT_MS = 10_000;
/** Longest wait for an executor told to terminate before it is killed. */
const STOP_TIMEOUT_MS = 10_000;
/** Longest wait, after its link closed, for an executor's process to end. */
const EXIT_WAIT_MS = 2_000;

/** p's value, boxed, if p resolves within ms; else undefined (p is not cancelled). */
async function within<T>(p: Promise<T>, ms: number): Promise<{ value: T } | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)));
  try {
    return await Promise.race([p.then((value) => ({ value })), late]);
  } finally {
    clearTimeout(timer);
  }
}

/** True once no process pid exists, false if it still does after ms. */
async function exitsWithin(pid: number, ms: number): Promise<boolean> {
  for (const until = Date.now() + ms; ;) {
    try {
      process.kill(pid, 0);
    } catch {
      return true;
    }
    if (Date.now() >= until) return false;
    await new Promise((r) => setTimeout(r, 50));
  }
}

export interface Hello {
  id: number;
  pid: number;
  /** The executor thread, which a kick signal interrupts. */
  tid: number;
  vms: AdoptedVm[];
  /** Its just-in-time services. */
  services?: AdoptedService[];
  /** Restores still reading their files. */
  restoring?: AdoptedRestore[];
  /** Restores that failed with no toolstack to hear it. */
  failedRestores?: FailedRestore[];
  pools: Record<number, number>;
}

export class ExecutorProcess extends EventEmitter<ExecutorLinkEvents> implements ExecutorLink {
  load = 0;
  /** Prepared shells per memory size, as last reported. */
  readonly pools = new Map<number, number>();
  /** Pool targets per memory size, as last sent. */
  readonly poolTargets = new Map<number, number>();
  private alive = true;
  private stopping = false;
  private child: ChildProcess | undefined;
  private tid = 0;
  private childExit: Promise<string> | undefined;

  private constructor(
    readonly id: number,
    readonly pid: number,
    readonly socketPath: string,
    private readonly socket: Socket,
  ) {
    super();
    const decoder = new FrameDecoder();
    socket.on('data', (chunk) => {
      let msgs: unknown[];
      try {
        msgs = decoder.push(chunk);
      } catch (err) {
        this.linkError = `its link sent what is not a frame (${(err as Error).message})`;
        socket.destroy();
        return;
      }
      for (const m of msgs) this.onMessage(m as ProcessEvent);
    });
    socket.on('error', (err) => {
      this.linkError ??= `its link failed (${err.message})`;
    });
    socket.on('close', () => void this.onClose());
  }

  /** Why the link broke, if it broke on our side (a bad frame, a socket error). */
  private linkError: string | undefined;

  /** Starts a new executor process whose socket is dir/<id>.sock. */
  static async spawn(id: number, dir: string): Promise<ExecutorProcess> {
    const socketPath = join(dir, `${id}.sock`);
    const log = openSync(join(dir, `${id}.log`), 'a', 0o600);
    // The executor runs on the main thread. It needs little JS heap: its VMs'
    // memory is mapped, not allocated, and a small young generation keeps
    // its memory per VM low (V8 would grow it to tens of MiB of garbage).
    const args = ['--max-semi-space-size=1', '--max-old-space-size=256', '--v8-pool-size=1', ...(fromSource ? ['--import', 'tsx'] : []), MAIN, '--socket', socketPath, '--id', String(id)];
    let child: ChildProcess;
    try {
      // Detached: its own session, so that it survives the daemon and its signals.
      child = spawn(process.execPath, args, { detached: true, stdio: ['ignore', 'pipe', log], cwd: PACKAGE_ROOT });
    } finally {
      closeSync(log);
    }
    const exited = new Promise<string>((resolve) => {
      child.once('exit', (code, signal) => resolve(signal ? `killed by ${signal}` : `exited with code ${code}`));
    });
    await new Promise<void>((resolve, reject) => {
      // An executor that never gets ready is killed, not waited for forever.
      const timer = setTimeout(() => {
        child.kill('SIGKILL');
      }, 30_000);
      child.once('exit', () => clearTimeout(timer));
      let out = '';
      const onData = (b: Buffer): void => {
        out += b.toString();
        if (out.includes('ready\n')) {
          clearTimeout(timer);
          cleanup();
          resolve();
        }
      };
      const onExit = (): void => {
        cleanup();
        void exited.then((how) => reject(new Error(`executor ${id} ${how} before it was ready (see ${join(dir, `${id}.log`)})`)));
      };
      const cleanup = (): void => {
        child.stdout!.off('data', onData);
        child.off('exit', onExit);
      };
      child.stdout!.on('data', onData);
      child.once('exit', onExit);
    });
    // From here on the executor writes nothing to stdout; let it go.
    child.stdout!.destroy();
    child.unref();
    const { link } = await ExecutorProcess.connect(id, socketPath, child.pid!);
    link.child = child;
    link.childExit = exited;
    return link;
  }

  /**
   * Connects to a running executor and asks what it holds. Bounded: an
   * executor that does not answer within HELLO_TIMEOUT_MS is not waited for.
   */
  static async connect(id: number, socketPath: string, pid?: number): Promise<{ link: ExecutorProcess; hello: Hello }> {
    const socket = await new Promise<Socket>((resolve, reject) => {
      const s = connect(socketPath);
      const timer = setTimeout(() => {
        s.destroy();
        reject(new Error(`executor ${id}: ${socketPath} accepted no connection within ${HELLO_TIMEOUT_MS} ms`));
      }, HELLO_TIMEOUT_MS);
      s.once('connect', () => {
        clearTimeout(timer);
        s.off('error', reject);
        resolve(s);
      });
      s.once('error', (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
    const link = new ExecutorProcess(id, pid ?? 0, socketPath, socket);
    const hello = await new Promise<Hello>((resolve, reject) => {
      const timer = setTimeout(() => {
        link.stopping = true;
        link.alive = false;
        socket.destroy();
        reject(new Error(`executor ${id}: no answer on ${socketPath} within ${HELLO_TIMEOUT_MS} ms`));
      }, HELLO_TIMEOUT_MS);
      link.helloWaiter = (h) => {
        clearTimeout(timer);
        resolve(h);
      };
      link.once('lost', (e) => {
        clearTimeout(timer);
        reject(new Error(e.message));
      });
      link.write({ op: 'hello' });
    });
    if (!pid) (link as { pid: number }).pid = hello.pid;
    link.tid = hello.tid;
    for (const [memory, depth] of Object.entries(hello.pools)) link.pools.set(Number(memory), depth);
    return { link, hello };
  }

  private helloWaiter: ((h: Hello) => void) | undefined;
  /**
   * Events that came after the hello, before anyone could hear them: an
   * adopted executor's VMs print on while the daemon connects to the next
   * executor, and a line said then must not be lost. Kept until release().
   */
  private held: ExecutorLinkEvents['event'][0][] | undefined = [];

  /** Delivers what was held since the hello; from now on events go out as they come. */
  release(): void {
    const held = this.held;
    this.held = undefined;
    for (const ev of held ?? []) this.emit('event', ev);
  }

  get isAlive(): boolean {
    return this.alive;
  }

  /** Prepared shells of every size. */
  get shells(): number {
    let n = 0;
    for (const d of this.pools.values()) n += d;
    return n;
  }

  send(req: ExecutorRequest): void {
    if (!this.alive) throw new Error(`executor ${this.id} is not running`);
    if (req.op === 'pool') this.poolTargets.set(req.memory, req.target);
    this.write(req);
    // The executor thread may be inside KVM_RUN with a guest that never
    // exits: interrupt it so it reads the request now.
    if (this.tid) libc.tgkill(this.pid, this.tid, KICK_SIGNAL);
  }

  /** The toolstack has recorded this VM's end. */
  forget(vmId: number): void {
    if (this.alive) this.write({ op: 'forget', vmId });
  }

  setBusy(): void {}

  /**
   * Destroys the executor's VMs and ends its process, returning once the
   * process is gone. Bounded: one that has not closed its link, or not
   * exited, within STOP_TIMEOUT_MS is killed.
   */
  async stop(): Promise<void> {
    if (!this.alive) return;
    this.stopping = true;
    const closed = new Promise<void>((resolve) => this.socket.once('close', () => resolve()));
    this.write({ op: 'terminate' });
    if (!(await within(closed, STOP_TIMEOUT_MS))) {
      this.kill();
      this.socket.destroy();
    }
    // Its link closes before its process has let go of everything: taps
    // (named by VM id) linger until it is gone, and a daemon started next
    // would find their names taken (TUNSETIFF EBUSY). So the stop ends
    // with the process.
    if (this.pid && !(await exitsWithin(this.pid, STOP_TIMEOUT_MS))) {
      this.kill();
      await exitsWithin(this.pid, STOP_TIMEOUT_MS);
    }
    this.alive = false;
  }

  /**
   * Ends an executor whose link can no longer be trusted (it sent garbage,
   * or left a request unanswered): its process is killed and its VMs are
   * reported lost with the reason. Nothing waits on it any longer.
   */
  fail(reason: string): void {
    if (!this.alive) return;
    this.linkError ??= reason;
    this.kill();
    this.lose({ name: 'ExecutorError', message: `executor ${this.id} (pid ${this.pid}) ${reason}; it was killed (SIGKILL) with its VMs` });
  }

  private kill(): void {
    if (!this.pid) return;
    try {
      process.kill(this.pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }

  /** Lets go of the executor without stopping it (daemon restart). */
  detach(): void {
    this.stopping = true;
    this.alive = false;
    this.socket.end();
  }

  /**
   * Sends a request; one larger than the executor takes in a frame is
   * refused here (it would make the executor drop the link).
   */
  private write(req: ProcessRequest): void {
    const frame = encodeFrame(req);
    if (frame.length - 4 > MAX_FRAME) {
      throw new Error(`executor ${this.id}: a ${req.op} request of ${frame.length - 4} bytes exceeds the ${MAX_FRAME} bytes a frame to it may have`);
    }
    this.socket.write(frame);
  }

  private onMessage(ev: ProcessEvent): void {
    // What an adopted executor said before its hello reply is in that reply
    // (its records and console history): heard twice, a line would repeat.
    if (this.helloWaiter && ev.ev !== 'hello' && ev.ev !== 'executor-lost') return;
    switch (ev.ev) {
      case 'hello':
        this.helloWaiter?.(ev);
        this.helloWaiter = undefined;
        return;
      case 'executor-lost':
        this.lose(ev.error);
        return;
      case 'pool':
        this.pools.set(ev.memory, ev.depth);
        break;
      case 'started':
        // The executor reports its pool when idle; a shell taken is gone now.
        if (ev.warm && ev.memory !== undefined) {
          this.pools.set(ev.memory, Math.max(0, (this.pools.get(ev.memory) ?? 0) - 1));
        }
        break;
      default:
        break;
    }
    if (this.held) this.held.push(ev);
    else this.emit('event', ev);
  }

  private async onClose(): Promise<void> {
    if (this.stopping || !this.alive) {
      this.alive = false;
      return;
    }
    // An executor that closes its link exits too (it dies, or it stops):
    // how, it says by exiting within a moment. One that lives on with its
    // link gone (or broken by us, for a bad frame) cannot be reached: it is
    // ended, and its VMs reported lost, rather than waited for.
    let how: string | undefined = 'its connection closed';
    if (this.childExit) how = (await within(this.childExit, EXIT_WAIT_MS))?.value;
    else if (this.pid) how = (await exitsWithin(this.pid, EXIT_WAIT_MS)) ? 'its process is gone' : undefined;
    if (how === undefined) {
      this.fail(this.linkError ?? 'closed its link but did not exit');
      return;
    }
    this.lose({ name: 'ExecutorError', message: `executor ${this.id} (pid ${this.pid}) ${how}` });
  }

  private lose(error: SerializedError): void {
    if (!this.alive) return;
    this.alive = false;
    this.socket.destroy();
    this.emit('lost', error);
  }
}
