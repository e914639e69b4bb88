// `lightvm xenstored` against clients nobody here wrote (Debian's
// xenstore-utils) and against our own client for what they cannot send:
// a bound guest domain, a conflicting transaction, unframeable input.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { XsClient, XsReplyError } from '../src/xenstore/client.js';

const haveUtils = spawnSync('sh', ['-c', 'command -v xenstore-read']).status === 0;
const dir = mkdtempSync(join(tmpdir(), 'lightvm-xsd-'));
const socket = join(dir, 'socket');
const env = { ...process.env, XENSTORED_PATH: socket };
const xs = (...args: string[]) => spawnSync(args[0]!, args.slice(1), { env, encoding: 'utf8', timeout: 20_000 });

void describe('lightvm xenstored', { skip: haveUtils ? false : 'xenstore-utils not installed (scripts/install-peers.sh)' }, () => {
  let child: ReturnType<typeof spawn>;
  before(async () => {
    child = spawn(process.execPath, ['--import', 'tsx', 'src/cli/main.ts', 'xenstored', '--socket', socket, '--entry-quota', '20'], { stdio: 'ignore' });
    for (let i = 0; i < 600 && !existsSync(socket); i++) await new Promise((r) => setTimeout(r, 100));
    assert.ok(existsSync(socket), 'xenstored made its socket');
  });
  after(() => { child.kill('SIGTERM'); rmSync(dir, { recursive: true, force: true }); });

  void it('xenstore-write, -read, -ls, -exists, -rm', () => {
    assert.equal(xs('xenstore-write', '/a/b', 'hello', '/a/c', 'x').status, 0);
    assert.equal(xs('xenstore-read', '/a/b').stdout, 'hello\n');
    assert.match(xs('xenstore-ls', '/a').stdout, /b = "hello"\nc = "x"/);
    assert.equal(xs('xenstore-exists', '/a/c').status, 0);
    assert.equal(xs('xenstore-rm', '/a/c').status, 0);
    assert.notEqual(xs('xenstore-exists', '/a/c').status, 0);
    assert.notEqual(xs('xenstore-read', '/nope').status, 0);
  });

  void it('xenstore-chmod: a guest domain is refused what the permissions deny, given what they allow', async () => {
    assert.equal(xs('xenstore-write', '/secret', 's3').status, 0);
    assert.equal(xs('xenstore-chmod', '/secret', 'n0').status, 0);
    const dom0 = await XsClient.connect(socket);
    const guest = await XsClient.connect(socket);
    try {
      await dom0.introduce(5);
      await guest.bind(5);
      await assert.rejects(guest.read('/secret'), (e: XsReplyError) => e.errno === 'EACCES');
      await assert.rejects(guest.write('/secret', 'x'), (e: XsReplyError) => e.errno === 'EACCES');
      assert.equal(xs('xenstore-chmod', '/secret', 'n0', 'r5').status, 0);
      assert.equal(await guest.read('/secret'), 's3');
      assert.match(xs('xenstore-ls', '-p', '/').stdout, /secret = "s3".*\(n0,r5\)/);
      // The quota: a guest owns at most 20 nodes.
      await dom0.mkdir('/local/domain/5');
      await dom0.setPerms('/local/domain/5', ['n5']);
      let refused = '';
      for (let i = 0; i < 30 && !refused; i++) await guest.write(`n${i}`, 'v').catch((e: XsReplyError) => { refused = e.errno; });
      assert.equal(refused, 'ENOSPC');
      // RELEASE closes the domain's connection.
      await dom0.release(5);
      await assert.rejects(guest.read('/secret'));
    } finally { dom0.close(); guest.close(); }
  });

  void it('xenstore-watch sees the initial event and a change', async () => {
    const w = spawn('xenstore-watch', ['-n', '2', '/w'], { env, stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    w.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    for (let i = 0; i < 100 && !out.includes('/w'); i++) await new Promise((r) => setTimeout(r, 100));
    assert.equal(xs('xenstore-write', '/w/x', '1').status, 0);
    const code = await new Promise<number | null>((r) => w.on('exit', r));
    assert.equal(code, 0);
    assert.match(out, /^\/w\b[^\n]*\n\/w\/x\b/);
  });

  void it('a transaction whose read node changed ends in EAGAIN; retried, it commits', async () => {
    const a = await XsClient.connect(socket);
    const b = await XsClient.connect(socket);
    try {
      await a.write('/t/x', '1');
      let tx = await a.transactionStart();
      await a.read('/t/x', tx);
      await a.write('/t/x', '2', tx);
      await b.write('/t/x', '9');
      await assert.rejects(a.transactionEnd(tx, true), (e: XsReplyError) => e.errno === 'EAGAIN');
      assert.equal(await a.read('/t/x'), '9');
      tx = await a.transactionStart();
      await a.write('/t/x', `${Number(await a.read('/t/x', tx)) + 1}`, tx);
      await a.transactionEnd(tx, true);
      assert.equal(await a.read('/t/x'), '10');
    } finally { a.close(); b.close(); }
  });

  void it('unframeable input ends that connection only; an unknown type is an error reply', async () => {
    const bad = await XsClient.connect(socket);
    await assert.rejects(bad.request(99, Buffer.from('x\0')), (e: XsReplyError) => e.errno === 'ENOSYS');
    const header = Buffer.alloc(16);
    header.writeUInt32LE(2, 0); header.writeUInt32LE(100_000, 12);
    bad.raw.write(header);
    await new Promise((r) => bad.raw.once('close', r));
    assert.equal(xs('xenstore-read', '/a/b').stdout, 'hello\n', 'the store still serves');
  });
});
