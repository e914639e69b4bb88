// Builds our bzImage test guest (guest/linux/probe.*) with gcc and wraps it
// as a bzImage (test/bzimage-builder.ts); used by the Linux boot tests.
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { buildBzImage } from './bzimage-builder.js';
import { GUEST_INCLUDE, ROOT } from './helpers.js';

/** The probe's flat binary (its 64-bit entry at offset 0x200, linked at 2 MiB). */
export function buildProbe(dir: string): Uint8Array {
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

/** The probe's ELF (linked at 2 MiB), as buildProbe left it in dir. */
export function probeElf(dir: string): Uint8Array {
  buildProbe(dir);
  return new Uint8Array(readFileSync(join(dir, 'probe.elf')));
}

/** The probe as a bzImage file in dir; returns its path. */
export function writeProbeBzImage(dir: string): string {
  const file = join(dir, 'probe.bzImage');
  writeFileSync(file, buildBzImage({ payload: buildProbe(dir), prefAddress: 0x200000n, relocatable: false }));
  return file;
}

export function fnv(bytes: Uint8Array): number {
  let h = 2166136261;
  for (const b of bytes) h = Math.imul(h ^ b, 16777619) >>> 0;
  return h;
}
