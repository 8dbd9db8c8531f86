// Identity end to end through nginx: tokens, roles, refresh and revoke, both
// pairing flows, and hostile input. Users are made with the real meaoctl.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { assertErrorEnvelope, assertHealthy, startStack } from './lib/stack.mjs';

let stack;
let owner;
let user;

before(async () => {
  // pairing limits are exercised in ratelimit.test.mjs; here they must not interfere
  stack = await startStack({ config: { rate_pairing_per_15min: 1000, rate_rest_per_min: 100000 } });
  owner = stack.addUser('alice', 'owner');
  user = stack.addUser('bob', 'user');
});
after(async () => {
  await stack?.stop();
});

const bearer = (t) => ({ Authorization: `Bearer ${t}` });
function post(path, body, headers = {}) {
  return stack.request(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: typeof body === 'string' ? body : JSON.stringify(body),
  });
}
const get = (path, token) => stack.request(path, { headers: token ? bearer(token) : {} });

function sql(statement) {
  const r = spawnSync('sqlite3', [stack.dbPath, statement], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('tokens', () => {
  test('meaoctl prints a well-formed token that authenticates', async () => {
    assert.match(owner.token, /^meao_at_[0-9A-Za-z]{49}$/);
    assert.match(owner.refreshToken, /^meao_rt_[0-9A-Za-z]{49}$/);
    const r = await get('/api/v1/auth/me', owner.token);
    assert.equal(r.status, 200, r.text);
    assert.deepEqual(r.json.data, { userId: owner.userId, name: 'alice', role: 'owner' });
    assert.ok(r.headers.get('x-ratelimit-limit'), 'rate-limit headers on an authenticated route');
  });

  test('missing, garbled, wrong-checksum, expired and revoked tokens are 401', async () => {
    assertErrorEnvelope(assert, await get('/api/v1/auth/me'), 401, 'AUTH_REQUIRED');
    const missing = await get('/api/v1/auth/me');
    assert.match(missing.headers.get('www-authenticate') || '', /^Bearer/);
    for (const bad of ['garbage', `${owner.token}x`, owner.token.slice(0, -1), 'meao_at_', owner.refreshToken]) {
      assertErrorEnvelope(assert, await get('/api/v1/auth/me', bad), 401, 'AUTH_INVALID_TOKEN');
    }
    // one changed character: the checksum rejects it before any database look-up
    const typo = owner.token.slice(0, 20) + (owner.token[20] === 'a' ? 'b' : 'a') + owner.token.slice(21);
    const r = await get('/api/v1/auth/me', typo);
    assertErrorEnvelope(assert, r, 401, 'AUTH_INVALID_TOKEN');
    assert.match(r.json.error.message, /Malformed/);
    assertErrorEnvelope(
      assert,
      await stack.request('/api/v1/auth/me', { headers: { Authorization: `Basic ${owner.token}` } }),
      401,
      'AUTH_INVALID_TOKEN',
    );

    const carol = stack.addUser('carol');
    assert.equal((await get('/api/v1/auth/me', carol.token)).status, 200);
    sql(`UPDATE tokens SET expires_ms = 1 WHERE kind = 'access' AND user_id = ${carol.userId}`);
    const expired = await get('/api/v1/auth/me', carol.token);
    assertErrorEnvelope(assert, expired, 401, 'AUTH_INVALID_TOKEN');
    assert.doesNotMatch(expired.json.error.message, /Malformed/, 'a well-formed token is looked up');
  });

  test('a user token on an owner route is 403; the owner token passes', async () => {
    assertErrorEnvelope(assert, await get('/health/detailed', user.token), 403, 'AUTH_INSUFFICIENT_SCOPE');
    const r = await get('/health/detailed', owner.token);
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.status, 'ok');
    assert.equal(typeof r.json.uptimeSeconds, 'number');
    assert.equal(typeof r.json.memory.rssKiB, 'number');
    assert.equal(r.json.checks.database, 'ok');
  });

  test('revocation by the CLI is refused on the very next request', async () => {
    const dave = stack.addUser('dave');
    assert.equal((await get('/api/v1/auth/me', dave.token)).status, 200);
    const list = stack.ctl(['token', 'list'], { json: true }).json;
    const row = list.find((t) => t.userName === 'dave' && t.kind === 'access');
    const rv = stack.ctl(['token', 'revoke', String(row.id)]);
    assert.equal(rv.status, 0, rv.stderr);
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', dave.token), 401, 'AUTH_INVALID_TOKEN');
    // and by device
    const erin = stack.addUser('erin');
    assert.equal(stack.ctl(['device', 'revoke', erin.deviceId]).status, 0);
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', erin.token), 401, 'AUTH_INVALID_TOKEN');
    assert.equal(stack.ctl(['device', 'revoke', 'dev_nonexistent']).status, 1);
  });

  test('refresh rotates both tokens; reusing the old refresh token revokes the device', async () => {
    const frank = stack.addUser('frank');
    const r1 = await post('/api/v1/auth/refresh', { refreshToken: frank.refreshToken });
    assert.equal(r1.status, 200, r1.text);
    assert.equal(r1.headers.get('cache-control'), 'no-store');
    const p2 = r1.json.data;
    assert.match(p2.token, /^meao_at_/);
    assert.notEqual(p2.refreshToken, frank.refreshToken);
    assert.equal(p2.deviceId, frank.deviceId);
    assert.ok(Date.parse(p2.expiresAt) > Date.now() + 23 * 3600e3);
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', frank.token), 401, 'AUTH_INVALID_TOKEN');
    assert.equal((await get('/api/v1/auth/me', p2.token)).status, 200);
    // theft: the old refresh token comes back
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/refresh', { refreshToken: frank.refreshToken }),
      401,
      'AUTH_INVALID_TOKEN',
    );
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', p2.token), 401, 'AUTH_INVALID_TOKEN');
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/refresh', { refreshToken: p2.refreshToken }),
      401,
      'AUTH_INVALID_TOKEN',
    );
  });

  test('revoke over HTTP: own token, own device, all; never another user\'s', async () => {
    const gina = stack.addUser('gina');
    const hank = stack.addUser('hank');
    // another user's device: 404, and it keeps working
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/revoke', { deviceId: hank.deviceId }, bearer(gina.token)),
      404,
      'NOT_FOUND',
    );
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/revoke', { token: hank.token }, bearer(gina.token)),
      404,
      'NOT_FOUND',
    );
    assert.equal((await get('/api/v1/auth/me', hank.token)).status, 200);
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/revoke', { deviceId: 'x', all: true }, bearer(gina.token)),
      400,
      'INVALID_PARAMETER',
    );
    const devs = await get('/api/v1/auth/devices', gina.token);
    assert.equal(devs.status, 200);
    assert.deepEqual(
      devs.json.data.devices.map((d) => [d.deviceId, d.current]),
      [[gina.deviceId, true]],
      'a user sees only their own devices',
    );
    assert.ok(!JSON.stringify(devs.json).includes('meao_at_'), 'no token values in the device list');
    const all = await get('/api/v1/auth/devices', owner.token);
    assert.ok(all.json.data.devices.length >= 3, 'the owner sees every device');
    const r = await post('/api/v1/auth/revoke', { all: true }, bearer(gina.token));
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.revoked, 2);
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', gina.token), 401, 'AUTH_INVALID_TOKEN');
    const rh = await post('/api/v1/auth/revoke', { token: hank.token }, bearer(hank.token));
    assert.equal(rh.status, 200, rh.text);
    assertErrorEnvelope(assert, await get('/api/v1/auth/me', hank.token), 401, 'AUTH_INVALID_TOKEN');
  });
});

describe('pairing', () => {
  test('owner-initiated: code from the API, completed by a new device, bound to the owner', async () => {
    const c = await post('/api/v1/auth/pair/codes', { deviceName: 'tablet' }, bearer(owner.token));
    assert.equal(c.status, 201, c.text);
    assert.match(c.json.data.pairingCode, /^[A-Z0-9]{6}$/);
    assert.equal(c.json.data.expiresIn, 300);
    // normalised input: lower case and a dash
    const code = c.json.data.pairingCode.toLowerCase();
    const done = await post('/api/v1/auth/pair/complete', { pairingCode: `${code.slice(0, 3)}-${code.slice(3)}` });
    assert.equal(done.status, 200, done.text);
    const me = await get('/api/v1/auth/me', done.json.data.token);
    assert.equal(me.json.data.userId, owner.userId);
    // single use
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/complete', { pairingCode: c.json.data.pairingCode }),
      400,
      'invalid_code',
    );
    // only an owner makes codes
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/codes', { deviceName: 'x' }, bearer(user.token)),
      403,
      'AUTH_INSUFFICIENT_SCOPE',
    );
  });

  test('device-initiated: pending, slow_down, approved by the owner, token issued once', async () => {
    const rq = await post('/api/v1/auth/pair/request', { deviceName: 'browser' });
    assert.equal(rq.status, 201, rq.text);
    const { pairingCode, deviceCode, interval } = rq.json.data;
    assert.equal(interval, 5);
    assert.match(deviceCode, /^meao_dc_/);
    assertErrorEnvelope(assert, await post('/api/v1/auth/pair/complete', { deviceCode }), 400, 'authorization_pending');
    assertErrorEnvelope(assert, await post('/api/v1/auth/pair/complete', { deviceCode }), 400, 'slow_down');
    // the approver is the token's user; a body naming someone else is refused
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/approve', { pairingCode, userId: user.userId }, bearer(owner.token)),
      400,
      'INVALID_REQUEST',
    );
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/approve', { pairingCode }, bearer(user.token)),
      403,
      'AUTH_INSUFFICIENT_SCOPE',
    );
    const ap = await post('/api/v1/auth/pair/approve', { pairingCode }, bearer(owner.token));
    assert.equal(ap.status, 200, ap.text);
    assert.equal(ap.json.data.deviceName, 'browser');
    assert.ok(!('token' in ap.json.data), 'the approver never receives the token');
    await sleep(interval * 1000 + 100);
    const done = await post('/api/v1/auth/pair/complete', { deviceCode });
    assert.equal(done.status, 200, done.text);
    assert.equal((await get('/api/v1/auth/me', done.json.data.token)).json.data.userId, owner.userId);
    await sleep(interval * 1000 + 100);
    assertErrorEnvelope(assert, await post('/api/v1/auth/pair/complete', { deviceCode }), 400, 'expired');
  });

  test('device-initiated, denied through the CLI', async () => {
    const rq = await post('/api/v1/auth/pair/request', { deviceName: 'stranger' });
    const r = stack.ctl(['pair', 'deny', rq.json.data.pairingCode]);
    assert.equal(r.status, 0, r.stderr);
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/complete', { deviceCode: rq.json.data.deviceCode }),
      400,
      'denied',
    );
    assert.equal(stack.ctl(['pair', 'approve', rq.json.data.pairingCode]).status, 1, 'decided codes are closed');
  });

  test('five wrong codes kill every open code, even if the sixth guess is right', async () => {
    const c = await post('/api/v1/auth/pair/codes', { deviceName: 'victim' }, bearer(owner.token));
    const right = c.json.data.pairingCode;
    const wrong = right === 'AAAAAA' ? 'BBBBBB' : 'AAAAAA';
    for (let i = 0; i < 5; i++) {
      assertErrorEnvelope(assert, await post('/api/v1/auth/pair/complete', { pairingCode: wrong }), 400, 'invalid_code');
    }
    assertErrorEnvelope(assert, await post('/api/v1/auth/pair/complete', { pairingCode: right }), 400, 'invalid_code');
  });

  test('two devices completing the same code at once: exactly one token', async () => {
    const c = await post('/api/v1/auth/pair/codes', { deviceName: 'race' }, bearer(owner.token));
    const results = await Promise.all(
      Array.from({ length: 8 }, () => post('/api/v1/auth/pair/complete', { pairingCode: c.json.data.pairingCode })),
    );
    const ok = results.filter((r) => r.status === 200);
    assert.equal(ok.length, 1, results.map((r) => r.status).join(','));
    for (const r of results) if (r.status !== 200) assertErrorEnvelope(assert, r, 400, 'invalid_code');
  });

  test('a restart of the responder in the middle of a pairing loses nothing', async () => {
    const rq = await post('/api/v1/auth/pair/request', { deviceName: 'survivor' });
    assert.equal(rq.status, 201);
    await stack.restartFcgi();
    const ap = stack.ctl(['pair', 'approve', rq.json.data.pairingCode.toLowerCase()]);
    assert.equal(ap.status, 0, ap.stderr);
    await stack.restartFcgi();
    const done = await post('/api/v1/auth/pair/complete', { deviceCode: rq.json.data.deviceCode });
    assert.equal(done.status, 200, done.text);
    assert.equal((await get('/api/v1/auth/me', done.json.data.token)).status, 200);
  });

  test('expired device code answers expired', async () => {
    const rq = await post('/api/v1/auth/pair/request', { deviceName: 'late' });
    sql(`UPDATE pairings SET expires_ms = 1 WHERE device_name = 'late'`);
    assertErrorEnvelope(
      assert,
      await post('/api/v1/auth/pair/complete', { deviceCode: rq.json.data.deviceCode }),
      400,
      'expired',
    );
  });
});

describe('secrets at rest and hostile input', () => {
  test('neither the database nor its WAL holds a token, device code or pairing code in clear', async () => {
    const c = await post('/api/v1/auth/pair/codes', { deviceName: 'grep' }, bearer(owner.token));
    const rq = await post('/api/v1/auth/pair/request', { deviceName: 'grep2' });
    const secrets = [
      owner.token,
      owner.refreshToken,
      user.token,
      c.json.data.pairingCode,
      rq.json.data.deviceCode,
      rq.json.data.pairingCode,
    ];
    let bytes = 0;
    for (const f of [stack.dbPath, `${stack.dbPath}-wal`]) {
      if (!fs.existsSync(f)) continue;
      const data = fs.readFileSync(f);
      bytes += data.length;
      for (const s of secrets) assert.equal(data.indexOf(s), -1, `${s.slice(0, 10)}… found in ${f}`);
      assert.equal(data.indexOf('meao_at_'), -1);
      assert.equal(data.indexOf('meao_rt_'), -1);
    }
    assert.ok(bytes > 0);
    // nor the responder's log
    const log = stack.readLog('fcgi');
    for (const s of secrets) assert.ok(!log.includes(s), 'secret in the responder log');
  });

  test('oversized, NUL, look-alike and SQL-shaped input: clean 4xx, never 5xx', async () => {
    const cases = [
      ['/api/v1/auth/refresh', { refreshToken: 'x'.repeat(10 * 1024) }, 400],
      ['/api/v1/auth/refresh', { refreshToken: "' OR 1=1 --" }, 401],
      ['/api/v1/auth/refresh', '{"refreshToken":"meao_rt_\\u0000"}', 400],
      ['/api/v1/auth/refresh', { refreshToken: 5 }, 400],
      ['/api/v1/auth/refresh', {}, 400],
      ['/api/v1/auth/pair/complete', { pairingCode: "'; DROP TABLE users; --" }, 400],
      ['/api/v1/auth/pair/complete', { pairingCode: 'АВС234' }, 400], // Cyrillic look-alikes
      ['/api/v1/auth/pair/complete', { pairingCode: 'ABC\u0000DE' }, 400],
      ['/api/v1/auth/pair/complete', { deviceCode: "meao_dc_' OR ''='" }, 400],
      ['/api/v1/auth/pair/complete', { pairingCode: 'ABCDEF', deviceCode: 'x' }, 400],
      ['/api/v1/auth/pair/request', { deviceName: 'x'.repeat(65) }, 400],
      ['/api/v1/auth/pair/request', { deviceName: 'bell\u0007' }, 400],
      ['/api/v1/auth/pair/request', { deviceName: ["'; --"] }, 400],
    ];
    for (const [path, body, status] of cases) {
      const r = await post(path, body);
      assert.equal(r.status, status, `${path} ${JSON.stringify(body).slice(0, 60)} → ${r.status} ${r.text.slice(0, 200)}`);
      assert.equal(r.json.success, false);
    }
    // a 10 KB bearer token: nginx or the responder refuses it, never a 5xx
    const big = await get('/api/v1/auth/me', `meao_at_${'A'.repeat(10 * 1024)}`);
    assert.ok(big.status === 400 || big.status === 401 || big.status === 431, `status ${big.status}`);
    const sqlTok = await get('/api/v1/auth/me', "meao_at_' OR 1=1 --");
    assertErrorEnvelope(assert, sqlTok, 401, 'AUTH_INVALID_TOKEN');
    assert.equal(sql('SELECT count(*) FROM users WHERE 1'), sql('SELECT count(*) FROM users'));
    await assertHealthy(assert, stack);
  });
});
