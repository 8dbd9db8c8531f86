// Approvals over REST while a POST .../messages blocks on them: approve,
// deny, timeout, trustSession, late answers, and another user's approval.
// The echo provider's scripts drive the tools: `/tool write_file {...}` asks
// (policy ask), `/tool bash {...}` asks every time (policy always).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { assertErrorEnvelope, startStack, waitFor } from './lib/stack.mjs';

const APPROVAL_TIMEOUT_MS = 2000;

let stack;
let bob;
let carol;
let workspace;

before(async () => {
  workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-ws-'));
  stack = await startStack({
    config: {
      workspace_root: workspace,
      rate_rest_per_min: 100000,
      rate_rest_per_hour: 1000000,
      rate_messages_per_min: 100000,
      approval_timeout_ms: APPROVAL_TIMEOUT_MS,
    },
  });
  await stack.startOrchestrator();
  bob = stack.addUser('bob', 'user');
  carol = stack.addUser('carol', 'user');
});
after(async () => {
  await stack?.stop();
  if (workspace) fs.rmSync(workspace, { recursive: true, force: true });
});

const auth = (t) => ({ Authorization: `Bearer ${t}` });
function call(method, p, token, body) {
  const init = { method, headers: auth(token) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  return stack.request(p, init);
}
async function newSession(token) {
  const r = await call('POST', '/api/v1/sessions', token, { channel: 'rest' });
  assert.equal(r.status, 201, r.text);
  return r.json.data.id;
}
/** The caller's pending approvals for session sid, waiting until n are there. */
async function pendingFor(token, sid, n = 1) {
  return waitFor(
    async () => {
      const r = await call('GET', '/api/v1/approvals', token);
      assert.equal(r.status, 200, r.text);
      const mine = r.json.data.approvals.filter((a) => a.sessionId === sid);
      return mine.length >= n ? mine : null;
    },
    { timeoutMs: 5000, what: `an approval for ${sid}` },
  );
}
const WRITE = '/tool write_file {"path":"x.txt","content":"hi"}';

describe('approvals over REST', () => {
  test('approve from a second client: the blocked POST continues and the tool runs', async () => {
    const sid = await newSession(bob.token);
    const turn = call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, { content: WRITE });
    const [a] = await pendingFor(bob.token, sid);
    assert.match(a.approvalId, /^apr_/);
    assert.equal(a.toolName, 'write_file');
    assert.equal(a.sessionId, sid);
    assert.ok(a.request && a.request.summary);
    // while it waits, the session is busy: a second turn is refused at once
    const second = await call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, { content: 'me too' });
    assertErrorEnvelope(assert, second, 409, 'CONFLICT');
    assert.match(second.json.error.message, /already running/);
    const busy = await call('GET', `/api/v1/sessions/${sid}`, bob.token);
    assert.equal(busy.json.data.busy, true);

    const ans = await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, { approved: true });
    assert.equal(ans.status, 200, ans.text);
    assert.deepEqual(ans.json.data, { approvalId: a.approvalId, approved: true, trustSession: false });
    const r = await turn;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.toolCalls.length, 1);
    assert.equal(r.json.data.toolCalls[0].name, 'write_file');
    assert.equal(r.json.data.toolCalls[0].approved, true);
    assert.equal(r.json.data.toolCalls[0].success, true);
    assert.equal(fs.readFileSync(path.join(workspace, String(bob.userId), sid, 'x.txt'), 'utf8'), 'hi');
    // the answer is audited; a second answer is late
    const late = await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, { approved: false });
    assertErrorEnvelope(assert, late, 409, 'CONFLICT');
    const h = await call('GET', `/api/v1/sessions/${sid}/messages`, bob.token);
    assert.equal(h.json.data.messages[1].hasToolCalls, true);
    assert.equal((await call('GET', `/api/v1/sessions/${sid}`, bob.token)).json.data.busy, false);
  });

  test('deny: the tool never runs and the turn records the denial', async () => {
    const sid = await newSession(bob.token);
    const turn = call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, { content: WRITE });
    const [a] = await pendingFor(bob.token, sid);
    const ans = await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, { approved: false });
    assert.equal(ans.status, 200, ans.text);
    const r = await turn;
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.toolCalls[0].approved, false);
    assert.equal(r.json.data.toolCalls[0].success, false);
    assert.ok(!fs.existsSync(path.join(workspace, String(bob.userId), sid, 'x.txt')));
  });

  test('timeout: an unanswered approval is denied and the turn completes', async () => {
    const sid = await newSession(bob.token);
    const t0 = Date.now();
    const turn = call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, { content: WRITE });
    const [a] = await pendingFor(bob.token, sid);
    const r = await turn;
    const took = Date.now() - t0;
    assert.equal(r.status, 200, r.text);
    assert.ok(took >= APPROVAL_TIMEOUT_MS - 200, `waited ${took} ms`);
    assert.ok(took < APPROVAL_TIMEOUT_MS + 5000, `waited ${took} ms`);
    assert.equal(r.json.data.toolCalls[0].approved, false);
    assert.ok(!fs.existsSync(path.join(workspace, String(bob.userId), sid, 'x.txt')));
    const late = await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, { approved: true });
    assertErrorEnvelope(assert, late, 409, 'CONFLICT');
    const none = await call('GET', '/api/v1/approvals', bob.token);
    assert.ok(!none.json.data.approvals.some((x) => x.approvalId === a.approvalId));
  });

  test('trustSession: the next turn of the session needs no approval for that tool', async () => {
    const sid = await newSession(bob.token);
    const turn = call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, { content: WRITE });
    const [a] = await pendingFor(bob.token, sid);
    const ans = await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, {
      approved: true,
      trustSession: true,
    });
    assert.equal(ans.status, 200, ans.text);
    assert.equal((await turn).status, 200);
    // trusted tools are kept with the session and sent with the next turn
    const t0 = Date.now();
    const r = await call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, {
      content: '/tool write_file {"path":"y.txt","content":"again"}',
    });
    assert.equal(r.status, 200, r.text);
    assert.ok(Date.now() - t0 < APPROVAL_TIMEOUT_MS, 'no approval wait');
    assert.equal(r.json.data.toolCalls[0].success, true);
    assert.equal(fs.readFileSync(path.join(workspace, String(bob.userId), sid, 'y.txt'), 'utf8'), 'again');
    // another session of the same user does not inherit the trust
    const other = await newSession(bob.token);
    const t2 = call('POST', `/api/v1/sessions/${other}/messages`, bob.token, { content: WRITE });
    const [b] = await pendingFor(bob.token, other);
    await call('POST', `/api/v1/approvals/${b.approvalId}`, bob.token, { approved: false });
    assert.equal((await t2).status, 200);
  });

  test("another user can neither see nor answer bob's approval", async () => {
    const sid = await newSession(bob.token);
    const turn = call('POST', `/api/v1/sessions/${sid}/messages`, bob.token, {
      content: '/tool bash {"command":"echo hi > owned.txt"}',
    });
    const [a] = await pendingFor(bob.token, sid);
    const theirs = await call('GET', '/api/v1/approvals', carol.token);
    assert.equal(theirs.status, 200);
    assert.ok(!theirs.json.data.approvals.some((x) => x.approvalId === a.approvalId));
    const steal = await call('POST', `/api/v1/approvals/${a.approvalId}`, carol.token, { approved: true });
    assertErrorEnvelope(assert, steal, 404, 'NOT_FOUND');
    // an unknown id answers exactly the same
    const unknown = await call('POST', '/api/v1/approvals/apr_00000000000000000000', carol.token, { approved: true });
    assertErrorEnvelope(assert, unknown, 404, 'NOT_FOUND');
    assert.equal(steal.json.error.message, unknown.json.error.message);
    // still pending for bob, who denies it
    assert.equal((await pendingFor(bob.token, sid))[0].approvalId, a.approvalId);
    assert.equal((await call('POST', `/api/v1/approvals/${a.approvalId}`, bob.token, { approved: false })).status, 200);
    const r = await turn;
    assert.equal(r.status, 200);
    assert.equal(r.json.data.toolCalls[0].approved, false);
    assert.ok(!fs.existsSync(path.join(workspace, String(bob.userId), sid, 'owned.txt')));
  });

  test('bad answers are 4xx', async () => {
    for (const body of [{}, { approved: 'yes' }, { approved: null }, { approved: true, trustSession: 1 }, { approved: true, x: 1 }]) {
      const r = await call('POST', '/api/v1/approvals/apr_00000000000000000000', bob.token, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status}`);
    }
    // (a %00 in a path never reaches the responder: nginx answers 400 itself)
    for (const id of ['a%20b', 'x'.repeat(65), "apr_x'--"]) {
      const r = await call('POST', `/api/v1/approvals/${id}`, bob.token, { approved: true });
      assert.equal(r.status, 404, `${id} → ${r.status}`);
    }
    await sleep(10);
  });
});
