// virtio-blk (virtio 1.x, 5.2) backed by a host file: read, write, flush
// and get-id, served synchronously at the queue notify, straight between
// the file and guest RAM (no bounce buffer): a request's data buffers go to
// the file in one preadv/pwritev, a flush is one fdatasync. The file is the user's (as
// Firecracker's drives are): opened when the VM is set up, closed with it.
// A request past the disk's end, of a size that is not whole sectors, or a
// write to a read-only disk fails with IOERR: that request only.
import { closeSync, fdatasyncSync } from 'node:fs';
import { basename } from 'node:path';
import type { GuestMemory } from '../../kvm/memory.js';
import { IoVectors } from '../../sys/libc.js';
import type { VmContext } from '../devices.js';
import type { DeviceEntry } from '../device-page.js';
import { GuestFault } from '../exit.js';
import { FieldError } from '../field-error.js';
import { NotRegularFileError, openRegularFile } from '../regular-file.js';
import {
  LVM_VIRTIO_QUEUE_MAX, VIRTIO_BLK_CONFIG, VIRTIO_BLK_F, VIRTIO_BLK_ID_BYTES, VIRTIO_BLK_REQ_HEADER, VIRTIO_BLK_S, VIRTIO_BLK_SECTOR_SIZE, VIRTIO_BLK_T, VIRTIO_ID,
} from './abi.js';
import { VirtioMmio, type VirtioDevice } from './mmio.js';
import type { Chain, VirtQueue } from './queue.js';

/** A block device's configuration the host cannot serve; names the field. */
export class BlockConfigError extends FieldError {
  declare readonly file: string;
  constructor(field: string, file: string, reason: string) {
    super(field, reason, { file, message: `${field}: ${file}: ${reason}` });
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
  /** A chain is at most a queue long, so its data buffers fit one list. */
  private readonly iov = new IoVectors(LVM_VIRTIO_QUEUE_MAX);
  private readonly ramAddress: number;
  private readonly ramOffset: number;
  /** sectors as a number (a disk file is far below 2^53 bytes). */
  private readonly sectorCount: number;

  constructor(readonly path: string, readOnly: boolean, field: string, private readonly ram: GuestMemory) {
    // Buffers are views of ram.bytes: their host address is ram's plus their offset in it.
    this.ramAddress = Number(ram.hostAddress);
    this.ramOffset = ram.bytes.byteOffset;
    this.readOnly = readOnly;
    let size: number;
    try {
      // A FIFO would block this thread in its open, and every VM on it; a device's open can have effects: regular files only.
      ({ fd: this.fd, size } = openRegularFile(path, readOnly ? 'r' : 'r+'));
    } catch (err) {
      if (err instanceof NotRegularFileError) throw new BlockConfigError(`${field}.path`, path, `is ${err.kind}, not a regular file`);
      throw new BlockConfigError(`${field}.path`, path, `cannot be opened ${readOnly ? 'for reading' : 'for reading and writing'}: ${(err as Error).message}`);
    }
    this.sectors = BigInt(size) / SECTOR;
    this.sectorCount = Number(this.sectors);
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
    // Read in place from guest RAM: nothing is allocated per request on the data path.
    const v = this.ram.view;
    const h = head.byteOffset - this.ramOffset;
    const type = v.getUint32(h + VIRTIO_BLK_REQ_HEADER.type, true);
    const sector = v.getUint32(h + VIRTIO_BLK_REQ_HEADER.sector, true) + v.getUint32(h + VIRTIO_BLK_REQ_HEADER.sector + 4, true) * 0x1_0000_0000;
    const statusAt = last.byteOffset - this.ramOffset + last.length - 1;
    let written = 0;
    let result: number = VIRTIO_BLK_S.OK;
    switch (type) {
      case VIRTIO_BLK_T.IN: {
        const n = this.gather(c, false);
        result = this.transfer(c, n, sector, false);
        if (result === VIRTIO_BLK_S.OK) written = n;
        break;
      }
      case VIRTIO_BLK_T.OUT:
        result = this.readOnly ? VIRTIO_BLK_S.IOERR : this.transfer(c, this.gather(c, true), sector, true);
        break;
      case VIRTIO_BLK_T.FLUSH:
        try {
          if (!this.readOnly) fdatasyncSync(this.fd);
        } catch {
          result = VIRTIO_BLK_S.IOERR;
        }
        break;
      case VIRTIO_BLK_T.GET_ID: {
        const out = c.writable.length > 1 ? c.writable[0]! : last.subarray(0, last.length - 1);
        if (!out.length) {
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
    v.setUint8(statusAt, result);
    return written + 1;
  }

  /**
   * Puts a request's data buffers in the iovec list and returns their bytes:
   * what follows the header (out), or every writable byte but the status (in).
   */
  private gather(c: Chain, out: boolean): number {
    const iov = this.iov;
    iov.clear();
    let total = 0;
    const add = (b: Uint8Array, from: number, to: number): void => {
      if (to > from) iov.add(this.ramAddress + b.byteOffset - this.ramOffset + from, to - from);
      total += to - from;
    };
    const bufs = out ? c.readable : c.writable;
    for (let i = 0; i < bufs.length; i++) {
      const b = bufs[i]!;
      add(b, out && i === 0 ? VIRTIO_BLK_REQ_HEADER.size : 0, !out && i === bufs.length - 1 ? b.length - 1 : b.length);
    }
    return total;
  }

  /** Reads or writes the gathered bytes at sector, whole sectors; IOERR past the end or on a host error. */
  private transfer(c: Chain, total: number, sector: number, write: boolean): number {
    if (total % VIRTIO_BLK_SECTOR_SIZE !== 0) return VIRTIO_BLK_S.IOERR;
    if (sector > this.sectorCount || total / VIRTIO_BLK_SECTOR_SIZE > this.sectorCount - sector) return VIRTIO_BLK_S.IOERR;
    const n = this.iov.transfer(this.fd, write, sector * VIRTIO_BLK_SECTOR_SIZE);
    if (n < 0) return VIRTIO_BLK_S.IOERR;
    if (n < total) {
      // The file shrank under us: the rest reads as zeros, a write fails.
      if (write) return VIRTIO_BLK_S.IOERR;
      let skip = n;
      c.writable.forEach((b, i) => {
        const end = i === c.writable.length - 1 ? b.length - 1 : b.length;
        if (skip >= end) skip -= end;
        else {
          b.fill(0, skip, end);
          skip = 0;
        }
      });
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
  const dev = new BlockDevice(d.path, d.readonly === true, field, vm.guest.ram);
  try {
    dev.transport = new VirtioMmio(`virtio-blk.${d.id}`, vm, d.id, d.backend!, dev, () => dev.close());
  } catch (err) {
    dev.close();
    throw err;
  }
  return dev.transport;
}
