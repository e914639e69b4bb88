// Moving a VM out: the pages a live migration copies while the VM runs on,
// and the snapshot that ends a save or a migration's last step.
import { release } from 'node:os';
import { crypto } from '../sys/builtins.js';
import type { Executor } from './executor.js';
import type { Machine } from './machine.js';
import { monotonicNs } from './machine.js';
import { serializeError, type ProcessRequest } from './protocol.js';
import { encodeSnapshotParts, writeSnapshotFile } from './snapshot.js';
import { isHeld, isWaiting } from './vm-state.js';

const PAGE_BYTES = 4096;

/** The SHA-256 (hex) of every page of a VM's RAM. */
export function memoryDigest(m: Machine): string {
  return crypto().createHash('sha256').update(m.ram.bytes).digest('hex');
}

/** Answers a digest request: the SHA-256 of the VM's RAM. */
export function digest(x: Executor, req: Extract<ProcessRequest, { op: 'digest' }>): void {
  const e = x.vms.get(req.vmId);
  if (e) x.emit({ ev: 'digest', requestId: req.requestId, vmId: req.vmId, sha256: memoryDigest(e.machine) });
  else x.emit({ ev: 'digest', requestId: req.requestId, vmId: req.vmId, error: { name: 'Error', message: x.missing(req.vmId, 'a memory digest') } });
}

/** Live migration: copies pages out while the VM runs on. */
export function copyPages(x: Executor, req: Extract<ProcessRequest, { op: 'copy-pages' }>): void {
  const e = x.vms.get(req.vmId);
  try {
    if (!e) throw new Error(x.missing(req.vmId, 'live migration'));
    const m = e.machine;
    let pages: number[];
    if (req.round === 0) {
      // Rounds first, then copy: a page written meanwhile shows up in the next round.
      m.beginRounds();
      pages = m.capture().pages;
    } else {
      pages = m.dirtyPageList();
    }
    const data = new Uint8Array(pages.length * (4 + PAGE_BYTES));
    const v = new DataView(data.buffer);
    pages.forEach((p, i) => {
      const o = i * (4 + PAGE_BYTES);
      v.setUint32(o, p, true);
      data.set(m.ram.bytes.subarray(p * PAGE_BYTES, (p + 1) * PAGE_BYTES), o + 4);
    });
    x.emit({ ev: 'pages', requestId: req.requestId, vmId: req.vmId, data, count: pages.length });
  } catch (err) {
    x.emit({ ev: 'save-failed', requestId: req.requestId, vmId: req.vmId, error: serializeError(err) });
  }
}

/** Snapshots a VM; it ends, as saved, unless keep. */
export function save(x: Executor, req: Extract<ProcessRequest, { op: 'save' }>): void {
  const e = x.vms.get(req.vmId);
  const t0 = monotonicNs();
  if (!e) {
    x.emit({ ev: 'save-failed', requestId: req.requestId, vmId: req.vmId, error: { name: 'Error', message: x.missing(req.vmId, 'a snapshot') } });
    return;
  }
  try {
    const m = e.machine;
    // Held for its console's rate, it is in no POLL: it restores runnable.
    const parked = isWaiting(e) && !m.holding ? { remainingNs: Math.max(0, e.deadlineNs - monotonicNs()) } : null;
    const userPaused = e.state === 'paused';
    // Stop-and-copy: from here the VM does not run here again unless the migration is called off.
    if (req.final && !isHeld(e)) x.scheduler.hold(e, 'migrating');
    const c = m.capture(req.final ? m.dirtyPageList() : undefined);
    const sha256 = req.digest ? memoryDigest(m) : undefined;
    const parts = encodeSnapshotParts({
      header: {
        vm: { id: e.vmId, name: e.config.name, memory: m.memSize, cmdline: e.config.cmdline, devices: e.config.devices },
        image: { path: e.config.image, sha256: x.images.sha256(e.config.image) },
        msrs: c.vcpu.msrs.map((r) => [r.index, `0x${r.data.toString(16)}`]),
        parked: parked ? { arg: c.pollArg, remainingNs: parked.remainingNs } : null,
        paused: userPaused,
        savedAt: new Date().toISOString(),
        kernel: release(),
      },
      vcpu: c.vcpu, devicePage: c.devicePage, memory: c.memory, pages: c.pages, console: e.console, devices: c.devices,
    });
    const bytes = parts.reduce((n, b) => n + b.length, 0);
    if (req.file) writeSnapshotFile(req.file, parts);
    // Ended first, so that whoever hears 'saved' finds the VM's name free.
    if (!req.keep) x.end(e, { kind: 'saved', file: req.file ?? null });
    x.emit({
      ev: 'saved', requestId: req.requestId, vmId: req.vmId, file: req.file, data: req.file ? undefined : new Uint8Array(Buffer.concat(parts)),
      bytes, pages: c.pages.length, ns: monotonicNs() - t0, sha256,
    });
  } catch (err) {
    x.emit({ ev: 'save-failed', requestId: req.requestId, vmId: req.vmId, error: serializeError(err) });
  }
}
