// The options of `lightvm run`, in one table: commander's definitions come
// from it, and so does a parser without commander (node:util parseArgs)
// that main.ts tries first, since a one-VM process should pay for nothing
// it does not use (commander costs ~20 ms of module loading here). Any
// argument list it does not take whole (--help, an error, an odd form) goes
// to commander, which gives its usual help and messages.
import { parseArgs } from 'node:util';
import { MAX_MEMORY, MIN_MEMORY } from '../../vmm/layout.js';
import { intOption } from '../output.js';

export interface RunOptions {
  memory?: number;
  cmdline?: string;
  initrd?: string;
  name?: string;
  timing?: boolean;
  json?: boolean;
  countInstructions?: boolean;
  /** Network devices and disks, as in a cfg file (repeatable options). */
  vif?: string[];
  disk?: string[];
}

interface RunOption {
  /** commander's flags */
  flags: string;
  description: string;
  /** parseArgs's name (the long option) and its key in RunOptions */
  long: string;
  key: keyof RunOptions;
  short?: string;
  type: 'string' | 'boolean';
  parse?: (value: string) => number;
  /** May be given more than once: the values gather in a list. */
  multiple?: boolean;
}

export const RUN_OPTIONS: readonly RunOption[] = [
  {
    flags: '-m, --memory <MiB>', description: 'guest memory in MiB', long: 'memory', key: 'memory', short: 'm', type: 'string',
    parse: intOption('--memory', MIN_MEMORY / 1048576, MAX_MEMORY / 1048576),
  },
  { flags: '-c, --cmdline <string>', description: 'guest command line', long: 'cmdline', key: 'cmdline', short: 'c', type: 'string' },
  { flags: '--initrd <path>', description: 'with a Linux kernel (bzImage) as image: its initial ramdisk', long: 'initrd', key: 'initrd', type: 'string' },
  { flags: '-n, --name <name>', description: 'VM name', long: 'name', key: 'name', short: 'n', type: 'string' },
  { flags: '--timing', description: 'print the phases (create, load, boot, run, destroy) on stderr', long: 'timing', key: 'timing', type: 'boolean' },
  { flags: '--json', description: 'print one JSON object (exit, console, timings, rss) instead of streaming', long: 'json', key: 'json', type: 'boolean' },
  {
    flags: '--count-instructions', description: 'single-step from entry to the first hypercall and count guest instructions',
    long: 'count-instructions', key: 'countInstructions', type: 'boolean',
  },
  {
    flags: '--vif <spec>', description: 'a network device, as in a cfg file (ip=10.0.0.2/24,gateway=10.0.0.1); repeatable',
    long: 'vif', key: 'vif', type: 'string', multiple: true,
  },
  {
    flags: '--disk <path[,ro]>', description: 'a virtio-blk disk backed by this file (read-write unless ,ro); repeatable',
    long: 'disk', key: 'disk', type: 'string', multiple: true,
  },
];

/** `run`'s arguments (after "run") as commander would take them, or undefined to leave them to commander. */
export function parseRunArgs(args: string[]): { image: string; opts: RunOptions } | undefined {
  if (args.some((a) => a === '-h' || a === '--help')) return undefined;
  let parsed: ReturnType<typeof parseArgs>;
  try {
    parsed = parseArgs({
      args, allowPositionals: true, strict: true,
      options: Object.fromEntries(RUN_OPTIONS.map((o) => [o.long, { type: o.type, ...(o.short ? { short: o.short } : {}), ...(o.multiple ? { multiple: true } : {}) }])),
    });
  } catch {
    return undefined;
  }
  if (parsed.positionals.length !== 1) return undefined;
  const opts: Record<string, unknown> = {};
  for (const o of RUN_OPTIONS) {
    const v = parsed.values[o.long];
    if (v === undefined) continue;
    if (o.multiple) {
      opts[o.key] = v;
      continue;
    }
    // A repeated option or a bad value: commander says what is wrong.
    if (Array.isArray(v)) return undefined;
    try {
      opts[o.key] = o.parse && typeof v === 'string' ? o.parse(v) : v;
    } catch {
      return undefined;
    }
  }
  return { image: parsed.positionals[0]!, opts: opts as RunOptions };
}
