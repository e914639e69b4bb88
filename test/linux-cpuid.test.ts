// The CPUID table of Linux VMs (src/vmm/linux/cpuid.ts): KVM's supported
// leaves, minus what this host's probes could not run, and kernel options
// for what a guest sees anyway. The masking is checked on made-up leaves;
// the probes on a vCPU (skipped without /dev/kvm), against instructions
// whose verdict is known on every x86-64 host (lock add runs, ud2 faults),
// and the table against what a guest's CPUID then reads.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import type { CpuidEntry } from '../src/sys/kvm-structs.js';
import {
  FEATURE_PROBES, guestCpuid, kernelOptionsFor, linuxCpuid, maskCpuid, PROBE_PORT, probeFeatures, runProbe, type FeatureProbe,
} from '../src/vmm/linux/cpuid.js';

const entry = (fn: number, index: number, ecx: number, ebx = 0): CpuidEntry => ({ function: fn, index, flags: 0, eax: 0, ebx, ecx, edx: 0 });
const DONE = [0x66, 0xba, PROBE_PORT & 0xff, PROBE_PORT >> 8, 0xee];

void describe('Linux CPUID: masking', () => {
  void it('clears the bits of the masked features, drops their leaves, keeps the rest', () => {
    const leaves = [entry(1, 0, 0xffffffff), entry(7, 0, 0, 0xffffffff), entry(0xd, 0, 7), entry(0xd, 1, 1), entry(0x80000001, 0, 0xffffffff)];
    const out = maskCpuid(leaves, ['cx16', 'xsave']);
    const l1 = out.find((e) => e.function === 1)!;
    for (const b of [13, 26, 27, 28, 12, 29]) assert.equal((l1.ecx >>> b) & 1, 0, `leaf 1 ecx bit ${b}`);
    assert.equal((l1.ecx >>> 23) & 1, 1, 'popcnt not asked for: kept');
    const l7 = out.find((e) => e.function === 7)!;
    assert.equal((l7.ebx >>> 5) & 1, 0, 'AVX2 goes with XSAVE');
    assert.equal((l7.ebx >>> 18) & 1, 1, 'rdseed kept');
    assert.equal(out.filter((e) => e.function === 0xd).length, 0, 'leaf 0xD dropped');
    assert.equal(out.find((e) => e.function === 0x80000001)!.ecx, 0xffffffff);
    assert.equal(leaves[0]!.ecx, 0xffffffff, 'the input is not changed');
    assert.deepEqual(maskCpuid(leaves, []), leaves);
  });

  void it('kernel options: a feature\'s own option, the others in one clearcpuid=', () => {
    assert.deepEqual(kernelOptionsFor(['xsave', 'popcnt', 'movbe']), ['noxsave', 'clearcpuid=popcnt,movbe']);
    assert.deepEqual(kernelOptionsFor(['cx16']), ['clearcpuid=cx16']);
    assert.deepEqual(kernelOptionsFor([]), []);
  });
});

void describe('Linux CPUID: probes on a vCPU', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  void it('a probe tells an instruction that runs from one that does not', () => {
    const kvm = Kvm.open();
    try {
      const bit = FEATURE_PROBES[0]!.bits[0]!;
      const runs: FeatureProbe = { name: 'lock-add', bits: [bit], code: [0x48, 0xc7, 0xc7, 0, 0x10, 0x10, 0, 0xf0, 0x48, 0x83, 0x07, 0x01, ...DONE] };
      const faults: FeatureProbe = { name: 'ud2', bits: [bit], code: [0x0f, 0x0b, ...DONE] };
      assert.deepEqual(runProbe(kvm, runs), { name: 'lock-add', ran: true });
      const r = runProbe(kvm, faults);
      assert.equal(r.ran, false);
      assert.match(r.reason ?? '', /triple fault/);
    } finally {
      kvm.close();
    }
  });

  void it('the table masks what failed; a guest sees a masked feature only where the probe said so; options for those', () => {
    const kvm = Kvm.open();
    try {
      const t0 = performance.now();
      const c = linuxCpuid(kvm);
      const ms = performance.now() - t0;
      assert.equal(c.probes.length, FEATURE_PROBES.length);
      assert.deepEqual(c.masked, c.probes.filter((p) => !p.ran).map((p) => p.name));
      const shown: string[] = [];
      for (const r of c.probes) {
        const b = FEATURE_PROBES.find((p) => p.name === r.name)!.bits[0]!;
        const inTable = c.entries.find((e) => e.function === b.leaf && e.index === b.index);
        const tableBit = inTable ? (inTable[b.reg] >>> b.bit) & 1 : 0;
        if (!r.ran) {
          assert.equal(tableBit, 0, `${r.name} masked in the table`);
          // A guest of the same table, read again here: what the probe found.
          assert.equal((guestCpuid(kvm, c.table, b.leaf, b.index)[b.reg] >>> b.bit) & 1, r.shownMasked ? 1 : 0, `${r.name} as a guest sees it`);
          if (r.shownMasked) shown.push(r.name);
        } else if (r.offered) {
          assert.equal(tableBit, 1, `${r.name} runs and KVM offers it: kept`);
        }
      }
      assert.deepEqual(c.kernelOptions, kernelOptionsFor(shown));
      // Once per process: the second call does not probe again.
      const t1 = performance.now();
      assert.equal(probeFeatures(kvm), c.probes);
      assert.ok(performance.now() - t1 < ms, 'cached');
      process.stderr.write(`  probes (${ms.toFixed(1)} ms): ${c.probes.map((p) => `${p.name}=${p.ran ? 'runs' : p.reason}${p.shownMasked ? ' (shown anyway)' : ''}`).join(', ')}; ` +
        `kernel options: ${c.kernelOptions.join(' ') || 'none'}\n`);
    } finally {
      kvm.close();
    }
  });
});
