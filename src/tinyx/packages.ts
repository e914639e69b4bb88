// Debian packages as a file source: `apt-get download` into the cache (the
// host's apt configuration names the mirror), each unpacked once into its own
// directory, and looked up path by path across all that were fetched. The
// dependencies of what was fetched are fetched only when a file is missing.
import { execFile } from 'node:child_process';
import { existsSync, lstatSync, mkdirSync, readdirSync, readFileSync, readlinkSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { unpackDeb, type Unpacked } from './deb.js';

const exec = promisify(execFile);

export class PackageError extends Error {}

/** A bound on the dependency search (nginx needs 8 packages, redis 20). */
const MAX_PACKAGES = 150;

export interface Entry {
  /** Where the file is on this host. */
  abs: string;
  kind: 'file' | 'dir' | 'symlink';
  /** The package that holds it, or "host". */
  from: string;
}

/** Where files for an image come from: a path inside the image ("usr/sbin/nginx") to the file that holds it. */
export interface FileSource {
  lookup(rel: string): Entry | null;
  /** Widens the source (fetches more packages), for `missing` if named; false when there is nothing more to fetch. */
  widen(missing?: string): Promise<boolean>;
  describe(): string;
}

interface Fetched {
  name: string;
  dir: string;
  files: Unpacked;
}

export class DebianPackages implements FileSource {
  private readonly fetched = new Map<string, Fetched>();
  private readonly index = new Map<string, { pkg: Fetched; kind: Entry['kind'] }>();
  private frontier: string[] = [];
  // fetched packages whose Depends are not yet in the frontier (asked for in one apt-cache call)
  private unexpanded: string[] = [];

  constructor(private readonly cache: string, private readonly log: (line: string) => void = () => {}) {}

  /** Fetches and unpacks one package (and remembers its Depends for widen). */
  async add(name: string): Promise<void> {
    if (this.fetched.has(name)) return;
    const f = await this.fetch(name);
    this.fetched.set(name, f);
    for (const [rel, kind] of f.files) if (!this.index.has(rel) || kind !== 'dir') this.index.set(rel, { pkg: f, kind });
    this.unexpanded.push(name);
  }

  lookup(rel: string): Entry | null {
    const hit = this.index.get(rel);
    return hit ? { abs: join(hit.pkg.dir, rel), kind: hit.kind, from: hit.pkg.name } : null;
  }

  /**
   * Fetches more of the dependencies: for a missing shared object, the one
   * named after it if there is one (libfoo.so.2 is in libfoo2), else the
   * libraries among them, else all of them, a round at a time.
   */
  async widen(missing?: string): Promise<boolean> {
    if (this.unexpanded.length) {
      this.frontier.push(...(await depends(this.unexpanded)));
      this.unexpanded = [];
    }
    const pending = [...new Set(this.frontier)].filter((n) => !this.fetched.has(n));
    if (!pending.length) return false;
    if (this.fetched.size >= MAX_PACKAGES) throw new PackageError(`fetched ${this.fetched.size} packages and ${missing ?? 'a file'} is still missing: giving up`);
    const named = missing ? soPackage(missing) : null;
    const libs = pending.filter((n) => /^(lib|zlib)/.test(n) && !/perl|python/.test(n));
    const pick = named && pending.includes(named) ? [named] : libs.length ? libs : pending;
    for (const n of pick) await this.add(n);
    return true;
  }

  describe(): string {
    return `Debian packages ${[...this.fetched.keys()].join(', ')}`;
  }

  /** The version of a fetched package (from its .deb's name). */
  version(name: string): string | undefined {
    return this.fetched.get(name)?.dir.split('/').pop()!.split('_')[1];
  }

  names(): string[] {
    return [...this.fetched.keys()];
  }

  private async fetch(name: string): Promise<Fetched> {
    if (!/^[a-z0-9][a-z0-9+.-]+$/.test(name)) throw new PackageError(`"${name}" is not a Debian package name`);
    const debs = join(this.cache, 'debs');
    mkdirSync(debs, { recursive: true });
    const find = (): string | undefined => readdirSync(debs).find((f) => f.startsWith(`${name}_`) && f.endsWith('.deb'));
    let deb = find();
    if (!deb) {
      this.log(`fetching ${name}`);
      try {
        await exec('apt-get', ['download', '-q', name], { cwd: debs });
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new PackageError(`apt-get download ${name} failed: ${(e.stderr ?? e.message).trim().split('\n').pop()}`);
      }
      deb = find();
      if (!deb) throw new PackageError(`apt-get download ${name} left no ${name}_*.deb`);
    }
    const dir = join(this.cache, 'pkgs', deb.replace(/\.deb$/, ''));
    const manifest = join(dir, '.tinyx-files.json');
    let files: Unpacked;
    if (existsSync(manifest)) {
      files = new Map(JSON.parse(readFileSync(manifest, 'utf8')) as [string, Entry['kind']][]);
    } else {
      const tmp = `${dir}.partial`;
      rmSync(tmp, { recursive: true, force: true });
      files = await unpackDeb(join(debs, deb), tmp);
      writeFileSync(join(tmp, '.tinyx-files.json'), JSON.stringify([...files]));
      rmSync(dir, { recursive: true, force: true });
      mkdirSync(join(dir, '..'), { recursive: true });
      renameSync(tmp, dir);
    }
    return { name, dir, files };
  }
}

/** Debian's name for the package of a shared object: libfoo.so.2 -> libfoo2, libfoo-1.so.0 -> libfoo-1-0. */
export function soPackage(soname: string): string | null {
  const m = /^(lib[a-z0-9+_.-]+?)\.so\.([0-9]+)/.exec(soname);
  if (!m) return null;
  const base = m[1]!.toLowerCase().replace(/_/g, '-');
  return /[0-9]$/.test(base) ? `${base}-${m[2]}` : `${base}${m[2]}`;
}

/** Depends and Pre-Depends of the packages, first alternative of each. */
async function depends(names: string[]): Promise<string[]> {
  const { stdout } = await exec('apt-cache', ['depends', '--important', ...names], { maxBuffer: 16 << 20 });
  const out: string[] = [];
  let alt = false;
  for (const line of stdout.split('\n')) {
    const m = /^\s+(\|)?(?:Pre)?Depends: <?([^>\s]+)>?/.exec(line);
    if (m) {
      if (!alt) out.push(m[2]!.replace(/:any$/, ''));
      alt = m[1] === '|';
    } else if (/^\S/.test(line)) {
      alt = false;
    }
  }
  return out;
}

/** This host's own files: for a program given as a path. */
export class HostFiles implements FileSource {
  lookup(rel: string): Entry | null {
    const abs = `/${rel}`;
    const st = lstatSync(abs, { throwIfNoEntry: false });
    if (!st) return null;
    return { abs, kind: st.isSymbolicLink() ? 'symlink' : st.isDirectory() ? 'dir' : 'file', from: 'host' };
  }

  widen(): Promise<boolean> {
    return Promise.resolve(false);
  }

  describe(): string {
    return 'this host';
  }
}

export const readLink = (e: Entry): string => readlinkSync(e.abs);
