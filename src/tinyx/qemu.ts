// Boots a kernel and initramfs under QEMU's microvm machine with TCG: on
// this host TCG runs Linux far faster than KVM, which emulates every guest
// instruction. The console is the UART on stdio; the vif is a virtio-mmio
// net device on a tap (QEMU adds the virtio_mmio.device= words itself).
import { type ChildProcess, spawn } from 'node:child_process';

export interface QemuBoot {
  kernel: string;
  initrd: string;
  cmdline: string;
  memoryMiB: number;
  /** A tap device that exists (QEMU opens it by name); none: no network. */
  tap?: string;
  mac?: string;
  /** Instead of a tap: QEMU's user network, a host port forwarded to the guest's. */
  userNet?: { hostPort: number; guestPort: number };
  accel?: 'tcg' | 'kvm';
}

export interface QemuVm {
  child: ChildProcess;
  /** Everything the console printed so far. */
  console(): string;
  /** Resolves when the console has printed `text` (rejects when QEMU exits first or after timeoutMs). */
  waitFor(text: string | RegExp, timeoutMs: number): Promise<number>;
  exited: Promise<number | null>;
  stop(): Promise<void>;
}

export function qemuArgs(b: QemuBoot): string[] {
  const args = [
    '-M', 'microvm,x-option-roms=off,rtc=off,acpi=off', '-accel', b.accel ?? 'tcg', '-cpu', 'max',
    '-m', String(b.memoryMiB), '-smp', '1', '-nodefaults', '-no-user-config', '-display', 'none', '-no-reboot',
    '-serial', 'stdio', '-kernel', b.kernel, '-initrd', b.initrd, '-append', b.cmdline,
  ];
  if (b.tap) {
    args.push('-netdev', `tap,id=n0,ifname=${b.tap},script=no,downscript=no`,
      '-device', `virtio-net-device,netdev=n0${b.mac ? `,mac=${b.mac}` : ''}`);
  }
  if (b.userNet) {
    // the guest's address and gateway are user networking's defaults, as in the cfg's ip=
    args.push('-netdev', `user,id=n0,net=10.0.2.0/24,hostfwd=tcp:127.0.0.1:${b.userNet.hostPort}-10.0.2.15:${b.userNet.guestPort}`,
      '-device', 'virtio-net-device,netdev=n0');
  }
  return args;
}

export function bootQemu(b: QemuBoot): QemuVm {
  const t0 = performance.now();
  const child = spawn('qemu-system-x86_64', qemuArgs(b), { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  const waiters = new Set<() => void>();
  const onData = (s: string): void => {
    out += s;
    for (const w of waiters) w();
  };
  child.stdout!.setEncoding('utf8').on('data', onData);
  child.stderr!.setEncoding('utf8').on('data', onData);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => {
    for (const w of waiters) w();
    resolve(code);
  }));
  return {
    child,
    console: () => out,
    waitFor(text, timeoutMs) {
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
          waiters.delete(check);
          reject(new Error(`QEMU: no "${String(text)}" on the console within ${timeoutMs} ms; it printed:\n${out.slice(-3000)}`));
        }, timeoutMs);
        const check = (): void => {
          if (typeof text === 'string' ? out.includes(text) : text.test(out)) {
            waiters.delete(check);
            clearTimeout(timer);
            resolve(performance.now() - t0);
          } else if (child.exitCode !== null || child.signalCode !== null) {
            waiters.delete(check);
            clearTimeout(timer);
            reject(new Error(`QEMU exited (${child.exitCode ?? child.signalCode}) before "${String(text)}"; it printed:\n${out.slice(-3000)}`));
          }
        };
        waiters.add(check);
        check();
      });
    },
    exited,
    async stop() {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await exited;
    },
  };
}
