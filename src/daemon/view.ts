// How the API shows a VM.
import type { VirtualMachine } from '../toolstack/vm.js';
import type { VmExit } from '../vmm/exit.js';
import type { Timings } from '../vmm/protocol.js';
import type { VmSchemaView } from './schemas.js';

/** How the API shows a VM: the type of its schema (schemas.ts), with its exit and timings as the executor has them. */
export type VmView = Omit<VmSchemaView, 'exit' | 'timings'> & { exit: VmExit | null; timings: Timings | null };

export function vmView(vm: VirtualMachine): VmView {
  return {
    id: vm.id,
    name: vm.name,
    image: vm.image,
    memory_mib: vm.memoryMiB,
    cmdline: vm.config.cmdline,
    state: vm.migrating && vm.state !== 'exited' ? 'migrating' : vm.state,
    executor: vm.executor.id,
    warm: vm.warm,
    created_at: vm.createdAt.toISOString(),
    exit: vm.exitInfo ?? null,
    console_dropped_bytes: vm.consoleDropped,
    timings: vm.timings ?? null,
  };
}
