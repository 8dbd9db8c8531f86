// WebSocket /ws?v=1 end to end: a real WebSocket client (the `ws` package)
// → nginx → websocketd → meao-ws → the reference orchestrator (echo
// provider, whose `/tool`, `/sleep` and `/fail` scripts drive tools and
// approvals; PROTOCOL.md). Streaming, approvals, auth, Origin, bad input,
// limits, faults, and the processes websocketd leaves behind.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { pidAlive, startStack, waitFor } from './lib/stack.mjs';
import { WsClient } from './lib/wsclient.mjs';

const APPROVAL_TIMEOUT_MS = 1500;

let stack;
let alice; // owner
let bob; // user

before(async () => {
  stack = await startStack({
    ws: true,
    wsMaxForks: 256,
    wsOrigins: ['http://allowed.example'],
    config: {
      approval_timeout_ms: APPROVAL_TIMEOUT_MS,
      rate_ws_messages_per_min: 100000,
      rate_rest_per_min: 100000,
      rate_rest_per_hour: 1000000,
      ws_max_connections_per_user: 50,
      ws_auth_timeout_ms: 1000,
    },
  });
  alice = stack.addUser('alice', 'owner');
  bob = stack.addUser('bob', 'user');
});
after(async () => {
  await stack?.stop();
});

const open = (token, opts = {}) => WsClient.open(stack.wsUrl(), { token, ...opts });
async function authed(token) {
  const c = await open(token);
  const r = await c.nextType('auth_result');
  assert.equal(r.success, true, JSON.stringify(r));
  return c;
}
function rest(method, p, token, body) {
  const init = { method, headers: { Authorization: `Bearer ${token}` } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return stack.request(p, init);
}
const workDir = (userId, sid) => path.join(stack.config.workspace_root, String(userId), sid);
let seq = 0;
const rid = (p = 'r') => `${p}-${++seq}`;

async function pendingApprovals(token) {
  const r = await rest('GET', '/api/v1/approvals', token);
  assert.equal(r.status, 200, r.text);
  return r.json.data.approvals;
}

describe('streaming', () => {
  test('text_deltas in order, then message_complete; history keeps both messages', async () => {
    const c = await authed(alice.token);
    const id = rid();
    const text = 'one two three four five six seven eight';
    c.send({ type: 'message', content: text, requestId: id });
    const frames = await c.turn(id);
    const deltas = frames.filter((f) => f.type === 'text_delta');
    assert.ok(deltas.length >= 1);
    assert.equal(deltas.map((d) => d.delta).join(''), text);
    const done = frames.at(-1);
    assert.equal(done.type, 'message_complete');
    assert.equal(frames.indexOf(done), frames.length - 1, 'message_complete is last');
    assert.equal(done.content, text);
    assert.match(done.messageId, /^msg_/);
    assert.match(done.sessionId, /^ses_/);
    assert.equal(typeof done.usage.inputTokens, 'number');
    assert.equal(typeof done.usage.outputTokens, 'number');

    // persisted like the REST route: the owner sees both with includeContent
    const h = await rest('GET', `/api/v1/sessions/${done.sessionId}/messages?includeContent=true`, alice.token);
    assert.equal(h.status, 200, h.text);
    const msgs = h.json.data.messages;
    assert.deepEqual(
      msgs.slice(-2).map((m) => [m.role, m.content]),
      [
        ['user', text],
        ['assistant', text],
      ],
    );
    assert.equal(msgs.at(-1).id, done.messageId);
    // the same connection keeps its session (the user's websocket session)
    const id2 = rid();
    c.send({ type: 'chat', content: [{ type: 'text', text: 'again' }], requestId: id2 });
    const done2 = (await c.turn(id2)).at(-1);
    assert.equal(done2.type, 'message_complete');
    assert.equal(done2.sessionId, done.sessionId);
    await c.close();
  });

  test('scripted tool call with approval: start → approval_request → approve → result → text → complete', async () => {
    const c = await authed(alice.token);
    const id = rid();
    c.send({ type: 'message', content: '/tool write_file {"path":"approved.txt","content":"yes"}', requestId: id });
    const ar = await c.nextType('approval_request');
    assert.equal(ar.correlationId, id);
    assert.equal(ar.requestId, ar.approvalId);
    assert.match(ar.approvalId, /^apr_/);
    assert.equal(ar.toolName, 'write_file');
    assert.equal(ar.request.tool, 'write_file');
    assert.equal(typeof ar.request.isDangerous, 'boolean');
    assert.ok(Array.isArray(ar.request.risks));
    assert.equal(ar.timeout, Math.ceil(APPROVAL_TIMEOUT_MS / 1000));
    c.send({ type: 'approval_response', approvalId: ar.approvalId, approved: true });
    const frames = await c.turn(id);
    const types = frames.map((f) => f.type);
    // tool_call_start came before the approval request (consumed by nextType)
    assert.ok(c.frames.findIndex((f) => f.type === 'tool_call_start' && f.requestId === id) <
      c.frames.findIndex((f) => f.type === 'approval_request' && f.correlationId === id));
    assert.deepEqual(types.slice(0, 2), ['approval_resolved', 'tool_call_result']);
    assert.equal(frames[0].approved, true);
    assert.equal(frames[1].success, true);
    assert.equal(types.at(-1), 'message_complete');
    assert.ok(types.includes('text_delta'));
    const done = frames.at(-1);
    assert.equal(done.toolCalls.length, 1);
    assert.equal(done.toolCalls[0].approved, true);
    assert.equal(fs.readFileSync(path.join(workDir(alice.userId, done.sessionId), 'approved.txt'), 'utf8'), 'yes');
    await c.close();
  });

  test('deny: the tool never runs and the reply says so', async () => {
    const c = await authed(alice.token);
    const id = rid();
    c.send({ type: 'message', content: '/tool write_file {"path":"denied.txt","content":"no"}', requestId: id });
    const ar = await c.nextType('approval_request');
    // the seed's way: answer by requestId (which is the approval id)
    c.send({ type: 'approval_response', requestId: ar.requestId, approved: false });
    const frames = await c.turn(id);
    const resolved = frames.find((f) => f.type === 'approval_resolved');
    assert.equal(resolved.approved, false);
    assert.equal(resolved.reason, 'denied');
    const result = frames.find((f) => f.type === 'tool_call_result');
    assert.equal(result.success, false);
    const done = frames.at(-1);
    assert.equal(done.type, 'message_complete');
    assert.ok(!fs.existsSync(path.join(workDir(alice.userId, done.sessionId), 'denied.txt')));
    // a late answer to a decided approval is an error, and nothing changes
    c.send({ type: 'approval_response', approvalId: ar.approvalId, approved: true });
    const late = await c.nextType('error');
    assert.equal(late.code, 'APPROVAL_EXPIRED');
    assert.equal(late.approvalId, ar.approvalId);
    await c.close();
  });

  test('timeout: unanswered for approval_timeout_ms → denied', async () => {
    const c = await authed(alice.token);
    const id = rid();
    c.send({ type: 'message', content: '/tool write_file {"path":"late.txt","content":"no"}', requestId: id });
    await c.nextType('approval_request');
    const frames = await c.turn(id, APPROVAL_TIMEOUT_MS + 5000);
    const resolved = frames.find((f) => f.type === 'approval_resolved');
    assert.equal(resolved.approved, false);
    assert.equal(resolved.reason, 'timeout');
    assert.equal(frames.at(-1).type, 'message_complete');
    assert.ok(!fs.existsSync(path.join(workDir(alice.userId, frames.at(-1).sessionId), 'late.txt')));
    await c.close();
  });

  test('disconnect with an approval pending: denied at the orchestrator at once, the tool never runs', async () => {
    const c = await authed(bob.token);
    const id = rid();
    c.send({ type: 'message', content: '/tool bash {"command":"touch ran.txt"}', requestId: id });
    const ar = await c.nextType('approval_request');
    assert.equal((await pendingApprovals(bob.token)).length, 1);
    const t0 = Date.now();
    await c.terminate();
    await waitFor(async () => (await pendingApprovals(bob.token)).length === 0, {
      timeoutMs: 1000,
      what: 'the approval to leave the orchestrator',
    });
    assert.ok(Date.now() - t0 < 1000);
    // answering it now is too late
    const late = await rest('POST', `/api/v1/approvals/${ar.approvalId}`, bob.token, { approved: true });
    assert.notEqual(late.status, 200);
    await sleep(300);
    const sessions = await rest('GET', '/api/v1/sessions?limit=5', bob.token);
    for (const s of sessions.json.data.sessions || sessions.json.data) {
      assert.ok(!fs.existsSync(path.join(workDir(bob.userId, s.id), 'ran.txt')), 'the tool never ran');
    }
  });

  test('an approval of one connection answered from another of the same user', async () => {
    const a = await authed(alice.token);
    const b = await authed(alice.token);
    const id = rid();
    a.send({ type: 'message', content: '/tool write_file {"path":"other.txt","content":"2"}', requestId: id });
    const ar = await a.nextType('approval_request');
    b.send({ type: 'approval_response', approvalId: ar.approvalId, approved: true });
    const ack = await b.nextType('approval_ack');
    assert.equal(ack.approvalId, ar.approvalId);
    const frames = await a.turn(id);
    assert.equal(frames.find((f) => f.type === 'approval_resolved').approved, true);
    assert.equal(frames.at(-1).type, 'message_complete');
    // another user cannot answer it (and learns nothing about it)
    const id2 = rid();
    a.send({ type: 'message', content: '/tool write_file {"path":"x.txt","content":"2"}', requestId: id2 });
    const ar2 = await a.nextType('approval_request');
    const eve = await authed(bob.token);
    eve.send({ type: 'approval_response', approvalId: ar2.approvalId, approved: true });
    const refused = await eve.nextType('error');
    assert.equal(refused.code, 'APPROVAL_NOT_FOUND');
    a.send({ type: 'approval_response', approvalId: ar2.approvalId, approved: false });
    assert.equal((await a.turn(id2)).at(-1).type, 'message_complete');
    // unknown ids
    a.send({ type: 'approval_response', approvalId: 'apr_00000000000000000000', approved: true });
    assert.equal((await a.nextType('error')).code, 'APPROVAL_NOT_FOUND');
    await Promise.all([a.close(), b.close(), eve.close()]);
  });

  test('cancel stops the turn; one turn at a time; the session is usable afterwards', async () => {
    const c = await authed(alice.token);
    const id = rid();
    c.send({ type: 'message', content: '/sleep 5000\nslow', requestId: id });
    await sleep(100);
    c.send({ type: 'message', content: 'second', requestId: rid() });
    const busy = await c.nextType('error');
    assert.equal(busy.code, 'CONFLICT');
    c.send({ type: 'cancel', targetRequestId: 'not-this-one' });
    assert.equal((await c.nextType('error')).code, 'NOT_FOUND');
    const t0 = Date.now();
    c.send({ type: 'cancel', targetRequestId: id });
    const end = (await c.turn(id)).at(-1);
    assert.equal(end.type, 'error');
    assert.equal(end.code, 'CANCELLED');
    assert.ok(Date.now() - t0 < 2000, 'cancel is prompt');
    const id2 = rid();
    c.send({ type: 'message', content: 'after cancel', requestId: id2 });
    assert.equal((await c.turn(id2)).at(-1).type, 'message_complete');
    await c.close();
  });

  test('a message naming a session: own works, another user\'s is NOT_FOUND', async () => {
    const own = await rest('POST', '/api/v1/sessions', bob.token, { channel: 'web' });
    assert.equal(own.status, 201, own.text);
    const theirs = await rest('POST', '/api/v1/sessions', alice.token, { channel: 'web' });
    const c = await authed(bob.token);
    const id = rid();
    c.send({ type: 'message', content: 'in my session', sessionId: own.json.data.id, requestId: id });
    const done = (await c.turn(id)).at(-1);
    assert.equal(done.type, 'message_complete');
    assert.equal(done.sessionId, own.json.data.id);
    const id2 = rid();
    c.send({ type: 'message', content: 'in hers', sessionId: theirs.json.data.id, requestId: id2 });
    const err = await c.nextType('error');
    assert.equal(err.code, 'NOT_FOUND');
    assert.equal(err.requestId, id2);
    c.send({ type: 'message', content: 'bad id', sessionId: 42, requestId: rid() });
    assert.equal((await c.nextType('error')).code, 'INVALID_PARAMETER');
    const h = await rest('GET', `/api/v1/sessions/${theirs.json.data.id}/messages`, alice.token);
    assert.equal(h.json.data.messages.length, 0, 'nothing was stored in her session');
    await c.close();
  });
});

describe('auth and origin', () => {
  test('header auth; first-frame auth; nothing before auth; a bad token', async () => {
    const h = await open(alice.token);
    const r = await h.nextType('auth_result');
    assert.equal(r.success, true);
    assert.equal(r.role, 'owner');
    await h.close();

    const f = await open();
    f.send({ type: 'ping' });
    assert.equal((await f.nextType('error')).code, 'AUTH_REQUIRED');
    f.send({ type: 'message', content: 'hi' });
    assert.equal((await f.nextType('error')).code, 'AUTH_REQUIRED');
    f.send({ type: 'auth', token: 'meao_at_garbage', requestId: 'a1' });
    const bad = await f.nextType('auth_result');
    assert.equal(bad.success, false);
    assert.equal(bad.requestId, 'a1');
    assert.equal(bad.error.code, 'AUTH_INVALID_TOKEN');
    f.send({ type: 'auth', token: bob.token, requestId: 'a2' });
    const ok = await f.nextType('auth_result');
    assert.equal(ok.success, true);
    assert.equal(ok.requestId, 'a2');
    assert.equal(ok.role, 'user');
    f.send({ type: 'ping' });
    await f.nextType('pong');
    await f.close();

    // a bad header token: auth_result false and the connection is closed
    const b = await open('meao_at_' + 'x'.repeat(49));
    const br = await b.nextType('auth_result');
    assert.equal(br.success, false);
    await b.closed;
  });

  test('three bad auth frames close the connection', async () => {
    const c = await open();
    for (let i = 0; i < 3; i++) c.send({ type: 'auth', token: 'nope' });
    await c.closed;
    assert.equal(c.frames.filter((f) => f.type === 'auth_result' && !f.success).length, 3);
  });

  test('no auth within ws_auth_timeout_ms → error and closed', async () => {
    const c = await open();
    const t0 = Date.now();
    const info = await c.closed;
    assert.ok(Date.now() - t0 < 3000);
    assert.ok(info.code);
    assert.equal(c.frames.at(-1).code, 'AUTH_REQUIRED');
  });

  test('tokens in the query string are refused; v other than 1 is refused', async () => {
    const q = await WsClient.open(stack.wsUrl(`v=1&token=${alice.token}`));
    const e = await q.nextType('error');
    assert.equal(e.code, 'AUTH_INVALID_TOKEN');
    await q.closed;
    assert.ok(!q.frames.some((f) => f.type === 'auth_result' && f.success));
    const v = await WsClient.open(stack.wsUrl('v=2'), { token: alice.token });
    assert.equal((await v.nextType('error')).code, 'UNSUPPORTED_VERSION');
    await v.closed;
    // nginx never logs the query's token (the access log has the URI): this
    // is why the program refuses it — the client must not send it at all
  });

  test('foreign Origin → 403 from nginx and no program started; same and listed origins work', async () => {
    // each refused upgrade carries its own request id: a program started for
    // it would log that id as its connection id
    const ids = ['evil-origin-1', 'evil-origin-2'];
    await assert.rejects(
      open(alice.token, { origin: 'http://evil.example', headers: { 'X-Request-ID': ids[0] } }),
      (e) => e.status === 403,
    );
    await assert.rejects(
      open(alice.token, {
        origin: `http://127.0.0.1:${stack.port}.evil.example`,
        headers: { 'X-Request-ID': ids[1] },
      }),
      (e) => e.status === 403,
    );
    await sleep(300);
    for (const id of ids) assert.ok(!stack.readLog('ws').includes(id), `no meao-ws started for ${id}`);
    const same = await open(alice.token, {
      origin: `http://127.0.0.1:${stack.port}`,
      headers: { 'X-Request-ID': 'same-origin-ok' },
    });
    const ok = await same.nextType('auth_result');
    assert.equal(ok.success, true);
    assert.equal(ok.connectionId, 'same-origin-ok', 'the program logs under the upgrade\'s request id');
    await waitFor(() => stack.readLog('ws').includes('same-origin-ok'), { what: 'the program\'s log line' });
    const listed = await open(alice.token, { origin: 'http://allowed.example' });
    assert.equal((await listed.nextType('auth_result')).success, true);
    await Promise.all([same.close(), listed.close()]);
  });

  test('a revoked token closes its connections within 5 s', async () => {
    const carol = stack.addUser('carol', 'user');
    const c = await authed(carol.token);
    const t0 = Date.now();
    const r = stack.ctl(['token', 'revoke', carol.token]);
    assert.equal(r.status, 0, r.stderr);
    const warn = await c.nextType('error');
    assert.equal(warn.code, 'AUTH_INVALID_TOKEN');
    assert.equal(warn.reauth, true);
    c.send({ type: 'message', content: 'still here?', requestId: rid() });
    assert.equal((await c.nextType('error')).code, 'AUTH_INVALID_TOKEN');
    await c.closed;
    assert.ok(Date.now() - t0 < 5000, `closed after ${Date.now() - t0} ms`);
    assert.equal(c.frames.at(-1).code, 'AUTH_INVALID_TOKEN');
  });

  test('a refresh revokes the old access token: a fresh auth frame keeps the connection', async () => {
    const frank = stack.addUser('frank', 'user');
    const c = await authed(frank.token);
    const r = await stack.request('/api/v1/auth/refresh', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ refreshToken: frank.refreshToken }),
    });
    assert.equal(r.status, 200, r.text);
    const warn = await c.nextType('error', 3000);
    assert.equal(warn.reauth, true);
    c.send({ type: 'auth', token: r.json.data.token, requestId: 're' });
    assert.equal((await c.nextType('auth_result')).success, true);
    await sleep(3500); // past the grace period
    c.send({ type: 'ping' });
    await c.nextType('pong');
    assert.equal(c.closeInfo, null);
    // another user's token cannot take the connection over
    c.send({ type: 'auth', token: alice.token, requestId: 'other' });
    const other = await c.nextType('auth_result');
    assert.equal(other.success, false);
    assert.equal(other.error.code, 'FORBIDDEN');
    await c.close();
  });
});

describe('bad input', () => {
  test('invalid JSON, not an object, unknown type, bad requestId, bad approval answer → error frames; still usable', async () => {
    const c = await authed(alice.token);
    for (const bad of ['not json', '[1,2]', '"str"', '{"type":42}', '{"type":"nope"}', '{"a":1}', '{"type":"ping","type":"ping"}']) {
      c.send(bad);
      const e = await c.nextType('error');
      assert.ok(['INVALID_REQUEST', 'INVALID_PARAMETER'].includes(e.code), `${bad}: ${JSON.stringify(e)}`);
    }
    c.send({ type: 'ping', requestId: 'x'.repeat(65) });
    assert.equal((await c.nextType('error')).code, 'INVALID_PARAMETER');
    c.send({ type: 'approval_response', approvalId: 'apr_1', approved: 'yes' });
    assert.equal((await c.nextType('error')).code, 'INVALID_PARAMETER');
    for (const content of [undefined, '', 42, [], [{ type: 'image' }], 'x'.repeat(300 * 1024)]) {
      c.send({ type: 'message', content, requestId: rid() });
      const e = await c.nextType('error');
      assert.ok(['INVALID_PARAMETER', 'PAYLOAD_TOO_LARGE'].includes(e.code), JSON.stringify(e));
    }
    c.send({ type: 'message', content: 'a\u0000b', requestId: rid() });
    assert.ok(['INVALID_REQUEST', 'INVALID_PARAMETER'].includes((await c.nextType('error')).code));
    c.send({ type: 'message', content: 'hi', attachments: [{ type: 'file', name: 'a', url: 'http://insecure' }], requestId: rid() });
    assert.equal((await c.nextType('error')).code, 'INVALID_PARAMETER');
    c.send({ type: 'ping', timestamp: 7 });
    const pong = await c.nextType('pong');
    assert.equal(pong.timestamp, 7);
    assert.ok(!Number.isNaN(Date.parse(pong.serverTime)));
    await c.close();
  });

  test('a 2 MiB frame → PAYLOAD_TOO_LARGE and the connection still works', async () => {
    const c = await authed(alice.token);
    c.send(JSON.stringify({ type: 'message', content: 'x'.repeat(2 * 1024 * 1024) }));
    const e = await c.nextType('error', 10000);
    assert.equal(e.code, 'PAYLOAD_TOO_LARGE');
    c.send({ type: 'ping' });
    await c.nextType('pong');
    await c.close();
  });

  test('a frame with embedded newlines arrives as lines: errors, and the connection still works', async () => {
    const c = await authed(alice.token);
    c.send('{"type":\n"ping"}');
    await c.nextType('error');
    await c.nextType('error');
    c.send({ type: 'ping' });
    await c.nextType('pong');
    await c.close();
  });

  test('a binary frame → error frames, never a crash; the connection still works', async () => {
    // websocketd (text mode) hands a binary message's bytes to the program
    // without a line end, so they run into the next frame: both are reported
    // as invalid and nothing else happens.
    const c = await authed(alice.token);
    c.ws.send(Buffer.from([0, 1, 2, 0xff, 0x0a, 0x7b]), { binary: true });
    const e = await c.nextType('error');
    assert.equal(e.code, 'INVALID_REQUEST');
    c.send({ type: 'ping', timestamp: 1 });
    c.send({ type: 'ping', timestamp: 2 });
    const pong = await c.nextType('pong');
    assert.ok([1, 2].includes(pong.timestamp));
    await c.close();
  });

  test('1000 frames in a burst are all answered in order', async () => {
    const c = await authed(alice.token);
    for (let i = 0; i < 1000; i++) c.send(i % 2 ? { type: 'ping', timestamp: i } : '{bad');
    for (let i = 0; i < 1000; i++) {
      const f = await c.next(() => true, 10000);
      if (i % 2) assert.deepEqual([f.type, f.timestamp], ['pong', i]);
      else assert.equal(f.type, 'error');
    }
    c.send({ type: 'ping' });
    await c.nextType('pong');
    await c.close();
  });
});

describe('faults and processes', () => {
  test('orchestrator killed mid-turn → error frame; down → SERVICE_UNAVAILABLE; the message is kept as failed', async () => {
    const c = await authed(bob.token);
    const id = rid();
    c.send({ type: 'message', content: '/sleep 5000\nnever', requestId: id });
    await sleep(200);
    await stack.orchestratorHandle.kill();
    const end = (await c.turn(id)).at(-1);
    assert.equal(end.type, 'error');
    assert.equal(end.code, 'SERVICE_UNAVAILABLE');
    const id2 = rid();
    const t0 = Date.now();
    c.send({ type: 'message', content: 'while down', requestId: id2 });
    const down = (await c.turn(id2)).at(-1);
    assert.equal(down.code, 'SERVICE_UNAVAILABLE');
    assert.ok(Date.now() - t0 < 1500);
    await stack.startOrchestrator();
    const id3 = rid();
    c.send({ type: 'message', content: 'back', requestId: id3 });
    const ok = (await c.turn(id3)).at(-1);
    assert.equal(ok.type, 'message_complete');
    const h = await rest('GET', `/api/v1/sessions/${ok.sessionId}/messages?limit=10`, bob.token);
    const statuses = h.json.data.messages.slice(-4).map((m) => [m.role, m.status]);
    assert.deepEqual(statuses, [
      ['user', 'failed'],
      ['user', 'failed'],
      ['user', 'ok'],
      ['assistant', 'ok'],
    ]);
    await c.close();
  });

  test('a client gone mid-turn leaves no lock: the next turn in the session runs', async () => {
    const c = await authed(alice.token);
    const sid = (await rest('POST', '/api/v1/sessions', alice.token, { channel: 'ws' })).json.data.id;
    c.send({ type: 'message', content: '/sleep 3000\nx', sessionId: sid, requestId: rid() });
    await sleep(200);
    await c.terminate();
    const d = await authed(alice.token);
    const id = rid();
    await waitFor(
      async () => {
        d.send({ type: 'message', content: 'next', sessionId: sid, requestId: id });
        const f = await d.next((x) => x.requestId === id && (x.type === 'message_complete' || x.type === 'error'), 5000);
        return f.type === 'message_complete';
      },
      { timeoutMs: 3000, intervalMs: 100, what: 'the session to take a new turn' },
    );
    await d.close();
  });

  test('a program killed mid-turn frees its session at once; its message is marked failed', async () => {
    const sid = (await rest('POST', '/api/v1/sessions', bob.token, { channel: 'ws' })).json.data.id;
    const before = new Set(stack.wsPrograms());
    const c = await authed(bob.token);
    const mine = stack.wsPrograms().filter((p) => !before.has(p));
    assert.equal(mine.length, 1);
    c.send({ type: 'message', content: '/sleep 5000\nkilled', sessionId: sid, requestId: rid() });
    await sleep(300);
    process.kill(mine[0], 'SIGKILL');
    await c.closed;
    const d = await authed(bob.token);
    const id = rid();
    d.send({ type: 'message', content: 'right after', sessionId: sid, requestId: id });
    const end = (await d.turn(id)).at(-1);
    assert.equal(end.type, 'message_complete', JSON.stringify(end));
    const h = await rest('GET', `/api/v1/sessions/${sid}/messages`, bob.token);
    assert.deepEqual(
      h.json.data.messages.map((m) => [m.role, m.status]),
      [
        ['user', 'failed'],
        ['user', 'ok'],
        ['assistant', 'ok'],
      ],
    );
    await d.close();
  });

  test('killing a program (kill -9) frees its connection slot; 1000 connect/drop cycles leave no process behind', async () => {
    // the connection limit with a crashed program: see the limits stack below
    const baseline = stack.wsPrograms().length;
    let i = 0;
    const refused = [];
    const worker = async () => {
      while (i < 1000) {
        i++;
        let c;
        try {
          c = await open(i % 10 === 0 ? alice.token : undefined);
        } catch (e) {
          // websocketd's --maxforks answers 429 while dropped programs exit
          refused.push(e.status || e.message);
          await sleep(20);
          continue;
        }
        if (i % 3 === 0) await c.close();
        else await c.terminate();
      }
    };
    await Promise.all(Array.from({ length: 8 }, worker));
    assert.ok(refused.every((r) => r === 429), `only maxforks refusals: ${refused.slice(0, 5)}`);
    assert.ok(refused.length < 50, `${refused.length} refused`);
    await waitFor(() => stack.wsPrograms().length <= baseline, { timeoutMs: 10000, what: 'every program to exit' });
    // websocketd reaps each exit a moment later: none may stay a zombie
    await waitFor(() => stack.wsZombies().length === 0, { timeoutMs: 3000, what: 'no zombie programs' });
    // still serving
    const c = await authed(alice.token);
    c.send({ type: 'ping' });
    await c.nextType('pong');
    await c.close();
  });
});

describe('limits', () => {
  let lim;
  let dave;
  before(async () => {
    lim = await startStack({
      ws: true,
      config: {
        rate_ws_messages_per_min: 3,
        ws_max_connections_per_user: 2,
        ws_idle_timeout_s: 1,
      },
    });
    dave = lim.addUser('dave', 'user');
  });
  after(async () => {
    await lim?.stop();
  });
  const lopen = (token) => WsClient.open(lim.wsUrl(), { token });

  test('messages per minute: the 4th gets RATE_LIMITED with retryAfter', async () => {
    const c = await lopen(dave.token);
    await c.nextType('auth_result');
    for (let i = 0; i < 3; i++) {
      const id = rid();
      c.send({ type: 'message', content: `m${i}`, requestId: id });
      assert.equal((await c.turn(id)).at(-1).type, 'message_complete');
    }
    const id = rid();
    c.send({ type: 'message', content: 'one too many', requestId: id });
    const e = await c.nextType('error');
    assert.equal(e.code, 'RATE_LIMITED');
    assert.equal(e.requestId, id);
    assert.ok(e.retryAfter >= 1);
    c.send({ type: 'ping' }); // pings are not limited
    await c.nextType('pong');
    await c.close();
  });

  test('open connections per user: the 3rd is refused; a killed program gives its slot back', async () => {
    const eve = lim.addUser('eve', 'user');
    const a = await lopen(eve.token);
    assert.equal((await a.nextType('auth_result')).success, true);
    const b = await lopen(eve.token);
    assert.equal((await b.nextType('auth_result')).success, true);
    const c = await lopen(eve.token);
    const r = await c.nextType('auth_result');
    assert.equal(r.success, false);
    assert.equal(r.error.code, 'RATE_LIMITED');
    await c.closed;
    // kill -9 one program: its slot must not stay taken
    const progs = lim.wsPrograms();
    assert.equal(progs.length, 2);
    process.kill(Math.max(...progs), 'SIGKILL');
    await waitFor(() => lim.wsPrograms().length === 1, { what: 'the killed program to go' });
    const d = await lopen(eve.token);
    assert.equal((await d.nextType('auth_result')).success, true);
    await Promise.all([a.close(), b.close(), d.close()]);
  });

  test('an idle connection is closed after ws_idle_timeout_s', async () => {
    const c = await lopen(dave.token);
    await c.nextType('auth_result');
    const t0 = Date.now();
    await c.closed;
    const took = Date.now() - t0;
    assert.ok(took >= 800 && took < 4000, `closed after ${took} ms`);
    assert.equal(c.frames.at(-1).code, 'IDLE_TIMEOUT');
  });
});

test('no program outlives the suite', async () => {
  await waitFor(() => stack.wsPrograms().every((p) => !pidAlive(p)), { timeoutMs: 5000, what: 'programs to exit' });
});
