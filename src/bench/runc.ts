// runc, the reference OCI runtime, as a process peer: `runc run` of the
// same bundle crun runs (a static busybox `true`, see crun.ts), each run
// timed by the C fork_exec loop from fork to the wait that reaps runc
// (runc's CLI start, create, start, the container's run, its deletion).
// Unlike crun, runc accepts this host's hybrid cgroup mount: it runs on
// the host's mount namespace, its state in the bundle's dir (--root).
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { crunAvailable, type Bundle } from './crun.js';
import { floorProgram } from './floor.js';
import { which } from './peers.js';

const run = promisify(execFile);

/** Why runc cannot be measured here, or undefined. */
export function runcAvailable(): string | undefined {
  if (!which('runc')) return 'runc not installed (scripts/install-peers.sh installs it)';
  // The bundle is made with crun's `spec` and busybox: the same needs.
  return crunAvailable();
}

/** n `runc run`s of the bundle's `true` container, back to back; samples in ms. */
export async function runcRun(bundle: Bundle, n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('runcRun: n must be a positive integer');
  const runc = which('runc');
  if (!runc) throw new Error('runc not installed');
  const state = join(bundle.dir, 'runc-state');
  let stdout: string;
  try {
    ({ stdout } = await run(floorProgram('fork_exec'), [String(n), runc, '--root', state, 'run', '-b', bundle.dir, `${bundle.id}-runc`],
      { maxBuffer: 16 << 20, timeout: 30_000 + n * 2_000 }));
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`runc run failed: ${(e.stderr ?? '').trim().slice(-500) || e.message}`, { cause: err });
  }
  const left = await readdir(state).catch(() => [] as string[]);
  if (left.length) throw new Error(`runc left container state behind: ${left.join(', ')}`);
  return (JSON.parse(stdout) as { samples_ms: number[] }).samples_ms;
}
