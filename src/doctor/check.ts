// What a check of `lightvm doctor` reports, and running them all.

/** pass: fine; warn: LightVM runs, but something it offers will not (say, a benchmark); fail: it will not run as planned. */
export type Status = 'pass' | 'warn' | 'fail';

export interface CheckResult {
  /** Stable name, for --json readers: "kvm", "tun", "peer:crun", ... */
  id: string;
  status: Status;
  /** One line: what was found. */
  verdict: string;
  /** One line: what to do about it (null when it passed). */
  fix: string | null;
}

export interface DoctorOptions {
  /** VMs the host is meant to hold at once: the limits are checked against them. */
  vms: number;
  vmsPerExecutor: number;
  /** The daemon's API socket. */
  socket: string;
}

export type Check = (opts: DoctorOptions) => Promise<CheckResult | CheckResult[]> | CheckResult | CheckResult[];

export const pass = (id: string, verdict: string): CheckResult => ({ id, status: 'pass', verdict, fix: null });
export const warn = (id: string, verdict: string, fix: string): CheckResult => ({ id, status: 'warn', verdict, fix });
export const fail = (id: string, verdict: string, fix: string): CheckResult => ({ id, status: 'fail', verdict, fix });

/** Runs the checks one after another (some create VMs or namespaces: never two at once); a check that throws fails with its error. */
export async function runChecks(checks: [string, Check][], opts: DoctorOptions): Promise<CheckResult[]> {
  const results: CheckResult[] = [];
  for (const [id, check] of checks) {
    try {
      const r = await check(opts);
      results.push(...(Array.isArray(r) ? r : [r]));
    } catch (err) {
      results.push(fail(id, `the check itself failed: ${(err as Error).message}`, 'run again with LIGHTVM_DEBUG=1 and report it'));
    }
  }
  return results;
}

const MARK: Record<Status, string> = { pass: 'ok  ', warn: 'warn', fail: 'FAIL' };

/** The human form: one line per check, its fix under it. */
export function formatResults(results: CheckResult[]): string {
  const width = Math.max(...results.map((r) => r.id.length));
  const lines = results.flatMap((r) => [
    `${MARK[r.status]}  ${r.id.padEnd(width)}  ${r.verdict}`,
    ...(r.fix ? [`${' '.repeat(6 + width + 2)}fix: ${r.fix}`] : []),
  ]);
  const failed = results.filter((r) => r.status === 'fail').length;
  const warned = results.filter((r) => r.status === 'warn').length;
  const summary = failed ? `${failed} of ${results.length} checks failed` + (warned ? `, ${warned} warned` : '')
    : warned ? `${results.length} checks: none failed, ${warned} warned` : `${results.length} checks, all passed`;
  return `${lines.join('\n')}\n${summary}\n`;
}
