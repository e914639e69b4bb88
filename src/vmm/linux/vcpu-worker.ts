// The thread of one Linux VM's vCPU (see vcpu-thread.ts): builds the VM
// with the in-kernel irqchip and the probed CPUID, loads the bzImage and
// its initrd, adds the COM1 UART, and runs the vCPU until the guest ends
// or the executor stops it. Console bytes go out a line at a time.
import { workerData } from 'node:worker_threads';
import { Kvm } from '../../kvm/kvm.js';
import * as libc from '../../sys/libc.js';
import type { VmExit } from '../exit.js';
import { Machine, monotonicNs, Outcome } from '../machine.js';
import { COM1_IRQ, UartModule } from '../modules/uart.js';
import { KICK_SIGNAL, serializeError } from '../protocol.js';
import { readRegularFile } from '../regular-file.js';
import { parseBzImage } from './bzimage.js';
import { extractVmlinux } from './vmlinux.js';
import type { LinuxVcpuData, LinuxVcpuMessage } from './vcpu-thread.js';

const data = workerData as LinuxVcpuData;
const { port, wakeFd } = data;
const control = new Int32Array(data.control);
const kick = libc.sigset(KICK_SIGNAL);
/** Console bytes are held until a newline, this many, or this long (a timer cuts KVM_RUN short for them). */
const CONSOLE_BATCH = 256;
const CONSOLE_HOLD_NS = 20_000_000;

function post(msg: LinuxVcpuMessage): void {
  port.postMessage(msg);
  libc.eventfdSignal(wakeFd);
}

// The kick waits, pending, outside KVM_RUN: it cuts the next entry short and is never lost.
libc.blockSignals(kick);
libc.setThreadName(`lvm-linux-${data.vmId}`);
const timer = libc.threadTimerCreate(KICK_SIGNAL);

let held: number[] = [];
let booted = false;
let timerArmed = false;
function flushConsole(): void {
  if (held.length === 0) return;
  post({ kind: 'console', data: new Uint8Array(held) });
  held = [];
}

/** A partial line waits at most CONSOLE_HOLD_NS: the timer's signal ends the KVM_RUN it falls in. */
function holdConsole(bytes: Uint8Array): void {
  for (const b of bytes) held.push(b);
  if (held.length >= CONSOLE_BATCH || bytes.includes(10)) flushConsole();
  if (held.length > 0 && !timerArmed) {
    libc.threadTimerOnce(timer, CONSOLE_HOLD_NS);
    timerArmed = true;
  }
}

function run(m: Machine): VmExit {
  for (;;) {
    const outcome = m.run(control);
    if (outcome === Outcome.Ended) return m.exit ?? { kind: 'crash', code: 'internal-error', reason: 'ended without a stated reason' };
    if (outcome === Outcome.Interrupted) {
      while (libc.takePendingSignal(kick) !== 0);
      timerArmed = false;
      flushConsole();
      if (Atomics.load(control, 0) !== 0) return { kind: 'destroyed' };
      continue;
    }
    // Parked in a POLL (a guest of ours that uses the hypercalls): sleep to its deadline or a stop.
    const waitMs = Math.max(0, (m.deadlineNs - monotonicNs()) / 1e6);
    Atomics.wait(control, 0, 0, waitMs);
    if (Atomics.load(control, 0) !== 0) return { kind: 'destroyed' };
    m.wake(0n);
  }
}

function main(): void {
  const kvm = Kvm.open();
  let m: Machine | undefined;
  let exit: VmExit;
  try {
    m = new Machine(kvm, data.memory, undefined, undefined, { cpuid: data.cpuid });
    const shellNs = monotonicNs();
    const image = parseBzImage(data.kernel, readRegularFile(data.kernel));
    const initrd = data.initrd ? { file: data.initrd, bytes: new Uint8Array(readRegularFile(data.initrd)) } : undefined;
    const machine = m;
    machine.onConsole = (bytes) => {
      // A Linux kernel makes no hypercall: its first console byte is the boot marker.
      if (!booted) post({ kind: 'booted', ns: monotonicNs() });
      booted = true;
      holdConsole(bytes);
    };
    machine.onBoot = () => {
      if (!booted) post({ kind: 'booted', ns: machine.firstHypercallNs });
      booted = true;
    };
    // The monitor unpacks the kernel (far faster than the guest's decompressor where guests run slowly).
    const vmlinux = data.decompress === false ? undefined : extractVmlinux(image);
    machine.loadBzImage(image, { vmId: data.vmId, name: data.name, cmdline: data.cmdline, devices: data.devices }, initrd, vmlinux);
    machine.add(new UartModule(machine, (high) => machine.vm.setIrqLine(COM1_IRQ, high)));
    post({ kind: 'loaded', tid: libc.gettid(), shellNs, loadedNs: monotonicNs() });
  } catch (err) {
    libc.threadTimerDelete(timer);
    m?.close();
    kvm.close();
    post({ kind: 'failed', error: serializeError(err) });
    port.close();
    return;
  }
  const start = monotonicNs();
  try {
    exit = run(m);
  } catch (err) {
    exit = { kind: 'crash', code: 'internal-error', reason: `vCPU thread: ${String(err)}` };
  }
  flushConsole();
  post({ kind: 'exit', exit, exits: m.exitCount, cpuNs: monotonicNs() - start, endNs: monotonicNs() });
  const destroyNs = monotonicNs();
  libc.threadTimerDelete(timer);
  m.close();
  kvm.close();
  post({ kind: 'freed', destroyNs, destroyedNs: monotonicNs() });
  port.close();
}

// An error nobody expected outside the vCPU loop: the VM ends with it.
process.on('uncaughtException', (err) => {
  post({ kind: 'exit', exit: { kind: 'crash', code: 'internal-error', reason: `vCPU thread: ${String(err)}` }, exits: 0, cpuNs: 0, endNs: monotonicNs() });
  post({ kind: 'freed', destroyNs: monotonicNs(), destroyedNs: monotonicNs() });
  port.close();
  process.exit(1);
});

main();
