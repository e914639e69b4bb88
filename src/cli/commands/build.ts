// `lightvm build`: a user's C program into a unikernel image. Its work is
// loaded only when the command runs.
import type { Command } from 'commander';

interface BuildCliOptions {
  output?: string;
  net?: boolean;
  cflag: string[];
  verbose?: boolean;
}

export function registerBuild(program: Command): void {
  program
    .command('build')
    .description('compile C sources into a unikernel image against the libOS shipped with LightVM')
    .argument('<sources...>', 'C files (also .S, .o, .a)')
    .option('-o, --output <file>', 'image to write (default: the first source with .elf)')
    .option('--net', 'link the TCP/IP stack (lightvm/net.h)')
    .option('--cflag <flag>', 'one more compiler flag, after ours (repeatable)', (f: string, all: string[]) => [...all, f], [] as string[])
    .option('-v, --verbose', 'print the compiler command')
    .action(async (sources: string[], opts: BuildCliOptions) => {
      const { fail } = await import('../output.js');
      try {
        const { buildUnikernel } = await import('../../sdk/build.js');
        const r = await buildUnikernel({
          sources, output: opts.output, net: opts.net, cflags: opts.cflag,
          onCommand: opts.verbose ? (c) => process.stderr.write(`${c.join(' ')}\n`) : undefined,
        });
        process.stdout.write(`built ${r.output} (${r.bytes} bytes, entry 0x${r.entry.toString(16)})\n`);
      } catch (err) {
        fail(err);
      }
    });
}
