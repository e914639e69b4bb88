// contrib/lightvmd.service: systemd accepts it, and the daemon command line
// it runs is one lightvmd takes (a unit that names a wrong option fails only
// when a user enables it).
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { ok, startTestDaemon, until, type HostInfo } from './daemon-helpers.js';
import { ROOT, tempDir } from './helpers.js';

const UNIT = join(ROOT, 'contrib', 'lightvmd.service');
const text = readFileSync(UNIT, 'utf8');
const tmp = tempDir('contrib');
after(() => tmp.cleanup());

function execStart(): string[] {
  const m = /^ExecStart=(.*)$/m.exec(text);
  assert.ok(m, 'the unit has an ExecStart');
  return m[1]!.trim().split(/\s+/);
}

function verify(unit: string): { status: number | null; out: string } {
  const r = spawnSync('systemd-analyze', ['verify', unit], { encoding: 'utf8' });
  return { status: r.status, out: `${r.stdout}${r.stderr}`.trim() };
}

void describe('contrib/lightvmd.service', () => {
  void it('systemd-analyze verify passes it without a warning, also with ExecStart naming this lightvmd', (t) => {
    try {
      execFileSync('systemd-analyze', ['--version'], { stdio: 'ignore' });
    } catch {
      t.skip('systemd-analyze is not installed');
      return;
    }
    assert.deepEqual(verify(UNIT), { status: 0, out: '' });
    // verify checks that the program exists: point it at the real one
    const [, , ...args] = execStart();
    const local = join(tmp.dir, 'lightvmd.service');
    writeFileSync(local, text.replace(/^ExecStart=.*$/m, `ExecStart=${process.execPath} ${join(ROOT, 'dist', 'cli', 'lightvmd.js')} ${args.join(' ')}`));
    assert.deepEqual(verify(local), { status: 0, out: '' });
    // and a broken unit is caught, so the two passes above mean something
    const broken = join(tmp.dir, 'broken.service');
    writeFileSync(broken, text.replace(/^ExecStart=.*$/m, 'ExecStart=lightvmd-not-installed --pool 4:8'));
    assert.notEqual(verify(broken).status, 0);
  });

  void it("the daemon serves with the unit's options", async () => {
    const [env, prog, ...args] = execStart();
    assert.deepEqual([env, prog], ['/usr/bin/env', 'lightvmd']);
    const i = args.indexOf('--runtime-dir');
    assert.ok(i >= 0, 'the unit names the runtime directory (systemd makes it: RuntimeDirectory=)');
    args.splice(i, 2);
    assert.match(text, /^RuntimeDirectory=lightvm$/m);
    assert.match(text, /^KillMode=process$/m);
    const d = await startTestDaemon({ args, prefix: 'unit' });
    try {
      // The daemon answers before its pool's first executor has started.
      await until('an executor to run the pool', async () => (await ok<HostInfo>(d.socket, 'GET', '/v1/host')).executors.length >= 1, 20_000);
      const h = await ok<HostInfo>(d.socket, 'GET', '/v1/host');
      const pool = args[args.indexOf('--pool') + 1]!.split(':').map(Number);
      assert.deepEqual(h.pools.map((p) => [p.memory_mib, p.target]), [pool], 'the pool the unit asks for');
    } finally {
      await d.stop();
    }
  });
});
