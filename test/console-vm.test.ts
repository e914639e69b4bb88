// Issue 12, the console, on real VMs (where there is no /dev/kvm:
// sh scripts/kvm-box.sh sh scripts/in-netns.sh node --import tsx --test
// test/console-vm.test.ts). Input sent through
// the daemon's API reaches a guest's virtio-console receive queue (the vcon
// guest echoes it in capitals, on the console stream); the refusals that
// need a VM (no virtio-console, input unread, ended); lightvm console
// --attach through a pipe and through a pty (raw mode, Ctrl-] detaches);
// a guest flooding its virtio-console is held to the same per-VM console
// bound as CONSOLE_WRITE (its rate: the guest waits; what a daemon that does
// not keep up misses is dropped and counted in the VM view).
import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { closeSync, writeSync } from 'node:fs';
import { after, before, describe, it } from 'node:test';
import tty from 'node:tty';
import { openPty } from '../src/sys/terminal.js';
import { CLI, ok, openStream, request, startTestDaemon, until, type ApiErrorBody, type TestDaemon, type VmView } from './daemon-helpers.js';
import { ROOT, scaled, sleep, within } from './helpers.js';
import { untilExited, vmOf } from './vm-helpers.js';

const CONSOLE = [{ type: 'console', id: 3 }];

async function create(d: TestDaemon, body: Record<string, unknown>): Promise<VmView> {
  return (await ok<{ vm: VmView }>(d.socket, 'POST', '/v1/vms', body, 201)).vm;
}

/** POST console input; the status and the error, if any. */
async function input(d: TestDaemon, vm: string | number, body: unknown): Promise<{ status: number; error?: ApiErrorBody['error']; bytes?: number }> {
  const r = await request(d.socket, 'POST', `/v1/vms/${vm}/console/input`, { body, timeoutMs: 15_000 });
  const j = r.json as Partial<ApiErrorBody> & { bytes?: number };
  return { status: r.status, error: j?.error, bytes: j?.bytes };
}

void describe('console input through the API', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'ci' });
  });
  after(async () => {
    await d.stop();
  });

  void it('reaches the guest, whose echo comes back on the console stream; "quit" ends it', async () => {
    await create(d, { image: 'vcon', name: 'echo1', devices: CONSOLE });
    const s = await openStream(d.socket, '/v1/vms/echo1/console?follow=true');
    try {
      assert.equal(s.status, 200);
      await until('vcon to say hello', () => Promise.resolve(s.text().includes('vcon: hello over virtio-console\n')));
      assert.deepEqual(await input(d, 'echo1', { text: 'shout this\n' }), { status: 200, error: undefined, bytes: 11 });
      await until('the echo of the text', () => Promise.resolve(s.text().includes('SHOUT THIS\n')));
      // Any bytes, as base64 (by id this time).
      const { id } = await vmOf(d.socket, 'echo1');
      assert.equal((await input(d, id, { base64: Buffer.from('and bytes \x01\n').toString('base64') })).status, 200);
      await until('the echo of the bytes', () => Promise.resolve(s.text().includes('AND BYTES \x01\n')));
      assert.equal((await input(d, 'echo1', { text: 'quit' })).status, 200);
      const vm = await untilExited(d.socket, 'echo1', 10_000);
      assert.deepEqual(vm.exit, { kind: 'halt', status: 0 });
      await s.ended;
      assert.equal(s.text(), 'vcon: hello over virtio-console\nSHOUT THIS\nAND BYTES \x01\n');
    } finally {
      s.close();
    }
  });

  void it('bad input is refused, naming the field, the VM or the reason', async () => {
    await create(d, { image: 'vcon', name: 'echo2', devices: CONSOLE });
    await until('echo2 to say hello', async () => (await request(d.socket, 'GET', '/v1/vms/echo2/console')).text.includes('hello'));
    // A VM without a virtio-console.
    await create(d, { image: 'counter', name: 'plain' });
    const plain = await input(d, 'plain', { text: 'a' });
    assert.deepEqual([plain.status, plain.error?.code, plain.error?.field], [409, 'no-console-device', 'devices']);
    assert.match(plain.error!.message, /^VM plain: it has no virtio-console device/);
    // A guest that never reads: its unread input is bounded (64 KiB), whole requests or nothing.
    await create(d, { image: 'counter', name: 'deaf', devices: CONSOLE });
    const chunk = Buffer.alloc(16 * 1024, 'z').toString('base64');
    for (let i = 0; i < 4; i++) assert.equal((await input(d, 'deaf', { base64: chunk })).status, 200, `chunk ${i}`);
    const full = await input(d, 'deaf', { text: 'one more' });
    assert.deepEqual([full.status, full.error?.code], [503, 'console-input-full']);
    assert.match(full.error!.message, /^VM deaf: its console input holds 65536 bytes the guest has not read yet; 8 more would pass the 65536 allowed/);
    // An ended VM.
    assert.equal((await input(d, 'echo2', { text: 'quit' })).status, 200);
    await untilExited(d.socket, 'echo2', 10_000);
    const ended = await input(d, 'echo2', { text: 'a' });
    assert.deepEqual([ended.status, ended.error?.field], [409, 'state']);
    assert.match(ended.error!.message, /^VM echo2 has ended/);
    for (const name of ['plain', 'deaf']) await ok(d.socket, 'DELETE', `/v1/vms/${name}`);
  });
});

void describe('lightvm console attached to a running VM', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'cca' });
  });
  after(async () => {
    await d.stop();
  });

  /** The CLI with stdin and stdout as given; its output so far and its end. */
  const run = (args: string[], stdio: (number | 'pipe')[]): { child: ChildProcess; out: () => string; code: Promise<number | null> } => {
    const child = spawn(process.execPath, [CLI, ...args, '--socket', d.socket], { stdio: stdio as never, cwd: ROOT });
    let out = '';
    child.stdout?.setEncoding('utf8');
    child.stdout?.on('data', (s: string) => (out += s));
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => (out += s));
    return { child, out: () => out, code: new Promise((r) => child.once('exit', (c) => r(c))) };
  };

  void it('--attach through a pipe: stdin reaches the guest, its echo comes back, Ctrl-] detaches and the VM runs on', async () => {
    await create(d, { image: 'vcon', name: 'pipe1', devices: CONSOLE });
    const cli = run(['console', 'pipe1', '--attach'], ['pipe', 'pipe', 'pipe']);
    try {
      await until('the hello', () => Promise.resolve(cli.out().includes('vcon: hello over virtio-console\n')));
      cli.child.stdin!.write('through a pipe\n');
      await until('the echo', () => Promise.resolve(cli.out().includes('THROUGH A PIPE\n')));
      cli.child.stdin!.write('\x1d');
      assert.equal(await within(cli.code, 10_000, 'the CLI to detach'), 0);
      assert.match(cli.out(), /lightvm: detached from pipe1\n$/);
      assert.equal((await vmOf(d.socket, 'pipe1')).state, 'running');
    } finally {
      cli.child.kill('SIGKILL');
      await ok(d.socket, 'DELETE', '/v1/vms/pipe1');
    }
  });

  void it('on a terminal (a pty): attached without --attach, keys sent as typed (raw mode), Ctrl-] detaches', async () => {
    await create(d, { image: 'vcon', name: 'tty1', devices: CONSOLE });
    const pty = openPty();
    const master = new tty.ReadStream(pty.master);
    let seen = '';
    master.setEncoding('utf8');
    master.on('data', (s: string) => (seen += s));
    const cli = run(['console', 'tty1'], [pty.slave, pty.slave, pty.slave]);
    try {
      await until('the attach note and the hello', () => Promise.resolve(seen.includes('attached to tty1; Ctrl-] detaches') && seen.includes('vcon: hello')));
      // Raw mode: no line discipline, so "typed" reaches the guest before any Enter, and is not echoed by the pty.
      writeSync(pty.master, 'typed');
      await until('the echo without Enter', () => Promise.resolve(seen.includes('TYPED')));
      assert.ok(!seen.includes('typed'), `the pty echoed the keys: ${JSON.stringify(seen)}`);
      writeSync(pty.master, '\x1d');
      assert.equal(await within(cli.code, 10_000, 'the CLI to detach'), 0);
      await until('the detach note', () => Promise.resolve(seen.includes('detached from tty1')));
      assert.equal((await vmOf(d.socket, 'tty1')).state, 'running');
    } finally {
      cli.child.kill('SIGKILL');
      master.destroy();
      closeSync(pty.slave);
      await ok(d.socket, 'DELETE', '/v1/vms/tty1');
    }
  });

  void it('the CLI ends, exit 0, when the VM it is attached to ends', async () => {
    await create(d, { image: 'vcon', name: 'end1', devices: CONSOLE });
    const cli = run(['console', 'end1', '--attach'], ['pipe', 'pipe', 'pipe']);
    try {
      await until('the hello', () => Promise.resolve(cli.out().includes('hello')));
      cli.child.stdin!.write('quit');
      assert.equal(await within(cli.code, 10_000, 'the CLI to end with its VM'), 0);
    } finally {
      cli.child.kill('SIGKILL');
    }
  });
});

void describe('a guest flooding its virtio-console', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'cf' });
  });
  after(async () => {
    await d.stop();
  });

  void it('is held to its console\'s rate: 3 MiB in 512 KiB notifies take at least 2.4 s, and each notify returns served', async () => {
    // 6 rounds of 8 chains of 64 KiB; 1 MiB/s after a 256 KiB burst is 2.75 s.
    const t0 = Date.now();
    await create(d, { image: 'vcon-flood', name: 'vf', cmdline: '6', devices: CONSOLE });
    const vm = await untilExited(d.socket, 'vf', 30_000);
    const took = Date.now() - t0;
    assert.deepEqual(vm.exit, { kind: 'halt', status: 0 }, 'the guest saw a notify return with chains unused');
    assert.ok(took >= 2400, `3 MiB of virtio-console output took only ${took} ms`);
  });

  void it('what a stopped daemon misses is dropped and counted in the VM view; the VM stays manageable', async () => {
    const flood = await create(d, { image: 'vcon-flood', name: 'vf2', devices: CONSOLE });
    await until('the flood to print', async () => (await request(d.socket, 'GET', '/v1/vms/vf2/console')).text.length > 0);
    d.child.kill('SIGSTOP');
    await sleep(2500);
    d.child.kill('SIGCONT');
    await until('the drop to be counted', async () => ((await vmOf(d.socket, 'vf2')) as unknown as { console_dropped_bytes: number }).console_dropped_bytes > 0);
    const { vms } = await ok<{ vms: { id: number; console_throttled_ms: number }[] }>(d.socket, 'GET', '/v1/stats');
    const throttled = vms.find((v) => v.id === flood.id)?.console_throttled_ms ?? 0;
    assert.ok(throttled > 1000, `the flood waited only ${throttled} ms for its console's rate`);
    for (const [method, path] of [['POST', '/v1/vms/vf2/pause'], ['POST', '/v1/vms/vf2/unpause'], ['DELETE', '/v1/vms/vf2']] as const) {
      const t = Date.now();
      const r = await request(d.socket, method, path, { timeoutMs: 5000 });
      assert.equal(r.status, 200, `${method} ${path}: ${r.text}`);
      assert.ok(Date.now() - t < scaled(1000), `${method} ${path} took ${Date.now() - t} ms`);
    }
    assert.ok(!d.log().includes('executor lost'), `an executor was lost: ${d.log()}`);
  });
});
