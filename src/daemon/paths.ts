import { join } from 'node:path';

/**
 * Where the daemon keeps its socket and its executors' sockets and logs:
 * $LIGHTVM_RUNTIME_DIR, else $XDG_RUNTIME_DIR/lightvm, else /run/lightvm.
 */
export function defaultRuntimeDir(): string {
  if (process.env.LIGHTVM_RUNTIME_DIR) return process.env.LIGHTVM_RUNTIME_DIR;
  if (process.env.XDG_RUNTIME_DIR) return join(process.env.XDG_RUNTIME_DIR, 'lightvm');
  return '/run/lightvm';
}

export function defaultSocketPath(runtimeDir = defaultRuntimeDir()): string {
  return process.env.LIGHTVM_SOCKET ?? join(runtimeDir, 'lightvmd.sock');
}
