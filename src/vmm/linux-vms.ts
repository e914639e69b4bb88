// Linux VMs on an executor: each one's vCPU runs on a thread of its own
// (linux/vcpu-thread.ts), which builds and loads the VM and reports back;
// what it says goes out as the events of any VM.
import * as libc from '../sys/libc.js';
import type { Executor } from './executor.js';
import { monotonicNs } from './machine.js';
import { linuxCpuid } from './linux/cpuid.js';
import { LinuxVcpuThread } from './linux/vcpu-thread.js';
import { serializeError, type AdoptedVm, type CreateRequest, type Timings } from './protocol.js';
import { appendHistory } from './vm-entry.js';

/** Longest an executor that stops waits for its Linux VMs to free what they hold. */
const LINUX_STOP_MS = 5_000;

export /** A Linux VM: its vCPU runs on a thread of its own (see linux/vcpu-thread.ts). */
interface LinuxEntry {
  config: CreateRequest;
  thread: LinuxVcpuThread;
  timings: Timings;
  console: Uint8Array;
  started: boolean;
}

/** A Linux VM: a thread for its vCPU, which builds and loads it and reports back (linuxEvents). */
export function createLinux(x: Executor, req: CreateRequest): void {
  const timings: Timings = { trace: req.trace, requestNs: monotonicNs(), shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 };
  try {
    if (x.vms.has(req.vmId) || x.linuxVms.has(req.vmId)) throw new Error(`VM id ${req.vmId} already exists on this executor`);
    const cpuid = linuxCpuid(x.kvm);
    // Features this host cannot run but shows the guest anyway are turned off by options ahead of the VM's own.
    const cmdline = [...cpuid.kernelOptions, req.cmdline].filter((s) => s).join(' ');
    const thread = new LinuxVcpuThread({
      vmId: req.vmId, name: req.name, kernel: req.image, initrd: req.linux?.initrd, cmdline, memory: req.memory,
      devices: req.devices, cpuid: cpuid.table,
    });
    const e: LinuxEntry = { config: req, thread, timings, console: new Uint8Array(0), started: false };
    x.linuxVms.set(req.vmId, e);
    x.watch(thread.wakeFd, libc.EPOLLIN, () => linuxEvents(x, e));
  } catch (err) {
    x.emit({ ev: 'create-failed', vmId: req.vmId, error: serializeError(err) });
  }
}

/** What a Linux VM's vCPU thread said, as the events of any VM. */
function linuxEvents(x: Executor, e: LinuxEntry): void {
  const vmId = e.config.vmId;
  for (const msg of e.thread.receive()) {
    switch (msg.kind) {
      case 'loaded':
        e.timings.shellNs = msg.shellNs;
        e.timings.loadedNs = msg.loadedNs;
        e.started = true;
        // Destroyed while it loaded: the stop it missed (no tid yet) goes again.
        if (e.thread.stopped) e.thread.stop();
        x.emit({ ev: 'started', vmId, warm: false, timings: e.timings, memory: e.config.memory });
        break;
      case 'failed':
        dropLinux(x, e);
        x.emit({ ev: 'create-failed', vmId, error: msg.error });
        return;
      case 'booted':
        if (e.timings.bootNs === 0) {
          e.timings.bootNs = msg.ns;
          x.emit({ ev: 'booted', vmId, bootNs: msg.ns });
        }
        break;
      case 'console':
        if (x.keepRecords) e.console = appendHistory(e.console, msg.data);
        x.emit({ ev: 'console', vmId, data: msg.data });
        break;
      case 'exit': {
        e.timings.endNs = msg.endNs;
        const exit = msg.exit.kind === 'destroyed' ? e.thread.stopExit : msg.exit;
        if (x.keepRecords) x.ended.set(vmId, { config: e.config, state: 'exited', warm: false, timings: e.timings, exit, console: e.console });
        x.emit({ ev: 'exit', vmId, exit, timings: e.timings, exits: msg.exits });
        break;
      }
      case 'freed':
        e.timings.destroyNs = msg.destroyNs;
        e.timings.destroyedNs = msg.destroyedNs;
        dropLinux(x, e);
        x.emit({ ev: 'freed', vmId, destroyNs: msg.destroyNs, destroyedNs: msg.destroyedNs });
        return;
    }
  }
}

/** A running Linux VM as a re-adopting toolstack sees it (it can follow and destroy it). */
export function linuxRecord(e: LinuxEntry): AdoptedVm {
  return { config: e.config, state: 'running', warm: false, timings: e.timings, exit: undefined, console: e.console };
}

function dropLinux(x: Executor, e: LinuxEntry): void {
  x.unwatch(e.thread.wakeFd);
  x.linuxVms.delete(e.config.vmId);
  e.thread.close();
}

/** Stops every Linux VM and waits (bounded) until each has freed what it held. */
export function stopLinuxVms(x: Executor): void {
  for (const e of x.linuxVms.values()) e.thread.stop();
  const nap = new Int32Array(new SharedArrayBuffer(4));
  for (const until = Date.now() + LINUX_STOP_MS; x.linuxVms.size > 0 && Date.now() < until;) {
    for (const e of [...x.linuxVms.values()]) linuxEvents(x, e);
    if (x.linuxVms.size > 0) Atomics.wait(nap, 0, 0, 1);
  }
  for (const e of [...x.linuxVms.values()]) dropLinux(x, e);
}
