// Turns when things break: the orchestrator stopped, killed mid-turn, a
// client that goes away mid-turn, the turn deadline. Each leaves the user's
// message in history marked failed and the session usable.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { assertErrorEnvelope, assertHealthy, startStack, waitFor } from './lib/stack.mjs';

let stack;
let bob;
let workspace;

before(async () => {
  workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-ws-'));
  stack = await startStack({
    config: {
      workspace_root: workspace,
      rate_rest_per_min: 100000,
      rate_rest_per_hour: 1000000,
      rate_messages_per_min: 100000,
      turn_deadline_s: 3,
    },
  });
  await stack.startOrchestrator();
  bob = stack.addUser('bob', 'user');
});
after(async () => {
  await stack?.stop();
  if (workspace) fs.rmSync(workspace, { recursive: true, force: true });
});

const auth = (t) => ({ Authorization: `Bearer ${t}` });
function call(method, p, body, init = {}) {
  const req = { method, headers: auth(bob.token), ...init };
  if (body !== undefined) {
    req.headers['Content-Type'] = 'application/json';
    req.body = JSON.stringify(body);
  }
  return stack.request(p, req);
}
async function newSession() {
  const r = await call('POST', '/api/v1/sessions', { channel: 'rest' });
  assert.equal(r.status, 201, r.text);
  return r.json.data.id;
}
const post = (sid, content, init) => call('POST', `/api/v1/sessions/${sid}/messages`, { content }, init);
async function lastUserMessage(sid) {
  const h = await call('GET', `/api/v1/sessions/${sid}/messages`);
  assert.equal(h.status, 200, h.text);
  return h.json.data.messages.filter((m) => m.role === 'user').at(-1);
}

describe('faults', () => {
  test('orchestrator stopped: 503 within a second, the message kept as failed', async () => {
    const sid = await newSession();
    const handle = await stack.startOrchestrator();
    assert.ok(handle.started, 'this suite runs its own orchestrator');
    await handle.stop();
    const t0 = Date.now();
    const r = await post(sid, 'is anyone there?');
    const took = Date.now() - t0;
    assertErrorEnvelope(assert, r, 503, 'SERVICE_UNAVAILABLE');
    assert.ok(took < 1000, `answered in ${took} ms`);
    assert.equal(r.json.error.retryable, true);
    const m = await lastUserMessage(sid);
    assert.equal(m.status, 'failed');
    // approvals and tools need it too
    assertErrorEnvelope(assert, await call('GET', '/api/v1/approvals'), 503, 'SERVICE_UNAVAILABLE');
    assertErrorEnvelope(assert, await call('GET', '/api/v1/tools'), 503, 'SERVICE_UNAVAILABLE');
    // sessions and history do not
    assert.equal((await call('GET', `/api/v1/sessions/${sid}`)).status, 200);
    // back up: the session works, and the failed message is not sent as history
    await stack.startOrchestrator();
    const ok = await post(sid, 'now?');
    assert.equal(ok.status, 200, ok.text);
    assert.equal(ok.json.data.content, 'now?');
  });

  test('orchestrator killed mid-turn: a clean error, then the session works', async () => {
    const sid = await newSession();
    const handle = await stack.startOrchestrator();
    const turn = post(sid, '/sleep 20000\nslow');
    await sleep(500);
    await handle.kill();
    const r = await turn;
    assertErrorEnvelope(assert, r, 503, 'SERVICE_UNAVAILABLE');
    assert.match(r.json.error.message, /lost/);
    assert.equal((await lastUserMessage(sid)).status, 'failed');
    const s = await call('GET', `/api/v1/sessions/${sid}`);
    assert.equal(s.json.data.busy, false, 'the lease was released');
    await stack.startOrchestrator();
    const ok = await post(sid, 'again');
    assert.equal(ok.status, 200, ok.text);
    await assertHealthy(assert, stack);
  });

  test('a client that disconnects mid-turn does not leave the session locked', async () => {
    await stack.startOrchestrator();
    const sid = await newSession();
    const ac = new AbortController();
    const turn = post(sid, '/sleep 20000\nslow', { signal: ac.signal }).catch((e) => e);
    await waitFor(async () => (await call('GET', `/api/v1/sessions/${sid}`)).json.data.busy, {
      what: 'the turn to start',
    });
    ac.abort();
    const res = await turn;
    assert.ok(res instanceof Error, 'the fetch was aborted');
    // nginx drops the upstream connection; the responder cancels the turn
    const t0 = Date.now();
    await waitFor(async () => !(await call('GET', `/api/v1/sessions/${sid}`)).json.data.busy, {
      timeoutMs: 5000,
      what: 'the session to be free again',
    });
    assert.ok(Date.now() - t0 < 5000);
    const m = await lastUserMessage(sid);
    assert.equal(m.status, 'failed');
    const ok = await post(sid, 'after the disconnect');
    assert.equal(ok.status, 200, ok.text);
  });

  test('the turn deadline answers 504 and frees the session', async () => {
    await stack.startOrchestrator();
    const sid = await newSession();
    const t0 = Date.now();
    const r = await post(sid, '/sleep 20000\nslow');
    const took = Date.now() - t0;
    assertErrorEnvelope(assert, r, 504, 'GATEWAY_TIMEOUT');
    assert.ok(took >= 2900 && took < 6000, `took ${took} ms`);
    assert.equal((await lastUserMessage(sid)).status, 'failed');
    const ok = await post(sid, 'quick one');
    assert.equal(ok.status, 200, ok.text);
  });

  test('provider failure is a 502 with the message kept as failed', async () => {
    await stack.startOrchestrator();
    const sid = await newSession();
    const r = await post(sid, '/fail');
    assertErrorEnvelope(assert, r, 502, 'PROVIDER_ERROR');
    assert.equal((await lastUserMessage(sid)).status, 'failed');
    assert.equal((await post(sid, 'fine')).status, 200);
  });

  test('concurrent posts to one session: exactly one runs, the others get 409', async () => {
    await stack.startOrchestrator();
    const sid = await newSession();
    const results = await Promise.all(Array.from({ length: 6 }, (_, i) => post(sid, `/sleep 300\nn${i}`)));
    const codes = results.map((r) => r.status).sort();
    assert.equal(codes.filter((c) => c === 200).length, 1, JSON.stringify(codes));
    assert.equal(codes.filter((c) => c === 409).length, 5, JSON.stringify(codes));
    for (const r of results.filter((x) => x.status === 409)) assert.equal(r.json.error.code, 'CONFLICT');
    // refused posts store nothing
    const h = await call('GET', `/api/v1/sessions/${sid}/messages`);
    assert.equal(h.json.data.messages.length, 2);
  });
});
