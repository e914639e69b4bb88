// Linux VMs through the daemon: POST /v1/vms with a bzImage, an initrd and
// a command line (its vCPU thread then runs in an executor process), and a
// daemon killed (SIGKILL) while a Linux VM halts inside KVM: the next daemon
// re-adopts it from its executor, with its console, and can destroy it; no
// process is left. The guest is our probe (guest/linux). Needs /dev/kvm.
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { executorProcesses, isAlive, ok, request, startTestDaemon, type TestDaemon, type VmView } from './daemon-helpers.js';
import { tempDir } from './helpers.js';
import { fnv, writeProbeBzImage } from './linux-probe.js';

void describe('Linux VMs through the daemon', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  const tmp = tempDir('linux-daemon');
  let d1: TestDaemon;
  let d2: TestDaemon | undefined;
  let kernel: string;
  const initrd = new Uint8Array(9000).map((_v, i) => (i * 17 + 1) & 0xff);
  const initrdFile = join(tmp.dir, 'initrd.img');

  before(async () => {
    kernel = writeProbeBzImage(tmp.dir);
    writeFileSync(initrdFile, initrd);
    d1 = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'lx' });
  });
  after(async () => {
    await d2?.stop();
    await d1?.stop();
    tmp.cleanup();
  });

  void it('POST /v1/vms with a bzImage and an initrd boots it; its console is COM1', { timeout: 60_000 }, async () => {
    const r = await ok<{ vm: VmView; console: string }>(d1.socket, 'POST', '/v1/vms',
      { image: kernel, initrd: initrdFile, cmdline: 'via=api', memory: 16, wait: 'exit' }, 201);
    assert.deepEqual(r.vm.exit, { kind: 'halt', status: 0 }, r.console);
    assert.match(r.console, /^cmdline .*via=api$/m);
    assert.match(r.console, new RegExp(`^initrd_fnv 0x${fnv(initrd).toString(16)}$`, 'm'));
    assert.match(r.console, /^uart: probe on COM1$/m);
    const elf = await request(d1.socket, 'POST', '/v1/vms', { body: { image: 'hello', initrd: initrdFile } });
    assert.equal(elf.status, 422, elf.text);
    assert.match(elf.text, /initrd: only a Linux kernel/);
  });

  void it('a daemon killed: the next one re-adopts the Linux VM from its executor and destroys it', { timeout: 90_000 }, async () => {
    const vm = (await ok<{ vm: VmView }>(d1.socket, 'POST', '/v1/vms', { image: kernel, name: 'lhlt', cmdline: 'probe.hlt', memory: 16 }, 201)).vm;
    for (const end = Date.now() + 30_000; Date.now() < end;) {
      const c = await request(d1.socket, 'GET', `/v1/vms/lhlt/console`);
      if (c.text.includes('hlt\n')) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    const executors = executorProcesses(d1.runtimeDir).map((p) => p.pid);
    const exited = new Promise((r) => d1.child.once('exit', r));
    d1.child.kill('SIGKILL');
    await exited;
    for (const pid of executors) assert.ok(isAlive(pid), `executor ${pid} died with its daemon`);
    d2 = await startTestDaemon({ runtimeDir: d1.runtimeDir, args: ['--pool', '4:0'] });
    const again = (await ok<{ vm: VmView }>(d2.socket, 'GET', '/v1/vms/lhlt')).vm;
    assert.equal(again.id, vm.id);
    assert.equal(again.state, 'running');
    const c = await request(d2.socket, 'GET', '/v1/vms/lhlt/console');
    assert.match(c.text, /^hlt$/m, 'its console history came with it');
    const del = await request(d2.socket, 'DELETE', '/v1/vms/lhlt');
    assert.ok(del.status === 200 || del.status === 204, del.text);
    assert.equal((await request(d2.socket, 'GET', '/v1/vms/lhlt')).status, 404);
  });
});
