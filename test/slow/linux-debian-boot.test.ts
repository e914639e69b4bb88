// Slow (npm run test:slow): Debian's own kernel (linux-image-amd64, fetched
// once with apt-get download into the kvm-box cache, as scripts/kvm-box.sh
// does) booted on LightVM through Host.create: the bzImage's kernel unpacked
// by the monitor, the probed CPUID and kernel options, COM1 as the console
// (earlyprintk=serial). It must reach its first console lines ("Linux
// version", its command line); then it runs for a window and the test says
// how far it got and when. Clocks: performance.now() in this process, from
// just before Host.create to each console line's arrival.
// On this host guests run slowly (KVM emulates them: ~2 M instructions/s),
// so this takes minutes; on hardware KVM the same kernel gets much further.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { Host } from '../../src/toolstack/host.js';

const CACHE = join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'lightvm', 'kvm-box');
/** Longest wait for the first console lines. */
const FIRST_LINES_MS = 15 * 60_000;
/** How long it runs on after them, to see how far it gets. */
const WINDOW_MS = Number(process.env.LIGHTVM_LINUX_WINDOW_MS ?? 300_000);

/** Debian's kernel in the kvm-box cache, fetched if missing; undefined where apt cannot fetch it. */
function debianKernel(): string | undefined {
  const boot = join(CACHE, 'k', 'boot');
  const find = (): string | undefined => {
    const name = existsSync(boot) ? readdirSync(boot).find((f) => f.startsWith('vmlinuz-')) : undefined;
    return name ? join(boot, name) : undefined;
  };
  if (existsSync(join(CACHE, 'kernel.ok')) && find()) return find();
  try {
    mkdirSync(CACHE, { recursive: true });
    const deps = execFileSync('apt-cache', ['depends', 'linux-image-amd64'], { encoding: 'utf8' });
    const pkg = /Depends: (linux-image-\d\S*)/.exec(deps)?.[1];
    if (!pkg) return undefined;
    rmSync(join(CACHE, 'k'), { recursive: true, force: true });
    execFileSync('apt-get', ['download', '-qq', pkg], { cwd: CACHE, stdio: 'ignore' });
    const deb = readdirSync(CACHE).find((f) => f.startsWith(`${pkg}_`) && f.endsWith('.deb'))!;
    execFileSync('dpkg-deb', ['-x', join(CACHE, deb), join(CACHE, 'k')]);
    rmSync(join(CACHE, deb));
    execFileSync('touch', [join(CACHE, 'kernel.ok')]);
    return find();
  } catch {
    return undefined;
  }
}

const kernel = existsSync('/dev/kvm') ? debianKernel() : undefined;

void describe('Debian\'s kernel on LightVM', { skip: !existsSync('/dev/kvm') ? 'no /dev/kvm' : kernel ? false : 'no Debian kernel (apt-get download failed)' }, () => {
  void it('reaches its first console lines on COM1', { timeout: FIRST_LINES_MS + WINDOW_MS + 120_000 }, async () => {
    const host = await Host.start({ executors: 1 });
    try {
      const t0 = performance.now();
      const vm = await host.create({ image: kernel!, memoryMiB: 256, cmdline: 'earlyprintk=serial,ttyS0,115200 console=ttyS0 nokaslr' });
      const started = performance.now() - t0;
      const lines: { at: number; text: string }[] = [];
      let partial = '';
      vm.on('console', (b: Uint8Array) => {
        partial += Buffer.from(b).toString('latin1');
        const parts = partial.split('\n');
        partial = parts.pop()!;
        for (const text of parts) lines.push({ at: performance.now() - t0, text: text.replace(/\r$/, '') });
      });
      const seen = (re: RegExp): { at: number; text: string } | undefined => lines.find((l) => re.test(l.text));
      const waitFor = async (re: RegExp, ms: number): Promise<{ at: number; text: string } | undefined> => {
        for (const end = performance.now() + ms; !seen(re) && vm.state !== 'exited' && performance.now() < end;) await new Promise((r) => setTimeout(r, 200));
        return seen(re);
      };
      const banner = await waitFor(/Linux version \d/, FIRST_LINES_MS);
      const tail = (): string => lines.slice(-15).map((l) => l.text).join('\n');
      assert.ok(banner, `no "Linux version" line within ${FIRST_LINES_MS / 1000} s (state ${vm.state}, exit ${JSON.stringify(vm.exitInfo)}):\n${tail()}`);
      const cmdline = await waitFor(/Command line: .*console=ttyS0/, 60_000);
      assert.ok(cmdline, `no command line after the banner:\n${tail()}`);
      // How far it gets in the window (or until it ends).
      const windowEnd = performance.now() + WINDOW_MS;
      while (vm.state !== 'exited' && performance.now() < windowEnd) await new Promise((r) => setTimeout(r, 500));
      const last = lines.at(-1)!;
      const exit = vm.state === 'exited' ? vm.exitInfo : await vm.destroy();
      process.stderr.write(`  ${kernel}\n  started (vCPU thread, kernel unpacked, loaded) ${started.toFixed(0)} ms after Host.create; ` +
        `"Linux version" at ${(banner.at / 1000).toFixed(1)} s, its command line at ${(cmdline.at / 1000).toFixed(1)} s; ` +
        `${lines.length} lines in ${((performance.now() - t0) / 1000).toFixed(0)} s, the last at ${(last.at / 1000).toFixed(1)} s: ${last.text}\n` +
        `  ended: ${JSON.stringify(exit)}\n  its last lines:\n${lines.slice(-40).map((l) => `    ${l.text}`).join('\n')}\n`);
      assert.ok(exit);
    } finally {
      await host.close();
    }
  });
});
