// Shell completion: the script is generated from the CLI's own command tree,
// sourced into a real bash and asked what completes at the cursor, including
// the names of the VMs a real daemon runs.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { chmodSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { CLI, ok, startTestDaemon, type TestDaemon } from './daemon-helpers.js';
import { tempDir } from './helpers.js';

const tmp = tempDir('completion');
const bin = join(tmp.dir, 'lightvm');
const script = (shell: string): string => execFileSync(process.execPath, [CLI, 'completion', shell], { encoding: 'utf8' });
const has = (cmd: string): boolean => {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
};

/** What bash completes for the words of a command line, the last being the one at the cursor. */
function complete(words: string[]): string[] {
  const out = execFileSync('bash', ['-c',
    `source ${join(tmp.dir, 'c.bash')}; COMP_WORDS=("$@"); COMP_CWORD=$(($# - 1)); _lightvm_complete; printf '%s\\n' "\${COMPREPLY[@]}"`,
    '_', 'lightvm', ...words], { encoding: 'utf8', env: { ...process.env, PATH: `${tmp.dir}:${process.env.PATH}` }, cwd: tmp.dir });
  return out.split('\n').filter(Boolean).sort();
}

void describe('shell completion', () => {
  let d: TestDaemon;
  before(async () => {
    // the script calls the command the user typed; here that is lightvm on PATH
    writeFileSync(bin, `#!/bin/sh\nexec ${process.execPath} ${CLI} "$@"\n`);
    chmodSync(bin, 0o755);
    writeFileSync(join(tmp.dir, 'c.bash'), script('bash'));
    writeFileSync(join(tmp.dir, 'web.cfg'), '');
    d = await startTestDaemon({ prefix: 'compl' });
  });
  after(async () => {
    await d?.stop();
    tmp.cleanup();
  });

  void it('bash: commands, subcommands, options and their values, built-in images, files, shells', () => {
    assert.deepEqual(complete(['de']), ['destroy']);
    assert.deepEqual(complete(['migration', '']), ['listen', 'stop']);
    assert.deepEqual(complete(['run', '--mem']), ['--memory']);
    assert.deepEqual(complete(['run', '-m', '64', 'he']), ['hello']);
    assert.deepEqual(complete(['create', 'we']), ['web.cfg']);
    assert.deepEqual(complete(['completion', '']), ['bash', 'fish', 'zsh']);
    // every command the CLI has is offered at the top, and nothing else
    const top = complete(['']);
    const help = execFileSync(process.execPath, [CLI, '--help'], { encoding: 'utf8' });
    const listed = [...help.matchAll(/^ {2}([a-z][a-z-]*)\b/gm)].map((m) => m[1]!).filter((c) => c !== 'help');
    assert.deepEqual(top, [...listed].sort());
  });

  void it("bash: a VM argument completes to the daemon's VM names, on the socket the line names", async () => {
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'web-1', wait: 'booted' }, 201);
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'web-2', wait: 'booted' }, 201);
    assert.deepEqual(complete(['destroy', '--socket', d.socket, 'web']), ['web-1', 'web-2']);
    assert.deepEqual(complete(['save', '--socket', d.socket, 'web-1', 'we']), ['web.cfg'], 'the second argument is a file');
    assert.deepEqual(complete(['pause', '--socket', join(tmp.dir, 'none.sock'), '']), [], 'no daemon: nothing, and no error');
  });

  void it('zsh and fish: the scripts parse (where those shells are installed)', (t) => {
    for (const shell of ['zsh', 'fish']) {
      if (!has(shell)) {
        t.diagnostic(`${shell} is not installed: its script is not checked`);
        continue;
      }
      writeFileSync(join(tmp.dir, `c.${shell}`), script(shell));
      execFileSync(shell, ['-n', join(tmp.dir, `c.${shell}`)]);
    }
    assert.match(script('zsh'), /bashcompinit/);
    assert.match(script('fish'), /^complete -c lightvm -n '__fish_seen_subcommand_from destroy' -a /m);
  });
});
