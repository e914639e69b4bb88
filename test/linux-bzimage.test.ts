// The 64-bit boot protocol's host side without KVM: a bzImage parsed
// (every refusal naming the file and the header field), placed and written
// into real guest memory, its zero page checked byte by byte with the
// offsets of Documentation/arch/x86/boot.rst and zero-page.rst written out
// here as literals (so a wrong offset in src/vmm/boot-params.ts fails).
// Debian's own kernel, if the kvm-box cache has it, goes through the same.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import { ImageError } from '../src/vmm/elf.js';
import { looksLikeBzImage, parseBzImage } from '../src/vmm/linux/bzimage.js';
import { loadLinux } from '../src/vmm/linux/load.js';
import { buildBzImage } from './bzimage-builder.js';
import { guestBytes } from './helpers.js';

const MIB = 1024 * 1024;

function debianKernel(): string | undefined {
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lightvm', 'kvm-box', 'k', 'boot');
  if (!existsSync(dir)) return undefined;
  const name = readdirSync(dir).find((f) => f.startsWith('vmlinuz-'));
  return name ? join(dir, name) : undefined;
}

/** A payload with a recognisable pattern (its entry at 0x200 is never run here). */
function payload(bytes: number): Uint8Array {
  const p = new Uint8Array(bytes);
  for (let i = 0; i < bytes; i++) p[i] = (i * 7 + 3) & 0xff;
  return p;
}

function refusal(bytes: Uint8Array, field: string, text: RegExp): void {
  assert.throws(() => parseBzImage('probe.bzImage', bytes), (err: unknown) => {
    assert.ok(err instanceof ImageError, String(err));
    assert.equal(err.file, 'probe.bzImage');
    assert.equal(err.field, field, err.message);
    assert.match(err.message, /^probe\.bzImage: /);
    assert.match(err.message, text);
    return true;
  });
}

interface E820 { addr: bigint; len: bigint; type: number }

function e820Of(zp: DataView): E820[] {
  const n = zp.getUint8(0x1e8);
  const out: E820[] = [];
  for (let i = 0; i < n; i++) {
    const o = 0x2d0 + i * 20;
    out.push({ addr: zp.getBigUint64(o, true), len: zp.getBigUint64(o + 8, true), type: zp.getUint32(o + 16, true) });
  }
  return out;
}

/**
 * Checks a loaded boot against the file it came from: kernel bytes at
 * their address, the zero page (the file's header with the loader's
 * fields, everything else zero but the e820 map), command line, initrd.
 */
function checkBoot(mem: GuestMemory, file: Uint8Array, cmdline: string, initrd: Uint8Array, expect: { kernelGpa: number; memSize: number }): void {
  const f = new DataView(file.buffer, file.byteOffset, file.byteLength);
  const setupSects = f.getUint8(0x1f1) || 4;
  const kernel = file.subarray((setupSects + 1) * 512);
  assert.ok(Buffer.from(mem.bytes.subarray(expect.kernelGpa, expect.kernelGpa + kernel.length)).equals(kernel), 'kernel bytes at pref_address');
  const zp = new DataView(mem.bytes.buffer, mem.bytes.byteOffset + 0x10000, 4096);
  const headerEnd = 0x202 + f.getUint8(0x201);
  const loaderFields = new Set<number>();
  const mark = (o: number, n: number): void => { for (let i = 0; i < n; i++) loaderFields.add(o + i); };
  mark(0x210, 1); mark(0x211, 1); mark(0x218, 4); mark(0x21c, 4); mark(0x228, 4);
  mark(0x0c0, 4); mark(0x0c4, 4); mark(0x0c8, 4); mark(0x1e8, 1);
  const entries = e820Of(zp);
  mark(0x2d0, entries.length * 20);
  for (let o = 0; o < 4096; o++) {
    if (loaderFields.has(o)) continue;
    const want = o >= 0x1f1 && o < headerEnd ? file[o]! : 0;
    assert.equal(zp.getUint8(o), want, `zero page byte 0x${o.toString(16)}`);
  }
  assert.equal(zp.getUint8(0x210), 0xff, 'type_of_loader');
  assert.equal(zp.getUint8(0x211), f.getUint8(0x211) & 0x7f, 'loadflags (CAN_USE_HEAP clear)');
  assert.equal(zp.getUint32(0x228, true), 0x20000, 'cmd_line_ptr');
  assert.equal(zp.getUint32(0x0c8, true), 0, 'ext_cmd_line_ptr');
  const cmd = new TextEncoder().encode(cmdline);
  assert.ok(Buffer.from(mem.bytes.subarray(0x20000, 0x20000 + cmd.length)).equals(cmd), 'command line');
  assert.equal(mem.bytes[0x20000 + cmd.length], 0, 'command line NUL');
  const initrdGpa = zp.getUint32(0x218, true);
  assert.equal(zp.getUint32(0x21c, true), initrd.length, 'ramdisk_size');
  assert.equal(zp.getUint32(0x0c0, true), 0, 'ext_ramdisk_image');
  if (initrd.length > 0) {
    const max = f.getUint32(0x22c, true);
    assert.equal(initrdGpa % 4096, 0, 'initrd page-aligned');
    assert.ok(initrdGpa + initrd.length - 1 <= max, 'initrd below initrd_addr_max');
    assert.ok(initrdGpa + initrd.length <= expect.memSize, 'initrd inside RAM');
    const top = Math.min(expect.memSize, max + 1);
    assert.ok(top - (initrdGpa + initrd.length) < 4096, `initrd at the top (ends at 0x${(initrdGpa + initrd.length).toString(16)}, top 0x${top.toString(16)})`);
    assert.ok(initrdGpa >= expect.kernelGpa + f.getUint32(0x260, true), 'initrd above the kernel\'s init_size');
    assert.ok(Buffer.from(mem.bytes.subarray(initrdGpa, initrdGpa + initrd.length)).equals(initrd), 'initrd bytes');
  } else {
    assert.equal(initrdGpa, 0, 'ramdisk_image without an initrd');
  }
  assert.deepEqual(entries, [
    { addr: 0n, len: 0x10000n, type: 2 },
    { addr: 0x10000n, len: 0x9fc00n - 0x10000n, type: 1 },
    { addr: 0x100000n, len: BigInt(expect.memSize - 0x100000), type: 1 },
    { addr: 0xc0000000n, len: 4096n, type: 2 },
  ]);
}

void describe('bzImage: parse, place and write the 64-bit boot (no KVM)', () => {
  void it('builds a test image\'s boot byte by byte: kernel at pref_address, zero page, command line, initrd at the top', () => {
    const file = buildBzImage({ payload: payload(0x3000), setupSects: 3, prefAddress: 0x400000n, initSize: 0x20000 });
    const image = parseBzImage('probe.bzImage', file);
    assert.equal(image.version, 0x020f);
    assert.equal(image.kernel.length, 0x3000);
    const mem = new GuestMemory(16 * MIB);
    try {
      const initrd = payload(10000).reverse();
      const entry = loadLinux(mem, image, { cmdline: 'console=hvc0 lightvm.probe=1', initrd, initrdFile: 'probe.cpio' });
      assert.equal(entry.rip, 0x400200);
      assert.equal(entry.rsi, 0x10000);
      checkBoot(mem, file, 'console=hvc0 lightvm.probe=1', initrd, { kernelGpa: 0x400000, memSize: 16 * MIB });
    } finally {
      mem.close();
    }
  });

  void it('puts the initrd under initrd_addr_max when RAM reaches above it', () => {
    const file = buildBzImage({ payload: payload(0x1000), initrdAddrMax: 0x7fffff });
    const mem = new GuestMemory(32 * MIB);
    try {
      const initrd = payload(5000);
      loadLinux(mem, parseBzImage('probe.bzImage', file), { cmdline: '', initrd });
      checkBoot(mem, file, '', initrd, { kernelGpa: 0x200000, memSize: 32 * MIB });
      assert.equal(new DataView(mem.bytes.buffer, mem.bytes.byteOffset).getUint32(0x10000 + 0x218, true), 0x7fe000);
    } finally {
      mem.close();
    }
  });

  void it('refuses a command line longer than cmdline_size, and RAM too small for init_size or the initrd, naming the file', () => {
    const image = parseBzImage('probe.bzImage', buildBzImage({ payload: payload(0x1000), cmdlineSize: 16, initSize: 0x400000, prefAddress: 0x200000n }));
    const mem = new GuestMemory(8 * MIB);
    try {
      assert.throws(() => loadLinux(mem, image, { cmdline: 'x'.repeat(17) }), /^ImageError: probe\.bzImage: cmdline: 17 bytes is longer than the 16 the kernel takes/);
      assert.doesNotThrow(() => loadLinux(mem, image, { cmdline: 'x'.repeat(16) }));
      assert.throws(() => loadLinux(mem, image, { cmdline: '', initrd: new Uint8Array(3 * MIB), initrdFile: 'big.cpio' }),
        /^ImageError: big\.cpio: memory: the initrd \(3145728 bytes\) does not fit/);
    } finally {
      mem.close();
    }
    const small = new GuestMemory(4 * MIB);
    try {
      assert.throws(() => loadLinux(small, image, { cmdline: '' }), /^ImageError: probe\.bzImage: memory: the kernel needs 0x400000 bytes \(init_size\) from 0x200000/);
    } finally {
      small.close();
    }
  });

  void it('refuses a malformed header, naming the field', () => {
    const p = payload(0x1000);
    refusal(new Uint8Array(100), 'file', /too short/);
    refusal(buildBzImage({ payload: p, bootFlag: 0x1234 }), 'boot_flag', /0x1234 is not 0xaa55/);
    refusal(buildBzImage({ payload: p, magic: 0x41414141 }), 'header', /not "HdrS"/);
    refusal(buildBzImage({ payload: p, version: 0x020b }), 'version', /2\.11 is older than 2\.12/);
    refusal(buildBzImage({ payload: p, xloadflags: 0x02 }), 'xloadflags', /lacks XLF_KERNEL_64/);
    refusal(buildBzImage({ payload: p, loadflags: 0 }), 'loadflags', /lacks LOADED_HIGH/);
    refusal(buildBzImage({ payload: p, jumpDisplacement: 0x99 }), 'jump', /would end at 0x29b/);
    const truncated = buildBzImage({ payload: p, setupSects: 1 });
    truncated[0x1f1] = 9;
    refusal(truncated, 'setup_sects', /9 setup sectors \(5120 bytes\) leave no protected-mode kernel/);
    refusal(buildBzImage({ payload: p, syssize: 0x101 }), 'syssize', /4112 bytes of protected-mode code is not within the 4096/);
    refusal(buildBzImage({ payload: p, initSize: 0x800 }), 'init_size', /0x800 is smaller than the protected-mode kernel \(0x1000 bytes\)/);
    refusal(buildBzImage({ payload: p, prefAddress: 0x300000n }), 'pref_address', /0x300000 is not aligned to kernel_alignment 0x200000/);
    refusal(buildBzImage({ payload: p, prefAddress: 0x1000n }), 'pref_address', /not between 1 MiB and 4 GiB/);
    refusal(buildBzImage({ payload: p, kernelAlignment: 0x300000 }), 'kernel_alignment', /not a power of two/);
    refusal(buildBzImage({ payload: p, cmdlineSize: 0 }), 'cmdline_size', /takes no command line/);
    // Not relocatable: pref_address need not be aligned.
    assert.equal(parseBzImage('probe.bzImage', buildBzImage({ payload: p, prefAddress: 0x300000n, relocatable: false })).prefAddress, 0x300000);
  });

  void it('tells a bzImage from an ELF image', () => {
    assert.equal(looksLikeBzImage(buildBzImage({ payload: payload(0x1000) })), true);
    assert.equal(looksLikeBzImage(guestBytes('hello')), false);
    assert.equal(looksLikeBzImage(new Uint8Array(10)), false);
  });

  const kernel = debianKernel();
  void it('Debian\'s kernel: header as boot.rst reads it, and its boot written byte by byte', { skip: kernel ? false : 'no Debian kernel cached: `sh scripts/kvm-box.sh true` fetches one' }, () => {
    const file = new Uint8Array(readFileSync(kernel!));
    const f = new DataView(file.buffer, file.byteOffset, file.byteLength);
    const image = parseBzImage(kernel!, file);
    assert.equal(image.version, f.getUint16(0x206, true));
    assert.ok(image.version >= 0x020c);
    assert.equal(image.setupSects, f.getUint8(0x1f1));
    assert.equal(image.prefAddress, Number(f.getBigUint64(0x258, true)));
    assert.equal(image.initSize, f.getUint32(0x260, true));
    assert.equal(image.kernelAlignment, f.getUint32(0x230, true));
    assert.equal(image.cmdlineSize, f.getUint32(0x238, true));
    assert.equal(image.initrdAddrMax, f.getUint32(0x22c, true));
    assert.equal(image.relocatable, f.getUint8(0x234) === 1);
    assert.equal(image.xloadflags, f.getUint16(0x236, true));
    assert.equal(image.kernel.length, file.length - (image.setupSects + 1) * 512);
    const memSize = Math.ceil((image.prefAddress + image.initSize) / MIB) * MIB + 8 * MIB;
    const mem = new GuestMemory(memSize);
    try {
      const initrd = payload(1 * MIB + 123);
      const entry = loadLinux(mem, image, { cmdline: 'console=ttyS0 root=/dev/vda', initrd, initrdFile: 'initrd.img' });
      assert.equal(entry.rip, image.prefAddress + 0x200);
      checkBoot(mem, file, 'console=ttyS0 root=/dev/vda', initrd, { kernelGpa: image.prefAddress, memSize });
    } finally {
      mem.close();
    }
  });
});
