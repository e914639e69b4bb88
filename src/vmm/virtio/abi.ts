// virtio-mmio as LightVM offers it, mirrored from guest/include/lightvm/virtio.h
// (the C side). test/virtio-abi.test.ts compiles that header and checks every value below.

export const LVM_VIRTIO_MMIO_BASE = 0xc0001000;
export const LVM_VIRTIO_MMIO_SIZE = 0x1000;
export const LVM_VIRTIO_QUEUE_MAX = 256;

/** Register offsets in a device's window (VIRTIO_MMIO_*). */
export const VIRTIO_MMIO = {
  MAGIC_VALUE: 0x000,
  VERSION: 0x004,
  DEVICE_ID: 0x008,
  VENDOR_ID: 0x00c,
  DEVICE_FEATURES: 0x010,
  DEVICE_FEATURES_SEL: 0x014,
  DRIVER_FEATURES: 0x020,
  DRIVER_FEATURES_SEL: 0x024,
  QUEUE_SEL: 0x030,
  QUEUE_NUM_MAX: 0x034,
  QUEUE_NUM: 0x038,
  QUEUE_READY: 0x044,
  QUEUE_NOTIFY: 0x050,
  INTERRUPT_STATUS: 0x060,
  INTERRUPT_ACK: 0x064,
  STATUS: 0x070,
  QUEUE_DESC_LOW: 0x080,
  QUEUE_DESC_HIGH: 0x084,
  QUEUE_DRIVER_LOW: 0x090,
  QUEUE_DRIVER_HIGH: 0x094,
  QUEUE_DEVICE_LOW: 0x0a0,
  QUEUE_DEVICE_HIGH: 0x0a4,
  CONFIG_GENERATION: 0x0fc,
  CONFIG: 0x100,
  MAGIC: 0x74726976,
  VERSION_2: 2,
} as const;

export const VIRTIO_VENDOR_LIGHTVM = 0x4d564c;

export const VIRTIO_ID = { BLOCK: 2, CONSOLE: 3 } as const;

export const VIRTIO_STATUS = {
  ACKNOWLEDGE: 1,
  DRIVER: 2,
  DRIVER_OK: 4,
  FEATURES_OK: 8,
  NEEDS_RESET: 64,
  FAILED: 128,
} as const;

/** Feature bit numbers. */
export const VIRTIO_F_VERSION_1 = 32;
export const VIRTIO_BLK_F = { RO: 5, BLK_SIZE: 6, FLUSH: 9 } as const;

export const VIRTQ_DESC_F = { NEXT: 1, WRITE: 2, INDIRECT: 4 } as const;
export const VIRTQ_DESC = { size: 16, addr: 0, len: 8, flags: 12, next: 14 } as const;
export const VIRTQ_AVAIL = { FLAGS: 0, IDX: 2, RING: 4, F_NO_INTERRUPT: 1 } as const;
export const VIRTQ_USED = { FLAGS: 0, IDX: 2, RING: 4 } as const;
export const VIRTQ_USED_ELEM = { size: 8, id: 0, len: 4 } as const;

export const VIRTIO_BLK_SECTOR_SIZE = 512;
export const VIRTIO_BLK_T = { IN: 0, OUT: 1, FLUSH: 4, GET_ID: 8 } as const;
export const VIRTIO_BLK_S = { OK: 0, IOERR: 1, UNSUPP: 2 } as const;
export const VIRTIO_BLK_ID_BYTES = 20;
export const VIRTIO_BLK_REQ_HEADER = { size: 16, type: 0, reserved: 4, sector: 8 } as const;
export const VIRTIO_BLK_CONFIG = {
  size: 24, capacity: 0, sizeMax: 8, segMax: 12, cylinders: 16, heads: 18, sectors: 19, blkSize: 20,
} as const;

export const VIRTIO_CONSOLE = { RX: 0, TX: 1 } as const;
