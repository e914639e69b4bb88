// A bzImage of our own (guest/linux/probe.*, wrapped by test/bzimage-builder.ts)
// entered through the 64-bit boot protocol on a real vCPU: it reads its zero
// page and reports the setup header, command line, e820 map and the
// initrd's address, size and FNV-1a sum, which must be what the monitor wrote.
// Needs /dev/kvm (skipped without). The probe is built here by gcc, not by guest/Makefile.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { parseBzImage } from '../src/vmm/linux/bzimage.js';
import { Machine, Outcome } from '../src/vmm/machine.js';
import { buildBzImage } from './bzimage-builder.js';
import { GUEST_INCLUDE, ROOT, tempDir } from './helpers.js';

const MIB = 1024 * 1024;

function buildProbe(dir: string): Uint8Array {
  const src = join(ROOT, 'guest', 'linux');
  const elf = join(dir, 'probe.elf');
  const bin = join(dir, 'probe.bin');
  execFileSync('gcc', ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-ffreestanding', '-nostdlib', '-static', '-fno-pic', '-fno-pie',
    '-mno-red-zone', '-mgeneral-regs-only', '-fno-stack-protector', '-fcf-protection=none', '-fno-asynchronous-unwind-tables',
    `-I${GUEST_INCLUDE}`, '-Wa,--noexecstack', '-no-pie', '-Wl,--build-id=none', '-Wl,-z,noexecstack', `-Wl,-T,${join(src, 'probe.ld')}`,
    '-o', elf, join(src, 'probe.S'), join(src, 'probe.c')], { stdio: ['ignore', 'pipe', 'pipe'] });
  execFileSync('objcopy', ['-O', 'binary', elf, bin]);
  return new Uint8Array(readFileSync(bin));
}

function fnv(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h;
}

void describe('Linux 64-bit boot protocol on a vCPU', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  void it('the probe finds its command line, e820 map and initrd where the zero page says', { timeout: 300_000 }, () => {
    const { dir, cleanup } = tempDir('linux-boot');
    const kvm = Kvm.open();
    let m: Machine | undefined;
    try {
      const file = buildBzImage({ payload: buildProbe(dir), prefAddress: 0x200000n, relocatable: false });
      const image = parseBzImage('probe.bzImage', file);
      m = new Machine(kvm, 16 * MIB);
      let out = '';
      m.onConsole = (d) => (out += Buffer.from(d).toString());
      const initrd = new Uint8Array(5000).map((_v, i) => (i * 13) & 0xff);
      m.loadBzImage(image, { vmId: 1, name: 'linux-probe', cmdline: 'lightvm.probe=1 quiet', devices: [] }, { file: 'probe.cpio', bytes: initrd });
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
    } finally {
      m?.close();
      kvm.close();
      cleanup();
    }
  });
});
