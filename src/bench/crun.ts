// crun, the OCI runtime, as a peer: how long a container that runs `true`
// takes from `crun run` to its deletion, timed per iteration by the C
// fork_exec loop (not by Node), plus the cost of giving a container a veth
// on a bridge the way a CNI bridge plugin does.
//
// This host has cgroups in hybrid mode (v1 controllers plus v2 at
// /sys/fs/cgroup/unified), which crun refuses. crun therefore runs inside a
// private mount namespace (`unshare -m`, propagation private) in which
// /sys/fs/cgroup/unified is unmounted, with --cgroup-manager=disabled. The
// host's mounts are never touched: the umount happens only in that
// namespace, which disappears with its last process. crun keeps its state
// in the bundle's temp dir (--root), never in /run/crun.
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { floorProgram } from './floor.js';
import { which } from './peers.js';

const run = promisify(execFile);

export interface Bundle {
  /** The OCI bundle: rootfs/, config.json (and config-net.json, state/). */
  dir: string;
  /** Container id used for every run from this bundle (runs are sequential). */
  id: string;
  /** Removes the bundle and any container state left in it. */
  cleanup(): Promise<void>;
}

interface Tools {
  crun: string;
  busybox: string;
  unshare: string;
  forkExec: string;
}

/** In the private namespace: leave hybrid cgroups, then run "$@". */
const IN_NAMESPACE = 'umount /sys/fs/cgroup/unified 2>/dev/null; exec "$@"';

/** PT_INTERP in a 64-bit little-endian ELF: dynamically linked. */
export function staticElfProblem(path: string): string | undefined {
  let fd: number | undefined;
  try {
    fd = openSync(path, 'r');
    const h = Buffer.alloc(64);
    if (readSync(fd, h, 0, 64, 0) < 64 || h.readUInt32BE(0) !== 0x7f454c46) return 'is not an ELF binary';
    if (h[4] !== 2 || h[5] !== 1) return 'is not a 64-bit little-endian ELF binary';
    const phoff = Number(h.readBigUInt64LE(0x20));
    const phentsize = h.readUInt16LE(0x36);
    const phnum = h.readUInt16LE(0x38);
    const ph = Buffer.alloc(phentsize * phnum);
    readSync(fd, ph, 0, ph.length, phoff);
    for (let i = 0; i < phnum; i++) {
      if (ph.readUInt32LE(i * phentsize) === 3) return 'is dynamically linked (install busybox-static)';
    }
    return undefined;
  } catch (err) {
    return `cannot be read: ${(err as Error).message}`;
  } finally {
    if (fd !== undefined) closeSync(fd);
  }
}

function tools(): Tools | string {
  if (process.platform !== 'linux') return 'crun needs Linux';
  if (process.getuid?.() !== 0) return 'crun runs rootful containers in a private mount namespace: needs root';
  const crun = which('crun');
  if (!crun) return 'crun not installed (scripts/install-peers.sh installs it)';
  const busybox = which('busybox');
  if (!busybox) return 'busybox not installed (scripts/install-peers.sh installs busybox-static)';
  const problem = staticElfProblem(busybox);
  if (problem) return `${busybox} ${problem}`;
  const unshare = which('unshare');
  if (!unshare) return 'unshare (util-linux) not installed';
  let forkExec: string;
  try {
    forkExec = floorProgram('fork_exec');
  } catch (err) {
    return (err as Error).message;
  }
  return { crun, busybox, unshare, forkExec };
}

function needTools(): Tools {
  const t = tools();
  if (typeof t === 'string') throw new Error(`crun peer unavailable: ${t}`);
  return t;
}

/** Why the crun peer cannot run here, or undefined when it can. */
export function crunAvailable(): string | undefined {
  const t = tools();
  return typeof t === 'string' ? t : undefined;
}

/** As crunAvailable, for crunVethSetup (also needs ip and bash). */
export function crunVethAvailable(): string | undefined {
  const reason = crunAvailable();
  if (reason) return reason;
  if (!which('ip')) return 'ip (iproute2) not installed';
  if (!which('bash')) return 'bash not installed';
  return undefined;
}

const NETNS = 'lightvm-crun';

interface OciConfig {
  process: { args: string[]; terminal: boolean };
  root: { path: string; readonly?: boolean };
  linux: { namespaces: { type: string; path?: string }[] };
}

/**
 * An OCI bundle in a fresh temp dir: a rootfs holding only a static
 * busybox (/bin/busybox, /bin/true and /bin/sh), and the config `crun spec`
 * generates with the process changed to /bin/true, no terminal, read-only
 * root. config-net.json is the same container joining the network
 * namespace /run/netns/lightvm-crun (used by crunVethSetup).
 */
export async function prepareBundle(): Promise<Bundle> {
  const t = needTools();
  const dir = await mkdtemp(join(tmpdir(), 'lightvm-crun-'));
  const state = join(dir, 'state');
  const id = `lightvm-${process.pid}-${randomBytes(4).toString('hex')}`;
  const cleanup = async (): Promise<void> => {
    // A run that was interrupted may leave a container behind: delete it
    // (in the same kind of namespace crun ran in), then the files.
    const left = await readdir(state).catch(() => [] as string[]);
    for (const c of left) {
      await run(t.unshare, ['-m', '--propagation', 'private', 'sh', '-c', IN_NAMESPACE, 'sh',
        t.crun, '--root', state, '--cgroup-manager=disabled', 'delete', '--force', c]).catch(() => {});
    }
    await rm(dir, { recursive: true, force: true });
  };
  try {
    const bin = join(dir, 'rootfs', 'bin');
    await mkdir(bin, { recursive: true });
    await copyFile(t.busybox, join(bin, 'busybox'));
    await symlink('busybox', join(bin, 'true'));
    await symlink('busybox', join(bin, 'sh'));
    // --root keeps `crun spec` from creating /run/crun on the host.
    await run(t.crun, ['--root', state, 'spec', '-b', dir]);
    const configPath = join(dir, 'config.json');
    const config = JSON.parse(await readFile(configPath, 'utf8')) as OciConfig;
    config.process.args = ['/bin/true'];
    config.process.terminal = false;
    config.root = { path: 'rootfs', readonly: true };
    await writeFile(configPath, JSON.stringify(config, null, 2));
    const net = config.linux.namespaces.find((n) => n.type === 'network');
    if (!net) throw new Error('crun spec: no network namespace in the generated config');
    net.path = `/run/netns/${NETNS}`;
    await writeFile(join(dir, 'config-net.json'), JSON.stringify(config, null, 2));
    return { dir, id, cleanup };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function assertNoContainerLeft(bundle: Bundle): Promise<void> {
  const left = await readdir(join(bundle.dir, 'state')).catch(() => [] as string[]);
  if (left.length) throw new Error(`crun left container state behind: ${left.join(', ')}`);
}

/**
 * `crun run` of the bundle's `true` container, n times back to back, each
 * timed by fork_exec (fork, exec crun, crun creates, starts, waits for and
 * deletes the container) inside one private mount namespace. Samples in ms.
 */
export async function crunRun(bundle: Bundle, n: number): Promise<number[]> {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('crunRun: n must be a positive integer');
  const t = needTools();
  const args = ['-m', '--propagation', 'private', 'sh', '-c', IN_NAMESPACE, 'sh',
    t.forkExec, String(n), t.crun, '--root', join(bundle.dir, 'state'), '--cgroup-manager=disabled',
    'run', '-b', bundle.dir, bundle.id];
  let stdout: string;
  try {
    ({ stdout } = await run(t.unshare, args, { maxBuffer: 16 << 20, timeout: 30_000 + n * 2_000 }));
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`crun run failed: ${(e.stderr ?? '').trim().slice(-500) || e.message}`, { cause: err });
  }
  await assertNoContainerLeft(bundle);
  return (JSON.parse(stdout) as { samples_ms: number[] }).samples_ms;
}

export interface VethSamples {
  /** Network set-up per container: netns, veth pair, bridge port, address, route, links up. */
  setup_ms: number[];
  /** `crun run` of the `true` container joining that network namespace. */
  run_ms: number[];
  /** Deleting the veth and the network namespace. */
  teardown_ms: number[];
}

// Runs as root in a private mount and network namespace. /run is a private
// tmpfs, so `ip netns` pins namespaces there and not on the host; the bridge
// lives in the private network namespace. Everything goes away with bash.
// Per container, as a CNI bridge plugin's ADD: create the netns, a veth pair
// with one end moved into it as eth0, the other end attached to the bridge
// and up, the address, lo and eth0 up and the default route. Two `ip -batch`
// processes (host side, container side) stand in for the one plugin process.
const VETH_SCRIPT = `
set -eu
n=$1 dir=$2 id=$3 crun=$4 ns=${NETNS}
umount /sys/fs/cgroup/unified 2>/dev/null || true
mount -t tmpfs -o mode=755 lightvm-bench /run
ip link set lo up
ip link add lvbr0 type bridge
ip addr add 10.88.0.1/16 dev lvbr0
ip link set lvbr0 up
for ((i = 0; i < n; i++)); do
  h=lvveth$i a=10.88.$(( i / 250 )).$(( i % 250 + 2 ))
  t0=$EPOCHREALTIME
  ip -b - <<EOF
netns add $ns
link add $h type veth peer name eth0 netns $ns
link set $h master lvbr0 up
EOF
  ip -n $ns -b - <<EOF
addr add $a/16 dev eth0
link set lo up
link set eth0 up
route add default via 10.88.0.1
EOF
  t1=$EPOCHREALTIME
  "$crun" --root "$dir/state" --cgroup-manager=disabled run -b "$dir" --config "$dir/config-net.json" "$id" >&2
  t2=$EPOCHREALTIME
  ip link del $h
  ip netns del $ns
  t3=$EPOCHREALTIME
  echo "lightvm-sample $(( \${t1/./} - \${t0/./} )) $(( \${t2/./} - \${t1/./} )) $(( \${t3/./} - \${t2/./} ))"
done
`;

/**
 * n containers one after another, each given a network the way a CNI
 * bridge plugin would, run, and torn down; each phase timed per container
 * (bash $EPOCHREALTIME, microsecond resolution). Samples in ms.
 */
export async function crunVethSetup(bundle: Bundle, n: number): Promise<VethSamples> {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('crunVethSetup: n must be a positive integer');
  const reason = crunVethAvailable();
  if (reason) throw new Error(`crun veth peer unavailable: ${reason}`);
  const t = needTools();
  const args = ['-m', '-n', '--propagation', 'private', which('bash')!, '-c', VETH_SCRIPT, 'bash',
    String(n), bundle.dir, bundle.id, t.crun];
  let stdout: string;
  try {
    ({ stdout } = await run(t.unshare, args, { maxBuffer: 16 << 20, timeout: 30_000 + n * 5_000 }));
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`crun veth run failed: ${(e.stderr ?? '').trim().slice(-500) || e.message}`, { cause: err });
  }
  await assertNoContainerLeft(bundle);
  const out: VethSamples = { setup_ms: [], run_ms: [], teardown_ms: [] };
  for (const line of stdout.split('\n')) {
    const m = /^lightvm-sample (\d+) (\d+) (\d+)$/.exec(line);
    if (!m) continue;
    out.setup_ms.push(Number(m[1]) / 1000);
    out.run_ms.push(Number(m[2]) / 1000);
    out.teardown_ms.push(Number(m[3]) / 1000);
  }
  if (out.setup_ms.length !== n) throw new Error(`crun veth run: ${out.setup_ms.length} of ${n} samples`);
  return out;
}
