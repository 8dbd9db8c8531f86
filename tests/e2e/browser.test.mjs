// The browser client in a real browser: Debian's Chromium, headless, driven
// by playwright-core, against the whole stack (nginx serving nginx/html,
// meao-fcgi, websocketd + meao-ws, the orchestrator with the echo provider).
// Screenshots of the main states go to tests/e2e/artifacts/.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { e2eDir, startStack, waitFor } from './lib/stack.mjs';

const CHROMIUM = process.env.MEAO_CHROMIUM || '/usr/bin/chromium';
const APPROVAL_TIMEOUT_MS = 4000;
const artifacts = path.join(e2eDir, 'artifacts');

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch {
  chromium = null;
}
const skip = !chromium || !fs.existsSync(CHROMIUM) ? 'needs playwright-core and /usr/bin/chromium' : false;

let stack;
let browser;
let page;
let context;

async function shot(p, name) {
  fs.mkdirSync(artifacts, { recursive: true });
  await p.screenshot({ path: path.join(artifacts, `${name}.png`), fullPage: false });
}

/** Send a message through the composer. */
async function say(text) {
  await page.fill('#input', text);
  await page.press('#input', 'Enter');
}

/** The last assistant bubble's text once its turn has ended. */
async function lastReply(timeout = 10000) {
  await page.waitForFunction(
    () => {
      const b = [...document.querySelectorAll('.msg.assistant')].at(-1);
      return b && !b.classList.contains('streaming') && !document.querySelector('#cancel:not([hidden])');
    },
    null,
    { timeout },
  );
  return page.locator('.msg.assistant').last().innerText();
}

async function pairFreshBrowser() {
  const ctx = await browser.newContext({ viewport: { width: 1100, height: 760 } });
  const p = await ctx.newPage();
  p.on('pageerror', (e) => {
    throw e;
  });
  await p.goto(stack.url('/'));
  const codeEl = p.locator('#pair-code');
  await waitFor(async () => /^[A-Z0-9]{6}$/.test((await codeEl.innerText()).trim()), {
    timeoutMs: 10000,
    what: 'a pairing code on the page',
  });
  const code = (await codeEl.innerText()).trim();
  return { ctx, p, code };
}

describe('browser client', { skip }, () => {
  before(async () => {
    stack = await startStack({
      ws: true,
      config: {
        approval_timeout_ms: APPROVAL_TIMEOUT_MS,
        rate_ws_messages_per_min: 1000,
        rate_rest_per_min: 10000,
        rate_rest_per_hour: 100000,
      },
    });
    stack.addUser('owner', 'owner');
    browser = await chromium.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox'] });
  });
  after(async () => {
    await browser?.close();
    await stack?.stop();
  });

  test('the page is served with a strict CSP and security headers', async () => {
    const r = await stack.request('/');
    assert.equal(r.status, 200);
    assert.match(r.headers.get('content-type'), /text\/html/);
    const csp = r.headers.get('content-security-policy');
    assert.match(csp, /default-src 'none'/);
    assert.match(csp, /script-src 'self'/);
    assert.doesNotMatch(csp, /unsafe-inline|unsafe-eval/);
    assert.equal(r.headers.get('x-content-type-options'), 'nosniff');
    assert.match(r.headers.get('x-frame-options'), /DENY/);
    const page = await stack.request('/meao-client/');
    assert.equal(page.status, 200);
    assert.equal(page.text, r.text, 'the same page under /meao-client/');
    assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
    const js = await stack.request('/meao-client/app.js');
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
  });

  test('device-initiated pairing approved with meaoctl', async () => {
    const { ctx, p, code } = await pairFreshBrowser();
    await shot(p, '01-pairing');
    const r = stack.ctl(['pair', 'approve', code]);
    assert.equal(r.status, 0, r.stderr);
    await p.waitForSelector('#app-view:not([hidden])', { timeout: 15000 });
    await p.waitForSelector('#conn-state[data-state="open"]', { timeout: 10000 });
    context = ctx;
    page = p;
    assert.match(await page.locator('#who').innerText(), /owner/);
  });

  test('a message streams back', async () => {
    await say('hello from a real browser');
    assert.equal(await lastReply(), 'hello from a real browser');
    assert.equal(await page.locator('.msg.user').last().innerText(), 'hello from a real browser');
    assert.equal(await page.inputValue('#input'), '');
    await shot(page, '02-chat');
  });

  test('a tool call: approve in the dialog', async () => {
    await say('/tool write_file {"path":"from-browser.txt","content":"ok"}');
    await page.waitForSelector('#approval[open]', { timeout: 5000 });
    assert.equal(await page.locator('#approval-tool').innerText(), 'write_file');
    assert.equal(await page.evaluate(() => document.activeElement.id), 'deny', 'Deny has the focus');
    assert.match(await page.locator('#approval-countdown').innerText(), /^\d+$/);
    await shot(page, '03-approval');
    await page.click('#approve');
    assert.match(await lastReply(), /\[write_file\] wrote 2 bytes/);
    await page.waitForSelector('.msg.tool.ok');
    assert.equal(await page.locator('#approval[open]').count(), 0);
  });

  test('another tool call: deny', async () => {
    await say('/tool write_file {"path":"denied.txt","content":"no"}');
    await page.waitForSelector('#approval[open]', { timeout: 5000 });
    await page.click('#deny');
    assert.match(await lastReply(), /write_file failed/);
    assert.match(await page.locator('.msg.tool').last().innerText(), /denied/);
  });

  test('a third: the countdown runs out and it is denied', async () => {
    await say('/tool write_file {"path":"late.txt","content":"no"}');
    await page.waitForSelector('#approval[open]', { timeout: 5000 });
    await page.waitForSelector('#approval:not([open])', { state: 'attached', timeout: APPROVAL_TIMEOUT_MS + 3000 });
    assert.match(await lastReply(), /write_file failed/);
    assert.match(await page.locator('.msg.tool').last().innerText(), /denied/);
  });

  test('Trust for this session: the next call of the tool needs no dialog', async () => {
    await say('/tool write_file {"path":"t1.txt","content":"1"}');
    await page.waitForSelector('#approval[open]', { timeout: 5000 });
    await page.click('#trust');
    assert.match(await lastReply(), /\[write_file\] wrote 1 bytes/);
    await say('/tool write_file {"path":"t2.txt","content":"2"}');
    assert.match(await lastReply(), /\[write_file\] wrote 1 bytes to t2.txt/);
    assert.equal(await page.locator('#approval[open]').count(), 0);
  });

  test('orchestrator down: a clear error, the text back in the composer, then it works again', async () => {
    await stack.orchestratorHandle.stop();
    await say('while the orchestrator is down');
    await page.waitForSelector('#banner:not([hidden])', { timeout: 5000 });
    assert.match(await page.locator('#banner').innerText(), /unavailable/i);
    assert.equal(await page.inputValue('#input'), 'while the orchestrator is down');
    await stack.startOrchestrator();
    await page.fill('#input', '');
    await say('and back');
    assert.equal(await lastReply(), 'and back');
  });

  test('a token refresh re-authenticates the open connection (no reconnect)', async () => {
    const opens = () => (stack.readLog('ws').match(/"event":"ws_open"/g) || []).length;
    const opened = opens();
    const old = await page.evaluate(() => JSON.parse(localStorage.getItem('meao.tokens')).token);
    await page.evaluate(() => import('/meao-client/api.js').then((m) => m.refresh()));
    const fresh = await page.evaluate(() => JSON.parse(localStorage.getItem('meao.tokens')).token);
    assert.notEqual(fresh, old);
    const r = await stack.request('/api/v1/auth/me', { headers: { Authorization: `Bearer ${old}` } });
    assert.equal(r.status, 401, 'the old access token died with the refresh');
    await sleep(4500); // past the server's re-auth grace period
    assert.equal(await page.locator('#conn-state').getAttribute('data-state'), 'open');
    assert.equal(opens(), opened, 'the same connection, re-authenticated');
    await say('after the refresh');
    assert.equal(await lastReply(), 'after the refresh');
  });

  test('model output with <script> and <img onerror> renders as text; markdown still works', async () => {
    const hostile = '<img src=x onerror="window.__pwned=1"><script>window.__pwned=2</script> **bold** `code`';
    await say(hostile);
    const text = await lastReply();
    assert.ok(text.includes('<img src=x onerror="window.__pwned=1">'), text);
    assert.ok(text.includes('<script>window.__pwned=2</script>'), text);
    assert.equal(await page.locator('#messages img').count(), 0);
    assert.equal(await page.locator('#messages script').count(), 0);
    assert.equal(await page.locator('.msg.assistant').last().locator('strong').innerText(), 'bold');
    assert.equal(await page.evaluate(() => window.__pwned), undefined);
  });

  test('a reload shows the history', async () => {
    await page.reload();
    await page.waitForSelector('#conn-state[data-state="open"]', { timeout: 10000 });
    await page.waitForFunction(() => document.querySelectorAll('.msg.user').length >= 5, null, { timeout: 5000 });
    const users = await page.locator('.msg.user').allInnerTexts();
    assert.ok(users.includes('hello from a real browser'));
    const replies = await page.locator('.msg.assistant').allInnerTexts();
    assert.ok(replies.includes('hello from a real browser'));
    assert.equal(await page.locator('#messages img').count(), 0);
    await shot(page, '04-history');
  });

  test('the program killed mid-turn: the page shows it, reconnects, keeps the text, and the next message works', async () => {
    await say('/sleep 4000\nslow one');
    await page.waitForSelector('#cancel:not([hidden])');
    await sleep(300);
    for (const pid of stack.wsPrograms()) process.kill(pid, 'SIGKILL');
    await page.waitForSelector('#banner:not([hidden])', { timeout: 5000 });
    assert.match(await page.locator('#banner').innerText(), /Connection lost|unavailable/);
    assert.match(await page.inputValue('#input'), /slow one/, 'the typed message is kept');
    await page.waitForSelector('#conn-state[data-state="open"]', { timeout: 15000 });
    await shot(page, '05-reconnected');
    await say('after the reconnect');
    assert.equal(await lastReply(), 'after the reconnect');
  });

  test('the stack restarted (websocketd and the orchestrator): reconnects and works', async () => {
    await stack.endProcess(stack.websocketd);
    await page.waitForSelector('#conn-state[data-state="offline"]', { timeout: 5000 });
    // typed while offline: sent once the connection is back
    await say('typed while offline');
    await page.waitForSelector('#banner[data-kind="info"]:not([hidden])', { timeout: 3000 });
    await stack.orchestratorHandle.stop();
    await stack.startOrchestrator();
    // websocketd back on the same port (nginx's upstream)
    await stack.startWebsocketd(stack.wsPort);
    await page.waitForFunction(
      () => [...document.querySelectorAll('.msg.user')].some((m) => m.textContent === 'typed while offline'),
      null,
      { timeout: 20000 },
    );
    assert.equal(await lastReply(20000), 'typed while offline');
  });

  test('cancel stops a running turn', async () => {
    await say('/sleep 5000\nnever');
    await page.waitForSelector('#cancel:not([hidden])');
    await page.click('#cancel');
    await page.waitForSelector('#cancel[hidden]', { state: 'attached', timeout: 3000 });
    assert.match(await page.locator('#banner').innerText(), /Cancelled/);
  });

  test('sessions: create, switch, delete', async () => {
    const before = await page.locator('#session-list li').count();
    await page.click('#new-session');
    await page.waitForFunction((n) => document.querySelectorAll('#session-list li').length === n + 1, before);
    assert.equal(await page.locator('.msg').count(), 0, 'a new session starts empty');
    await say('in the second session');
    assert.equal(await lastReply(), 'in the second session');
    // switch back to the first session: its history comes back
    await page.locator('#session-list .session').last().click();
    await page.waitForFunction(() => [...document.querySelectorAll('.msg.user')].some((m) => m.textContent === 'hello from a real browser'));
    // delete the current one
    await page.locator('#session-list li').last().locator('.delete').click();
    await page.waitForFunction((n) => document.querySelectorAll('#session-list li').length === n, before);
  });

  test('phone width is usable', async () => {
    await page.setViewportSize({ width: 390, height: 780 });
    await shot(page, '06-phone');
    const box = await page.locator('#composer').boundingBox();
    assert.ok(box.width <= 390 && box.y + box.height <= 780, JSON.stringify(box));
    await page.click('#toggle-sessions');
    assert.equal(await page.locator('#sessions').isVisible(), true);
    await page.click('#toggle-sessions');
    await page.setViewportSize({ width: 1100, height: 760 });
  });

  test('an owner-initiated code pairs a second browser; sign-out revokes', async () => {
    const r = stack.ctl(['pair', 'code', '--device', 'tablet']);
    assert.equal(r.status, 0, r.stderr);
    const code = r.stdout.trim();
    const ctx = await browser.newContext();
    const p = await ctx.newPage();
    await p.goto(stack.url('/'));
    await p.fill('#code-input', code.toLowerCase());
    await p.click('#code-form button[type="submit"]');
    await p.waitForSelector('#app-view:not([hidden])', { timeout: 10000 });
    const token = await p.evaluate(() => JSON.parse(localStorage.getItem('meao.tokens')).token);
    const me = await stack.request('/api/v1/auth/me', { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(me.status, 200);
    await p.click('#sign-out');
    await p.waitForSelector('#pair-view:not([hidden])', { timeout: 5000 });
    const after = await stack.request('/api/v1/auth/me', { headers: { Authorization: `Bearer ${token}` } });
    assert.equal(after.status, 401, 'the signed-out token is revoked');
    await ctx.close();
  });

  test('keyboard only: Tab reaches the composer and Enter sends', async () => {
    await page.focus('#input');
    await page.keyboard.type('typed with the keyboard');
    await page.keyboard.press('Enter');
    assert.equal(await lastReply(), 'typed with the keyboard');
    await context.close();
  });
});
