// Bad input is a clear 4xx in the JSON envelope, never a 500 or a crash, and
// the responder keeps serving afterwards (a GET /health after each case).
//
// Body validation runs through POST /__debug/echo (a test-only JSON route the
// responder enables with `debug_routes = true`; schema {"text": string 1..1000,
// "count"?: int, "nested"?: any}) until real JSON routes exist under /api/v1.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { assertErrorEnvelope, assertHealthy, startStack } from './lib/stack.mjs';

const MAX_BODY = 1048576; // responder's max_body_bytes (default)
const JSON_ROUTE = '/__debug/echo';

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

function post(path, body, contentType = 'application/json', headers = {}) {
  return stack.request(path, {
    method: 'POST',
    headers: { 'Content-Type': contentType, ...headers },
    body,
  });
}

test('the JSON test route accepts a valid body (sanity for the cases below)', async () => {
  const r = await post(JSON_ROUTE, '{"text":"hello","count":2}');
  assert.equal(r.status, 200, r.text);
  assert.equal(r.json.success, true);
  assert.equal(r.json.requestId, r.headers.get('x-request-id'));
  assert.deepEqual(r.json.data, { text: 'hello', count: 2 });
});

test('unknown path under /api/v1: 404 NOT_FOUND envelope', async () => {
  for (const p of ['/api/v1/nope', '/api/v1/', '/api/v2/sessions', '/api/v1/sessions/1/nope', '/api/v1/x?y=1']) {
    assertErrorEnvelope(assert, await stack.request(p), 404, 'NOT_FOUND');
  }
  await assertHealthy(assert, stack);
});

test('wrong method on a known path: 405 METHOD_NOT_ALLOWED with Allow', async () => {
  const r = await stack.request('/health', { method: 'POST', body: '' });
  assertErrorEnvelope(assert, r, 405, 'METHOD_NOT_ALLOWED');
  assert.match(r.headers.get('allow') || '', /\bGET\b/);

  const d = await stack.request('/ready', { method: 'DELETE' });
  assertErrorEnvelope(assert, d, 405, 'METHOD_NOT_ALLOWED');
  assert.match(d.headers.get('allow') || '', /\bGET\b/);

  const g = await stack.request(JSON_ROUTE);
  assertErrorEnvelope(assert, g, 405, 'METHOD_NOT_ALLOWED');
  assert.match(g.headers.get('allow') || '', /\bPOST\b/);
  await assertHealthy(assert, stack);
});

test('body just over the responder limit: 413 PAYLOAD_TOO_LARGE envelope', async () => {
  const body = `{"text":"${'a'.repeat(MAX_BODY)}"}`; // MAX_BODY + 11 bytes, under nginx's 2m
  const r = await post(JSON_ROUTE, body);
  assertErrorEnvelope(assert, r, 413, 'PAYLOAD_TOO_LARGE');
  await assertHealthy(assert, stack);
});

test('body at exactly the responder limit is not refused for its size', async () => {
  const pad = MAX_BODY - '{"text":"x","nested":""}'.length;
  const body = `{"text":"x","nested":"${'b'.repeat(pad)}"}`;
  assert.equal(Buffer.byteLength(body), MAX_BODY);
  const r = await post(JSON_ROUTE, body);
  assert.notEqual(r.status, 413, r.text.slice(0, 200));
  assert.ok(r.status < 500, `status ${r.status}`);
  await assertHealthy(assert, stack);
});

test('body over nginx client_max_body_size: nginx answers the same 413 envelope', async () => {
  const body = Buffer.alloc(3 * 1024 * 1024, 0x61);
  // Content-Length tells nginx up front; it refuses without reading the body
  const r = await stack.raw(Buffer.concat([
    Buffer.from(`POST ${JSON_ROUTE} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n` +
      `X-Request-ID: big-body-1\r\nContent-Length: ${body.length}\r\nConnection: close\r\n\r\n`),
    body,
  ]));
  assert.equal(r.status, 413);
  assert.equal(r.headers['x-request-id'], 'big-body-1');
  assert.match(r.headers['content-type'] || '', /^application\/json/);
  const env = JSON.parse(r.body);
  assert.equal(env.success, false);
  assert.equal(env.requestId, 'big-body-1');
  assert.equal(env.error.code, 'PAYLOAD_TOO_LARGE');
  // and via /api/ too, with a generated id
  const a = await post('/api/v1/anything', body);
  assertErrorEnvelope(assert, a, 413, 'PAYLOAD_TOO_LARGE');
  await assertHealthy(assert, stack);
});

test('non-JSON Content-Type on a JSON route: 415 UNSUPPORTED_MEDIA_TYPE', async () => {
  for (const ct of ['text/plain', 'application/x-www-form-urlencoded', 'application/jsonx', 'multipart/form-data; boundary=x']) {
    assertErrorEnvelope(assert, await post(JSON_ROUTE, '{"text":"x"}', ct), 415, 'UNSUPPORTED_MEDIA_TYPE');
  }
  const noType = await stack.request(JSON_ROUTE, { method: 'POST', body: Buffer.from('{"text":"x"}') });
  assertErrorEnvelope(assert, noType, 415, 'UNSUPPORTED_MEDIA_TYPE');
  // a charset parameter is fine
  const ok = await post(JSON_ROUTE, '{"text":"x"}', 'application/json; charset=utf-8');
  assert.equal(ok.status, 200, ok.text);
  await assertHealthy(assert, stack);
});

test('invalid JSON: 400 INVALID_REQUEST', async () => {
  for (const body of ['{"text":', '{text:"x"}', '{"text":"x"} trailing', "{'text':'x'}", '{"text":"x",}', '\u0000']) {
    assertErrorEnvelope(assert, await post(JSON_ROUTE, body), 400, 'INVALID_REQUEST');
  }
  await assertHealthy(assert, stack);
});

test('JSON with invalid UTF-8, a NUL in a string or a duplicate key: 400', async () => {
  const badUtf8 = Buffer.concat([Buffer.from('{"text":"a'), Buffer.from([0xff, 0xfe]), Buffer.from('"}')]);
  for (const body of [badUtf8, '{"text":"a\\u0000b"}', '{"text":"a","text":"b"}']) {
    const r = await post(JSON_ROUTE, body);
    assert.equal(r.status, 400, `${JSON.stringify(String(body))}: ${r.text}`);
    assert.ok(['INVALID_REQUEST', 'INVALID_PARAMETER'].includes(r.json.error.code), r.text);
  }
  await assertHealthy(assert, stack);
});

test('schema violations: 400 (wrong type, unknown key, missing field, too long)', async () => {
  for (const body of ['{"text":5}', '{"text":"x","bogus":1}', '{"count":1}', `{"text":"${'x'.repeat(1001)}"}`, '[]', '"text"']) {
    const r = await post(JSON_ROUTE, body);
    assert.equal(r.status, 400, `${body.slice(0, 40)}: ${r.text}`);
    assert.ok(['INVALID_REQUEST', 'INVALID_PARAMETER'].includes(r.json.error.code), r.text);
  }
  await assertHealthy(assert, stack);
});

/** {"text":"x","nested":[[...]]} whose deepest point is `depth` containers. */
function nestedBody(depth) {
  const k = depth - 1; // the outer object is one level
  return `{"text":"x","nested":${'['.repeat(k)}${']'.repeat(k)}}`;
}

test('JSON nesting: 32 levels accepted, 33 rejected with 400', async () => {
  const ok = await post(JSON_ROUTE, nestedBody(32));
  assert.equal(ok.status, 200, `depth 32: ${ok.text}`);
  const deep = await post(JSON_ROUTE, nestedBody(33));
  assertErrorEnvelope(assert, deep, 400, 'INVALID_REQUEST');
  const veryDeep = await post(JSON_ROUTE, nestedBody(100000).slice(0, 300000));
  assert.equal(veryDeep.status, 400);
  await assertHealthy(assert, stack);
});

test('a burst of bad requests leaves the responder serving', async () => {
  const bodies = ['{', '{"text":5}', nestedBody(40), '\u00ff', '{"text":"a","text":"a"}'];
  const all = [];
  for (let i = 0; i < 50; i++) all.push(post(JSON_ROUTE, bodies[i % bodies.length]));
  const rs = await Promise.all(all);
  for (const r of rs) assert.equal(r.status, 400, r.text);
  await assertHealthy(assert, stack);
  const ready = await stack.request('/ready');
  assert.equal(ready.status, 200);
});
