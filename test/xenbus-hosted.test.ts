// The xenbus guest programs (guest/tests/xenbus.c, xenbus-evil.c) and the
// libOS client (guest/lib/xs.c), compiled unchanged as host processes
// (test/fixtures/xs-host), against the real xenstore module and a real
// `lightvm xenstored`. Their RAM is a file both processes map, so the ring
// the C code writes is the VM's guest memory the module reads; each
// hypercall and POLL is a message to this process, which hands it to the
// VM's device bus as the executor hands a VM's exit (the one part that is
// not the real thing: KVM's OUT exit and the executor's park and wake;
// test/xenbus.test.ts has those, on real VMs).
import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket } from 'node:net';
import { after, before, describe, it } from 'node:test';
import { GuestMemory } from '../src/kvm/memory.js';
import * as libc from '../src/sys/libc.js';
import { NOXS_PAGE_SIZE } from '../src/vmm/abi.js';
import { DevicePage, type DeviceEntry } from '../src/vmm/device-page.js';
import { DeviceBus, Next, type VmContext } from '../src/vmm/devices.js';
import { GuestFault, type VmExit } from '../src/vmm/exit.js';
import { GuestAccess } from '../src/vmm/guest-access.js';
import { setUpXenstore } from '../src/vmm/modules/xenstore.js';
import { XsClient } from '../src/xenstore/client.js';
import { startXenstored, type Xenstored } from '../src/xenstore/server.js';
import { ROOT, sleep, tempDir, waitFor, within } from './helpers.js';
import { XENBUS_CONSOLE, assertLeft, backend, setUpDomain, type Backend } from './xenbus-helpers.js';

const RAM = 2 * 1024 * 1024;
const FIXTURE = join(ROOT, 'test', 'fixtures', 'xs-host');

/** One guest program as a VM: its RAM and device page, its bus with the modules its devices give, its process. */
class HostedVm {
  readonly ram: GuestMemory;
  private readonly pageMem = new GuestMemory(NOXS_PAGE_SIZE);
  readonly bus = new DeviceBus();
  console = '';
  readonly exited: Promise<VmExit>;
  private readonly child: ChildProcess;
  private crashed: VmExit | undefined;
  private pending = Buffer.alloc(0);
  private serving = false;

  constructor(dir: string, readonly name: string, exe: string, devices: DeviceEntry[], cmdline = '', vmId = 1) {
    const ramFile = join(dir, `${name}.ram`);
    const pageFile = join(dir, `${name}.page`);
    writeFileSync(ramFile, Buffer.alloc(RAM));
    const fd = libc.open(ramFile, libc.O_RDWR);
    try {
      this.ram = new GuestMemory(RAM, libc.address(libc.mmap(RAM, libc.PROT_READ | libc.PROT_WRITE, libc.MAP_SHARED, fd)));
    } finally {
      libc.close(fd);
    }
    new DevicePage(this.pageMem).write({ vmId, name, devices });
    writeFileSync(pageFile, this.pageMem.bytes);
    const vm: VmContext = { vmId, guest: new GuestAccess(this.ram, this.pageMem), bus: this.bus, console: () => 0, hold: () => Next.Resume };
    setUpXenstore(vm, devices);
    this.child = spawn(exe, [], {
      env: { LVM_RAM: ramFile, LVM_RAM_BYTES: String(RAM), LVM_PAGE: pageFile, LVM_CMDLINE: cmdline },
      stdio: ['ignore', 'pipe', 'inherit', 'pipe'],
    });
    this.child.stdout!.on('data', (d: Buffer) => { this.console += d.toString(); });
    const ctl = this.child.stdio[3] as Socket;
    ctl.on('data', (d: Buffer) => {
      this.pending = Buffer.concat([this.pending, d]);
      void this.serve(ctl);
    });
    ctl.on('error', () => {});
    this.exited = new Promise((resolve) => {
      this.child.on('close', (code) => {
        this.bus.close();
        this.ram.close();
        this.pageMem.close();
        resolve(this.crashed ?? { kind: 'halt', status: code ?? -1 });
      });
    });
  }

  /** Its hypercalls and POLLs, one at a time, as its vCPU would exit. */
  private async serve(ctl: Socket): Promise<void> {
    if (this.serving) return;
    this.serving = true;
    try {
      while (!this.crashed && this.pending.length >= 2) {
        if (this.pending[0] === 0x48 /* H */) {
          const nr = this.pending[1]!;
          this.pending = this.pending.subarray(2);
          if (!this.fault(() => this.bus.call(nr, 0x500 + nr)(0))) return;
          ctl.write('k');
        } else if (this.pending[0] === 0x50 /* P */) {
          if (this.pending.length < 9) return;
          const timeoutNs = this.pending.readBigUInt64LE(1);
          this.pending = this.pending.subarray(9);
          const ready = await this.poll(timeoutNs);
          if (ready === undefined) return;
          const b = Buffer.alloc(8);
          b.writeBigUInt64LE(ready);
          ctl.write(b);
        } else {
          throw new Error(`${this.name}: a message ${this.pending[0]} on its control socket`);
        }
      }
    } finally {
      this.serving = false;
    }
  }

  /** Runs one exit's handling; a GuestFault (or one a watch left on the bus) ends the VM. False if it did. */
  private fault(f: () => void): boolean {
    try {
      if (this.bus.failure) throw this.bus.failure;
      f();
      return true;
    } catch (err) {
      if (!(err instanceof GuestFault)) throw err;
      this.crashed = { kind: 'crash', code: err.code, reason: err.message };
      this.child.kill('SIGKILL');
      return false;
    }
  }

  /** POLL: the ready set at once if any, else when the store's socket made one, or at the deadline. */
  private async poll(timeoutNs: bigint): Promise<bigint | undefined> {
    const deadline = Date.now() + Math.min(Number(timeoutNs / 1_000_000n), 30_000);
    for (;;) {
      let ready = 0n;
      if (!this.fault(() => {
        for (const w of this.bus.watches) w.onReady();
        ready = this.bus.ready();
      })) return undefined;
      if (ready !== 0n || Date.now() >= deadline) return ready;
      await sleep(1);
    }
  }
}

void describe('xenbus guest programs as host processes, on the real module and store', () => {
  const { dir, cleanup } = tempDir('xenbus-hosted');
  const socket = join(dir, 'xenstored.sock');
  const exe = (program: string): string => join(dir, program);
  let xsd: Xenstored;
  let dom0: XsClient;
  const running: HostedVm[] = [];
  const xenstore = (domid: number): DeviceEntry => ({ type: 'xenstore', id: 0, path: socket, domid });
  const start = (name: string, program: string, devices: DeviceEntry[], cmdline = ''): HostedVm => {
    const vm = new HostedVm(dir, name, exe(program), devices, cmdline);
    running.push(vm);
    return vm;
  };

  before(async () => {
    for (const program of ['xenbus', 'xenbus-evil']) {
      const r = spawnSync('gcc', ['-std=gnu11', '-O2', '-Wall', '-Wextra', '-Werror', `-I${FIXTURE}`, `-I${join(ROOT, 'guest', 'include')}`,
        join(ROOT, 'guest', 'lib', 'xs.c'), join(ROOT, 'guest', 'tests', `${program}.c`), join(FIXTURE, 'harness.c'), '-o', exe(program)],
      { encoding: 'utf8', timeout: 60_000 });
      assert.equal(r.status, 0, `gcc ${program}: ${r.stderr}`);
    }
    xsd = await startXenstored({ socket });
    dom0 = await XsClient.connect(socket);
  });
  after(async () => {
    try {
      for (const vm of running) (vm as unknown as { child: ChildProcess }).child.kill('SIGKILL');
      await Promise.all(running.map((vm) => within(vm.exited, 10_000, `${vm.name} to end`)));
      dom0.close();
    } finally {
      await xsd.close();
      cleanup();
    }
  });

  /** Boots the xenbus program as domid, up to where it waits for its poke. */
  async function bootClient(domid: number, name: string): Promise<{ vm: HostedVm; be: Backend }> {
    await setUpDomain(dom0, domid);
    const be = await backend(socket, domid);
    const vm = start(name, 'xenbus', [xenstore(domid)]);
    await waitFor(`${name} to wait for its poke`, () => vm.console.includes('xs: waiting for a poke\n'), 15_000);
    return { vm, be };
  }

  async function finishClient(domid: number, vm: HostedVm, be: Backend): Promise<void> {
    await dom0.write(`/local/domain/${domid}/data/poke`, 'now');
    assert.deepEqual(await within(vm.exited, 15_000, vm.name), { kind: 'halt', status: 0 }, vm.console);
    await within(be.connected, 5000, 'the backend to see Connected');
    assert.equal(vm.console, XENBUS_CONSOLE);
    await assertLeft(dom0, domid, be);
  }

  void it('a guest reads, writes, lists, is refused, watches, and walks a frontend to Connected', async () => {
    const { vm, be } = await bootClient(5, 'xb');
    await finishClient(5, vm, be);
  });

  void it('without a xenstore device there is no ring and no XENBUS_NOTIFY', async () => {
    const plain = start('plain', 'xenbus', []);
    assert.deepEqual(await within(plain.exited, 10_000, 'xenbus without a device'), { kind: 'halt', status: 2 });
    assert.equal(plain.console, 'xs: no xenstore device\n');
    const evil = start('notify', 'xenbus-evil', [], 'notify');
    const exit = await within(evil.exited, 10_000, 'xenbus-evil notify');
    assert.equal(exit.kind === 'crash' && exit.code, 'bad-hypercall', JSON.stringify(exit));
    assert.match(exit.kind === 'crash' ? exit.reason : '', /^unknown hypercall 7 \(port 0x507\): XENBUS_NOTIFY is not a call of this VM/);
  });

  void it('guests that break the ring rules are ended alone; another guest on the store goes on', async () => {
    const { vm: good, be } = await bootClient(20, 'xb-good');
    const connections = xsd.store.connections.size;
    const cases: [string, number, RegExp][] = [
      ['prod', 21, /^xenstore ring: req_prod 5000 is 5000 bytes ahead of req_cons 0, more than the ring's 1024$/],
      ['len', 22, /^xenstore ring: a request announces 100000 payload bytes \(at most 4096\)$/],
      ['cons', 23, /^xenstore ring: rsp_cons 12345 is not within the ring's 1024 bytes behind rsp_prod 0$/],
    ];
    for (const [mode, domid, reason] of cases) {
      await setUpDomain(dom0, domid);
      const evil = start(`evil-${mode}`, 'xenbus-evil', [xenstore(domid)], mode);
      const exit = await within(evil.exited, 10_000, `xenbus-evil ${mode}`);
      assert.equal(exit.kind === 'crash' && exit.code, 'xenstore', `${mode}: ${JSON.stringify(exit)} ${evil.console}`);
      assert.match(exit.kind === 'crash' ? exit.reason : '', reason);
      assert.equal(evil.console, `evil: ${mode}\n`);
    }
    await waitFor('the ended guests\' connections to close', () => xsd.store.connections.size === connections, 5000);
    await finishClient(20, good, be);
  });

  void it('a domain the store does not know ends its VM with the store\'s answer', async () => {
    const vm = start('unknown', 'xenbus', [xenstore(99)]);
    const exit = await within(vm.exited, 10_000, 'xenbus as domain 99');
    assert.equal(exit.kind === 'crash' && exit.code, 'xenstore', JSON.stringify(exit));
    assert.match(exit.kind === 'crash' ? exit.reason : '', /refused domain 99: ENOENT$/);
    assert.equal(vm.console, '');
  });
});
