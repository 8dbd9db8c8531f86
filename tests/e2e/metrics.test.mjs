// GET /metrics (issue 9): Prometheus text that a strict parser accepts
// (lib/promtext.mjs), counters that move by exactly the requests made across
// both responder workers, rate-limit rejections, histograms consistent with
// the request counts, open WebSockets and turns in flight as gauges; refused
// (403) to a client outside metrics_allow unless it brings an owner token.
// The stack trusts X-Forwarded-For so a test can appear as another client.

import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { parse, value } from './lib/promtext.mjs';
import { startStack, waitFor } from './lib/stack.mjs';
import { WsClient } from './lib/wsclient.mjs';

let stack;
let owner;
let user;

before(async () => {
  stack = await startStack({
    ws: true,
    config: { trust_forwarded_for: 'true', rate_rest_per_min: '20', fcgi_workers: '2', rate_rest_per_hour: '1000' },
  });
  owner = stack.addUser('owner', 'owner');
  user = stack.addUser('alice', 'user');
});

after(async () => {
  if (stack) await stack.stop();
});

async function scrape(headers = {}) {
  const r = await fetch(stack.url('/metrics'), { headers });
  const text = await r.text();
  assert.equal(r.status, 200, text);
  assert.match(r.headers.get('content-type'), /^text\/plain; version=0\.0\.4/);
  return parse(text);
}

const health = (m) => value(m, 'meao_http_requests_total', { method: 'GET', route: '/health', status: '200' }) || 0;

test('parses strictly and counters move with the requests made', async () => {
  const m0 = await scrape();
  for (const name of ['meao_http_requests_total', 'meao_http_request_duration_seconds', 'meao_rate_limited_total',
    'meao_orchestrator_errors_total', 'meao_websockets_open', 'meao_turns_in_flight', 'meao_up']) {
    assert.ok(m0.has(name), `${name} present`);
  }
  assert.equal(m0.get('meao_http_request_duration_seconds').type, 'histogram');
  const before = health(m0);

  // 60 requests on parallel connections: both workers serve some
  const N = 60;
  await Promise.all(
    Array.from({ length: N }, async () => {
      const r = await fetch(stack.url('/health'), { headers: { Connection: 'close' } });
      await r.arrayBuffer();
      assert.equal(r.status, 200);
    }),
  );
  const m1 = await scrape();
  assert.equal(health(m1), before + N, 'every worker adds to the same counter');
  const count = value(m1, 'meao_http_request_duration_seconds_count', { method: 'GET', route: '/health' });
  assert.equal(count, health(m1), 'histogram count = requests answered');
  // the scrapes are requests too
  assert.ok(value(m1, 'meao_http_requests_total', { method: 'GET', route: '/metrics', status: '200' }) >= 1);

  const miss = await fetch(stack.url('/api/v1/nope'));
  await miss.arrayBuffer();
  assert.equal(miss.status, 404);
  const m2 = await scrape();
  assert.equal(value(m2, 'meao_http_requests_total', { method: '', route: 'unmatched', status: '404' }), 1);
});

test('rate-limit rejections, open WebSockets, turns in flight', async () => {
  const m0 = await scrape();
  const rejected0 = value(m0, 'meao_rate_limited_total', { class: 'rest' });
  let denied = 0;
  for (let i = 0; i < 25; i++) {
    const r = await fetch(stack.url('/api/v1/auth/me'), { headers: { Authorization: `Bearer ${user.token}` } });
    await r.arrayBuffer();
    if (r.status === 429) denied++;
  }
  assert.ok(denied >= 5, `${denied} requests denied`);
  const ws = await WsClient.open(stack.wsUrl(), { token: owner.token });
  ws.send({ type: 'ping' });
  await ws.next((f) => f.type === 'pong');
  const m1 = await scrape();
  assert.equal(value(m1, 'meao_rate_limited_total', { class: 'rest' }), rejected0 + denied);
  assert.equal(
    value(m1, 'meao_http_requests_total', { method: 'GET', route: '/api/v1/auth/me', status: '429' }),
    denied,
  );
  assert.equal(value(m1, 'meao_websockets_open'), 1);
  assert.equal(value(m1, 'meao_turns_in_flight'), 0);
  ws.close();
  await ws.closed;
  await new Promise((r) => setTimeout(r, 300));
  assert.equal(value(await scrape(), 'meao_websockets_open'), 0);
});

test('a turn waiting for approval is in flight; a dead orchestrator counts as an error', async () => {
  const auth = { Authorization: `Bearer ${owner.token}`, 'Content-Type': 'application/json' };
  const s = await fetch(stack.url('/api/v1/sessions'), { method: 'POST', headers: auth, body: '{"channel":"rest"}' });
  const sid = (await s.json()).data.id;
  // the echo provider's script asks for write_file, whose policy is `ask`: the turn blocks
  const turn = fetch(stack.url(`/api/v1/sessions/${sid}/messages`), {
    method: 'POST',
    headers: auth,
    body: JSON.stringify({ content: '/tool write_file {"path":"x.txt","content":"hi"}' }),
  }).then((r) => r.json());
  const approval = await waitFor(
    async () => {
      const r = await fetch(stack.url('/api/v1/approvals'), { headers: auth });
      const list = (await r.json()).data.approvals.filter((a) => a.sessionId === sid);
      return list[0];
    },
    { timeoutMs: 5000, what: 'the approval' },
  );
  assert.equal(value(await scrape(), 'meao_turns_in_flight'), 1);
  const answer = await fetch(stack.url(`/api/v1/approvals/${approval.approvalId || approval.id}`), {
    method: 'POST',
    headers: auth,
    body: '{"approved":false}',
  });
  await answer.arrayBuffer();
  assert.equal(answer.status, 200);
  await turn;
  const m1 = await scrape();
  assert.equal(value(m1, 'meao_turns_in_flight'), 0);
  const errors0 = value(m1, 'meao_orchestrator_errors_total', { kind: 'unavailable' });

  await stack.orchestratorHandle.stop();
  const failed = await fetch(stack.url(`/api/v1/sessions/${sid}/messages`), {
    method: 'POST',
    headers: auth,
    body: '{"content":"anyone there?"}',
  });
  await failed.arrayBuffer();
  assert.equal(failed.status, 503);
  const m2 = await scrape();
  assert.equal(value(m2, 'meao_orchestrator_errors_total', { kind: 'unavailable' }), errors0 + 1);
  assert.equal(value(m2, 'meao_turns_in_flight'), 0);
});

test('refused to a client outside metrics_allow, unless it is an owner', async () => {
  const other = { 'X-Forwarded-For': '203.0.113.9' };
  const r = await fetch(stack.url('/metrics'), { headers: other });
  const body = await r.json();
  assert.equal(r.status, 403);
  assert.equal(body.error.code, 'FORBIDDEN');
  const asUser = await fetch(stack.url('/metrics'), { headers: { ...other, Authorization: `Bearer ${user.token}` } });
  await asUser.arrayBuffer();
  assert.equal(asUser.status, 403);
  const bad = await fetch(stack.url('/metrics'), { headers: { ...other, Authorization: 'Bearer meao_at_garbage' } });
  await bad.arrayBuffer();
  assert.equal(bad.status, 401);
  const m = await scrape({ ...other, Authorization: `Bearer ${owner.token}` });
  assert.equal(value(m, 'meao_up'), 1);
});

test('the strict parser rejects malformed expositions', () => {
  assert.throws(() => parse('a 1'), /newline/);
  assert.throws(() => parse('# TYPE a counter\na -1\n'), /negative/);
  assert.throws(() => parse('a{b="x} 1\n'), /unterminated|not a sample/);
  assert.throws(() => parse('a 1\nb 1\na 2\n'), /contiguous|duplicate/);
  assert.throws(
    () => parse('# TYPE h histogram\nh_bucket{le="1"} 2\nh_bucket{le="+Inf"} 1\nh_sum 1\nh_count 1\n'),
    /cumulative/,
  );
  assert.throws(() => parse('# TYPE h histogram\nh_bucket{le="+Inf"} 2\nh_sum 1\nh_count 1\n'), /!= _count/);
});
