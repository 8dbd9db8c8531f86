// Telegram through real nginx + meao-fcgi + orchestrator (echo provider) +
// meao-telegram, against the fake Bot API: the webhook's checks and inbox,
// replies streamed by editing one message, /new, long replies split, and
// strangers under owner_only.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';

import { assertHealthy, waitFor } from './lib/stack.mjs';
import { OWNER_TG, TOKEN, ctlAsync, messageUpdate, newUpdateId, startTelegramStack } from './lib/telegram.mjs';

let t;
before(async () => {
  t = await startTelegramStack();
});
after(async () => {
  await t?.close();
});

const count = (id) => Number(t.sql(`SELECT count(*) FROM telegram_inbox WHERE update_id = ${id}`));

describe('webhook', () => {
  test('missing or wrong secret token: 401 and nothing stored', async () => {
    const id = newUpdateId();
    const none = await t.deliver(messageUpdate(id, OWNER_TG, 'hi'), { secret: null });
    assert.equal(none.status, 401, none.text);
    assert.equal(none.json.error.code, 'AUTH_INVALID_TOKEN');
    const wrong = await t.deliver(messageUpdate(id, OWNER_TG, 'hi'), { secret: `${t.secret.slice(0, -1)}x` });
    assert.equal(wrong.status, 401);
    const short = await t.deliver(messageUpdate(id, OWNER_TG, 'hi'), { secret: 'a' });
    assert.equal(short.status, 401);
    // checked before parsing: garbage with a wrong secret is a 401, not a 400
    const garbage = await t.deliver('{not json', { secret: 'nope' });
    assert.equal(garbage.status, 401);
    assert.equal(count(id), 0);
  });

  test('malformed updates: 400 and no crash', async () => {
    for (const body of ['{not json', '[]', '{"message":{}}', '{"update_id":"7"}', '{"update_id":-1}',
      '{"update_id":1.5}', '{"update_id":9,"message":{"text":"no chat"}}', '{"update_id":9,"message":"x"}', '']) {
      const r = await t.deliver(body);
      assert.equal(r.status, 400, `${body}: ${r.text}`);
      assert.equal(r.json.success, false);
    }
    assert.equal(t.sql('SELECT count(*) FROM telegram_inbox WHERE update_id = 9'), '0');
    await assertHealthy(assert, t.stack);
  });

  test('over 1 MiB: 413 (from the responder, and from nginx above 2 MiB)', async () => {
    const id = newUpdateId();
    const big = JSON.stringify(messageUpdate(id, OWNER_TG, 'x'.repeat(1100 * 1024)));
    const r = await t.deliver(big);
    assert.equal(r.status, 413, r.text.slice(0, 200));
    assert.equal(r.json.error.code, 'PAYLOAD_TOO_LARGE');
    const huge = await t.deliver(JSON.stringify(messageUpdate(id, OWNER_TG, 'y'.repeat(3 * 1024 * 1024))));
    assert.equal(huge.status, 413);
    assert.equal(huge.json.error.code, 'PAYLOAD_TOO_LARGE');
    assert.equal(count(id), 0);
  });

  test('the same update_id twice: both acknowledged, one turn', async () => {
    const id = newUpdateId();
    const u = messageUpdate(id, OWNER_TG, 'only once please');
    const a = await t.deliver(u);
    const b = await t.deliver(u);
    assert.deepEqual([a.status, b.status], [200, 200]);
    assert.deepEqual(a.json, { ok: true });
    assert.deepEqual(b.json, { ok: true, duplicate: true });
    assert.equal(await t.settled(id), 'done');
    assert.equal(t.sql(`SELECT count(*) FROM messages WHERE request_id = 'tg-${id}' AND role = 'user'`), '1');
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(t.texts(OWNER_TG).filter((x) => x === 'only once please').length, 1);
  });

  test('unknown update types are acknowledged, stored and ignored', async () => {
    const id = newUpdateId();
    const r = await t.deliver({ update_id: id, poll: { id: 'p1', question: 'q?', options: [] } });
    assert.equal(r.status, 200);
    assert.equal(await t.settled(id), 'ignored');
    const e = newUpdateId();
    const edit = messageUpdate(e, OWNER_TG, 'edited');
    edit.edited_message = edit.message;
    delete edit.message;
    assert.equal((await t.deliver(edit)).status, 200);
    assert.equal(await t.settled(e), 'ignored');
  });
});

describe('conversation', () => {
  test('owner message: one reply message, streamed by edits at most once a second', async () => {
    const text = 'Streaming reply: alpha beta gamma delta epsilon zeta eta theta iota kappa';
    const before = t.tg.calls.length;
    const id = await t.say(OWNER_TG, text);
    assert.equal(await t.settled(id), 'done');
    const mine = t.tg.calls.slice(before).filter((c) => c.params.chat_id === OWNER_TG);
    const sends = mine.filter((c) => c.method === 'sendMessage');
    const edits = mine.filter((c) => c.method === 'editMessageText');
    assert.equal(sends.length, 1, 'one reply message');
    assert.ok(edits.length >= 1, 'the reply grew by editing it');
    assert.ok(sends[0].params.text.length < text.length, `first shown part is partial: ${sends[0].params.text}`);
    assert.ok(text.startsWith(sends[0].params.text));
    assert.equal(edits.at(-1).params.text, text);
    const times = [sends[0].at, ...edits.map((c) => c.at)];
    for (let i = 1; i < times.length; i++) assert.ok(times[i] - times[i - 1] >= 950, `edits ${times[i] - times[i - 1]} ms apart`);
    // the turn is in the chat's session (channel telegram) and history
    assert.equal(t.sql(`SELECT s.channel FROM messages m JOIN sessions s ON s.id = m.session_id WHERE m.request_id = 'tg-${id}' AND m.role = 'assistant'`), 'telegram');
  });

  test('/new starts a fresh session', async () => {
    const a = await t.say(OWNER_TG, 'first session message');
    await t.settled(a);
    const s1 = t.sql(`SELECT session_id FROM messages WHERE request_id = 'tg-${a}' AND role = 'user'`);
    const n = await t.say(OWNER_TG, '/new');
    assert.equal(await t.settled(n), 'done');
    assert.ok(t.texts(OWNER_TG).includes('New session started.'));
    const b = await t.say(OWNER_TG, 'second session message');
    await t.settled(b);
    const s2 = t.sql(`SELECT session_id FROM messages WHERE request_id = 'tg-${b}' AND role = 'user'`);
    assert.notEqual(s1, s2);
    assert.equal(t.sql(`SELECT status FROM sessions WHERE id = ${s1}`), 'ended');
  });

  test('a reply over 4096 characters is split on character boundaries', async () => {
    const line = 'Ünïcødé ✓ 🐈 line of text that is long enough to matter.\n';
    let text = '';
    while (text.length < 9000) text += line;
    text = text.trimEnd();
    const before = t.tg.calls.length;
    const id = await t.say(OWNER_TG, text);
    assert.equal(await t.settled(id, 30000), 'done');
    const created = t.tg.calls
      .slice(before)
      .filter((c) => c.method === 'sendMessage' && c.status === 200 && c.params.chat_id === OWNER_TG).length;
    assert.ok(created >= 3, `${created} messages`);
    // the messages this turn created, as they look now: each within the
    // limit, together exactly the reply (no character cut or lost)
    const now = t.tg.messages(OWNER_TG).slice(-created);
    for (const m of now) assert.ok(m.text.length <= 4096, `a message of ${m.text.length} units`);
    assert.equal(now.map((m) => m.text).join(''), text);
  });
});

describe('strangers', () => {
  test('owner_only: a stranger gets one polite refusal and no turn; a linked user too', async () => {
    const stranger = 777001;
    const ids = [await t.say(stranger, 'hello?'), await t.say(stranger, 'anyone?')];
    for (const id of ids) assert.equal(await t.settled(id), 'ignored');
    const texts = t.texts(stranger);
    assert.ok(texts.length >= 1 && texts.every((x) => /private/.test(x)), JSON.stringify(texts));
    assert.equal(t.sql(`SELECT count(*) FROM messages WHERE request_id IN ('tg-${ids[0]}','tg-${ids[1]}')`), '0');
    // rate-limited: at most telegram_stranger_replies_per_hour (3) refusals
    for (let i = 0; i < 3; i++) await t.settled(await t.say(stranger, `again ${i}`));
    assert.equal(t.texts(stranger).length, 3);
    // a linked non-owner is refused under owner_only as well
    t.stack.addUser('bob', 'user');
    assert.equal(t.stack.ctl(['telegram', 'link', '2002', 'bob']).status, 0);
    assert.equal(await t.settled(await t.say(2002, 'let me in')), 'ignored');
    assert.ok(t.texts(2002).every((x) => /private/.test(x)));
  });

  test('group chats are ignored', async () => {
    const id = newUpdateId();
    const r = await t.deliver(messageUpdate(id, OWNER_TG, 'in a group', { chatType: 'group', chatId: -100 }));
    assert.equal(r.status, 200);
    assert.equal(await t.settled(id), 'ignored');
    assert.equal(t.texts(-100).length, 0);
  });
});

describe('secrets', () => {
  test('the bot token and the webhook secret never reach a log', async () => {
    await waitFor(() => fs.existsSync(t.stack.telegramLog), { what: 'worker log' });
    const logs = [t.stack.readLog('fcgi'), t.stack.readLog('access'), t.stack.readLog('nginxError'),
      fs.readFileSync(t.stack.telegramLog, 'utf8')].join('\n');
    assert.ok(!logs.includes(TOKEN), 'bot token in a log');
    assert.ok(!logs.includes(TOKEN.split(':')[1]), 'bot token secret part in a log');
    assert.ok(!logs.includes(t.secret), 'webhook secret in a log');
    // only a keyed hash of the secret is stored
    assert.ok(!t.sql('SELECT value FROM telegram_state').includes(t.secret));
  });
});

describe('meaoctl telegram', () => {
  test('status; set-webhook rotates the secret; delete-webhook refuses every delivery', async () => {
    const st = await ctlAsync(t.stack, ['--json', 'telegram', 'status']);
    assert.equal(st.status, 0, st.stderr);
    const j = JSON.parse(st.stdout);
    assert.equal(j.policy, 'owner_only');
    assert.equal(j.tokenSet, true);
    assert.equal(j.secretSet, true);
    assert.equal(j.webhookUrl, t.stack.url('/telegram/webhook'));
    assert.equal(j.telegram.url, t.stack.url('/telegram/webhook'));
    assert.ok(j.inbox.done > 0 && j.inbox.ignored > 0, JSON.stringify(j.inbox));
    assert.ok(!st.stdout.includes(TOKEN) && !st.stderr.includes(TOKEN));
    // bad input: clear usage errors
    assert.equal((await ctlAsync(t.stack, ['telegram', 'set-webhook', '--url', 'http://example.org/x'])).status, 2);
    assert.equal(t.stack.ctl(['telegram', 'link', 'abc', 'alice']).status, 2);
    assert.equal(t.stack.ctl(['telegram', 'link', '5', 'nobody']).status, 1);
    // rotating: the old secret stops working at once
    const old = t.secret;
    assert.equal((await ctlAsync(t.stack, ['telegram', 'set-webhook', '--url', t.stack.url('/telegram/webhook')])).status, 0);
    assert.notEqual(t.tg.webhook.secret_token, old);
    assert.equal((await t.deliver(messageUpdate(newUpdateId(), OWNER_TG, 'x'), { secret: old })).status, 401);
    assert.equal((await t.deliver({ update_id: newUpdateId(), poll: {} }, { secret: t.tg.webhook.secret_token })).status, 200);
    const del = await ctlAsync(t.stack, ['telegram', 'delete-webhook']);
    assert.equal(del.status, 0, del.stderr);
    assert.equal(t.tg.webhook, null);
    assert.equal((await t.deliver({ update_id: newUpdateId(), poll: {} }, { secret: t.tg.webhook?.secret_token ?? old })).status, 401);
  });
});
