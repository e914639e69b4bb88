// A bzImage of our own (guest/linux/probe.*, wrapped by test/bzimage-builder.ts)
// entered through the 64-bit boot protocol on a real vCPU of a Linux shell
// (in-kernel irqchip, the probed CPUID, the COM1 UART): it reads its zero
// page and reports the setup header, command line, e820 map and the
// initrd's address, size and FNV-1a sum, which must be what the monitor
// wrote; then CPUID leaf 1, which must be the monitor's table, and a line on
// COM1. Needs /dev/kvm (skipped without). The probe is built here by gcc.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { parseBzImage } from '../src/vmm/linux/bzimage.js';
import { FEATURE_PROBES, linuxCpuid } from '../src/vmm/linux/cpuid.js';
import { Machine, Outcome } from '../src/vmm/machine.js';
import { COM1_IRQ, UartModule } from '../src/vmm/modules/uart.js';
import { buildBzImage } from './bzimage-builder.js';
import { tempDir } from './helpers.js';
import { buildProbe, fnv } from './linux-probe.js';

const MIB = 1024 * 1024;

void describe('Linux 64-bit boot protocol on a vCPU', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  void it('the probe finds its command line, e820 map and initrd where the zero page says', { timeout: 300_000 }, () => {
    const { dir, cleanup } = tempDir('linux-boot');
    const kvm = Kvm.open();
    let m: Machine | undefined;
    try {
      const file = buildBzImage({ payload: buildProbe(dir), prefAddress: 0x200000n, relocatable: false });
      const image = parseBzImage('probe.bzImage', file);
      const cpuid = linuxCpuid(kvm);
      m = new Machine(kvm, 16 * MIB, undefined, undefined, { cpuid: cpuid.table });
      const machine = m;
      let out = '';
      let irqRaised = 0;
      m.onConsole = (d) => (out += Buffer.from(d).toString());
      const initrd = new Uint8Array(5000).map((_v, i) => (i * 13) & 0xff);
      m.loadBzImage(image, { vmId: 1, name: 'linux-probe', cmdline: 'lightvm.probe=1 quiet', devices: [] }, { file: 'probe.cpio', bytes: initrd });
      m.add(new UartModule(m, (high) => {
        if (high) irqRaised++;
        machine.vm.setIrqLine(COM1_IRQ, high);
      }));
      const control = new Int32Array(new SharedArrayBuffer(8));
      let outcome: number = Outcome.Interrupted;
      for (let n = 0; n < 1000 && outcome === Outcome.Interrupted; n++) outcome = m.run(control);
      assert.equal(outcome, Outcome.Ended, out);
      assert.deepEqual(m.exit, { kind: 'halt', status: 0 }, `${JSON.stringify(m.exit)}\n${out}`);
      assert.match(out, /^header 0x53726448$/m);
      assert.match(out, /^cmdline lightvm\.probe=1 quiet$/m);
      assert.match(out, /^e820 0x4$/m);
      assert.match(out, / addr 0x100000\n len 0xf00000\n type 0x1\n/);
      assert.match(out, / addr 0xc0000000\n len 0x1000\n type 0x2\n/);
      assert.match(out, new RegExp(`^initrd 0x${(16 * MIB - 8192).toString(16)}$`, 'm'));
      assert.match(out, /^initrd_size 0x1388$/m);
      assert.match(out, new RegExp(`^initrd_fnv 0x${fnv(initrd).toString(16)}$`, 'm'));
      // CPUID as the probes predicted: a feature that failed its probe is gone from the guest's leaf 1
      // unless the host showed it under the masked table (then a kernel option turns it off).
      const ecx = parseInt(/^cpuid1_ecx 0x([0-9a-f]+)$/m.exec(out)?.[1] ?? 'x', 16);
      assert.ok(Number.isInteger(ecx), out);
      for (const r of cpuid.probes.filter((p) => !p.ran)) {
        const b = FEATURE_PROBES.find((p) => p.name === r.name)!.bits[0]!;
        if (b.leaf !== 1 || b.reg !== 'ecx') continue;
        assert.equal((ecx >>> b.bit) & 1, r.shownMasked ? 1 : 0, `${r.name} (leaf 1 ecx bit ${b.bit}) in the guest's CPUID`);
      }
      // The UART line, polled as Linux's early console polls it; no interrupt was asked for (IER 0).
      assert.match(out, /^uart: probe on COM1$/m);
      assert.equal(irqRaised, 0);
    } finally {
      m?.close();
      kvm.close();
      cleanup();
    }
  });
});
