// An OCI bundle (config.json and its rootfs) as a LightVM VM: which file of
// the rootfs is the unikernel, its command line and its memory. Shared by the
// OCI runtime (lightvm-oci) and the containerd shim. Namespaces, mounts,
// cgroups, rlimits and seccomp mean nothing to a VM and are ignored.
import { closeSync, lstatSync, openSync, readFileSync, readlinkSync, readSync, realpathSync } from 'node:fs';
import { isAbsolute, join, posix, resolve } from 'node:path';

/** Annotation naming the unikernel's path in the rootfs. */
export const KERNEL_ANNOTATION = 'org.lightvm.kernel';
/** Where the kernel is looked for when process.args is empty. */
export const DEFAULT_KERNEL = '/unikernel.elf';
export const DEFAULT_MEMORY_MIB = 4;
/** The daemon's bounds on guest memory (MiB). */
export const MIN_MEMORY_MIB = 2;
export const MAX_MEMORY_MIB = 3072;
/** Largest kernel copied out of a rootfs. */
export const MAX_KERNEL_BYTES = 64 << 20;

/** A bad bundle: the message names the file and the field. */
export class BundleError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'BundleError';
  }
}

export interface VmSpec {
  /** Absolute bundle directory. */
  bundle: string;
  /** Absolute host path of the rootfs. */
  rootfs: string;
  /** The kernel's path inside the rootfs, as configured. */
  kernelPath: string;
  /** The kernel's host path (symlinks resolved inside the rootfs). */
  kernelHostPath: string;
  cmdline: string;
  memoryMiB: number;
  terminal: boolean;
  annotations: Record<string, string>;
}

interface OciConfig {
  ociVersion?: unknown;
  root?: { path?: unknown };
  process?: { args?: unknown; terminal?: unknown; env?: unknown };
  annotations?: unknown;
  linux?: { resources?: { memory?: { limit?: unknown } } };
}

/**
 * Reads <bundle>/config.json and finds the VM in it. roots: look the kernel
 * up in these directories in turn instead of root.path (a shim reads the
 * layers of an unmounted overlay: upperdir, then lowerdir left to right).
 */
export function readBundle(bundleDir: string, opts: { roots?: string[] } = {}): VmSpec {
  const bundle = resolve(bundleDir);
  const file = join(bundle, 'config.json');
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new BundleError(`${file}: cannot read the bundle's config: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  let cfg: OciConfig;
  try {
    cfg = JSON.parse(text) as OciConfig;
  } catch (err) {
    throw new BundleError(`${file}: not JSON: ${(err as Error).message}`);
  }
  if (typeof cfg !== 'object' || cfg === null || Array.isArray(cfg)) throw new BundleError(`${file}: not a JSON object`);
  const rootPath = cfg.root?.path;
  if (typeof rootPath !== 'string' || rootPath === '') throw new BundleError(`${file}: root.path: missing (the rootfs holding the unikernel)`);
  const rootfs = isAbsolute(rootPath) ? rootPath : join(bundle, rootPath);
  const annotations = stringMap(cfg.annotations, file, 'annotations');
  const args = cfg.process?.args;
  if (args !== undefined && (!Array.isArray(args) || args.some((a) => typeof a !== 'string'))) {
    throw new BundleError(`${file}: process.args: not an array of strings`);
  }
  const argv = (args ?? []) as string[];
  let kernelPath: string;
  let field: string;
  if (annotations[KERNEL_ANNOTATION]) {
    kernelPath = annotations[KERNEL_ANNOTATION];
    field = `annotations["${KERNEL_ANNOTATION}"]`;
  } else if (argv.length > 0 && argv[0] !== '') {
    kernelPath = argv[0]!;
    field = 'process.args[0]';
  } else {
    kernelPath = DEFAULT_KERNEL;
    field = 'process.args (empty, so the default)';
  }
  // With the annotation, every arg is the guest's; else args[0] is the kernel.
  const guestArgs = annotations[KERNEL_ANNOTATION] ? argv : argv.slice(1);
  let kernelHostPath = '';
  let found = rootfs;
  const roots = opts.roots?.length ? opts.roots : [rootfs];
  for (const [i, r] of roots.entries()) {
    try {
      kernelHostPath = resolveInRoot(r, kernelPath, `${file}: ${field}`);
      found = r;
      break;
    } catch (err) {
      if (i === roots.length - 1) throw err;
    }
  }
  checkElf(kernelHostPath, `${file}: ${field}: ${kernelPath} in the rootfs`);
  return {
    bundle, rootfs: found, kernelPath, kernelHostPath,
    cmdline: guestArgs.join(' '),
    memoryMiB: memoryOf(cfg, file),
    terminal: cfg.process?.terminal === true,
    annotations,
  };
}

function stringMap(v: unknown, file: string, field: string): Record<string, string> {
  if (v === undefined || v === null) return {};
  if (typeof v !== 'object' || Array.isArray(v)) throw new BundleError(`${file}: ${field}: not an object`);
  const out: Record<string, string> = {};
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (typeof x !== 'string') throw new BundleError(`${file}: ${field}["${k}"]: not a string`);
    out[k] = x;
  }
  return out;
}

function memoryOf(cfg: OciConfig, file: string): number {
  const limit = cfg.linux?.resources?.memory?.limit;
  if (limit === undefined || limit === null) return DEFAULT_MEMORY_MIB;
  if (typeof limit !== 'number' || !Number.isInteger(limit)) throw new BundleError(`${file}: linux.resources.memory.limit: not an integer`);
  // -1 (or any negative) is "no limit" in the runtime spec.
  if (limit < 0) return DEFAULT_MEMORY_MIB;
  const mib = Math.ceil(limit / 1048576);
  if (mib < MIN_MEMORY_MIB || mib > MAX_MEMORY_MIB) {
    throw new BundleError(`${file}: linux.resources.memory.limit: ${limit} bytes is outside the ${MIN_MEMORY_MIB}-${MAX_MEMORY_MIB} MiB a LightVM VM may have`);
  }
  return mib;
}

/**
 * The host path of `path` inside `root`, following symlinks as if root were
 * "/": a link in the image can never lead outside it.
 */
export function resolveInRoot(root: string, path: string, what: string): string {
  let realRoot: string;
  try {
    realRoot = realpathSync(root);
  } catch (err) {
    throw new BundleError(`${what}: the rootfs ${root}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
  const todo = posix.normalize(`/${path}`).split('/').filter(Boolean);
  const done: string[] = [];
  let links = 0;
  while (todo.length > 0) {
    const part = todo.shift()!;
    if (part === '.') continue;
    if (part === '..') {
      done.pop();
      continue;
    }
    const here = join(realRoot, ...done, part);
    let st;
    try {
      st = lstatSync(here);
    } catch (err) {
      throw new BundleError(`${what}: ${path} is not in the rootfs (${(err as NodeJS.ErrnoException).code ?? 'error'} at /${[...done, part].join('/')})`);
    }
    if (st.isSymbolicLink()) {
      if (++links > 40) throw new BundleError(`${what}: ${path}: too many symbolic links`);
      const target = readlinkSync(here);
      if (target.startsWith('/')) done.length = 0;
      todo.unshift(...target.split('/').filter(Boolean));
      continue;
    }
    done.push(part);
  }
  return join(realRoot, ...done);
}

const ELF_MAGIC = 0x7f454c46;

/** The file must be a regular x86-64 ELF64 no larger than MAX_KERNEL_BYTES. */
export function checkElf(hostPath: string, what: string): void {
  const st = lstatSync(hostPath);
  if (!st.isFile()) throw new BundleError(`${what}: not a regular file`);
  if (st.size > MAX_KERNEL_BYTES) throw new BundleError(`${what}: ${st.size} bytes, more than the ${MAX_KERNEL_BYTES >> 20} MiB a kernel may have`);
  const head = Buffer.alloc(20);
  const fd = openSync(hostPath, 'r');
  let n: number;
  try {
    n = readSync(fd, head, 0, head.length, 0);
  } finally {
    closeSync(fd);
  }
  if (n < 20 || head.readUInt32BE(0) !== ELF_MAGIC) throw new BundleError(`${what}: not an ELF file (a LightVM container's process is a unikernel image)`);
  if (head[4] !== 2 || head[5] !== 1 || head.readUInt16LE(18) !== 62) throw new BundleError(`${what}: not an x86-64 little-endian ELF64`);
}
