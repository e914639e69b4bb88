// Shared by the test files: paths, guest images, and what this process holds
// (open file descriptors and memory mappings) for the leak checks.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readdirSync, readFileSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const GUEST_BUILD = join(ROOT, 'guest', 'build');
export const GUEST_INCLUDE = join(ROOT, 'guest', 'include');

export function guestImage(name: string): string {
  return join(GUEST_BUILD, `${name}.elf`);
}

export function guestBytes(name: string): Uint8Array {
  return new Uint8Array(readFileSync(guestImage(name)));
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/**
 * How much slower than this host the tests' host is: scripts/kvm-box.sh
 * sets LIGHTVM_TEST_TIME_SCALE where everything is emulated. The helpers'
 * waits and deadlines are multiplied by it (1 elsewhere): there the tests
 * check behaviour, not speed.
 */
export const TIME_SCALE = Math.max(1, Number(process.env.LIGHTVM_TEST_TIME_SCALE) || 1);
export const scaled = (ms: number): number => ms * TIME_SCALE;

/** Polls cond every few ms until it holds; fails with `what` after timeoutMs. */
export async function waitFor(what: string, cond: () => boolean, timeoutMs = 5000): Promise<void> {
  timeoutMs = scaled(timeoutMs);
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(2);
  }
}

/** A temporary directory, removed by the returned cleanup function. */
export function tempDir(prefix: string): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), `lightvm-${prefix}-`));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/**
 * Compiles a C program with the system gcc, runs it, and parses what it
 * prints: a JSON object of name -> unsigned 64-bit number written as a string.
 */
export function compileAndRunJson(source: string, includeDirs: string[] = []): Map<string, bigint> {
  const { dir, cleanup } = tempDir('cc');
  try {
    const src = join(dir, 'probe.c');
    const exe = join(dir, 'probe');
    writeFileSync(src, source);
    execFileSync('gcc', ['-std=gnu11', '-O0', '-Wall', '-Werror', ...includeDirs.map((d) => `-I${d}`), '-o', exe, src], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    const out = JSON.parse(execFileSync(exe, { encoding: 'utf8' })) as Record<string, string>;
    return new Map(Object.entries(out).map(([k, v]) => [k, BigInt(v)]));
  } finally {
    cleanup();
  }
}

/** A C string literal for s (names only: letters, digits, punctuation). */
export function cString(s: string): string {
  return JSON.stringify(s);
}

/**
 * The C source of a program that prints {"name": "value", ...} for each
 * (name, C expression) pair, every value as an unsigned 64-bit number in a
 * string (JSON numbers cannot hold 1 << 63).
 */
export function jsonProbe(headers: string[], checks: ReadonlyArray<readonly [string, string]>): string {
  const lines = checks.map(([name, expr], i) =>
    `  printf("%s%s: \\"%llu\\"\\n", ${i === 0 ? '""' : '","'}, ${cString(JSON.stringify(name))}, (unsigned long long)(${expr}));`);
  return [
    '#include <stddef.h>',
    '#include <stdio.h>',
    ...headers.map((h) => `#include <${h}>`),
    'int main(void)',
    '{',
    '  printf("{\\n");',
    ...lines,
    '  printf("}\\n");',
    '  return 0;',
    '}',
    '',
  ].join('\n');
}

// ---- what this process holds ----

/** Targets of every open file descriptor, sorted ("anon_inode:kvm-vm", "/dev/kvm", ...). */
export function openFds(): string[] {
  const out: string[] = [];
  for (const fd of readdirSync('/proc/self/fd')) {
    try {
      out.push(`${fd} -> ${readlinkSync(`/proc/self/fd/${fd}`)}`);
    } catch {
      // The descriptor readdir used for /proc/self/fd itself, already closed.
    }
  }
  return out.sort();
}

export interface Mapping {
  line: string;
  start: bigint;
  end: bigint;
  perms: string;
  path: string;
  /** VmFlags from /proc/self/smaps ("rd", "wr", "nr", "dc", ...). */
  flags: string[];
}

/** Every mapping of this process, with its VmFlags (from /proc/self/smaps). */
export function mappings(): Mapping[] {
  const out: Mapping[] = [];
  for (const line of readFileSync('/proc/self/smaps', 'utf8').split('\n')) {
    const m = /^([0-9a-f]+)-([0-9a-f]+) (\S+) \S+ \S+ \S+\s*(.*)$/.exec(line);
    if (m) {
      out.push({ line, start: BigInt(`0x${m[1]!}`), end: BigInt(`0x${m[2]!}`), perms: m[3]!, path: m[4]!, flags: [] });
    } else if (line.startsWith('VmFlags:') && out.length) {
      out[out.length - 1]!.flags = line.slice(8).trim().split(/\s+/);
    }
  }
  return out;
}

const MALLOC_HEAP_ALIGN = 64n << 20n;

/**
 * Memory mapped the way GuestMemory maps guest RAM and device pages:
 * anonymous, read-write, MAP_NORESERVE ("nr"). V8 maps its heap that way
 * too, but marks it MADV_DONTFORK ("dc"); glibc's thread arenas are
 * MAP_NORESERVE as well, but start on a 64 MiB boundary. With no VM alive
 * there is none of it: a leaked guest RAM or device page shows up here even
 * when the kernel has merged it with a neighbour.
 */
function isGuestMemory(m: Mapping): boolean {
  return m.path === '' && m.perms === 'rw-p' && m.flags.includes('nr') && !m.flags.includes('dc') &&
    m.start % MALLOC_HEAP_ALIGN !== 0n;
}

export interface Resources {
  fds: string[];
  /** Lines of /proc/self/maps, V8's own aside (those it marks MADV_DONTFORK: its heap and code). */
  maps: number;
  /** Mappings of a vCPU fd (its kvm_run page). */
  vcpuMaps: string[];
  /** Mappings that look like guest memory (see isGuestMemory). */
  guestMaps: string[];
  /** Bytes of anonymous read-write mappings, V8's own aside. */
  anonBytes: bigint;
}

export function resources(): Resources {
  const maps = mappings();
  return {
    fds: openFds(),
    maps: maps.filter((m) => !m.flags.includes('dc')).length,
    vcpuMaps: maps.filter((m) => m.path.includes('kvm-vcpu')).map((m) => m.line),
    guestMaps: maps.filter(isGuestMemory).map((m) => m.line),
    anonBytes: maps.filter((m) => m.path === '' && m.perms.startsWith('rw') && !m.flags.includes('dc'))
      .reduce((a, m) => a + (m.end - m.start), 0n),
  };
}

/**
 * Lines /proc/self/maps (V8's aside) may gain without any VM leaking: glibc
 * serves large allocations with mmaps of their own, and its arenas split.
 * A VM that leaked a mapping would add one per cycle: dozens to hundreds in
 * these tests.
 */
export const MAPS_SLACK = 8;

/**
 * Bytes anonymous memory may grow: the executor thread's garbage (message
 * buffers, typed arrays) waits for V8 to collect it, about 0.7 MiB per
 * thousand VMs here. A leaked guest RAM would be at least 2 MiB per VM.
 */
export const ANON_SLACK = 32n << 20n;

/**
 * Asserts that this process holds what it held before: exactly the same
 * open descriptors, vCPU mappings and guest-memory mappings; and as many
 * mappings and as much anonymous memory, within the slack explained above.
 */
export function assertSameResources(before: Resources, after: Resources, what: string): void {
  const diff = (a: string[], b: string[]): string => {
    const gained = b.filter((x) => !a.includes(x));
    const lost = a.filter((x) => !b.includes(x));
    return `${a.length} -> ${b.length}; new: [${gained.join(', ')}]; gone: [${lost.join(', ')}]`;
  };
  if (before.fds.join('\n') !== after.fds.join('\n')) throw new Error(`${what}: open descriptors changed: ${diff(before.fds, after.fds)}`);
  if (before.vcpuMaps.join('\n') !== after.vcpuMaps.join('\n')) {
    throw new Error(`${what}: vCPU (kvm_run) mappings changed: ${diff(before.vcpuMaps, after.vcpuMaps)}`);
  }
  if (before.guestMaps.join('\n') !== after.guestMaps.join('\n')) {
    throw new Error(`${what}: guest memory mappings changed: ${diff(before.guestMaps, after.guestMaps)}`);
  }
  if (after.maps > before.maps + MAPS_SLACK) {
    throw new Error(`${what}: /proc/self/maps grew from ${before.maps} to ${after.maps} lines (more than ${MAPS_SLACK})`);
  }
  const grown = after.anonBytes - before.anonBytes;
  if (grown > ANON_SLACK) {
    throw new Error(`${what}: anonymous mappings grew by ${grown >> 20n} MiB (more than ${ANON_SLACK >> 20n} MiB)`);
  }
}

/** Resolves as promise does, or rejects if it takes longer than ms. */
export async function within<T>(promise: Promise<T>, ms: number, what: string): Promise<T> {
  ms = scaled(ms);
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<never>((_r, reject) => {
    timer = setTimeout(() => reject(new Error(`${what}: not done after ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, late]);
  } finally {
    clearTimeout(timer);
  }
}

/** VMs a host lists that have not ended (a host may keep a record of ended ones). */
export function liveVms(host: { list(): { state: string }[] }): number {
  return host.list().filter((vm) => vm.state !== 'exited').length;
}

// ---- hand-assembled guests ----

/** Where a crafted image's code starts: its entry point. */
export const CRAFTED_ENTRY = 0x100100;
/** Where a crafted image's data starts. */
export const CRAFTED_DATA = 0x100200;

const le = (n: number | bigint, bytes: number): number[] =>
  Array.from({ length: bytes }, (_, i) => Number((BigInt(n) >> BigInt(8 * i)) & 0xffn));

/** x86-64 machine code, a few instructions at a time. */
export const asm = {
  movEax: (imm: number): number[] => [0xb8, ...le(imm, 4)],
  movDx: (imm: number): number[] => [0x66, 0xba, ...le(imm, 2)],
  movAl: (imm: number): number[] => [0xb0, imm & 0xff],
  /** mov eax, [moffs64] (a 64-bit address: a disp32 would be sign-extended) */
  load: (addr: number): number[] => [0xa1, ...le(addr, 8)],
  /** mov [moffs64], eax */
  store: (addr: number): number[] => [0xa3, ...le(addr, 8)],
  outDxEax: [0xef],
  outDxAx: [0x66, 0xef],
  outDxAl: [0xee],
  inEaxDx: [0xed],
  hlt: [0xf4],
  jmpSelf: [0xeb, 0xfe],
  /** outl of argGpa to the port of hypercall nr. */
  hypercall: (nr: number, argGpa: number): number[] => [...asm.movEax(argGpa), ...asm.movDx(0x500 + nr), ...asm.outDxEax],
};

/**
 * A static ELF64 x86-64 image with one R W X PT_LOAD at 1 MiB: code at
 * CRAFTED_ENTRY (its entry point), data at CRAFTED_DATA, memsz bytes in all.
 */
export function craftElf(code: number[], data: number[] = [], memsz = 0x1000): Uint8Array {
  const fileSize = 0x200 + data.length;
  if (0x100 + code.length > 0x200) throw new Error('code too long');
  const b = new Uint8Array(fileSize);
  const v = new DataView(b.buffer);
  b.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1]);
  v.setUint16(16, 2, true); // ET_EXEC
  v.setUint16(18, 62, true); // EM_X86_64
  v.setUint32(20, 1, true);
  v.setBigUint64(24, BigInt(CRAFTED_ENTRY), true);
  v.setBigUint64(32, 64n, true); // e_phoff
  v.setUint16(52, 64, true); // e_ehsize
  v.setUint16(54, 56, true); // e_phentsize
  v.setUint16(56, 1, true); // e_phnum
  const p = 64;
  v.setUint32(p, 1, true); // PT_LOAD
  v.setUint32(p + 4, 7, true); // R W X
  v.setBigUint64(p + 8, 0n, true); // p_offset
  v.setBigUint64(p + 16, 0x100000n, true);
  v.setBigUint64(p + 24, 0x100000n, true);
  v.setBigUint64(p + 32, BigInt(fileSize), true);
  v.setBigUint64(p + 40, BigInt(Math.max(memsz, fileSize)), true);
  v.setBigUint64(p + 48, 0x1000n, true);
  b.set(code, 0x100);
  b.set(data, 0x200);
  return b;
}

/** Little-endian u64 words, for a crafted image's data. */
export const u64s = (...words: (number | bigint)[]): number[] => words.flatMap((w) => le(w, 8));

/** One constant or layout figure, named on both sides of a shared guest layout. */
export interface LayoutCheck {
  c: string;
  ts: string;
  expected: bigint | undefined;
}

/** Where the TypeScript side and the C probe disagree, one line each (the ABI tests). */
export function layoutMismatches(checks: LayoutCheck[], probed: Map<string, bigint>, tsFile: string, header: string): string[] {
  const out: string[] = [];
  for (const { c, ts, expected } of checks) {
    const got = probed.get(c);
    if (got === undefined) out.push(`${c}: not printed by the probe`);
    else if (expected === undefined) out.push(`${ts}: missing in ${tsFile} (${header}: ${c} = ${got})`);
    else if (got !== expected) out.push(`${ts} = ${expected} on the TypeScript side, but ${c} = ${got} in ${header}`);
  }
  return out;
}

/** Numbers exported by a layout module that no check covers, by dotted path (functions skipped). */
export function uncoveredNumbers(checks: LayoutCheck[], module: Record<string, unknown>): string[] {
  const covered = new Set(checks.map((c) => c.ts));
  const stray: string[] = [];
  const visit = (path: string, v: unknown): void => {
    if (typeof v === 'number' || typeof v === 'bigint') {
      if (!covered.has(path)) stray.push(path);
    } else if (v !== null && typeof v === 'object') {
      for (const [k, x] of Object.entries(v)) visit(`${path}.${k}`, x);
    }
  };
  for (const [name, value] of Object.entries(module)) visit(name, value);
  return stray;
}
