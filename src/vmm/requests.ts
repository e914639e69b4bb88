// The requests an executor carries out for its toolstack: one case each,
// in the executor's turn, between its guests' slices.
import * as libc from '../sys/libc.js';
import { POLL_CONTROL } from './abi.js';
import type { Executor } from './executor.js';
import { linuxRecord } from './linux-vms.js';
import { copyPages, digest, save } from './migration.js';
import type { ProcessRequest } from './protocol.js';
import { arm, disarm } from './services.js';
import { consoleInput } from './virtio/console.js';
import { create, restore } from './vm-creation.js';
import { netCounters } from './vm-entry.js';
import { isHeld, isWaiting } from './vm-state.js';

/** Carries out one request (the executor has stamped its arrival). */
export function carryOut(x: Executor, req: ProcessRequest): void {
  switch (req.op) {
    case 'hello':
      x.emit({
        ev: 'hello', id: x.id, pid: libc.getpid(), tid: libc.gettid(),
        vms: [...[...x.vms.values()].map((e) => x.record(e)), ...[...x.linuxVms.values()].filter((e) => e.started).map((e) => linuxRecord(e)), ...x.ended.values()],
        services: [...x.services.values()].map((svc) => ({
          serviceId: svc.id, config: svc.config, idleMs: svc.idleNs / 1e6, armedVmId: svc.armedVmId, vmId: svc.vmId,
        })),
        // A restore under way is this executor's too: its start (or failure) will come to whoever hears this.
        restoring: x.restoring.map((r) => ({ config: r.config, ...r.reader.progress })),
        failedRestores: [...x.failedRestores.values()],
        pools: Object.fromEntries(x.pools.depths()),
      });
      break;
    case 'forget':
      x.ended.delete(req.vmId);
      x.failedRestores.delete(req.vmId);
      break;
    case 'terminate':
      x.requestStop();
      break;
    case 'create':
      create(x, req);
      break;
    case 'restore':
      restore(x, req);
      break;
    case 'save':
      save(x, req);
      break;
    case 'destroy': {
      const e = x.vms.get(req.vmId);
      if (e) x.end(e, req.exit ?? { kind: 'destroyed' });
      else x.linuxVms.get(req.vmId)?.thread.stop(req.exit);
      break;
    }
    case 'copy-pages':
      copyPages(x, req);
      break;
    case 'digest':
      digest(x, req);
      break;
    case 'arm':
      arm(x, req);
      break;
    case 'disarm':
      disarm(x, req.serviceId);
      break;
    case 'migration-abort': {
      const e = x.vms.get(req.vmId);
      if (!e) break;
      e.machine.endRounds();
      if (e.state === 'migrating') x.handle({ op: 'unpause', vmId: req.vmId });
      break;
    }
    case 'pause': {
      const e = x.vms.get(req.vmId);
      if (e && !isHeld(e)) x.scheduler.hold(e, 'paused');
      x.emit({ ev: 'paused', vmId: req.vmId, ok: e !== undefined });
      break;
    }
    case 'unpause': {
      const e = x.vms.get(req.vmId);
      if (e && isHeld(e)) x.scheduler.release(e);
      x.emit({ ev: 'unpaused', vmId: req.vmId, ok: e !== undefined });
      break;
    }
    case 'console-input': {
      const e = x.vms.get(req.vmId);
      const error = e ? consoleInput(e.machine.bus, req.data) : { name: 'Error', message: x.missing(req.vmId, 'console input') };
      // A guest waiting in POLL wakes to read it.
      if (e && !error) x.deviceReady(e);
      x.emit({ ev: 'console-input', requestId: req.requestId, vmId: req.vmId, ...(error ? { error } : {}) });
      break;
    }
    case 'shutdown': {
      const e = x.vms.get(req.vmId);
      if (!e) break;
      e.machine.requestShutdown();
      // Parked in POLL: end the wait now so the guest sees the request.
      if (isWaiting(e)) x.scheduler.wakeUp(e, POLL_CONTROL);
      break;
    }
    case 'pool':
      x.pools.setTarget(req.memory, req.target);
      break;
    case 'stats':
      x.emit({
        ev: 'stats', requestId: req.requestId,
        vms: [...x.vms.values()].filter((e) => req.vmId === undefined || e.vmId === req.vmId).map((e) => ({
          vmId: e.vmId, cpuNs: e.cpuNs, exits: e.machine.exitCount, consoleThrottledNs: e.consoleRate.throttledNs,
          residentKiB: (e.machine.ram.residentBytes() + e.machine.devicePage.memory.residentBytes()) / 1024,
          nets: netCounters(e.machine),
        })),
      });
      break;
    case 'stop':
      x.requestStop();
      break;
  }
}
