// Slow (npm run test:slow): the Tinyx images of the recipes, kernel and all,
// built as `lightvm tinyx build` builds them (the kernel's first build takes
// tens of minutes on this host; then it is cached), booted under QEMU's
// microvm with TCG, each answering on a virtio-mmio net device on a tap.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { buildTinyx, defaultCache, readTinyxDir } from '../../src/tinyx/image.js';
import { bootQemu } from '../../src/tinyx/qemu.js';
import { RECIPES } from '../../src/tinyx/recipes.js';
import { tempDir } from '../helpers.js';
import { prefetch } from '../tinyx-helpers.js';

const tmp = tempDir('tinyx-boot');
after(() => tmp.cleanup());
const GUEST = '10.0.2.15';

/** Sends the recipe's request and resolves with the answer, or rejects. */
function ask(port: number, send: string, timeoutMs = 2000): Promise<string> {
  return new Promise((resolve, reject) => {
    let got = '';
    const s = connect({ host: GUEST, port });
    const t = setTimeout(() => s.destroy(new Error('no answer')), timeoutMs);
    s.on('connect', () => s.write(send));
    s.on('data', (b) => {
      got += b.toString('latin1');
      if (got.includes('\n') && port !== 80) s.end();
    });
    s.on('error', (e) => {
      clearTimeout(t);
      reject(e);
    });
    s.on('close', () => {
      clearTimeout(t);
      resolve(got);
    });
  });
}

void describe('Tinyx images boot under QEMU microvm (TCG) and serve', () => {
  for (const name of ['busybox-httpd', 'nginx', 'redis-server']) {
    void it(`${name}: built, booted, answers on its vif`, { timeout: 3 * 60 * 60 * 1000 }, async () => {
      const r = RECIPES[name]!;
      prefetch(defaultCache(), ['busybox-static', 'linux-source-6.1', ...r.packages]);
      const out = join(tmp.dir, name);
      const t0 = performance.now();
      const img = await buildTinyx(name, { out, log: (l) => process.stderr.write(`  ${l}\n`) });
      const built = performance.now() - t0;
      const tap = `tx${name.slice(0, 6).replace(/-/g, '')}`;
      execFileSync('sh', ['-c', `ip tuntap add ${tap} mode tap && ip addr add 10.0.2.2/24 dev ${tap} && ip link set ${tap} up`]);
      const vm = bootQemu({ ...readTinyxDir(out), tap });
      try {
        const started = await vm.waitFor(`tinyx: starting ${name}`, 120_000);
        let answer = '';
        let answered = 0;
        for (const end = performance.now() + 60_000; performance.now() < end;) {
          answer = await ask(r.check.port, r.check.send).catch(() => '');
          if (answer.includes(r.check.expect)) {
            answered = performance.now();
            break;
          }
          await new Promise((res) => setTimeout(res, 200));
        }
        assert.ok(answer.includes(r.check.expect), `${name} answered "${answer.slice(0, 200)}"; console:\n${vm.console().slice(-2000)}`);
        process.stderr.write(`  ${name}: kernel ${img.kernelBytes} B${img.kernelCached ? ' (cached)' : ''}, initramfs ${img.initramfsBytes} B, ` +
          `built in ${(built / 1000).toFixed(1)} s, init ran at ${(started / 1000).toFixed(2)} s, first answer at ${((answered - t0 - built) / 1000).toFixed(2)} s after QEMU started\n`);
      } finally {
        await vm.stop();
        execFileSync('ip', ['link', 'del', tap]);
      }
    });
  }
});
