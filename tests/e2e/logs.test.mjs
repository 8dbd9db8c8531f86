// Logs: no Authorization value ever reaches a log (nginx access/error logs,
// responder log); the responder logs one JSON object per line, with the
// request id of the request it is about.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { startStack } from './lib/stack.mjs';

const SECRET = 'meao_at_ZmFrZVRva2VuRm9yTG9nVGVzdHM0MjQy';
const SECRET_PART = 'ZmFrZVRva2VuRm9yTG9nVGVzdHM0MjQy';

let stack;
before(async () => {
  // debug level: the responder logs every request, so there is most to leak
  stack = await startStack({ config: { log_level: 'debug' } });
});
after(async () => {
  await stack?.stop();
});

async function traffic() {
  const auth = { Authorization: `Bearer ${SECRET}` };
  await stack.request('/health', { headers: { ...auth, 'X-Request-ID': 'log-health-1' } });
  await stack.request('/ready', { headers: auth });
  await stack.request('/health/detailed', { headers: { ...auth, 'X-Request-ID': 'log-detailed-1' } });
  await stack.request('/api/v1/nope', { headers: { ...auth, 'X-Request-ID': 'log-404-1' } });
  await stack.request('/__debug/echo', {
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: '{"text":',
  });
  // nginx's own 413
  await stack.request('/api/v1/nope', {
    method: 'POST',
    headers: { ...auth, 'Content-Type': 'application/json' },
    body: Buffer.alloc(3 * 1024 * 1024, 0x20),
  });
  // a malformed Authorization header, and the secret in a Cookie, too
  await stack.request('/health/detailed', { headers: { Authorization: `Basic ${SECRET}`, Cookie: `t=${SECRET}` } });
  await sleep(200); // let nginx write its access log lines
}

test('no log contains an Authorization value', async () => {
  await traffic();
  const logs = {
    'nginx access log': stack.readLog('access'),
    'nginx error log': stack.readLog('nginxError'),
    'meao-fcgi log': stack.readLog('fcgi'),
  };
  assert.ok(logs['nginx access log'].includes('log-404-1'), 'the access log has the requests');
  for (const [name, text] of Object.entries(logs)) {
    assert.ok(!text.includes(SECRET_PART), `${name} contains the token:\n${text}`);
    assert.ok(!/authorization"\s*:/i.test(text), `${name} has an authorization field`);
  }
});

test('nginx access log: one JSON object per line with the response\'s request id', async () => {
  await stack.request('/api/v1/nope', { headers: { 'X-Request-ID': 'access-log-1' } });
  await sleep(100);
  const lines = stack.readLog('access').trim().split('\n');
  for (const line of lines) JSON.parse(line);
  const mine = lines.map((l) => JSON.parse(l)).filter((o) => o.requestId === 'access-log-1');
  assert.equal(mine.length, 1, 'one line for the request');
  assert.equal(mine[0].status, 404);
  assert.equal(mine[0].uri, '/api/v1/nope');
});

test('meao-fcgi log: JSON lines, request lines carry the requestId', async () => {
  const r = await stack.request('/api/v1/nope', { headers: { 'X-Request-ID': 'fcgi-log-1' } });
  assert.equal(r.status, 404);
  await sleep(100);
  const lines = stack.readLog('fcgi').split('\n').filter((l) => l.trim() !== '');
  assert.ok(lines.length > 0, 'the responder logged something');
  const objs = lines.map((l, i) => {
    try {
      return JSON.parse(l);
    } catch {
      assert.fail(`line ${i + 1} of the responder log is not JSON: ${l}`);
    }
    return null;
  });
  for (const o of objs) {
    assert.equal(typeof o, 'object');
    assert.ok(o.ts || o.time || o.timestamp, `no time in ${JSON.stringify(o)}`);
    assert.ok(o.level, `no level in ${JSON.stringify(o)}`);
  }
  const mine = objs.filter((o) => o.requestId === 'fcgi-log-1');
  assert.ok(mine.length >= 1, `a line with requestId fcgi-log-1 in:\n${lines.slice(-10).join('\n')}`);
});

test('a request without X-Request-ID: nginx and meao-fcgi log the same generated id', async () => {
  // nginx passes its own id (UUID-shaped $request_id) as MEAO_REQUEST_ID
  const gen = await stack.request('/api/v1/nope');
  await sleep(100);
  const genId = gen.headers.get('x-request-id');
  assert.ok(stack.readLog('fcgi').includes(`"requestId":"${genId}"`), 'generated id logged by the responder');
  assert.ok(stack.readLog('access').includes(`"requestId":"${genId}"`), 'and by nginx (same id in both logs)');
});
