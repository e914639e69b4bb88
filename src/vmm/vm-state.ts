// The run state of one VM on its executor, explicit: one field, and the
// changes the executor may make written down once. A change not in the
// table is a bug in the executor, said with the VM and both states.
//
//   created ──> runnable <──> running ──> parked ──> runnable
//                  │  ^          │           │
//                  v  │          v           v
//               paused/migrating (held: resume says whether to go back to
//                                 runnable or to parked)
//   any state but ended ──> ended
export type VmState = 'created' | 'runnable' | 'running' | 'parked' | 'paused' | 'migrating' | 'ended';

/** Where a held (paused or migrating) VM goes when it is let go. */
export type ResumeTo = 'runnable' | 'parked';

const LEGAL: Record<VmState, readonly VmState[]> = {
  created: ['runnable', 'parked', 'paused', 'ended'],
  runnable: ['running', 'paused', 'migrating', 'ended'],
  // Requests are handled between slices on the executor's one thread: a running VM is never held.
  running: ['runnable', 'parked', 'ended'],
  parked: ['runnable', 'paused', 'migrating', 'ended'],
  paused: ['runnable', 'parked', 'ended'],
  migrating: ['runnable', 'parked', 'ended'],
  ended: [],
};

export interface StatefulVm {
  vmId: number;
  state: VmState;
  resume: ResumeTo;
}

/** Changes vm's state, or throws if the table does not allow it. */
export function transition(vm: StatefulVm, to: VmState): void {
  if (!LEGAL[vm.state].includes(to)) throw new Error(`VM ${vm.vmId}: ${vm.state} -> ${to} is not a legal change of state`);
  vm.state = to;
}

/** Paused by the user or by a live migration's last step: it does not run here until let go. */
export function isHeld(vm: StatefulVm): boolean {
  return vm.state === 'paused' || vm.state === 'migrating';
}

/** Waits in POLL for its deadline or a device (held or not). */
export function isWaiting(vm: StatefulVm): boolean {
  return vm.state === 'parked' || (isHeld(vm) && vm.resume === 'parked');
}
