// runc-shaped command lines: global flags, a command, its flags and
// positionals; "--flag value", "--flag=value", "-f value" and, for booleans,
// "--flag". A flag nobody declared is an error naming it.

export type FlagKind = 'bool' | 'value';

export interface FlagSpec {
  /** Long names (without "--") and their kind. */
  flags: Record<string, FlagKind>;
  /** One-letter or alternative names → long name. */
  aliases?: Record<string, string>;
}

export interface ParsedArgs {
  flags: Map<string, string | true>;
  positional: string[];
}

export class UsageError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UsageError';
  }
}

/**
 * Parses argv against spec. stopAtPositional: stop at the first positional
 * (the global flags end at the command's name); the rest is returned as is.
 */
export function parseArgs(argv: readonly string[], spec: FlagSpec, what: string, stopAtPositional = false): ParsedArgs & { rest: string[] } {
  const flags = new Map<string, string | true>();
  const positional: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    if (a === '--') {
      positional.push(...argv.slice(i + 1));
      break;
    }
    if (!a.startsWith('-') || a === '-') {
      if (stopAtPositional) return { flags, positional, rest: argv.slice(i) };
      positional.push(a);
      continue;
    }
    const body = a.replace(/^--?/, '');
    const eq = body.indexOf('=');
    const given = eq < 0 ? body : body.slice(0, eq);
    const name = spec.aliases?.[given] ?? given;
    const kind = spec.flags[name];
    if (!kind) throw new UsageError(`${what}: unknown flag ${a.slice(0, a.length - body.length)}${given}`);
    if (kind === 'bool') {
      if (eq >= 0 && !['true', 'false'].includes(body.slice(eq + 1))) throw new UsageError(`${what}: --${name} takes no value (got "${body.slice(eq + 1)}")`);
      if (eq < 0 || body.slice(eq + 1) === 'true') flags.set(name, true);
      continue;
    }
    if (eq >= 0) {
      flags.set(name, body.slice(eq + 1));
    } else {
      const v = argv[i + 1];
      if (v === undefined) throw new UsageError(`${what}: --${name} needs a value`);
      flags.set(name, v);
      i++;
    }
  }
  return { flags, positional, rest: [] };
}

export function flagValue(p: ParsedArgs, name: string): string | undefined {
  const v = p.flags.get(name);
  return typeof v === 'string' ? v : undefined;
}
