// The peers LightVM is measured against, run in the same benchmark:
// the C floor programs, fork+exec, QEMU, crun.
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { floorProgram, type FloorProgram } from './floor.js';

const run = promisify(execFile);

async function samples(program: FloorProgram, args: string[]): Promise<number[]> {
  const { stdout } = await run(floorProgram(program), args, { maxBuffer: 16 << 20 });
  return (JSON.parse(stdout) as { samples_ms: number[] }).samples_ms;
}

/** create VM + vCPU + 4 KiB + run to HLT + destroy, in C. */
export function kvmFloor(iterations: number): Promise<number[]> {
  return samples('kvm_floor', [String(iterations)]);
}

/**
 * Host memory a bare KVM VM holds once its vCPU has run, in C: n VMs of
 * 16 KiB entered in 64-bit mode with paging (as LightVM's guests are),
 * MemAvailable before and after, per VM. The kernel's floor for density.
 */
export async function kvmFloorMemory(n: number): Promise<number> {
  return (await kvmFloorHold(n)).mem_per_vm_kib;
}

/** Both figures of `kvm_floor --long --hold n`: MemAvailable's, and the kernel's own lines'. */
export async function kvmFloorHold(n: number): Promise<{ mem_per_vm_kib: number; kernel_per_vm_kib: number }> {
  const { stdout } = await run(floorProgram('kvm_floor'), ['--long', '--hold', String(n)]);
  return JSON.parse(stdout) as { mem_per_vm_kib: number; kernel_per_vm_kib: number };
}

/**
 * What LightVM's monitor must do for a cold boot, in C: a RAM slot and a
 * read-only device-page slot, 64-bit entry state, run to the first
 * hypercall, destroy (see bench/floor/kvm_floor_monitor.c).
 */
export function kvmFloorMonitor(iterations: number): Promise<number[]> {
  return samples('kvm_floor_monitor', [String(iterations)]);
}

/** A tap on the bridge, up: LightVM's vif set-up done by a C program (bench/floor/vif_floor.c). */
export function vifFloor(bridge: string, iterations: number): Promise<number[]> {
  return samples('vif_floor', [bridge, String(iterations)]);
}

/** fork + exec + wait of a static binary, in C. */
export function forkExec(iterations: number): Promise<number[]> {
  return samples('fork_exec', [String(iterations), floorProgram('true')]);
}

/**
 * A whole process per sample, timed by the same C loop as fork_exec: fork,
 * exec of program (an absolute path, empty environment), wait for its exit
 * with status 0.
 */
export function processRuns(iterations: number, program: string, args: string[]): Promise<number[]> {
  return samples('fork_exec', [String(iterations), program, ...args]);
}

export function which(cmd: string): string | undefined {
  for (const dir of (process.env.PATH ?? '/usr/bin:/bin').split(':')) {
    const p = join(dir, cmd);
    if (existsSync(p)) return p;
  }
  return undefined;
}

export const QEMU_ARGS = [
  '-M', 'microvm,x-option-roms=off,rtc=on', '-accel', 'kvm', '-cpu', 'qemu64,-pni', '-m', '32',
  '-nodefaults', '-no-user-config', '-display', 'none', '-serial', 'stdio', '-no-reboot',
  '-device', 'isa-debug-exit,iobase=0xf4,iosize=4',
];

export interface QemuResult {
  ms: number;
  status: number;
  output: string;
}

/**
 * Boots an image under QEMU microvm until it exits. isa-debug-exit makes
 * QEMU exit with (status << 1) | 1; `status` here is the guest's.
 */
export function qemuBoot(qemu: string, image: string, cmdline?: string): Promise<QemuResult> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const args = [...QEMU_ARGS, '-kernel', image, ...(cmdline ? ['-append', cmdline] : [])];
    const child = spawn(qemu, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    let errors = '';
    child.stdout.on('data', (b: Buffer) => (output += b.toString()));
    child.stderr.on('data', (b: Buffer) => (errors += b.toString()));
    child.on('error', reject);
    child.on('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code === null || (code & 1) === 0) {
        reject(new Error(`qemu did not exit through isa-debug-exit (code ${code}): ${errors.trim().slice(0, 300)}`));
        return;
      }
      resolve({ ms, status: code >> 1, output });
    });
  });
}
