// Wraps a 64-bit payload as a bzImage the way a kernel's build does: setup
// sectors whose first one carries the setup header (boot flag, "HdrS", the
// protocol version, xloadflags, sizes), then the protected-mode part, whose
// offset 0x200 is the 64-bit entry. No real-mode code: LightVM never runs
// it. Options let a test break one field at a time.

export interface BzImageOptions {
  /** The protected-mode kernel (its 64-bit entry at offset 0x200). */
  payload: Uint8Array;
  setupSects?: number;
  version?: number;
  loadflags?: number;
  xloadflags?: number;
  bootFlag?: number;
  magic?: number;
  prefAddress?: bigint;
  kernelAlignment?: number;
  relocatable?: boolean;
  initSize?: number;
  cmdlineSize?: number;
  initrdAddrMax?: number;
  /** The setup header ends at 0x202 + this (the jump's displacement). */
  jumpDisplacement?: number;
  /** In 16-byte units; default: the payload's size rounded up. */
  syssize?: number;
  /** The compressed kernel's place in the protected-mode part (payload_offset, payload_length; default 0). */
  payloadOffset?: number;
  payloadLength?: number;
}

export function buildBzImage(o: BzImageOptions): Uint8Array {
  const setupSects = o.setupSects ?? 1;
  const setupBytes = (setupSects + 1) * 512;
  // Whole 16-byte paragraphs, as a kernel build pads its image (syssize counts them).
  const out = new Uint8Array(setupBytes + Math.ceil(o.payload.length / 16) * 16);
  const v = new DataView(out.buffer);
  v.setUint8(0x1f1, setupSects);
  v.setUint32(0x1f4, o.syssize ?? Math.ceil(o.payload.length / 16), true);
  v.setUint16(0x1fa, 0xffff, true);
  v.setUint16(0x1fe, o.bootFlag ?? 0xaa55, true);
  v.setUint8(0x200, 0xeb);
  v.setUint8(0x201, o.jumpDisplacement ?? 0x6a);
  v.setUint32(0x202, o.magic ?? 0x53726448, true);
  v.setUint16(0x206, o.version ?? 0x020f, true);
  v.setUint8(0x211, o.loadflags ?? 0x01);
  v.setUint32(0x214, 0x100000, true);
  v.setUint32(0x22c, o.initrdAddrMax ?? 0x7fffffff, true);
  v.setUint32(0x230, o.kernelAlignment ?? 0x200000, true);
  v.setUint8(0x234, o.relocatable === false ? 0 : 1);
  v.setUint8(0x235, 21);
  v.setUint16(0x236, o.xloadflags ?? 0x01, true);
  v.setUint32(0x238, o.cmdlineSize ?? 0x7ff, true);
  v.setUint32(0x248, o.payloadOffset ?? 0, true);
  v.setUint32(0x24c, o.payloadLength ?? 0, true);
  v.setBigUint64(0x258, o.prefAddress ?? 0x200000n, true);
  v.setUint32(0x260, o.initSize ?? Math.ceil(o.payload.length / 4096) * 4096 + 0x10000, true);
  out.set(o.payload, setupBytes);
  return out;
}
