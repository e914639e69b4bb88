// The kernel inside a bzImage, unpacked by the monitor (src/vmm/linux/vmlinux.ts):
// a bzImage of our own whose payload is the probe's ELF, gzip'd with the
// 4-byte size Kbuild appends, gives the ELF's segments and entry; a wrong
// size, a segment outside pref_address + init_size, or a payload in no
// format we unpack are told apart. On a vCPU (with /dev/kvm) a Linux VM
// of that image enters the unpacked kernel at its entry, not the
// decompressor (whose bytes here are all HLT). Debian's kernel, if the
// kvm-box cache has it, unpacks with xz-utils to its vmlinux at 16 MiB.
import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';
import { Host } from '../src/toolstack/host.js';
import { ImageError } from '../src/vmm/elf.js';
import { parseBzImage } from '../src/vmm/linux/bzimage.js';
import { extractVmlinux } from '../src/vmm/linux/vmlinux.js';
import { buildBzImage } from './bzimage-builder.js';
import { tempDir } from './helpers.js';
import { probeElf } from './linux-probe.js';

const STUB = 0x400;

/** A bzImage whose protected-mode part is STUB bytes of HLT, then payload. */
function withPayload(payload: Uint8Array, initSize = 0x100000): Uint8Array {
  const pm = new Uint8Array(STUB + payload.length).fill(0xf4, 0, STUB);
  pm.set(payload, STUB);
  return buildBzImage({ payload: pm, prefAddress: 0x200000n, relocatable: false, payloadOffset: STUB, payloadLength: payload.length, initSize });
}

function sized(compressed: Uint8Array, size: number): Uint8Array {
  const out = new Uint8Array(compressed.length + 4);
  out.set(compressed);
  new DataView(out.buffer).setUint32(compressed.length, size, true);
  return out;
}

function debianKernel(): string | undefined {
  const dir = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lightvm', 'kvm-box', 'k', 'boot');
  const name = existsSync(dir) ? readdirSync(dir).find((f) => f.startsWith('vmlinuz-')) : undefined;
  return name ? join(dir, name) : undefined;
}

void describe('vmlinux unpacked from a bzImage', () => {
  const tmp = tempDir('linux-vmlinux');
  let elf: Uint8Array;
  before(() => {
    elf = probeElf(tmp.dir);
    // startup_64 is 0x200 into the probe, as in a vmlinux whose e_entry is startup_64.
    new DataView(elf.buffer, elf.byteOffset).setBigUint64(24, 0x200200n, true);
  });
  after(() => tmp.cleanup());

  void it('a gzip payload gives the ELF\'s segments at their physical addresses and its entry', () => {
    const v = extractVmlinux(parseBzImage('k.bzImage', withPayload(sized(gzipSync(elf), elf.length))));
    assert.ok(v);
    assert.equal(v.format, 'gzip');
    assert.equal(v.entry, 0x200200);
    assert.equal(v.segments[0]!.gpa, 0x200000);
    assert.deepEqual([...v.segments[0]!.data.subarray(0, 0x200)], new Array(0x200).fill(0xf4));
    assert.ok(v.segments.every((s) => s.gpa >= 0x200000 && s.gpa + s.memsz <= 0x300000));
  });

  void it('refusals name the payload; a payload in no known format is left to the decompressor', () => {
    const wrong = () => extractVmlinux(parseBzImage('k.bzImage', withPayload(sized(gzipSync(elf), elf.length + 1))));
    assert.throws(wrong, (e: unknown) => e instanceof ImageError && e.field === 'payload' && /not the \d+ its last 4 bytes say/.test(e.message));
    const small = () => extractVmlinux(parseBzImage('k.bzImage', withPayload(sized(gzipSync(elf), elf.length), 0x2000)));
    assert.throws(small, (e: unknown) => e instanceof ImageError && /^segment \d$/.test(e.field) && /outside the 0x200000\.\.0x202000/.test(e.message));
    assert.equal(extractVmlinux(parseBzImage('k.bzImage', withPayload(sized(elf, elf.length)))), undefined);
  });

  void it('a Linux VM enters the unpacked kernel, not the decompressor', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm', timeout: 60_000 }, async () => {
    const file = join(tmp.dir, 'gz.bzImage');
    writeFileSync(file, withPayload(sized(gzipSync(elf), elf.length)));
    const host = await Host.start({ executors: 1 });
    try {
      const vm = await host.create({ image: file, cmdline: 'via=vmlinux', memoryMiB: 16 });
      assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 }, vm.consoleText());
      assert.match(vm.consoleText(), /^cmdline .*via=vmlinux$/m);
      assert.match(vm.consoleText(), /^uart: probe on COM1$/m);
    } finally {
      await host.close();
    }
  });

  const debian = debianKernel();
  void it('Debian\'s kernel: xz with the x86 filter, unpacked by xz-utils', { skip: debian ? false : 'no Debian kernel in the kvm-box cache' }, () => {
    const img = parseBzImage(debian!, new Uint8Array(readFileSync(debian!)));
    const t0 = performance.now();
    const v = extractVmlinux(img);
    const ms = performance.now() - t0;
    assert.ok(v, 'xz-utils is needed for this');
    assert.equal(v.format, 'xz');
    assert.equal(v.entry, img.prefAddress);
    assert.ok(v.segments.every((s) => s.gpa >= img.prefAddress && s.gpa + s.memsz <= img.prefAddress + img.initSize));
    process.stderr.write(`  ${debian}: ${img.payloadLength} bytes of xz -> ${v.segments.reduce((n, s) => n + s.data.length, 0)} bytes of segments in ${ms.toFixed(0)} ms\n`);
  });
});
