import { Argument, type Command } from 'commander';
import { completionScript, SHELLS, type Shell } from '../completion.js';

export function registerCompletion(program: Command): void {
  program.command('completion')
    .description('print a shell completion script: source <(lightvm completion bash), or save it where your shell loads completions')
    .addArgument(new Argument('[shell]', 'the shell').choices(SHELLS).default('bash'))
    .action((shell: Shell) => {
      process.stdout.write(completionScript(program, shell));
    });
}
