// The bin (dist/cli/lightvm.cjs) compiles the run bundle from V8's code
// cache beside it. The cache is an optimisation only: a missing, stale or
// corrupt one changes nothing a user sees, and is made again.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT } from './helpers.js';

const DIR = join(ROOT, 'dist', 'cli');
const BIN = join(ROOT, (JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as { bin: Record<string, string> }).bin.lightvm!);

const caches = (): string[] => readdirSync(DIR).filter((f) => /^run\.bundle\.cjs\..*\.cache$/.test(f));

/** `lightvm run` of a file that is not an image: it loads the whole run path, then fails the same way each time. */
function runBad(): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [BIN, 'run', join(ROOT, 'package.json')], { timeout: 30_000 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : null) : 0, stdout, stderr });
    });
  });
}

void describe('the code cache of the run bundle', () => {
  void it('is made by the first run, survives being corrupted, and changes nothing a run prints', async () => {
    for (const f of caches()) rmSync(join(DIR, f));
    const first = await runBad();
    assert.notEqual(first.code, 0);
    assert.match(first.stderr, /^lightvm: /m);
    const made = caches();
    assert.equal(made.length, 1, `one cache file beside the bundle, found: ${made.join(' ')}`);
    const file = join(DIR, made[0]!);
    const good = readFileSync(file);
    assert.ok(good.length > 1000, `cache of ${good.length} bytes`);

    // From the cache: the same result, and the cache is left as it is.
    const cached = await runBad();
    assert.deepEqual(cached, first);
    assert.ok(readFileSync(file).equals(good), 'a run with a good cache rewrote it');

    // V8 refuses a corrupt cache; the run compiles from source and writes a good one.
    writeFileSync(file, Buffer.alloc(good.length, 0x5a));
    const corrupt = await runBad();
    assert.deepEqual(corrupt, first);
    assert.ok(!readFileSync(file).equals(Buffer.alloc(good.length, 0x5a)), 'the corrupt cache was not replaced');
    assert.deepEqual(caches(), made, 'no temp file is left beside the cache');
  });
});
