import { existsSync, readdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { FieldError } from '../vmm/field-error.js';

/** The package root: src/toolstack or dist/toolstack, two levels up. */
export const PACKAGE_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
export const BUILTIN_DIR = join(PACKAGE_ROOT, 'guest', 'build');

/** The guest images that ship with LightVM. */
export const BUILTIN_IMAGES = ['noop', 'hello', 'daytime'] as const;

/**
 * Resolves an image argument: a path to an ELF file, or the name of a
 * built-in image (apps and test guests under guest/build).
 */
const builtins = new Map<string, string>();

export function resolveImage(image: string): string {
  if (image.includes('/') || image.endsWith('.elf')) return resolve(image);
  // A built-in's path, once found, is remembered: the executor checks the file itself.
  const known = builtins.get(image);
  if (known) return known;
  const builtin = join(BUILTIN_DIR, `${image}.elf`);
  if (existsSync(builtin)) {
    builtins.set(image, builtin);
    return builtin;
  }
  if (existsSync(image)) return resolve(image);
  throw new UnknownImageError(image);
}

/**
 * Whether resolveImage took `image` as a built-in's name: its file is the
 * package's own, under BUILTIN_DIR, and needs no path policy check (a
 * realpath costs about three stats, on every create).
 */
export function isBuiltinName(image: string): boolean {
  return builtins.has(image);
}

/** Names of every image under guest/build. */
export function builtinImages(): string[] {
  try {
    return readdirSync(BUILTIN_DIR).filter((f) => f.endsWith('.elf')).map((f) => f.slice(0, -4)).sort();
  } catch {
    return [];
  }
}

export class UnknownImageError extends FieldError {
  constructor(image: string) {
    const known = builtinImages();
    const message = `image "${image}" is neither a file nor a built-in image` +
      (known.length ? ` (built-ins: ${known.join(', ')})` : ' (no built-in images: run npm install to build them)');
    super('image', message, { message });
    this.name = 'UnknownImageError';
  }
}
