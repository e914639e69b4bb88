// src/sys/kvm-api.ts hand-codes the ioctl numbers, constants and struct
// layouts of <linux/kvm.h>. This compiles a program against the system's own
// header that prints each of them, and compares, naming every mismatch. Every
// number exported by kvm-api.ts must be covered by a check here.
import assert from 'node:assert/strict';
import { before, describe, it } from 'node:test';
import * as api from '../src/sys/kvm-api.js';
import { compileAndRunJson, jsonProbe } from './helpers.js';

const snake = (s: string): string => s.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`);

/** kvm-api.ts object -> the C struct whose field offsets it holds (field names converted to snake_case). */
const OFFSET_TABLES: Record<string, { struct: string; table: Record<string, number> }> = {
  REG_OFFSET: { struct: 'kvm_regs', table: api.REG_OFFSET },
  SEGMENT: { struct: 'kvm_segment', table: api.SEGMENT },
  SREGS: { struct: 'kvm_sregs', table: api.SREGS },
  DTABLE: { struct: 'kvm_dtable', table: api.DTABLE },
  MEMORY_REGION: { struct: 'kvm_userspace_memory_region', table: api.MEMORY_REGION },
  CPUID2: { struct: 'kvm_cpuid2', table: api.CPUID2 },
  CPUID_ENTRY: { struct: 'kvm_cpuid_entry2', table: api.CPUID_ENTRY },
  DIRTY_LOG: { struct: 'kvm_dirty_log', table: api.DIRTY_LOG },
  GUEST_DEBUG: { struct: 'kvm_guest_debug', table: api.GUEST_DEBUG },
  SIGNAL_MASK: { struct: 'kvm_signal_mask', table: api.SIGNAL_MASK },
  MSRS: { struct: 'kvm_msrs', table: api.MSRS },
  MSR_ENTRY: { struct: 'kvm_msr_entry', table: api.MSR_ENTRY },
};

/** RUN key -> the member of struct kvm_run it is the offset of. */
const RUN_MEMBER: Record<keyof typeof api.RUN, string> = {
  immediateExit: 'immediate_exit',
  exitReason: 'exit_reason',
  ioDirection: 'io.direction',
  ioSize: 'io.size',
  ioPort: 'io.port',
  ioCount: 'io.count',
  ioDataOffset: 'io.data_offset',
  mmioPhysAddr: 'mmio.phys_addr',
  mmioData: 'mmio.data',
  mmioLen: 'mmio.len',
  mmioIsWrite: 'mmio.is_write',
  failEntryReason: 'fail_entry.hardware_entry_failure_reason',
  internalSuberror: 'internal.suberror',
  internalNdata: 'internal.ndata',
  internalData: 'internal.data',
  debugException: 'debug.arch.exception',
  debugPc: 'debug.arch.pc',
  systemEventType: 'system_event.type',
};

/**
 * Widths (bytes) with which src reads or writes these members (machine.ts,
 * vcpu.ts, kvm-structs.ts): reading a u16 where the kernel has a u32 would
 * pass an offset check and still be wrong.
 */
const WIDTHS: ReadonlyArray<readonly [string, string, number]> = [
  ['kvm_run', 'immediate_exit', 1],
  ['kvm_run', 'exit_reason', 4],
  ['kvm_run', 'io.direction', 1],
  ['kvm_run', 'io.size', 1],
  ['kvm_run', 'io.port', 2],
  ['kvm_run', 'io.count', 4],
  ['kvm_run', 'io.data_offset', 8],
  ['kvm_run', 'mmio.phys_addr', 8],
  ['kvm_run', 'mmio.len', 4],
  ['kvm_run', 'mmio.is_write', 1],
  ['kvm_run', 'fail_entry.hardware_entry_failure_reason', 8],
  ['kvm_run', 'internal.suberror', 4],
  ['kvm_segment', 'base', 8],
  ['kvm_segment', 'limit', 4],
  ['kvm_segment', 'selector', 2],
  ...(['type', 'present', 'dpl', 'db', 's', 'l', 'g', 'avl', 'unusable'] as const).map((f) => ['kvm_segment', f, 1] as const),
  ['kvm_dtable', 'base', 8],
  ['kvm_dtable', 'limit', 2],
  ...(['cr0', 'cr3', 'cr4', 'efer'] as const).map((f) => ['kvm_sregs', f, 8] as const),
  ['kvm_userspace_memory_region', 'slot', 4],
  ['kvm_userspace_memory_region', 'flags', 4],
  ['kvm_userspace_memory_region', 'guest_phys_addr', 8],
  ['kvm_userspace_memory_region', 'memory_size', 8],
  ['kvm_userspace_memory_region', 'userspace_addr', 8],
  ['kvm_cpuid2', 'nent', 4],
  ...(['function', 'index', 'flags', 'eax', 'ebx', 'ecx', 'edx'] as const).map((f) => ['kvm_cpuid_entry2', f, 4] as const),
  ['kvm_guest_debug', 'control', 4],
  ['kvm_signal_mask', 'len', 4],
  ...api.REGS.map((r) => ['kvm_regs', r, 8] as const),
];

interface Check {
  /** kvm-api.ts path, e.g. "KVM.RUN" or "RUN.ioPort". */
  ts: string;
  /** C expression against <linux/kvm.h>. */
  c: string;
  expected: number;
}

function buildChecks(): Check[] {
  const checks: Check[] = [];
  const add = (ts: string, c: string, expected: number): void => {
    checks.push({ ts, c, expected });
  };
  for (const [k, v] of Object.entries(api.KVM)) add(`KVM.${k}`, `KVM_${k}`, v);
  for (const [k, v] of Object.entries(api.CAP)) add(`CAP.${k}`, `KVM_CAP_${k}`, v);
  for (const [k, v] of Object.entries(api.EXIT)) add(`EXIT.${k}`, `KVM_EXIT_${k}`, v);
  for (const [k, v] of Object.entries(api.SIZE)) add(`SIZE.${k}`, `sizeof(struct kvm_${snake(k)})`, v);
  add('MEM_READONLY', 'KVM_MEM_READONLY', api.MEM_READONLY);
  add('MEM_LOG_DIRTY_PAGES', 'KVM_MEM_LOG_DIRTY_PAGES', api.MEM_LOG_DIRTY_PAGES);
  add('GUESTDBG_ENABLE', 'KVM_GUESTDBG_ENABLE', api.GUESTDBG_ENABLE);
  add('GUESTDBG_SINGLESTEP', 'KVM_GUESTDBG_SINGLESTEP', api.GUESTDBG_SINGLESTEP);
  add('IO_OUT', 'KVM_EXIT_IO_OUT', api.IO_OUT);
  for (const [k, member] of Object.entries({ exceptionInjected: 'exception.injected', exceptionNr: 'exception.nr', exceptionHasErrorCode: 'exception.has_error_code', exceptionPending: 'exception.pending' })) {
    add(`VCPU_EVENTS.${k}`, `offsetof(struct kvm_vcpu_events, ${member})`, api.VCPU_EVENTS[k as keyof typeof api.VCPU_EVENTS]);
  }
  add('INTERNAL_ERROR_EMULATION', 'KVM_INTERNAL_ERROR_EMULATION', api.INTERNAL_ERROR_EMULATION);
  add('PIT_SPEAKER_DUMMY', 'KVM_PIT_SPEAKER_DUMMY', api.PIT_SPEAKER_DUMMY);
  for (const [k, member] of Object.entries(RUN_MEMBER)) {
    add(`RUN.${k}`, `offsetof(struct kvm_run, ${member})`, api.RUN[k as keyof typeof api.RUN]);
  }
  for (const [name, { struct, table }] of Object.entries(OFFSET_TABLES)) {
    for (const [k, v] of Object.entries(table)) add(`${name}.${k}`, `offsetof(struct ${struct}, ${snake(k)})`, v);
  }
  add('REGS.length * 8', 'sizeof(struct kvm_regs)', api.REGS.length * 8);
  for (const [struct, member, width] of WIDTHS) {
    add(`width of ${struct}.${member} as src uses it`, `sizeof(((struct ${struct} *)0)->${member})`, width);
  }
  return checks;
}

void describe('KVM interface: src/sys/kvm-api.ts against <linux/kvm.h>', () => {
  const checks = buildChecks();
  let probed = new Map<string, bigint>();

  before(() => {
    probed = compileAndRunJson(jsonProbe(['linux/kvm.h'], checks.map((c) => [c.ts, c.c])));
  });

  void it('every request number, constant, size, offset and width matches', () => {
    assert.ok(checks.length > 150, `only ${checks.length} checks`);
    const mismatches: string[] = [];
    for (const { ts, c, expected } of checks) {
      const got = probed.get(ts);
      if (got === undefined) mismatches.push(`${ts}: not printed by the probe`);
      else if (got !== BigInt(expected)) mismatches.push(`${ts} = 0x${expected.toString(16)} in kvm-api.ts, but ${c} = 0x${got.toString(16)}`);
    }
    assert.deepEqual(mismatches, []);
  });

  void it('every number exported by kvm-api.ts is checked', () => {
    const covered = new Set(checks.map((c) => c.ts));
    const unchecked: string[] = [];
    for (const [name, value] of Object.entries(api)) {
      if (name === 'EXIT_NAMES' || name === 'REGS') continue; // derived from EXIT / checked through REG_OFFSET
      if (typeof value === 'number') {
        if (!covered.has(name)) unchecked.push(name);
      } else if (value !== null && typeof value === 'object') {
        for (const [k, v] of Object.entries(value)) {
          if (typeof v === 'number' && !covered.has(`${name}.${k}`)) unchecked.push(`${name}.${k}`);
        }
      } else if (typeof value !== 'function') {
        unchecked.push(`${name} (${typeof value})`);
      }
    }
    assert.deepEqual(unchecked, []);
  });

  void it('EXIT_NAMES names every exit reason', () => {
    for (const [name, value] of Object.entries(api.EXIT)) assert.equal(api.EXIT_NAMES[value], name.toLowerCase(), `EXIT_NAMES[${value}]`);
  });
});
