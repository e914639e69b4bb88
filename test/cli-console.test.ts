// lightvm console: what it sends of stdin (up to the detach key, Ctrl-],
// in pieces the API takes), and how it refuses, against a real daemon,
// before it touches the terminal: an unknown VM, options that exclude each
// other. Its help and shell completion offer --attach. (Attached to a
// running VM, through a pty: wip/console-vm.diff.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { DETACH, INPUT_PIECE, pieces, splitAtDetach } from '../src/cli/commands/console.js';
import { lightvm, startTestDaemon, type TestDaemon } from './daemon-helpers.js';

void describe('lightvm console: stdin to input', () => {
  const b = (s: string): Uint8Array => new TextEncoder().encode(s);

  void it('everything before Ctrl-] is sent; the key and what follows it are not', () => {
    assert.deepEqual(splitAtDetach(b('ls\r')), { send: b('ls\r'), detach: false });
    const r = splitAtDetach(b(`ab${String.fromCharCode(DETACH)}cd`));
    assert.deepEqual([Buffer.from(r.send).toString(), r.detach], ['ab', true]);
    assert.deepEqual(splitAtDetach(Uint8Array.of(DETACH)), { send: new Uint8Array(0), detach: true });
    // Ctrl-C (0x03) is the guest's, not ours.
    assert.deepEqual(splitAtDetach(Uint8Array.of(3)), { send: Uint8Array.of(3), detach: false });
  });

  void it('pieces of at most 16 KiB, in order, nothing lost or added', () => {
    const data = Uint8Array.from({ length: INPUT_PIECE * 2 + 5 }, (_, i) => i % 251);
    const p = pieces(data);
    assert.deepEqual(p.map((x) => x.length), [INPUT_PIECE, INPUT_PIECE, 5]);
    assert.deepEqual(Buffer.concat(p), Buffer.from(data));
    assert.deepEqual(pieces(new Uint8Array(0)), []);
    assert.deepEqual(pieces(b('x')).map((x) => x.length), [1]);
  });
});

void describe('lightvm console against a real daemon, refusals', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'ccl' });
  });
  after(async () => {
    await d.stop();
  });

  void it('--attach to a VM that does not exist: exit 1, naming it', async () => {
    const r = await lightvm(['console', 'nosuchvm', '--attach', '--socket', d.socket]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(r.stderr, 'lightvm: no VM with id or name "nosuchvm"\n');
    assert.equal(r.stdout, '');
  });

  void it('--attach with -f or --print: exit 1, saying they do not go together', async () => {
    for (const other of ['-f', '--print']) {
      const r = await lightvm(['console', 'x', '--attach', other, '--socket', d.socket]);
      assert.equal(r.code, 1, r.stderr);
      assert.equal(r.stderr, 'lightvm: console: --attach does not go with -f or --print\n');
    }
  });

  void it('the help says how to attach and detach; bash completion offers --attach', async () => {
    const help = await lightvm(['console', '--help']);
    assert.equal(help.code, 0);
    assert.match(help.stdout, /Ctrl-\] detaches/);
    assert.match(help.stdout, /-a, --attach/);
    const bash = await lightvm(['completion', 'bash']);
    assert.equal(bash.code, 0);
    assert.match(bash.stdout, /--attach/);
  });
});
