// How a VM comes to be on an executor, by one path (launch): created from
// its image (on request, or booted by a just-in-time service's first frame),
// or restored from a snapshot (in memory, or read from its file a chunk per
// turn).
import type { Executor } from './executor.js';
import { createLinux } from './linux-vms.js';
import { type Machine, monotonicNs } from './machine.js';
import type { NetDevice } from './net.js';
import { serializeError, type CreateRequest, type RestoreRequest, type Timings } from './protocol.js';
import { SnapshotError, type Snapshot } from './snapshot.js';
import { SnapshotReader } from './snapshot-reader.js';
import { placeVirtio } from './virtio/mmio.js';
import { attachDevices } from './vm-devices.js';
import { appendHistory, CONSOLE_HISTORY, type Entry } from './vm-entry.js';

/** A restore whose file is being read: its shell takes the pages as they come. */
export interface Restoring {
  config: CreateRequest;
  timings: Timings;
  reader: SnapshotReader;
  machine: Machine;
  warm: boolean;
}

/** What a new VM is made from. */
export type Launch =
  /** Its image, loaded into a shell; a just-in-time service's VM gets the service's taps, which outlive it. */
  | { image: string; lentNets?: NetDevice[] }
  /** A snapshot: placed into a shell whole, or read into one already (a restore from its file). */
  | { snapshot: Snapshot; shell?: { machine: Machine; warm: boolean } };

/** A request's timings, from now on. */
export function newTimings(trace?: Timings['trace']): Timings {
  return { trace, requestNs: monotonicNs(), shellNs: 0, loadedNs: 0, bootNs: 0, endNs: 0, destroyedNs: 0 };
}

/**
 * The one way a VM comes to run here (create, restore, a just-in-time
 * boot): a shell, its memory and vCPU filled, its device modules attached,
 * then started. A failure frees what it took and says so; undefined then.
 */
export function launch(x: Executor, req: CreateRequest, timings: Timings, how: Launch): Entry | undefined {
  const snapshot = 'snapshot' in how ? how.snapshot : undefined;
  let shell = 'snapshot' in how ? how.shell : undefined;
  const identity = { vmId: req.vmId, name: req.name, cmdline: req.cmdline, devices: req.devices };
  try {
    if (!shell) {
      if (x.vms.has(req.vmId)) throw new Error(`VM id ${req.vmId} already exists on this executor`);
      if (snapshot && snapshot.header.vm.memory !== req.memory) throw new SnapshotError('snapshot', 'header.vm.memory', 'changed since it was first read');
      // An image that cannot be read takes no shell.
      const image = 'image' in how ? x.images.get(how.image) : undefined;
      shell = x.shell(req.memory, req.warm);
      timings.shellNs = monotonicNs();
      if (image) shell.machine.load(image, identity);
      else shell.machine.restore(snapshot!, identity);
    } else {
      // Its pages are in: the rest of its state.
      shell.machine.restoreState(snapshot!, identity);
    }
    attachDevices(x, shell.machine, req, timings, 'image' in how ? how.lentNets : undefined);
    if (snapshot) shell.machine.restoreDevices(snapshot.devices);
    if (req.countInstructions) shell.machine.countInstructions();
    timings.loadedNs = monotonicNs();
    // A restored VM booted long ago: it goes on from here.
    if (snapshot) timings.bootNs = timings.loadedNs;
  } catch (err) {
    shell?.machine.close();
    if ('snapshot' in how && how.shell) restoreFailed(x, req, err);
    else x.emit({ ev: 'create-failed', vmId: req.vmId, error: serializeError(err) });
    return undefined;
  }
  const e = x.start(req, shell.machine, timings, shell.warm, snapshot);
  if (snapshot?.console.length) {
    // A snapshot's console is the history its VM had: no more than that is kept, or sent on.
    const tail = snapshot.console.subarray(Math.max(0, snapshot.console.length - CONSOLE_HISTORY));
    if (x.keepRecords) e.console = appendHistory(e.console, tail);
    const dropped = snapshot.console.length - tail.length;
    x.emit({ ev: 'console', vmId: req.vmId, data: tail, ...(dropped ? { dropped } : {}) });
  }
  return e;
}

export function create(x: Executor, request: CreateRequest): void {
  if (request.linux) {
    createLinux(x, request);
    return;
  }
  const req: CreateRequest = { ...request, devices: placeVirtio(request.devices) };
  if (req.trace) req.trace.wokeNs = x.wokeNs;
  launch(x, req, newTimings(req.trace), { image: req.image });
}

/**
 * Starts a VM from a snapshot, in a prepared shell if one is ready. A
 * file is read in steps (SnapshotReader), one chunk per turn between the
 * other VMs' slices: they keep running while it is read, and its bytes are
 * not held beside the guest's copy of them.
 */
export function restore(x: Executor, req: RestoreRequest): void {
  const config: CreateRequest = { ...req.config, devices: placeVirtio(req.config.devices) };
  const timings = newTimings();
  if (req.snapshot) {
    // Already in memory (a migration's, or its bytes): placed at once.
    launch(x, config, timings, { snapshot: req.snapshot });
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
    launch(x, job.config, job.timings, { snapshot, shell: { machine: job.machine, warm: job.warm } });
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
