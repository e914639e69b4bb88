// A worker thread that proves this user can make what a VM's vif needs (a
// bridge, a tap on it, both up: CAP_NET_ADMIN, and the kernel's bridge and
// tun support) while changing nothing: it first moves itself into a network
// namespace of its own, which ends with the thread.
import { parentPort } from 'node:worker_threads';
import * as libc from '../sys/libc.js';
import { linkIndex, Rtnetlink } from '../sys/netlink.js';
import { openTap } from '../sys/tun.js';

export type ProbeReply = { ok: true } | { ok: false; stage: 'unshare' | 'bridge' | 'tap'; code: string; message: string };

function probe(): ProbeReply {
  try {
    libc.unshareNetwork();
  } catch (err) {
    return { ok: false, stage: 'unshare', code: (err as { code?: string }).code ?? '', message: (err as Error).message };
  }
  let stage: 'bridge' | 'tap' = 'bridge';
  const nl = new Rtnetlink();
  try {
    nl.createBridge('lvdoctor0');
    const bridge = linkIndex('lvdoctor0');
    nl.setUp(bridge);
    stage = 'tap';
    const tap = openTap('lvdoctor%d');
    try {
      nl.attachAndUp(linkIndex(tap.name), bridge);
    } finally {
      libc.close(tap.fd);
    }
    return { ok: true };
  } catch (err) {
    return { ok: false, stage, code: (err as { code?: string }).code ?? '', message: (err as Error).message };
  } finally {
    nl.close();
  }
}

parentPort!.postMessage(probe());
