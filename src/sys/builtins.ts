// Node's own modules that only some paths use, loaded at their first use. A
// `lightvm run` pays for every module it loads: node:crypto (with the streams
// it pulls in) and node:worker_threads cost it ~4-5 ms here and a run needs
// neither (see issue 11). require() keeps each one after the first call.
import { createRequire } from 'node:module';

const load = createRequire(import.meta.url);

export function crypto(): typeof import('node:crypto') {
  return load('node:crypto') as typeof import('node:crypto');
}

export function workerThreads(): typeof import('node:worker_threads') {
  return load('node:worker_threads') as typeof import('node:worker_threads');
}
