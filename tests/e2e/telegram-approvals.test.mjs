// Approvals as inline buttons: the echo provider's `/tool write_file …`
// script asks (policy ask); the prompt carries Allow / Deny / Details; a
// press is a callback_query answered with answerCallbackQuery; the prompt is
// edited to show the outcome; no press within approval_timeout_ms is a deny.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';

import { waitFor } from './lib/stack.mjs';
import { OWNER_TG, callbackUpdate, newUpdateId, startTelegramStack } from './lib/telegram.mjs';

let t;
before(async () => {
  t = await startTelegramStack({ config: { approval_timeout_ms: 3000 } });
});
after(async () => {
  await t?.close();
});

const write = (name) => `/tool write_file {"path":"${name}","content":"hi"}`;

/** The newest prompt with buttons in the owner's chat, once it is there. */
async function prompt(after) {
  return waitFor(
    () => {
      const m = t.tg.messages(OWNER_TG).filter((x) => x.message_id > after && x.reply_markup);
      return m.length ? structuredClone(m.at(-1)) : null; // a snapshot: edits remove the buttons
    },
    { timeoutMs: 10000, what: 'an approval prompt' },
  );
}
const lastId = () => Math.max(0, ...t.tg.messages(OWNER_TG).map((m) => m.message_id));
const button = (m, label) => m.reply_markup.inline_keyboard.flat().find((b) => b.text === label);
function workDirOf(updateId) {
  return t.sql(`SELECT s.work_dir FROM messages m JOIN sessions s ON s.id = m.session_id WHERE m.request_id = 'tg-${updateId}' LIMIT 1`);
}
async function press(m, label, from = OWNER_TG) {
  const id = newUpdateId();
  const r = await t.deliver(callbackUpdate(id, from, button(m, label).callback_data, m));
  assert.equal(r.status, 200, r.text);
  await t.settled(id);
  return t.tg.calls.filter((c) => c.method === 'answerCallbackQuery' && c.params.callback_query_id === `cb${id}`);
}

describe('approvals', () => {
  test('Allow: the tool runs, the prompt shows the outcome, the reply reports it', async () => {
    const since = lastId();
    const id = await t.say(OWNER_TG, write('allowed.txt'));
    const m = await prompt(since);
    assert.match(m.text, /write_file/);
    assert.deepEqual(m.reply_markup.inline_keyboard.flat().map((b) => b.text), ['Allow', 'Deny', 'Details']);
    assert.match(button(m, 'Allow').callback_data, /^a:apr_/);
    // Details first: an alert, nothing decided
    const details = await press(m, 'Details');
    assert.equal(details.length, 1);
    assert.equal(details[0].params.show_alert, true);
    assert.match(details[0].params.text, /allowed\.txt/);
    // a stranger's press changes nothing
    const other = await press(m, 'Allow', 999111);
    assert.match(other[0].params.text, /not yours/);
    const answers = await press(m, 'Allow');
    assert.equal(answers[0].params.text, 'Allowed.');
    assert.equal(await t.settled(id), 'done');
    const edited = t.tg.messages(OWNER_TG).find((x) => x.message_id === m.message_id);
    assert.equal(edited.text, 'Allowed: write_file');
    assert.equal(edited.reply_markup, undefined, 'buttons removed');
    assert.ok(t.texts(OWNER_TG).some((x) => x.startsWith('[write_file]')), JSON.stringify(t.texts(OWNER_TG)));
    assert.equal(fs.readFileSync(path.join(workDirOf(id), 'allowed.txt'), 'utf8'), 'hi');
    // a second press is too late
    const late = await press(m, 'Deny');
    assert.match(late[0].params.text, /no longer|Too late|not yours/);
  });

  test('Deny: the tool does not run', async () => {
    const since = lastId();
    const id = await t.say(OWNER_TG, write('denied.txt'));
    const m = await prompt(since);
    const answers = await press(m, 'Deny');
    assert.equal(answers[0].params.text, 'Denied.');
    assert.equal(await t.settled(id), 'done');
    assert.equal(t.tg.messages(OWNER_TG).find((x) => x.message_id === m.message_id).text, 'Denied: write_file');
    assert.ok(t.texts(OWNER_TG).some((x) => /\[write_file failed\] denied by user/.test(x)));
    assert.ok(!fs.existsSync(path.join(workDirOf(id), 'denied.txt')));
  });

  test('no press within the approval timeout: denied, the tool does not run', async () => {
    const since = lastId();
    const id = await t.say(OWNER_TG, write('timeout.txt'));
    const m = await prompt(since);
    assert.equal(await t.settled(id, 20000), 'done');
    assert.equal(t.tg.messages(OWNER_TG).find((x) => x.message_id === m.message_id).text, 'No answer in time: denied: write_file');
    assert.ok(t.texts(OWNER_TG).some((x) => /\[write_file failed\] denied: the approval timed out/.test(x)));
    assert.ok(!fs.existsSync(path.join(workDirOf(id), 'timeout.txt')));
    const late = await press(m, 'Allow');
    assert.match(late[0].params.text, /Too late|no longer/);
  });
});

describe('run-time tool policies', () => {
  test('a policy changed with PATCH /api/v1/config applies to Telegram turns', async () => {
    const patch = (policy) =>
      t.stack.request('/api/v1/config', {
        method: 'PATCH',
        headers: { Authorization: `Bearer ${t.owner.token}`, 'Content-Type': 'application/json' },
        body: JSON.stringify({ tools: { policies: { write_file: policy } } }),
      });
    const r = await patch('auto');
    assert.equal(r.status, 200, r.text);
    try {
      const since = lastId();
      const id = await t.say(OWNER_TG, write('auto.txt'));
      assert.equal(await t.settled(id), 'done');
      assert.ok(!t.tg.messages(OWNER_TG).some((x) => x.message_id > since && x.reply_markup), 'no prompt');
      assert.equal(fs.readFileSync(path.join(workDirOf(id), 'auto.txt'), 'utf8'), 'hi');
    } finally {
      assert.equal((await patch(null)).status, 200);
    }
  });
});
