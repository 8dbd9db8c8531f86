// DM policies other than owner_only (telegram.test.mjs covers that one):
// allowlist, pairing (a stranger's code approved with /pair by the owner, and
// /pair for a device-initiated pairing), open. One stack per policy.
import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { waitFor } from './lib/stack.mjs';
import { OWNER_TG, startTelegramStack } from './lib/telegram.mjs';

let t;
after(async () => {
  await t?.close();
});
async function withPolicy(policy) {
  await t?.close();
  t = await startTelegramStack({ config: { telegram_dm_policy: policy } });
  return t;
}
const replied = (chat, text) => t.texts(chat).includes(text);

describe('allowlist', () => {
  test('strangers are refused until allowed; linked users of any role talk', async () => {
    await withPolicy('allowlist');
    const stranger = 303030;
    assert.equal(await t.settled(await t.say(stranger, 'hi there')), 'ignored');
    assert.ok(t.texts(stranger).every((x) => /private/.test(x)));
    const allow = t.stack.ctl(['telegram', 'allow', String(stranger)]);
    assert.equal(allow.status, 0, allow.stderr);
    assert.equal(await t.settled(await t.say(stranger, 'now allowed')), 'done');
    assert.ok(replied(stranger, 'now allowed'));
    // a linked user (role user) talks too
    t.stack.addUser('bob', 'user');
    assert.equal(t.stack.ctl(['telegram', 'link', '2002', 'bob']).status, 0);
    assert.equal(await t.settled(await t.say(2002, 'bob speaking')), 'done');
    assert.ok(replied(2002, 'bob speaking'));
    const list = t.stack.ctl(['telegram', 'list'], { json: true });
    assert.deepEqual(list.json.map((x) => [x.telegramUserId, x.user]).sort(), [[1001, 'alice'], [2002, 'bob'], [303030, 'tg303030']].sort());
    // unlink: refused again
    assert.equal(t.stack.ctl(['telegram', 'unlink', String(stranger)]).status, 0);
    assert.equal(await t.settled(await t.say(stranger, 'still there?')), 'ignored');
  });
});

describe('pairing', () => {
  test('a stranger gets a code; the owner approves it with /pair; then they talk', async () => {
    await withPolicy('pairing');
    const stranger = 404040;
    assert.equal(await t.settled(await t.say(stranger, 'let me in')), 'ignored');
    const m = /pairing code is ([A-Z0-9]{6})/.exec(t.texts(stranger).at(-1) || '');
    assert.ok(m, JSON.stringify(t.texts(stranger)));
    // no turn before approval
    assert.equal(t.sql("SELECT count(*) FROM users WHERE name = 'tg404040'"), '0');
    // only the owner may approve
    t.stack.addUser('bob', 'user');
    assert.equal(t.stack.ctl(['telegram', 'link', '2002', 'bob']).status, 0);
    await t.settled(await t.say(2002, `/pair ${m[1]}`));
    assert.ok(t.texts(2002).includes('Only the owner can approve pairings.'));
    // wrong code, then the right one (lower case and a dash are fine)
    await t.settled(await t.say(OWNER_TG, '/pair ZZZZZZ'));
    assert.ok(t.texts(OWNER_TG).some((x) => /No pending pairing/.test(x)));
    const code = `${m[1].slice(0, 3).toLowerCase()}-${m[1].slice(3)}`;
    assert.equal(await t.settled(await t.say(OWNER_TG, `/pair ${code}`)), 'done');
    assert.ok(t.texts(OWNER_TG).some((x) => x.includes(`Telegram user ${stranger} may now talk`)));
    assert.ok(t.texts(stranger).some((x) => /approved/.test(x)));
    assert.equal(await t.settled(await t.say(stranger, 'thank you')), 'done');
    assert.ok(replied(stranger, 'thank you'));
  });

  test('/pair approves a device-initiated pairing', async () => {
    const req = await t.stack.request('/api/v1/auth/pair/request', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({ deviceName: 'laptop' }),
    });
    assert.equal(req.status, 201, req.text);
    const { pairingCode, deviceCode } = req.json.data;
    assert.equal(await t.settled(await t.say(OWNER_TG, `/pair ${pairingCode}`)), 'done');
    assert.ok(t.texts(OWNER_TG).includes('Approved the device "laptop".'), JSON.stringify(t.texts(OWNER_TG)));
    const done = await waitFor(async () => {
      const r = await t.stack.request('/api/v1/auth/pair/complete', {
        method: 'POST',
        headers: { 'Content-Type': 'application/json' },
        body: JSON.stringify({ deviceCode }),
      });
      return r.status === 200 ? r : null;
    }, { timeoutMs: 15000, intervalMs: 1000, what: 'the device to get its token' });
    assert.match(done.json.data.token, /^meao_at_/);
  });
});

describe('open', () => {
  test('anyone talks; each gets a meao user of role user', async () => {
    await withPolicy('open');
    const stranger = 505050;
    assert.equal(await t.settled(await t.say(stranger, 'open door')), 'done');
    assert.ok(replied(stranger, 'open door'));
    assert.equal(t.sql("SELECT role FROM users WHERE name = 'tg505050'"), 'user');
  });
});
