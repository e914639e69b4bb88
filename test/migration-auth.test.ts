// Live migration against peers that are not what they claim: a real source
// daemon migrating a counting guest to TCP servers of this test. A fake
// destination without the token learns nothing of it and the VM never
// stops; a destination that goes silent (at once, after the stop-and-copy,
// after the commit) bounds the source's wait: before the commit the VM runs
// on (unpaused within the bound), after it the VM is held paused, as it may
// run there. The API shows the VM as migrating meanwhile. And a listening
// daemon flooded by connections that never prove they hold the token keeps
// its memory and answers its API at once.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { connect, createServer, type AddressInfo, type Server, type Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { Channel, newNonce, nonceOf, proofOf, PROTOCOL } from '../src/toolstack/migration-channel.js';
import { ok, request, startTestDaemon, until, type ApiErrorBody, type TestDaemon } from './daemon-helpers.js';
import { sleep } from './helpers.js';
import { assertCounting, assertStill, consoleOf, lastCount, untilCount, vmOf } from './vm-helpers.js';

const TOKEN = 'migration-auth-test-token-0123456789';
const errorOf = (r: { json: unknown }): ApiErrorBody['error'] | undefined => (r.json as ApiErrorBody | undefined)?.error;

/** A TCP server of this test; every socket it accepted is destroyed on close. */
async function peer(onSocket: (s: Socket) => void): Promise<{ to: string; close: () => Promise<void> }> {
  const sockets = new Set<Socket>();
  const server: Server = createServer((s) => {
    sockets.add(s);
    s.on('error', () => {});
    onSocket(s);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const { port } = server.address() as AddressInfo;
  return {
    to: `127.0.0.1:${port}`,
    close: () => new Promise((r) => {
      for (const s of sockets) s.destroy();
      server.close(() => r());
    }),
  };
}

/** A destination that holds the token and speaks the protocol, then goes silent at `silentAt`. */
function knowingDestination(silentAt: 'after-final' | 'after-commit', heard: string[]): (s: Socket) => void {
  return (socket) => void (async () => {
    const ch = new Channel(socket);
    const hello = await ch.nextClear(5000, 'hello');
    const ns = nonceOf(hello.nonce, 'hello');
    const nd = newNonce();
    ch.sendClear({ type: 'challenge', nonce: nd.toString('hex'), proof: proofOf(TOKEN, 'destination', ns, nd) });
    const auth = await ch.nextClear(5000, 'auth');
    assert.equal(auth.proof, proofOf(TOKEN, 'source', ns, nd));
    ch.seal(TOKEN, 'destination', ns, nd);
    ch.sendJson('ready', {});
    for (;;) {
      const r = await ch.next(30_000, 'the source');
      heard.push(r.kind);
      if (r.kind === 'pages') ch.sendJson('ack', {});
      if (r.kind === 'final' && !r.more) break;
    }
    if (silentAt === 'after-final') return;
    ch.sendJson('restored', { id: 1 });
    heard.push((await ch.next(5000, 'commit')).kind);
  })().catch((err: Error) => heard.push(`error: ${err.message}`));
}

/** Polls the VM's state while `p` runs; returns the states seen. */
async function statesDuring(socket: string, name: string, p: Promise<unknown>): Promise<Set<string>> {
  const seen = new Set<string>();
  let done = false;
  void p.finally(() => (done = true));
  while (!done) {
    seen.add((await vmOf(socket, name)).state);
    await sleep(20);
  }
  return seen;
}

void describe('migration to a peer that is not what it claims', () => {
  let src: TestDaemon;
  before(async () => {
    src = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'mauth' });
  });
  after(async () => {
    await src.stop();
  });

  void it('a fake destination without the token: refused before anything of the VM is sent; the token never crosses the wire', async () => {
    const received: Buffer[] = [];
    const fake = await peer((s) => {
      s.on('data', (b: Buffer) => {
        received.push(b);
        // Answers the hello with a challenge it cannot prove.
        if (received.length === 1) {
          const body = Buffer.from(JSON.stringify({ type: 'challenge', nonce: newNonce().toString('hex'), proof: 'ab'.repeat(32) }));
          const head = Buffer.alloc(4);
          head.writeUInt32LE(body.length, 0);
          s.write(Buffer.concat([head, body]));
        }
      });
    });
    try {
      await ok(src.socket, 'POST', '/v1/vms', { image: 'counter', name: 'fk' }, 201);
      const k = lastCount(await untilCount(src.socket, 'fk', 5));
      const r = await request(src.socket, 'POST', '/v1/vms/fk/migrate', { body: { to: fake.to, token: TOKEN } });
      assert.equal(r.status, 502, r.text);
      assert.match(errorOf(r)?.message ?? '', /could not prove it holds this token .*\(the VM runs on here\)/);
      const wire = Buffer.concat(received);
      for (const form of [TOKEN, Buffer.from(TOKEN).toString('hex'), Buffer.from(TOKEN).toString('base64')]) {
        assert.ok(!wire.includes(form), `the fake destination received the token (${form})`);
      }
      // Nothing but the hello: no name, no memory size, no page.
      const hello = JSON.parse(wire.subarray(4).toString()) as Record<string, unknown>;
      assert.deepEqual(Object.keys(hello).sort(), ['nonce', 'type', 'version']);
      assert.equal(hello.version, PROTOCOL);
      assert.equal(wire.length, 4 + wire.readUInt32LE(0));
      assert.equal((await vmOf(src.socket, 'fk')).state, 'running');
      assertCounting(await untilCount(src.socket, 'fk', k + 10), 'the counter after a fake destination');
    } finally {
      await fake.close();
    }
  });

  void it('a byte changed on the way, after the handshake: the real destination refuses the record, and the VM runs on at the source', async () => {
    const dst = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'mauthd' });
    const upstreams: Socket[] = [];
    try {
      const port = (await ok<{ listening: { port: number } }>(dst.socket, 'PUT', '/v1/migration/listen', { port: 0, token: TOKEN })).listening.port;
      // Forwards both ways; flips one bit of what the source sends past its first 4 KiB (its pages, sealed).
      const proxy = await peer((s) => {
        const up = connect(port, '127.0.0.1');
        upstreams.push(up);
        up.on('error', () => {});
        let seen = 0;
        s.on('data', (b: Buffer) => {
          const at = 4096 - seen;
          seen += b.length;
          if (at >= 0 && at < b.length) b[at]! ^= 0x01;
          up.write(b);
        });
        up.on('data', (b: Buffer) => s.write(b));
        s.on('close', () => up.destroy());
        up.on('close', () => s.destroy());
      });
      await ok(src.socket, 'POST', '/v1/vms', { image: 'counter', name: 'mitm' }, 201);
      await untilCount(src.socket, 'mitm', 5);
      const r = await request(src.socket, 'POST', '/v1/vms/mitm/migrate', { body: { to: proxy.to, token: TOKEN, timeout_ms: 2000 } });
      assert.equal(r.status, 502, r.text);
      assert.match(errorOf(r)?.message ?? '', /closed the connection|ECONNRESET|no answer within/);
      await until('the destination to log the refused record', () => Promise.resolve(/does not open with the session's key/.test(dst.log())), 5000);
      assert.equal((await request(dst.socket, 'GET', '/v1/vms/mitm')).status, 404);
      assert.equal((await vmOf(src.socket, 'mitm')).state, 'running');
      const k = lastCount(await consoleOf(src.socket, 'mitm'));
      assertCounting(await untilCount(src.socket, 'mitm', k + 10), 'the counter after a tampered migration');
      await proxy.close();
    } finally {
      for (const u of upstreams) u.destroy();
      await dst.stop();
    }
  });

  void it('a destination that never answers: 502 within the bound, migrating meanwhile, running after, never stopped', async () => {
    const silent = await peer(() => {});
    try {
      await ok(src.socket, 'POST', '/v1/vms', { image: 'counter', name: 'sl' }, 201);
      await untilCount(src.socket, 'sl', 3);
      const t0 = Date.now();
      const migrating = request(src.socket, 'POST', '/v1/vms/sl/migrate', { body: { to: silent.to, token: TOKEN, timeout_ms: 1000 } });
      const states = await statesDuring(src.socket, 'sl', migrating);
      const r = await migrating;
      const ms = Date.now() - t0;
      assert.equal(r.status, 502, r.text);
      assert.match(errorOf(r)?.message ?? '', /challenge: no answer within 1000 ms \(the VM runs on here\)/);
      assert.ok(ms < 3000, `the migrate request took ${ms} ms with a bound of 1000 ms`);
      assert.ok(states.has('migrating'), `states seen while migrating: ${[...states].join(', ')}`);
      const k = lastCount(await consoleOf(src.socket, 'sl'));
      assert.equal((await vmOf(src.socket, 'sl')).state, 'running');
      assertCounting(await untilCount(src.socket, 'sl', k + 10), 'the counter after a silent destination');
    } finally {
      await silent.close();
    }
  });

  void it('a destination that goes silent after the stop-and-copy: the source resumes the VM within the bound, nothing lost', async () => {
    const heard: string[] = [];
    const dest = await peer(knowingDestination('after-final', heard));
    try {
      await ok(src.socket, 'POST', '/v1/vms', { image: 'counter', name: 'sf' }, 201);
      await untilCount(src.socket, 'sf', 10);
      const t0 = Date.now();
      const migrating = request(src.socket, 'POST', '/v1/vms/sf/migrate', { body: { to: dest.to, token: TOKEN, timeout_ms: 1000 } });
      const states = await statesDuring(src.socket, 'sf', migrating);
      const r = await migrating;
      const ms = Date.now() - t0;
      assert.equal(r.status, 502, r.text);
      assert.match(errorOf(r)?.message ?? '', /restore of the VM: no answer within 1000 ms \(the VM runs on here\)/);
      assert.ok(ms < 4000, `the migrate request took ${ms} ms with a bound of 1000 ms`);
      assert.ok(heard.includes('pages') && heard.includes('final'), heard.join(', '));
      assert.ok(states.has('migrating'), `states seen while migrating: ${[...states].join(', ')}`);
      assert.equal((await vmOf(src.socket, 'sf')).state, 'running');
      const k = lastCount(await consoleOf(src.socket, 'sf'));
      assertCounting(await untilCount(src.socket, 'sf', k + 10), 'the counter after the call-off');
    } finally {
      await dest.close();
    }
  });

  void it('a destination that goes silent after the commit: the VM is held paused (it may run there); only force runs it here', async () => {
    const heard: string[] = [];
    const dest = await peer(knowingDestination('after-commit', heard));
    try {
      await ok(src.socket, 'POST', '/v1/vms', { image: 'counter', name: 'sc' }, 201);
      await untilCount(src.socket, 'sc', 10);
      const r = await request(src.socket, 'POST', '/v1/vms/sc/migrate', { body: { to: dest.to, token: TOKEN, timeout_ms: 1000 } });
      assert.equal(r.status, 502, r.text);
      assert.match(errorOf(r)?.message ?? '', /start of the VM: no answer within 1000 ms: the VM may run at 127\.0\.0\.1:\d+, so it is held paused here/);
      assert.equal(heard.at(-1), 'commit', heard.join(', '));
      assert.equal((await vmOf(src.socket, 'sc')).state, 'paused');
      const left = await assertStill(src.socket, 'sc', 200, 'a VM held after an unconfirmed commit');
      const plain = await request(src.socket, 'POST', '/v1/vms/sc/unpause');
      assert.equal(plain.status, 409, plain.text);
      assert.equal(errorOf(plain)?.code, 'migration-hold');
      await ok(src.socket, 'POST', '/v1/vms/sc/unpause?force=true');
      const text = await untilCount(src.socket, 'sc', lastCount(left) + 10);
      assert.ok(text.startsWith(left));
      assertCounting(text, 'the counter forced on after the hold');
    } finally {
      await dest.close();
    }
  });
});

/** Two ends of a real TCP connection on 127.0.0.1, sealed as source and destination with the token. */
async function sealedPair(): Promise<{ src: Channel; dst: Channel; raw: { src: Socket; dst: Socket }; close: () => void }> {
  let accepted!: (s: Socket) => void;
  const got = new Promise<Socket>((r) => (accepted = r));
  const server = createServer((s) => accepted(s));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const a = connect((server.address() as AddressInfo).port, '127.0.0.1');
  const b = await got;
  const ns = newNonce();
  const nd = newNonce();
  const src = new Channel(a);
  const dst = new Channel(b);
  src.seal(TOKEN, 'source', ns, nd);
  dst.seal(TOKEN, 'destination', ns, nd);
  return { src, dst, raw: { src: a, dst: b }, close: () => { a.destroy(); b.destroy(); server.close(); } };
}

void describe('the sealed channel (two real sockets)', () => {
  void it('a message longer than a record arrives whole, in order, in records of at most 1 MiB', async () => {
    const p = await sealedPair();
    try {
      const body = Buffer.alloc(3.5 * (1 << 20));
      for (let i = 0; i < body.length; i += 4) body.writeUInt32LE(i, i);
      p.src.sendMessage('final', body);
      const parts: Buffer[] = [];
      for (;;) {
        const r = await p.dst.next(5000, 'final');
        assert.equal(r.kind, 'final');
        assert.ok(r.body.length <= 1 << 20);
        parts.push(Buffer.from(r.body));
        if (!r.more) break;
      }
      assert.equal(parts.length, 4);
      assert.ok(Buffer.concat(parts).equals(body));
    } finally {
      p.close();
    }
  });

  void it('a record sent twice (a replay) is refused, and so is one sealed for the other direction', async () => {
    const p = await sealedPair();
    try {
      // Capture what the source writes, then write it again.
      const written: Buffer[] = [];
      const write = p.raw.src.write.bind(p.raw.src) as (b: Buffer) => boolean;
      (p.raw.src as unknown as { write: (b: Buffer) => boolean }).write = (b: Buffer) => {
        written.push(Buffer.from(b));
        return write(b);
      };
      p.src.sendJson('ack', {});
      assert.equal((await p.dst.next(5000, 'first')).kind, 'ack');
      write(written[0]!);
      await assert.rejects(p.dst.next(5000, 'replay'), /does not open with the session's key/);
      // The destination's own record, reflected back to it.
      const q = await sealedPair();
      const reflected: Buffer[] = [];
      const qwrite = q.raw.dst.write.bind(q.raw.dst) as (b: Buffer) => boolean;
      (q.raw.dst as unknown as { write: (b: Buffer) => boolean }).write = (b: Buffer) => {
        reflected.push(Buffer.from(b));
        return qwrite(b);
      };
      q.dst.sendJson('ready', {});
      assert.equal((await q.src.next(5000, 'ready')).kind, 'ready');
      (q.raw.src.write.bind(q.raw.src) as (b: Buffer) => boolean)(reflected[0]!);
      await assert.rejects(q.dst.next(5000, 'reflected'), /does not open with the session's key/);
      q.close();
    } finally {
      p.close();
    }
  });
});

const rssKiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))![1]);

void describe('a migration listener flooded by connections that never authenticate', () => {
  let dst: TestDaemon;
  let port = 0;
  before(async () => {
    dst = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'mflood' });
    port = (await ok<{ listening: { port: number } }>(dst.socket, 'PUT', '/v1/migration/listen', { port: 0, token: TOKEN })).listening.port;
  });
  after(async () => {
    await dst.stop();
  });

  void it('8 connections each pushing a 16 MiB frame: closed after a few bytes, the API answers at once, the memory stays', async () => {
    for (let i = 0; i < 5; i++) await ok(dst.socket, 'GET', '/v1/vms');
    const rss0 = rssKiB(dst.pid);
    const junk = Buffer.alloc(1 << 20, 0x41);
    let closed = 0;
    const floods = Array.from({ length: 8 }, () => new Promise<void>((resolve) => {
      let sentMiB = 0;
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      s.on('close', () => {
        closed++;
        resolve();
      });
      s.on('connect', () => {
        const head = Buffer.alloc(4);
        head.writeUInt32LE((16 << 20) - 1, 0);
        s.write(head);
        const pump = (): void => {
          while (sentMiB < 16 && !s.destroyed) {
            sentMiB++;
            if (!s.write(junk)) return void s.once('drain', pump);
          }
          s.end();
        };
        pump();
      });
    }));
    const latencies: number[] = [];
    const all = Promise.all(floods);
    let done = false;
    void all.then(() => (done = true));
    const t0 = Date.now();
    while (!done || latencies.length < 20) {
      const t = performance.now();
      await ok(dst.socket, 'GET', '/v1/vms');
      latencies.push(performance.now() - t);
      if (Date.now() - t0 > 15_000) break;
      await sleep(5);
    }
    await all;
    const rss1 = rssKiB(dst.pid);
    assert.equal(closed, 8);
    const worst = Math.max(...latencies);
    assert.ok(worst < 300, `API latency while flooded: worst ${worst.toFixed(1)} ms of ${latencies.length}`);
    assert.ok(rss1 - rss0 < 32 * 1024, `the daemon grew from ${rss0} to ${rss1} KiB`);

    // And it still takes a source that holds the token: challenge, proof, ready.
    const s = connect(port, '127.0.0.1');
    await new Promise((r) => s.once('connect', r));
    const ch = new Channel(s);
    const ns = newNonce();
    ch.sendClear({ type: 'hello', version: PROTOCOL, nonce: ns.toString('hex') });
    const c = await ch.nextClear(2000, 'challenge');
    const nd = nonceOf(c.nonce, 'challenge');
    assert.equal(c.proof, proofOf(TOKEN, 'destination', ns, nd));
    ch.sendClear({ type: 'auth', proof: proofOf(TOKEN, 'source', ns, nd), name: 'probe', memory: 4 << 20, timeout_ms: 1000 });
    ch.seal(TOKEN, 'source', ns, nd);
    assert.equal((await ch.next(2000, 'ready')).kind, 'ready');
    ch.destroy();
  });

  void it('a connection that sends nothing is closed within the handshake bound', async () => {
    const s = connect(port, '127.0.0.1');
    s.on('error', () => {});
    const t0 = Date.now();
    await new Promise((r) => s.once('close', r));
    const ms = Date.now() - t0;
    assert.ok(ms >= 4000 && ms < 8000, `closed after ${ms} ms`);
  });
});
