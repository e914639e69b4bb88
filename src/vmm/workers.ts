// Starting this folder's worker threads, from dist or (tests) from source.
import type { Worker } from 'node:worker_threads';
import { workerThreads } from '../sys/builtins.js';

const fromSource = import.meta.url.endsWith('.ts');

/** A worker running module `name` of this folder. */
export function startWorker(name: string, options: ConstructorParameters<typeof Worker>[1]): Worker {
  return startWorkerBeside(import.meta.url, name, options);
}

/** A worker running module `name` of the folder of the module at `beside` (its import.meta.url). */
export function startWorkerBeside(beside: string, name: string, options: ConstructorParameters<typeof Worker>[1]): Worker {
  const url = new URL(`./${name}.${fromSource ? 'ts' : 'js'}`, beside);
  // From source the worker must register the TypeScript loader itself:
  // Node 20 does not pass loader hooks on to worker threads.
  if (!fromSource) return new (workerThreads().Worker)(url, options);
  return new (workerThreads().Worker)(`import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(url.href)}); })`, { ...options, eval: true });
}
