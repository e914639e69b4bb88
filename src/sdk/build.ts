// `lightvm build`: compiles a user's C program into a LightVM unikernel
// against the SDK that ships in the package (guest/build/sdk: headers,
// liblvm.a, liblvm-ip.a, the start objects, the linker script and the
// flags our own images are compiled with, all written by guest/Makefile).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { basename, extname, join, resolve } from 'node:path';
import { PACKAGE_ROOT } from '../toolstack/images.js';
import { parseElf } from '../vmm/elf.js';

export const SDK_DIR = join(PACKAGE_ROOT, 'guest', 'build', 'sdk');

/** What gcc takes on the command line for us: sources, objects, archives. */
const INPUT_EXTENSIONS = ['.c', '.S', '.s', '.o', '.a'];
/** Symbols of the TCP/IP stack (net.h): an undefined one means --net was left off. */
const STACK_SYMBOL = /undefined reference to `(net_|tcp_|udp_)\w+'/;

export interface BuildOptions {
  sources: string[];
  /** Image to write (default: the first source's name with .elf). */
  output?: string;
  /** Link the TCP/IP stack (liblvm-ip.a). */
  net?: boolean;
  /** Extra compiler flags, after ours. */
  cflags?: string[];
  /** The compiler (default: $CC, else gcc). */
  cc?: string;
  /** Where the compiler's diagnostics go, as it writes them (default: stderr). */
  diagnostics?: (chunk: Buffer) => void;
  /** Told the compiler command before it runs. */
  onCommand?: (command: string[]) => void;
}

export interface BuildResult {
  output: string;
  /** The compiler command, as run. */
  command: string[];
  bytes: number;
  entry: number;
}

/** The build failed: the compiler's own messages were shown as they came. */
export class BuildError extends Error {
  constructor(message: string, readonly status: number | null = null) {
    super(message);
    this.name = 'BuildError';
  }
}

interface Sdk {
  cflags: string[];
  ldflags: string[];
  include: string;
  ldscript: string;
  start: string[];
  liblvm: string;
  libip: string;
}

function readFlags(file: string): string[] {
  return readFileSync(file, 'utf8').split('\n').map((l) => l.trim()).filter(Boolean);
}

export function loadSdk(dir = SDK_DIR): Sdk {
  const need = ['cflags', 'ldflags', 'include/lightvm/lvm.h', 'lib/liblvm.a', 'lib/liblvm-ip.a', 'lib/entry.o', 'lib/pvh_entry.o', 'lib/guest.ld'];
  const missing = need.filter((f) => !existsSync(join(dir, f)));
  if (missing.length) {
    throw new BuildError(`the libOS SDK is incomplete at ${dir} (missing ${missing.join(', ')}): ` +
      'in a clone of LightVM run npm install (or make -C guest sdk)');
  }
  return {
    cflags: readFlags(join(dir, 'cflags')),
    ldflags: readFlags(join(dir, 'ldflags')),
    include: join(dir, 'include'),
    ldscript: join(dir, 'lib', 'guest.ld'),
    // The ELF entry first, then the PVH entry (the linker script keeps its tables last).
    start: [join(dir, 'lib', 'entry.o'), join(dir, 'lib', 'pvh_entry.o')],
    liblvm: join(dir, 'lib', 'liblvm.a'),
    libip: join(dir, 'lib', 'liblvm-ip.a'),
  };
}

/** The compiler command for a build: the SDK's flags, then the user's, as our Makefile links an image. */
export function buildCommand(sdk: Sdk, opts: BuildOptions): string[] {
  if (opts.sources.length === 0) throw new BuildError('no source files given');
  for (const src of opts.sources) {
    if (!INPUT_EXTENSIONS.includes(extname(src))) {
      throw new BuildError(`${src}: not a C source, assembly, object or archive (${INPUT_EXTENSIONS.join(' ')})`);
    }
    if (!existsSync(src)) throw new BuildError(`${src}: no such file`);
  }
  const output = resolve(opts.output ?? `${basename(opts.sources[0]!, extname(opts.sources[0]!))}.elf`);
  if (opts.sources.some((s) => resolve(s) === output)) throw new BuildError(`${opts.output}: the output would overwrite a source`);
  const cc = opts.cc ?? process.env.CC ?? 'gcc';
  return [
    cc, ...sdk.cflags, `-I${sdk.include}`, ...(opts.cflags ?? []), ...sdk.ldflags, `-Wl,-T,${sdk.ldscript}`,
    '-o', output, ...sdk.start, ...opts.sources, ...(opts.net ? [sdk.libip] : []), sdk.liblvm,
  ];
}

/** Compiles and links; the compiler's messages pass through unchanged. */
export async function buildUnikernel(opts: BuildOptions, sdkDir = SDK_DIR): Promise<BuildResult> {
  const command = buildCommand(loadSdk(sdkDir), opts);
  const output = command[command.indexOf('-o') + 1]!;
  const show = opts.diagnostics ?? ((b: Buffer) => process.stderr.write(b));
  opts.onCommand?.(command);
  let diagnostics = '';
  const status = await new Promise<number | null>((resolvePromise, reject) => {
    const child = spawn(command[0]!, command.slice(1), { stdio: ['ignore', 'inherit', 'pipe'] });
    child.stderr.on('data', (b: Buffer) => {
      diagnostics += b.toString();
      show(b);
    });
    child.on('error', (err: NodeJS.ErrnoException) => {
      reject(err.code === 'ENOENT'
        ? new BuildError(`${command[0]} not found: lightvm build needs gcc and binutils (Debian: apt-get install gcc)`)
        : err);
    });
    child.on('close', (code) => resolvePromise(code));
  });
  if (status !== 0) {
    const hint = !opts.net && STACK_SYMBOL.test(diagnostics) ? ' (the TCP/IP stack of net.h is linked with --net)' : '';
    throw new BuildError(`${command[0]} failed with status ${status}${hint}`, status);
  }
  // What we wrote must be what the monitor loads: the loader's own checks.
  const bytes = readFileSync(output);
  const image = parseElf(output, bytes);
  return { output, command, bytes: bytes.length, entry: image.entry };
}
