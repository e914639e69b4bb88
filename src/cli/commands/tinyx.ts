// `lightvm tinyx`: minimal Linux images for one application (build), and a
// boot of one under QEMU's microvm (boot). Loaded only when the command runs.
import type { Command } from 'commander';

interface BuildCliOptions {
  output: string;
  json?: boolean;
}

export function registerTinyx(program: Command): void {
  const tinyx = program.command('tinyx').description('Tinyx: a minimal Linux VM built for one application');
  tinyx.command('build')
    .description('build a kernel and an initramfs holding one app, its libraries and BusyBox, and a cfg for them')
    .argument('<app>', 'a recipe (nginx, redis-server, busybox-httpd), a Debian package, or a path to an ELF program')
    .option('-o, --output <dir>', 'where the image goes', 'tinyx-out')
    .option('--json', 'print the result as JSON')
    .action(async (app: string, opts: BuildCliOptions) => {
      const { fail } = await import('../output.js');
      try {
        const { buildTinyx } = await import('../../tinyx/image.js');
        const { Bar, Presets } = await import('cli-progress');
        let bar: InstanceType<typeof Bar> | null = null;
        const r = await buildTinyx(app, {
          out: opts.output,
          log: (l) => process.stderr.write(`tinyx: ${l}\n`),
          progress: (done, total, what) => {
            if (!process.stderr.isTTY) return;
            bar ??= new Bar({ format: 'tinyx: building Linux [{bar}] {value}/{total} {what}', stream: process.stderr }, Presets.shades_classic);
            if (done === 1) bar.start(total, 0, { what });
            bar.setTotal(total);
            bar.update(done, { what: what.slice(-40) });
          },
        });
        (bar as InstanceType<typeof Bar> | null)?.stop();
        if (opts.json) {
          process.stdout.write(`${JSON.stringify({ ...r, recipe: r.recipe.name }, null, 2)}\n`);
          return;
        }
        const kib = (n: number): string => `${(n / 1024).toFixed(0)} KiB`;
        process.stdout.write(`${r.app}: kernel ${kib(r.kernelBytes)}${r.kernelCached ? ' (cached)' : ''}, initramfs ${kib(r.initramfsBytes)}, ` +
          `total ${kib(r.kernelBytes + r.initramfsBytes)}; ${r.packages.length} packages, ${Object.keys(r.libraries).length} libraries\n` +
          `  ${r.kernel}\n  ${r.initramfs}\n  ${r.cfg}\n`);
      } catch (err) {
        fail(err);
      }
    });
  tinyx.command('boot')
    .description("boot a built image under QEMU microvm (TCG) with its console on this terminal, until it powers off")
    .argument('<dir>', 'a directory written by tinyx build')
    .option('--tap <name>', 'an existing tap device for its virtio-mmio net')
    .option('--accel <accel>', 'tcg or kvm', 'tcg')
    .action(async (dir: string, opts: { tap?: string; accel: 'tcg' | 'kvm' }) => {
      const { fail } = await import('../output.js');
      try {
        const { readTinyxDir } = await import('../../tinyx/image.js');
        const { bootQemu } = await import('../../tinyx/qemu.js');
        const img = readTinyxDir(dir);
        const vm = bootQemu({ ...img, tap: opts.tap, accel: opts.accel });
        vm.child.stdout!.on('data', (s: string) => process.stdout.write(s));
        process.exitCode = (await vm.exited) ?? 1;
      } catch (err) {
        fail(err);
      }
    });
}
