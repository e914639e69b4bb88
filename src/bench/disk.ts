// `lightvm bench disk`: the host's cost per 4 KiB virtio-blk request (from
// the queue-notify exit's handling to the used-ring update, single requests
// and batches of LVM_BLK_BATCH_MAX per notify) against pread/pwrite of 4
// KiB on the same file from C (bench/floor/disk_floor.c, the floor), and the
// kv guest's operations per second over TCP. The guest's own figures are
// reported, not targeted: its code is emulated on some hosts. The disk
// file is in the page cache for both sides (read once before), on tmpfs
// (/dev/shm) unless told otherwise: on a journaled file system a write
// that lands in a new clock tick also updates the file's times in the
// journal (tens of µs here), which a C loop writing back-to-back mostly
// escapes and a guest's paced requests never do; that would measure the
// pacing, not the host's cost.
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { Kvm } from '../kvm/kvm.js';
import { Host } from '../toolstack/host.js';
import { resolveImage } from '../toolstack/images.js';
import { parseElf } from '../vmm/elf.js';
import { Machine, Outcome } from '../vmm/machine.js';
import { setUpBlock, type BlockDevice } from '../vmm/virtio/blk.js';
import { placeVirtio } from '../vmm/virtio/mmio.js';
import { floorProgram } from './floor.js';
import { ratio } from './stats.js';

import { tmpdir } from 'node:os';

export interface DiskBenchOptions {
  /** 4 KiB requests per series. */
  requests: number;
  /** kv operations. */
  kvOps: number;
  /** Where the disk files go (default /dev/shm if it is there, else the temporary directory). */
  dir?: string;
  onProgress?: (phase: string, done: number, total: number) => void;
}

const DISK_BYTES = 64 << 20;

function p50(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  return s[Math.floor((s.length - 1) / 2)] ?? NaN;
}
const us = (ns: number): number => Math.round(ns / 10) / 100;

/** Runs blkbench in a Machine on this thread with the block device's cost measured. */
function hostCost(disk: string, requests: number): { single: number[]; batched: number[] } {
  const kvm = Kvm.open();
  const m = new Machine(kvm, 8 << 20);
  try {
    const file = resolveImage('blkbench');
    const devices = placeVirtio([{ type: 'block', id: 0, path: disk }]);
    m.load(parseElf(file, new Uint8Array(readFileSync(file))), { vmId: 1, name: 'blkbench', cmdline: `n=${requests}`, devices });
    const blk = m.add(setUpBlock(m, devices[0]!, 0)).device as BlockDevice;
    blk.cost = { samples: [] };
    let console = '';
    m.onConsole = (d) => {
      console += Buffer.from(d).toString();
    };
    const control = new Int32Array(new SharedArrayBuffer(8));
    for (let outcome = m.run(control); outcome !== Outcome.Ended; outcome = m.run(control)) {
      if (outcome === Outcome.Parked) throw new Error('blkbench parked: it never waits');
    }
    if (m.exit?.kind !== 'halt' || m.exit.status !== 0) throw new Error(`blkbench ended with ${JSON.stringify(m.exit)}: ${console}`);
    const single = blk.cost.samples.filter((s) => s.requests === 1).map((s) => s.ns);
    const batched = blk.cost.samples.filter((s) => s.requests > 1).map((s) => s.ns / s.requests);
    return { single, batched };
  } finally {
    m.close();
    kvm.close();
  }
}

/** kv operations per second: PUT then GET lines, pipelined `depth` at a time on one connection. */
async function kvOpsPerSecond(ip: string, ops: number, depth = 20): Promise<number> {
  const s = connect({ host: ip, port: 7070 });
  await new Promise<void>((resolve, reject) => s.once('connect', resolve).once('error', reject));
  let buffered = '';
  let waiter: (() => void) | undefined;
  let answers = 0;
  s.on('data', (d) => {
    buffered += d.toString();
    let i;
    while ((i = buffered.indexOf('\n')) >= 0) {
      const line = buffered.slice(0, i);
      buffered = buffered.slice(i + 1);
      if (line.startsWith('ERR')) throw new Error(`kv answered ${line}`);
      answers++;
    }
    waiter?.();
  });
  const t0 = process.hrtime.bigint();
  for (let done = 0; done < ops; done += depth) {
    const lines: string[] = [];
    for (let k = 0; k < depth; k++) lines.push((done + k) % 2 ? `GET key${(done + k) % 500}` : `PUT key${(done + k) % 500} value-${done + k}`);
    const want = answers + depth;
    const got = new Promise<void>((resolve) => {
      waiter = () => {
        if (answers >= want) resolve();
      };
    });
    s.write(`${lines.join('\n')}\n`);
    await got;
  }
  const sec = Number(process.hrtime.bigint() - t0) / 1e9;
  s.destroy();
  return Math.round(Math.ceil(ops / depth) * depth / sec);
}

export async function benchDisk(opts: DiskBenchOptions): Promise<Record<string, unknown>> {
  const parent = opts.dir ?? (existsSync('/dev/shm') ? '/dev/shm' : tmpdir());
  const dir = mkdtempSync(join(parent, 'lightvm-bench-disk-'));
  try {
    const disk = join(dir, 'disk.img');
    writeFileSync(disk, Buffer.alloc(DISK_BYTES, 0x5a));
    readFileSync(disk); // into the page cache, for both sides
    opts.onProgress?.('virtio-blk', 0, 3);
    const { single, batched } = hostCost(disk, opts.requests);
    opts.onProgress?.('floor', 1, 3);
    const floorNs = execFileSync(floorProgram('disk_floor'), [disk, String(opts.requests)], { encoding: 'utf8' })
      .trim().split('\n').map(Number);
    opts.onProgress?.('kv', 2, 3);
    const host = await Host.start({ executors: 1 });
    let kvOps: number;
    try {
      const kvDisk = join(dir, 'kv.img');
      writeFileSync(kvDisk, Buffer.alloc(4 << 20));
      const ip = '10.0.0.77';
      const vm = await host.create({
        image: 'kv', name: 'kv-bench', devices: [
          { type: 'net', id: 0, ipv4: { addr: ip, netmask: '255.255.255.0', gateway: '10.0.0.1' } },
          { type: 'block', id: 1, path: kvDisk },
        ],
      });
      for (let i = 0; i < 500 && !vm.consoleText().includes('kv: serving'); i++) await new Promise((r) => setTimeout(r, 10));
      if (!vm.consoleText().includes('kv: serving')) throw new Error(`kv did not start: ${vm.consoleText()}`);
      await kvOpsPerSecond(ip, 200); // ARP, the stack's first turns
      kvOps = await kvOpsPerSecond(ip, opts.kvOps);
      await vm.destroy();
    } finally {
      await host.close();
    }
    opts.onProgress?.('kv', 3, 3);
    const hostP50 = p50(single);
    const batchedP50 = p50(batched);
    const floorP50 = p50(floorNs);
    return {
      bench: 'disk',
      request_bytes: 4096,
      disk_dir: parent,
      requests: opts.requests,
      host_cost_p50_us: us(hostP50),
      host_cost_batched_p50_us: us(batchedP50),
      floor_p50_us: us(floorP50),
      kv_ops_per_s: kvOps,
      ratios: { host_cost_over_floor: ratio(hostP50, floorP50), host_cost_batched_over_floor: ratio(batchedP50, floorP50) },
      targets: { host_cost_vs_floor: { target: '<= 3', value: ratio(hostP50, floorP50), met: hostP50 <= 3 * floorP50 } },
      notes: 'host cost: from the queue-notify MMIO exit handed to virtio-blk to its last used-ring update, per request; ' +
        'floor: the same 4 KiB pread/pwrite sequence from C on the same file; kv: PUT/GET pipelined 20 deep on one TCP connection',
    };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
