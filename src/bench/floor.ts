// The benchmarks' C floor programs (bench/floor: kvm_floor,
// kvm_floor_monitor, vif_floor, fork_exec, true, disk_floor), built on first use: they are needed to measure, never to run a
// VM, so an installed package carries their sources and builds them the
// first time a benchmark asks (with make and gcc), into the package when it
// may write there, else into the user's cache directory.
import { execFileSync } from 'node:child_process';
import { accessSync, constants, existsSync, readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { PACKAGE_ROOT } from '../toolstack/images.js';

export const FLOOR_SOURCES = join(PACKAGE_ROOT, 'bench', 'floor');
const PROGRAMS = ['kvm_floor', 'kvm_floor_monitor', 'vif_floor', 'fork_exec', 'true', 'disk_floor'] as const;
export type FloorProgram = (typeof PROGRAMS)[number];

export class FloorBuildError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FloorBuildError';
  }
}

function writable(dir: string): boolean {
  try {
    accessSync(dir, constants.W_OK);
    return true;
  } catch {
    return false;
  }
}

/** Where the programs go: bench/floor/build, or $XDG_CACHE_HOME/lightvm/<version>/floor for a read-only package. */
export function floorBuildDir(): string {
  if (writable(FLOOR_SOURCES)) return join(FLOOR_SOURCES, 'build');
  const version = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  return join(process.env.XDG_CACHE_HOME || join(homedir(), '.cache'), 'lightvm', version, 'floor');
}

let built: string | undefined;

/**
 * The directory holding the built programs, building them on the first
 * call of the process (make is incremental: ~10 ms once they are built).
 * Synchronous on purpose: it runs once, before any clock starts, and the
 * callers that ask whether a peer can run are synchronous.
 */
export function floorDir(): string {
  if (built) return built;
  const dir = floorBuildDir();
  try {
    execFileSync('make', ['-s', '-C', FLOOR_SOURCES, `BUILD=${dir}`], { stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stderr?: Buffer };
    const have = PROGRAMS.every((p) => existsSync(join(dir, p)));
    if (e.code === 'ENOENT' && have) {
      built = dir; // built before; make is gone since
      return dir;
    }
    const why = e.code === 'ENOENT' ? 'make not found' : (e.stderr?.toString().trim() || e.message);
    throw new FloorBuildError(`the benchmarks' C floor programs (${FLOOR_SOURCES}) could not be built into ${dir}: ${why}; ` +
      'they need make and gcc (Debian: apt-get install make gcc)');
  }
  built = dir;
  return dir;
}

export function floorProgram(name: FloorProgram): string {
  return join(floorDir(), name);
}
