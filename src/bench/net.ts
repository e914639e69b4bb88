// `lightvm bench net`: network set-up and service latency, in a private
// network namespace made for the run (the host's network is not touched):
// vif set-up (tap, bridge port, up), the daytime service's first byte on a
// running VM and on a just-in-time VM booted by the SYN, ping round trip,
// beside a crun container's veth set-up measured in the same run.
import { execFile } from 'node:child_process';
import { connect } from 'node:net';
import { release } from 'node:os';
import { promisify } from 'node:util';
import { crunVethAvailable, crunVethSetup, prepareBundle } from './crun.js';
import { startDaemon, waitForPool, type BenchDaemon } from './daemon-peer.js';
import { RawHttpClient } from './http-client.js';
import { ratio, summarize } from './stats.js';

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
      vifMs.push((r.timings.netSetupNs ?? NaN) / 1e6);
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
    // crun with a veth pair on a bridge, as a CNI bridge plugin would.
    const vethSkip = crunVethAvailable();
    let vethSetup: number[] | null = null;
    if (!vethSkip) {
      const bundle = await prepareBundle();
      try {
        vethSetup = (await crunVethSetup(bundle, n)).setup_ms;
      } finally {
        await bundle.cleanup();
      }
    }
    const s = (x: number[]): number => summarize(x).p50_ms;
    return {
      bench: 'net',
      runs: n,
      vif_setup_p50_ms: s(vifMs),
      daytime_first_byte_p50_ms: s(dayMs),
      jit_first_byte_p50_ms: s(jitMs),
      jit_host_part_p50_ms: hostMs.length ? s(hostMs) : null,
      jit_guest_part_p50_ms: guestMs.length ? s(guestMs) : null,
      ping_rtt_p50_ms: s(ping),
      crun_veth_setup_p50_ms: vethSetup ? s(vethSetup) : null,
      ...(vethSkip ? { skipped: { crun_veth_setup: vethSkip } } : {}),
      ratios: { vif_over_crun_veth: vethSetup ? ratio(s(vifMs), s(vethSetup)) : null },
      targets: { vif_setup: { target: '<= 0.5x crun veth set-up', met: vethSetup ? s(vifMs) <= 0.5 * s(vethSetup) : null } },
      host: { kernel: release(), node: process.version },
    };
  } finally {
    raw.close();
    await daemon.stop();
  }
}
