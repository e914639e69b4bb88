#!/usr/bin/env node
// lightvmd: the daemon, in the foreground (same as `lightvm daemon`).
import { Command } from 'commander';
import { daemonCommand } from './commands/daemon.js';

await daemonCommand(new Command('lightvmd').description('LightVM daemon')).parseAsync(process.argv);
