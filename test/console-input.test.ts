// POST /v1/vms/{id}/console/input, what a real daemon refuses before any VM
// is involved: bodies of the wrong shape, too many bytes (as text, as UTF-8
// once encoded, as base64), both or neither of text and base64, and a VM
// that does not exist, by name or by id. Each refusal is a JSON error
// naming the field (or the id); the daemon goes on serving. (Input that
// reaches a guest, and the refusals that need a VM: wip/console-vm.diff.)
import assert from 'node:assert/strict';
import { after, before, describe, it } from 'node:test';
import { isAlive, request, startTestDaemon, type ApiErrorBody, type TestDaemon } from './daemon-helpers.js';

const MAX = 16 * 1024;

void describe('console input refused before a VM is involved', () => {
  let d: TestDaemon;
  before(async () => {
    d = await startTestDaemon({ args: ['--pool', '4:0'], prefix: 'cin' });
  });
  after(async () => {
    await d.stop();
  });

  const input = async (vm: string, body: unknown, raw?: string): Promise<{ status: number; error: ApiErrorBody['error'] | undefined }> => {
    const r = await request(d.socket, 'POST', `/v1/vms/${vm}/console/input`,
      raw !== undefined ? { raw, headers: { 'content-type': 'application/json' } } : body === undefined ? {} : { body });
    return { status: r.status, error: (r.json as Partial<ApiErrorBody> | undefined)?.error };
  };

  const cases: { what: string; body?: unknown; raw?: string; field: string; message: RegExp }[] = [
    { what: 'text too long', body: { text: 'x'.repeat(MAX + 1) }, field: 'text', message: /^text: must NOT have more than 16384 characters$/ },
    { what: 'text within the characters, over the bytes once encoded', body: { text: 'é'.repeat(9000) }, field: 'text', message: /^text: 18000 bytes is more than the 16384 one request may carry$/ },
    { what: 'base64 over the bytes once decoded', body: { base64: Buffer.alloc(MAX + 1).toString('base64') }, field: 'base64', message: /^base64: 16385 bytes is more than the 16384 one request may carry$/ },
    { what: 'base64 that is not base64', body: { base64: 'not base64!' }, field: 'base64', message: /^base64: must match pattern/ },
    { what: 'text of the wrong type', body: { text: 7 }, field: 'text', message: /^text: must be string$/ },
    { what: 'an unknown field', body: { data: 'a' }, field: 'data', message: /^data: unknown field$/ },
    { what: 'both text and base64', body: { text: 'a', base64: 'YQ==' }, field: 'base64', message: /^body: give exactly one of text and base64$/ },
    { what: 'neither', body: {}, field: 'text', message: /^body: give exactly one of text and base64$/ },
    { what: 'no body at all', field: 'body', message: /^body: must be object$/ },
    { what: 'a body that is not JSON', raw: '{"text": ', field: 'body', message: /^body: / },
  ];
  for (const k of cases) {
    void it(`${k.what}: 400 naming ${k.field}`, async () => {
      const r = await input('x', k.body, k.raw);
      assert.equal(r.status, 400, JSON.stringify(r.error));
      assert.equal(r.error?.code, 'invalid');
      assert.equal(r.error?.field, k.field);
      assert.match(r.error!.message, k.message);
    });
  }

  void it('exactly the most bytes one request may carry are not refused for their size (404: there is no such VM)', async () => {
    for (const body of [{ text: 'x'.repeat(MAX) }, { text: 'é'.repeat(MAX / 2) }, { base64: Buffer.alloc(MAX).toString('base64') }]) {
      const r = await input('nosuchvm', body);
      assert.equal(r.status, 404, JSON.stringify(r.error));
    }
  });

  void it('a VM that does not exist, by name or by id: 404 naming the id', async () => {
    for (const id of ['nosuchvm', '4711']) {
      const r = await input(id, { text: 'hello\n' });
      assert.equal(r.status, 404);
      assert.deepEqual(r.error, { code: 'not-found', message: `no VM with id or name "${id}"`, field: 'id' });
    }
    assert.ok(isAlive(d.pid), 'the daemon died');
  });
});
