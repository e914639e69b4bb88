// Signals that arrive during set-up ioctls (a profiler's SIGPROF, a timer's)
// must not make VM creation fail: KVM_CREATE_VM gives up with EINTR while it
// locks the process's mappings, and is made again. Many mappings make that
// window wide, and a timer fires a handled signal at this thread all along.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { Kvm } from '../src/kvm/kvm.js';
import { GuestMemory } from '../src/kvm/memory.js';
import * as libc from '../src/sys/libc.js';

const SIGUSR2 = 12;

void describe('set-up ioctls under a storm of signals', () => {
  void it('VMs and their memory slots are created all the same', () => {
    // A handler (not "ignore"), so that the signal interrupts system calls.
    const handler = (): void => {};
    process.on('SIGUSR2', handler);
    const kvm = Kvm.open();
    // Many mappings: each KVM_CREATE_VM locks them all, one by one.
    const filler = Array.from({ length: 2000 }, (_, i) => new GuestMemory(4096 * (1 + (i % 2))));
    const timer = libc.threadTimerCreate(SIGUSR2);
    const vms: ReturnType<Kvm['createVm']>[] = [];
    try {
      libc.threadTimerSet(timer, 200_000);
      for (let i = 0; i < 200; i++) {
        const vm = kvm.createVm();
        vms.push(vm);
        vm.mapMemory(0, 0, filler[i]!);
      }
      assert.equal(vms.length, 200);
    } finally {
      libc.threadTimerDelete(timer);
      for (const vm of vms) vm.close();
      for (const m of filler) m.close();
      kvm.close();
      process.off('SIGUSR2', handler);
    }
  });
});
