// Destroying a VM gives back everything it held. Many create/destroy cycles
// through one Host must leave this process's open descriptors and memory
// mappings where they were (see helpers.ts for what is compared, and why V8's
// own heap pages are set aside).
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { Host } from '../src/index.js';
import { assertSameResources, liveVms, openFds, resources, waitFor, within } from './helpers.js';
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

void describe('create/destroy soak', () => {
  let host: Host;
  before(async () => {
    host = await Host.start({ executors: 1 });
  });
  after(async () => {
    await host.close();
  });

  async function noop(): Promise<void> {
    const vm = await host.create({ image: 'noop', memoryMiB: 5 });
    assert.deepEqual(await vm.exited, { kind: 'halt', status: 0 });
    // Destroying a VM that has already ended changes nothing.
    assert.deepEqual(await vm.destroy(), { kind: 'halt', status: 0 });
  }

  void it('1,000 noop VMs, four in flight: descriptors and mappings back to their start', async () => {
    // Warm up: the first VMs initialize caches (CPUID, entry registers, the image cache, V8's code).
    for (let i = 0; i < 20; i++) await noop();
    for (let i = 0; i < 5; i++) await Promise.all([noop(), noop(), noop(), noop()]);
    const start = resources();
    for (let i = 0; i < 250; i++) await Promise.all([noop(), noop(), noop(), noop()]);
    assert.equal(liveVms(host), 0);
    assertSameResources(start, resources(), 'after 1,000 create/destroy cycles');
  });

  void it('50 spinning VMs destroyed while running: back to the start', async () => {
    const spinAndDestroy = async (): Promise<void> => {
      const vm = await host.create({ image: 'spin', memoryMiB: 2 });
      await waitFor('spin to run', () => vm.consoleText() === 'spinning\n');
      assert.deepEqual(await within(vm.destroy(), 1000, 'destroy of a spinning VM'), { kind: 'destroyed' });
    };
    for (let i = 0; i < 3; i++) await spinAndDestroy();
    const start = resources();
    for (let i = 0; i < 50; i++) await spinAndDestroy();
    assertSameResources(start, resources(), 'after 50 spinning VMs destroyed');
  });

  void it('a pool of prepared shells is given back when the pool is emptied', async () => {
    // The first pool starts a preparer thread: its stack and malloc arena
    // stay mapped once it ends (glibc keeps arenas). Measure the second pool.
    const base = openFds().length;
    host.setPool(3, 4);
    await waitFor('four shells to be prepared', () => openFds().length >= base + 8);
    host.setPool(3, 0);
    await waitFor('the shells to be closed', () => openFds().length === base);
    await sleep(200);
    const start = resources();
    host.setPool(3, 4);
    // Each shell holds a VM and a vCPU descriptor.
    await waitFor('four shells to be prepared', () => openFds().length >= start.fds.length + 8);
    host.setPool(3, 0);
    await waitFor('the shells to be closed', () => openFds().length === start.fds.length);
    assertSameResources(start, resources(), 'after a pool of 4 was emptied');
  });
});
