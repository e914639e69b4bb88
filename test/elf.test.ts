// The ELF loader: every malformed image is refused with an ImageError that
// names the file and the field, built here by corrupting copies of a real
// image (guest/build/hello.elf). Then the same through a Host: the error
// reaches the caller as a VmCreateError, and a failed create leaks nothing.
import assert from 'node:assert/strict';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Host, VmCreateError } from '../src/index.js';
import { ImageError, MAX_IMAGE_BYTES, parseElf } from '../src/vmm/elf.js';
import { assertSameResources, guestBytes, liveVms, resources, tempDir } from './helpers.js';

const HELLO = guestBytes('hello');
const FILE = 'test.elf';

// ELF64 header and program header fields used below.
const E_TYPE = 16;
const E_MACHINE = 18;
const E_ENTRY = 24;
const E_PHOFF = 32;
const E_PHENTSIZE = 54;
const E_PHNUM = 56;
const PHDR = 56;
const P_TYPE = 0;
const P_FLAGS = 4;
const P_OFFSET = 8;
const P_PADDR = 24;
const P_FILESZ = 32;
const P_MEMSZ = 40;
const PT_LOAD = 1;
const PT_DYNAMIC = 2;
const PT_INTERP = 3;
const PT_NOTE = 4;
const PT_TLS = 7;

function header(bytes: Uint8Array): DataView {
  return new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** Where program header i starts in an image. */
function phdr(bytes: Uint8Array, i: number): number {
  return Number(header(bytes).getBigUint64(E_PHOFF, true)) + i * PHDR;
}

/** A copy of hello.elf changed by edit. */
function corrupt(edit: (v: DataView, bytes: Uint8Array) => void): Uint8Array {
  const bytes = HELLO.slice();
  edit(header(bytes), bytes);
  return bytes;
}

function setPhdr64(v: DataView, bytes: Uint8Array, i: number, field: number, value: bigint): void {
  v.setBigUint64(phdr(bytes, i) + field, value, true);
}

function setPhdr32(v: DataView, bytes: Uint8Array, i: number, field: number, value: number): void {
  v.setUint32(phdr(bytes, i) + field, value, true);
}

/** Asserts parseElf refuses bytes with an ImageError naming field, with a message matching phrase. */
function assertRefused(bytes: Uint8Array, field: string, phrase: RegExp): void {
  assert.throws(() => parseElf(FILE, bytes), (err: unknown) => {
    assert.ok(err instanceof ImageError, `expected an ImageError, got ${String(err)}`);
    assert.equal(err.file, FILE);
    assert.equal(err.field, field);
    assert.ok(err.message.startsWith(`${FILE}: ${field}: `), `message "${err.message}" does not name file and field`);
    assert.match(err.message, phrase);
    return true;
  });
}

void describe('parseElf', () => {
  void it('reads hello.elf as its program headers say', () => {
    // The layout guest/README.md documents: R X at 1 MiB from offset 0, RW bss after it, entry 0x100100.
    const v = header(HELLO);
    const image = parseElf(FILE, HELLO);
    assert.equal(image.entry, Number(v.getBigUint64(E_ENTRY, true)));
    assert.equal(image.entry, 0x100100);
    assert.equal(image.size, HELLO.length);
    assert.equal(image.segments.length, 2, 'two PT_LOAD segments (the PT_NOTE is not loaded)');
    const [text, data] = image.segments;
    assert.equal(text!.gpa, 0x100000);
    assert.equal(text!.flags & 1, 1, 'text is executable');
    const fsz = Number(v.getBigUint64(phdr(HELLO, 0) + P_FILESZ, true));
    assert.equal(text!.data.length, fsz);
    assert.deepEqual(text!.data, HELLO.subarray(0, fsz));
    assert.equal(data!.gpa, Number(v.getBigUint64(phdr(HELLO, 1) + P_PADDR, true)));
    assert.equal(data!.memsz, Number(v.getBigUint64(phdr(HELLO, 1) + P_MEMSZ, true)));
    assert.equal(image.end, Math.ceil((data!.gpa + data!.memsz) / 4096) * 4096);
  });

  void it('refuses files too short for an ELF header', () => {
    assertRefused(HELLO.slice(0, 63), 'file', /63 bytes is too short/);
    assertRefused(new Uint8Array(0), 'file', /0 bytes is too short/);
  });

  void it('refuses files larger than MAX_IMAGE_BYTES', () => {
    assertRefused(new Uint8Array(MAX_IMAGE_BYTES + 1), 'file', /more than the \d+ allowed/);
  });

  void it('refuses program headers that run past the end of the file', () => {
    const phEnd = phdr(HELLO, 3);
    assertRefused(HELLO.slice(0, phEnd - 1), 'e_phoff', /run past the end of the file/);
    assertRefused(corrupt((v) => v.setBigUint64(E_PHOFF, 0xffffffffffffff00n, true)), 'e_phoff', /past the end/);
  });

  void it('refuses what is not a little-endian ELF64 x86-64 executable', () => {
    assertRefused(corrupt((_v, b) => (b[0] = 0x7e)), 'e_ident', /not an ELF file/);
    assertRefused(corrupt((_v, b) => (b[4] = 1)), 'e_ident[EI_CLASS]', /class 1 is not ELFCLASS64/);
    assertRefused(corrupt((_v, b) => (b[5] = 2)), 'e_ident[EI_DATA]', /encoding 2 is not little-endian/);
    assertRefused(corrupt((_v, b) => (b[6] = 0)), 'e_ident[EI_VERSION]', /version 0 is not 1/);
    assertRefused(corrupt((v) => v.setUint16(E_MACHINE, 3, true)), 'e_machine', /machine 3 is not EM_X86_64/);
    assertRefused(corrupt((v) => v.setUint16(E_MACHINE, 183, true)), 'e_machine', /machine 183/);
    assertRefused(corrupt((v) => v.setUint16(E_TYPE, 3, true)), 'e_type', /type 3 is not ET_EXEC/);
    assertRefused(corrupt((v) => v.setUint16(E_TYPE, 1, true)), 'e_type', /not ET_EXEC/);
  });

  void it('refuses malformed program header tables', () => {
    assertRefused(corrupt((v) => v.setUint16(E_PHENTSIZE, 32, true)), 'e_phentsize', /32 is not 56/);
    assertRefused(corrupt((v) => v.setUint16(E_PHNUM, 0, true)), 'e_phnum', /no program headers/);
    assertRefused(corrupt((v) => v.setUint16(E_PHNUM, 65, true)), 'e_phnum', /65 program headers is more than 64/);
  });

  void it('refuses dynamic linking and TLS', () => {
    assertRefused(corrupt((v, b) => setPhdr32(v, b, 2, P_TYPE, PT_INTERP)), 'program header 2', /dynamic linking is not supported/);
    assertRefused(corrupt((v, b) => setPhdr32(v, b, 2, P_TYPE, PT_DYNAMIC)), 'program header 2', /dynamic linking/);
    assertRefused(corrupt((v, b) => setPhdr32(v, b, 2, P_TYPE, PT_TLS)), 'program header 2', /thread-local storage/);
  });

  void it('refuses p_filesz larger than p_memsz', () => {
    const bytes = corrupt((v, b) => {
      const memsz = v.getBigUint64(phdr(b, 0) + P_MEMSZ, true);
      setPhdr64(v, b, 0, P_FILESZ, memsz + 1n);
    });
    assertRefused(bytes, 'program header 0: p_filesz', /is larger than p_memsz/);
  });

  void it('refuses segment contents past the end of the file', () => {
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 0, P_OFFSET, BigInt(b.length - 0x100))),
      'program header 0: p_offset', /runs past the end of the file \(\d+ bytes\)/);
    // Would wrap to a small number in 64-bit arithmetic.
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 0, P_OFFSET, 0xfffffffffffffff0n)), 'program header 0: p_offset', /past the end/);
    // A file cut inside the text segment.
    assertRefused(HELLO.slice(0, 0x400), 'program header 0: p_offset', /past the end of the file \(1024 bytes\)/);
  });

  void it('refuses segments below 1 MiB, where the monitor keeps its tables', () => {
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 0, P_PADDR, 0xff000n)), 'program header 0: p_paddr', /0xff000 is below 0x100000/);
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 1, P_PADDR, 0n)), 'program header 1: p_paddr', /0x0 is below/);
  });

  void it('refuses segments that reach the device page', () => {
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 1, P_MEMSZ, 0x8000000000000000n)),
      'program header 1: p_memsz', /runs past 0xc0000000/);
    // paddr + memsz wraps to 0x1000 in 64-bit arithmetic.
    assertRefused(corrupt((v, b) => {
      setPhdr64(v, b, 1, P_PADDR, 0xfffffffffffff000n);
      setPhdr64(v, b, 1, P_MEMSZ, 0x2000n);
    }), 'program header 1: p_memsz', /runs past 0xc0000000/);
    // One byte into the device page.
    assertRefused(corrupt((v, b) => {
      setPhdr64(v, b, 1, P_PADDR, 0xbffff000n);
      setPhdr64(v, b, 1, P_MEMSZ, 0x1001n);
    }), 'program header 1: p_memsz', /0xbffff000 \+ 0x1001 runs past 0xc0000000/);
    // Ending exactly where the device page begins is allowed.
    const edge = parseElf(FILE, corrupt((v, b) => {
      setPhdr64(v, b, 1, P_PADDR, 0xbffff000n);
      setPhdr64(v, b, 1, P_MEMSZ, 0x1000n);
    }));
    assert.equal(edge.end, 0xc0000000);
  });

  void it('refuses overlapping segments', () => {
    assertRefused(corrupt((v, b) => setPhdr64(v, b, 1, P_PADDR, 0x100500n)), 'program headers',
      /segments at 0x100000 \(\+0x[0-9a-f]+\) and 0x100500 overlap/);
    // Same start, and the headers in the other order.
    assertRefused(corrupt((v, b) => {
      setPhdr64(v, b, 1, P_PADDR, 0x100000n);
      const a = phdr(b, 0);
      const c = phdr(b, 1);
      const first = b.slice(a, a + PHDR);
      b.copyWithin(a, c, c + PHDR);
      b.set(first, c);
    }), 'program headers', /overlap/);
    // Adjacent is not overlapping.
    const adjacent = parseElf(FILE, corrupt((v, b) => {
      const end = v.getBigUint64(phdr(b, 0) + P_PADDR, true) + v.getBigUint64(phdr(b, 0) + P_MEMSZ, true);
      setPhdr64(v, b, 1, P_PADDR, end);
    }));
    assert.equal(adjacent.segments.length, 2);
  });

  void it('refuses an entry point outside every executable segment', () => {
    assertRefused(corrupt((v) => v.setBigUint64(E_ENTRY, 0x102000n, true)), 'e_entry', /0x102000 is not inside any executable segment/);
    assertRefused(corrupt((v) => v.setBigUint64(E_ENTRY, 0n, true)), 'e_entry', /0x0 is not inside/);
    // The entry just past the text segment's last byte.
    assertRefused(corrupt((v, b) => {
      const end = v.getBigUint64(phdr(b, 0) + P_PADDR, true) + v.getBigUint64(phdr(b, 0) + P_MEMSZ, true);
      v.setBigUint64(E_ENTRY, end, true);
    }), 'e_entry', /not inside any executable segment/);
    // The text segment without PF_X: no executable segment holds the entry.
    assertRefused(corrupt((v, b) => setPhdr32(v, b, 0, P_FLAGS, 4 /* PF_R */)), 'e_entry', /not inside any executable segment/);
  });

  void it('refuses an image with no PT_LOAD segment', () => {
    assertRefused(corrupt((v, b) => {
      setPhdr32(v, b, 0, P_TYPE, PT_NOTE);
      setPhdr32(v, b, 1, P_TYPE, PT_NOTE);
    }), 'program headers', /no loadable \(PT_LOAD\) segment/);
    // PT_LOAD segments of zero size load nothing either.
    assertRefused(corrupt((v, b) => {
      for (const i of [0, 1]) {
        setPhdr64(v, b, i, P_FILESZ, 0n);
        setPhdr64(v, b, i, P_MEMSZ, 0n);
      }
    }), 'program headers', /no loadable/);
  });

  void it('accepts an image whose PT_LOAD headers come in any order', () => {
    const swapped = corrupt((_v, b) => {
      const a = phdr(b, 0);
      const c = phdr(b, 1);
      const first = b.slice(a, a + PHDR);
      b.copyWithin(a, c, c + PHDR);
      b.set(first, c);
    });
    const image = parseElf(FILE, swapped);
    assert.deepEqual(image.segments.map((s) => s.gpa), parseElf(FILE, HELLO).segments.map((s) => s.gpa));
    assert.equal(image.segments[0]!.gpa, 0x100000);
    assert.equal(header(swapped).getUint32(phdr(swapped, 0) + P_TYPE, true), PT_LOAD);
  });
});

void describe('malformed and oversized images through a Host', () => {
  let host: Host;
  const { dir, cleanup } = tempDir('elf');
  const file = (name: string, bytes: Uint8Array): string => {
    const p = join(dir, name);
    writeFileSync(p, bytes);
    return p;
  };
  // hello with its bss grown so that the image ends at `end`.
  const helloEndingAt = (end: number): Uint8Array => corrupt((v, b) => {
    const gpa = v.getBigUint64(phdr(b, 1) + P_PADDR, true);
    setPhdr64(v, b, 1, P_MEMSZ, BigInt(end) - gpa);
  });
  const badMachine = file('bad-machine.elf', corrupt((v) => v.setUint16(E_MACHINE, 40, true)));
  const truncated = file('truncated.elf', HELLO.slice(0, 100));
  // 2 MiB of RAM: the image must end 64 KiB (the stack) below 0x200000.
  const fits = file('fits-2mib.elf', helloEndingAt(0x1f0000));
  const tooBig = file('too-big-2mib.elf', helloEndingAt(0x1f1000));
  const missing = join(dir, 'missing.elf');

  before(async () => {
    host = await Host.start({ executors: 1 });
  });
  after(async () => {
    await host.close();
    cleanup();
  });

  async function createError(options: Parameters<Host['create']>[0]): Promise<VmCreateError> {
    try {
      const vm = await host.create(options);
      await vm.destroy();
    } catch (err) {
      assert.ok(err instanceof VmCreateError, `expected a VmCreateError, got ${String(err)}`);
      return err;
    }
    throw new Error(`create of ${options.image} succeeded`);
  }

  void it('a malformed image: VmCreateError naming the file and the field', async () => {
    const e = await createError({ image: badMachine });
    assert.equal(e.kind, 'ImageError');
    assert.equal(e.field, 'e_machine');
    assert.equal(e.file, badMachine);
    assert.match(e.message, /machine 40 is not EM_X86_64/);
    const t = await createError({ image: truncated });
    assert.equal(t.field, 'e_phoff');
    assert.equal(t.file, truncated);
  });

  void it('a missing file: VmCreateError with field "file"', async () => {
    const e = await createError({ image: missing });
    assert.equal(e.kind, 'ImageError');
    assert.equal(e.field, 'file');
    assert.equal(e.file, missing);
    assert.match(e.message, /no such file/);
    const d = await createError({ image: `${dir}/` });
    assert.equal(d.field, 'file');
    assert.match(d.message, /not a regular file/);
  });

  void it('an unknown built-in name: VmCreateError with field "image" naming it', async () => {
    const e = await createError({ image: 'no-such-image' });
    assert.equal(e.kind, 'UnknownImageError');
    assert.equal(e.field, 'image');
    assert.match(e.message, /"no-such-image" is neither a file nor a built-in image/);
  });

  void it('an image too big for its memory: field "memory"; one page less boots', async () => {
    const e = await createError({ image: tooBig, memoryMiB: 2 });
    assert.equal(e.kind, 'ImageError');
    assert.equal(e.field, 'memory');
    assert.equal(e.file, tooBig);
    assert.match(e.message, /ends at 0x1f1000 .* 2 MiB of memory is not enough/);

    const vm = await host.create({ image: fits, memoryMiB: 2 });
    assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
    assert.equal(vm.consoleText(), 'Hello from LightVM!\n');
    const roomy = await host.create({ image: tooBig, memoryMiB: 3 });
    assert.deepEqual(await roomy.exited, { kind: 'halt', status: 0 });
  });

  void it('bad memory sizes and command lines: VmCreateError naming the field', async () => {
    for (const memoryMiB of [0, 1, 1.5, 3073, Number.NaN]) {
      const e = await createError({ image: 'noop', memoryMiB });
      assert.equal(e.field, 'memory', `memoryMiB ${memoryMiB}`);
    }
    const c = await createError({ image: 'echo-cmdline', cmdline: 'x'.repeat(513) });
    assert.equal(c.field, 'cmdline');
    assert.match(c.message, /513 bytes is longer than the 512 allowed/);
    // Counted in bytes, not characters: 257 two-byte characters.
    const u = await createError({ image: 'echo-cmdline', cmdline: 'é'.repeat(257) });
    assert.equal(u.field, 'cmdline');
  });

  void it('50 failed creates leave no descriptor and no mapping behind', async () => {
    const failing: Parameters<Host['create']>[0][] = [
      { image: badMachine }, // refused by the parser, before any KVM object exists
      { image: tooBig, memoryMiB: 2 }, // refused after the VM, its memory and vCPU were made
      { image: 'echo-cmdline', cmdline: 'y'.repeat(600) }, // likewise, at the command line
      { image: missing },
      { image: 'noop', devices: [{ type: 'net', id: 0, mac: 'zz' }] },
    ];
    // Warm up: the image cache, the executor's first VM, V8's code for these paths.
    for (const o of failing) await createError(o);
    const vm = await host.create({ image: 'noop' });
    await vm.exited;
    await vm.freed;
    const start = resources();
    for (let i = 0; i < 50; i++) await createError(failing[i % failing.length]!);
    assert.equal(liveVms(host), 0, 'no VM left alive');
    assertSameResources(start, resources(), 'after 50 failed creates');
  });
});
