// virtio-blk (virtio 1.x, 5.2) backed by a host file: read, write, flush
// and get-id, served synchronously at the queue notify, straight between
// the file and guest RAM (no bounce buffer). The file is the user's (as
// Firecracker's drives are): opened when the VM is set up, closed with it.
// A request past the disk's end, of a size that is not whole sectors, or a
// write to a read-only disk fails with IOERR: that request only.
import { closeSync, fstatSync, fsyncSync, openSync, readSync, writeSync } from 'node:fs';
import { basename } from 'node:path';
import type { VmContext } from '../devices.js';
import type { DeviceEntry } from '../device-page.js';
import { GuestFault } from '../exit.js';
import {
  VIRTIO_BLK_CONFIG, VIRTIO_BLK_F, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER, VIRTIO_BLK_S, VIRTIO_BLK_SECTOR_SIZE, VIRTIO_BLK_T, VIRTIO_ID,
} from './abi.js';
import { VirtioMmio, type VirtioDevice } from './mmio.js';
import type { Chain, VirtQueue } from './queue.js';

/** A block device's configuration the host cannot serve; names the field. */
export class BlockConfigError extends Error {
  constructor(readonly field: string, readonly file: string, message: string) {
    super(`${field}: ${file}: ${message}`);
    this.name = 'BlockConfigError';
  }
}

/** Host cost of the requests served, when measured (bench disk). */
export interface BlockCost {
  /** Per queue notify: ns from the exit's handling to the last used-ring update, and the requests it served. */
  samples: { ns: number; requests: number }[];
}

const SECTOR = BigInt(VIRTIO_BLK_SECTOR_SIZE);

export class BlockDevice implements VirtioDevice {
  readonly deviceId = VIRTIO_ID.BLOCK;
  readonly features: bigint;
  readonly queueCount = 1;
  readonly config = new Uint8Array(VIRTIO_BLK_CONFIG.size);
  readonly sectors: bigint;
  readonly readOnly: boolean;
  /** Set to measure each notify's host cost. */
  cost: BlockCost | undefined;
  transport!: VirtioMmio;
  private readonly id: Uint8Array;
  private fd: number;

  constructor(readonly path: string, readOnly: boolean, field: string) {
    this.readOnly = readOnly;
    try {
      this.fd = openSync(path, readOnly ? 'r' : 'r+');
    } catch (err) {
      throw new BlockConfigError(`${field}.path`, path, `cannot be opened ${readOnly ? 'for reading' : 'for reading and writing'}: ${(err as Error).message}`);
    }
    const st = fstatSync(this.fd);
    if (!st.isFile()) {
      closeSync(this.fd);
      throw new BlockConfigError(`${field}.path`, path, 'is not a regular file');
    }
    this.sectors = BigInt(st.size) / SECTOR;
    this.features = (1n << BigInt(VIRTIO_BLK_F.FLUSH)) | (1n << BigInt(VIRTIO_BLK_F.BLK_SIZE)) | (readOnly ? 1n << BigInt(VIRTIO_BLK_F.RO) : 0n);
    const v = new DataView(this.config.buffer);
    v.setBigUint64(VIRTIO_BLK_CONFIG.capacity, this.sectors, true);
    v.setUint32(VIRTIO_BLK_CONFIG.blkSize, VIRTIO_BLK_SECTOR_SIZE, true);
    this.id = new TextEncoder().encode(basename(path)).subarray(0, VIRTIO_BLK_ID_BYTES);
  }

  /** Serves every request available; never holds the guest (0). */
  notify(q: VirtQueue): number {
    const t0 = this.cost ? process.hrtime.bigint() : 0n;
    let n = 0;
    for (let c = q.pop(); c; c = q.pop()) {
      q.push(c.head, this.serve(c));
      n++;
    }
    if (n) this.transport.signalUsed(q);
    if (this.cost && n) this.cost.samples.push({ ns: Number(process.hrtime.bigint() - t0), requests: n });
    return 0;
  }

  /** Serves one request; returns the bytes written into its writable buffers. */
  private serve(c: Chain): number {
    const head = c.readable[0];
    const last = c.writable[c.writable.length - 1];
    if (!head || head.length < VIRTIO_BLK_REQ_HEADER.size || !last || last.length === 0) {
      throw new GuestFault('virtio', `${this.transport.name}: request ${c.head} lacks a 16-byte header first or a status byte last`);
    }
    const h = new DataView(head.buffer, head.byteOffset, VIRTIO_BLK_REQ_HEADER.size);
    const type = h.getUint32(VIRTIO_BLK_REQ_HEADER.type, true);
    const sector = h.getBigUint64(VIRTIO_BLK_REQ_HEADER.sector, true);
    // Data: what follows the header (out), or every writable byte but the status (in).
    const status = last.subarray(last.length - 1);
    const inBufs = c.writable.slice(0, -1);
    if (last.length > 1) inBufs.push(last.subarray(0, last.length - 1));
    const outBufs = c.readable.slice(1);
    if (head.length > VIRTIO_BLK_REQ_HEADER.size) outBufs.unshift(head.subarray(VIRTIO_BLK_REQ_HEADER.size));
    let written = 0;
    let result: number = VIRTIO_BLK_S.OK;
    switch (type) {
      case VIRTIO_BLK_T.IN:
        result = this.transfer(inBufs, sector, false);
        if (result === VIRTIO_BLK_S.OK) written = inBufs.reduce((s, b) => s + b.length, 0);
        break;
      case VIRTIO_BLK_T.OUT:
        result = this.readOnly ? VIRTIO_BLK_S.IOERR : this.transfer(outBufs, sector, true);
        break;
      case VIRTIO_BLK_T.FLUSH:
        try {
          if (!this.readOnly) fsyncSync(this.fd);
        } catch {
          result = VIRTIO_BLK_S.IOERR;
        }
        break;
      case VIRTIO_BLK_T.GET_ID: {
        const out = inBufs[0];
        if (!out) {
          result = VIRTIO_BLK_S.IOERR;
          break;
        }
        const n = Math.min(out.length, VIRTIO_BLK_ID_BYTES);
        out.fill(0, 0, n);
        out.set(this.id.subarray(0, n));
        written = n;
        break;
      }
      default:
        result = VIRTIO_BLK_S.UNSUPP;
    }
    status[0] = result;
    return written + 1;
  }

  /** Reads or writes whole sectors from sector on; IOERR past the end or on a host error. */
  private transfer(bufs: Uint8Array[], sector: bigint, write: boolean): number {
    const total = bufs.reduce((s, b) => s + b.length, 0);
    if (total % VIRTIO_BLK_SECTOR_SIZE !== 0) return VIRTIO_BLK_S.IOERR;
    if (sector > this.sectors || BigInt(total) / SECTOR > this.sectors - sector) return VIRTIO_BLK_S.IOERR;
    let pos = Number(sector * SECTOR);
    try {
      for (const b of bufs) {
        for (let done = 0; done < b.length;) {
          const n = write ? writeSync(this.fd, b, done, b.length - done, pos) : readSync(this.fd, b, done, b.length - done, pos);
          if (n <= 0) {
            // The file shrank under us: the rest reads as zeros, a write fails.
            if (write) return VIRTIO_BLK_S.IOERR;
            b.fill(0, done);
            break;
          }
          done += n;
          pos += n;
        }
      }
    } catch {
      return VIRTIO_BLK_S.IOERR;
    }
    return VIRTIO_BLK_S.OK;
  }

  close(): void {
    if (this.fd < 0) return;
    closeSync(this.fd);
    this.fd = -1;
  }
}

/** Sets up virtio-blk for a 'block' entry of the device page (placed: backend is its window). */
export function setUpBlock(vm: VmContext, d: DeviceEntry, index: number): VirtioMmio {
  const field = `devices.${index}`;
  if (!d.path) throw new BlockConfigError(`${field}.path`, '(none)', 'a block device needs the path of its disk file');
  const dev = new BlockDevice(d.path, d.readonly === true, field);
  try {
    dev.transport = new VirtioMmio(`virtio-blk.${d.id}`, vm, d.id, d.backend!, dev, () => dev.close());
  } catch (err) {
    dev.close();
    throw err;
  }
  return dev.transport;
}
