#!/usr/bin/env node
// The `lightvm` command's entry (package.json's bin). One `lightvm run` is
// what a person at a shell pays for a VM, so that path starts as little as
// it can: a CommonJS entry does not start the ESM loader, and the run
// command's bundle (run.bundle.cjs, made by npm run build) is compiled from
// V8's code cache when one is beside it (Node 20 has no
// module.enableCompileCache). Every other command, and a `run` whose
// arguments the plain parser does not take, goes to main.js as before.
import { readFileSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import { join } from 'node:path';
import { Script, constants } from 'node:vm';
import type * as RunCommand from './commands/run.js';

type RunModule = Pick<typeof RunCommand, 'parseRunArgs' | 'runCommand'>;

const BUNDLE = join(__dirname, 'run.bundle.cjs');
// V8 refuses a cache made by another V8 (or other flags): one file per V8 version.
const CACHE = `${BUNDLE}.${process.versions.v8}.cache`;

/** The bundle as a CommonJS module, or undefined if it is missing or older than what it was made from. */
function loadRunBundle(): RunModule | undefined {
  let source: string;
  try {
    if (statSync(BUNDLE).mtimeMs < statSync(join(__dirname, 'commands', 'run.js')).mtimeMs) return undefined;
    source = readFileSync(BUNDLE, 'utf8');
  } catch {
    return undefined;
  }
  let cachedData: Buffer | undefined;
  try {
    cachedData = readFileSync(CACHE);
  } catch {}
  // The wrapper is Node's own CommonJS wrapper; the bundle sees the globals a required file sees.
  const script = new Script(`(function (exports, require, module, __filename, __dirname) {${source}\n})`, {
    filename: BUNDLE, cachedData, importModuleDynamically: constants.USE_MAIN_CONTEXT_DEFAULT_LOADER,
  });
  // A module like a required one: in require.cache, so what inspects the process sees it.
  const mod = new Module(BUNDLE, module);
  mod.filename = BUNDLE;
  require.cache[BUNDLE] = mod;
  (script.runInThisContext() as (...a: unknown[]) => void)(mod.exports, createRequire(BUNDLE), mod, BUNDLE, __dirname);
  mod.loaded = true;
  if (cachedData === undefined || script.cachedDataRejected) {
    // Made once, at exit, so that it holds the functions the run compiled too. Beside the
    // bundle only: bytecode is code, a cache in a shared directory would be a way in.
    process.once('exit', () => {
      const tmp = `${CACHE}.${process.pid}`;
      try {
        writeFileSync(tmp, script.createCachedData(), { mode: 0o644 });
        renameSync(tmp, CACHE);
      } catch {
        rmSync(tmp, { force: true });
      }
    });
  }
  return mod.exports as RunModule;
}

function main(): void {
  const run = process.argv[2] === 'run' ? loadRunBundle() : undefined;
  const direct = run?.parseRunArgs(process.argv.slice(3));
  if (run && direct) {
    // Once the run is over, exit at once: a natural exit tears V8's heap
    // down first (~2-3 ms of CPU here). Nothing is left to write: stdout
    // and stderr are synchronous on Linux, and the exit code is set.
    void run.runCommand(direct.image, direct.opts).then(() => process.exit());
    return;
  }
  void import('./main.js');
}

main();
