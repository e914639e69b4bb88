// The CPUID table a Linux VM gets (KVM_SET_CPUID2): what KVM says it
// supports, minus the features this host cannot actually run. Some KVM
// hosts emulate guest instructions (nested set-ups) and their emulator
// lacks some: a kernel that finds such a feature in CPUID uses it and dies
// with an emulation failure. So each feature below is tried once per
// process by a probe VM that executes its instruction; a feature whose
// probe does not reach the probe's OUT is masked. Some hosts show a guest
// CPUID bits whatever the table says: a second probe reads CPUID under the
// masked table, and a feature the guest still sees is turned off on the
// kernel's command line instead (noxsave, clearcpuid=). Nothing is assumed
// about the host: a host that runs them all masks nothing.
import type { Kvm } from '../../kvm/kvm.js';
import { EINTR } from '../../sys/errors.js';
import { EXIT, EXIT_NAMES, INTERNAL_ERROR_EMULATION, RUN } from '../../sys/kvm-api.js';
import { encodeCpuid, patchSregs, sregsField, type CpuidEntry } from '../../sys/kvm-structs.js';
import { IMAGE_BASE_GPA } from '../layout.js';
import { Machine } from '../machine.js';
import { KICK_SIGNAL } from '../protocol.js';
import * as libc from '../../sys/libc.js';

type Reg = 'eax' | 'ebx' | 'ecx' | 'edx';

/** A CPUID bit: leaf, subleaf (index), register, bit number. */
export interface CpuidBit {
  leaf: number;
  index: number;
  reg: Reg;
  bit: number;
}

export interface FeatureProbe {
  /** Linux's name for the feature (/proc/cpuinfo). */
  name: string;
  /** The bits that announce it and what depends on it: all cleared when masked. */
  bits: readonly CpuidBit[];
  /** Leaves that only describe it: dropped when masked. */
  leaves?: readonly number[];
  /** CR4 bits the instruction needs. */
  cr4?: bigint;
  /** The kernel option that turns it off (default: clearcpuid=<name>). */
  kernelOption?: string;
  /** Machine code run at IMAGE_BASE_GPA in long mode, %rdi = a zeroed 4 KiB-aligned data page; it ends with the probe's OUT. */
  code: readonly number[];
}

/** The port a probe ends on when its instruction ran (outside the hypercall ports). */
export const PROBE_PORT = 0x4fe;
const DATA_GPA = IMAGE_BASE_GPA + 0x1000;
const PROBE_MEMORY = 2 * 1024 * 1024;
const CR4_OSFXSR = 1n << 9n;
const CR4_OSXSAVE = 1n << 18n;

const bit = (leaf: number, reg: Reg, b: number, index = 0): CpuidBit => ({ leaf, index, reg, bit: b });
// mov $DATA_GPA, %rdi
const RDI_DATA = [0x48, 0xc7, 0xc7, DATA_GPA & 0xff, (DATA_GPA >> 8) & 0xff, (DATA_GPA >> 16) & 0xff, DATA_GPA >>> 24];
// mov $PROBE_PORT, %dx; out %al, (%dx)
const DONE = [0x66, 0xba, PROBE_PORT & 0xff, PROBE_PORT >> 8, 0xee];

export const FEATURE_PROBES: readonly FeatureProbe[] = [
  {
    name: 'cx16',
    bits: [bit(1, 'ecx', 13)],
    // xor %eax,%eax; xor %edx,%edx; xor %ebx,%ebx; xor %ecx,%ecx; lock cmpxchg16b (%rdi)
    code: [...RDI_DATA, 0x31, 0xc0, 0x31, 0xd2, 0x31, 0xdb, 0x31, 0xc9, 0xf0, 0x48, 0x0f, 0xc7, 0x0f, ...DONE],
  },
  {
    name: 'xsave',
    // XSAVE, OSXSAVE and what needs XSAVE-managed state: AVX, FMA, F16C; AVX2 and AVX-512 (leaf 7).
    bits: [bit(1, 'ecx', 26), bit(1, 'ecx', 27), bit(1, 'ecx', 28), bit(1, 'ecx', 12), bit(1, 'ecx', 29),
      bit(7, 'ebx', 5), ...[16, 17, 21, 26, 27, 28, 30, 31].map((b) => bit(7, 'ebx', b))],
    leaves: [0xd],
    kernelOption: 'noxsave',
    cr4: CR4_OSFXSR | CR4_OSXSAVE,
    // xor %ecx,%ecx; mov $3,%eax; xor %edx,%edx; xsetbv; (rdi); mov $3,%eax; xor %edx,%edx; xsave (%rdi); xrstor (%rdi)
    code: [0x31, 0xc9, 0xb8, 3, 0, 0, 0, 0x31, 0xd2, 0x0f, 0x01, 0xd1, ...RDI_DATA, 0xb8, 3, 0, 0, 0, 0x31, 0xd2,
      0x0f, 0xae, 0x27, 0x0f, 0xae, 0x2f, ...DONE],
  },
  {
    name: 'popcnt',
    bits: [bit(1, 'ecx', 23)],
    // popcnt %eax,%eax
    code: [0xf3, 0x0f, 0xb8, 0xc0, ...DONE],
  },
  {
    name: 'movbe',
    bits: [bit(1, 'ecx', 22)],
    // movbe (%rdi),%eax
    code: [...RDI_DATA, 0x0f, 0x38, 0xf0, 0x07, ...DONE],
  },
  {
    name: 'smap',
    bits: [bit(7, 'ebx', 20)],
    // clac (what Linux's entry code runs first where SMAP is on)
    code: [0x0f, 0x01, 0xca, ...DONE],
  },
  {
    name: 'rdrand',
    bits: [bit(1, 'ecx', 30)],
    // rdrand %eax
    code: [0x0f, 0xc7, 0xf0, ...DONE],
  },
  {
    name: 'rdseed',
    bits: [bit(7, 'ebx', 18)],
    // rdseed %eax
    code: [0x0f, 0xc7, 0xf8, ...DONE],
  },
];

/**
 * An interrupted entry: on an executor's thread a kick waits pending (its
 * signal is blocked outside KVM_RUN) and would cut every entry short; it is
 * taken here (the executor reads its requests at its next turn anyway).
 */
function interrupted(): void {
  while (libc.takePendingSignal(KICK) !== 0);
}

/** Runs code at the image base with %rdi at the data page; its exit, or undefined if interrupted 100 times. */
function runCode(m: Machine, code: readonly number[]): number | undefined {
  m.ram.write(IMAGE_BASE_GPA, new Uint8Array(code));
  m.vcpu.setRegs({ rip: BigInt(IMAGE_BASE_GPA), rsp: BigInt(PROBE_MEMORY), rdi: BigInt(DATA_GPA), rflags: 2n });
  for (let tries = 0; tries < 100; tries++) {
    const r = m.vcpu.enter();
    if (r !== -EINTR) return r;
    interrupted();
  }
  return undefined;
}
const KICK = libc.sigset(KICK_SIGNAL);

/** What a probe found: the instruction ran, or how it failed. */
export interface ProbeResult {
  name: string;
  ran: boolean;
  /** Why it did not run: "KVM emulation failure", "triple fault", ... */
  reason?: string;
  /** KVM_GET_SUPPORTED_CPUID lists it. */
  offered: boolean;
  /** A guest still sees it in CPUID with it masked in the table. */
  shownMasked?: boolean;
}

function has(entries: readonly CpuidEntry[], b: CpuidBit): boolean {
  const e = entries.find((x) => x.function === b.leaf && x.index === b.index);
  return e !== undefined && ((e[b.reg] >>> b.bit) & 1) === 1;
}

function withBits(entries: readonly CpuidEntry[], bits: readonly CpuidBit[]): CpuidEntry[] {
  return entries.map((e) => {
    const out = { ...e };
    for (const b of bits) if (b.leaf === e.function && b.index === e.index) out[b.reg] = (out[b.reg] | (1 << b.bit)) >>> 0;
    return out;
  });
}

/** Runs one probe in a VM of its own: did its instruction run? */
export function runProbe(kvm: Kvm, probe: FeatureProbe): Omit<ProbeResult, 'offered'> {
  const m = new Machine(kvm, PROBE_MEMORY);
  try {
    // The probe's CPU has every feature KVM offers and its own (CR4.OSXSAVE needs XSAVE in the guest's CPUID).
    m.vcpu.setCpuid(encodeCpuid(withBits(kvm.supportedCpuid(), probe.bits.slice(0, 1))));
    if (probe.cr4) {
      const sregs = m.vcpu.getSregs();
      patchSregs(sregs, { cr4: sregsField(sregs, 'cr4') | probe.cr4 });
      try {
        m.vcpu.setSregs(sregs);
      } catch (err) {
        return { name: probe.name, ran: false, reason: `KVM refused the CR4 bits it needs (${(err as Error).message})` };
      }
    }
    const r = runCode(m, probe.code);
    if (r === undefined) return { name: probe.name, ran: false, reason: 'interrupted 100 times' };
    if (r === EXIT.IO && m.vcpu.run.getUint16(RUN.ioPort, true) === PROBE_PORT) return { name: probe.name, ran: true };
    let reason: string;
    if (r < 0) reason = `KVM_RUN failed (errno ${-r})`;
    else if (r === EXIT.INTERNAL_ERROR) {
      const sub = m.vcpu.run.getUint32(RUN.internalSuberror, true);
      reason = sub === INTERNAL_ERROR_EMULATION ? 'KVM emulation failure' : `KVM internal error ${sub}`;
    } else if (r === EXIT.SHUTDOWN) reason = 'triple fault (the instruction faulted)';
    else reason = `exit ${EXIT_NAMES[r] ?? r}`;
    return { name: probe.name, ran: false, reason };
  } finally {
    m.close();
  }
}

/** The probes' results, once per process. */
let findings: ProbeResult[] | undefined;

// CPUID leaf in %eax, subleaf in %ecx; cpuid; the four registers to the data page.
function cpuidCode(leaf: number, index: number): number[] {
  const imm = (v: number): number[] => [v & 0xff, (v >> 8) & 0xff, (v >> 16) & 0xff, v >>> 24];
  return [0xb8, ...imm(leaf), 0xb9, ...imm(index), 0x0f, 0xa2, ...RDI_DATA,
    0x89, 0x07, 0x89, 0x5f, 0x04, 0x89, 0x4f, 0x08, 0x89, 0x57, 0x0c, ...DONE];
}

/** The CPUID leaf a guest reads under this table (KVM_SET_CPUID2), as a probe VM sees it. */
export function guestCpuid(kvm: Kvm, table: Uint8Array, leaf: number, index = 0): Record<Reg, number> {
  const m = new Machine(kvm, PROBE_MEMORY);
  try {
    m.vcpu.setCpuid(table);
    const r = runCode(m, cpuidCode(leaf, index));
    if (r === undefined) throw new Error('CPUID probe: KVM_RUN interrupted 100 times');
    if (r !== EXIT.IO || m.vcpu.run.getUint16(RUN.ioPort, true) !== PROBE_PORT) throw new Error(`CPUID probe ended with exit ${EXIT_NAMES[r] ?? r}`);
    const v = new DataView(m.ram.bytes.buffer, m.ram.bytes.byteOffset + DATA_GPA, 16);
    return { eax: v.getUint32(0, true), ebx: v.getUint32(4, true), ecx: v.getUint32(8, true), edx: v.getUint32(12, true) };
  } finally {
    m.close();
  }
}

export function probeFeatures(kvm: Kvm, probes: readonly FeatureProbe[] = FEATURE_PROBES): ProbeResult[] {
  if (probes === FEATURE_PROBES && findings) return findings;
  const supported = kvm.supportedCpuid();
  const out: ProbeResult[] = probes.map((p) => ({ ...runProbe(kvm, p), offered: has(supported, p.bits[0]!) }));
  // What a guest sees of the failed ones with them masked: one CPUID run per leaf asked about.
  const failed = out.filter((r) => !r.ran).map((r) => r.name);
  if (failed.length) {
    const table = encodeCpuid(maskCpuid(supported, failed, probes));
    const seen = new Map<string, Record<Reg, number>>();
    for (const r of out) {
      if (r.ran) continue;
      const b = probes.find((p) => p.name === r.name)!.bits[0]!;
      const key = `${b.leaf}/${b.index}`;
      if (!seen.has(key)) seen.set(key, guestCpuid(kvm, table, b.leaf, b.index));
      r.shownMasked = ((seen.get(key)![b.reg] >>> b.bit) & 1) === 1;
    }
  }
  if (probes === FEATURE_PROBES) findings = out;
  return out;
}

/** entries with the bits and leaves of the named features cleared. */
export function maskCpuid(entries: readonly CpuidEntry[], masked: readonly string[], probes: readonly FeatureProbe[] = FEATURE_PROBES): CpuidEntry[] {
  const off = probes.filter((p) => masked.includes(p.name));
  const drop = new Set(off.flatMap((p) => p.leaves ?? []));
  return entries.filter((e) => !drop.has(e.function)).map((e) => {
    const out = { ...e };
    for (const p of off) {
      for (const b of p.bits) if (b.leaf === e.function && b.index === e.index) out[b.reg] = (out[b.reg] & ~(1 << b.bit)) >>> 0;
    }
    return out;
  });
}

export interface LinuxCpuid {
  /** The kvm_cpuid2 argument of KVM_SET_CPUID2. */
  table: Uint8Array;
  entries: CpuidEntry[];
  /** Features this host could not run, masked out of the table. */
  masked: string[];
  /** Kernel options for those a guest sees anyway (the host ignores the table for them). */
  kernelOptions: string[];
  probes: ProbeResult[];
}

/** The kernel options that turn these features off (clearcpuid= once, with every name: Linux reads its first only). */
export function kernelOptionsFor(names: readonly string[], probes: readonly FeatureProbe[] = FEATURE_PROBES): string[] {
  const own = probes.filter((p) => names.includes(p.name) && p.kernelOption).map((p) => p.kernelOption!);
  const clear = probes.filter((p) => names.includes(p.name) && !p.kernelOption).map((p) => p.name);
  return [...own, ...(clear.length ? [`clearcpuid=${clear.join(',')}`] : [])];
}

/** The CPUID a Linux VM gets on this host (the probes run on the first call of a process). */
export function linuxCpuid(kvm: Kvm): LinuxCpuid {
  const probes = probeFeatures(kvm);
  const masked = probes.filter((p) => !p.ran).map((p) => p.name);
  const entries = maskCpuid(kvm.supportedCpuid(), masked);
  const kernelOptions = kernelOptionsFor(probes.filter((p) => !p.ran && p.shownMasked).map((p) => p.name));
  return { table: encodeCpuid(entries), entries, masked, kernelOptions, probes };
}
