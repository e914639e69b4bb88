// The REST API of lightvmd against its OpenAPI document (docs/openapi.json):
// the committed document is what the daemon serves, every documented
// operation answers its documented statuses with bodies that match the
// documented schemas, malformed or oversized requests get a 4xx JSON error
// naming the field and leave nothing half-created, and 100 concurrent
// creates all get an answer.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import http from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, it } from 'node:test';
import { Ajv, type ValidateFunction } from 'ajv';
import { pino } from 'pino';
import { Daemon } from '../src/daemon/daemon.js';
import type { VmExit } from '../src/vmm/exit.js';
import {
  isAlive, ok, openStream, request, settle, startTestDaemon, until,
  type ApiErrorBody, type HostInfo, type Reply, type TestDaemon, type VmView,
} from './daemon-helpers.js';
import { ROOT, sleep, within } from './helpers.js';

interface OpenApiDoc {
  paths: Record<string, Record<string, {
    parameters?: { name: string; in: string }[];
    requestBody?: unknown;
    responses: Record<string, { content?: Record<string, { schema: unknown }> }>;
  }>>;
}

const DOC = JSON.parse(readFileSync(join(ROOT, 'docs', 'openapi.json'), 'utf8')) as OpenApiDoc;

/** An OpenAPI 3.0 schema as JSON Schema: `nullable: true` becomes a "null" type. */
function toJsonSchema(s: unknown): unknown {
  if (Array.isArray(s)) return s.map(toJsonSchema);
  if (typeof s !== 'object' || s === null) return s;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(s)) if (k !== 'nullable') out[k] = toJsonSchema(v);
  const o = s as { nullable?: boolean; type?: string | string[] };
  if (o.nullable && o.type !== undefined) out.type = [...(Array.isArray(o.type) ? o.type : [o.type]), 'null'];
  return out;
}

const ajv = new Ajv({ strict: false, allErrors: true });
ajv.addFormat('date-time', { validate: (s: string) => /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s) && !Number.isNaN(Date.parse(s)) });

interface Documented {
  statuses: Map<string, { contentType: string; validate: ValidateFunction | undefined }>;
}

/** "GET /v1/vms/{id}" -> what the document says it answers. */
const operations = new Map<string, Documented>();
for (const [path, methods] of Object.entries(DOC.paths)) {
  for (const [method, op] of Object.entries(methods)) {
    const statuses = new Map<string, { contentType: string; validate: ValidateFunction | undefined }>();
    for (const [status, resp] of Object.entries(op.responses)) {
      const [contentType, media] = Object.entries(resp.content ?? {})[0] ?? ['', undefined];
      const schema = media?.schema as { type?: string } | undefined;
      // Streams are documented as a string body: their content type is checked instead.
      const validate = schema && contentType === 'application/json' && schema.type !== 'string' ? ajv.compile(toJsonSchema(schema) as object) : undefined;
      statuses.set(status, { contentType, validate });
    }
    operations.set(`${method.toUpperCase()} ${path}`, { statuses });
  }
}

/** Records which documented statuses were seen, and what did not match the document. */
class Conformance {
  readonly used = new Map<string, Set<string>>();
  readonly problems: string[] = [];

  check(op: string, what: string, reply: { status: number; headers: http.IncomingHttpHeaders; json: unknown; text: string }): void {
    const doc = operations.get(op);
    if (!doc) {
      this.problems.push(`${op}: not in docs/openapi.json`);
      return;
    }
    const status = String(reply.status);
    const documented = doc.statuses.get(status);
    if (!documented) {
      this.problems.push(`${op} (${what}): answered ${status}, which is not documented (documented: ${[...doc.statuses.keys()].join(', ')}); body ${reply.text.slice(0, 200)}`);
      return;
    }
    let used = this.used.get(op);
    if (!used) this.used.set(op, (used = new Set()));
    used.add(status);
    const ct = String(reply.headers['content-type'] ?? '');
    if (documented.validate) {
      if (!ct.startsWith('application/json')) this.problems.push(`${op} (${what}): ${status} with content-type ${ct}, documented application/json`);
      if (!documented.validate(reply.json)) {
        this.problems.push(`${op} (${what}): ${status} body does not match the documented schema: ${ajv.errorsText(documented.validate.errors)}; body ${reply.text.slice(0, 300)}`);
      }
    }
  }

  unused(): string[] {
    const out: string[] = [];
    for (const [op, doc] of operations) {
      for (const status of doc.statuses.keys()) if (!this.used.get(op)?.has(status)) out.push(`${op} ${status}`);
    }
    return out;
  }
}

const errorOf = (r: Reply): ApiErrorBody['error'] | undefined => (r.json as ApiErrorBody | undefined)?.error;

/** A TCP port nobody listens on (it was free a moment ago). */
async function closedPort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((res) => srv.listen(0, '127.0.0.1', () => res()));
  const { port } = srv.address() as AddressInfo;
  await new Promise<void>((res) => srv.close(() => res()));
  return port;
}

void describe('the OpenAPI document', () => {
  let d: TestDaemon;
  /** A second daemon: the destination of a migration, and stopped through the API. */
  let d2: TestDaemon;
  const conf = new Conformance();
  const snapDir = mkdtempSync(join(tmpdir(), 'lightvm-tsnap-'));
  const TOKEN = 'api-test-token-0123456789';
  let call: (op: string, what: string, method: string, path: string, body?: unknown, socket?: string) => Promise<Reply>;
  before(async () => {
    [d, d2] = await Promise.all([
      startTestDaemon({ args: ['--pool', '4:2'], prefix: 'api' }),
      startTestDaemon({ args: ['--pool', '4:0', '--destroy-on-stop'], prefix: 'api2' }),
    ]);
    call = async (op, what, method, path, body, socket = d.socket) => {
      const r = await request(socket, method, path, body === undefined ? {} : { body });
      conf.check(op, what, r);
      return r;
    };
  });
  after(async () => {
    await d2.stop();
    await d.stop();
    rmSync(snapDir, { recursive: true, force: true });
  });
  /** Fails the current test with every answer so far that does not match the document. */
  const noProblems = (): void => {
    const problems = conf.problems.splice(0);
    assert.deepEqual(problems, [], `answers that do not match docs/openapi.json:\n${problems.join('\n')}`);
  };

  void it('docs/openapi.json is what the daemon serves at /v1/openapi.json', async () => {
    const live = await ok<unknown>(d.socket, 'GET', '/v1/openapi.json');
    assert.deepEqual(live, DOC, 'docs/openapi.json is out of date: run `npm run openapi` and commit it');
    const doc = DOC as unknown as { openapi: string; info: { version: string } };
    assert.match(doc.openapi, /^3\./);
    assert.equal(doc.info.version, (await d.host()).version);
  });

  void it('VM operations: each documented status, with bodies matching the document', async () => {
    // Querystrings are coerced: DELETE /v1/vms/{id}?wait=false answers the
    // documented 202, not a 400 for the string "false".
    const CREATE = 'POST /v1/vms';
    let r = await call(CREATE, 'hello, wait exit', 'POST', '/v1/vms', { image: 'hello', name: 'doc-hello', wait: 'exit' });
    assert.equal(r.status, 201, r.text);
    assert.equal((r.json as { console: string }).console, 'Hello from LightVM!\n');
    r = await call(CREATE, 'counter, wait booted', 'POST', '/v1/vms', { image: 'counter', name: 'doc-ctr', wait: 'booted', cmdline: '', memory: 4, warm: true, devices: [] });
    assert.equal(r.status, 201, r.text);
    r = await call(CREATE, 'devices, wait exit', 'POST', '/v1/vms', { image: 'noxs-dump', wait: 'exit', devices: [{ type: 'net', id: 3, mac: '02:00:00:00:00:01', mtu: 1500, ipv4: { addr: '10.0.0.2', netmask: '255.255.255.0', gateway: '10.0.0.1' } }] });
    assert.equal(r.status, 201, r.text);
    assert.match((r.json as { console: string }).console, /^dev 3 type 2 mac 02:00:00:00:00:01 mtu 1500$/m);
    r = await call(CREATE, 'sleeper', 'POST', '/v1/vms', { image: 'sleeper', name: 'doc-sl', cmdline: '600000' });
    assert.equal(r.status, 201, r.text);
    const slId = (r.json as { vm: VmView }).vm.id;
    await call(CREATE, 'no image', 'POST', '/v1/vms', {});
    await call(CREATE, 'name in use', 'POST', '/v1/vms', { image: 'hello', name: 'doc-ctr' });
    await call(CREATE, 'oversized', 'POST', '/v1/vms', { image: 'hello', cmdline: 'x'.repeat(70_000) });
    await call(CREATE, 'unknown image', 'POST', '/v1/vms', { image: 'nosuch' });
    // Outside the directories the daemon may use (its runtime directory, the built-ins, each --allow-path).
    r = await call(CREATE, 'image outside the allowed paths', 'POST', '/v1/vms', { image: '/etc/passwd' });
    assert.equal(r.status, 403, r.text);

    await call('GET /v1/vms', 'list', 'GET', '/v1/vms');
    const ONE = 'GET /v1/vms/{id}';
    r = await call(ONE, 'by name', 'GET', '/v1/vms/doc-sl');
    assert.equal((r.json as { vm: VmView }).vm.id, slId);
    r = await call(ONE, 'by id', 'GET', `/v1/vms/${slId}`);
    assert.equal((r.json as { vm: VmView }).vm.name, 'doc-sl');
    await call(ONE, 'unknown', 'GET', '/v1/vms/nosuch');

    for (const op of ['pause', 'unpause'] as const) {
      const key = `POST /v1/vms/{id}/${op}`;
      r = await call(key, op, 'POST', `/v1/vms/doc-sl/${op}`);
      assert.equal(r.status, 200, r.text);
      assert.equal((r.json as { vm: VmView }).vm.state, op === 'pause' ? 'paused' : 'running');
      r = await call(key, `${op} twice`, 'POST', `/v1/vms/doc-sl/${op}`);
      assert.equal(r.status, 409, r.text);
      await call(key, 'unknown', 'POST', `/v1/vms/nosuch/${op}`);
    }

    const SHUT = 'POST /v1/vms/{id}/shutdown';
    r = await call(SHUT, 'counter', 'POST', '/v1/vms/doc-ctr/shutdown', { grace_ms: 5000 });
    assert.deepEqual((r.json as { vm: VmView }).vm.exit, { kind: 'halt', status: 0 });
    await call(SHUT, 'unknown', 'POST', '/v1/vms/nosuch/shutdown', {});

    const CONSOLE = 'GET /v1/vms/{id}/console';
    r = await call(CONSOLE, 'ended VM', 'GET', '/v1/vms/doc-hello/console');
    assert.equal(r.text, 'Hello from LightVM!\n');
    assert.match(String(r.headers['content-type']), /^text\/plain/);
    await call(CONSOLE, 'unknown', 'GET', '/v1/vms/nosuch/console');
    r = await call(CONSOLE, 'a lease on a VM created without lease_ms', 'GET', '/v1/vms/doc-hello/console?follow=true&lease=true');
    assert.match(r.text, /was not created with lease_ms/);

    // Console input: the counter never reads its virtio-console, so 64 KiB unread is all it takes.
    const INPUT = 'POST /v1/vms/{id}/console/input';
    r = await call(CREATE, 'counter with a virtio-console', 'POST', '/v1/vms', { image: 'counter', name: 'doc-con', devices: [{ type: 'console', id: 3 }] });
    assert.equal(r.status, 201, r.text);
    r = await call(INPUT, 'text', 'POST', '/v1/vms/doc-con/console/input', { text: 'hello\n' });
    assert.deepEqual([r.status, r.json], [200, { bytes: 6 }], r.text);
    for (let i = 0; i < 4 && r.status === 200; i++) {
      r = await call(INPUT, 'unread input filling up', 'POST', '/v1/vms/doc-con/console/input', { base64: Buffer.alloc(16384, 'y').toString('base64') });
    }
    assert.equal(r.status, 503, r.text);
    r = await call(INPUT, 'no virtio-console', 'POST', '/v1/vms/doc-sl/console/input', { text: 'a' });
    assert.equal(r.status, 409, r.text);
    r = await call(INPUT, 'ended VM', 'POST', '/v1/vms/doc-hello/console/input', { text: 'a' });
    assert.equal(r.status, 409, r.text);
    await call(INPUT, 'unknown', 'POST', '/v1/vms/nosuch/console/input', { text: 'a' });
    assert.equal((await request(d.socket, 'DELETE', '/v1/vms/doc-con')).status, 200);

    const events = await openStream(d.socket, '/v1/events');
    try {
      await until('the hello event', () => Promise.resolve(events.text().includes('\n')), 5000);
      conf.check('GET /v1/events', 'stream', { status: events.status, headers: {}, json: undefined, text: '' });
      const hello = JSON.parse(events.text().split('\n')[0]!) as { type: string; vms: number };
      assert.equal(hello.type, 'hello');
      assert.equal(hello.vms, 1, 'doc-sl is the one live VM');
    } finally {
      events.close();
    }

    await call('GET /v1/pool', 'pool', 'GET', '/v1/pool');
    r = await call('PUT /v1/pool', 'set', 'PUT', '/v1/pool', { memory: 4, count: 2 });
    assert.deepEqual((r.json as { pools: { memory_mib: number; target: number }[] }).pools.map((p) => [p.memory_mib, p.target]), [[4, 2]]);
    await call('PUT /v1/pool', 'no count', 'PUT', '/v1/pool', { memory: 4 });
    await call('GET /v1/host', 'host', 'GET', '/v1/host');
    r = await call('GET /v1/stats', 'stats', 'GET', '/v1/stats');
    assert.ok((r.json as { vms: { id: number }[] }).vms.some((v) => v.id === slId), 'stats has no line for the running sleeper');
    const VMSTATS = 'GET /v1/vms/{id}/stats';
    r = await call(VMSTATS, 'running', 'GET', '/v1/vms/doc-sl/stats');
    const one = (r.json as { stats: { id: number; name: string; memory_mib: number; cpu_ns: number; resident_kib: number } }).stats;
    assert.deepEqual([one.id, one.name], [slId, 'doc-sl'], r.text);
    assert.ok(one.cpu_ns > 0 && one.resident_kib > 0 && one.resident_kib <= one.memory_mib * 1024 + 64, r.text);
    r = await call(VMSTATS, 'ended VM', 'GET', '/v1/vms/doc-hello/stats');
    assert.equal(r.status, 409, r.text);
    await call(VMSTATS, 'unknown', 'GET', '/v1/vms/nosuch/stats');

    const DEL = 'DELETE /v1/vms/{id}';
    r = await call(DEL, 'ended VM', 'DELETE', '/v1/vms/doc-hello');
    assert.equal(r.status, 200, r.text);
    r = await call(DEL, 'wait=false', 'DELETE', '/v1/vms/doc-sl?wait=false');
    await call(DEL, 'unknown', 'DELETE', '/v1/vms/nosuch');
    if (r.status !== 202) await request(d.socket, 'DELETE', '/v1/vms/doc-sl');
    noProblems();
  });

  void it('snapshots: save and restore, each documented status', async () => {
    const SAVE = 'POST /v1/vms/{id}/save';
    const RESTORE = 'POST /v1/restore';
    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'snap-src' }, 201);
    const file = join(snapDir, 'a.snap');
    let r = await call(SAVE, 'checkpoint', 'POST', '/v1/vms/snap-src/save', { file, checkpoint: true });
    assert.equal(r.status, 200, r.text);
    assert.equal((r.json as { vm: VmView }).vm.state, 'running', 'a checkpoint keeps the VM running');
    await call(SAVE, 'relative file', 'POST', '/v1/vms/snap-src/save', { file: 'a.snap' });
    await call(SAVE, 'unknown VM', 'POST', '/v1/vms/nosuch/save', { file });
    await call(SAVE, 'no such directory', 'POST', '/v1/vms/snap-src/save', { file: join(snapDir, 'no', 'such', 'dir.snap') });
    await ok(d.socket, 'POST', '/v1/vms', { image: 'hello', name: 'snap-ended', wait: 'exit' }, 201);
    await call(SAVE, 'ended VM', 'POST', '/v1/vms/snap-ended/save', { file: join(snapDir, 'b.snap') });
    r = await call(SAVE, 'outside the allowed paths', 'POST', '/v1/vms/snap-src/save', { file: '/etc/lightvm-api-test.snap' });
    assert.equal(r.status, 403, r.text);

    r = await call(RESTORE, 'new name', 'POST', '/v1/restore', { file, name: 'snap-copy' });
    assert.equal(r.status, 201, r.text);
    assert.equal((r.json as { vm: VmView }).vm.state, 'running');
    await call(RESTORE, 'name in use', 'POST', '/v1/restore', { file });
    await call(RESTORE, 'relative file', 'POST', '/v1/restore', { file: 'a.snap' });
    await call(RESTORE, 'not a snapshot', 'POST', '/v1/restore', { file: join(ROOT, 'package.json') });
    await call(RESTORE, 'no such file', 'POST', '/v1/restore', { file: join(snapDir, 'nosuch.snap') });
    r = await call(RESTORE, 'outside the allowed paths', 'POST', '/v1/restore', { file: '/etc/passwd' });
    assert.equal(r.status, 403, r.text);
    noProblems();
  });

  void it('migration: listen, migrate to a second daemon, stop listening, each documented status', async () => {
    const LISTEN = 'PUT /v1/migration/listen';
    const MIGRATE = 'POST /v1/vms/{id}/migrate';
    let r = await call(LISTEN, 'second daemon', 'PUT', '/v1/migration/listen', { port: 0, token: TOKEN }, d2.socket);
    assert.equal(r.status, 200, r.text);
    const port = (r.json as { listening: { port: number } }).listening.port;
    assert.ok(port > 0);
    await call(LISTEN, 'port in use', 'PUT', '/v1/migration/listen', { port, token: TOKEN });
    await call(LISTEN, 'short token', 'PUT', '/v1/migration/listen', { port: 0, token: 'short' });

    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'mover' }, 201);
    r = await call(MIGRATE, 'to the second daemon', 'POST', '/v1/vms/mover/migrate', { to: `127.0.0.1:${port}`, token: TOKEN });
    assert.equal(r.status, 200, r.text);
    const moved = await ok<{ vm: VmView }>(d2.socket, 'GET', '/v1/vms/mover');
    assert.equal(moved.vm.state, 'running');
    // The source keeps the record of a VM that left: the list must still match the document.
    await call('GET /v1/vms', 'list with a migrated VM', 'GET', '/v1/vms');
    await call('GET /v1/vms/{id}', 'a migrated VM', 'GET', '/v1/vms/mover');

    await ok(d.socket, 'POST', '/v1/vms', { image: 'counter', name: 'stayer' }, 201);
    await call(MIGRATE, 'not host:port', 'POST', '/v1/vms/stayer/migrate', { to: 'nohost', token: TOKEN });
    await call(MIGRATE, 'unknown VM', 'POST', '/v1/vms/nosuch/migrate', { to: `127.0.0.1:${port}`, token: TOKEN });
    await call(MIGRATE, 'a VM that left', 'POST', '/v1/vms/mover/migrate', { to: `127.0.0.1:${port}`, token: TOKEN });
    r = await call(MIGRATE, 'nobody listening', 'POST', '/v1/vms/stayer/migrate', { to: `127.0.0.1:${await closedPort()}`, token: TOKEN });
    assert.equal(r.status, 502, r.text);
    assert.equal((await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/stayer')).vm.state, 'running', 'a failed migration left the VM not running');

    r = await call('DELETE /v1/migration/listen', 'stop', 'DELETE', '/v1/migration/listen', undefined, d2.socket);
    assert.deepEqual(r.json, { listening: null });
    noProblems();
  });

  void it('503: the executor a create or a restore was sent to dies before it answers', async () => {
    // Executors stopped (SIGSTOP) so that the requests wait, then killed.
    const host = await d.host();
    for (const ex of host.executors) process.kill(ex.pid, 'SIGSTOP');
    const create = request(d.socket, 'POST', '/v1/vms', { body: { image: 'hello', name: 'doc-lost' } });
    const restore = request(d.socket, 'POST', '/v1/restore', { body: { file: join(snapDir, 'a.snap'), name: 'doc-lost2' } });
    await sleep(300);
    for (const ex of host.executors) process.kill(ex.pid, 'SIGKILL');
    for (const [what, op, pending] of [['create', 'POST /v1/vms', create], ['restore', 'POST /v1/restore', restore]] as const) {
      const r = await within(pending, 10_000, `a ${what} on a killed executor`);
      conf.check(op, `${what} on a killed executor`, r);
      assert.equal(r.status, 503, `${what}: ${r.text}`);
      assert.match(errorOf(r)?.message ?? '', /executor/);
    }
    await until('the lost executors to be replaced', async () => (await d.host()).executors.length > 0);
    noProblems();
  });

  void it('POST /v1/daemon/stop: 202 from lightvmd, which then stops; 409 from a daemon run as a library', async () => {
    const r = await call('POST /v1/daemon/stop', 'lightvmd', 'POST', '/v1/daemon/stop', { destroy: true }, d2.socket);
    assert.equal(r.status, 202, r.text);
    await until('the second daemon to exit', () => Promise.resolve(!isAlive(d2.pid)), 20_000);
    // A Daemon started in this process has nobody to stop it through the API.
    const dir = mkdtempSync(join(tmpdir(), 'lightvm-tlib-'));
    const lib = await Daemon.start({ runtimeDir: dir, socketPath: join(dir, 'lightvmd.sock'), logger: pino({ level: 'silent' }) });
    try {
      const r2 = await call('POST /v1/daemon/stop', 'library daemon', 'POST', '/v1/daemon/stop', {}, join(dir, 'lightvmd.sock'));
      assert.equal(r2.status, 409, r2.text);
    } finally {
      await lib.stop({ destroy: true });
      rmSync(dir, { recursive: true, force: true });
    }
    noProblems();
  });

  void it('malformed requests to every route get a documented 4xx status and a JSON error naming the field', async () => {
    // Every route with params, a querystring or a body documents its 400, and
    // every route that reads a body documents 413 and 415 too.
    const c = conf;
    const s = d.socket;
    const long = 'a'.repeat(65);
    const cases: { op: string; method: string; path: string; body?: unknown; raw?: string; headers?: Record<string, string>; field: string | null }[] = [
      { op: 'GET /v1/vms/{id}', method: 'GET', path: `/v1/vms/${long}`, field: 'id' },
      { op: 'DELETE /v1/vms/{id}', method: 'DELETE', path: '/v1/vms/x?wait=maybe', field: 'wait' },
      { op: 'DELETE /v1/vms/{id}', method: 'DELETE', path: `/v1/vms/${long}`, field: 'id' },
      { op: 'POST /v1/vms/{id}/pause', method: 'POST', path: `/v1/vms/${long}/pause`, field: 'id' },
      { op: 'POST /v1/vms/{id}/unpause', method: 'POST', path: `/v1/vms/${long}/unpause`, field: 'id' },
      { op: 'POST /v1/vms/{id}/shutdown', method: 'POST', path: '/v1/vms/x/shutdown', body: { grace_ms: -1 }, field: 'grace_ms' },
      { op: 'POST /v1/vms/{id}/shutdown', method: 'POST', path: '/v1/vms/x/shutdown', body: { grace: 1 }, field: 'grace' },
      { op: 'POST /v1/vms/{id}/shutdown', method: 'POST', path: '/v1/vms/x/shutdown', body: { grace_ms: 1, pad: 'x'.repeat(70_000) }, field: 'body' },
      { op: 'GET /v1/vms/{id}/console', method: 'GET', path: '/v1/vms/x/console?follow=maybe', field: 'follow' },
      { op: 'POST /v1/vms/{id}/console/input', method: 'POST', path: '/v1/vms/x/console/input', body: { text: 5 }, field: 'text' },
      { op: 'POST /v1/vms/{id}/console/input', method: 'POST', path: '/v1/vms/x/console/input', body: { text: 'a', base64: 'YQ==' }, field: 'base64' },
      { op: 'POST /v1/vms/{id}/console/input', method: 'POST', path: '/v1/vms/nosuch/console/input', body: { text: 'a' }, field: 'id' },
      { op: 'POST /v1/vms/{id}/save', method: 'POST', path: '/v1/vms/x/save', body: { file: 5 }, field: 'file' },
      { op: 'POST /v1/restore', method: 'POST', path: '/v1/restore', body: { name: 'x' }, field: 'file' },
      { op: 'POST /v1/vms/{id}/migrate', method: 'POST', path: '/v1/vms/x/migrate', body: { to: 'a:1' }, field: 'token' },
      { op: 'PUT /v1/migration/listen', method: 'PUT', path: '/v1/migration/listen', body: { port: 70000, token: TOKEN }, field: 'port' },
      { op: 'PUT /v1/pool', method: 'PUT', path: '/v1/pool', body: { memory: 1, count: 2 }, field: 'memory' },
      { op: 'PUT /v1/pool', method: 'PUT', path: '/v1/pool', body: { memory: 4, count: -1 }, field: 'count' },
      { op: 'PUT /v1/pool', method: 'PUT', path: '/v1/pool', body: { memory: 4, count: 2, depth: 3 }, field: 'depth' },
      { op: 'PUT /v1/pool', method: 'PUT', path: '/v1/pool', body: { memory: 4, count: 2, pad: 'x'.repeat(70_000) }, field: 'body' },
      { op: 'POST /v1/daemon/stop', method: 'POST', path: '/v1/daemon/stop', body: { destroy: 'yes' }, field: 'destroy' },
      { op: 'POST /v1/vms', method: 'POST', path: '/v1/vms', raw: 'image=hello', headers: { 'content-type': 'application/x-www-form-urlencoded' }, field: null },
    ];
    for (const k of cases) {
      const what = `${k.method} ${k.path.slice(0, 40)} ${k.body === undefined ? '' : JSON.stringify(k.body).slice(0, 40)}`;
      const r = await request(s, k.method, k.path, k.raw !== undefined ? { raw: k.raw, headers: k.headers } : k.body === undefined ? {} : { body: k.body });
      if (r.status < 400 || r.status >= 500) c.problems.push(`${what}: answered ${r.status}, not 4xx`);
      const e = errorOf(r);
      if (!e) c.problems.push(`${what}: no JSON error in ${r.text.slice(0, 100)}`);
      else if (k.field !== null && e.field !== k.field) c.problems.push(`${what}: error names field ${String(e.field)}, not ${k.field}`);
      c.check(k.op, what, r);
    }
    assert.ok(isAlive(d.pid), 'the daemon died');
    const problems = c.problems.splice(0);
    assert.deepEqual(problems, [], `malformed requests answered out of the document:\n${problems.join('\n')}`);
  });
  void it('just-in-time services: each documented status', async () => {
    const SVC = 'POST /v1/services';
    const dev = { type: 'net', id: 0, ipv4: { addr: '10.0.0.77', netmask: '255.255.255.0', gateway: '10.0.0.1' } };
    let r = await call(SVC, 'daytime service', 'POST', '/v1/services', { name: 'doc-svc', image: 'daytime', devices: [dev], idle_ms: 500 });
    assert.equal(r.status, 201, r.text);
    assert.equal((r.json as { service: { vm: { state: string } } }).service.vm.state, 'armed');
    const armed = (r.json as { service: { vm: { id: number } } }).service.vm.id;
    r = await call(SVC, 'same name again', 'POST', '/v1/services', { name: 'doc-svc', image: 'daytime', devices: [dev] });
    assert.equal(r.status, 409, r.text);
    r = await call(SVC, 'no such image', 'POST', '/v1/services', { name: 'doc-svc2', image: join(snapDir, 'nonexistent.elf'), devices: [{ ...dev, id: 1 }] });
    assert.equal(r.status, 422, r.text);
    r = await call(SVC, 'image outside the allowed paths', 'POST', '/v1/services', { name: 'doc-svc2', image: '/etc/passwd', devices: [{ ...dev, id: 1 }] });
    assert.equal(r.status, 403, r.text);
    r = await call(SVC, 'no devices', 'POST', '/v1/services', { name: 'doc-svc3', image: 'daytime', devices: [] });
    assert.equal(r.status, 400, r.text);
    r = await call('GET /v1/services', 'list', 'GET', '/v1/services');
    assert.equal(r.status, 200, r.text);
    assert.ok((r.json as { services: { name: string }[] }).services.some((x) => x.name === 'doc-svc'));
    // A first packet boots it; with no more traffic it ends 'idle', and the
    // next VM is armed. The service is listed as documented all along.
    const { stdout } = await promisify(execFile)('nc', ['-d', '-w', '5', '10.0.0.77', '13'], { timeout: 10_000 });
    assert.match(stdout, /UTC/);
    await until('the service to boot once, then arm its next VM', async () => {
      const x = await call('GET /v1/services', 'while its VM ends idle and the next is armed', 'GET', '/v1/services');
      assert.equal(x.status, 200, x.text);
      const svc = (x.json as { services: { name: string; boots: number; vm: { id: number; state: string } | null }[] }).services
        .find((v) => v.name === 'doc-svc');
      return svc?.boots === 1 && svc.vm?.state === 'armed' && svc.vm.id !== armed;
    }, 10_000);
    r = await call('DELETE /v1/services/{name}', 'stop it', 'DELETE', '/v1/services/doc-svc');
    assert.equal(r.status, 200, r.text);
    r = await call('DELETE /v1/services/{name}', 'again', 'DELETE', '/v1/services/doc-svc');
    assert.equal(r.status, 404, r.text);
    r = await call('DELETE /v1/services/{name}', 'name too long', 'DELETE', `/v1/services/${'n'.repeat(70)}`);
    assert.equal(r.status, 400, r.text);
    noProblems();
  });

  void it('every route: 400 for bad parameters or bodies, 413 for too much, 415 for what is not JSON', async () => {
    for (const [op, doc] of operations) {
      const [method, template] = op.split(' ') as [string, string];
      // (Bad requests to /v1/daemon/stop are refused before anything stops.)
      const path = (id: string): string => template.replace(/\{(\w+)\}/g, id);
      const raw = async (what: string, p: string, data: string, type: string): Promise<void> => {
        const r = await request(d.socket, method, p, { raw: data, headers: { 'content-type': type } });
        conf.check(op, what, r);
      };
      if (doc.statuses.has('413')) await raw('body over 64 KiB', path('x'), JSON.stringify({ pad: 'x'.repeat(70_000) }), 'application/json');
      if (doc.statuses.has('415')) await raw('text body', path('x'), 'hello', 'text/plain');
      if (doc.statuses.has('400')) {
        if (template.includes('{')) await raw('parameter too long', path('p'.repeat(70)), '{}', 'application/json');
        else await raw('body of the wrong type', path('x'), '[1]', 'application/json');
      }
    }
    noProblems();
  });

  void it('every documented status was produced by some request above (run last)', () => {
    // DELETE /v1/vms/{id} 202 is among them: query strings are coerced
    // (src/daemon/server.ts, the coercing ajv), so ?wait=false reaches it.
    assert.deepEqual(conf.unused(), [], 'documented statuses that no request produced (a new route needs cases here)');
  });
});

void describe('how a VM ended, as documented', () => {
  // One of each kind: the type makes this list grow with VmExit.
  const exits: { [K in VmExit['kind']]: Extract<VmExit, { kind: K }> } = {
    halt: { kind: 'halt', status: 3 },
    crash: { kind: 'crash', code: 'triple-fault', reason: 'the guest triple-faulted' },
    destroyed: { kind: 'destroyed' },
    saved: { kind: 'saved', file: null },
    migrated: { kind: 'migrated', to: '10.0.0.2:7000' },
    idle: { kind: 'idle', ms: 500 },
  };
  void it('every kind of end fits the VM schema of GET /v1/vms/{id}', () => {
    const validate = operations.get('GET /v1/vms/{id}')!.statuses.get('200')!.validate!;
    for (const exit of Object.values(exits)) {
      // Typed as the view: a field the view gains must be filled here too.
      const vm: VmView = {
        id: 1, name: 'x', image: '/i.elf', memory_mib: 4, cmdline: '', state: 'exited', executor: 1, warm: true,
        created_at: new Date().toISOString(), exit, console_dropped_bytes: 0, timings: null,
      };
      const body = { vm };
      assert.ok(validate(body), `${exit.kind}: ${JSON.stringify(validate.errors)}`);
    }
  });
});

void describe('malformed create bodies', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:1'], prefix: 'bad' });
    // One VM that lives throughout: nothing below may disturb it.
    await ok(d.socket, 'POST', '/v1/vms', { image: 'sleeper', name: 'keeper', cmdline: '600000' }, 201);
    // The spare executor that first create asks for is up before the cases start.
    await settle(d.socket, d.runtimeDir);
  });
  after(async () => {
    await d.stop();
  });

  const device = (over: Record<string, unknown> = {}): Record<string, unknown> => ({ type: 'net', id: 0, ...over });
  const cases: [string, unknown, number, string | RegExp][] = [
    ['missing image', {}, 400, 'image'],
    ['image not a string', { image: 5 }, 400, 'image'],
    ['empty image', { image: '' }, 400, 'image'],
    ['unknown field', { image: 'hello', bogus: 1 }, 400, 'bogus'],
    ['name starting with -', { image: 'hello', name: '-x' }, 400, 'name'],
    ['name with a space', { image: 'hello', name: 'a b' }, 400, 'name'],
    ['name of 64 characters', { image: 'hello', name: 'n'.repeat(64) }, 400, 'name'],
    ['name not a string', { image: 'hello', name: 5 }, 400, 'name'],
    ['memory as a string', { image: 'hello', memory: '4' }, 400, 'memory'],
    ['memory below 2 MiB', { image: 'hello', memory: 1 }, 400, 'memory'],
    ['memory above 3 GiB', { image: 'hello', memory: 3073 }, 400, 'memory'],
    ['memory not whole', { image: 'hello', memory: 2.5 }, 400, 'memory'],
    ['cmdline not a string', { image: 'hello', cmdline: 5 }, 400, 'cmdline'],
    ['cmdline over 512', { image: 'hello', cmdline: 'c'.repeat(513) }, 400, 'cmdline'],
    ['warm not a boolean', { image: 'hello', warm: 'yes' }, 400, 'warm'],
    ['wait not one of the three', { image: 'hello', wait: 'forever' }, 400, 'wait'],
    ['devices not a list', { image: 'hello', devices: {} }, 400, 'devices'],
    ['device with a bad mac', { image: 'hello', devices: [device({ mac: '02:00:00:00:00:zz' })] }, 400, 'devices.0.mac'],
    ['device of an unknown type', { image: 'hello', devices: [device({ type: 'usb' })] }, 400, 'devices.0.type'],
    ['device id 63', { image: 'hello', devices: [device(), device({ id: 63 })] }, 400, 'devices.1.id'],
    ['device without an id', { image: 'hello', devices: [{ type: 'net' }] }, 400, 'devices.0.id'],
    ['device mtu 10', { image: 'hello', devices: [device({ mtu: 10 })] }, 400, 'devices.0.mtu'],
    ['device with an unknown field', { image: 'hello', devices: [device({ colour: 'red' })] }, 400, 'devices.0.colour'],
    ['63 devices', { image: 'hello', devices: Array.from({ length: 63 }, (_, i) => device({ id: i % 62 })) }, 400, 'devices'],
    ['device ip 10.0.0.300', { image: 'hello', devices: [device({ ipv4: { addr: '10.0.0.300', netmask: '255.255.255.0' } })] }, 422, /^devices[.[]0\]?\.ipv4\.addr$/],
    ['two devices with id 0', { image: 'hello', devices: [device(), device()] }, 422, /^devices[.[]1\]?\.id$/],
    ['unknown image', { image: 'nosuch' }, 422, 'image'],
    ['a list for a body', [], 400, 'body'],
    ['null for a body', null, 400, 'body'],
    ['a body over 64 KiB', { image: 'hello', cmdline: 'x'.repeat(70_000) }, 413, 'body'],
  ];

  /** What must not change: the VMs listed, the live count, each executor's VMs. */
  const snapshot = async (): Promise<string> => {
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    const h = await d.host();
    return JSON.stringify({
      vms: vms.map((v) => `${v.id} ${v.name} ${v.state}`),
      live: h.vms,
      // A spare executor may come or go; VMs may not.
      executors: h.executors.filter((e) => e.vms > 0).map((e) => `${e.id}:${e.vms}`),
    });
  };

  for (const [what, body, status, field] of cases) {
    void it(`${what}: ${status}, field ${String(field)}, nothing created`, async () => {
      const start = await snapshot();
      const r = await request(d.socket, 'POST', '/v1/vms', { body });
      assert.equal(r.status, status, r.text);
      assert.match(String(r.headers['content-type']), /^application\/json/);
      const e = errorOf(r);
      assert.ok(e, `no {error} in ${r.text}`);
      assert.equal(typeof e.code, 'string');
      assert.ok(e.message.length > 0);
      if (typeof field === 'string') assert.equal(e.field, field, e.message);
      else assert.match(e.field ?? '', field, e.message);
      assert.equal(await snapshot(), start, 'the failed create left something behind');
    });
  }

  void it('an image file that is not an ELF: 422 naming the file, nothing left on the executor', async () => {
    const start = await snapshot();
    const r = await request(d.socket, 'POST', '/v1/vms', { body: { image: join(ROOT, 'package.json') } });
    assert.equal(r.status, 422, r.text);
    const e = errorOf(r)!;
    assert.ok(e.message.includes(join(ROOT, 'package.json')), e.message);
    assert.ok(e.field, 'no field named');
    // The executor refused it: its load must be back where it was.
    assert.equal(await snapshot(), start);
  });

  void it('a body that is not JSON: 400 naming the body', async () => {
    // A body that does not parse names its field ("body"), like every other
    // malformed body, rather than field: null.
    const start = await snapshot();
    const r = await request(d.socket, 'POST', '/v1/vms', { raw: '{"image": "hello"', headers: { 'content-type': 'application/json' } });
    assert.equal(r.status, 400, r.text);
    assert.equal(errorOf(r)?.field, 'body', r.text);
    assert.equal(await snapshot(), start);
  });

  void it('the VM that was running before all this still runs', async () => {
    const { vm } = await ok<{ vm: VmView }>(d.socket, 'GET', '/v1/vms/keeper');
    assert.equal(vm.state, 'running');
  });
});

void describe('100 concurrent creates', () => {
  const BOUND = 30;
  let d: TestDaemon;
  let replies: Reply[] = [];
  const bodies = Array.from({ length: 100 }, (_, i) => {
    if (i % 10 === 9) return { image: 'sleeper', memory: 1 }; // 400
    if (i % 10 === 8) return { image: 'nosuch' }; // 422
    if (i % 10 === 7) return { image: 'sleeper', cmdline: '600000', name: `pair${Math.floor(i / 20)}` }; // one 201, one 409 per pair
    return { image: 'sleeper', cmdline: '600000', name: `c${i}` };
  });
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:4', '--vms-per-executor', String(BOUND)], prefix: 'many' });
    await until('the pool to fill', async () => (await d.host()).pools[0]?.depth === 4);
  });
  after(async () => {
    await d.stop();
  });

  void it('all 100 are answered: 201 or a 4xx JSON error; every created VM runs; names are unique', async () => {
    const t0 = Date.now();
    replies = await within(Promise.all(bodies.map((body) => request(d.socket, 'POST', '/v1/vms', { body }))), 60_000, '100 concurrent creates');
    const took = Date.now() - t0;
    const count = (status: number): number => replies.filter((r) => r.status === status).length;
    const summary = JSON.stringify(Object.fromEntries([...new Set(replies.map((r) => r.status))].map((st) => [st, count(st)])));
    assert.equal(count(201), 75, summary);
    assert.equal(count(409), 5, summary);
    assert.equal(count(400), 10, summary);
    assert.equal(count(422), 10, summary);
    for (const [i, r] of replies.entries()) {
      if (r.status === 201) continue;
      const e = errorOf(r);
      assert.ok(e, `request ${i}: no JSON error in ${r.text}`);
      assert.equal(e.field, r.status === 400 ? 'memory' : r.status === 409 ? 'name' : 'image', `request ${i}: ${e.message}`);
    }
    for (let p = 0; p < 5; p++) {
      const pair = [7 + 20 * p, 17 + 20 * p].map((i) => replies[i]!.status).sort();
      assert.deepEqual(pair, [201, 409], `pair${p}`);
    }
    const created = replies.filter((r) => r.status === 201).map((r) => (r.json as { vm: VmView }).vm);
    assert.equal(new Set(created.map((v) => v.id)).size, 75, 'ids are not unique');
    assert.equal(new Set(created.map((v) => v.name)).size, 75, 'names are not unique');
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    assert.equal(vms.length, 75, 'listed VMs');
    assert.deepEqual(vms.map((v) => v.id).sort((a, b) => a - b), created.map((v) => v.id).sort((a, b) => a - b));
    assert.ok(vms.every((v) => v.state === 'running'), 'a created VM is not running');
    const h = await d.host();
    assert.equal(h.vms, 75);
    assert.equal(h.executors.reduce((a, e) => a + e.vms, 0), 75, JSON.stringify(h.executors));
    // Not a benchmark: only that the daemon does not serialize them badly.
    assert.ok(took < 30_000, `100 concurrent creates took ${took} ms`);
  });

  void it(`no executor holds more than --vms-per-executor (${BOUND}) VMs`, async () => {
    // Concurrent picks that wait for one new executor each check for room
    // again: a burst of creates must not pile onto one executor past the bound.
    const h = await d.host();
    const over = h.executors.filter((e) => e.vms > BOUND);
    assert.deepEqual(over, [], `executors over the bound: ${JSON.stringify(h.executors)}`);
  });

  void it('100 concurrent deletes (75 VMs, 25 unknown): 200 or 404, then no VM is left', async () => {
    const created = replies.filter((r) => r.status === 201).map((r) => (r.json as { vm: VmView }).vm);
    const targets = [...created.map((v) => String(v.id)), ...Array.from({ length: 25 }, (_, i) => `ghost${i}`)];
    const rs = await within(Promise.all(targets.map((t) => request(d.socket, 'DELETE', `/v1/vms/${t}`))), 60_000, '100 concurrent deletes');
    rs.forEach((r, i) => {
      if (i < created.length) {
        assert.equal(r.status, 200, r.text);
        assert.deepEqual((r.json as { vm: VmView }).vm.exit, { kind: 'destroyed' });
      } else {
        assert.equal(r.status, 404, r.text);
        assert.equal(errorOf(r)?.field, 'id');
      }
    });
    const { vms } = await ok<{ vms: VmView[] }>(d.socket, 'GET', '/v1/vms');
    assert.deepEqual(vms, []);
    await until('every executor to be empty', async () => (await d.host()).executors.every((e) => e.vms === 0));
    const h: HostInfo = await d.host();
    assert.equal(h.vms, 0);
  });
});
