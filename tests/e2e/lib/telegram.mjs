// Shared by the telegram*.test.mjs suites: a stack with the Telegram worker
// pointed at a fake Bot API (tests/fakes/fake-telegram.mjs), the webhook set
// up with meaoctl (so the secret token is whatever meaoctl drew and sent to
// setWebhook), and helpers to deliver updates and read the inbox.
import assert from 'node:assert/strict';
import { execFile, spawnSync } from 'node:child_process';

import { startFakeTelegram } from '../../fakes/fake-telegram.mjs';
import { ctlBin, startStack, waitFor } from './stack.mjs';

/**
 * meaoctl without blocking the event loop: the fake Bot API runs in this
 * process, so a meaoctl command that calls it (set-webhook, status) must not
 * be run with spawnSync. Resolves { status, stdout, stderr }.
 */
export function ctlAsync(stack, args) {
  return new Promise((resolve) => {
    execFile(ctlBin, ['-c', stack.configFile, ...args], { timeout: 30000, encoding: 'utf8' }, (err, stdout, stderr) => {
      resolve({ status: err ? (typeof err.code === 'number' ? err.code : -1) : 0, stdout, stderr });
    });
  });
}

export const TOKEN = '123456789:AAE-meao_e2e_FAKE_token_0123456789abcdefXYZ';
export const OWNER_TG = 1001;

let nextUpdate = 5000;
let nextMessage = 1;
export const newUpdateId = () => nextUpdate++;

/** Start the fake Bot API and the stack (+ worker) with an owner linked to OWNER_TG. */
export async function startTelegramStack({ config = {}, worker = true } = {}) {
  const tg = await startFakeTelegram({ token: TOKEN });
  let stack;
  try {
    stack = await startStack({
      config: {
        telegram_bot_token: TOKEN,
        telegram_api_base: tg.url,
        telegram_poll_ms: 50,
        telegram_retry_max_ms: 5000,
        approval_timeout_ms: 3000,
        rate_rest_per_min: 100000,
        rate_rest_per_hour: 1000000,
        ...config,
      },
      telegram: worker,
    });
  } catch (e) {
    await tg.close();
    throw e;
  }
  const set = await ctlAsync(stack, ['telegram', 'set-webhook', '--url', stack.url('/telegram/webhook')]);
  assert.equal(set.status, 0, `set-webhook: ${set.stderr}`);
  assert.ok(tg.webhook && tg.webhook.secret_token, 'setWebhook got a secret_token');
  assert.deepEqual(tg.webhook.allowed_updates, ['message', 'callback_query']);
  const owner = stack.addUser('alice', 'owner');
  const link = stack.ctl(['telegram', 'link', String(OWNER_TG), 'alice']);
  assert.equal(link.status, 0, link.stderr);
  const t = {
    tg,
    stack,
    owner,
    secret: tg.webhook.secret_token,
    async close() {
      try {
        await stack.stop();
      } finally {
        await tg.close();
      }
    },
    /** POST an update (object or raw string) to the webhook through nginx. */
    deliver(update, { secret = t.secret, headers = {} } = {}) {
      const h = { 'Content-Type': 'application/json', ...headers };
      if (secret !== null) h['X-Telegram-Bot-Api-Secret-Token'] = secret;
      return stack.request('/telegram/webhook', {
        method: 'POST',
        headers: h,
        body: typeof update === 'string' ? update : JSON.stringify(update),
      });
    },
    /** Deliver a private text message from `from` and expect 200. */
    async say(from, text, updateId = newUpdateId()) {
      const r = await t.deliver(messageUpdate(updateId, from, text));
      assert.equal(r.status, 200, r.text);
      return updateId;
    },
    sql(statement) {
      const r = spawnSync('sqlite3', [stack.dbPath, statement], { encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
      return r.stdout.trim();
    },
    inboxStatus(updateId) {
      return t.sql(`SELECT status FROM telegram_inbox WHERE update_id = ${updateId}`);
    },
    /** Wait until the update's inbox row is settled (done, ignored or failed). */
    async settled(updateId, timeoutMs = 15000) {
      return waitFor(
        () => {
          const s = t.inboxStatus(updateId);
          return ['done', 'ignored', 'failed'].includes(s) ? s : null;
        },
        { timeoutMs, intervalMs: 50, what: `update ${updateId} to be settled` },
      );
    },
    /** The texts the chat shows now. */
    texts(chatId) {
      return tg.messages(chatId).map((m) => m.text);
    },
  };
  return t;
}

export function messageUpdate(updateId, from, text, { chatType = 'private', chatId = from } = {}) {
  return {
    update_id: updateId,
    message: {
      message_id: nextMessage++,
      from: { id: from, is_bot: false, first_name: `user${from}`, username: `user${from}` },
      chat: { id: chatId, type: chatType, first_name: `user${from}` },
      date: Math.floor(Date.now() / 1000),
      text,
    },
  };
}

export function callbackUpdate(updateId, from, data, message) {
  return {
    update_id: updateId,
    callback_query: {
      id: `cb${updateId}`,
      from: { id: from, is_bot: false, first_name: `user${from}` },
      message: { message_id: message.message_id, chat: { id: from, type: 'private' }, date: 0, text: message.text },
      chat_instance: '42',
      data,
    },
  };
}
