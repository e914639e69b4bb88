// Each VM's KVM debugfs directory costs ~65 KiB of kernel memory and
// ~110 µs; VMs made by one thread share one (src/kvm/fds.ts). Checked where
// debugfs can be seen: as root, in a mount namespace of the test's own.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';

interface Seen { vms: number; before: string[]; after: string[]; fds: number[] }
const made = (r: Seen): number => r.after.filter((d) => !r.before.includes(d)).length;

const child = fileURLToPath(new URL('./fixtures/debugfs-count.ts', import.meta.url));
const root = process.getuid?.() === 0 && spawnSync('unshare', ['-m', 'true']).status === 0;

function count(env: NodeJS.ProcessEnv): Seen {
  const script = 'mount -t debugfs debugfs /sys/kernel/debug && exec "$@"';
  const r = spawnSync('unshare', ['-m', '--', 'sh', '-c', script, 'sh', process.execPath, '--import', 'tsx', child, '20'], {
    env: { ...process.env, ...env },
    encoding: 'utf8',
  });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout) as Seen;
}

void describe('KVM debugfs directories', { skip: root ? false : 'needs root and unshare -m' }, () => {
  void it('one directory for all the VMs a thread makes (or a few: another thread may take the free fd meanwhile)', () => {
    const r = count({ LIGHTVM_KVM_DEBUGFS: '' });
    assert.equal(r.vms, 20);
    assert.ok(made(r) <= 3, JSON.stringify(r));
  });
  void it('one per VM with LIGHTVM_KVM_DEBUGFS=1', () => {
    const r = count({ LIGHTVM_KVM_DEBUGFS: '1' });
    // A directory left by an ended process with this pid takes the place of at most one.
    assert.ok(made(r) >= 20 - r.before.length, JSON.stringify(r));
  });
});
