// The container's process, as the caller of lightvm-oci sees it: a small
// process that `create` starts (so it descends from conmon or the runc shim,
// which reap it), waits on exec.fifo until `start`, then has the daemon run
// the VM, copies its console to stdout and exits with the guest's status
// (128+signal when the VM was ended by a signal). The VM is leased to this
// process's connection to the daemon: if the monitor dies, the daemon
// destroys the VM.
import { closeSync, openSync, writeSync } from 'node:fs';
import { ApiError, Client } from '../cli/client.js';
import { containerDir, fifoPath, readRecord } from './state.js';

/** Exit status when the VM crashed or never ran (as `lightvm run`). */
export const EXIT_CRASHED = 125;

/** How long the daemon waits for the monitor to take the VM's lease. */
export const LEASE_MS = 10_000;
/** Signals that ask the guest to stop (then destroy after the grace). */
const STOP_SIGNALS = ['SIGTERM', 'SIGINT', 'SIGHUP', 'SIGQUIT'] as const;
const SIGNUM: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGQUIT: 3, SIGKILL: 9, SIGTERM: 15 };

interface VmReply {
  vm: { name: string; state: string; exit: { kind: string; status?: number; reason?: string } | null };
}

export async function runMonitor(root: string, id: string): Promise<number> {
  // Blocks until `start` opens the fifo (create has written the record by
  // then). No signal handler is installed yet: a kill before start ends this
  // process by the signal itself.
  const fd = openSync(fifoPath(containerDir(root, id)), 'w');
  writeSync(fd, '0');
  closeSync(fd);
  const rec = readRecord(root, id);
  if (!rec) {
    process.stderr.write(`lightvm-oci: container ${id}: its record under ${root} is gone\n`);
    return EXIT_CRASHED;
  }

  const client = new Client(rec.socket);
  let signal: number | undefined;
  let created = false;
  const onStop = (sig: NodeJS.Signals): void => {
    signal ??= SIGNUM[sig];
    if (!created) return;
    client.request('POST', `/v1/vms/${rec.vm}/shutdown`, { grace_ms: rec.graceMs }).catch(() => {});
  };
  for (const s of STOP_SIGNALS) process.on(s, onStop);
  try {
    try {
      await client.request('POST', '/v1/vms', { image: rec.kernel, name: rec.vm, memory: rec.memoryMiB, cmdline: rec.cmdline, lease_ms: LEASE_MS });
    } catch (err) {
      process.stderr.write(`lightvm-oci: container ${rec.id}: the VM did not start: ${(err as Error).message}\n`);
      return EXIT_CRASHED;
    }
    created = true;
    if (signal !== undefined) onStop('SIGTERM');
    let written = 0;
    let lease = true;
    for (;;) {
      // A second follow (the daemon restarted) replays the console history: skip what was written.
      let skip = written;
      try {
        await client.stream(`/v1/vms/${rec.vm}/console?follow=true${lease ? '&lease=true' : ''}`, (b) => {
          if (skip >= b.length) {
            skip -= b.length;
            return;
          }
          const out = skip > 0 ? b.subarray(skip) : b;
          skip = 0;
          written += out.length;
          process.stdout.write(out);
        });
      } catch (err) {
        if (!(err instanceof ApiError)) await new Promise((r) => setTimeout(r, 200));
      }
      lease = false;
      let vm: VmReply['vm'];
      try {
        vm = (await client.request<VmReply>('GET', `/v1/vms/${rec.vm}`)).vm;
      } catch (err) {
        // Destroyed (kill 9, delete --force, the lease): its record went with it.
        if (err instanceof ApiError && err.status === 404) return 128 + (signal ?? SIGNUM.SIGKILL!);
        // The daemon is restarting: it re-adopts the VM; follow again.
        await new Promise((r) => setTimeout(r, 200));
        continue;
      }
      if (vm.state !== 'exited') continue;
      await client.request('DELETE', `/v1/vms/${rec.vm}`).catch(() => {});
      return exitStatus(vm.exit, signal, rec.id);
    }
  } finally {
    for (const s of STOP_SIGNALS) process.off(s, onStop);
    client.close();
  }
}

function exitStatus(exit: VmReply['vm']['exit'], signal: number | undefined, id: string): number {
  if (exit?.kind === 'halt') return (exit.status ?? 0) & 0xff;
  if (exit?.kind === 'destroyed') return 128 + (signal ?? SIGNUM.SIGKILL!);
  process.stderr.write(`lightvm-oci: container ${id}: the VM ended: ${exit?.kind ?? 'unknown'}${exit?.reason ? `: ${exit.reason}` : ''}\n`);
  return EXIT_CRASHED;
}
