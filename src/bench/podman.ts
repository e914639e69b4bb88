// Podman's REST service (`podman system service`, its Docker-compatible
// API) as a peer of lightvmd's API: create + start of a container that runs
// `true`, timed from the create request's bytes leaving to the start
// reply (204), on one kept-alive socket, as lightvm_api_roundtrip is.
//
// Everything podman keeps goes into a temp dir (--root, --runroot): the
// host's container storage is never touched. There is no registry here, so
// the image is imported from a rootfs holding only a static busybox.
// On this host, podman runs containers with runc (crun refuses the hybrid
// cgroup mount, see crun.ts), with cgroupfs, and runc's start fails unless
// the container's limits are set: --ulimit nofile=20000:20000 and
// nproc=32768:32768 (their HostConfig.Ulimits below).
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { copyFile, mkdir, mkdtemp, rm, symlink } from 'node:fs/promises';
import http from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { RawHttpClient } from './http-client.js';
import { which } from './peers.js';
import { staticElfProblem } from './crun.js';

const run = promisify(execFile);
const IMAGE = 'localhost/lightvm-true:latest';
const ULIMITS = [{ Name: 'nofile', Soft: 20000, Hard: 20000 }, { Name: 'nproc', Soft: 32768, Hard: 32768 }];

/** Why podman's service cannot be measured here, or undefined. */
export function podmanAvailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'podman runs rootful containers here: needs root';
  if (!which('podman')) return 'podman not installed (scripts/install-peers.sh installs it)';
  if (!which('runc')) return 'runc not installed (scripts/install-peers.sh installs it)';
  const busybox = which('busybox');
  if (!busybox) return 'busybox not installed (scripts/install-peers.sh installs busybox-static)';
  return staticElfProblem(busybox);
}

/** A request on the service's socket with a general client (off the clock): status and body. */
function request(socketPath: string, method: string, path: string): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath, method, path }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (c: string) => (body += c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    req.end();
  });
}

export class PodmanService {
  private readonly raw: RawHttpClient;
  private readonly creates = new Map<string, Buffer>();

  private constructor(private readonly dir: string, private readonly socket: string, private readonly child: ChildProcess,
    private readonly exited: Promise<void>) {
    this.raw = new RawHttpClient(socket);
  }

  private create(network: string): Buffer {
    let b = this.creates.get(network);
    if (!b) {
      b = this.raw.prepare('POST', '/v1.41/containers/create', {
        Image: IMAGE, Cmd: ['/bin/true'], HostConfig: { NetworkMode: network, Ulimits: ULIMITS },
      });
      this.creates.set(network, b);
    }
    return b;
  }

  /** podman's global flags: its own storage in dir, runc, cgroupfs, no event log. */
  private static flags(dir: string): string[] {
    return ['--root', join(dir, 'root'), '--runroot', join(dir, 'runroot'), '--runtime', 'runc',
      '--cgroup-manager', 'cgroupfs', '--events-backend', 'none'];
  }

  static async start(): Promise<PodmanService> {
    const why = podmanAvailable();
    if (why) throw new Error(`podman peer unavailable: ${why}`);
    const dir = await mkdtemp(join(tmpdir(), 'lightvm-podman-'));
    let child: ChildProcess | undefined;
    try {
      const bin = join(dir, 'rootfs', 'bin');
      await mkdir(bin, { recursive: true });
      await copyFile(which('busybox')!, join(bin, 'busybox'));
      await symlink('busybox', join(bin, 'true'));
      await run('tar', ['-C', join(dir, 'rootfs'), '-cf', join(dir, 'rootfs.tar'), '.']);
      await run('podman', [...PodmanService.flags(dir), 'import', join(dir, 'rootfs.tar'), IMAGE], { timeout: 120_000 });
      const socket = join(dir, 'api.sock');
      child = spawn('podman', [...PodmanService.flags(dir), 'system', 'service', '--time=0', `unix://${socket}`],
        { stdio: ['ignore', 'ignore', 'pipe'] });
      let errors = '';
      child.stderr!.on('data', (b: Buffer) => (errors = (errors + b.toString()).slice(-2000)));
      const exited = new Promise<void>((resolve) => child!.once('exit', () => resolve()));
      for (let i = 0; !existsSync(socket); i++) {
        if (child.exitCode !== null || i > 600) throw new Error(`podman system service did not start: ${errors.trim()}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      return new PodmanService(dir, socket, child, exited);
    } catch (err) {
      if (child && child.exitCode === null) {
        const gone = new Promise((r) => child!.once('exit', r));
        child.kill('SIGKILL');
        await gone;
      }
      await PodmanService.removeDir(dir).catch(() => {});
      throw err;
    }
  }

  /**
   * n containers, each: create + start timed (until start's reply); then
   * wait for its exit (status 0) and delete it, off that clock. Samples in
   * ms. network: 'none', or 'bridge' (podman's own network set-up: CNI's
   * bridge plugin and host-local IPAM here, a veth on cni-podman0).
   */
  async createStart(n: number, network = 'none'): Promise<number[]> {
    return (await this.lifecycles(n, network)).start;
  }

  /**
   * As createStart; also each container's whole life cycle: create request
   * sent to the delete reply (create, start, wait for its exit, delete).
   */
  async lifecycles(n: number, network = 'none'): Promise<{ start: number[]; lifecycle: number[] }> {
    const out: number[] = [];
    const lifecycle: number[] = [];
    for (let i = 0; i < n; i++) {
      let t0 = 0n;
      const { Id } = await this.raw.send<{ Id: string }>(this.create(network), (ns) => (t0 = ns));
      const start = await this.raw.request(this.raw.prepare('POST', `/v1.41/containers/${Id}/start`));
      const t1 = process.hrtime.bigint();
      if (start.status !== 204) throw new Error(`podman start of ${Id}: HTTP ${start.status} ${start.body.trim()}`);
      const wait = await request(this.socket, 'POST', `/v1.41/containers/${Id}/wait`);
      const status = (JSON.parse(wait.body) as { StatusCode?: number }).StatusCode;
      if (status !== 0) throw new Error(`podman container ${Id} exited ${status}: ${wait.body.trim()}`);
      const del = await request(this.socket, 'DELETE', `/v1.41/containers/${Id}?force=true`);
      if (del.status !== 204) throw new Error(`podman delete of ${Id}: HTTP ${del.status} ${del.body.trim()}`);
      lifecycle.push(Number(process.hrtime.bigint() - t0) / 1e6);
      out.push(Number(t1 - t0) / 1e6);
    }
    return { start: out, lifecycle };
  }

  async stop(): Promise<void> {
    this.raw.close();
    this.child.kill('SIGTERM');
    await this.exited;
    await PodmanService.removeDir(this.dir);
  }

  /**
   * Podman's overlay storage bind-mounts its own directory (root/overlay)
   * and leaves it mounted when the service ends: unmount what is under
   * dir (deepest first), then remove it.
   */
  private static async removeDir(dir: string): Promise<void> {
    const mounts = readFileSync('/proc/self/mounts', 'utf8').split('\n').map((l) => l.split(' ')[1] ?? '')
      .filter((m) => m.startsWith(`${dir}/`)).sort((a, b) => b.length - a.length);
    for (const m of mounts) await run('umount', [m]);
    await rm(dir, { recursive: true, force: true });
  }
}
