// An 8250/16550A UART at COM1 (ports 0x3f8-0x3ff, IRQ 4) for a Linux
// guest's early output and console (earlyprintk=serial, console=ttyS0):
// what the guest transmits goes to the VM's console stream. Enough of the
// chip for Linux's 8250 driver to find a 16550A and drive it with
// interrupts: the divisor latch, IER/IIR with the THRE and receive
// interrupts, FCR, LCR, MCR with loopback (the driver's existence test),
// LSR, MSR and the scratch register. Receive: bytes given to input().
import { type DeviceModule, Next, type VmContext } from '../devices.js';

export const COM1_PORT = 0x3f8;
export const COM1_IRQ = 4;

const IER_RDI = 0x01;
const IER_THRI = 0x02;
const IIR_NONE = 0x01;
const IIR_THRI = 0x02;
const IIR_RDI = 0x04;
const IIR_FIFO = 0xc0;
const FCR_ENABLE = 0x01;
const FCR_CLEAR_RX = 0x02;
const LCR_DLAB = 0x80;
const MCR_LOOP = 0x10;
const LSR_DR = 0x01;
const LSR_THRE = 0x20;
const LSR_TEMT = 0x40;
const MSR_DCD = 0x80;
const MSR_DSR = 0x20;
const MSR_CTS = 0x10;
/** Received bytes held for the guest at most (more are dropped). */
const RX_MAX = 4096;

export class UartModule implements DeviceModule {
  readonly name = 'uart';
  private ier = 0;
  private lcr = 0;
  private mcr = 0;
  private scr = 0;
  private dll = 12;
  private dlm = 0;
  private fifo = false;
  /** The THRE interrupt is owed (the transmitter emptied since IIR last said so). */
  private thrPending = true;
  private rx: number[] = [];
  private line = false;

  constructor(private readonly vm: VmContext, private readonly setIrq: (high: boolean) => void) {
    vm.bus.pio(COM1_PORT, 8, this.name, (port, data, size, out) => {
      if (out) this.write(port - COM1_PORT, data[0]!);
      else data.fill(0, 0, size).set([this.read(port - COM1_PORT)]);
      this.update();
      return Next.Resume;
    });
  }

  /** Bytes for the guest to receive. */
  input(bytes: Uint8Array): void {
    for (const b of bytes) if (this.rx.length < RX_MAX) this.rx.push(b);
    this.update();
  }

  private write(reg: number, v: number): void {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (reg) {
      case 0:
        if (dlab) this.dll = v;
        else if (this.mcr & MCR_LOOP) this.input(new Uint8Array([v]));
        else {
          this.vm.console(new Uint8Array([v]));
          this.thrPending = true;
        }
        break;
      case 1:
        if (dlab) this.dlm = v;
        else {
          // Enabling THRI with the transmitter empty raises it at once, as the chip does.
          if (v & IER_THRI && !(this.ier & IER_THRI)) this.thrPending = true;
          this.ier = v & 0x0f;
        }
        break;
      case 2:
        this.fifo = (v & FCR_ENABLE) !== 0;
        if (v & FCR_CLEAR_RX) this.rx = [];
        break;
      case 3:
        this.lcr = v;
        break;
      case 4:
        this.mcr = v & 0x1f;
        break;
      case 7:
        this.scr = v;
        break;
    }
  }

  private read(reg: number): number {
    const dlab = (this.lcr & LCR_DLAB) !== 0;
    switch (reg) {
      case 0:
        if (dlab) return this.dll;
        return this.rx.shift() ?? 0;
      case 1:
        return dlab ? this.dlm : this.ier;
      case 2: {
        const id = this.pendingId();
        // Reading IIR that names THRE clears it (8250 rule).
        if (id === IIR_THRI) this.thrPending = false;
        return id | (this.fifo ? IIR_FIFO : 0);
      }
      case 3:
        return this.lcr;
      case 4:
        return this.mcr;
      case 5:
        return LSR_THRE | LSR_TEMT | (this.rx.length > 0 ? LSR_DR : 0);
      case 6:
        if (this.mcr & MCR_LOOP) {
          // Loopback: DTR->DSR, RTS->CTS, OUT1->RI, OUT2->DCD.
          const m = this.mcr;
          return ((m & 0x01) << 5) | ((m & 0x02) << 3) | ((m & 0x04) << 4) | ((m & 0x08) << 4);
        }
        return MSR_DCD | MSR_DSR | MSR_CTS;
      case 7:
        return this.scr;
    }
    return 0;
  }

  private pendingId(): number {
    if (this.ier & IER_RDI && this.rx.length > 0) return IIR_RDI;
    if (this.ier & IER_THRI && this.thrPending) return IIR_THRI;
    return IIR_NONE;
  }

  /** Drives IRQ 4 to what the chip's state asks for (OUT2 gates it on a PC). */
  private update(): void {
    const high = this.pendingId() !== IIR_NONE && (this.mcr & 0x08) !== 0;
    if (high === this.line) return;
    this.line = high;
    this.setIrq(high);
  }

  close(): void {}
}
