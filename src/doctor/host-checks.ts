// Checks of the host itself: KVM, tun, bridges, the limits and the memory
// the planned number of VMs needs.
import { readFileSync } from 'node:fs';
import { userInfo } from 'node:os';
import { KvmUnavailableError } from '../kvm/errors.js';
import { Kvm, KVM_DEVICE } from '../kvm/kvm.js';
import { SysError } from '../sys/errors.js';
import { CAP } from '../sys/kvm-api.js';
import * as libc from '../sys/libc.js';
import { linkIndex } from '../sys/netlink.js';
import { startWorkerBeside } from '../vmm/workers.js';
import { fail, pass, warn, type CheckResult, type DoctorOptions } from './check.js';
import type { ProbeReply } from './netns-probe.js';

const who = (): string => `${userInfo().username} (uid ${process.getuid?.() ?? '?'})`;

/** The capabilities LightVM uses, what each is for, and whether VMs run at all without it. */
const CAPABILITIES: { cap: keyof typeof CAP; use: string; needed: boolean }[] = [
  { cap: 'USER_MEMORY', use: 'guest memory', needed: true },
  { cap: 'READONLY_MEM', use: 'the read-only noxs device page', needed: true },
  { cap: 'IMMEDIATE_EXIT', use: 'finishing an exit before registers are set (every boot from a prepared shell)', needed: true },
  { cap: 'XSAVE', use: 'save, restore and migration (FPU state)', needed: false },
  { cap: 'VCPU_EVENTS', use: 'save, restore and migration (pending events)', needed: false },
  { cap: 'GET_TSC_KHZ', use: "the guests' TSC frequency (monotonic time)", needed: false },
  { cap: 'SET_GUEST_DEBUG', use: 'run --count-instructions (single-stepping)', needed: false },
  { cap: 'EXT_CPUID', use: 'Linux guests (KVM_GET_SUPPORTED_CPUID)', needed: false },
];

export function checkKvm(): CheckResult[] {
  let kvm: Kvm;
  try {
    kvm = Kvm.open();
  } catch (err) {
    if (err instanceof KvmUnavailableError) {
      const found = err.message.slice(0, err.message.length - err.fix.length - 2);
      return [fail('kvm', `${found} (as ${who()})`, err.fix), fail('kvm-caps', 'not checked: /dev/kvm cannot be used', err.fix)];
    }
    throw err;
  }
  try {
    const results = [pass('kvm', `${KVM_DEVICE} opens read-write for ${who()}, KVM API 12`)];
    const missing = CAPABILITIES.filter((c) => kvm.check(CAP[c.cap]) <= 0);
    const slots = kvm.check(CAP.NR_MEMSLOTS);
    const needed = missing.filter((c) => c.needed);
    if (needed.length) {
      results.push(fail('kvm-caps', `KVM lacks ${needed.map((c) => `KVM_CAP_${c.cap} (${c.use})`).join(', ')}`,
        'use a Linux kernel with full KVM support (5.x or later), not an emulation of it'));
    } else if (missing.length) {
      results.push(warn('kvm-caps', `KVM lacks ${missing.map((c) => `KVM_CAP_${c.cap}, so no ${c.use}`).join('; ')}`,
        'a newer host kernel has them'));
    } else {
      results.push(pass('kvm-caps', `all ${CAPABILITIES.length} capabilities LightVM uses (${CAPABILITIES.map((c) => c.cap).join(', ')}), ${slots} memory slots per VM`));
    }
    return results;
  } finally {
    kvm.close();
  }
}

export function checkTun(): CheckResult {
  const path = '/dev/net/tun';
  try {
    libc.close(libc.open(path, libc.O_RDWR));
    return pass('tun', `${path} opens read-write (taps for vifs)`);
  } catch (err) {
    const code = err instanceof SysError ? err.code : String(err);
    if (code === 'ENOENT') return fail('tun', `${path} does not exist: VMs with a vif cannot be made`, 'load the tun module: modprobe tun');
    return fail('tun', `${path} does not open (${code}) for ${who()}`, 'run the daemon as root (or with CAP_NET_ADMIN), e.g. under contrib/lightvmd.service');
  }
}

/** CAP_NET_ADMIN in the effective set, from /proc (bit 12). */
function hasNetAdmin(): boolean {
  const m = /^CapEff:\s*([0-9a-f]+)$/m.exec(readFileSync('/proc/self/status', 'utf8'));
  return m ? (BigInt(`0x${m[1]}`) & (1n << 12n)) !== 0n : false;
}

function runProbe(): Promise<ProbeReply> {
  return new Promise((resolve, reject) => {
    const w = startWorkerBeside(import.meta.url, 'netns-probe', {});
    w.once('message', (m: ProbeReply) => resolve(m));
    w.once('error', reject);
    w.once('exit', (code) => reject(new Error(`the network probe ended with ${code} before it answered`)));
  });
}

export async function checkBridge(): Promise<CheckResult> {
  const id = 'bridge';
  const r = await runProbe();
  if (linkIndex('lvdoctor0')) return fail(id, 'the probe left a bridge lvdoctor0 in this namespace', 'delete it: ip link del lvdoctor0');
  if (r.ok) return pass(id, 'made a bridge and a tap on it, both up, in a throwaway network namespace (CAP_NET_ADMIN; bridge and tun in the kernel)');
  if (r.stage === 'unshare') {
    // No throwaway namespace without CAP_SYS_ADMIN: say what the capability set promises instead.
    return hasNetAdmin()
      ? pass(id, `CAP_NET_ADMIN held (not tried: no throwaway network namespace without CAP_SYS_ADMIN: ${r.code})`)
      : fail(id, `${who()} lacks CAP_NET_ADMIN: the daemon cannot make bridges or taps for vifs`, 'run the daemon as root, e.g. under contrib/lightvmd.service');
  }
  const fix = r.code === 'EPERM' || r.code === 'EACCES' ? 'run the daemon as root (CAP_NET_ADMIN)'
    : r.stage === 'bridge' ? 'load the bridge module: modprobe bridge' : 'load the tun module: modprobe tun';
  return fail(id, `could not make a ${r.stage} in a throwaway network namespace: ${r.message}`, fix);
}

/** fds a VM keeps open in its executor: the VM, its vCPU and (one vif) a tap. */
const FDS_PER_VM = 3;
/** An executor's own fds: its sockets, epoll, eventfds, Node's. Measured: 23-33. */
const FDS_PER_EXECUTOR = 64;
/** Threads of an executor process (main, preparer, Node's and V8's), measured: 8-11. */
const THREADS_PER_EXECUTOR = 12;
/** Host memory an idle daytime VM costs, kernel included, measured at 10,000 VMs (bench/results/scale.json). */
const KIB_PER_VM = 640;

function limit(name: string): { soft: number; hard: number } {
  const line = readFileSync('/proc/self/limits', 'utf8').split('\n').find((l) => l.startsWith(name));
  const [soft, hard] = (line?.slice(26).trim().split(/\s+/) ?? []).map((v) => (v === 'unlimited' ? Infinity : Number(v)));
  return { soft: soft ?? Infinity, hard: hard ?? Infinity };
}

const sysctl = (name: string): number => Number(readFileSync(`/proc/sys/${name.replace(/\./g, '/')}`, 'utf8').trim());

export function checkLimits(opts: DoctorOptions): CheckResult[] {
  const perExecutor = Math.min(opts.vms, opts.vmsPerExecutor);
  const executors = Math.ceil(opts.vms / opts.vmsPerExecutor) + 1; // and one spare
  const plan = `${opts.vms} VMs, ${perExecutor} per executor, ${executors} executors`;
  const results: CheckResult[] = [];

  // Node raises its soft fd limit to the hard one: the hard limit is what an executor gets.
  const fdNeed = perExecutor * FDS_PER_VM + FDS_PER_EXECUTOR;
  const nofile = limit('Max open files');
  const fileMax = sysctl('fs.file-max');
  const fdTotal = opts.vms * FDS_PER_VM + executors * FDS_PER_EXECUTOR;
  if (nofile.hard < fdNeed) {
    results.push(fail('fd-limit', `open files: hard limit ${nofile.hard}, an executor needs ${fdNeed} (${plan})`,
      `raise it (ulimit -Hn ${fdNeed}; LimitNOFILE= in contrib/lightvmd.service), or lower --vms-per-executor`));
  } else if (fileMax < fdTotal) {
    results.push(fail('fd-limit', `fs.file-max ${fileMax} < ${fdTotal} open files for ${plan}`, `sysctl -w fs.file-max=${fdTotal * 2}`));
  } else {
    results.push(pass('fd-limit', `open files: limit ${nofile.hard} per process (an executor needs ${fdNeed}), fs.file-max ${fileMax} (${plan})`));
  }

  // Threads: our processes count against RLIMIT_NPROC (root is exempt); every VM also has a kernel thread, which takes a pid.
  const threads = (executors + 1) * THREADS_PER_EXECUTOR;
  const nproc = limit('Max processes');
  const pids = Math.min(sysctl('kernel.pid_max'), sysctl('kernel.threads-max'));
  const pidNeed = opts.vms + threads + 1000;
  if (process.getuid?.() !== 0 && nproc.hard < threads + 200) {
    results.push(fail('process-limit', `processes/threads: limit ${nproc.hard}, LightVM alone runs ~${threads} threads (${plan})`,
      `raise it (ulimit -Hu ${threads * 2}; LimitNPROC= in the unit)`));
  } else if (pids < pidNeed) {
    results.push(fail('process-limit', `kernel.pid_max / threads-max ${pids} < ${pidNeed}: each VM has a kernel thread (${plan})`,
      `sysctl -w kernel.pid_max=${pidNeed * 2} kernel.threads-max=${pidNeed * 2}`));
  } else {
    results.push(pass('process-limit', `~${threads} threads of ours and ${opts.vms} VM kernel threads fit (pid_max/threads-max ${pids}${process.getuid?.() === 0 ? '' : `, nproc ${nproc.hard}`})`));
  }

  const available = Number(/^MemAvailable:\s+(\d+) kB$/m.exec(readFileSync('/proc/meminfo', 'utf8'))?.[1] ?? 0);
  const memNeed = opts.vms * KIB_PER_VM;
  results.push(available >= memNeed
    ? pass('memory', `${Math.round(available / 1024)} MiB available, ${opts.vms} idle VMs take ~${Math.round(memNeed / 1024)} MiB (${KIB_PER_VM} KiB each, measured)`)
    : fail('memory', `${Math.round(available / 1024)} MiB available, ${opts.vms} idle VMs take ~${Math.round(memNeed / 1024)} MiB (${KIB_PER_VM} KiB each)`,
      `plan for ${Math.floor(available / KIB_PER_VM)} VMs (--vms), or free memory`));
  return results;
}
