// Messages between a host (the toolstack) and an executor thread.
import type { VmExit } from './exit.js';
import { FieldError } from './field-error.js';
import type { Snapshot } from './snapshot.js';
import type { VmConfig } from './vm-schema.js';

/** A VM to start: its configuration (vm-schema.ts: name, memory in bytes, cmdline, devices) and how. */
export interface CreateRequest extends Pick<VmConfig, 'name' | 'memory' | 'cmdline' | 'devices'> {
  op: 'create';
  vmId: VmConfig['id'];
  /** Path of the ELF image (or, with linux, of the bzImage). */
  image: string;
  /** A Linux kernel (bzImage): its vCPU gets a thread of its own, an irqchip, a UART; initrd is a path. */
  linux?: { initrd?: string };
  /** Take a prepared shell if one is there. */
  warm: boolean;
  /** Single-step from entry to the first hypercall and count instructions. */
  countInstructions?: boolean;
  /** Wall-clock ms when the toolstack took the request: kept by the executor, so a re-adopting daemon knows it. */
  createdAt?: number;
  /** Monotonic ns stamps along the request path, for latency breakdowns. */
  trace?: { apiNs?: number; sentNs?: number; wokeNs?: number; createdNs?: number; replyNs?: number; firstFrameNs?: number };
}

/** Start a VM from a snapshot (decoded and checked by the toolstack). */
export interface RestoreRequest {
  op: 'restore';
  config: CreateRequest;
  /** Decoded already (live migration), or a file the executor reads and checks itself. */
  snapshot?: Snapshot;
  file?: string;
}

export type ExecutorRequest =
  | CreateRequest
  | RestoreRequest
  /**
   * Snapshot a VM: to a file (written by the executor) or back in the reply.
   * keep: it runs on (a checkpoint); otherwise it ends, as saved.
   */
  | {
    op: 'save'; requestId: number; vmId: number; file?: string; keep: boolean;
    /** Live migration's last step: pause the VM and take only the pages written since the last copy. */
    final?: boolean;
    /** Answer with the SHA-256 of every page of RAM as captured, too. */
    digest?: boolean;
  }
  /** Live migration: copy the VM's pages (round 0: every written page; then: the pages the guest or the host wrote since). */
  | { op: 'copy-pages'; requestId: number; vmId: number; round: number }
  /** The SHA-256 of every page of the VM's RAM as it is now, answered with 'digest'. */
  | { op: 'digest'; requestId: number; vmId: number }
  /**
   * Just-in-time service: keep its taps on the bridge and boot VM vmId from
   * a prepared shell when the first frame for it arrives; stop that VM after
   * idleMs without traffic (then the toolstack arms the next one).
   */
  | { op: 'arm'; serviceId: number; vmId: number; config: CreateRequest; idleMs: number }
  | { op: 'disarm'; serviceId: number }
  /** Live migration gave up: no more rounds, and the VM runs on (unpaused) here. */
  | { op: 'migration-abort'; vmId: number }
  | { op: 'destroy'; vmId: number; exit?: VmExit }
  | { op: 'pause'; vmId: number }
  | { op: 'unpause'; vmId: number }
  /** Bytes for the VM's virtio-console receive queue, answered with 'console-input'. */
  | { op: 'console-input'; requestId: number; vmId: number; data: Uint8Array }
  /** Ask the guest to end cleanly (it sees it at its next POLL). */
  | { op: 'shutdown'; vmId: number }
  /** Keep this many prepared shells of this memory size. */
  | { op: 'pool'; memory: number; target: number }
  /** Per-VM counters (of one VM when vmId is given), answered with 'stats'. */
  | { op: 'stats'; requestId: number; vmId?: number }
  | { op: 'stop' };

/** Monotonic nanosecond timestamps (process.hrtime) of one VM's life. */
export interface Timings {
  /** Stamps of the request on its way here (API, sent by toolstack, relayed by executor process). */
  trace?: CreateRequest['trace'];
  requestNs: number;
  shellNs: number;
  loadedNs: number;
  bootNs: number;
  endNs: number;
  /** Time spent creating the VM's taps and putting them on their bridges. */
  netSetupNs?: number;
  /** Freeing started (after endNs: it waits until the executor is idle). */
  destroyNs?: number;
  destroyedNs: number;
}

export interface VmStats {
  vmId: number;
  /** Time spent running the guest (KVM_RUN and exit handling). */
  cpuNs: number;
  exits: number;
  /** Time it waited, all told, because it wrote its console faster than the executor lets a VM. */
  consoleThrottledNs: number;
  /** Guest memory (RAM and device page) backed by host pages. */
  residentKiB: number;
  /** Per network device: frames in and out, and frames dropped (bad ones from the guest, too long for it). */
  nets: { id: number; tap: string; txFrames: number; rxFrames: number; txDropped: number; rxDropped: number }[];
}

export interface SerializedError {
  name: string;
  message: string;
  field?: string;
  file?: string;
}

export type ExecutorEvent =
  | { ev: 'ready'; tid: number; pid: number }
  | { ev: 'started'; vmId: number; warm: boolean; timings: Timings; paused?: boolean; /** Its memory size: a warm start took a shell of it. */ memory?: number }
  /** A just-in-time VM waits for its first packet, its taps on the bridge. */
  | { ev: 'armed'; vmId: number }
  | { ev: 'create-failed'; vmId: number; error: SerializedError }
  /**
   * A restore reading its file has read this many of its bytes (of total):
   * sent per chunk, so that the toolstack's wait for the restore is bounded
   * by the executor's silence, not by the file's size.
   */
  | { ev: 'restore-progress'; vmId: number; read: number; total: number }
  | { ev: 'booted'; vmId: number; bootNs: number; instructions?: number }
  /** dropped: console bytes of this VM lost before this chunk (a toolstack that did not keep up). */
  | { ev: 'console'; vmId: number; data: Uint8Array; dropped?: number }
  /** The guest ended: it never runs again. Its resources are freed soon after ('freed'). */
  | { ev: 'exit'; vmId: number; exit: VmExit; timings: Timings; exits: number; instructions?: number; nets?: VmStats['nets'] }
  /** Everything the VM held (KVM objects, memory) is given back. */
  | { ev: 'freed'; vmId: number; destroyNs: number; destroyedNs: number }
  | { ev: 'paused'; vmId: number; ok: boolean }
  | { ev: 'unpaused'; vmId: number; ok: boolean }
  | { ev: 'pool'; memory: number; depth: number }
  /** Preparing shells of this size failed; the pool for it is off. */
  | { ev: 'pool-error'; memory: number; error: SerializedError }
  | { ev: 'stats'; requestId: number; vms: VmStats[] }
  /** The input was taken whole, or not at all (error says why). */
  | { ev: 'console-input'; requestId: number; vmId: number; error?: SerializedError }
  | { ev: 'saved'; requestId: number; vmId: number; file?: string; data?: Uint8Array; bytes: number; pages: number; ns: number; sha256?: string }
  | { ev: 'save-failed'; requestId: number; vmId: number; error: SerializedError }
  /** Page records (u32 page number, then 4096 bytes) for live migration. */
  | { ev: 'pages'; requestId: number; vmId: number; data: Uint8Array; count: number }
  | { ev: 'digest'; requestId: number; vmId: number; sha256?: string; error?: SerializedError }
  | { ev: 'stopped' }
  | { ev: 'fatal'; error: SerializedError };

/** Shared control words: [PENDING] set by the host after posting, [IN_GUEST] set while vCPUs run. */
export const CONTROL_PENDING = 0;
export const CONTROL_IN_GUEST = 1;
export const CONTROL_WORDS = 2;

/** The signal that interrupts KVM_RUN on an executor thread. */
export const KICK_SIGNAL = 37; // SIGRTMIN + 3 as glibc numbers them

export function serializeError(err: unknown): SerializedError {
  if (err instanceof FieldError) return { name: err.name, message: err.message, field: err.field, file: err.file };
  if (err instanceof Error) return { name: err.name, message: err.message };
  return { name: 'Error', message: String(err) };
}

// ---- executor processes ----

export interface AdoptedVm {
  config: CreateRequest;
  state: 'running' | 'paused' | 'exited';
  /** Paused by a live migration's last step: it may already run at the destination. */
  migrationPaused?: boolean;
  warm: boolean;
  timings: Timings | undefined;
  exit: VmExit | undefined;
  console: Uint8Array;
}

/** A just-in-time service an executor keeps (its taps, and its next VM armed or its VM running). */
export interface AdoptedService {
  serviceId: number;
  /** Its configuration: that of its armed VM, or of the one armed last. */
  config: CreateRequest;
  idleMs: number;
  /** The VM that boots at its next packet. */
  armedVmId?: number;
  /** Its VM while one runs (among the hello's VMs). */
  vmId?: number;
}

/** A restore still reading its file when a toolstack connected: it starts (or fails) later, as a restore does. */
export interface AdoptedRestore {
  config: CreateRequest;
  /** Bytes of its file read so far, of total. */
  read: number;
  total: number;
}

/** A restore that failed part way through its file; kept by an executor process until forgotten. */
export interface FailedRestore {
  config: CreateRequest;
  error: SerializedError;
}

/** Requests only an executor process understands. */
export type ProcessRequest =
  | ExecutorRequest
  /** Sent on connect: answered with 'hello'. */
  | { op: 'hello' }
  /** The toolstack has recorded this VM's end (or its restore's failure): drop it. */
  | { op: 'forget'; vmId: number }
  /** Stop the process: destroy its VMs and exit. */
  | { op: 'terminate' };

export type ProcessEvent =
  | ExecutorEvent
  | { ev: 'hello'; id: number; pid: number; tid: number; vms: AdoptedVm[]; services?: AdoptedService[]; restoring?: AdoptedRestore[]; failedRestores?: FailedRestore[]; pools: Record<number, number> }
  | { ev: 'executor-lost'; error: SerializedError };

