// JSON schemas of the REST API: request validation and the OpenAPI document.
import type { SchemaType } from '../vmm/schema-type.js';
import { devices as deviceList, hostPath, vmCmdline, vmName } from '../vmm/vm-schema.js';

// The types of what the routes take are those of their schemas (SchemaType), never written twice.
export type CreateBody = SchemaType<typeof createVm.body>;
export type ServiceBody = SchemaType<typeof createService.body>;
export type IdParams = SchemaType<typeof idParams>;
export type ConsoleInputBody = SchemaType<typeof consoleInput.body>;
/** A VM as the schema shows it (view.ts narrows its exit and timings). */
export type VmSchemaView = SchemaType<typeof vm>;
export type ServiceView = SchemaType<typeof service>;
/** A route's answer of this status, from its schema. */
export type ReplyOf<R, Status extends number = 200> = R extends { response: infer A } ? Status extends keyof A ? SchemaType<A[Status]> : never : never;
export type ApiErrorBody = SchemaType<typeof error>;
export type HostInfo = ReplyOf<typeof hostInfo>;
export type PoolView = ReplyOf<typeof getPool>['pools'][number];
export type VmStatsView = ReplyOf<typeof stats>['vms'][number];
/** What a route's handler is given (fastify's request types), from the route's schemas. */
export interface RouteOf<R> {
  Params: R extends { params: infer P } ? SchemaType<P> : unknown;
  Querystring: R extends { querystring: infer Q } ? SchemaType<Q> : unknown;
  Body: R extends { body: infer B } ? SchemaType<B> : unknown;
}

export const error = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message', 'field'],
      properties: { code: { type: 'string' }, message: { type: 'string' }, field: { type: ['string', 'null'] } },
    },
  },
} as const;

const exit = {
  type: ['object', 'null'],
  description: 'how the VM ended: {kind: halt, status} | {kind: crash, code, reason} | {kind: destroyed} | ' +
    '{kind: saved, file} | {kind: migrated, to} | {kind: idle, ms} (a just-in-time VM without traffic for ms)',
  properties: {
    kind: { type: 'string', enum: ['halt', 'crash', 'destroyed', 'saved', 'migrated', 'idle'] },
    status: { type: ['integer', 'string'], pattern: '^-?[0-9]+$', description: 'the guest\'s 64-bit exit status: a number, or a decimal string beyond ±(2^53 - 1), where JSON numbers lose digits' },
    code: { type: 'string' },
    reason: { type: 'string' },
    file: { type: ['string', 'null'] },
    to: { type: 'string' },
    ms: { type: 'integer' },
  },
} as const;

const timings = {
  type: ['object', 'null'],
  description: 'monotonic nanosecond timestamps (CLOCK_MONOTONIC) of the VM life phases',
  properties: {
    trace: {
      type: 'object',
      description: 'stamps along the request path: API handler, sent to the executor, executor thread awake',
      properties: {
        apiNs: { type: 'number' }, sentNs: { type: 'number' }, wokeNs: { type: 'number' }, createdNs: { type: 'number' }, replyNs: { type: 'number' },
        firstFrameNs: { type: 'number', description: 'a just-in-time VM: when the packet that booted it arrived' },
      },
    },
    requestNs: { type: 'number' }, shellNs: { type: 'number' }, loadedNs: { type: 'number' },
    bootNs: { type: 'number' }, endNs: { type: 'number' }, destroyNs: { type: 'number' }, destroyedNs: { type: 'number' },
    netSetupNs: { type: 'number' },
  },
} as const;

export const vm = {
  type: 'object',
  required: ['id', 'name', 'image', 'memory_mib', 'cmdline', 'state', 'executor', 'warm', 'created_at', 'exit', 'console_dropped_bytes', 'timings'],
  properties: {
    id: { type: 'integer' },
    name: { type: 'string' },
    image: { type: 'string' },
    memory_mib: { type: 'integer' },
    cmdline: { type: 'string' },
    state: { type: 'string', enum: ['armed', 'running', 'paused', 'migrating', 'exited'], description: 'migrating: a live migration moves it (in or out)' },
    executor: { type: 'integer' },
    warm: { type: 'boolean', description: 'started from a prepared shell' },
    created_at: { type: 'string', format: 'date-time' },
    exit,
    console_dropped_bytes: { type: 'integer', description: 'console output lost on its way to the daemon (which did not keep up); what the guest writes beyond 1 MiB/s waits instead' },
    timings,
  },
} as const;

const vmReply = { type: 'object', required: ['vm'], properties: { vm } } as const;



const idParams = {
  type: 'object',
  required: ['id'],
  properties: { id: { type: 'string', minLength: 1, maxLength: 64, description: 'VM id (digits only) or name (never digits only)' } },
} as const;

const tags = ['vms'];

export const createVm = {
  tags,
  summary: 'create and start a VM',
  body: {
    type: 'object',
    required: ['image'],
    additionalProperties: false,
    properties: {
      image: { ...hostPath, description: 'ELF or Linux kernel (bzImage) path on the host (inside a directory the daemon may use: 403 otherwise), or a built-in image name' },
      name: vmName,
      memory: { type: 'integer', minimum: 2, maximum: 3072, description: 'MiB of guest memory (default 4)' },
      cmdline: vmCmdline,
      initrd: { ...hostPath, description: 'with a Linux kernel (bzImage) as image: its initial ramdisk, a path on the host (inside a directory the daemon may use)' },
      devices: deviceList,
      warm: { type: 'boolean', description: 'take a prepared shell if one is ready (default true)' },
      wait: { type: 'string', enum: ['started', 'booted', 'exit'], description: 'answer once the VM has started (default), made its first hypercall, or ended' },
      lease_ms: {
        type: 'integer', minimum: 1, maximum: 600_000,
        description: 'the VM is owned by one client: the one that follows its console with lease=true. It is destroyed if nobody takes the lease within lease_ms, and when the holder\'s connection closes before the VM has ended',
      },
    },
  },
  response: {
    201: {
      type: 'object',
      required: ['vm', 'timings', 'console'],
      properties: {
        vm, timings, console: { type: ['string', 'null'], description: 'the console, with wait=exit' },
        xenstore: {
          type: ['object', 'null'], additionalProperties: { type: 'number' },
          description: 'in --devices xenstore: milliseconds of each libxl step of this create (name_check_ms inside domain_make_ms, backend_wait_ms inside vifs_ms), connect_ms for the vifs\' handshakes after the VM runs, and name_reads (the names the check read)',
        },
      },
    },
    400: error, 403: error, 409: error, 413: error, 422: error, 503: error,
  },
} as const;

const service = {
  type: 'object',
  required: ['name', 'idle_ms', 'boots', 'active', 'vm'],
  properties: {
    name: { type: 'string' },
    idle_ms: { type: 'integer' },
    boots: { type: 'integer', description: 'VMs booted so far by a first packet' },
    active: { type: 'boolean' },
    vm: { anyOf: [vm, { type: 'null' }], description: 'its current VM: armed (waiting for a packet) or running' },
  },
} as const;

export const createService = {
  tags: ['services'],
  summary: 'serve just in time: a VM boots from a prepared shell when the first packet for it arrives, and stops when idle',
  body: {
    type: 'object',
    required: ['image', 'name', 'devices'],
    additionalProperties: false,
    properties: {
      ...createVm.body.properties,
      name: createVm.body.properties.name,
      devices: { ...createVm.body.properties.devices, minItems: 1 },
      idle_ms: { type: 'integer', minimum: 100, maximum: 86_400_000, description: 'stop the VM after this long without traffic (default 30000)' },
    },
  },
  response: { 201: { type: 'object', required: ['service'], properties: { service } }, 400: error, 403: error, 409: error, 422: error },
} as const;

export const listServices = {
  tags: ['services'], summary: 'just-in-time services',
  response: { 200: { type: 'object', required: ['services'], properties: { services: { type: 'array', items: service } } } },
} as const;

export const deleteService = {
  tags: ['services'], summary: 'stop serving: its VM ends and its taps go',
  params: { type: 'object', required: ['name'], properties: { name: { type: 'string', minLength: 1, maxLength: vmName.maxLength } } },
  response: { 200: { type: 'object', required: ['service'], properties: { service } }, 404: error },
} as const;

export const listVms = {
  tags, summary: 'list VMs',
  response: { 200: { type: 'object', required: ['vms'], properties: { vms: { type: 'array', items: vm } } } },
} as const;

export const getVm = { tags, summary: 'one VM', params: idParams, response: { 200: vmReply, 404: error } } as const;

export const destroyVm = {
  tags, summary: 'destroy a VM',
  params: idParams,
  querystring: { type: 'object', properties: { wait: { type: 'boolean', description: 'answer once it is gone (default true)' } } },
  response: { 200: vmReply, 202: vmReply, 404: error },
} as const;

export const pauseVm = {
  tags, summary: 'pause a VM: its vCPU stops at once',
  params: idParams,
  response: { 200: vmReply, 404: error, 409: error },
} as const;

export const unpauseVm = {
  tags, summary: 'unpause a VM',
  params: idParams,
  querystring: { type: 'object', properties: { force: { type: 'boolean', description: 'also a VM held by an interrupted live migration' } } },
  response: { 200: vmReply, 404: error, 409: error },
} as const;

export const shutdownVm = {
  tags, summary: 'ask the guest to end cleanly; destroy it after grace_ms',
  params: idParams,
  body: {
    type: ['object', 'null'],
    additionalProperties: false,
    properties: { grace_ms: { type: 'integer', minimum: 0, maximum: 600000 } },
  },
  response: { 200: vmReply, 404: error },
} as const;

const snapshotFile = { ...hostPath, description: 'absolute path on the daemon host, inside a directory the daemon may use (403 otherwise)' } as const;

export const saveVm = {
  tags, summary: 'save a VM to a snapshot file; it ends (as xl save) unless checkpoint',
  params: idParams,
  body: {
    type: 'object', required: ['file'], additionalProperties: false,
    properties: { file: snapshotFile, checkpoint: { type: 'boolean', description: 'keep the VM running' } },
  },
  response: {
    200: {
      type: 'object', required: ['vm', 'snapshot'],
      properties: {
        vm,
        snapshot: {
          type: 'object', required: ['file', 'bytes', 'pages', 'ms'],
          properties: { file: { type: 'string' }, bytes: { type: 'integer' }, pages: { type: 'integer' }, ms: { type: 'number' } },
        },
      },
    },
    400: error, 403: error, 404: error, 409: error, 422: error,
  },
} as const;

export const restoreVm = {
  tags, summary: 'start a VM from a snapshot file, into a prepared shell when one is ready',
  body: {
    type: 'object', required: ['file'], additionalProperties: false,
    properties: { file: snapshotFile, name: vmName },
  },
  response: { 201: vmReply, 400: error, 403: error, 409: error, 422: error, 503: error },
} as const;

export const migrateVm = {
  tags, summary: 'live-migrate a VM to a daemon listening at host:port; it runs on here if anything fails',
  params: idParams,
  body: {
    type: 'object', required: ['to', 'token'], additionalProperties: false,
    properties: {
      to: { type: 'string', minLength: 3, maxLength: 300, description: 'host:port' },
      token: { type: 'string', minLength: 16, maxLength: 256, description: 'shared with the destination; never sent: each side proves it holds it' },
      timeout_ms: { type: 'integer', minimum: 100, maximum: 600000, default: 10000, description: 'bound on every wait for the destination' },
    },
  },
  response: {
    200: {
      type: 'object', required: ['vm', 'migration'],
      properties: {
        vm,
        migration: {
          type: 'object', required: ['ms', 'downtime_ms', 'rounds', 'pages', 'bytes', 'destination_id', 'crypto_ms'],
          properties: {
            ms: { type: 'number' }, downtime_ms: { type: 'number' }, rounds: { type: 'integer' },
            pages: { type: 'integer' }, bytes: { type: 'integer' }, destination_id: { type: 'integer' },
            crypto_ms: { type: 'number', description: 'time the source spent sealing and opening records (AES-256-GCM)' },
          },
        },
      },
    },
    400: error, 404: error, 409: error, 502: error,
  },
} as const;

const listening = {
  type: ['object', 'null'],
  properties: { address: { type: 'string' }, port: { type: 'integer' } },
} as const;

export const listen = {
  tags: ['migration'], summary: 'accept incoming migrations on a TCP port, from senders with this token',
  body: {
    type: 'object', required: ['port', 'token'], additionalProperties: false,
    properties: {
      port: { type: 'integer', minimum: 0, maximum: 65535, description: '0 picks a free port' },
      address: { type: 'string', minLength: 1, maxLength: 100, description: 'address to listen on (default 127.0.0.1)' },
      token: { type: 'string', minLength: 16, maxLength: 256 },
    },
  },
  response: { 200: { type: 'object', required: ['listening'], properties: { listening } }, 400: error, 409: error },
} as const;

export const unlisten = {
  tags: ['migration'], summary: 'stop accepting migrations',
  response: { 200: { type: 'object', required: ['listening'], properties: { listening } } },
} as const;

export const consoleVm = {
  tags, summary: 'the console: what it printed so far, then (follow) what it prints until it ends',
  params: idParams,
  querystring: {
    type: 'object',
    properties: {
      follow: { type: 'boolean' },
      lease: { type: 'boolean', description: 'with follow: take the VM\'s lease (see lease_ms at create): the VM is destroyed when this connection closes before it ends' },
    },
  },
  response: { 200: { type: 'string', description: 'text/plain stream' }, 404: error, 409: error },
} as const;

/** Bytes one console input request may carry (decoded). */
export const CONSOLE_INPUT_MAX = 16 * 1024;

export const consoleInput = {
  tags, summary: "send bytes to the VM's virtio-console (its receive queue): taken whole, or refused",
  params: idParams,
  body: {
    type: 'object', additionalProperties: false,
    description: 'exactly one of text and base64',
    properties: {
      text: { type: 'string', maxLength: CONSOLE_INPUT_MAX, description: `UTF-8 text, at most ${CONSOLE_INPUT_MAX} bytes`, example: 'hello\n' },
      base64: {
        type: 'string', maxLength: Math.ceil(CONSOLE_INPUT_MAX / 3) * 4, pattern: '^[A-Za-z0-9+/]*={0,2}$',
        description: `any bytes, base64-encoded: at most ${CONSOLE_INPUT_MAX} bytes decoded`,
      },
    },
  },
  response: {
    200: { type: 'object', required: ['bytes'], properties: { bytes: { type: 'integer', description: 'bytes taken (all that were sent)' } } },
    404: error,
    409: { ...error, description: 'the VM has ended, migrates, or has no virtio-console device' },
    503: { ...error, description: 'the guest has left too much input unread (64 KiB): try again later' },
  },
} as const;

export const events = {
  tags: ['host'], summary: 'a stream of events, one JSON object per line (vm.created, vm.exited, executor.lost)',
  response: { 200: { type: 'string', description: 'application/x-ndjson stream' } },
} as const;

const pools = {
  type: 'array',
  items: {
    type: 'object',
    required: ['memory_mib', 'target', 'depth', 'warm'],
    properties: {
      memory_mib: { type: 'number' },
      target: { type: 'integer' },
      depth: { type: 'integer', description: 'prepared shells ready' },
      warm: { type: 'integer', description: 'of those, already run once (the preparer runs every shell once before handing it over)' },
    },
  },
} as const;

export const getPool = {
  tags: ['pool'], summary: 'prepared shells: target and depth per memory size',
  response: { 200: { type: 'object', required: ['pools'], properties: { pools } } },
} as const;

export const setPool = {
  tags: ['pool'], summary: 'keep count prepared shells of this memory size',
  body: {
    type: 'object', required: ['memory', 'count'], additionalProperties: false,
    properties: { memory: { type: 'integer', minimum: 2, maximum: 3072 }, count: { type: 'integer', minimum: 0, maximum: 4096 } },
  },
  response: { 200: { type: 'object', required: ['pools'], properties: { pools } }, 400: error },
} as const;

export const hostInfo = {
  tags: ['host'], summary: 'the daemon and its executors',
  response: {
    200: {
      type: 'object',
      required: ['version', 'pid', 'uptime_s', 'vms', 'vms_per_executor', 'executors', 'pools', 'daemon_rss_kib', 'runtime_dir', 'allowed_paths', 'devices', 'xenstore_socket'],
      properties: {
        version: { type: 'string' },
        pid: { type: 'integer' },
        uptime_s: { type: 'integer' },
        vms: { type: 'integer' },
        vms_per_executor: { type: 'integer' },
        executors: {
          type: 'array',
          items: {
            type: 'object', required: ['id', 'pid', 'vms', 'shells'],
            properties: { id: { type: 'integer' }, pid: { type: 'integer' }, vms: { type: 'integer' }, shells: { type: 'integer' } },
          },
        },
        pools,
        daemon_rss_kib: { type: 'integer' },
        runtime_dir: { type: 'string', description: 'where the daemon keeps its state; a client may place files for it under it (as lightvm-oci does kernels)' },
        allowed_paths: {
          type: 'array', items: { type: 'string' },
          description: 'the directories (symlinks resolved) images, disks and snapshot files named in requests must lie in: the runtime directory, the built-in images, each --allow-path',
        },
        devices: { type: 'string', enum: ['noxs', 'xenstore'], description: 'the device mode (lightvm daemon --devices): xenstore adds libxl\'s XenStore steps to each create and destroy' },
        xenstore_socket: { type: ['string', 'null'], description: 'in xenstore mode, the socket of the store the daemon started (XENSTORED_PATH for xenstore-utils)' },
      },
    },
  },
} as const;

export const stopDaemon = {
  tags: ['host'], summary: 'stop the daemon: its VMs are saved and restored by the next one, or destroyed',
  body: { type: ['object', 'null'], additionalProperties: false, properties: { destroy: { type: 'boolean' } } },
  response: {
    202: { type: 'object', required: ['stopping', 'vms'], properties: { stopping: { type: 'boolean' }, vms: { type: 'string' } } },
    409: error,
  },
} as const;

const vmCounters = {
  id: { type: 'integer' }, executor: { type: 'integer' }, cpu_ns: { type: 'number', description: 'time spent running the guest (KVM_RUN and exit handling)' },
  console_throttled_ms: { type: 'integer', description: 'time the guest waited because it wrote its console faster than 1 MiB/s' },
  exits: { type: 'integer' }, resident_kib: { type: 'integer', description: 'guest memory (RAM and device page) backed by host pages' },
  nets: {
    type: 'array',
    items: {
      type: 'object', required: ['id', 'tap', 'txFrames', 'rxFrames', 'txDropped', 'rxDropped'],
      properties: {
        id: { type: 'integer' }, tap: { type: 'string' }, txFrames: { type: 'integer' }, rxFrames: { type: 'integer' },
        txDropped: { type: 'integer', description: 'bad frames from the guest (short, oversized, foreign source MAC), dropped' },
        rxDropped: { type: 'integer', description: 'frames longer than the guest\'s buffer, dropped' },
      },
    },
  },
} as const;
const counterFields = ['id', 'executor', 'cpu_ns', 'exits', 'console_throttled_ms', 'resident_kib', 'nets'] as const;

export const stats = {
  tags: ['host'], summary: 'per-VM CPU time, exits and resident guest memory',
  response: {
    200: {
      type: 'object', required: ['vms'],
      properties: { vms: { type: 'array', items: { type: 'object', required: counterFields, properties: vmCounters } } },
    },
  },
} as const;

export const vmStats = {
  tags, summary: 'one running VM\'s CPU time, exits and resident guest memory, asked of its executor alone',
  params: idParams,
  response: {
    200: {
      type: 'object', required: ['stats'],
      properties: {
        stats: {
          type: 'object', required: [...counterFields, 'name', 'memory_mib'],
          properties: { ...vmCounters, name: { type: 'string' }, memory_mib: { type: 'number', description: 'guest memory size: resident_kib grows up to it' } },
        },
      },
    },
    404: error,
    409: error,
  },
} as const;

/**
 * Adds the error answers every route can give to its documented responses:
 * 400 for bad parameters or bodies, 413 for a body over the limit, 415 for
 * a body that is not JSON.
 */
export function withErrors<T extends { params?: unknown; querystring?: unknown; body?: unknown; response?: Record<number, unknown> }>(schema: T): T {
  const response: Record<number, unknown> = { ...(schema.response ?? {}) };
  if (schema.params || schema.querystring || schema.body) response[400] ??= error;
  if (schema.body) {
    response[413] ??= error;
    response[415] ??= error;
  }
  return { ...schema, response };
}
