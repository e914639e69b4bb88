// The guest ABI, mirrored from guest/include/lightvm/abi.h (the C side).
// test/abi.test.ts compiles that header and checks every value below.

export const ABI_VERSION = 1;

export const HC_PIO_BASE = 0x500;
export const HC = {
  WALLTIME: 1,
  CONSOLE_WRITE: 2,
  POLL: 3,
  HALT: 4,
  NET_WRITE: 5,
  NET_READ: 6,
  XENBUS_NOTIFY: 7,
} as const;
export const HC_COUNT = 8;
export type HypercallName = keyof typeof HC;

export const CONSOLE_WRITE_MAX = 65536;
/** POLL ready bit: the device page's flags changed. */
export const POLL_CONTROL = 1n << 63n;

/** Struct sizes and field offsets of the hypercall arguments. */
export const HC_STRUCT = {
  walltime: { size: 8, nsecs: 0 },
  consoleWrite: { size: 16, data: 0, len: 8 },
  poll: { size: 16, timeoutNsecs: 0, readySet: 8 },
  halt: { size: 8, status: 0 },
  netWrite: { size: 32, device: 0, data: 8, len: 16, ret: 24 },
  netRead: { size: 40, device: 0, data: 8, capacity: 16, len: 24, ret: 32 },
} as const;

export const BOOT_MAGIC = 0x4d564c42;
export const PLATFORM_LIGHTVM = 1;
export const PLATFORM_PVH = 2;
export const CMDLINE_MAX = 512;

export const BOOT_INFO = {
  size: 64,
  magic: 0,
  abiVersion: 4,
  memSize: 8,
  kernelEnd: 16,
  cmdline: 24,
  cmdlineLen: 32,
  devicePage: 40,
  tscHz: 48,
  platform: 56,
} as const;

export const DEVICE_PAGE_GPA = 0xc0000000;
export const NOXS_PAGE_SIZE = 4096;
export const NOXS_MAGIC = 0x53584f4e;
export const NOXS_VERSION = 1;
export const NOXS_NAME_MAX = 64;
export const NOXS_MAX_DEVICES = 62;

export const NOXS_FLAG_SHUTDOWN = 1;

export const NOXS_DEV = {
  CONSOLE: 1,
  NET: 2,
  BLOCK: 3,
  XENSTORE: 4,
} as const;

export const NOXS_HEADER = {
  size: 128,
  magic: 0,
  version: 4,
  deviceCount: 6,
  generation: 8,
  flags: 12,
  vmId: 16,
  name: 24,
} as const;

export const NOXS_DEVICE = {
  size: 64,
  type: 0,
  flags: 2,
  id: 4,
  backend: 8,
  mac: 16,
  mtu: 22,
  ipv4Addr: 24,
  ipv4Netmask: 28,
  ipv4Gateway: 32,
} as const;

/** Offset of device entry i in the noxs page. */
export function noxsDeviceOffset(i: number): number {
  return NOXS_HEADER.size + i * NOXS_DEVICE.size;
}

/** The xenstore ring page's bytes per direction (Xen's XENSTORE_RING_SIZE); indices are free-running, masked with it less one. */
export const XENSTORE_RING_BYTES = 1024;
/** The largest payload of one message on the ring (XENSTORE_PAYLOAD_MAX). */
export const XENSTORE_PAYLOAD_MAX = 4096;

/** The ring page's layout: Xen's struct xenstore_domain_interface (io/xs_wire.h). */
export const XENSTORE_RING = {
  size: 2076,
  req: 0,
  rsp: 1024,
  reqCons: 2048,
  reqProd: 2052,
  rspCons: 2056,
  rspProd: 2060,
  serverFeatures: 2064,
  connection: 2068,
  error: 2072,
} as const;
