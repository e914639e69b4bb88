// int3 in a Linux VM: some hosts' KVM cannot emulate it (this one: a probe
// VM ends in "emulation failure"), and Linux runs one in its boot self-test.
// The monitor then delivers the #BP itself. A guest with an IDT whose #BP
// handler stores the return address it was given must see the address
// after the int3, whether KVM or the monitor delivered it, and then go on
// (to a hypercall this VM has no module for, which ends it). The guest
// page walk that finds the instruction is checked on the shell's tables.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { patchSregs } from '../src/sys/kvm-structs.js';
import { HC_PIO_BASE } from '../src/vmm/abi.js';
import { CODE_SELECTOR } from '../src/vmm/cpu.js';
import { linuxCpuid } from '../src/vmm/linux/cpuid.js';
import { guestPhysical } from '../src/vmm/linux/guest-page-walk.js';
import { PML4_GPA } from '../src/vmm/layout.js';
import { Machine, Outcome } from '../src/vmm/machine.js';

const MEM = 2 * 1024 * 1024;
const CODE = 0x100000;
const HANDLER = 0x100100;
const SAVED = 0x101000;
const IDT = 0x102000;

void describe('int3 in a Linux VM', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  void it('the #BP handler runs with the address after the int3, and the guest goes on', () => {
    const kvm = Kvm.open();
    const m = new Machine(kvm, MEM, undefined, undefined, { cpuid: linuxCpuid(kvm).table });
    try {
      // int3; mov $HC_PIO_BASE,%dx; out %eax,(%dx)
      m.ram.write(CODE, new Uint8Array([0xcc, 0x66, 0xba, HC_PIO_BASE & 0xff, HC_PIO_BASE >> 8, 0xef]));
      // mov (%rsp),%rax; mov %rax,SAVED; iretq
      m.ram.write(HANDLER, new Uint8Array([0x48, 0x8b, 0x04, 0x24, 0x48, 0x89, 0x04, 0x25, SAVED & 0xff, (SAVED >> 8) & 0xff, SAVED >> 16, 0, 0x48, 0xcf]));
      const gate = new DataView(new ArrayBuffer(16));
      gate.setUint16(0, HANDLER & 0xffff, true);
      gate.setUint16(2, CODE_SELECTOR, true);
      gate.setUint8(5, 0x8e);
      gate.setUint16(6, HANDLER >>> 16, true);
      m.ram.write(IDT + 3 * 16, new Uint8Array(gate.buffer));
      const sregs = m.vcpu.getSregs();
      patchSregs(sregs, { idt: { base: BigInt(IDT), limit: 0xfff } });
      m.vcpu.setSregs(sregs);
      m.vcpu.setRegs({ rip: BigInt(CODE), rsp: BigInt(MEM), rflags: 2n });
      assert.equal(guestPhysical(m.ram.bytes, BigInt(PML4_GPA), BigInt(CODE)), CODE, 'the page walk over the shell\'s identity map');
      assert.equal(guestPhysical(m.ram.bytes, BigInt(PML4_GPA), 0n), undefined, 'page 0 is not mapped');
      const control = new Int32Array(new SharedArrayBuffer(8));
      let outcome: number = Outcome.Interrupted;
      for (let n = 0; n < 100 && outcome === Outcome.Interrupted; n++) outcome = m.run(control);
      assert.equal(outcome, Outcome.Ended);
      assert.equal(m.exit?.kind === 'crash' ? m.exit.code : m.exit?.kind, 'bad-hypercall', JSON.stringify(m.exit));
      assert.equal(new DataView(m.ram.bytes.buffer, m.ram.bytes.byteOffset + SAVED, 8).getBigUint64(0, true), BigInt(CODE + 1));
    } finally {
      m.close();
      kvm.close();
    }
  });
});
