// A Linux VM's vCPU on a thread of its own. A Linux vCPU halts inside KVM
// (the in-kernel irqchip wakes it), so KVM_RUN blocks for as long as the
// guest idles: it cannot take turns on the executor thread as unikernels
// do. The executor starts one of these per Linux VM and hears from it over
// a MessagePort, woken by an eventfd it watches (its thread never returns
// to an event loop); it stops it with a flag and the kick signal.
import type { MessagePort, Worker } from 'node:worker_threads';
import { workerThreads } from '../../sys/builtins.js';
import * as libc from '../../sys/libc.js';
import type { DeviceEntry } from '../device-page.js';
import type { VmExit } from '../exit.js';
import { KICK_SIGNAL, type SerializedError } from '../protocol.js';
import { startWorkerBeside } from '../workers.js';

// In the CLI's bundle (dist/cli/*.cjs) import.meta.url is the bundle's: the worker is still in dist/vmm/linux.
const HERE = import.meta.url.endsWith('.cjs') ? new URL('../vmm/linux/here', import.meta.url).href : import.meta.url;

/** What the vCPU thread is given. */
export interface LinuxVcpuData {
  vmId: number;
  name: string;
  kernel: string;
  initrd?: string;
  cmdline: string;
  memory: number;
  devices: DeviceEntry[];
  /** false: enter the bzImage's own decompressor instead of the kernel the monitor unpacked. */
  decompress?: boolean;
  /** KVM_SET_CPUID2's argument, probed once by the executor (linux/cpuid.ts). */
  cpuid: Uint8Array;
  port: MessagePort;
  wakeFd: number;
  /** [0]: stop asked. */
  control: SharedArrayBuffer;
}

/** vCPU thread → executor, in this order: loaded or failed, then console/booted, exit, freed. */
export type LinuxVcpuMessage =
  | { kind: 'loaded'; tid: number; shellNs: number; loadedNs: number }
  | { kind: 'failed'; error: SerializedError }
  | { kind: 'console'; data: Uint8Array }
  | { kind: 'booted'; ns: number }
  | { kind: 'exit'; exit: VmExit; exits: number; cpuNs: number; endNs: number }
  | { kind: 'freed'; destroyNs: number; destroyedNs: number };

/** The executor's handle on one Linux VM's vCPU thread. */
export class LinuxVcpuThread {
  readonly wakeFd: number;
  private readonly port: MessagePort;
  private readonly control: Int32Array;
  private readonly worker: Worker;
  private tid = 0;
  stopped = false;
  /** What the VM's end is reported as when the executor stopped it. */
  stopExit: VmExit = { kind: 'destroyed' };

  constructor(config: Omit<LinuxVcpuData, 'port' | 'wakeFd' | 'control'>) {
    this.wakeFd = libc.eventfd();
    const { port1, port2 } = new (workerThreads().MessageChannel)();
    this.port = port2;
    const control = new SharedArrayBuffer(8);
    this.control = new Int32Array(control);
    const data: LinuxVcpuData = { ...config, port: port1, wakeFd: this.wakeFd, control };
    try {
      this.worker = startWorkerBeside(HERE, 'vcpu-worker', { workerData: data, transferList: [port1] });
    } catch (err) {
      port2.close();
      libc.close(this.wakeFd);
      throw err;
    }
    // It ends by itself after its VM is freed; it never keeps the process alive.
    this.worker.unref();
  }

  /** The messages that came since the last call. */
  receive(): LinuxVcpuMessage[] {
    libc.eventfdDrain(this.wakeFd);
    const out: LinuxVcpuMessage[] = [];
    const { receiveMessageOnPort } = workerThreads();
    for (let m = receiveMessageOnPort(this.port); m; m = receiveMessageOnPort(this.port)) {
      const msg = m.message as LinuxVcpuMessage;
      if (msg.kind === 'loaded') this.tid = msg.tid;
      out.push(msg);
    }
    return out;
  }

  /** Ends the VM: its thread sees the flag before its next entry, and the kick cuts a KVM_RUN short. */
  stop(exit?: VmExit): void {
    if (!this.stopped && exit) this.stopExit = exit;
    this.stopped = true;
    Atomics.store(this.control, 0, 1);
    Atomics.notify(this.control, 0);
    if (this.tid) libc.tgkill(libc.getpid(), this.tid, KICK_SIGNAL);
  }

  /** After 'freed' (or when giving up on it). */
  close(): void {
    this.port.close();
    libc.close(this.wakeFd);
  }
}
