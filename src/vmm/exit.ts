/**
 * A guest's exit status, exactly: its 64-bit value as a number while that
 * is a safe integer (within ±(2^53 - 1), as JSON readers keep it), else as
 * a decimal string. A double would round 0x7fffffffffffffff to 2^63.
 */
export type ExitStatus = number | string;

export function exitStatus(raw: bigint): ExitStatus {
  return raw >= BigInt(Number.MIN_SAFE_INTEGER) && raw <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(raw) : raw.toString();
}

/**
 * A process exit code for a guest's status: its low byte, as a shell
 * takes exit(2)'s, except that a status other than 0 is never reported as
 * success (256 gives 1, not 0).
 */
export function processExitCode(status: ExitStatus): number {
  const raw = BigInt(status);
  const low = Number(BigInt.asUintN(8, raw));
  return raw !== 0n && low === 0 ? 1 : low;
}

/** How a VM ended. */
export type VmExit =
  | { kind: 'halt'; status: ExitStatus }
  | { kind: 'crash'; code: CrashCode; reason: string }
  | { kind: 'destroyed' }
  /** Saved to a snapshot and ended there (xl save); it may live on elsewhere. */
  | { kind: 'saved'; file: string | null }
  /** Moved to another host by live migration. */
  | { kind: 'migrated'; to: string }
  /** A just-in-time VM that saw no traffic for its idle timeout. */
  | { kind: 'idle'; ms: number };

export type CrashCode =
  | 'bad-hypercall' // a hypercall with a bad pointer, length or number
  | 'stray-io' // port I/O that is not a hypercall
  | 'device-page-write' // a write to the read-only device page
  | 'mmio' // an access to guest-physical memory with nothing behind it
  | 'virtio' // a virtio device driven against the spec: a queue outside RAM, a bad descriptor chain, a bad register write
  | 'xenstore' // a xenstore ring driven against the protocol, or the store refusing or dropping the VM's domain
  | 'triple-fault'
  | 'hlt' // HLT with interrupts off: the vCPU could never resume
  | 'entry-failed'
  | 'internal-error'
  | 'unexpected-exit'
  | 'executor-lost';

/** A guest mistake that ends its VM; reason is said to the user as is. */
export class GuestFault extends Error {
  readonly code: CrashCode;
  constructor(code: CrashCode, reason: string) {
    super(reason);
    this.name = 'GuestFault';
    this.code = code;
  }
}

export function describeExit(e: VmExit): string {
  switch (e.kind) {
    case 'halt':
      return `exited with status ${e.status}`;
    case 'crash':
      return `crashed: ${e.reason}`;
    case 'destroyed':
      return 'destroyed';
    case 'saved':
      return e.file ? `saved to ${e.file}` : 'saved';
    case 'migrated':
      return `migrated to ${e.to}`;
    case 'idle':
      return `stopped after ${e.ms} ms without traffic`;
  }
}
