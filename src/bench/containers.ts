// `lightvm bench containers`: LightVM under the container engines against
// runc under the same engines, in one run, on a private containerd (and
// private podman storage):
// - ctr run --rm with our shim vs with runc: wall clock of the ctr process,
//   spawn to exit (start to exit of a container that exits at once);
// - ctr run -d: spawn to ctr's return, i.e. the task is running;
// - podman run --rm / -d with lightvm-oci vs runc, the same two clocks;
// - `tasks` long-lived tasks started one after another through one
//   containerd with our shim: each ctr run -d timed; p50/p90 of the first and
//   last windows, and the shim server's open fds and RSS at the end;
// - what a task's start is made of, with the server up: ctr's own start and
//   one request (ctr version), and the shim binary's start and delete as
//   containerd execs them, answered in sh (the package bin) and in Node.
// Both sides pay ctr's (podman's) own start. Our side's guest is the
// unikernel hello / sleeper; runc's is a static busybox (true / sleep).
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, loadavg, release } from 'node:os';
import { join } from 'node:path';
import { buildImage } from '../container/oci-image.js';
import { BUILTIN_DIR, PACKAGE_ROOT } from '../toolstack/images.js';
import { startDaemon } from './daemon-peer.js';
import { ratio, summarize, type Percentiles } from './stats.js';

export interface ContainersBenchOptions {
  runs: number;
  tasks: number;
  /** Measure podman too (default true). */
  podman?: boolean;
  onProgress?: (phase: string, done: number, total: number) => void;
}

const BUSYBOX = '/bin/busybox';
const LIGHTVM = ['--runtime', 'io.containerd.lightvm.v1'];

function which(cmd: string): boolean {
  return spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
}

/** Runs a command to its end; its wall time in ms. A non-zero exit (other than `expect`) is an error naming it. */
function timed(cmd: string, args: string[], env?: NodeJS.ProcessEnv, expect = 0, cwd?: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'], env, cwd });
    let err = '';
    child.stderr!.setEncoding('utf8').on('data', (s: string) => (err += s));
    child.once('error', reject);
    child.once('exit', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      if (code !== expect) reject(new Error(`${cmd} ${args.join(' ')}: exit ${code}, expected ${expect}: ${err.trim().slice(-500)}`));
      else resolve(ms);
    });
  });
}

function quiet(cmd: string, args: string[]): void {
  spawnSync(cmd, args, { stdio: 'ignore', timeout: 60_000 });
}

function pair(lightvm: number[], runc: number[]): { lightvm: Percentiles; runc: Percentiles; runc_over_lightvm_p50: number; runc_over_lightvm_p90: number } {
  const l = summarize(lightvm);
  const r = summarize(runc);
  return { lightvm: l, runc: r, runc_over_lightvm_p50: ratio(r.p50_ms, l.p50_ms), runc_over_lightvm_p90: ratio(r.p90_ms, l.p90_ms) };
}

/** Why the benchmark cannot run here, or undefined. */
export function containersUnavailable(): string | undefined {
  for (const c of ['containerd', 'ctr', 'runc']) if (!which(c)) return `${c} is not installed (scripts/install-peers.sh)`;
  if (!existsSync(BUSYBOX)) return `${BUSYBOX} (busybox-static) is not installed`;
  if (process.getuid?.() !== 0) return 'containerd needs root';
  return undefined;
}

export async function benchContainers(opts: ContainersBenchOptions): Promise<Record<string, unknown>> {
  const why = containersUnavailable();
  if (why) throw new Error(`bench containers: ${why}`);
  const progress = opts.onProgress ?? ((): void => {});
  // Short: socket paths must stay under 108 bytes.
  const dir = mkdtempSync('/tmp/lvbc-');
  const daemon = await startDaemon();
  let containerd: ChildProcess | undefined;
  const env = { ...process.env, LIGHTVM_SOCKET: daemon.socket, LIGHTVM_SHIM_DIR: join(dir, 's') };
  const sock = join(dir, 'c.sock');
  const ctr = (...args: string[]): string[] => ['--address', sock, ...args];
  const result: Record<string, unknown> = { bench: 'containers' };
  try {
    // The two binaries as containerd and podman exec them.
    const bin = join(dir, 'bin');
    mkdirSync(bin);
    // The package's bin (sh), which answers start and delete without Node when it can.
    const shim = join(bin, 'containerd-shim-lightvm-v1');
    writeFileSync(shim, `#!/bin/sh\nLIGHTVM_NODE="${process.execPath}" exec "${join(PACKAGE_ROOT, 'bin', 'containerd-shim-lightvm-v1')}" "$@"\n`);
    chmodSync(shim, 0o755);
    // The package's bin (sh) too, which answers start and delete --force without Node when it can.
    const oci = join(bin, 'lightvm-oci');
    writeFileSync(oci, `#!/bin/sh\nLIGHTVM_NODE="${process.execPath}" exec "${join(PACKAGE_ROOT, 'bin', 'lightvm-oci')}" --lightvm-socket "${daemon.socket}" "$@"\n`);
    chmodSync(oci, 0o755);
    writeFileSync(join(dir, 'config.toml'), [
      'version = 2', `root = "${dir}/root"`, `state = "${dir}/state"`, 'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
      '[grpc]', `  address = "${sock}"`, '[ttrpc]', `  address = "${sock}.ttrpc"`, '',
    ].join('\n'));
    containerd = spawn('containerd', ['--config', join(dir, 'config.toml')], { stdio: 'ignore', env: { ...env, PATH: `${bin}:${process.env.PATH}` } });
    for (let i = 0; spawnSync('ctr', ctr('version'), { stdio: 'ignore' }).status !== 0; i++) {
      if (containerd.exitCode !== null || i > 300) throw new Error('containerd did not start');
      await new Promise((r) => setTimeout(r, 100));
    }
    const images = {
      hello: buildImage({ kernel: join(BUILTIN_DIR, 'hello.elf'), tag: 'lightvm/hello:1' }),
      sleeper: buildImage({ kernel: join(BUILTIN_DIR, 'sleeper.elf'), tag: 'lightvm/sleeper:1' }),
      busybox: buildImage({ kernel: BUSYBOX, tag: 'lightvm/busybox:1', path: BUSYBOX }),
    };
    for (const [name, img] of Object.entries(images)) {
      writeFileSync(join(dir, `${name}.tar`), img.archive);
      await timed('ctr', ctr('image', 'import', join(dir, `${name}.tar`)));
    }
    let n = 0;
    const id = (): string => `b${n++}`;

    // ctr run --rm, start to exit; then -d, start to running. Alternating, so drift hits both.
    const exitL: number[] = [];
    const exitR: number[] = [];
    const runL: number[] = [];
    const runR: number[] = [];
    for (let i = 0; i < opts.runs; i++) {
      progress('ctr run', i, opts.runs);
      exitL.push(await timed('ctr', ctr('run', '--rm', ...LIGHTVM, images.hello.ref, id())));
      exitR.push(await timed('ctr', ctr('run', '--rm', images.busybox.ref, id(), BUSYBOX, 'true')));
      for (const [samples, args] of [
        [runL, [...LIGHTVM, images.sleeper.ref]],
        [runR, [images.busybox.ref]],
      ] as const) {
        const c = id();
        samples.push(await timed('ctr', ctr('run', '-d', ...args, c, ...(samples === runL ? ['/unikernel.elf', '600000'] : [BUSYBOX, 'sleep', '600']))));
        // --force kills the task first.
        quiet('ctr', ctr('task', 'rm', '-f', c));
        quiet('ctr', ctr('c', 'rm', c));
      }
    }
    result.ctr_run_exit = { clock: 'ctr run --rm: spawn of ctr to its exit (container created, started, exited, deleted)', ...pair(exitL, exitR) };
    result.ctr_run_running = { clock: 'ctr run -d: spawn of ctr to its exit (the task is running); kill and delete off the clock', ...pair(runL, runR) };

    result.podman = opts.podman === false ? { skipped: 'not asked for' } : await benchPodman(dir, oci, images, opts.runs, progress);
    // conmon runs a `podman container cleanup` per container after it ends:
    // those must not share the first window's clock.
    for (const t = Date.now(); Date.now() - t < 60_000 && spawnSync('pgrep', ['-f', join(dir, 'pm')], { stdio: 'ignore' }).status === 0;) {
      await new Promise((r) => setTimeout(r, 200));
    }

    // Many tasks through one containerd, one after another.
    const starts: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < opts.tasks; i++) {
      if (i % 10 === 0) progress('tasks', i, opts.tasks);
      starts.push(await timed('ctr', ctr('run', '-d', ...LIGHTVM, images.sleeper.ref, `t${i}`, '/unikernel.elf', '3600000')));
    }
    const w = Math.max(1, Math.min(50, Math.ceil(opts.tasks / 10)));
    const first = summarize(starts.slice(0, w));
    const last = summarize(starts.slice(-w));
    const server = readdirSync(join(dir, 's')).filter((f) => f.endsWith('.sock'))[0];
    const pid = server ? Number(spawnSync('pgrep', ['-f', `serve -socket ${join(dir, 's', server)}`], { encoding: 'utf8' }).stdout.trim().split('\n')[0]) : 0;
    const status = pid ? readFileSync(`/proc/${pid}/status`, 'utf8') : '';
    result.tasks = {
      clock: 'ctr run -d of a sleeper, one after another, all left running',
      tasks: opts.tasks, window: w, first, last,
      last_over_first_p50: ratio(last.p50_ms, first.p50_ms),
      total_s: Math.round((Date.now() - t0) / 100) / 10,
      shim_server: pid ? { pid, fds: readdirSync(`/proc/${pid}/fd`).length, rss_kib: Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) } : null,
      vms_running: (await daemon.client.request<{ vms: number }>('GET', '/v1/host')).vms,
    };
    progress('parts', 0, 1);
    result.parts = await taskParts(shim, sock, env, dir, images.sleeper.ref, Math.max(opts.runs, 10));
    result.host = { kernel: release(), node: process.version, cpus: availableParallelism(), loadavg: loadavg().map((x) => Math.round(x * 100) / 100) };
    const exitP50 = (result.ctr_run_exit as { runc_over_lightvm_p50: number }).runc_over_lightvm_p50;
    result.goal = {
      ctr_start_faster_than_runc_x: exitP50, target_x: 5, met: exitP50 >= 5,
      flat_last_over_first: ratio(last.p50_ms, first.p50_ms), target_flat: 1.2, flat_met: last.p50_ms / first.p50_ms <= 1.2,
    };
    return result;
  } finally {
    // Stopping containerd, then the shim server, ends every task's VM (their lease is the server's connection).
    if (containerd && containerd.exitCode === null) {
      const gone = new Promise((r) => containerd!.once('exit', r));
      containerd.kill('SIGTERM');
      await gone;
    }
    const shims = spawnSync('pgrep', ['-f', `serve -socket ${join(dir, 's')}`], { encoding: 'utf8' }).stdout.trim().split('\n').filter(Boolean);
    for (const p of shims) process.kill(Number(p), 'SIGKILL');
    await daemon.stop();
    spawnSync('sh', ['-c', `grep -o "${dir}[^ ]*" /proc/mounts | sort -r | xargs -r umount`]);
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * What a ctr run pays besides the VM, with the server up (the tasks still
 * run): ctr's own start and one request; ctr creating a container without
 * a task (its record and snapshot, what runc's side pays too); the shim
 * binary's `start` and `delete` as containerd execs them (no VM to destroy:
 * the server did), in sh (what containerd runs) and, for comparison, in
 * Node (main.js).
 */
async function taskParts(shim: string, sock: string, env: NodeJS.ProcessEnv, dir: string, image: string, runs: number): Promise<Record<string, unknown>> {
  const cwd = join(dir, 'parts');
  mkdirSync(cwd);
  const node = [process.execPath, '--no-warnings', join(PACKAGE_ROOT, 'dist', 'shim', 'main.js')] as const;
  const args = (cmd: string): string[] => ['-namespace', 'default', '-address', sock, '-publish-binary', 'containerd', '-id', 'parts', '-bundle', cwd, cmd];
  const series: Record<string, number[]> = { ctr_version: [], ctr_container_create: [], shim_start_sh: [], shim_start_node: [], shim_delete_sh: [], shim_delete_node: [] };
  for (let i = 0; i < runs; i++) {
    series.ctr_version!.push(await timed('ctr', ['--address', sock, 'version'], env));
    series.ctr_container_create!.push(await timed('ctr', ['--address', sock, 'container', 'create', image, `part${i}`], env));
    quiet('ctr', ['--address', sock, 'container', 'rm', `part${i}`]);
    series.shim_start_sh!.push(await timed(shim, args('start'), env, 0, cwd));
    series.shim_start_node!.push(await timed(node[0], [...node.slice(1), ...args('start')], env, 0, cwd));
    series.shim_delete_sh!.push(await timed(shim, args('delete'), env, 0, cwd));
    series.shim_delete_node!.push(await timed(node[0], [...node.slice(1), ...args('delete')], env, 0, cwd));
  }
  const s = Object.fromEntries(Object.entries(series).map(([k, v]) => [k, summarize(v)])) as Record<string, ReturnType<typeof summarize>>;
  return {
    clock: 'spawn to exit of each command, one after another, the shim server up (ctr container create: the container record and its snapshot, no task)',
    ...s,
    node_over_sh_start_p50: ratio(s.shim_start_node!.p50_ms, s.shim_start_sh!.p50_ms),
    node_over_sh_delete_p50: ratio(s.shim_delete_node!.p50_ms, s.shim_delete_sh!.p50_ms),
  };
}

async function benchPodman(dir: string, oci: string, images: Record<'hello' | 'sleeper' | 'busybox', { ref: string }>, runs: number,
  progress: (phase: string, done: number, total: number) => void): Promise<Record<string, unknown>> {
  if (!which('podman') || !which('conmon')) return { skipped: 'podman or conmon is not installed' };
  const pm = join(dir, 'pm');
  const P = ['--root', join(pm, 'root'), '--runroot', join(pm, 'run'), '--tmpdir', join(pm, 'tmp'), '--cgroup-manager=cgroupfs', '--events-backend=file'];
  // podman's default rlimits are refused on this kind of host; --network none: no CNI set-up on either side.
  const U = ['--ulimit', 'nofile=20000:20000', '--ulimit', 'nproc=32768:32768', '--network', 'none'];
  try {
    for (const name of ['hello', 'sleeper', 'busybox']) await timed('podman', [...P, 'load', '-q', '-i', join(dir, `${name}.tar`)]);
    const exitL: number[] = [];
    const exitR: number[] = [];
    const runL: number[] = [];
    const runR: number[] = [];
    for (let i = 0; i < runs; i++) {
      progress('podman run', i, runs);
      exitL.push(await timed('podman', [...P, '--runtime', oci, 'run', '--rm', ...U, images.hello.ref]));
      exitR.push(await timed('podman', [...P, '--runtime', 'runc', 'run', '--rm', ...U, images.busybox.ref, 'true']));
      runL.push(await timed('podman', [...P, '--runtime', oci, 'run', '-d', '--name', `pl${i}`, ...U, images.sleeper.ref, '600000']));
      quiet('podman', [...P, '--runtime', oci, 'rm', '-f', '-t', '0', `pl${i}`]);
      runR.push(await timed('podman', [...P, '--runtime', 'runc', 'run', '-d', '--name', `pr${i}`, ...U, images.busybox.ref, 'sleep', '600']));
      quiet('podman', [...P, '--runtime', 'runc', 'rm', '-f', '-t', '0', `pr${i}`]);
    }
    return {
      run_exit: { clock: 'podman run --rm: spawn of podman to its exit', ...pair(exitL, exitR) },
      run_running: { clock: 'podman run -d: spawn of podman to its exit (the container is running); rm -f off the clock', ...pair(runL, runR) },
    };
  } finally {
    quiet('podman', [...P, 'rm', '-af', '-t', '0']);
    quiet('umount', [join(pm, 'root', 'overlay')]);
  }
}
