// TAP devices through /dev/net/tun (ioctl TUNSETIFF), no helper program.
import * as libc from './libc.js';

const TUNSETIFF = 0x400454ca; // _IOW('T', 202, int)
const IFF_TAP = 0x0002;
const IFF_NO_PI = 0x1000;
const IFNAMSIZ = 16;
/** struct ifreq: name[16], then a union whose first member is short flags. */
const IFREQ_SIZE = 40;

export interface Tap {
  fd: number;
  name: string;
}

/**
 * Creates a TAP device (name may hold a %d pattern; the kernel picks the
 * number). It lives as long as its fd: closing the fd removes it.
 */
export function openTap(name: string): Tap {
  const bytes = new TextEncoder().encode(name);
  if (bytes.length >= IFNAMSIZ) throw new RangeError(`tap name "${name}" is longer than ${IFNAMSIZ - 1} bytes`);
  const fd = libc.open('/dev/net/tun', libc.O_RDWR | libc.O_NONBLOCK);
  try {
    const ifr = new Uint8Array(IFREQ_SIZE);
    ifr.set(bytes, 0);
    new DataView(ifr.buffer).setUint16(IFNAMSIZ, IFF_TAP | IFF_NO_PI, true);
    libc.ioctlStruct(fd, TUNSETIFF, ifr, 'TUNSETIFF');
    const end = ifr.indexOf(0);
    return { fd, name: new TextDecoder().decode(ifr.subarray(0, end < 0 ? IFNAMSIZ : end)) };
  } catch (err) {
    libc.close(fd);
    throw err;
  }
}
