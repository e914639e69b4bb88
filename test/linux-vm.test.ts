// A Linux VM through the library API: Host.create with a bzImage (told from
// an ELF by its "HdrS" header), an initrd and a command line. Its vCPU runs
// on a thread of its own with the in-kernel irqchip, the probed CPUID and
// the COM1 UART, whose output is the VM's console. The guest is our probe
// (guest/linux): it reports what it was given and writes to COM1; with
// probe.hlt it halts inside KVM with interrupts off, where only a destroy
// (the kick signal) ends it. Needs /dev/kvm (skipped without).
import assert from 'node:assert/strict';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { parseCfg } from '../src/cli/cfg.js';
import { Host, VmCreateError } from '../src/toolstack/host.js';
import { linuxCpuid } from '../src/vmm/linux/cpuid.js';
import { tempDir } from './helpers.js';
import { fnv, writeProbeBzImage } from './linux-probe.js';

void describe('Linux VM configuration', () => {
  void it('a cfg file\'s ramdisk (xl\'s key, JSON too) is the initrd, relative to the file', () => {
    assert.deepEqual(parseCfg('/etc/vms/web.cfg', 'kernel = "vmlinuz"\nramdisk = "initrd.img"\ncmdline = "console=ttyS0"\n'),
      { image: 'vmlinuz', initrd: '/etc/vms/initrd.img', cmdline: 'console=ttyS0' });
    assert.deepEqual(parseCfg('/etc/vms/web.json', '{"kernel": "/boot/vmlinuz", "ramdisk": "/boot/initrd.img"}'),
      { image: '/boot/vmlinuz', initrd: '/boot/initrd.img' });
    assert.throws(() => parseCfg('/etc/vms/web.json', '{"kernel": "/boot/vmlinuz", "ramdisk": 3}'), /web\.json: ramdisk: expected a path/);
  });
});

void describe('Linux VMs through Host.create', { skip: existsSync('/dev/kvm') ? false : 'no /dev/kvm' }, () => {
  const tmp = tempDir('linux-vm');
  let host: Host;
  let kernel: string;
  let options: string[];
  const initrd = new Uint8Array(70_000).map((_v, i) => (i * 31 + 7) & 0xff);
  const initrdFile = join(tmp.dir, 'initrd.img');

  before(async () => {
    kernel = writeProbeBzImage(tmp.dir);
    writeFileSync(initrdFile, initrd);
    const kvm = Kvm.open();
    try {
      options = linuxCpuid(kvm).kernelOptions;
    } finally {
      kvm.close();
    }
    host = await Host.start({ executors: 1 });
  });
  after(async () => {
    await host?.close();
    tmp.cleanup();
  });

  void it('boots the bzImage with its initrd and command line; COM1 is its console', { timeout: 60_000 }, async () => {
    const t0 = performance.now();
    const vm = await host.create({ image: kernel, initrd: initrdFile, cmdline: 'lightvm.probe=2', memoryMiB: 32 });
    const started = performance.now() - t0;
    assert.equal(vm.config.linux?.initrd, initrdFile);
    const exit = await vm.exited;
    const out = vm.consoleText();
    assert.deepEqual(exit, { kind: 'halt', status: 0 }, out);
    // The host's kernel options (what it cannot run) come first, then the VM's own.
    assert.match(out, new RegExp(`^cmdline ${[...options, 'lightvm.probe=2'].join(' ')}$`, 'm'));
    assert.match(out, /^initrd_size 0x11170$/m);
    assert.match(out, new RegExp(`^initrd_fnv 0x${fnv(initrd).toString(16)}$`, 'm'));
    assert.match(out, /^uart: probe on COM1$/m);
    await vm.destroy();
    process.stderr.write(`  create of a Linux VM (vCPU thread, irqchip, CPUID, bzImage + initrd loaded): ${started.toFixed(1)} ms to 'started'\n`);
  });

  void it('a vCPU halted in KVM with interrupts off runs on until destroyed', { timeout: 60_000 }, async () => {
    const vm = await host.create({ image: kernel, cmdline: 'probe.hlt', memoryMiB: 16 });
    for (const end = Date.now() + 30_000; !vm.consoleText().includes('hlt\n') && Date.now() < end;) await new Promise((r) => setTimeout(r, 20));
    assert.match(vm.consoleText(), /^hlt$/m);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(vm.state, 'running', 'a HLT inside KVM is no exit');
    // What Linux VMs lack yet is refused, naming the VM; the VM runs on.
    await assert.rejects(vm.pause(), /is a Linux VM: pausing a Linux VM is not supported yet/);
    await assert.rejects(vm.save(join(tmp.dir, 'linux.snap')), /is a Linux VM: a snapshot of a Linux VM is not supported yet/);
    await assert.rejects(vm.consoleInput(new Uint8Array([10])), /is a Linux VM: console input of a Linux VM is not supported yet/);
    assert.equal(vm.state, 'running');
    const t0 = performance.now();
    const exit = await vm.destroy();
    const ms = performance.now() - t0;
    assert.deepEqual(exit, { kind: 'destroyed' });
    assert.ok(ms < 5000, `destroy took ${ms.toFixed(0)} ms`);
    process.stderr.write(`  destroy of a Linux VM halted in KVM: ${ms.toFixed(1)} ms to freed\n`);
  });

  void it('refuses an initrd for an ELF image, and names a missing initrd', { timeout: 60_000 }, async () => {
    await assert.rejects(host.create({ image: 'hello', initrd: initrdFile }), (err: unknown) => {
      assert.ok(err instanceof VmCreateError, String(err));
      assert.equal(err.field, 'initrd');
      assert.match(err.message, /only a Linux kernel \(bzImage\) takes an initrd/);
      return true;
    });
    const missing = join(tmp.dir, 'no-such-initrd');
    await assert.rejects(host.create({ image: kernel, initrd: missing }), (err: unknown) => {
      assert.match(String(err), /no-such-initrd/);
      return true;
    });
  });
});
