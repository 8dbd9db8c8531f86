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

test('GET /ready: 200 {ready:true} with database and orchestrator "ok"', async () => {
  const r = await stack.request('/ready');
  assert.equal(r.status, 200, r.text);
  assert.match(r.headers.get('x-request-id') || '', UUID_V4);
  assert.equal(r.json.ready, true);
  assert.equal(r.json.checks.database, 'ok');
  assert.equal(r.json.checks.orchestrator, 'ok');
});

test('orchestrator stopped: /ready 503 with the orchestrator marked, fast; /health 200; recovers', async () => {
  await stack.orchestratorHandle.stop();
  const t0 = Date.now();
  const r = await stack.request('/ready');
  assert.ok(Date.now() - t0 < 1500, `/ready took ${Date.now() - t0} ms`);
  assert.equal(r.status, 503, r.text);
  assert.equal(r.json.ready, false);
  assert.equal(r.json.checks.database, 'ok');
  assert.equal(r.json.checks.orchestrator, 'unavailable');
  assert.equal((await stack.request('/health')).status, 200);
  stack.orchestratorHandle = null;
  await stack.startOrchestrator();
  assert.equal((await stack.request('/ready')).status, 200);
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
