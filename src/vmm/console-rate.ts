// A VM's console rate, one half of its console bound (the other: what a
// toolstack that does not keep up misses is dropped and counted, see
// socket-port.ts). Console output of any kind (CONSOLE_WRITE, virtio-console)
// spends the VM's credit; a guest past its rate waits, parked and costing
// nothing, until it is back under it: one guest writing without pause must
// not take its executor's thread and link from the VMs beside it.

/** Console bytes a VM may write per second, and in one burst. */
export const CONSOLE_RATE = 1 << 20;
export const CONSOLE_BURST = 256 * 1024;

export class ConsoleRate {
  /** Bytes it may write now, as of atNs; negative while it waits. */
  private credit = CONSOLE_BURST;
  private atNs: number;
  /** Time it waited, all told. */
  throttledNs = 0;

  constructor(nowNs: number) {
    this.atNs = nowNs;
  }

  /** Spends credit for bytes written at nowNs; how long (ns) the guest must wait to be back under its rate, or 0. */
  spend(bytes: number, nowNs: number): number {
    this.credit = Math.min(CONSOLE_BURST, this.credit + ((nowNs - this.atNs) * CONSOLE_RATE) / 1e9) - bytes;
    this.atNs = nowNs;
    if (this.credit >= 0) return 0;
    const waitNs = Math.ceil((-this.credit * 1e9) / CONSOLE_RATE);
    this.throttledNs += waitNs;
    return waitNs;
  }
}
