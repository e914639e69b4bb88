// IoVectors (src/sys/libc.ts): the scatter lists virtio-blk hands to
// preadv/pwritev, straight between a file and memory given by host address
// (here a GuestMemory mapping, as guest RAM is).
import assert from 'node:assert/strict';
import { closeSync, mkdtempSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import { IOV_MAX, IoVectors } from '../src/sys/libc.js';

const dir = mkdtempSync(join(tmpdir(), 'iovec-'));
const file = join(dir, 'disk');
const content = Buffer.alloc(12288);
for (let i = 0; i < content.length; i++) content[i] = (i * 7 + (i >> 8)) & 0xff;

void describe('IoVectors', () => {
  const ram = new GuestMemory(16384);
  const base = Number(ram.hostAddress);
  after(() => {
    ram.close();
    rmSync(dir, { recursive: true, force: true });
  });

  void it('reads a file region into the segments in order, with one call for the list', () => {
    writeFileSync(file, content);
    const fd = openSync(file, 'r');
    try {
      ram.bytes.fill(0xee);
      const iov = new IoVectors(4);
      iov.add(base + 100, 4000);
      iov.add(base + 8192, 5000);
      assert.equal(iov.length, 2);
      assert.equal(iov.transfer(fd, false, 10), 9000);
      assert.deepEqual(Buffer.from(ram.bytes.subarray(100, 4100)), content.subarray(10, 4010));
      assert.deepEqual(Buffer.from(ram.bytes.subarray(8192, 13192)), content.subarray(4010, 9010));
      // Nothing outside the segments was touched.
      assert.equal(ram.bytes[99], 0xee);
      assert.equal(ram.bytes[4100], 0xee);
      assert.equal(ram.bytes[13192], 0xee);
    } finally {
      closeSync(fd);
    }
  });

  void it('a read across the end of the file moves what is there; a write lands where asked', () => {
    writeFileSync(file, content);
    const fd = openSync(file, 'r+');
    try {
      const iov = new IoVectors(2);
      iov.add(base, 4096);
      iov.add(base + 4096, 4096);
      assert.equal(iov.transfer(fd, false, content.length - 5000), 5000);
      assert.deepEqual(Buffer.from(ram.bytes.subarray(0, 5000)), content.subarray(content.length - 5000));
      ram.bytes.fill(0x5a, 0, 3000);
      ram.bytes.fill(0xa5, 8000, 9000);
      iov.clear();
      iov.add(base, 3000);
      iov.add(base + 8000, 1000);
      assert.equal(iov.transfer(fd, true, 2000), 4000);
      const after = readFileSync(file);
      assert.deepEqual(after.subarray(2000, 5000), Buffer.alloc(3000, 0x5a));
      assert.deepEqual(after.subarray(5000, 6000), Buffer.alloc(1000, 0xa5));
      assert.deepEqual(after.subarray(0, 2000), content.subarray(0, 2000));
      assert.deepEqual(after.subarray(6000), content.subarray(6000));
    } finally {
      closeSync(fd);
    }
  });

  void it('refuses a list of no or too many entries, one entry too many, and reports a bad fd as -errno', () => {
    assert.throws(() => new IoVectors(0), /1\.\.1024 entries, not 0/);
    assert.throws(() => new IoVectors(IOV_MAX + 1), /not 1025/);
    const iov = new IoVectors(1);
    iov.add(base, 512);
    assert.throws(() => iov.add(base + 512, 512), /iovec list full \(1 entries\)/);
    assert.equal(iov.transfer(-1, false, 0), -9); // EBADF
  });
});
