// How a VM comes to be on an executor: created from its image, or restored
// from a snapshot (in memory, or read from its file a chunk per turn).
import type { Executor } from './executor.js';
import { createLinux } from './linux-vms.js';
import { type Machine, monotonicNs } from './machine.js';
import { serializeError, type CreateRequest, type RestoreRequest, type Timings } from './protocol.js';
import { SnapshotError, type Snapshot } from './snapshot.js';
import { SnapshotReader } from './snapshot-reader.js';
import { placeVirtio } from './virtio/mmio.js';
import { attachDevices } from './vm-devices.js';
import { appendHistory, CONSOLE_HISTORY } from './vm-entry.js';

export /** A restore whose file is being read: its shell takes the pages as they come. */
interface Restoring {
  config: CreateRequest;
  timings: Timings;
  reader: SnapshotReader;
  machine: Machine;
  warm: boolean;
}

export function create(x: Executor, request: CreateRequest): void {
  if (request.linux) {
    createLinux(x, request);
    return;
  }
  const req: CreateRequest = { ...request, devices: placeVirtio(request.devices) };
  if (req.trace) req.trace.wokeNs = x.wokeNs;
  const timings: Timings = { trace: req.trace, requestNs: monotonicNs(), shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 };
  let machine: Machine | undefined;
  let warm: boolean;
  try {
    if (x.vms.has(req.vmId)) throw new Error(`VM id ${req.vmId} already exists on this executor`);
    const image = x.images.get(req.image);
    ({ machine, warm } = x.shell(req.memory, req.warm));
    timings.shellNs = monotonicNs();
    machine.load(image, { vmId: req.vmId, name: req.name, cmdline: req.cmdline, devices: req.devices });
    attachDevices(x, machine, req, timings);
    if (req.countInstructions) machine.countInstructions();
    timings.loadedNs = monotonicNs();
  } catch (err) {
    machine?.close();
    x.emit({ ev: 'create-failed', vmId: req.vmId, error: serializeError(err) });
    return;
  }
  x.start(req, machine, timings, warm);
}

/**
 * Starts a VM from a snapshot, in a prepared shell if one is ready. A
 * file is read in steps (SnapshotReader), one chunk per turn between the
 * other VMs' slices: they keep running while it is read, and its bytes are
 * not held beside the guest's copy of them.
 */
export function restore(x: Executor, req: RestoreRequest): void {
  const config: CreateRequest = { ...req.config, devices: placeVirtio(req.config.devices) };
  const timings: Timings = { requestNs: monotonicNs(), shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 };
  if (req.snapshot) {
    restoreWhole(x, req.snapshot, config, timings);
    return;
  }
  let machine: Machine | undefined;
  let reader: SnapshotReader | undefined;
  try {
    if (x.vms.has(config.vmId) || x.restoring.some((r) => r.config.vmId === config.vmId)) throw new Error(`VM id ${config.vmId} already exists on this executor`);
    reader = new SnapshotReader(req.file ?? '');
    if (reader.header.vm.memory !== config.memory) {
      throw new SnapshotError(req.file ?? 'snapshot', 'header.vm.memory', 'changed since it was first read');
    }
    // Its pages go straight into the shell: no guest runs on it until the file is checked whole.
    const shell = x.shell(config.memory, config.warm);
    machine = shell.machine;
    timings.shellNs = monotonicNs();
    machine.beginRestore(config.memory);
    x.restoring.push({ config, timings, reader, machine, warm: shell.warm });
    x.emit({ ev: 'restore-progress', vmId: config.vmId, ...reader.progress });
  } catch (err) {
    reader?.close();
    machine?.close();
    x.emit({ ev: 'create-failed', vmId: config.vmId, error: serializeError(err) });
  }
}

/** One chunk of the restores under way (taking turns), and the VM started once its file is read and checked. */
export function restoreStep(x: Executor): void {
  const job = x.restoring.shift()!;
  let snapshot: Snapshot | undefined;
  try {
    snapshot = job.reader.step((p, data) => job.machine.placePage(p, data));
  } catch (err) {
    job.machine.close();
    restoreFailed(x, job.config, err);
    return;
  }
  if (!snapshot) {
    x.restoring.push(job);
    x.emit({ ev: 'restore-progress', vmId: job.config.vmId, ...job.reader.progress });
    return;
  }
  // Its start and its console history go out in one write, as a request's answers do: a toolstack that heard
  // the start alone could answer the restore before the history came.
  x.port.cork?.();
  try {
    restored(x, snapshot, job.config, job.timings, job.machine, job.warm);
  } finally {
    x.port.uncork?.();
  }
}

/** Failed restores an executor process keeps for a toolstack that did not hear of them. */
const MAX_FAILED_RESTORES = 64;

/** A restore from a file failed part way: said now, and kept for the hello of a toolstack that was not there to hear it. */
function restoreFailed(x: Executor, config: CreateRequest, err: unknown): void {
  const error = serializeError(err);
  if (x.keepRecords) {
    x.failedRestores.set(config.vmId, { config, error });
    // Bounded: the oldest goes first if no toolstack forgets them.
    if (x.failedRestores.size > MAX_FAILED_RESTORES) x.failedRestores.delete(x.failedRestores.keys().next().value!);
  }
  x.emit({ ev: 'create-failed', vmId: config.vmId, error });
}

/** A snapshot already in memory (a migration's, or its bytes): placed at once. */
function restoreWhole(x: Executor, snapshot: Snapshot, config: CreateRequest, timings: Timings): void {
  let machine: Machine | undefined;
  let warm: boolean;
  try {
    if (x.vms.has(config.vmId)) throw new Error(`VM id ${config.vmId} already exists on this executor`);
    if (snapshot.header.vm.memory !== config.memory) throw new SnapshotError('snapshot', 'header.vm.memory', 'changed since it was first read');
    ({ machine, warm } = x.shell(config.memory, config.warm));
    timings.shellNs = monotonicNs();
    machine.restore(snapshot, { vmId: config.vmId, name: config.name, cmdline: config.cmdline, devices: config.devices });
  } catch (err) {
    machine?.close();
    x.emit({ ev: 'create-failed', vmId: config.vmId, error: serializeError(err) });
    return;
  }
  restored(x, snapshot, config, timings, machine, warm, true);
}

/** The rest of a restore, its memory in place: state, devices, then it runs (or waits, as saved). */
function restored(x: Executor, snapshot: Snapshot, config: CreateRequest, timings: Timings, machine: Machine, warm: boolean, stateDone = false): void {
  try {
    if (!stateDone) machine.restoreState(snapshot, { vmId: config.vmId, name: config.name, cmdline: config.cmdline, devices: config.devices });
    attachDevices(x, machine, config, timings);
    machine.restoreDevices(snapshot.devices);
    timings.loadedNs = timings.bootNs = monotonicNs();
  } catch (err) {
    machine.close();
    if (stateDone) x.emit({ ev: 'create-failed', vmId: config.vmId, error: serializeError(err) });
    else restoreFailed(x, config, err);
    return;
  }
  const e = x.start(config, machine, timings, warm, snapshot);
  if (snapshot.console.length) {
    // A snapshot's console is the history its VM had: no more than that is kept, or sent on.
    const tail = snapshot.console.subarray(Math.max(0, snapshot.console.length - CONSOLE_HISTORY));
    if (x.keepRecords) e.console = appendHistory(e.console, tail);
    const dropped = snapshot.console.length - tail.length;
    x.emit({ ev: 'console', vmId: config.vmId, data: tail, ...(dropped ? { dropped } : {}) });
  }
}
