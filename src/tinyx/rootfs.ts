// The files of a Tinyx image: the program, every shared object it needs
// (DT_NEEDED, transitively, and the interpreter), BusyBox, an init, and the
// recipe's own files, as initramfs entries.
import { readFileSync, statSync } from 'node:fs';
import { posix } from 'node:path';
import type { CpioEntry } from './cpio.js';
import { elfDeps } from './elf-deps.js';
import { type Entry, type FileSource, readLink } from './packages.js';

export class ClosureError extends Error {}

const LIB_DIRS = ['lib/x86_64-linux-gnu', 'usr/lib/x86_64-linux-gnu', 'lib64', 'usr/lib64', 'lib', 'usr/lib'];

export interface Closure {
  /** Path in the image -> where it comes from. */
  files: Map<string, Entry>;
  /** Sonames and the path each resolved to. */
  libraries: Map<string, string>;
}

/**
 * Everything `program` (an absolute path in the image) needs to run. Files
 * missing from the source widen it (a package's dependencies) until found;
 * a file that is nowhere is an error naming it and who needs it.
 */
export async function closure(source: FileSource, programs: string[]): Promise<Closure> {
  const files = new Map<string, Entry>();
  const libraries = new Map<string, string>();
  const find = async (rel: string, need: string): Promise<Entry> => {
    for (;;) {
      const e = source.lookup(rel);
      if (e) return e;
      if (!(await source.widen())) throw new ClosureError(`/${rel} (needed by ${need}) is in none of ${source.describe()}`);
    }
  };
  // Adds a path and what it points to; returns the path of the real file.
  const addPath = async (rel: string, need: string, depth = 0): Promise<string> => {
    if (depth > 16) throw new ClosureError(`/${rel}: too many levels of symlinks`);
    const e = files.get(rel) ?? (await find(rel, need));
    files.set(rel, e);
    if (e.kind !== 'symlink') return rel;
    const target = readLink(e);
    const to = posix.normalize(target.startsWith('/') ? target.slice(1) : posix.join(posix.dirname(rel), target));
    return addPath(to, need, depth + 1);
  };
  const queue: { rel: string; need: string }[] = programs.map((p) => ({ rel: p.replace(/^\/+/, ''), need: 'the image' }));
  const seen = new Set<string>();
  while (queue.length) {
    const { rel, need } = queue.shift()!;
    const real = await addPath(rel, need);
    if (seen.has(real)) continue;
    seen.add(real);
    const deps = elfDeps(files.get(real)!.abs);
    if (!deps) continue;
    const who = `/${real}`;
    if (deps.interp) queue.push({ rel: deps.interp.replace(/^\/+/, ''), need: who });
    for (const soname of deps.needed) {
      if (libraries.has(soname)) continue;
      const dirs = [...deps.runpath.map((d) => d.replace('$ORIGIN', posix.dirname(who)).replace(/^\/+/, '')), ...LIB_DIRS];
      let at: string | null;
      for (;;) {
        at = dirs.map((d) => posix.join(d, soname)).find((p) => files.has(p) || source.lookup(p)) ?? null;
        if (at || !(await source.widen(soname))) break;
      }
      if (!at) throw new ClosureError(`${soname} (needed by ${who}) is in none of ${source.describe()} (looked in /${dirs.join(', /')})`);
      libraries.set(soname, `/${at}`);
      queue.push({ rel: at, need: who });
    }
  }
  return { files, libraries };
}

/** Initramfs entries for the files, their parent directories first. */
export function closureEntries(c: Closure): CpioEntry[] {
  const out: CpioEntry[] = [];
  const dirs = new Set<string>();
  const parents = (rel: string): void => {
    const d = posix.dirname(rel);
    if (d === '.' || dirs.has(d)) return;
    parents(d);
    dirs.add(d);
    out.push({ path: d, kind: 'dir', mode: 0o755 });
  };
  for (const [rel, e] of [...c.files].sort(([a], [b]) => a.localeCompare(b))) {
    if (e.kind === 'dir') continue;
    parents(rel);
    if (e.kind === 'symlink') out.push({ path: rel, kind: 'symlink', mode: 0o777, data: readLink(e) });
    else out.push({ path: rel, kind: 'file', mode: statSync(e.abs).mode & 0o7777, data: readFileSync(e.abs) });
  }
  return out;
}
