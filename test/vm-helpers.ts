// Shared by the snapshot, migration, restart and pause tests: the counting
// guest's console read as numbers (the proof that no step is lost or
// repeated), a VM's record, its CPU time and its end, through a real
// daemon's API.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { createServer, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { ok, request, until, type VmView } from './daemon-helpers.js';
import { GUEST_BUILD, GUEST_INCLUDE, ROOT } from './helpers.js';

/** The API's view of a VM, with its timings (monotonic ns of the executor that runs it). */
export type TimedVmView = VmView;

/** The numbers of the complete "count N" lines of a console; any other complete line fails. */
export function counts(text: string, what: string): number[] {
  const lines = text.split('\n');
  // The last piece is '' after a final newline, or a line still being written.
  lines.pop();
  return lines.map((l, i) => {
    const m = /^count (\d+)$/.exec(l);
    if (!m) assert.fail(`${what}: line ${i} is ${JSON.stringify(l)}, not a counter line`);
    return Number(m[1]);
  });
}

/** The last complete counter line's number, -1 if none. */
export function lastCount(text: string): number {
  const m = /count (\d+)\n$/.exec(text);
  return m ? Number(m[1]) : -1;
}

/**
 * Asserts that a counter's console goes on by exactly one from `from`: no
 * gap, no repeat. Returns the last number.
 */
export function assertCounting(text: string, what: string, from = 0): number {
  const n = counts(text, what);
  assert.ok(n.length > 0, `${what}: no counter line in ${JSON.stringify(text.slice(0, 200))}`);
  assert.equal(n[0], from, `${what}: the console starts at count ${n[0]}, not ${from}`);
  for (let i = 1; i < n.length; i++) {
    if (n[i] !== n[i - 1]! + 1) {
      const kind = n[i]! <= n[i - 1]! ? 'repeated' : `${n[i]! - n[i - 1]! - 1} lost`;
      assert.fail(`${what}: count ${n[i - 1]} is followed by count ${n[i]} (${kind}), line ${i}`);
    }
  }
  return n[n.length - 1]!;
}

export async function consoleOf(socket: string, name: string): Promise<string> {
  const r = await request(socket, 'GET', `/v1/vms/${name}/console`);
  if (r.status !== 200) throw new Error(`console of ${name}: ${r.status} ${r.text}`);
  return r.text;
}

export async function vmOf(socket: string, name: string): Promise<TimedVmView> {
  return (await ok<{ vm: TimedVmView }>(socket, 'GET', `/v1/vms/${name}`)).vm;
}

/** Every VM the daemon lists, as "id name state", sorted. */
export async function listed(socket: string): Promise<string[]> {
  const { vms } = await ok<{ vms: VmView[] }>(socket, 'GET', '/v1/vms');
  return vms.map((v) => `${v.id} ${v.name} ${v.state}`).sort();
}

/** Waits until the counter `name` has printed count n; returns its console then. */
export async function untilCount(socket: string, name: string, n: number, timeoutMs = 5000): Promise<string> {
  let text = '';
  await until(`${name} to print count ${n}`, async () => {
    text = await consoleOf(socket, name);
    return lastCount(text) >= n;
  }, timeoutMs);
  return text;
}

/** Waits until the VM has ended; returns its record. */
export async function untilExited(socket: string, name: string, timeoutMs = 5000): Promise<TimedVmView> {
  let vm: TimedVmView | undefined;
  await until(`${name} to end`, async () => {
    vm = await vmOf(socket, name);
    return vm.state === 'exited';
  }, timeoutMs);
  return vm!;
}

/** CPU time each VM has used, by id, as its executors count it (GET /v1/stats). */
export async function cpuNs(socket: string): Promise<Map<number, number>> {
  const { vms } = await ok<{ vms: { id: number; cpu_ns: number }[] }>(socket, 'GET', '/v1/stats');
  return new Map(vms.map((v) => [v.id, v.cpu_ns]));
}

/** Asserts that a console does not change for ms; returns it. */
export async function assertStill(socket: string, name: string, ms: number, what: string): Promise<string> {
  const a = await consoleOf(socket, name);
  await new Promise((r) => setTimeout(r, ms));
  const b = await consoleOf(socket, name);
  // Not assert.equal: a diff of two whole consoles says less than this.
  assert.ok(b === a, `${what}: ${name} printed ${JSON.stringify(b.slice(a.length, a.length + 80))} in ${ms} ms`);
  return b;
}

/** A TCP port nobody listens on (it was free a moment ago). */
export async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

/** SIGKILLs these processes (by pid), ignoring those already gone. */
export function killAll(pids: number[]): void {
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      // Gone already.
    }
  }
}

/**
 * A guest that writes its memory all the time: it sweeps N pages (the
 * command line, default 64, at most 256), checking that each holds the
 * previous sweep's number before writing the current one, and prints
 * "count N" every 10 ms (by WALLTIME, without POLL). A copy of it whose
 * memory is not exactly what it wrote (a page of an older sweep) prints
 * "BAD ..." and exits 1.
 */
export const DIRTIER_C = `#include <lightvm/lvm.h>
static volatile uint64_t mem[256 * 512];
int main(void)
{
    long pages = 64;
    if (lvm_parse_long(lvm_cmdline(), &pages) < 0 || pages < 1 || pages > 256)
        pages = 64;
    uint64_t line = 0, next = lvm_walltime_ns() + 10000000ull;
    for (uint64_t n = 1;; n++) {
        for (long p = 0; p < pages; p++) {
            uint64_t v = mem[p * 512];
            if (v != n - 1) {
                lvm_printf("BAD sweep %lu page %ld holds %lu\\n", n, p, v);
                return 1;
            }
            mem[p * 512] = n;
        }
        uint64_t now = lvm_walltime_ns();
        if (now >= next) {
            lvm_printf("count %lu\\n", line++);
            next = now + 10000000ull;
        }
    }
}
`;

/** Builds a guest image from C source against the built libOS (guest/build, npm run build); returns the ELF's path. */
export function buildGuest(dir: string, name: string, source: string): string {
  const cflags = ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', '-ffreestanding', '-nostdlib', '-static', '-fno-pic', '-fno-pie',
    '-mno-red-zone', '-mgeneral-regs-only', '-fno-stack-protector', '-fcf-protection=none', '-fno-asynchronous-unwind-tables',
    '-fno-unwind-tables', '-fno-tree-loop-distribute-patterns', '-ffunction-sections', '-fdata-sections', `-I${GUEST_INCLUDE}`];
  const ldflags = ['-no-pie', '-Wl,--build-id=none', '-Wl,-z,max-page-size=4096', '-Wl,-z,noexecstack', '-Wl,--gc-sections',
    `-Wl,-T,${join(ROOT, 'guest', 'lib', 'guest.ld')}`];
  const src = join(dir, `${name}.c`);
  const obj = join(dir, `${name}.o`);
  const elf = join(dir, `${name}.elf`);
  writeFileSync(src, source);
  const opts = { stdio: ['ignore', 'pipe', 'pipe'] as ('ignore' | 'pipe')[] };
  execFileSync('gcc', [...cflags, '-c', '-o', obj, src], opts);
  execFileSync('gcc', [...cflags, ...ldflags, '-o', elf, join(GUEST_BUILD, 'lib', 'entry.o'), join(GUEST_BUILD, 'lib', 'pvh_entry.o'), obj,
    join(GUEST_BUILD, 'liblvm.a')], opts);
  return elf;
}

/** Page records (u32 page number + 4096 bytes each, as copyPages gives them) into a map. */
export function takePages(into: Map<number, Uint8Array>, records: Uint8Array): void {
  const v = new DataView(records.buffer, records.byteOffset, records.byteLength);
  for (let o = 0; o + 4 + 4096 <= records.length; o += 4 + 4096) into.set(v.getUint32(o, true), records.slice(o + 4, o + 4 + 4096));
}
