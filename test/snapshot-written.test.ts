// A snapshot saves the pages that were written (KVM's dirty log since the
// shell was made, and the host's own writes), not the pages the host holds
// in memory: a written page that went to swap must still be saved. Here the
// guest's memory is paged out for real, to a compressed RAM swap device
// (zram) made for the test: it writes synchronously, so MADV_PAGEOUT leaves
// the pages non-resident at once (with a swap file they would linger,
// resident, in the swap cache until the next reclaim). mincore then says
// none of them is resident, and a snapshot that asked it would save nothing.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import * as libc from '../src/sys/libc.js';
import { parseElf } from '../src/vmm/elf.js';
import { Machine, Outcome } from '../src/vmm/machine.js';
import { decodeSnapshot, encodeSnapshot, nonZeroPages } from '../src/vmm/snapshot.js';
import { guestImage } from './helpers.js';

const ZRAM = '/sys/class/zram-control';
const canSwap = process.getuid?.() === 0 && existsSync(`${ZRAM}/hot_add`);

const pagesHash = (bytes: Uint8Array, pages: number[]): string => {
  const h = createHash('sha256');
  for (const p of pages) h.update(bytes.subarray(p * 4096, (p + 1) * 4096));
  return h.digest('hex');
};

void describe('snapshots save the pages written, resident or not', { skip: canSwap ? false : 'needs root and zram (a swap device in RAM)' }, () => {
  let zram = -1;
  before(() => {
    // A device of our own (not zram0, which someone may use), swapped to first while it exists.
    zram = Number(readFileSync(`${ZRAM}/hot_add`, 'utf8'));
    writeFileSync(`/sys/block/zram${zram}/disksize`, String(16 << 20));
    execFileSync('mkswap', [`/dev/zram${zram}`], { stdio: 'ignore' });
    execFileSync('swapon', ['-p', '32767', `/dev/zram${zram}`]);
  });
  after(() => {
    if (zram < 0) return;
    try {
      execFileSync('swapoff', [`/dev/zram${zram}`], { stdio: 'ignore' });
    } finally {
      writeFileSync(`${ZRAM}/hot_remove`, String(zram));
    }
  });

  void it('a guest\'s pages paged out to swap are all saved, with what they held', () => {
    const kvm = Kvm.open();
    const m = new Machine(kvm, 4 << 20);
    try {
      m.load(parseElf('hello', readFileSync(guestImage('hello'))), { vmId: 1, name: 'swapped', cmdline: 'x=1', devices: [] });
      assert.equal(m.run(new Int32Array(new SharedArrayBuffer(8))), Outcome.Ended);
      assert.deepEqual(m.exit, { kind: 'halt', status: 0 });
      // What the guest and the host wrote: page tables, image, boot info, stack.
      const written = nonZeroPages(m.ram.bytes);
      assert.ok(written.length >= 5, `only ${written.length} non-zero pages`);
      const content = pagesHash(m.ram.bytes, written);

      libc.madvise(m.ram.hostAddress, m.ram.size, libc.MADV_PAGEOUT);
      const resident = libc.residentMap(m.ram.hostAddress, m.ram.size);
      assert.deepEqual(written.filter((p) => resident[p]! & 1), [], 'pages still resident after MADV_PAGEOUT');
      assert.deepEqual(nonZeroPages(m.ram.bytes, resident), [], 'asked of mincore, a snapshot would save nothing');

      const c = m.capture();
      assert.deepEqual(c.pages, written);
      const s = decodeSnapshot('swapped', encodeSnapshot({
        header: {
          vm: { id: 1, name: 'swapped', memory: m.memSize, cmdline: 'x=1', devices: [] },
          image: { path: guestImage('hello'), sha256: '0'.repeat(64) },
          msrs: c.vcpu.msrs.map((r) => [r.index, `0x${r.data.toString(16)}`]),
          parked: null, paused: false, savedAt: new Date().toISOString(), kernel: 'test',
        },
        vcpu: c.vcpu, devicePage: c.devicePage, memory: c.memory, pages: c.pages, console: new Uint8Array(0),
      }));
      assert.deepEqual([...s.pages.keys()], written);
      const saved = createHash('sha256');
      for (const p of written) saved.update(s.pages.get(p)!);
      assert.equal(saved.digest('hex'), content, 'the saved pages do not hold what the guest memory did');
    } finally {
      m.close();
      kvm.close();
    }
  });
});
