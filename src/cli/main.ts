#!/usr/bin/env node
// The lightvm command line. Every command works through the library API
// (or, for daemon commands, through the daemon's REST API).
import { Command, CommanderError } from 'commander';
import { registerRun } from './commands/run.js';
import { registerBench } from './commands/bench.js';
import { registerBuild } from './commands/build.js';
import { registerCompletion } from './commands/completion.js';
import { registerDoctor } from './commands/doctor.js';
import { registerDaemon } from './commands/daemon.js';
import { registerTop } from './commands/top.js';
import { registerVmCommands } from './commands/vm.js';
import { fail } from './output.js';

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
registerCompletion(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) process.exit(err.exitCode);
  fail(err);
}
