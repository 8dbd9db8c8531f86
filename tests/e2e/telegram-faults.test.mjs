// Telegram faults: the worker stopped while updates arrive, the orchestrator
// down, Bot API 429 / 5xx / 4xx answers, and kill -9 of the worker mid-turn.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { waitFor } from './lib/stack.mjs';
import { OWNER_TG, startTelegramStack } from './lib/telegram.mjs';

let t;
before(async () => {
  t = await startTelegramStack();
});
after(async () => {
  await t?.close();
});

const turns = (id, role) => Number(t.sql(`SELECT count(*) FROM messages WHERE request_id = 'tg-${id}' AND role = '${role}'`));
const shownTimes = (chat, text) => t.texts(chat).filter((x) => x === text).length;

describe('faults', () => {
  test('worker stopped while updates arrive: all acknowledged, each processed once after the restart', async () => {
    await t.stack.stopTelegram();
    const ids = [];
    for (let i = 0; i < 6; i++) ids.push(await t.say(OWNER_TG, `queued message ${i}`));
    for (const id of ids) assert.equal(t.inboxStatus(id), 'new');
    await t.stack.startTelegram();
    for (const id of ids) assert.equal(await t.settled(id, 30000), 'done');
    for (let i = 0; i < ids.length; i++) {
      assert.equal(turns(ids[i], 'user'), 1);
      assert.equal(turns(ids[i], 'assistant'), 1);
      assert.equal(shownTimes(OWNER_TG, `queued message ${i}`), 1);
    }
    // in order: each reply message was created after the previous one
    const order = ids.map((id) => Number(t.sql(`SELECT reply_message_id FROM telegram_inbox WHERE update_id = ${id}`)));
    assert.deepEqual([...order].sort((a, b) => a - b), order);
  });

  test('orchestrator down: the user is told, the update is kept and answered once it is back', async () => {
    const orch = t.stack.orchestratorHandle;
    await orch.stop();
    let id;
    try {
      id = await t.say(OWNER_TG, 'are you there?');
      await waitFor(() => t.texts(OWNER_TG).some((x) => /unavailable right now/.test(x)), { timeoutMs: 10000, what: 'the unavailable notice' });
      // kept: back in the inbox, to be tried again
      await waitFor(() => t.inboxStatus(id) === 'new', { timeoutMs: 5000, what: 'the update back in the inbox' });
      await sleep(1500);
      assert.equal(t.texts(OWNER_TG).filter((x) => /unavailable right now/.test(x)).length, 1, 'told once');
      assert.ok(Number(t.sql(`SELECT attempts FROM telegram_inbox WHERE update_id = ${id}`)) >= 1);
    } finally {
      await t.stack.startOrchestrator();
    }
    assert.equal(await t.settled(id, 30000), 'done');
    assert.equal(shownTimes(OWNER_TG, 'are you there?'), 1);
    assert.equal(turns(id, 'assistant'), 1);
  });

  test('Bot API 429: the worker waits retry_after and succeeds; 5xx is retried', async () => {
    t.tg.failNext('sendMessage', 429, { retry_after: 2 });
    t.tg.failNext('sendMessage', 502);
    const before = t.tg.calls.length;
    const id = await t.say(OWNER_TG, 'rate limited reply');
    assert.equal(await t.settled(id, 30000), 'done');
    const sends = t.tg.calls.slice(before).filter((c) => c.method === 'sendMessage');
    assert.deepEqual(sends.slice(0, 3).map((c) => c.status), [429, 502, 200]);
    assert.ok(sends[1].at - sends[0].at >= 1900, `waited ${sends[1].at - sends[0].at} ms after the 429`);
    assert.equal(t.texts(OWNER_TG).filter((x) => x.startsWith('rate limited reply')).length, 1);
  });

  test('Bot API 4xx is never retried', async () => {
    t.tg.failNext('sendMessage', 403, { description: 'Forbidden: bot was blocked by the user' });
    const stranger = 606060;
    const before = t.tg.calls.length;
    const id = await t.say(stranger, 'hello');
    assert.equal(await t.settled(id), 'ignored');
    await sleep(500);
    const sends = t.tg.calls.slice(before).filter((c) => c.method === 'sendMessage' && c.params.chat_id === stranger);
    assert.deepEqual(sends.map((c) => c.status), [403]);
  });

  test('kill -9 of the worker mid-turn: after the restart the turn runs again, one reply', async () => {
    const text = '/sleep 2500\nanswer after the crash';
    const id = await t.say(OWNER_TG, text);
    await waitFor(() => t.inboxStatus(id) === 'working' && turns(id, 'user') === 1, { timeoutMs: 10000, what: 'the turn to start' });
    await t.stack.telegramHandle.kill();
    assert.equal(t.inboxStatus(id), 'working');
    await t.stack.startTelegram();
    assert.equal(await t.settled(id, 30000), 'done');
    assert.equal(shownTimes(OWNER_TG, 'answer after the crash'), 1);
    assert.equal(turns(id, 'assistant'), 1);
    // the interrupted attempt stays in the history as failed, never as pending
    assert.equal(t.sql(`SELECT group_concat(status) FROM messages WHERE request_id = 'tg-${id}' AND role = 'user' ORDER BY id`), 'failed,ok');
  });
});
