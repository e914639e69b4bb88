// The REST API of lightvmd, on a unix socket. Every route declares its
// schemas: fastify validates requests with them and @fastify/swagger turns
// them into the OpenAPI document (docs/openapi.json, GET /v1/openapi.json).
import type { IncomingMessage, ServerResponse } from 'node:http';
import { isAbsolute, resolve } from 'node:path';
import swagger from '@fastify/swagger';
import { Ajv } from 'ajv';
import Fastify, { type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply } from 'fastify';
import { MigrationFailure, migrateOut, parseAddress } from '../toolstack/migration.js';
import { VmCreateError } from '../toolstack/vm.js';
import type { JitService } from '../toolstack/host.js';
import type { VirtualMachine } from '../toolstack/vm.js';
import type { Daemon } from './daemon.js';
import { boundedWriter, Followers } from './followers.js';
import { vmView } from './view.js';
import * as S from './schemas.js';

export const API_VERSION = '0.1.0';
/** Largest request body accepted. */
export const BODY_LIMIT = 64 * 1024;

class ApiError extends Error {
  constructor(readonly statusCode: number, readonly code: string, message: string, readonly field?: string) {
    super(message);
  }
}

/** A VM a live migration moves takes no other state change but destroy. */
function notMigrating(vm: VirtualMachine): void {
  if (vm.migrating) throw new ApiError(409, 'conflict', `VM ${vm.name} is migrating`, 'state');
}

/** A path the daemon's policy refuses (PathRefusedError): 403, naming the field and the allowed roots. */
function refused(message: string, field: string | undefined): ApiError {
  return new ApiError(403, 'path-not-allowed', message, field);
}

function notFound(id: string): ApiError {
  return new ApiError(404, 'not-found', `no VM with id or name "${id}"`, 'id');
}

const tooLarge = { error: { code: 'too-large', message: `request body exceeds ${BODY_LIMIT} bytes`, field: 'body' } };

/**
 * A client that asks first (Expect: 100-continue) hears a 413 before it
 * sends a byte of a body over the limit. Answered after the body, a client
 * still writing it met a closed socket (EPIPE) and never read the 413.
 */
function refuseLargeBodiesFirst(app: FastifyInstance): void {
  app.server.on('checkContinue', (req: IncomingMessage, res: ServerResponse) => {
    if (Number(req.headers['content-length'] ?? 0) > BODY_LIMIT) {
      res.writeHead(413, { 'content-type': 'application/json; charset=utf-8', connection: 'close' }).end(JSON.stringify(tooLarge));
      return;
    }
    res.writeContinue();
    app.server.emit('request', req, res);
  });
}

export async function buildServer(daemon: Daemon): Promise<FastifyInstance> {
  const app = Fastify({
    // Requests are logged at info: the API logger starts at warn.
    loggerInstance: daemon.options.logger.child({ component: 'api' }, { level: 'warn' }) as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    // Streams (console -f, events) must not hold the daemon up when it stops.
    forceCloseConnections: true,
  });
  refuseLargeBodiesFirst(app);
  // Query strings and path parameters are text: coerce them ("true" → true).
  // Bodies are JSON: take their types as they are.
  const strict = new Ajv({ allErrors: false, removeAdditional: false, coerceTypes: false, useDefaults: true });
  const coercing = new Ajv({ allErrors: false, removeAdditional: false, coerceTypes: true, useDefaults: true });
  for (const a of [strict, coercing]) a.addKeyword('example');
  app.setValidatorCompiler(({ schema, httpPart }) => (httpPart === 'body' ? strict : coercing).compile(schema));
  // Bodies are JSON or nothing: plain text gets 415, like any other type.
  app.removeContentTypeParser('text/plain');
  await app.register(swagger, {
    openapi: {
      info: { title: 'lightvmd', version: API_VERSION, description: 'LightVM daemon: lightweight VMs on KVM' },
      servers: [{ url: 'http://localhost', description: 'the unix socket of lightvmd' }],
    },
  });

  app.setErrorHandler((err: FastifyError | ApiError, _req, reply) => {
    if (err instanceof ApiError) {
      return reply.code(err.statusCode).send({ error: { code: err.code, message: err.message, field: err.field ?? null } });
    }
    const fe = err as FastifyError;
    if (fe.validation) {
      const v = fe.validation[0];
      const path = (v?.instancePath ?? '').replace(/^\//, '').replace(/\//g, '.');
      const missing = (v?.params as { missingProperty?: string } | undefined)?.missingProperty;
      const extra = (v?.params as { additionalProperty?: string } | undefined)?.additionalProperty;
      const field = [path, missing ?? extra].filter(Boolean).join('.') || (fe.validationContext ?? 'body');
      const message = extra ? `${field}: unknown field` : `${field}: ${v?.message ?? 'invalid'}`;
      return reply.code(400).send({ error: { code: 'invalid', message, field } });
    }
    if (fe.code === 'FST_ERR_CTP_INVALID_JSON_BODY' || fe.code === 'FST_ERR_CTP_EMPTY_JSON_BODY' || fe instanceof SyntaxError) {
      return reply.code(400).send({ error: { code: 'invalid', message: `body: ${fe.message}`, field: 'body' } });
    }
    if (fe.code === 'FST_ERR_CTP_INVALID_MEDIA_TYPE') {
      return reply.code(415).send({ error: { code: 'unsupported-media-type', message: fe.message, field: 'content-type' } });
    }
    if (fe.statusCode === 413) {
      return reply.code(413).send(tooLarge);
    }
    if (fe.statusCode && fe.statusCode >= 400 && fe.statusCode < 500) {
      return reply.code(fe.statusCode).send({ error: { code: 'bad-request', message: fe.message, field: null } });
    }
    if (err.name === 'ExecutorError') {
      return reply.code(503).send({ error: { code: 'executor-lost', message: err.message, field: null } });
    }
    app.log.error(err);
    return reply.code(500).send({ error: { code: 'internal', message: err.message, field: null } });
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send({ error: { code: 'no-route', message: `no route ${req.method} ${req.url}`, field: null } }));

  const host = daemon.host;
  const followers = new Followers();
  // VMs created with lease_ms, until their lease is taken (held) or lapses.
  const leases = new WeakMap<VirtualMachine, { timer: NodeJS.Timeout | undefined; held: boolean }>();
  const find = (id: string): VirtualMachine => {
    const vm = host.get(id);
    if (!vm) throw notFound(id);
    return vm;
  };

  app.post<S.RouteOf<typeof S.createVm>>('/v1/vms', { schema: S.withErrors(S.createVm) }, async (req, reply) => {
    const apiNs = Number(process.hrtime.bigint());
    const b = req.body;
    let vm: VirtualMachine;
    try {
      vm = await host.create({
        image: b.image, name: b.name, memoryMiB: b.memory, cmdline: b.cmdline, initrd: b.initrd, devices: b.devices, warm: b.warm, trace: { apiNs },
      });
    } catch (err) {
      if (err instanceof VmCreateError) {
        if (err.kind === 'NameError') throw new ApiError(400, 'invalid', err.message, 'name');
        if (err.kind === 'PathRefusedError') throw refused(err.message, err.field);
        const status = err.kind === 'ExecutorError' || err.kind === 'KvmUnavailableError' ? 503 : err.field === 'name' ? 409 : 422;
        // The request's field is the image; which part of the file is wrong is in the message.
        throw new ApiError(status, status === 409 ? 'conflict' : 'create-failed', err.message, err.file ? 'image' : err.field);
      }
      throw err;
    }
    const createdNs = Number(process.hrtime.bigint());
    if (b.lease_ms !== undefined) {
      const lease = { timer: undefined as NodeJS.Timeout | undefined, held: false };
      lease.timer = setTimeout(() => {
        if (lease.held || vm.state === 'exited') return;
        daemon.options.logger.warn({ vm: vm.id, name: vm.name, lease_ms: b.lease_ms }, 'lease not taken: VM destroyed');
        void vm.destroy();
      }, b.lease_ms);
      leases.set(vm, lease);
      void vm.exited.then(() => clearTimeout(lease.timer));
    }
    if (b.wait === 'booted') await Promise.race([vm.booted, vm.exited]);
    if (b.wait === 'exit') await vm.exited;
    if (vm.timings?.trace) {
      vm.timings.trace.createdNs = createdNs;
      vm.timings.trace.replyNs = Number(process.hrtime.bigint());
    }
    return reply.code(201).send({ vm: vmView(vm), timings: vm.timings ?? null, console: b.wait === 'exit' ? vm.consoleText() : null, xenstore: vm.storeTimes ?? null });
  });

  app.get('/v1/vms', { schema: S.withErrors(S.listVms) }, async () => ({ vms: host.list().map(vmView) }));

  app.get<S.RouteOf<typeof S.getVm>>('/v1/vms/:id', { schema: S.withErrors(S.getVm) }, async (req) => ({ vm: vmView(find(req.params.id)) }));

  app.delete<S.RouteOf<typeof S.destroyVm>>('/v1/vms/:id', { schema: S.withErrors(S.destroyVm) }, async (req, reply) => {
    const vm = find(req.params.id);
    const exited = vm.destroy();
    if (req.query.wait === false) return reply.code(202).send({ vm: vmView(vm) });
    await exited;
    return reply.code(200).send({ vm: vmView(vm) });
  });

  for (const op of ['pause', 'unpause'] as const) {
    app.post<S.RouteOf<typeof S.unpauseVm>>(`/v1/vms/:id/${op}`, { schema: S.withErrors(op === 'pause' ? S.pauseVm : S.unpauseVm) }, async (req) => {
      const vm = find(req.params.id);
      notMigrating(vm);
      const want = op === 'pause' ? 'running' : 'paused';
      if (vm.state !== want) throw new ApiError(409, 'conflict', `VM ${vm.name} is ${vm.state}, not ${want}`, 'state');
      if (op === 'unpause' && vm.migrationHold && !req.query.force) {
        throw new ApiError(409, 'migration-hold', `VM ${vm.name} was paused by a live migration whose outcome this daemon does not know: it may run at the destination (unpause?force=true runs it here anyway)`, 'state');
      }
      await (op === 'pause' ? vm.pause() : vm.unpause({ force: true }));
      return { vm: vmView(vm) };
    });
  }

  app.post<S.RouteOf<typeof S.shutdownVm>>('/v1/vms/:id/shutdown', { schema: S.withErrors(S.shutdownVm) }, async (req) => {
    const vm = find(req.params.id);
    await vm.shutdown(req.body?.grace_ms ?? 10_000);
    return { vm: vmView(vm) };
  });

  app.post<S.RouteOf<typeof S.saveVm>>('/v1/vms/:id/save', { schema: S.withErrors(S.saveVm) }, async (req) => {
    const vm = find(req.params.id);
    if (vm.state === 'exited') throw new ApiError(409, 'conflict', `VM ${vm.name} has ended: nothing to save`, 'state');
    notMigrating(vm);
    if (!isAbsolute(req.body.file)) throw new ApiError(400, 'invalid', `file: "${req.body.file}" is not an absolute path`, 'file');
    let file = req.body.file;
    try {
      // The real path is written: a symlink is not followed out of the allowed directories.
      if (host.pathPolicy) file = host.pathPolicy.check(file, 'file');
    } catch (err) {
      throw refused((err as Error).message, 'file');
    }
    try {
      const r = await vm.save(file, { checkpoint: req.body.checkpoint });
      return { vm: vmView(vm), snapshot: { file: req.body.file, bytes: r.bytes, pages: r.pages, ms: r.ms } };
    } catch (err) {
      throw new ApiError(422, 'save-failed', (err as Error).message, 'file');
    }
  });

  app.post<S.RouteOf<typeof S.restoreVm>>('/v1/restore', { schema: S.withErrors(S.restoreVm) }, async (req, reply) => {
    if (!isAbsolute(req.body.file)) throw new ApiError(400, 'invalid', `file: "${req.body.file}" is not an absolute path`, 'file');
    let vm: VirtualMachine;
    try {
      vm = await host.restore({ file: req.body.file, name: req.body.name });
    } catch (err) {
      if (err instanceof VmCreateError) {
        if (err.kind === 'NameError') throw new ApiError(400, 'invalid', err.message, 'name');
        if (err.kind === 'PathRefusedError') throw refused(err.message, 'file');
        const status = err.kind === 'ExecutorError' ? 503 : err.field === 'name' ? 409 : 422;
        throw new ApiError(status, status === 409 ? 'conflict' : 'restore-failed', err.message, err.field === 'name' ? 'name' : 'file');
      }
      throw err;
    }
    return reply.code(201).send({ vm: vmView(vm) });
  });

  app.post<S.RouteOf<typeof S.migrateVm>>('/v1/vms/:id/migrate', { schema: S.withErrors(S.migrateVm) }, async (req) => {
    const vm = find(req.params.id);
    if (vm.state === 'exited') throw new ApiError(409, 'conflict', `VM ${vm.name} has ended: nothing to migrate`, 'state');
    notMigrating(vm);
    try {
      parseAddress(req.body.to);
    } catch (err) {
      throw new ApiError(400, 'invalid', `to: ${(err as Error).message}`, 'to');
    }
    try {
      const stats = await migrateOut(vm, req.body.to, req.body.token, { timeoutMs: req.body.timeout_ms });
      daemon.options.logger.info({ vm: vm.id, name: vm.name, to: req.body.to, ...stats }, 'vm migrated');
      return { vm: vmView(vm), migration: stats };
    } catch (err) {
      const held = err instanceof MigrationFailure && err.held;
      throw new ApiError(502, 'migration-failed', held ? (err as Error).message : `${(err as Error).message} (the VM runs on here)`, 'to');
    }
  });

  app.put<S.RouteOf<typeof S.listen>>('/v1/migration/listen', { schema: S.withErrors(S.listen) }, async (req) => {
    const { port, address, token } = req.body;
    try {
      await daemon.listenForMigrations({ port, address, token });
    } catch (err) {
      const e = err as NodeJS.ErrnoException;
      throw new ApiError(e.code === 'EADDRINUSE' ? 409 : 400, 'cannot-listen', `port: ${e.message}`, e.code ? 'port' : 'token');
    }
    return { listening: daemon.migrationListening };
  });

  app.delete('/v1/migration/listen', { schema: S.withErrors(S.unlisten) }, async () => {
    await daemon.stopListening();
    return { listening: null };
  });

  app.get<S.RouteOf<typeof S.consoleVm>>('/v1/vms/:id/console', { schema: S.withErrors(S.consoleVm) }, (req, reply) => {
    const vm = find(req.params.id);
    const raw = reply.raw;
    if (req.query.lease) {
      const lease = leases.get(vm);
      if (!req.query.follow) throw new ApiError(400, 'invalid', 'lease: only with follow=true', 'lease');
      if (!lease) throw new ApiError(409, 'conflict', `VM ${vm.name} was not created with lease_ms`, 'lease');
      if (lease.held) throw new ApiError(409, 'conflict', `VM ${vm.name}: its lease is already held`, 'lease');
      lease.held = true;
      clearTimeout(lease.timer);
      // The response's close is the connection's end (or ours, once the VM has ended).
      raw.on('close', () => {
        if (vm.state === 'exited') return;
        daemon.options.logger.info({ vm: vm.id, name: vm.name }, 'lease holder gone: VM destroyed');
        void vm.destroy();
      });
    }
    raw.writeHead(200, { 'content-type': 'text/plain; charset=utf-8', 'cache-control': 'no-store' });
    raw.write(vm.consoleText());
    if (!req.query.follow || vm.state === 'exited') {
      raw.end();
      return reply;
    }
    const write = boundedWriter(raw, (n) => `\n[lightvm: ${n} bytes of console skipped: this reader did not keep up]\n`);
    const unfollow = [followers.follow(vm, 'console', (b: Buffer) => write(b)), followers.follow(vm, 'exit', () => done())];
    const done = (): void => {
      for (const u of unfollow) u();
      raw.end();
    };
    req.raw.on('close', () => {
      for (const u of unfollow) u();
    });
    return reply;
  });

  app.post<S.RouteOf<typeof S.consoleInput>>('/v1/vms/:id/console/input', { schema: S.withErrors(S.consoleInput) }, async (req) => {
    // The request is checked whole before the VM is looked up: a bad body is bad for any VM.
    const { text, base64 } = req.body ?? {};
    if ((text === undefined) === (base64 === undefined)) throw new ApiError(400, 'invalid', 'body: give exactly one of text and base64', text === undefined ? 'text' : 'base64');
    const data = text !== undefined ? Buffer.from(text, 'utf8') : Buffer.from(base64!, 'base64');
    const field = text !== undefined ? 'text' : 'base64';
    if (data.length > S.CONSOLE_INPUT_MAX) throw new ApiError(400, 'invalid', `${field}: ${data.length} bytes is more than the ${S.CONSOLE_INPUT_MAX} one request may carry`, field);
    const vm = find(req.params.id);
    if (vm.state === 'exited') throw new ApiError(409, 'conflict', `VM ${vm.name} has ended: it takes no input`, 'state');
    notMigrating(vm);
    try {
      await vm.consoleInput(data);
    } catch (err) {
      const e = err as Error;
      if (e.name === 'VmEnded') throw new ApiError(409, 'conflict', e.message, 'state');
      if (e.name === 'NoConsoleDevice') throw new ApiError(409, 'no-console-device', e.message, 'devices');
      if (e.name === 'ConsoleInputFull') throw new ApiError(503, 'console-input-full', e.message, field);
      throw err;
    }
    return { bytes: data.length };
  });

  app.get('/v1/events', { schema: S.withErrors(S.events) }, (req, reply) => {
    const raw = reply.raw;
    raw.writeHead(200, { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' });
    const write = boundedWriter(raw, (n) => `${JSON.stringify({ type: 'skipped', time: new Date().toISOString(), bytes: n })}\n`);
    const send = (o: unknown): void => write(`${JSON.stringify(o)}\n`);
    const onVm = ({ type, vm }: { type: string; vm: VirtualMachine }): void =>
      send({ type: `vm.${type}`, time: new Date().toISOString(), vm: vmView(vm) });
    const onLost = (e: { executor: number; reason: string; vms: { id: number; name: string }[] }): void =>
      send({ type: 'executor.lost', time: new Date().toISOString(), ...e });
    const unfollow = [followers.follow(host, 'vm', onVm), followers.follow(host, 'executor-lost', onLost)];
    send({ type: 'hello', time: new Date().toISOString(), vms: host.running });
    req.raw.on('close', () => {
      for (const u of unfollow) u();
    });
    return reply;
  });

  const serviceView = (svc: JitService): S.ServiceView => ({
    name: svc.name, idle_ms: svc.idleMs, boots: svc.boots, active: svc.isActive, vm: svc.vm ? vmView(svc.vm) : null,
  });

  app.post<S.RouteOf<typeof S.createService>>('/v1/services', { schema: S.withErrors(S.createService) }, async (req, reply) => {
    const b = req.body;
    try {
      const svc = await host.serve({
        image: b.image, name: b.name, memoryMiB: b.memory, cmdline: b.cmdline, devices: b.devices, idleMs: b.idle_ms ?? 30_000,
      });
      return await reply.code(201).send({ service: serviceView(svc) });
    } catch (err) {
      if (err instanceof VmCreateError && err.kind === 'NameError') throw new ApiError(400, 'invalid', err.message, 'name');
      if (err instanceof VmCreateError && err.kind === 'PathRefusedError') throw refused(err.message, err.field);
      if (err instanceof VmCreateError) throw new ApiError(err.field === 'name' ? 409 : 422, 'serve-failed', err.message, err.field);
      throw new ApiError(422, 'serve-failed', (err as Error).message, 'devices');
    }
  });

  app.get('/v1/services', { schema: S.withErrors(S.listServices) }, async () => ({ services: host.listServices().map(serviceView) }));

  app.delete<S.RouteOf<typeof S.deleteService>>('/v1/services/:name', { schema: S.withErrors(S.deleteService) }, async (req) => {
    const svc = host.getService(req.params.name);
    if (!svc) throw new ApiError(404, 'not-found', `no service named "${req.params.name}"`, 'name');
    await svc.stop();
    return { service: serviceView(svc) };
  });

  app.get('/v1/pool', { schema: S.withErrors(S.getPool) }, async () => ({ pools: poolView(daemon) }));

  app.put<S.RouteOf<typeof S.setPool>>('/v1/pool', { schema: S.withErrors(S.setPool) }, async (req) => {
    daemon.fleet.setPool(req.body.memory * 1048576, req.body.count);
    return { pools: poolView(daemon) };
  });

  app.get('/v1/host', { schema: S.withErrors(S.hostInfo) }, async () => {
    const procs = daemon.fleet.processes();
    return {
      version: API_VERSION,
      pid: process.pid,
      uptime_s: Math.round((Date.now() - daemon.startedAt.getTime()) / 1000),
      vms: host.running,
      vms_per_executor: daemon.fleet.bound,
      executors: procs.map((p) => ({ id: p.id, pid: p.pid, vms: p.load, shells: p.shells })),
      pools: poolView(daemon),
      daemon_rss_kib: Math.round(process.memoryUsage().rss / 1024),
      runtime_dir: resolve(daemon.options.runtimeDir),
      allowed_paths: host.pathPolicy?.roots ?? [],
      devices: daemon.options.devices ?? 'noxs',
      xenstore_socket: daemon.xenstore?.socket ?? null,
    };
  });

  app.post<S.RouteOf<typeof S.stopDaemon>>('/v1/daemon/stop', { schema: S.withErrors(S.stopDaemon) }, async (req, reply) => {
    if (!daemon.onStopRequest) throw new ApiError(409, 'conflict', 'this daemon cannot be stopped through the API');
    const destroy = req.body?.destroy === true;
    // Answer first: the server closes while stopping.
    setImmediate(() => daemon.onStopRequest?.(destroy));
    return reply.code(202).send({ stopping: true, vms: destroy ? 'destroyed' : 'saved for the next daemon' });
  });

  app.get('/v1/stats', { schema: S.withErrors(S.stats) }, async () => ({ vms: await daemon.stats() }));

  app.get<S.RouteOf<typeof S.vmStats>>('/v1/vms/:id/stats', { schema: S.withErrors(S.vmStats) }, async (req) => {
    const vm = find(req.params.id);
    const ended = (v: VirtualMachine): boolean => v.state === 'exited';
    const [s] = ended(vm) ? [] : await daemon.stats(vm);
    if (!s) {
      if (ended(vm)) throw new ApiError(409, 'conflict', `VM ${vm.name} has ended: its counters went with it`, 'state');
      // Answered as every route answers an executor that is gone (503).
      throw Object.assign(new Error(`the executor of VM ${vm.name} did not answer`), { name: 'ExecutorError' });
    }
    return { stats: { ...s, name: vm.name, memory_mib: vm.memoryMiB } };
  });

  app.get('/v1/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  return app;
}

function poolView(daemon: Daemon): { memory_mib: number; target: number; depth: number; warm: number }[] {
  return [...daemon.fleet.targets].map(([memory, target]) => {
    const depth = daemon.fleet.poolDepth(memory);
    // Every shell is run once before its preparer hands it over: all are warm.
    return { memory_mib: memory / 1048576, target, depth, warm: depth };
  });
}

export type { FastifyReply };
