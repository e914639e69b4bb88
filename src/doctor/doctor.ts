// `lightvm doctor`: every check, in an order where each builds on the last
// (KVM before a boot; the boot, the probe and the build run one at a time).
import { runChecks, type Check, type CheckResult, type DoctorOptions } from './check.js';
import { checkBridge, checkKvm, checkLimits, checkTun } from './host-checks.js';
import { checkBoot, checkBuild, checkDaemon, checkPeers } from './tool-checks.js';

export const CHECKS: [string, Check][] = [
  ['kvm', checkKvm],
  ['boot', checkBoot],
  ['tun', checkTun],
  ['bridge', checkBridge],
  ['limits', checkLimits],
  ['daemon', checkDaemon],
  ['gcc', checkBuild],
  ['peers', checkPeers],
];

export function doctor(opts: DoctorOptions): Promise<CheckResult[]> {
  return runChecks(CHECKS, opts);
}
