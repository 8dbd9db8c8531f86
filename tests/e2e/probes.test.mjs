// Probes (API.md "Probes"): GET /health, GET /ready, GET /health/detailed.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';

import { UUID_V4, startStack } from './lib/stack.mjs';

let stack;
before(async () => {
  stack = await startStack();
});
after(async () => {
  await stack?.stop();
});

test('GET /health: 200 JSON {status:"ok",timestamp} with a UUIDv4 X-Request-ID', async () => {
  const r = await stack.request('/health');
  assert.equal(r.status, 200);
  assert.match(r.headers.get('content-type') || '', /^application\/json/);
  assert.match(r.headers.get('x-request-id') || '', UUID_V4);
  assert.equal(r.json.status, 'ok');
  assert.ok(!Number.isNaN(Date.parse(r.json.timestamp)), `timestamp: ${r.json.timestamp}`);
  assert.match(r.json.timestamp, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/);
});

test('GET /health: every response gets its own request id', async () => {
  const a = await stack.request('/health');
  const b = await stack.request('/health');
  assert.notEqual(a.headers.get('x-request-id'), b.headers.get('x-request-id'));
});

test('GET /ready: 200 {ready:true} with database "ok"', async () => {
  const r = await stack.request('/ready');
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('x-request-id') || '', UUID_V4);
  assert.equal(r.json.ready, true);
  assert.equal(r.json.checks.database, 'ok');
  // the orchestrator check joins with the orchestrator issue; not asserted here
});

test('GET /health/detailed without an owner token: 401 JSON', async () => {
  const r = await stack.request('/health/detailed');
  assert.equal(r.status, 401, r.text);
  assert.ok(r.headers.get('x-request-id'));
  assert.ok(r.json, `JSON body expected: ${r.text.slice(0, 200)}`);
});

test('nginx baseline /__static_ok answers without the responder', async () => {
  const r = await stack.request('/__static_ok');
  assert.equal(r.status, 200);
  assert.equal(r.text, 'ok\n');
});
