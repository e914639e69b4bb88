// `lightvm run` pays only for what it runs: the daemon (fastify, pino,
// ajv), the HTTP stack, the benchmarks and the charts stay unloaded. A
// resolve hook records every ES module the main thread resolves,
// require.cache every CommonJS module (the bin and the run bundle are
// CommonJS), and process.moduleLoadList every built-in loaded by the end.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { after, describe, it } from 'node:test';
import { ROOT, tempDir } from './helpers.js';

// The command as a user runs it: the package's bin.
const CLI = join(ROOT, (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin.lightvm!);

const HOOKS = `let port;
export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, next) {
  const r = await next(specifier, context);
  port.postMessage(r.url);
  return r;
}
`;

const PRELOAD = (hooks: string, out: string): string => `import { createRequire, register } from 'node:module';
import { pathToFileURL } from 'node:url';
import { writeFileSync } from 'node:fs';
import { MessageChannel, receiveMessageOnPort } from 'node:worker_threads';
const { port1, port2 } = new MessageChannel();
register(${JSON.stringify(hooks)}, { data: { port: port2 }, transferList: [port2] });
port1.unref();
const urls = new Set();
process.on('exit', () => {
  for (let m = receiveMessageOnPort(port1); m; m = receiveMessageOnPort(port1)) urls.add(m.message);
  for (const f of Object.keys(createRequire(import.meta.url).cache)) urls.add(pathToFileURL(f).href);
  const builtins = process.moduleLoadList.filter((x) => x.startsWith('NativeModule ')).map((x) => x.slice(13));
  writeFileSync(${JSON.stringify(out)}, JSON.stringify({ urls: [...urls], builtins }));
});
`;

interface Loaded {
  urls: string[];
  builtins: string[];
}

let traces = 0;

function traced(dir: string, args: string[]): Promise<{ code: number | null; loaded: Loaded; stderr: string }> {
  const hooks = join(dir, 'hooks.mjs');
  const preload = join(dir, 'preload.mjs');
  const out = join(dir, `loaded-${++traces}.json`);
  writeFileSync(hooks, HOOKS);
  writeFileSync(preload, PRELOAD(pathToFileURL(hooks).href, out));
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', pathToFileURL(preload).href, CLI, ...args], { timeout: 30_000 }, (err, _stdout, stderr) => {
      if (!existsSync(out)) {
        reject(new Error(`lightvm ${args.join(' ')} wrote no module list: ${stderr}`));
        return;
      }
      const code = err ? (typeof err.code === 'number' ? err.code : null) : 0;
      resolve({ code, loaded: JSON.parse(readFileSync(out, 'utf8')) as Loaded, stderr });
    });
  });
}

/** Modules the run path must not load, and why they are not allowed there. */
const FORBIDDEN_URLS: [RegExp, string][] = [
  [/\/dist\/daemon\//, "the daemon's own modules"],
  [/\/dist\/bench\//, 'the benchmarks'],
  [/\/dist\/doctor\//, 'doctor'],
  // The VM runs on the main thread: no executor thread (a second V8 isolate) is started.
  [/\/dist\/vmm\/(executor-worker|preparer)\.js$/, 'an executor or preparer thread'],
  [/\/node_modules\/(fastify|@fastify|pino|ajv|vega|vega-lite|cli-progress)\//, 'the daemon, chart or progress bar packages'],
  // Plain arguments are parsed without commander (run-args.ts).
  [/\/node_modules\/commander\//, 'commander'],
  // Its prebuilt binary is loaded without it (src/sys/koffi.ts): the entry reads Node's ELF headers twice.
  [/\/node_modules\/koffi\//, "koffi's entry"],
];
const FORBIDDEN_BUILTINS = ['http', 'https', '_http_server', '_http_client', 'http2'];
/** Built-ins a run does not use, loaded at their first use elsewhere (src/sys/builtins.ts): ~1-5 ms each. */
const UNUSED_BUILTINS = ['crypto', 'perf_hooks'];

void describe('lightvm run loads only what it runs', () => {
  const { dir, cleanup } = tempDir('run-modules');
  after(cleanup);

  void it('run noop: no daemon, HTTP, benchmark, chart or worker module is loaded, and the hook saw the VM run on the main thread', async () => {
    assert.ok(existsSync(CLI), `${CLI} is missing: run npm run build first`);
    const { code, loaded, stderr } = await traced(dir, ['run', 'noop']);
    assert.equal(code, 0, stderr);
    // npm run build bundles the run command (dist/cli/run.bundle.cjs): what
    // is in it is named by esbuild's comments, one per module.
    const bundle = loaded.urls.find((u) => u.endsWith('/dist/cli/run.bundle.cjs'));
    assert.ok(bundle, `lightvm run did not load the run bundle: ${loaded.urls.join(' ')}`);
    const inBundle = [...readFileSync(fileURLToPath(bundle), 'utf8').matchAll(/^\/\/ (dist\/\S+\.js)$/gm)].map((m) => `file:///bundled/${m[1]}`);
    const modules = [...loaded.urls, ...inBundle];
    // The hook works: it saw the modules that run a VM.
    for (const m of ['/dist/cli/commands/run.js', '/dist/toolstack/host.js', '/dist/vmm/machine.js']) {
      assert.ok(modules.some((u) => u.endsWith(m)), `the resolve hook did not see ${m}: ${modules.join(' ')}`);
    }
    for (const [re, what] of FORBIDDEN_URLS) {
      const bad = modules.filter((u) => re.test(u));
      assert.deepEqual(bad, [], `lightvm run loaded ${what}`);
    }
    assert.deepEqual(loaded.builtins.filter((b) => FORBIDDEN_BUILTINS.includes(b)), [], 'lightvm run loaded the HTTP stack');
    assert.deepEqual(loaded.builtins.filter((b) => UNUSED_BUILTINS.includes(b)), [], 'lightvm run loaded a built-in it does not use');
  });

  void it('run with --help, or an argument it does not take, goes to commander: its usual help and messages', async () => {
    const help = await traced(dir, ['run', '--help']);
    assert.equal(help.code, 0);
    assert.ok(help.loaded.urls.some((u) => u.includes('/node_modules/commander/')), 'run --help did not use commander');
    const bad = await traced(dir, ['run', 'noop', '--nosuch']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /unknown option '--nosuch'/);
    const memory = await traced(dir, ['run', 'noop', '-m', '1']);
    assert.equal(memory.code, 1);
    assert.match(memory.stderr, /^lightvm: --memory: "1" is not a whole number from 2 to/m);
  });

  void it('the same hook does see the daemon and HTTP modules on a command that uses them', async () => {
    // list with no daemon fails, but only after loading the API client.
    const { loaded } = await traced(dir, ['list', '--socket', join(dir, 'none.sock')]);
    assert.ok(loaded.builtins.includes('http'), `list did not load node:http: ${loaded.builtins.join(' ')}`);
  });
});
