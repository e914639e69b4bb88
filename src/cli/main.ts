#!/usr/bin/env node
// The lightvm command line. Every command works through the library API
// (or, for daemon commands, through the daemon's REST API).
//
// `lightvm run` with plain arguments goes straight to its command, without
// commander (see run-args.ts): a process that runs one VM loads only what
// runs it. Everything else, and any `run` it does not take, goes through
// commander.
import { parseRunArgs } from './commands/run-args.js';

const direct = process.argv[2] === 'run' ? parseRunArgs(process.argv.slice(3)) : undefined;
if (direct) {
  const { runCommand } = await import('./commands/run.js');
  await runCommand(direct.image, direct.opts);
} else {
  await commandLine();
}

async function commandLine(): Promise<void> {
  const [{ Command, CommanderError }, { registerRun }, { registerBench }, { registerBuild }, { registerCompletion }, { registerDoctor },
    { registerDaemon }, { registerTop }, { registerVmCommands }, { registerTinyx }, { fail }] = await Promise.all([
    import('commander'), import('./commands/run.js'), import('./commands/bench.js'), import('./commands/build.js'),
    import('./commands/completion.js'), import('./commands/doctor.js'), import('./commands/daemon.js'), import('./commands/top.js'),
    import('./commands/vm.js'), import('./commands/tinyx.js'), import('./output.js'),
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

  try {
    await program.parseAsync(process.argv);
  } catch (err) {
    if (err instanceof CommanderError) process.exit(err.exitCode);
    fail(err);
  }
}
