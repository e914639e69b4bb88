// README's results table is the one bench/results/ makes (npm run
// results-table), and every row names what both of its clocks timed.
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { END, resultsTable, START, withTable } from '../scripts/results-table.js';
import { ROOT } from './helpers.js';

void describe('README results table', () => {
  void it('is what bench/results/ gives: regenerate it with npm run results-table', () => {
    const readme = readFileSync(join(ROOT, 'README.md'), 'utf8');
    const table = resultsTable(join(ROOT, 'bench', 'results'));
    assert.ok(readme.includes(table), 'README.md\'s results table is not the one bench/results/ gives: run npm run results-table');
  });

  void it('every row names both intervals and a ratio of p50s', () => {
    const rows = resultsTable(join(ROOT, 'bench', 'results')).split('\n').filter((l) => l.startsWith('| **'));
    assert.ok(rows.length >= 10, `only ${rows.length} rows`);
    for (const r of rows) {
      const cells = r.split(' | ');
      assert.equal(cells.length, 6, r);
      assert.ok(cells[0]!.length > 40 && cells[2]!.length > 20, `a side without its interval: ${r}`);
      assert.match(cells[4]!, /\d\.\d\dx/, r);
    }
  });

  void it('a README without the markers is refused, saying which', () => {
    assert.throws(() => withTable('# x\n', join(ROOT, 'bench', 'results')), (e: Error) => e.message.includes(START) && e.message.includes(END));
  });
});
