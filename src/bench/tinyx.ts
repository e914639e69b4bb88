// bench tinyx: a Tinyx image's size, the least RAM with which it serves, and
// the time from QEMU's start to the first answered request, under QEMU's
// microvm with TCG (this host's KVM emulates every instruction; see README).
// The request reaches the guest through QEMU's user network (a forwarded
// port), so the benchmark needs no tap and no root.
import { execFileSync } from 'node:child_process';
import { connect, createServer } from 'node:net';
import { buildTinyx, readTinyxDir } from '../tinyx/image.js';
import { bootQemu } from '../tinyx/qemu.js';
import { RECIPES, type Check } from '../tinyx/recipes.js';

export interface TinyxBench {
  app: string;
  tinyx_image_bytes: { kernel: number; initramfs: number; total: number };
  tinyx_ram_mib: number | null;
  tinyx_first_answer_ms: number | null;
  debian_image_bytes: { installed_closure: number; interval: string } | null;
  debian_ram_mib: null;
  debian_first_answer_ms: null;
  debian_note: string;
  served: boolean;
  interval: string;
  targets: { image_total_le_4mib: boolean; ram_le_32mib: boolean | null };
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

function ask(port: number, c: Check): Promise<boolean> {
  return new Promise((resolve) => {
    let got = '';
    const s = connect({ host: '127.0.0.1', port });
    const t = setTimeout(() => s.destroy(), 1500);
    s.on('connect', () => s.write(c.send));
    s.on('data', (b) => {
      got += b.toString('latin1');
      if (got.includes(c.expect)) s.destroy();
    });
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(t);
      resolve(got.includes(c.expect));
    });
  });
}

/** Boots with `memoryMiB` and returns ms from QEMU's spawn to the first right answer, or null within the time allowed. */
async function firstAnswer(dir: string, memoryMiB: number, check: Check, timeoutMs: number): Promise<number | null> {
  const img = readTinyxDir(dir);
  const port = await freePort();
  const vm = bootQemu({ ...img, memoryMiB, userNet: { hostPort: port, guestPort: check.port } });
  const t0 = performance.now();
  try {
    while (performance.now() - t0 < timeoutMs) {
      if (vm.child.exitCode !== null) return null;
      if (await ask(port, check)) return performance.now() - t0;
      await new Promise((r) => setTimeout(r, 100));
    }
    return null;
  } finally {
    await vm.stop();
  }
}

/** Sum of Installed-Size (KiB) over a package and everything it Depends on, recursively, as apt would install it. */
function installedClosureBytes(pkg: string): number {
  const out = execFileSync('apt-cache', ['depends', '--recurse', '--important', '--no-suggests', '--no-recommends', pkg], { encoding: 'utf8', maxBuffer: 64 << 20 });
  const names = [...new Set(out.split('\n').filter((l) => /^[a-z0-9]/.test(l)).map((l) => l.trim()))];
  const show = execFileSync('apt-cache', ['show', '--no-all-versions', ...names], { encoding: 'utf8', maxBuffer: 64 << 20 });
  return [...show.matchAll(/^Installed-Size: (\d+)$/gm)].reduce((a, m) => a + Number(m[1]) * 1024, 0);
}

export async function benchTinyx(opts: { app: string; out: string; onProgress?: (done: number, total: number, phase: string) => void }): Promise<TinyxBench> {
  const recipe = RECIPES[opts.app];
  if (!recipe) throw new Error(`bench tinyx: no recipe "${opts.app}" (one of ${Object.keys(RECIPES).join(', ')})`);
  const img = await buildTinyx(opts.app, { out: opts.out, progress: (d, t) => opts.onProgress?.(d, t, 'building Linux') });
  const { kernelBytes: kernel, initramfsBytes: initramfs } = img;
  opts.onProgress?.(0, 6, 'first answer');
  const first = await firstAnswer(opts.out, 64, recipe.check, 120_000);
  // the least RAM that still serves: halve the range between a size that fails and one that works
  let lo = 4;
  let hi = first === null ? null : 64;
  for (let i = 0; hi !== null && hi - lo > 1 && i < 5; i++) {
    opts.onProgress?.(i + 1, 6, 'least RAM');
    const mid = Math.floor((lo + hi) / 2);
    if ((await firstAnswer(opts.out, mid, recipe.check, 60_000)) !== null) hi = mid;
    else lo = mid;
  }
  const deb = recipe.packages.length
    ? { installed_closure: installedClosureBytes(recipe.packages[0]!) + installedClosureBytes('linux-image-cloud-amd64'),
      interval: `Installed-Size of ${recipe.packages[0]} and linux-image-cloud-amd64 with everything they Depend on (apt-cache), not booted` }
    : null;
  const total = kernel + initramfs;
  return {
    app: opts.app,
    tinyx_image_bytes: { kernel, initramfs, total },
    tinyx_ram_mib: hi,
    tinyx_first_answer_ms: first === null ? null : Math.round(first),
    debian_image_bytes: deb,
    debian_ram_mib: null,
    debian_first_answer_ms: null,
    debian_note: 'a booted Debian VM (cloud kernel, its initramfs with the virtio modules, a debootstrap root with the app) is not built yet: only its installed size is given',
    served: first !== null,
    interval: 'first_answer: from spawning qemu-system-x86_64 (-M microvm, TCG, 64 MiB) to the first connection through its forwarded port that gets the app\'s answer; ram: least guest memory (MiB, found by halving 4-64 MiB five times, so to within 2 MiB) that still answers within 60 s',
    targets: { image_total_le_4mib: total <= 4 * 1024 * 1024, ram_le_32mib: hi === null ? null : hi <= 32 },
  };
}
