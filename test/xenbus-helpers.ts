// Shared by the xenbus tests (real VMs, and the hosted guest program): the
// host's side of a guest domain in a `lightvm xenstored`, as a toolstack
// and a backend do it, and what guest/tests/xenbus.c must say and leave.
import assert from 'node:assert/strict';
import { XsClient } from '../src/xenstore/client.js';

/** A value longer than the ring (1024 bytes): both directions wrap. */
export const BIG = Array.from({ length: 3000 }, (_v, i) => String.fromCharCode(97 + ((i * 7) % 26))).join('');

/** The guest's checksum of a string (xenbus.c's sum). */
export function sum(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(h, 31) + s.charCodeAt(i)) >>> 0;
  return h;
}

/** What a toolstack does before the VM exists: the domain introduced, its directories with their owners, the vif's two halves. */
export async function setUpDomain(dom0: XsClient, domid: number): Promise<string> {
  const home = `/local/domain/${domid}`;
  await dom0.introduce(domid);
  await dom0.mkdir(home);
  await dom0.setPerms(home, ['n0', `r${domid}`]);
  for (const sub of ['data', 'device']) {
    await dom0.mkdir(`${home}/${sub}`);
    await dom0.setPerms(`${home}/${sub}`, [`n${domid}`]);
  }
  await dom0.write(`${home}/data/greeting`, 'hello guest');
  await dom0.write(`${home}/data/big`, BIG);
  await dom0.write(`${home}/data/secret`, 's3');
  await dom0.setPerms(`${home}/data/secret`, ['n0']);
  // As libxl lays them out: the frontend's directory is the guest's, the backend's dom0's.
  const front = `${home}/device/vif/0`;
  const back = `/local/domain/0/backend/vif/${domid}/0`;
  await dom0.mkdir(front);
  await dom0.setPerms(front, [`n${domid}`, 'r0']);
  await dom0.write(`${front}/backend`, back);
  await dom0.write(`${front}/backend-id`, '0');
  await dom0.mkdir(back);
  await dom0.setPerms(back, ['n0', `r${domid}`]);
  await dom0.write(`${back}/frontend`, front);
  await dom0.write(`${back}/state`, '1');
  return home;
}

export interface Backend {
  /** The frontend states it saw, in order. */
  states: number[];
  /** Resolves when the frontend said Connected. */
  connected: Promise<void>;
}

/**
 * The backend's half of the handshake, as netback does it, on a connection
 * of its own: at the frontend's Initialising it says InitWait; at
 * Initialised (ring-ref and event-channel published) Connected.
 */
export async function backend(socket: string, domid: number): Promise<Backend> {
  const front = `/local/domain/${domid}/device/vif/0`;
  const back = `/local/domain/0/backend/vif/${domid}/0`;
  const c = await XsClient.connect(socket);
  const states: number[] = [];
  let done!: () => void;
  let failed!: (e: Error) => void;
  const connected = new Promise<void>((resolve, reject) => { done = resolve; failed = reject; });
  // Avoid an unhandled rejection before anyone awaits it; the awaiting test still sees it.
  connected.catch(() => {});
  let chain = Promise.resolve();
  c.onEvent = () => {
    chain = chain.then(async () => {
      let st: number;
      try {
        st = Number(await c.read(`${front}/state`));
      } catch {
        return; // the watch's first event, before the frontend wrote a state
      }
      if (states[states.length - 1] === st) return;
      states.push(st);
      if (st === 1) await c.write(`${back}/state`, '2');
      if (st === 3) {
        assert.equal(await c.read(`${front}/ring-ref`), '8');
        assert.equal(await c.read(`${front}/event-channel`), '3');
        await c.write(`${back}/state`, '4');
      }
      if (st === 4) { c.close(); done(); }
    }).catch((e: unknown) => { c.close(); failed(e as Error); });
  };
  await c.watch(`${front}/state`, 'fe');
  return { states, connected };
}

/** guest/tests/xenbus.c's whole console when all went well. */
export const XENBUS_CONSOLE = [
  'xs: data/greeting = hello guest',
  `xs: data/big has 3000 bytes, sum ${sum(BIG)}`,
  'xs: wrote data/answer and data/echo',
  'xs: data has 5: greeting big secret answer echo',
  'xs: data/secret: EACCES',
  'xs: data/missing: ENOENT',
  'xs: event data/poke tok',
  'xs: waiting for a poke',
  'xs: event data/poke tok, poked: now',
  'xs: frontend state 1',
  'xs: backend state 2',
  'xs: frontend state 3',
  'xs: backend state 4',
  'xs: frontend state 4',
  'xs: connected',
  '',
].join('\n');

/** What the guest left in the store: its writes, made as its own domain, and the frontend's walk. */
export async function assertLeft(dom0: XsClient, domid: number, be: Backend): Promise<void> {
  const home = `/local/domain/${domid}`;
  assert.equal(await dom0.read(`${home}/data/answer`), '42');
  assert.equal(await dom0.read(`${home}/data/echo`), BIG);
  assert.deepEqual(await dom0.getPerms(`${home}/data/answer`), [`n${domid}`]);
  assert.equal(await dom0.read(`${home}/device/vif/0/state`), '4');
  assert.deepEqual(be.states, [1, 3, 4]);
}
