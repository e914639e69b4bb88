// `lightvm bench net`: network set-up and service latency, in a private
// network namespace made for the run (the host's network is not touched):
// vif set-up (tap, bridge port, up) against the same operations done by a
// C program (the floor) and against what the peers really run to attach an
// interface (a hotplug-style script calling ip, as Xen's vif-bridge; podman's
// own network set-up; a CNI-bridge-style veth for crun), each labelled with
// what it includes; the daytime service's first byte on a running VM and on
// a just-in-time VM booted by the SYN; ping round trip.
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { availableParallelism, loadavg, release } from 'node:os';
import { promisify } from 'node:util';
import { crunVethAvailable, crunVethSetup, prepareBundle } from './crun.js';
import { startDaemon, waitForPool, type BenchDaemon } from './daemon-peer.js';
import { RawHttpClient } from './http-client.js';
import { vifFloor, which } from './peers.js';
import { PodmanService, podmanAvailable } from './podman.js';
import { checkSamples, ratio, summarize, type Result } from './stats.js';

const run = promisify(execFile);

export interface NetBenchOptions {
  runs: number;
  onProgress?: (phase: string, done: number, total: number) => void;
}

/** Connects to ip:port and resolves with ms to the first byte of the reply (t0: when connect began). */
function firstByteAt(ip: string, port: number, timeoutMs = 10_000): Promise<{ ms: number; t0: number }> {
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const s = connect({ host: ip, port });
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no reply from ${ip}:${port} within ${timeoutMs} ms`));
    }, timeoutMs);
    s.once('data', () => {
      clearTimeout(timer);
      resolve({ ms: Number(process.hrtime.bigint() - t0) / 1e6, t0: Number(t0) });
      s.destroy();
    });
    s.once('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
  });
}

async function firstByte(ip: string, port: number): Promise<number> {
  return (await firstByteAt(ip, port)).ms;
}

async function pingRtts(ip: string, n: number): Promise<number[]> {
  const { stdout } = await run('ping', ['-n', '-c', String(n), '-i', '0.01', '-W', '1', ip], { timeout: 30_000 });
  return [...stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]));
}

const vif = (ip: string): { type: 'net'; id: number; ipv4: { addr: string; netmask: string; gateway: string } } => ({
  type: 'net', id: 0, ipv4: { addr: ip, netmask: '255.255.255.0', gateway: '10.0.0.1' },
});

// Per interface, as Xen's hotplug scripts do it (vif-bridge: the backend has
// made the device, the script puts it on the bridge and up, with one `ip`
// per step): here the tap is made by `ip tuntap` too, since nothing else
// would. Each iteration times the script's process, from bash's fork of sh
// to its exit ($EPOCHREALTIME, µs); removing the tap is off the clock.
const HOTPLUG_SCRIPT = `
set -eu
n=$1 br=$2
for ((i = 0; i < n; i++)); do
  t0=$EPOCHREALTIME
  sh -c 'ip tuntap add dev "$1" mode tap && ip link set dev "$1" master "$2" && ip link set dev "$1" up' sh lvhp$i "$br"
  t1=$EPOCHREALTIME
  ip link del lvhp$i
  echo "lightvm-sample $(( \${t1/./} - \${t0/./} ))"
done
`;

async function hotplugScript(bridge: string, n: number): Promise<number[]> {
  const { stdout } = await run(which('bash')!, ['-c', HOTPLUG_SCRIPT, 'bash', String(n), bridge], { timeout: 30_000 + n * 2_000 });
  return [...stdout.matchAll(/^lightvm-sample (\d+)$/gm)].map((m) => Number(m[1]) / 1000);
}

const INTERVALS = {
  vif_setup: 'lightvm executor, per VM: bridge looked up, tap made (/dev/net/tun TUNSETIFF), looked up, one RTM_NEWLINK (master, up) on an open rtnetlink socket, to its ACK',
  vif_floor_c: 'C (bench/floor/vif_floor): the same operations as vif_setup, on an open rtnetlink socket',
  vif_hotplug_script: 'a hotplug-style script as Xen\'s vif-bridge: fork of sh running `ip tuntap add`, `ip link set master`, `ip link set up` (three ip processes), to its exit',
  crun_veth_cni_style: 'a CNI bridge plugin\'s ADD for crun: two `ip -b` processes that make a netns, a veth pair into it, the bridge port, an address, lo and eth0 up, a default route',
  podman_api_start_bridge: 'podman system service: create request to the start reply of a `true` container on podman\'s bridge network (CNI bridge plugin and host-local IPAM)',
  podman_api_start_none: 'the same with --network none',
  daytime_first_byte: 'connect() to the first byte of a running daytime VM\'s reply (TCP 13)',
  jit_first_byte: 'connect() (ARP flushed) to the first byte from a just-in-time VM the SYN booted from a prepared shell',
  jit_host_part: 'just-in-time VM: first frame seen by the executor to the VM loaded and started',
  jit_guest_part: 'just-in-time VM: loaded to the first byte of its reply',
  ping_rtt: 'ICMP echo round trip to a running VM (ping -i 0.01)',
} as const;

export async function benchNet(opts: NetBenchOptions): Promise<Record<string, unknown>> {
  const n = opts.runs;
  const daemon: BenchDaemon = await startDaemon(['--pool', '4:16']);
  const raw = new RawHttpClient(daemon.socket);
  try {
    await waitForPool(daemon.client, 4, 16, 60_000);
    // vif set-up: measured by the executor around tap creation, bridge port and up.
    const vifMs: number[] = [];
    for (let i = 0; i < n; i++) {
      const r = await raw.send<{ vm: { id: number }; timings: { netSetupNs?: number } }>(
        raw.prepare('POST', '/v1/vms', { image: 'daytime', cmdline: 'stay', devices: [vif(`10.0.0.${100 + (i % 100)}`)] }));
      if (!(r.timings.netSetupNs !== undefined && r.timings.netSetupNs > 0)) throw new Error(`vif_setup: VM ${r.vm.id}'s reply has no vif set-up time`);
      vifMs.push(r.timings.netSetupNs / 1e6);
      await raw.send(raw.prepare('DELETE', `/v1/vms/${r.vm.id}`));
      opts.onProgress?.('vif', i + 1, n);
    }
    // A running daytime server: time to the first byte, and ping.
    await raw.send(raw.prepare('POST', '/v1/vms', { image: 'daytime', name: 'dt', devices: [vif('10.0.0.2')] }));
    await firstByte('10.0.0.2', 13); // ARP, JIT of the client path
    const dayMs: number[] = [];
    for (let i = 0; i < n; i++) {
      dayMs.push(await firstByte('10.0.0.2', 13));
      opts.onProgress?.('daytime', i + 1, n);
    }
    const ping = await pingRtts('10.0.0.2', Math.max(n, 20));
    await raw.send(raw.prepare('DELETE', '/v1/vms/dt'));
    // Just in time: the SYN (after ARP) boots the VM from a prepared shell.
    await raw.send(raw.prepare('POST', '/v1/services', { name: 'jit', image: 'daytime', devices: [vif('10.0.0.3')], idle_ms: 100 }));
    const jitMs: number[] = [];
    const hostMs: number[] = [];
    const guestMs: number[] = [];
    for (let i = 0; i < n; i++) {
      await waitForPool(daemon.client, 4, 16, 60_000);
      // Wait until the service's VM is armed again (the last one went idle).
      for (;;) {
        const { services } = await raw.send<{ services: { name: string; vm: { state: string } | null }[] }>(raw.prepare('GET', '/v1/services'));
        if (services.find((s) => s.name === 'jit')?.vm?.state === 'armed') break;
        await new Promise((r) => setTimeout(r, 20));
      }
      // The host's neighbour entry would let the SYN skip ARP: flush it for a cold first packet.
      await run('ip', ['neigh', 'flush', 'dev', 'lvbr0']).catch(() => {});
      const fb = await firstByteAt('10.0.0.3', 13);
      jitMs.push(fb.ms);
      const { vm } = await raw.send<{ vm: { timings: { loadedNs: number; trace?: { firstFrameNs?: number } } | null } }>(raw.prepare('GET', '/v1/vms/jit'));
      const t = vm.timings;
      if (t?.trace?.firstFrameNs) {
        // Host: the first frame seen to the VM loaded and started. Guest: the rest, to the first byte.
        hostMs.push((t.loadedNs - t.trace.firstFrameNs) / 1e6);
        guestMs.push((fb.t0 + fb.ms * 1e6 - t.loadedNs) / 1e6);
      }
      opts.onProgress?.('jit', i + 1, n);
    }
    await raw.send(raw.prepare('DELETE', '/v1/services/jit'));
    const samples: Record<string, number[]> = {
      vif_setup: vifMs, daytime_first_byte: dayMs, jit_first_byte: jitMs, jit_host_part: hostMs, jit_guest_part: guestMs, ping_rtt: ping,
    };
    const skipped: Record<string, string> = {};
    // The same operations in C, on the bridge the daemon made.
    samples.vif_floor_c = checkSamples('vif_floor_c', await vifFloor('lvbr0', n), n);
    opts.onProgress?.('peers', 1, 4);
    if (!which('ip') || !which('bash')) skipped.vif_hotplug_script = 'needs ip (iproute2) and bash';
    else samples.vif_hotplug_script = checkSamples('vif_hotplug_script', await hotplugScript('lvbr0', n), n);
    opts.onProgress?.('peers', 2, 4);
    // crun with a veth pair on a bridge, as a CNI bridge plugin would.
    const vethSkip = crunVethAvailable();
    if (vethSkip) skipped.crun_veth_cni_style = vethSkip;
    else {
      const bundle = await prepareBundle();
      try {
        samples.crun_veth_cni_style = checkSamples('crun_veth_cni_style', (await crunVethSetup(bundle, n)).setup_ms, n);
      } finally {
        await bundle.cleanup();
      }
    }
    opts.onProgress?.('peers', 3, 4);
    // podman's own network set-up: its API start on its bridge network against --network none, interleaved.
    const podmanWhy = podmanAvailable();
    if (podmanWhy) skipped.podman_api_start_bridge = skipped.podman_api_start_none = podmanWhy;
    else {
      const podman = await PodmanService.start();
      try {
        const m = Math.min(n, 20);
        await podman.createStart(1, 'bridge');
        samples.podman_api_start_bridge = [];
        samples.podman_api_start_none = [];
        for (let i = 0; i < m; i++) {
          samples.podman_api_start_bridge.push(...checkSamples('podman_api_start_bridge', await podman.createStart(1, 'bridge'), 1));
          samples.podman_api_start_none.push(...checkSamples('podman_api_start_none', await podman.createStart(1, 'none'), 1));
        }
      } finally {
        await podman.stop();
      }
    }
    opts.onProgress?.('peers', 4, 4);
    const results: Record<string, Result | null> = {};
    for (const [k, v] of Object.entries(samples)) {
      if (!v.length) throw new Error(`${k}: no samples were taken`);
      results[k] = { ...summarize(checkSamples(k, v, v.length)), interval: INTERVALS[k as keyof typeof INTERVALS] };
    }
    for (const k of Object.keys(skipped)) results[k] = null;
    const p50 = (k: string): number | null => results[k]?.p50_ms ?? null;
    const over = (a: string, b: string): number | null => (p50(a) !== null && p50(b) !== null ? ratio(p50(a)!, p50(b)!) : null);
    const bridge = p50('podman_api_start_bridge');
    const none = p50('podman_api_start_none');
    const vifOverFloor = over('vif_setup', 'vif_floor_c');
    return {
      bench: 'net',
      runs: n,
      results,
      ...(Object.keys(skipped).length ? { skipped } : {}),
      // podman's network set-up for one container: the difference of the two p50s above.
      podman_network_setup_p50_ms: bridge !== null && none !== null ? Math.round((bridge - none) * 1000) / 1000 : null,
      ratios: {
        vif_setup_over_vif_floor_c: vifOverFloor,
        vif_setup_over_vif_hotplug_script: over('vif_setup', 'vif_hotplug_script'),
        vif_setup_over_crun_veth_cni_style: over('vif_setup', 'crun_veth_cni_style'),
      },
      targets: { vif_setup_vs_vif_floor_c: { target: '<= 1.5', value: vifOverFloor, met: vifOverFloor === null ? null : vifOverFloor <= 1.5 } },
      // Load average when it ended: numbers from a busy host compare only with their own peers.
      host: { kernel: release(), node: process.version, cpus: availableParallelism(), loadavg: loadavg().map((x) => Math.round(x * 100) / 100) },
    };
  } finally {
    raw.close();
    await daemon.stop();
  }
}
