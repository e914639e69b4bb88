// Block devices as the toolstack takes them: each names a disk file on this
// host by absolute path, which must exist as a regular file the VM may use
// as asked (read-only or read-write). Checked before any executor is asked,
// so that a mistake is said with its field and never costs a shell: for a
// create, and as much for a restore or an incoming migration, whose devices
// come from a file or a peer (Host.hostDevices).
import { accessSync, constants, statSync } from 'node:fs';
import { isAbsolute } from 'node:path';
import { DeviceConfigError, type DeviceEntry } from '../vmm/device-page.js';
import { fileKind } from '../vmm/regular-file.js';

/** what prefixes each path in a message ("a.snap: its disk "), as PathPolicy.checkDevices does. */
export function checkDisks(devices: readonly DeviceEntry[], what = ''): void {
  devices.forEach((d, i) => {
    if (d.type !== 'block') return;
    const field = `devices.${i}.path`;
    if (typeof d.path !== 'string' || !d.path) throw new DeviceConfigError(field, 'a block device needs the path of its disk file');
    if (!isAbsolute(d.path)) throw new DeviceConfigError(field, `${what}"${d.path}" is not an absolute path`);
    let size: number;
    try {
      const st = statSync(d.path);
      if (!st.isFile()) throw new DeviceConfigError(field, `${what}${d.path} is ${fileKind(st)}, not a regular file`);
      size = st.size;
      accessSync(d.path, d.readonly ? constants.R_OK : constants.R_OK | constants.W_OK);
    } catch (err) {
      if (err instanceof DeviceConfigError) throw err;
      throw new DeviceConfigError(field, `${what}${d.path}: ${(err as Error).message}`);
    }
    if (size < 512) throw new DeviceConfigError(field, `${what}${d.path} holds ${size} bytes, less than one 512-byte sector`);
  });
}
