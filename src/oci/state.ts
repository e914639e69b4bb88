// lightvm-oci's record of a container: <root>/<id>/state.json, the
// exec.fifo its monitor waits on until `start`; the kernel copied out of the
// rootfs at create is in the daemon's runtime directory (which it may read). A container's status comes from its monitor process
// (alive, waiting on the fifo) and, for paused, from the daemon.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

export const DEFAULT_ROOT = '/run/lightvm-oci';
export const OCI_VERSION = '1.1.0';

export type Status = 'created' | 'running' | 'paused' | 'stopped';

export interface ContainerRecord {
  id: string;
  bundle: string;
  rootfs: string;
  /** RFC 3339, UTC. */
  created: string;
  annotations: Record<string, string>;
  /** The VM's name in the daemon. */
  vm: string;
  /** The daemon's socket, as create found it: later commands may come with another environment. */
  socket: string;
  /** The kernel copied out of the rootfs (into the daemon's runtime directory), and its path there. */
  kernel: string;
  kernelPath: string;
  cmdline: string;
  memoryMiB: number;
  terminal: boolean;
  /** Shutdown grace before a SIGTERM becomes a destroy. */
  graceMs: number;
  monitorPid: number;
  /** Field 22 of /proc/<pid>/stat when it started: tells the monitor from a later process with its pid. */
  monitorStart: string;
}

/** Container ids as runc takes them: no path separators, no dot names. */
export function checkId(id: string): void {
  if (!/^[\w+.-]{1,1024}$/.test(id) || id === '.' || id === '..') throw new Error(`invalid container id "${id}": letters, digits, _ + - . only`);
}

export const containerDir = (root: string, id: string): string => join(root, id);
export const fifoPath = (dir: string): string => join(dir, 'exec.fifo');

export function readRecord(root: string, id: string): ContainerRecord | undefined {
  checkId(id);
  const file = join(containerDir(root, id), 'state.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
  try {
    return JSON.parse(text) as ContainerRecord;
  } catch (err) {
    throw new Error(`${file}: damaged (${(err as Error).message}): delete --force ${id} removes it`, { cause: err });
  }
}

/**
 * The state JSON from the line after "status" on, as `state` prints it: the
 * package's sh bin prints the head (id, pid, status) and this.
 */
export function stateTail(rec: ContainerRecord): string {
  return `${JSON.stringify(stateJson(rec, 'stopped'), null, 2).split('\n').slice(5).join('\n')}\n`;
}

/** Written whole or not at all; state.tail first, so the record never lacks it. */
export function writeRecord(root: string, rec: ContainerRecord): void {
  const dir = containerDir(root, rec.id);
  writeFileSync(join(dir, 'state.tail'), stateTail(rec), { mode: 0o600 });
  const file = join(dir, 'state.json');
  writeFileSync(`${file}.tmp`, JSON.stringify(rec), { mode: 0o600 });
  renameSync(`${file}.tmp`, file);
}

/** Start time and state letter of a process, from /proc/<pid>/stat. */
export function procStat(pid: number): { start: string; state: string } | undefined {
  if (!(pid > 0)) return undefined;
  let s: string;
  try {
    s = readFileSync(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name (field 2) may hold spaces and parentheses: fields start after the last ')'.
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return { state: f[0]!, start: f[19]! };
}

/** The monitor is still that process and has not exited (a zombie has). */
export function monitorAlive(rec: ContainerRecord): boolean {
  const st = procStat(rec.monitorPid);
  return st !== undefined && st.start === rec.monitorStart && st.state !== 'Z' && st.state !== 'X';
}

/** Status without asking the daemon (running may be paused). */
export function localStatus(root: string, rec: ContainerRecord): Status {
  if (!monitorAlive(rec)) return 'stopped';
  return existsSync(fifoPath(containerDir(root, rec.id))) ? 'created' : 'running';
}

/** The state JSON of runc (a superset of the runtime spec's). */
export function stateJson(rec: ContainerRecord, status: Status): Record<string, unknown> {
  return {
    ociVersion: OCI_VERSION,
    id: rec.id,
    pid: status === 'stopped' ? 0 : rec.monitorPid,
    status,
    bundle: rec.bundle,
    rootfs: rec.rootfs,
    created: rec.created,
    annotations: rec.annotations,
    owner: '',
  };
}
