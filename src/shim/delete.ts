// `containerd-shim-lightvm-v1 delete`: containerd lost the server (or it
// exited) and cleans a task up: destroy its VM, print a DeleteResponse.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { create, toBinary } from '@bufbuild/protobuf';
import { timestampNow } from '@bufbuild/protobuf/wkt';
import { ApiError, Client } from '../cli/client.js';
import { kernelCopyPath, removeKernel } from '../container/kernel-copy.js';
import { vmNameFor } from '../container/names.js';
import { defaultSocketPath } from '../daemon/paths.js';
import { VM_MARKER } from './address.js';
import { DeleteResponseSchema } from './gen/task_pb.js';

/** The task's VM, destroyed; a DeleteResponse on stdout (exit 128+SIGKILL). */
export async function deleteTask(flags: Map<string, string>): Promise<void> {
  const ns = flags.get('namespace') ?? 'default';
  const id = flags.get('id') ?? '';
  const vm = vmNameFor(`${flags.get('address') ?? ''}/${ns}`, id);
  const client = new Client(defaultSocketPath());
  try {
    try {
      await client.request('DELETE', `/v1/vms/${vm}`);
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) throw err;
    }
    // The server copied its kernel there at start.
    const { runtime_dir: runtimeDir } = await client.request<{ runtime_dir: string }>('GET', '/v1/host');
    removeKernel(kernelCopyPath(runtimeDir, vm));
    rmSync(join(flags.get('bundle') ?? '.', VM_MARKER), { force: true });
  } finally {
    client.close();
  }
  process.stdout.write(toBinary(DeleteResponseSchema, create(DeleteResponseSchema, { pid: 0, exitStatus: 128 + 9, exitedAt: timestampNow() })));
}

