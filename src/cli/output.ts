import { KvmUnavailableError } from '../kvm/errors.js';
import { VmCreateError } from '../toolstack/vm.js';

/** Prints one clear line for an error and exits. */
export function fail(err: unknown, code = 1): never {
  if (err instanceof KvmUnavailableError || err instanceof VmCreateError) {
    process.stderr.write(`lightvm: ${err.message}\n`);
  } else if (err instanceof Error) {
    process.stderr.write(`lightvm: ${err.message}\n`);
    if (process.env.LIGHTVM_DEBUG) process.stderr.write(`${err.stack}\n`);
  } else {
    process.stderr.write(`lightvm: ${String(err)}\n`);
  }
  process.exit(code);
}

/** Parses a positive integer option, naming the option when it is not one. */
export function intOption(name: string, min: number, max: number) {
  return (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n) || n < min || n > max) {
      throw new Error(`${name}: "${value}" is not a whole number from ${min} to ${max}`);
    }
    return n;
  };
}

export const ms = (ns: number): number => Math.round(ns / 1e3) / 1e3;
