// `lightvm image build`: a unikernel as an OCI image archive for podman load,
// docker load and ctr image import (run it with lightvm-oci or the shim).
import { writeFileSync } from 'node:fs';
import type { Command } from 'commander';

interface ImageBuildOptions {
  tag: string;
  output: string;
  cmd?: string;
}

export function registerImage(program: Command): void {
  const image = program.command('image').description('container images holding a unikernel');
  image.command('build')
    .description('write an OCI image archive (OCI layout and docker-archive manifest) with the unikernel at /unikernel.elf as its entrypoint')
    .argument('<image>', 'path to an ELF image, or a built-in')
    .requiredOption('-t, --tag <name:tag>', 'image name and tag, e.g. lightvm/hello:1')
    .requiredOption('-o, --output <file>', 'archive to write (.tar)')
    .option('--cmd <args>', 'default guest command line (the image\'s CMD), split at spaces')
    .action(async (src: string, opts: ImageBuildOptions) => {
      const { fail } = await import('../output.js');
      try {
        const { resolveImage } = await import('../../toolstack/images.js');
        const { buildImage } = await import('../../container/oci-image.js');
        const r = buildImage({ kernel: resolveImage(src), tag: opts.tag, cmd: opts.cmd?.split(' ').filter(Boolean) });
        writeFileSync(opts.output, r.archive);
        process.stdout.write(`wrote ${opts.output}: ${r.ref} (${r.manifestDigest}, ${r.archive.length} bytes)\n`);
      } catch (err) {
        fail(err);
      }
    });
}
