#!/usr/bin/env node
// The lightvm command line. Every command works through the library API
// (or, for daemon commands, through the daemon's REST API).
//
// The package's bin is lightvm.cjs, which takes a plain `lightvm run`
// itself (see there) and hands everything else here. A `run` that reaches
// this file goes through commander (its help, its messages) or, when main.js
// is started directly, the plain parser first (run-args.ts).
//
// npm run build bundles the run command and all it imports into one file
// (dist/cli/run.bundle.cjs, esbuild, packages left out): one module to load
// instead of ~40 saves ~30 ms of CPU per run here. A bundle older than the
// compiled command it was made from is not used.
import { statSync } from 'node:fs';

function bundled(): boolean {
  try {
    return statSync(new URL('./run.bundle.cjs', import.meta.url)).mtimeMs >= statSync(new URL('./commands/run.js', import.meta.url)).mtimeMs;
  } catch {
    return false;
  }
}

const runModule = process.argv[2] === 'run'
  ? (await import(bundled() ? './run.bundle.cjs' : './commands/run.js')) as typeof import('./commands/run.js')
  : undefined;
const direct = runModule?.parseRunArgs(process.argv.slice(3));
if (runModule && direct) {
  await runModule.runCommand(direct.image, direct.opts);
} else {
  await commandLine();
}

async function commandLine(): Promise<void> {
  const [{ Command, CommanderError }, { registerRun }, { registerBench }, { registerBuild }, { registerCompletion }, { registerDoctor },
    { registerDaemon }, { registerTop }, { registerVmCommands }, { registerTinyx }, { registerImage }, { registerXenstored }, { fail, intOption }] = await Promise.all([
    import('commander'), import('./commands/run.js'), import('./commands/bench.js'), import('./commands/build.js'),
    import('./commands/completion.js'), import('./commands/doctor.js'), import('./commands/daemon.js'), import('./commands/top.js'),
    import('./commands/vm.js'), import('./commands/tinyx.js'), import('./commands/image.js'), import('./commands/xenstored.js'),
    import('./output.js'),
  ]);
  const program = new Command('lightvm')
    .description('Lightweight virtual machines on Linux KVM')
    .version('0.1.0')
    .showHelpAfterError()
    .exitOverride();

  registerRun(program);
  registerVmCommands(program);
  registerTop(program);
  registerDaemon(program);
  registerBench(program);
  registerBuild(program);
  registerDoctor(program);
  registerTinyx(program);
  registerCompletion(program);
  registerImage(program);
  registerXenstored(program, intOption);

  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    fail(err);
  }
}
