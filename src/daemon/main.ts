// Runs lightvmd in the foreground until SIGTERM or SIGINT.
import { pino } from 'pino';
import { DEFAULT_BRIDGE_CONFIG } from '../toolstack/network.js';
import type { DeviceMode } from '../toolstack/xenstore-devices.js';
import { Daemon, type DaemonOptions } from './daemon.js';
import { defaultRuntimeDir, defaultSocketPath } from './paths.js';

export interface DaemonCliOptions {
  socket?: string;
  runtimeDir?: string;
  vmsPerExecutor?: number;
  spare?: number;
  pool?: Record<number, number>;
  logLevel?: string;
  /** On SIGTERM, destroy the VMs instead of saving them for the next daemon. */
  destroyOnStop?: boolean;
  bridge?: string;
  bridgeAddress?: string;
  /** More directories requests may name files in (--allow-path). */
  allowPaths?: string[];
  devices?: DeviceMode;
}

/**
 * LIGHTVM_START_TIMEOUT_MS: the longest an executor may say nothing of a VM
 * it starts (default START_TIMEOUT_MS). Not an option: only the tests that
 * stall an executor on purpose need another value.
 */
function startTimeoutFromEnv(): number | undefined {
  const v = process.env.LIGHTVM_START_TIMEOUT_MS;
  if (v === undefined || v === '') return undefined;
  const ms = Number(v);
  if (!Number.isInteger(ms) || ms < 1 || ms > 3_600_000) throw new Error(`LIGHTVM_START_TIMEOUT_MS: "${v}" is not a whole number of ms from 1 to 3600000`);
  return ms;
}

export async function runDaemon(opts: DaemonCliOptions): Promise<void> {
  const logger = pino({ name: 'lightvmd', level: opts.logLevel ?? process.env.LIGHTVM_LOG ?? 'info' });
  const runtimeDir = opts.runtimeDir ?? defaultRuntimeDir();
  const startTimeoutMs = startTimeoutFromEnv();
  const options: DaemonOptions = {
    runtimeDir,
    socketPath: opts.socket ?? defaultSocketPath(runtimeDir),
    vmsPerExecutor: opts.vmsPerExecutor,
    spareExecutors: opts.spare,
    pool: opts.pool,
    allowPaths: opts.allowPaths,
    devices: opts.devices,
    startTimeoutMs,
    bridge: opts.bridge || opts.bridgeAddress
      ? { name: opts.bridge ?? DEFAULT_BRIDGE_CONFIG.name, address: opts.bridgeAddress === 'none' ? undefined : opts.bridgeAddress ?? DEFAULT_BRIDGE_CONFIG.address }
      : undefined,
    logger,
  };
  const daemon = await Daemon.start(options);
  let stopping = false;
  const stop = (signal: string, destroy = opts.destroyOnStop): void => {
    if (stopping) return;
    stopping = true;
    logger.info({ signal, destroy: destroy === true }, 'stopping');
    void daemon.stop({ destroy }).then(() => {
      logger.info('stopped');
      process.exit(0);
    }, (err: unknown) => {
      logger.error({ err }, 'stop failed');
      process.exit(1);
    });
  };
  daemon.onStopRequest = (destroy) => stop('API', destroy);
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));
}
