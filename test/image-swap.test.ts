// An image path is looked at (stat) and then read: a path swapped from a
// regular file to a FIFO in between must be refused, never opened in a way
// that waits for a writer (issue 10: the image cache read with a plain
// open, and an executor thread stuck there would hold all its VMs). Here one
// process swaps a symlink between an image and a FIFO as fast as it can
// while another loads the image through ImageCache again and again: every
// load is read or refused, and the loader ends in time.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { guestImage, ROOT, tempDir } from './helpers.js';

const LOAD_MS = 3000;

void describe('image paths swapped under the loader', () => {
  const { dir, cleanup } = tempDir('imgswap');
  after(cleanup);

  void it('an image that becomes a FIFO between stat and open is refused, not waited on', async () => {
    const image = join(dir, 'hello.elf');
    copyFileSync(guestImage('hello'), image);
    const fifo = join(dir, 'fifo');
    execFileSync('mkfifo', [fifo]);
    const path = join(dir, 'swapped.elf');
    const swapper = spawn(process.execPath, ['-e', `
      const { symlinkSync, renameSync } = require('node:fs');
      const [path, a, b] = process.argv.slice(1);
      for (let i = 0; ; i++) {
        symlinkSync(i % 2 ? a : b, path + '.new');
        renameSync(path + '.new', path);
      }`, path, image, fifo], { stdio: 'ignore' });
    const loader = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', `
      import { ImageCache } from './src/vmm/image-cache.ts';
      const [path, ms] = [process.argv[1], Number(process.argv[2])];
      const seen = { read: 0, refused: 0, other: [] };
      for (const end = Date.now() + ms; Date.now() < end;) {
        try {
          // A new cache each time: a hit would not read the file again.
          new ImageCache().get(path);
          seen.read++;
        } catch (err) {
          if (/is a FIFO, not a regular file|ENOENT/.test(err.message)) seen.refused++;
          else if (seen.other.length < 3) seen.other.push(err.message);
        }
      }
      console.log(JSON.stringify(seen));`, path, String(LOAD_MS)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    loader.stdout.setEncoding('utf8').on('data', (s: string) => (out += s));
    const ended = await new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), LOAD_MS + 15_000);
      loader.on('exit', () => {
        clearTimeout(t);
        resolve(true);
      });
    });
    swapper.kill('SIGKILL');
    if (!ended) loader.kill('SIGKILL');
    assert.ok(ended, `the loader did not end: it waits in an open of the FIFO (${LOAD_MS} ms of loads asked)`);
    const seen = JSON.parse(out) as { read: number; refused: number; other: string[] };
    assert.deepEqual(seen.other, [], 'refusals other than the FIFO\'s');
    // Both sides seen: the swaps raced the loads.
    assert.ok(seen.read > 0 && seen.refused > 0, `${seen.read} read, ${seen.refused} refused`);
  });
});
