// The benchmark's floor programs and memory accounting: what the ratios
// are computed against must itself be right.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { describe, it } from 'node:test';
import { promisify } from 'node:util';
import { memoryPerVm, type MemoryKinds } from '../src/bench/host-stats.js';
import { floorProgram } from '../src/bench/floor.js';
import { kvmFloorHold } from '../src/bench/peers.js';

const run = promisify(execFile);
const KVM_FLOOR = floorProgram('kvm_floor');

void describe('kvm_floor', () => {
  void it('--long: a VM entered in 64-bit mode runs to HLT, one sample per iteration', async () => {
    const { stdout } = await run(KVM_FLOOR, ['--long', '3']);
    const { samples_ms } = JSON.parse(stdout) as { samples_ms: number[] };
    assert.equal(samples_ms.length, 3);
    for (const ms of samples_ms) assert.ok(ms > 0 && ms < 1000, `${ms} ms`);
  });

  void it('--hold: the VMs it keeps take kernel memory (hundreds of KiB each, not nothing)', async () => {
    // The kernel's own meminfo lines, not MemAvailable: the host's reclaim
    // moves MemAvailable by as much as 300 VMs hold (measured: 53-514 KiB
    // per VM over three runs, while the kernel's lines said 205-228).
    const r = await kvmFloorHold(300);
    assert.ok(r.kernel_per_vm_kib > 50 && r.kernel_per_vm_kib < 5000, `kernel KiB per VM: ${r.kernel_per_vm_kib}`);
    assert.equal(typeof r.mem_per_vm_kib, 'number');
  });

  void it('bad arguments: exit 2 with the usage line', async () => {
    for (const args of [['x'], ['--hold'], ['--hold', '0'], ['--long', '--hold', '3', 'more'], ['--hold', '2x']]) {
      await assert.rejects(run(KVM_FLOOR, args), (err: Error & { code?: number; stderr?: string }) => {
        assert.equal(err.code, 2, args.join(' '));
        assert.match(err.stderr ?? '', /^usage: kvm_floor/);
        return true;
      });
    }
  });
});

void describe('memoryPerVm', () => {
  void it('splits what MemAvailable lost by meminfo line; other is what no line names', () => {
    const before: MemoryKinds = { available: 10_000, anon: 100, slab: 100, vmalloc: 100, kernelStack: 10, pageTables: 10, secPageTables: 0 };
    const after: MemoryKinds = { available: 6_000, anon: 1_100, slab: 1_100, vmalloc: 300, kernelStack: 110, pageTables: 110, secPageTables: 100 };
    assert.deepEqual(memoryPerVm(before, after, 10), {
      total: 400, anon: 100, slab: 100, vmalloc: 20, kernel_stack: 10, page_tables: 10, sec_page_tables: 10, other: 150,
    });
  });
});
