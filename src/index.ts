export { Host, VirtualMachine, VmCreateError, DEFAULT_MEMORY_MIB } from './toolstack/host.js';
export type { HostOptions, CreateOptions, VmState } from './toolstack/host.js';
export { BUILTIN_IMAGES, resolveImage } from './toolstack/images.js';
export type { VmExit, CrashCode } from './vmm/exit.js';
export { describeExit } from './vmm/exit.js';
export type { DeviceEntry } from './vmm/device-page.js';
export type { Timings } from './vmm/protocol.js';
export { KvmUnavailableError } from './kvm/errors.js';
