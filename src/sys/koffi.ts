// koffi, loaded for less. Its entry finds its prebuilt binary by reading this
// Node's ELF headers twice (for the ABI and the libc), then wraps the binary's
// exports in deprecation shims LightVM does not call: ~3-5 ms of CPU in every
// process here, a tenth of a `lightvm run` (issue 11). LightVM runs on x86-64
// Linux only (KVM, x86 guests), so the binary is the linux-x64 package's
// glibc one; where that does not load (musl, another layout) koffi's own
// entry decides as before. The binary is the same API: koffi's entry exports
// its properties.
import { createRequire } from 'node:module';
import type Koffi from 'koffi';

const load = createRequire(import.meta.url);

function loadKoffi(): typeof Koffi {
  try {
    const native = load('@koromix/koffi-linux-x64/linux_x64/koffi.node') as typeof Koffi & { version?: unknown };
    if (typeof native.load === 'function' && typeof native.version === 'string') return native;
  } catch {
    // Not there, or not for this libc: koffi's entry knows the others.
  }
  return load('koffi') as typeof Koffi;
}

const koffi = loadKoffi();
export default koffi;
