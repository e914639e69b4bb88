// How the API shows a VM.
import type { VirtualMachine } from '../toolstack/vm.js';
import type { VmExit } from '../vmm/exit.js';
import type { Timings } from '../vmm/protocol.js';

export interface VmView {
  id: number;
  name: string;
  image: string;
  memory_mib: number;
  cmdline: string;
  state: string;
  executor: number;
  warm: boolean;
  created_at: string;
  exit: VmExit | null;
  /** Console bytes lost before they reached the daemon (it did not keep up with the guest). */
  console_dropped_bytes: number;
  /** Monotonic ns stamps of its life (request, shell, loaded, boot, end...). */
  timings: Timings | null;
}

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
