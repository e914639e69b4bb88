// The noxs module every VM has: its device page (written by the host,
// mapped read-only into the guest) and the refusal of a guest's write to
// it. The page's slot is part of the shell; this module owns its contents.
import { DEVICE_PAGE_GPA, NOXS_FLAG_SHUTDOWN, NOXS_PAGE_SIZE } from '../abi.js';
import type { DevicePage } from '../device-page.js';
import { type DeviceModule, type VmContext } from '../devices.js';
import { GuestFault } from '../exit.js';

export class NoxsModule implements DeviceModule {
  readonly name = 'noxs';

  constructor(vm: VmContext, readonly page: DevicePage) {
    // Reads are served by the read-only slot and never exit; a write does.
    vm.bus.mmio(DEVICE_PAGE_GPA, NOXS_PAGE_SIZE, this.name, (offset, _data, len, write) => {
      if (!write) throw new GuestFault('mmio', `read ${len} bytes of its device page at offset 0x${offset.toString(16)} that KVM could not serve`);
      throw new GuestFault('device-page-write',
        `wrote ${len} bytes to its read-only device page at offset 0x${offset.toString(16)}: refused, VM stopped`);
    });
  }

  /** Asks the guest to end: flags the page; its next POLL returns at once. */
  requestShutdown(): void {
    this.page.setFlags(NOXS_FLAG_SHUTDOWN);
  }

  get shutdownRequested(): boolean {
    return (this.page.flags & NOXS_FLAG_SHUTDOWN) !== 0;
  }

  /** The page itself goes with the shell. */
  close(): void {}
}
