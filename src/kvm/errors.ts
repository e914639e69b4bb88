/** /dev/kvm cannot be used: says why and how to fix it. */
export class KvmUnavailableError extends Error {
  readonly fix: string;
  constructor(message: string, fix: string) {
    super(`${message}; ${fix}`);
    this.name = 'KvmUnavailableError';
    this.fix = fix;
  }
}

/** A guest-physical range the guest or the host asked for lies outside guest memory. */
export class GuestAddressError extends Error {
  readonly gpa: number;
  readonly length: number;
  constructor(gpa: number, length: number, limit: number) {
    super(`guest address 0x${gpa.toString(16)}+${length} lies outside guest memory (0x${limit.toString(16)} bytes)`);
    this.name = 'GuestAddressError';
    this.gpa = gpa;
    this.length = length;
  }
}
