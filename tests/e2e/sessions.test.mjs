// Sessions and messages end to end through nginx, with the reference
// orchestrator (echo provider): full flows, work directories, BOLA, privacy of
// the history, and hostile input on every field.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { after, before, describe, test } from 'node:test';

import { assertErrorEnvelope, assertHealthy, startStack } from './lib/stack.mjs';

const SESSION_ID = /^ses_[0-9A-Za-z]{20}$/;
const MESSAGE_ID = /^msg_[0-9A-Za-z]{20}$/;

let stack;
let owner;
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
      provider_api_key: 'sk-e2e-must-never-show',
    },
  });
  await stack.startOrchestrator();
  owner = stack.addUser('alice', 'owner');
  bob = stack.addUser('bob', 'user');
  carol = stack.addUser('carol', 'user');
});
after(async () => {
  await stack?.stop();
  if (workspace) fs.rmSync(workspace, { recursive: true, force: true });
});

const auth = (t) => ({ Authorization: `Bearer ${t}` });
function call(method, p, token, body, headers = {}) {
  const init = { method, headers: { ...(token ? auth(token) : {}), ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  return stack.request(p, init);
}
async function newSession(token, body = { channel: 'rest' }) {
  const r = await call('POST', '/api/v1/sessions', token, body);
  assert.equal(r.status, 201, r.text);
  return r.json.data.id;
}
const post = (token, sid, content, extra = {}) =>
  call('POST', `/api/v1/sessions/${sid}/messages`, token, { content, ...extra });

function sql(statement) {
  const r = spawnSync('sqlite3', [stack.dbPath, statement], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('full flow', () => {
  test('create → post → history → delete', async () => {
    const created = await call('POST', '/api/v1/sessions', bob.token, { channel: 'rest' });
    assert.equal(created.status, 201, created.text);
    const sid = created.json.data.id;
    assert.match(sid, SESSION_ID);
    assert.equal(created.json.data.channel, 'rest');
    assert.ok(!Number.isNaN(Date.parse(created.json.data.createdAt)));
    assert.deepEqual(Object.keys(created.json.data).sort(), ['channel', 'createdAt', 'id']);

    const got = await call('GET', `/api/v1/sessions/${sid}`, bob.token);
    assert.equal(got.status, 200);
    assert.equal(got.json.data.messageCount, 0);
    assert.equal(got.json.data.status, 'active');

    const r = await post(bob.token, sid, 'hello meao');
    assert.equal(r.status, 200, r.text);
    const d = r.json.data;
    assert.match(d.id, MESSAGE_ID);
    assert.match(d.messageId, MESSAGE_ID);
    assert.notEqual(d.id, d.messageId);
    assert.equal(d.content, 'hello meao'); // the echo provider
    assert.deepEqual(d.toolCalls, []);
    assert.equal(typeof d.usage.inputTokens, 'number');
    assert.equal(typeof d.usage.outputTokens, 'number');
    assert.ok(!Number.isNaN(Date.parse(d.timestamp)));
    assert.equal(r.json.requestId, r.headers.get('x-request-id'));

    // the upstream content form, and the history the second turn carried
    const r2 = await post(bob.token, sid, [
      { type: 'text', text: 'part one' },
      { type: 'text', text: 'part two' },
    ]);
    assert.equal(r2.status, 200, r2.text);
    assert.equal(r2.json.data.content, 'part one\npart two');

    const h = await call('GET', `/api/v1/sessions/${sid}/messages`, bob.token);
    assert.equal(h.status, 200, h.text);
    const msgs = h.json.data.messages;
    assert.equal(msgs.length, 4);
    assert.deepEqual(
      msgs.map((m) => m.role),
      ['user', 'assistant', 'user', 'assistant'],
    );
    assert.equal(msgs[0].id, d.messageId);
    assert.equal(msgs[1].id, d.id);
    for (const m of msgs) {
      assert.deepEqual(Object.keys(m).sort(), [
        'contentHash',
        'hasToolCalls',
        'id',
        'role',
        'status',
        'timestamp',
        'toolCallId',
      ]);
      assert.match(m.contentHash, /^[0-9a-f]{16}$/);
      assert.equal(m.status, 'ok');
    }
    // the echo answers with the text it got: the same text, the same hash
    assert.equal(msgs[0].contentHash, msgs[1].contentHash);
    assert.equal(h.json.data.hasMore, false);

    // pagination with before
    const p1 = await call('GET', `/api/v1/sessions/${sid}/messages?limit=2`, bob.token);
    assert.deepEqual(
      p1.json.data.messages.map((m) => m.id),
      [msgs[2].id, msgs[3].id],
    );
    assert.equal(p1.json.data.hasMore, true);
    const p2 = await call('GET', `/api/v1/sessions/${sid}/messages?limit=2&before=${msgs[2].id}`, bob.token);
    assert.deepEqual(
      p2.json.data.messages.map((m) => m.id),
      [msgs[0].id, msgs[1].id],
    );
    assert.equal(p2.json.data.hasMore, false);

    const listed = await call('GET', '/api/v1/sessions?status=active', bob.token);
    assert.ok(listed.json.data.sessions.some((s) => s.id === sid && s.messageCount === 4));

    const del = await call('DELETE', `/api/v1/sessions/${sid}`, bob.token);
    assert.equal(del.status, 204);
    assert.equal(del.text, '');
    // an ended session still answers GET (status ended) and keeps its history
    const ended = await call('GET', `/api/v1/sessions/${sid}`, bob.token);
    assert.equal(ended.status, 200);
    assert.equal(ended.json.data.status, 'ended');
    assert.ok(ended.json.data.endedAt);
    assert.equal((await call('GET', `/api/v1/sessions/${sid}/messages`, bob.token)).json.data.messages.length, 4);
    assertErrorEnvelope(assert, await post(bob.token, sid, 'after the end'), 409, 'CONFLICT');
    assert.equal((await call('DELETE', `/api/v1/sessions/${sid}`, bob.token)).status, 204, 'idempotent');
    const endedList = await call('GET', '/api/v1/sessions?status=ended&limit=200', bob.token);
    assert.ok(endedList.json.data.sessions.some((s) => s.id === sid));
    assert.ok(!(await call('GET', '/api/v1/sessions?status=active', bob.token)).json.data.sessions.some((s) => s.id === sid));

    // every mutation is audited with its request id, never with content
    const actions = sql(
      `SELECT action FROM audit WHERE target = '${sid}' ORDER BY id`,
    ).split('\n');
    assert.deepEqual(actions, [
      'session.create',
      'message.create',
      'turn.complete',
      'message.create',
      'turn.complete',
      'session.end',
    ]);
    assert.equal(sql(`SELECT count(*) FROM audit WHERE detail LIKE '%hello meao%'`), '0');
    assert.equal(sql(`SELECT count(*) FROM audit WHERE request_id = '${r.json.requestId}'`), '2');
  });

  test('channelId is an alias of channel', async () => {
    const r = await call('POST', '/api/v1/sessions', bob.token, { channelId: 'cli' });
    assert.equal(r.status, 201, r.text);
    assert.equal(r.json.data.channel, 'cli');
  });

  test('list honours status and limit', async () => {
    const user = stack.addUser('lister');
    const ids = [];
    for (let i = 0; i < 3; i++) ids.push(await newSession(user.token));
    await call('DELETE', `/api/v1/sessions/${ids[0]}`, user.token);
    const all = await call('GET', '/api/v1/sessions', user.token);
    assert.deepEqual(
      all.json.data.sessions.map((s) => s.id),
      [ids[2], ids[1], ids[0]],
    );
    const one = await call('GET', '/api/v1/sessions?limit=1', user.token);
    assert.deepEqual(
      one.json.data.sessions.map((s) => s.id),
      [ids[2]],
    );
    const ended = await call('GET', '/api/v1/sessions?status=ended', user.token);
    assert.deepEqual(
      ended.json.data.sessions.map((s) => s.id),
      [ids[0]],
    );
  });

  test('attachments: metadata is kept, https urls are not fetched, limits hold', async () => {
    const sid = await newSession(bob.token);
    const ok = await post(bob.token, sid, 'see attached', {
      attachments: [
        { type: 'file', name: 'notes.txt', data: Buffer.from('hello file').toString('base64') },
        { type: 'image', name: 'cat.png', url: 'https://example.invalid/cat.png' },
      ],
    });
    assert.equal(ok.status, 200, ok.text);
    const stored = sql(`SELECT attachments FROM messages WHERE public_id = '${ok.json.data.messageId}'`);
    assert.match(stored, /notes\.txt/);
    assert.match(stored, /"size":10/);
    assert.doesNotMatch(stored, /aGVsbG8gZmlsZQ/, 'the bytes are not stored');
    const big = Buffer.alloc(512 * 1024 + 1, 1).toString('base64');
    const tooBig = await post(bob.token, sid, 'x', { attachments: [{ type: 'file', name: 'big', data: big }] });
    assertErrorEnvelope(assert, tooBig, 400, 'INVALID_PARAMETER');
    const nine = Array.from({ length: 9 }, (_, i) => ({ type: 'file', name: `f${i}` }));
    assertErrorEnvelope(assert, await post(bob.token, sid, 'x', { attachments: nine }), 400, 'INVALID_PARAMETER');
    for (const url of ['http://example.org/a', 'file:///etc/passwd', 'https://', 'https://a b', 'ftp://x']) {
      const r = await post(bob.token, sid, 'x', { attachments: [{ type: 'file', name: 'a', url }] });
      assertErrorEnvelope(assert, r, 400, 'INVALID_PARAMETER');
    }
  });
});

describe('work directories', () => {
  test('default, relative and absolute inside the user directory; 0700', async () => {
    const sid = await newSession(bob.token);
    const dir = path.join(workspace, String(bob.userId), sid);
    // the default directory is made at the session's first turn
    assert.ok(!fs.existsSync(dir));
    assert.equal((await post(bob.token, sid, 'make it')).status, 200);
    assert.ok(fs.statSync(dir).isDirectory());
    assert.equal(fs.statSync(dir).mode & 0o777, 0o700);
    assert.equal(fs.statSync(path.join(workspace, String(bob.userId))).mode & 0o777, 0o700);

    const rel = await call('POST', '/api/v1/sessions', bob.token, { channel: 'rest', workDir: 'proj/one' });
    assert.equal(rel.status, 201, rel.text);
    assert.ok(fs.statSync(path.join(workspace, String(bob.userId), 'proj', 'one')).isDirectory());
    const abs = await call('POST', '/api/v1/sessions', bob.token, {
      channel: 'rest',
      workDir: path.join(workspace, String(bob.userId), 'abs'),
    });
    assert.equal(abs.status, 201, abs.text);

    // a turn's tools run there
    const r = await post(bob.token, rel.json.data.id, '/tool read_file {"path":"missing.txt"}');
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.toolCalls[0].name, 'read_file');
  });

  test('escapes are refused: .., absolute outside, another user, symlinks', async () => {
    const base = path.join(workspace, String(bob.userId));
    fs.mkdirSync(base, { recursive: true });
    fs.symlinkSync('/tmp', path.join(base, 'escape'));
    fs.mkdirSync(path.join(base, 'real'), { recursive: true });
    fs.symlinkSync('real', path.join(base, 'inside'));
    for (const workDir of [
      '../x',
      'a/../../x',
      '/etc',
      '/tmp',
      `${workspace}/${carol.userId}/mine`,
      `${workspace}x/${bob.userId}`,
      'escape',
      'escape/sub',
      'inside/sub',
      '',
      'a\u0001b',
      'x'.repeat(1025),
      5,
    ]) {
      const r = await call('POST', '/api/v1/sessions', bob.token, { channel: 'rest', workDir });
      assertErrorEnvelope(assert, r, 400, 'INVALID_PARAMETER');
    }
    assert.ok(!fs.existsSync('/tmp/sub'), 'nothing was created through the symlink');
    // an owner may name any directory inside the root
    const own = await call('POST', '/api/v1/sessions', owner.token, {
      channel: 'rest',
      workDir: path.join(workspace, 'shared'),
    });
    assert.equal(own.status, 201, own.text);
  });
});

describe('BOLA: another user\'s session is 404 everywhere', () => {
  test('get, delete, post message, history', async () => {
    const sid = await newSession(bob.token);
    assert.equal((await post(bob.token, sid, 'private')).status, 200);
    for (const token of [carol.token, owner.token]) {
      assertErrorEnvelope(assert, await call('GET', `/api/v1/sessions/${sid}`, token), 404, 'NOT_FOUND');
      assertErrorEnvelope(assert, await call('GET', `/api/v1/sessions/${sid}/messages`, token), 404, 'NOT_FOUND');
      assertErrorEnvelope(
        assert,
        await call('GET', `/api/v1/sessions/${sid}/messages?includeContent=true`, token),
        404,
        'NOT_FOUND',
      );
      assertErrorEnvelope(assert, await post(token, sid, 'hijack'), 404, 'NOT_FOUND');
      assertErrorEnvelope(assert, await call('DELETE', `/api/v1/sessions/${sid}`, token), 404, 'NOT_FOUND');
    }
    // same answer as a session that does not exist: no oracle
    const missing = await call('GET', '/api/v1/sessions/ses_00000000000000000000', carol.token);
    const foreign = await call('GET', `/api/v1/sessions/${sid}`, carol.token);
    assert.equal(missing.json.error.message, foreign.json.error.message);
    // nothing changed
    const mine = await call('GET', `/api/v1/sessions/${sid}`, bob.token);
    assert.equal(mine.json.data.status, 'active');
    assert.equal(mine.json.data.messageCount, 2);
    assert.ok(!(await call('GET', '/api/v1/sessions', carol.token)).json.data.sessions.some((s) => s.id === sid));
  });

  test('unauthenticated is 401 on every route', async () => {
    const sid = await newSession(bob.token);
    for (const [m, p] of [
      ['GET', '/api/v1/sessions'],
      ['POST', '/api/v1/sessions'],
      ['GET', `/api/v1/sessions/${sid}`],
      ['DELETE', `/api/v1/sessions/${sid}`],
      ['GET', `/api/v1/sessions/${sid}/messages`],
      ['POST', `/api/v1/sessions/${sid}/messages`],
      ['GET', '/api/v1/approvals'],
      ['POST', '/api/v1/approvals/apr_x'],
      ['GET', '/api/v1/tools'],
      ['GET', '/api/v1/config'],
      ['PATCH', '/api/v1/config'],
    ]) {
      assertErrorEnvelope(assert, await call(m, p, null, m === 'GET' || m === 'DELETE' ? undefined : {}), 401, 'AUTH_REQUIRED');
    }
  });
});

describe('privacy of the history', () => {
  test('a user never sees content; an owner only when asking', async () => {
    const usid = await newSession(bob.token);
    assert.equal((await post(bob.token, usid, 'bob secret')).status, 200);
    for (const q of ['', '?includeContent=true', '?includeContent=false']) {
      const h = await call('GET', `/api/v1/sessions/${usid}/messages${q}`, bob.token);
      assert.equal(h.status, 200);
      assert.ok(h.json.data.messages.every((m) => !('content' in m)), `no content for a user (${q})`);
      assert.doesNotMatch(h.text, /bob secret/);
    }
    const osid = await newSession(owner.token);
    assert.equal((await post(owner.token, osid, 'owner secret')).status, 200);
    const without = await call('GET', `/api/v1/sessions/${osid}/messages`, owner.token);
    assert.ok(without.json.data.messages.every((m) => !('content' in m)));
    const withc = await call('GET', `/api/v1/sessions/${osid}/messages?includeContent=true`, owner.token);
    assert.deepEqual(
      withc.json.data.messages.map((m) => m.content),
      ['owner secret', 'owner secret'],
    );
  });

  test('contentHash is keyed: the same text differs across deployments', async () => {
    const sid = await newSession(bob.token);
    await post(bob.token, sid, 'the same words');
    const h1 = (await call('GET', `/api/v1/sessions/${sid}/messages`, bob.token)).json.data.messages[0].contentHash;
    const ws2 = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-ws-'));
    const other = await startStack({ config: { workspace_root: ws2 } });
    try {
      await other.startOrchestrator();
      const u = other.addUser('bob');
      const rs = await other.request('/api/v1/sessions', {
        method: 'POST',
        headers: { ...auth(u.token), 'Content-Type': 'application/json' },
        body: '{"channel":"rest"}',
      });
      const sid2 = rs.json.data.id;
      const rp = await other.request(`/api/v1/sessions/${sid2}/messages`, {
        method: 'POST',
        headers: { ...auth(u.token), 'Content-Type': 'application/json' },
        body: JSON.stringify({ content: 'the same words' }),
      });
      assert.equal(rp.status, 200, rp.text);
      const h2 = (await other.request(`/api/v1/sessions/${sid2}/messages`, { headers: auth(u.token) })).json.data
        .messages[0].contentHash;
      assert.match(h2, /^[0-9a-f]{16}$/);
      assert.notEqual(h1, h2);
      // and it is not a plain hash of the text
      const { createHash } = await import('node:crypto');
      const plain = createHash('sha256').update('the same words').digest('hex').slice(0, 16);
      assert.notEqual(h1, plain);
    } finally {
      await other.stop();
      fs.rmSync(ws2, { recursive: true, force: true });
    }
  });
});

describe('bad input is a clean 4xx', () => {
  test('POST /sessions: every field', async () => {
    const cases = [
      ['{}', 400],
      ['{"channel":null}', 400],
      ['{"channel":""}', 400],
      ['{"channel":5}', 400],
      ['{"channel":["rest"]}', 400],
      ['{"channel":"has space"}', 400],
      [`{"channel":"${'c'.repeat(33)}"}`, 400],
      ['{"channel":"rest","channelId":"ws"}', 400],
      ['{"channel":"rest","extra":true}', 400],
      ['{"channel":"rest\\u0000"}', 400],
      ['{"channel":"rest","channel":"ws"}', 400],
      ['[]', 400],
      ['"rest"', 400],
      ['{"channel":', 400],
    ];
    for (const [body, status] of cases) {
      const r = await call('POST', '/api/v1/sessions', bob.token, body);
      assert.equal(r.status, status, `${body} → ${r.status} ${r.text}`);
      assert.equal(r.json.success, false);
    }
    const r415 = await call('POST', '/api/v1/sessions', bob.token, undefined, { 'Content-Type': 'text/plain' });
    assert.ok([400, 415].includes(r415.status));
  });

  test('POST .../messages: every field, NUL, invalid UTF-8, huge arrays, oversize', async () => {
    const sid = await newSession(bob.token);
    const url = `/api/v1/sessions/${sid}/messages`;
    const cases = [
      '{}',
      '{"content":null}',
      '{"content":""}',
      '{"content":7}',
      '{"content":true}',
      '{"content":{}}',
      '{"content":[]}',
      '{"content":["text"]}',
      '{"content":[{"type":"text"}]}',
      '{"content":[{"type":"text","text":5}]}',
      '{"content":[{"type":"image","text":"x"}]}',
      '{"content":[{"type":"text","text":"x","more":1}]}',
      '{"content":"a\\u0000b"}',
      '{"content":"x","unknown":1}',
      '{"content":"x","attachments":"a"}',
      '{"content":"x","attachments":[null]}',
      '{"content":"x","attachments":[{"type":"file","name":""}]}',
      `{"content":"x","attachments":[{"type":"file","name":"${'n'.repeat(256)}"}]}`,
      '{"content":"x","attachments":[{"type":"file","name":"a","data":"!!!"}]}',
      '{"content":"x","attachments":[{"type":"file","name":"a","data":[]}]}',
      '{"content":"x","attachments":[{"type":"file","name":"a","url":5}]}',
      '{"content":"x","attachments":[{"type":"video","name":"a"}]}',
      '{"content":"x","attachments":[{"type":"file","name":"a","secret":"y"}]}',
      JSON.stringify({ content: Array.from({ length: 33 }, () => ({ type: 'text', text: 'x' })) }),
      JSON.stringify({ content: 'x', attachments: Array.from({ length: 5000 }, () => ({})) }),
      JSON.stringify({ content: 'x'.repeat(256 * 1024 + 1) }),
    ];
    for (const body of cases) {
      const r = await call('POST', url, bob.token, body);
      assert.equal(r.status, 400, `${body.slice(0, 80)} → ${r.status} ${r.text.slice(0, 200)}`);
      assert.equal(r.json.success, false);
    }
    // over max_body_bytes: 413, from the responder or nginx
    const huge = await call('POST', url, bob.token, JSON.stringify({ content: 'x'.repeat(1100 * 1024) }));
    assert.equal(huge.status, 413);
    // invalid UTF-8 in the body: raw bytes
    const bad = Buffer.concat([Buffer.from('{"content":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}')]);
    const head = Buffer.from(
      `POST ${url} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer ${bob.token}\r\n` +
        `Content-Type: application/json\r\nContent-Length: ${bad.length}\r\nConnection: close\r\n\r\n`,
    );
    const raw = await stack.raw(Buffer.concat([head, bad]));
    assert.equal(raw.status, 400, raw.body);
    // nothing of this was stored, and the session is not locked
    assert.equal(sql(`SELECT count(*) FROM messages m JOIN sessions s ON s.id = m.session_id WHERE s.public_id = '${sid}'`), '0');
    assert.equal((await post(bob.token, sid, 'still fine')).status, 200);
    await assertHealthy(assert, stack);
  });

  test('GET .../messages: limit, before, includeContent', async () => {
    const sid = await newSession(bob.token);
    const other = await newSession(bob.token);
    const p = await post(bob.token, other, 'elsewhere');
    const foreignMsg = p.json.data.messageId;
    for (const q of [
      'limit=0',
      'limit=-1',
      'limit=NaN',
      'limit=1000000000',
      'limit=201',
      'limit=1.5',
      'limit=',
      'limit=%00',
      'limit=1e2',
      'limit=0x10',
      'before=unknown',
      'before=msg_00000000000000000000',
      `before=${foreignMsg}`,
      `before=${sid}`,
      'includeContent=1',
      'includeContent=TRUE',
      'includeContent=%ff',
    ]) {
      const r = await call('GET', `/api/v1/sessions/${sid}/messages?${q}`, bob.token);
      assertErrorEnvelope(assert, r, 400, 'INVALID_PARAMETER');
    }
    for (const q of ['status=open', 'status=', 'limit=0', 'limit=abc', 'limit=99999999999']) {
      assertErrorEnvelope(assert, await call('GET', `/api/v1/sessions?${q}`, bob.token), 400, 'INVALID_PARAMETER');
    }
    assert.equal((await call('GET', `/api/v1/sessions/${sid}/messages?limit=200`, bob.token)).status, 200);
    assert.equal((await call('GET', `/api/v1/sessions/${sid}/messages?limit=1`, bob.token)).status, 200);
  });

  test('path ids that are not ids', async () => {
    for (const id of [
      'x',
      'ses_',
      'ses_short',
      'ses_000000000000000000000',
      'msg_00000000000000000000',
      '..%2f..%2fetc',
      '%00',
      "ses_00000000000000000000'--",
      'ses_0000000000000000000%C3',
    ]) {
      for (const [m, suffix] of [
        ['GET', ''],
        ['DELETE', ''],
        ['GET', '/messages'],
      ]) {
        const r = await call(m, `/api/v1/sessions/${id}${suffix}`, bob.token);
        assert.ok([400, 404].includes(r.status), `${m} ${id}${suffix} → ${r.status}`);
        // (nginx itself refuses %00 in a path with its own 400 page)
        if (id !== '%00') assert.equal(r.json.success, false);
      }
      const r = await post(bob.token, id, 'x');
      assert.ok([400, 404].includes(r.status), `POST ${id} → ${r.status}`);
    }
    assertErrorEnvelope(assert, await call('PUT', '/api/v1/sessions/ses_00000000000000000000', bob.token), 405, 'METHOD_NOT_ALLOWED');
    await assertHealthy(assert, stack);
  });
});
