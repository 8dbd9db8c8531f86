#!/usr/bin/env node
// A fake Telegram Bot API server for tests: records every call and answers
// with the real Bot API JSON (https://core.telegram.org/bots/api):
//   POST /bot<TOKEN>/<method>  → {"ok":true,"result":…} or
//   {"ok":false,"error_code":N,"description":"…","parameters":{"retry_after":S}?}
//
// Methods: getMe, setWebhook, deleteWebhook, getWebhookInfo, sendMessage,
// editMessageText, answerCallbackQuery. Like Telegram it refuses a wrong
// token (401), an empty text or one over 4096 characters (400 "message is too
// long"), an edit of an unknown message (400 "message to edit not found") and
// an edit that changes nothing (400 "message is not modified").
//
// In-process use (tests):
//   const tg = await startFakeTelegram({ token });
//   tg.url                      base URL for telegram_api_base
//   tg.calls                    [{method, params, status, at}] in arrival order
//   tg.messages(chatId)         the chat's messages as they look now [{message_id, text, reply_markup}]
//   tg.failNext(method, status, extra)  the next call of method gets this error
//                               (extra: {retry_after} for 429); queue as many as needed
//   tg.webhook                  what setWebhook last set ({url, secret_token, allowed_updates})
//   await tg.close()
//
// As a program: node tests/fakes/fake-telegram.mjs --token T [--port N]
// prints {"port":N} and serves until SIGTERM (GET /__calls lists the calls).

import http from 'node:http';

export async function startFakeTelegram({ token, port = 0 } = {}) {
  const calls = [];
  const chats = new Map(); // chatId → Map(message_id → message)
  const failures = new Map(); // method → [{status, extra}]
  let nextId = 1000;
  const state = { webhook: null };

  const answer = (res, status, body) => {
    const text = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text) });
    res.end(text);
  };
  const error = (code, description, parameters) => {
    const b = { ok: false, error_code: code, description };
    if (parameters) b.parameters = parameters;
    return [code, b];
  };
  const ok = (result) => [200, { ok: true, result }];
  const chat = (id) => {
    if (!chats.has(id)) chats.set(id, new Map());
    return chats.get(id);
  };
  const textOk = (t) => typeof t === 'string' && t.length > 0 && t.length <= 4096;

  function handle(method, p) {
    const queued = failures.get(method);
    if (queued && queued.length) {
      const f = queued.shift();
      if (f.status === 429) {
        const after = f.extra?.retry_after ?? 1;
        return error(429, `Too Many Requests: retry after ${after}`, { retry_after: after });
      }
      return error(f.status, f.extra?.description ?? (f.status >= 500 ? 'Internal Server Error' : 'Bad Request: injected'));
    }
    switch (method) {
      case 'getMe':
        return ok({ id: 4242, is_bot: true, first_name: 'meao test bot', username: 'meao_test_bot' });
      case 'setWebhook':
        if (typeof p.url !== 'string') return error(400, 'Bad Request: bad webhook: URL is missing');
        if (p.secret_token !== undefined && !/^[A-Za-z0-9_-]{1,256}$/.test(p.secret_token)) {
          return error(400, 'Bad Request: secret token contains unallowed characters');
        }
        state.webhook = { url: p.url, secret_token: p.secret_token, allowed_updates: p.allowed_updates };
        return ok(true);
      case 'deleteWebhook':
        state.webhook = null;
        return ok(true);
      case 'getWebhookInfo':
        return ok({ url: state.webhook ? state.webhook.url : '', has_custom_certificate: false, pending_update_count: 0 });
      case 'sendMessage': {
        if (typeof p.chat_id !== 'number') return error(400, 'Bad Request: chat not found');
        if (!textOk(p.text)) return error(400, p.text ? 'Bad Request: message is too long' : 'Bad Request: message text is empty');
        const m = { message_id: nextId++, chat: { id: p.chat_id, type: 'private' }, date: Math.floor(Date.now() / 1000), text: p.text };
        if (p.reply_markup) m.reply_markup = p.reply_markup;
        chat(p.chat_id).set(m.message_id, m);
        return ok(m);
      }
      case 'editMessageText': {
        const m = chat(p.chat_id).get(p.message_id);
        if (!m) return error(400, 'Bad Request: message to edit not found');
        if (!textOk(p.text)) return error(400, p.text ? 'Bad Request: message is too long' : 'Bad Request: message text is empty');
        const markup = p.reply_markup || undefined;
        if (m.text === p.text && JSON.stringify(m.reply_markup) === JSON.stringify(markup)) {
          return error(400, 'Bad Request: message is not modified: specified new message content and reply markup are exactly the same as a current content and reply markup of the message');
        }
        m.text = p.text;
        if (markup) m.reply_markup = markup;
        else delete m.reply_markup;
        return ok(m);
      }
      case 'answerCallbackQuery':
        if (typeof p.callback_query_id !== 'string') return error(400, 'Bad Request: query is too old and response timeout expired or query ID is invalid');
        return ok(true);
      default:
        return error(404, 'Not Found');
    }
  }

  const server = http.createServer((req, res) => {
    const chunks = [];
    req.on('data', (d) => chunks.push(d));
    req.on('end', () => {
      if (req.method === 'GET' && req.url === '/__calls') return answer(res, 200, calls);
      const m = /^\/bot([^/]+)\/([A-Za-z]+)$/.exec(req.url);
      if (!m) return answer(res, 404, { ok: false, error_code: 404, description: 'Not Found' });
      let params = {};
      const body = Buffer.concat(chunks).toString('utf8');
      if (body) {
        try {
          params = JSON.parse(body);
        } catch {
          return answer(res, 400, { ok: false, error_code: 400, description: "Bad Request: can't parse JSON" });
        }
      }
      const [status, out] = m[1] !== token ? error(401, 'Unauthorized') : handle(m[2], params);
      calls.push({ method: m[2], params, status, at: Date.now(), tokenOk: m[1] === token });
      answer(res, status, out);
    });
  });
  await new Promise((resolve) => server.listen(port, '127.0.0.1', resolve));
  const addr = server.address();
  return {
    url: `http://127.0.0.1:${addr.port}`,
    port: addr.port,
    calls,
    get webhook() {
      return state.webhook;
    },
    messages(chatId) {
      return [...chat(chatId).values()];
    },
    failNext(method, status, extra) {
      if (!failures.has(method)) failures.set(method, []);
      failures.get(method).push({ status, extra });
    },
    callsOf(method, chatId) {
      return calls.filter((c) => c.method === method && c.status === 200 && (chatId === undefined || c.params.chat_id === chatId));
    },
    close() {
      server.closeAllConnections?.();
      return new Promise((resolve) => server.close(() => resolve()));
    },
  };
}

const isMain = process.argv[1] && import.meta.url === new URL(`file://${process.argv[1]}`).href;
if (isMain) {
  const arg = (name, def) => {
    const i = process.argv.indexOf(name);
    return i > 0 ? process.argv[i + 1] : def;
  };
  const tg = await startFakeTelegram({ token: arg('--token', 'test-token'), port: Number(arg('--port', '0')) });
  process.stdout.write(`${JSON.stringify({ port: tg.port })}\n`);
  const stop = () => tg.close().then(() => process.exit(0));
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
}
