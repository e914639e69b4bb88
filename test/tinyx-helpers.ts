// Debian packages for the Tinyx tests: fetched into a cache before the tests,
// from the network namespace we came from (tests run in one of their own).
import { execFileSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';

export function prefetch(cache: string, names: string[]): void {
  const dir = join(cache, 'debs');
  mkdirSync(dir, { recursive: true });
  const host = process.env.LIGHTVM_HOST_NETNS;
  const argv = ['apt-get', 'download', '-q', ...names];
  execFileSync(host ? 'nsenter' : argv[0]!, host ? [`--net=${host}`, ...argv] : argv.slice(1), { cwd: dir, stdio: 'pipe' });
}
