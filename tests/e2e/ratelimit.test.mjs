// Rate limits end to end through nginx (API.md "Rate limiting", issue 3's
// acceptance): per user after authentication, per client IP before it, never
// keyed by a spoofable header unless configured, exact under concurrency across
// both workers, both header families on every limited response, an honest
// Retry-After, state that survives a responder restart, probes never limited,
// and a switch that turns it all off.
//
// Small limits keep the tests fast. GCRA refills one request every window/limit
// (20/min: one per 3 s), so a test that counts must finish its burst well
// inside one emission interval, or use a limit whose interval is long (the
// pairing class, 10 per 15 min: one per 90 s; or a small per-hour limit).
import assert from 'node:assert/strict';
import fs from 'node:fs';
import net from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, test } from 'node:test';

import { assertErrorEnvelope, startStack } from './lib/stack.mjs';

const ME = '/api/v1/auth/me';
const PAIR_REQUEST = '/api/v1/auth/pair/request';
const PAIR_COMPLETE = '/api/v1/auth/pair/complete';
const REFRESH = '/api/v1/auth/refresh';
const RATE_HEADERS = ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset', 'ratelimit-policy', 'ratelimit'];

// Each test starts its own stacks (per-IP buckets would otherwise leak from one
// test into the next: every request comes from 127.0.0.1); they stop when it ends.
const stacks = [];
async function stackWith(config) {
  const s = await startStack({ config });
  stacks.push(s);
  return s;
}
afterEach(async () => {
  while (stacks.length) await stacks.pop().stop();
});

const bearer = (t) => ({ Authorization: `Bearer ${t}` });
const get = (stack, path, token, headers = {}) =>
  stack.request(path, { headers: { ...(token ? bearer(token) : {}), ...headers } });
const post = (stack, path, body, headers = {}) =>
  stack.request(path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json', ...headers },
    body: JSON.stringify(body),
  });

/**
 * Both header families present, well-formed and agreeing with each other:
 * returns { limit, remaining, reset } (numbers).
 */
function rateHeaders(res, { limit, policy }) {
  const h = (n) => res.headers.get(n);
  for (const n of RATE_HEADERS) assert.ok(h(n) !== null, `${n} present on ${res.status} (body ${res.text.slice(0, 200)})`);
  for (const n of ['x-ratelimit-limit', 'x-ratelimit-remaining', 'x-ratelimit-reset']) {
    assert.match(h(n), /^\d+$/, `${n} is a non-negative integer`);
  }
  const out = {
    limit: Number(h('x-ratelimit-limit')),
    remaining: Number(h('x-ratelimit-remaining')),
    reset: Number(h('x-ratelimit-reset')),
  };
  assert.equal(out.limit, limit, 'X-RateLimit-Limit');
  assert.equal(h('ratelimit-policy'), policy, 'RateLimit-Policy');
  const m = /^limit=(\d+), remaining=(\d+), reset=(\d+)$/.exec(h('ratelimit'));
  assert.ok(m, `RateLimit header well-formed: ${h('ratelimit')}`);
  assert.deepEqual(
    { limit: Number(m[1]), remaining: Number(m[2]), reset: Number(m[3]) },
    out,
    'RateLimit agrees with the X-RateLimit-* headers',
  );
  assert.ok(out.remaining >= 0 && out.remaining < out.limit, `0 <= remaining < limit: ${out.remaining}`);
  return out;
}

function assertNoRateHeaders(res, what) {
  for (const n of [...RATE_HEADERS, 'retry-after']) {
    assert.equal(res.headers.get(n), null, `${what}: no ${n} header`);
  }
}

/** A 429 RATE_LIMITED envelope whose retryAfter equals Retry-After; returns that value. */
function assertLimited(res) {
  assertErrorEnvelope(assert, res, 429, 'RATE_LIMITED');
  const ra = res.headers.get('retry-after');
  assert.match(ra || '', /^[1-9]\d*$/, 'Retry-After: a positive whole number of seconds');
  assert.equal(res.json.error.retryable, true, 'error.retryable');
  assert.equal(res.json.error.retryAfter, Number(ra), 'error.retryAfter equals Retry-After');
  return Number(ra);
}

/** Send n requests sequentially; returns the responses. */
async function sequential(n, fn) {
  const out = [];
  for (let i = 0; i < n; i++) out.push(await fn(i));
  return out;
}

/** Count responses by status: { 200: n, 429: m, ... }. */
function byStatus(responses) {
  const c = {};
  for (const r of responses) c[r.status] = (c[r.status] || 0) + 1;
  return c;
}

/** Worker pids that logged a request line for path (needs log_level = debug). */
function servingPids(stack, path) {
  const pids = new Set();
  for (const line of stack.readLog('fcgi').split('\n')) {
    if (!line.includes('"event":"request"') || !line.includes(`"path":"${path}"`)) continue;
    try {
      pids.add(JSON.parse(line).pid);
    } catch {
      /* a partial line */
    }
  }
  return pids;
}

/**
 * Open one connection per request, wait until every one is connected, then
 * write all requests back to back, so they reach nginx (and both workers) as
 * one burst rather than at the pace node issues fetches. Each request is
 * { method, path, headers, body }; returns { status, headers (Headers), text,
 * json } per request, in order. Bounded by timeoutMs.
 */
async function rawBurst(stack, requests, { timeoutMs = 20000 } = {}) {
  const socks = await Promise.all(
    requests.map(
      () =>
        new Promise((resolve, reject) => {
          const s = net.connect(stack.port, '127.0.0.1');
          s.once('connect', () => resolve(s));
          s.once('error', reject);
        }),
    ),
  );
  const answers = socks.map(
    (sock) =>
      new Promise((resolve, reject) => {
        const chunks = [];
        const timer = setTimeout(() => {
          sock.destroy();
          reject(new Error('burst request timed out'));
        }, timeoutMs);
        const done = (buf, sep) => {
          clearTimeout(timer);
          sock.destroy();
          const head = buf.subarray(0, sep).toString('latin1').split('\r\n');
          const headers = new Headers();
          for (const line of head.slice(1)) {
            const i = line.indexOf(':');
            headers.append(line.slice(0, i).trim(), line.slice(i + 1).trim());
          }
          const text = buf.subarray(sep + 4).toString('utf8');
          let json;
          try {
            json = JSON.parse(text);
          } catch {
            json = undefined;
          }
          resolve({ status: Number(head[0].split(' ')[1]), headers, text, json });
        };
        sock.on('data', (d) => {
          chunks.push(d);
          const buf = Buffer.concat(chunks);
          const sep = buf.indexOf('\r\n\r\n');
          if (sep < 0) return;
          const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.subarray(0, sep).toString('latin1'));
          if (m && buf.length >= sep + 4 + Number(m[1])) done(buf, sep);
        });
        sock.on('error', (e) => {
          clearTimeout(timer);
          reject(e);
        });
      }),
  );
  const wire = requests.map(({ method = 'GET', path, headers = {}, body }) => {
    const b = body === undefined ? '' : JSON.stringify(body);
    const h = { Host: `127.0.0.1:${stack.port}`, Connection: 'close', ...headers };
    if (body !== undefined) Object.assign(h, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(b) });
    const lines = Object.entries(h).map(([k, v]) => `${k}: ${v}`);
    return Buffer.from(`${method} ${path} HTTP/1.1\r\n${lines.join('\r\n')}\r\n\r\n${b}`);
  });
  socks.forEach((s, i) => s.write(wire[i]));
  return Promise.all(answers);
}

// ---------------------------------------------------------------------------

describe('separate buckets', () => {
  test('two users behind one IP get separate buckets', async () => {
    const stack = await stackWith({ rate_rest_per_min: 20 });
    const a = stack.addUser('ann');
    const b = stack.addUser('ben');
    const ra = await sequential(20, () => get(stack, ME, a.token));
    assert.deepEqual(byStatus(ra), { 200: 20 }, 'user A: 20 admitted');
    assertLimited(await get(stack, ME, a.token));

    // same client address (127.0.0.1), another user: a fresh bucket
    const rb = await get(stack, ME, b.token);
    assert.equal(rb.status, 200, rb.text);
    assert.equal(rb.json.data.name, 'ben');
    assert.equal(rateHeaders(rb, { limit: 20, policy: '20;w=60, 1000;w=3600' }).remaining, 19);
    // and A is still limited after B's request
    assertLimited(await get(stack, ME, a.token));

    // the per-IP bucket of unauthenticated REST routes is a third one: A's
    // exhaustion does not touch it
    const rf = await post(stack, REFRESH, { refreshToken: b.refreshToken });
    assert.equal(rf.status, 200, rf.text);
    assert.equal(rateHeaders(rf, { limit: 20, policy: '20;w=60, 1000;w=3600' }).remaining, 19);
  });
});

describe('X-Forwarded-For', () => {
  const spoofs = [
    { 'X-Forwarded-For': '203.0.113.7' },
    { 'X-Forwarded-For': '198.51.100.1, 203.0.113.9' },
    { 'X-Forwarded-For': '::1' },
    { 'X-Forwarded-For': 'unknown' },
    { 'X-Real-IP': '203.0.113.8' },
    { Forwarded: 'for=203.0.113.10' },
    { 'True-Client-IP': '203.0.113.11', 'CF-Connecting-IP': '203.0.113.12' },
  ];

  test('a spoofed X-Forwarded-For changes nothing by default', async () => {
    const stack = await stackWith({}); // default: 10 per 15 min per IP, trust_forwarded_for off
    const first = await sequential(10, (i) =>
      // each request claims to come from somewhere else: still one bucket
      post(stack, PAIR_REQUEST, { deviceName: `d${i}` }, { 'X-Forwarded-For': `192.0.2.${i + 1}` }),
    );
    assert.deepEqual(byStatus(first), { 201: 10 }, 'the first 10 are admitted');
    first.forEach((r, i) =>
      assert.equal(rateHeaders(r, { limit: 10, policy: '10;w=900' }).remaining, 9 - i, `remaining after request ${i + 1}`),
    );
    assertLimited(await post(stack, PAIR_REQUEST, { deviceName: 'plain' }));
    for (const h of spoofs) {
      const r = await post(stack, PAIR_REQUEST, { deviceName: 'spoof' }, h);
      assertLimited(r);
      rateHeaders(r, { limit: 10, policy: '10;w=900' });
    }
    // completing with a (guessed) pairing code shares the same per-IP bucket
    for (const h of [{}, ...spoofs]) {
      assertLimited(await post(stack, PAIR_COMPLETE, { pairingCode: 'ABCDEF' }, h));
    }
  });

  test('with trust_forwarded_for = true the last hop is the client', async () => {
    const stack = await stackWith({ trust_forwarded_for: 'true', rate_pairing_per_15min: 3 });
    const send = (xff) => post(stack, PAIR_REQUEST, { deviceName: 'x' }, xff === undefined ? {} : { 'X-Forwarded-For': xff });
    // exhaust 203.0.113.1, named as the last hop behind a client-supplied first one
    const r1 = await sequential(3, (i) => send(`10.0.0.${i + 1}, 203.0.113.1`));
    assert.deepEqual(byStatus(r1), { 201: 3 });
    assertLimited(await send('203.0.113.1'));
    assertLimited(await send('198.51.100.77,203.0.113.1'));
    assertLimited(await send('198.51.100.77, 203.0.113.1'));
    // a different last hop is a different client, whatever comes before it
    const other = await send('203.0.113.1, 203.0.113.2');
    assert.equal(other.status, 201, other.text);
    assert.equal(rateHeaders(other, { limit: 3, policy: '3;w=900' }).remaining, 2);
    // no header: the address nginx saw (127.0.0.1), its own fresh bucket
    const direct = await send(undefined);
    assert.equal(direct.status, 201, direct.text);
    assert.equal(rateHeaders(direct, { limit: 3, policy: '3;w=900' }).remaining, 2);
    // IPv6 clients are keyed by their /64 (one host owns a whole /64)
    const v6 = await sequential(3, (i) => send(`2001:db8:1:2::${i + 1}`));
    assert.deepEqual(byStatus(v6), { 201: 3 });
    assertLimited(await send('2001:db8:1:2:ffff:ffff:ffff:ffff'));
    assert.equal((await send('2001:db8:1:3::1')).status, 201, 'the next /64 is another client');
  });
});

describe('exact under concurrency', () => {
  // Three rounds per class: many parallel fetches (node's pool, one socket per
  // request in flight), then twice a raw burst (all sockets connected first,
  // every request written back to back), so both workers decide at once.
  const N = 200;
  const rounds = (label, fetchAll, rawAll) => [
    [`${label}, ${N} parallel fetches`, fetchAll],
    [`${label}, ${N} sockets written at once`, rawAll],
    [`${label}, ${N} sockets written at once (again)`, rawAll],
  ];

  test(`${N} concurrent requests of one user across both workers: exactly the limit admitted`, async () => {
    const LIMIT = 20;
    const policy = `${LIMIT};w=60, 1000;w=3600`;
    const stack = await stackWith({ rate_rest_per_min: LIMIT, fcgi_workers: 2, log_level: 'debug' });
    assert.equal(stack.workerPids().length, 2, 'two workers');
    let n = 0;
    for (const [label, send] of rounds(
      'one user',
      (u) => Promise.all(Array.from({ length: N }, () => get(stack, ME, u.token))),
      (u) => rawBurst(stack, Array.from({ length: N }, () => ({ path: ME, headers: bearer(u.token) }))),
    )) {
      const u = stack.addUser(`crowd${++n}`); // a fresh bucket per round
      const t0 = Date.now();
      const res = await send(u);
      const elapsed = Date.now() - t0;
      const counts = byStatus(res);
      const admitted = counts[200] || 0;
      // GCRA refills one request every 3 s: a burst that took longer than that
      // may rightly admit one more per 3 s (a burst takes ~0.2 s)
      const bound = LIMIT + Math.floor(elapsed / 3000);
      assert.ok(
        admitted >= LIMIT && admitted <= bound,
        `${label}: admitted ${admitted} in ${elapsed} ms, expected ${LIMIT}${bound > LIMIT ? `..${bound}` : ''} (${JSON.stringify(counts)})`,
      );
      assert.equal(admitted + (counts[429] || 0), N, `${label}: only 200 and 429: ${JSON.stringify(counts)}`);
      for (const r of res) {
        if (r.status === 429) assertLimited(r);
        rateHeaders(r, { limit: LIMIT, policy });
      }
      if (admitted === LIMIT) {
        // every Remaining value LIMIT-1..0 was handed out exactly once
        const remaining = res.filter((r) => r.status === 200).map((r) => Number(r.headers.get('x-ratelimit-remaining')));
        assert.deepEqual(
          remaining.sort((a, b) => a - b),
          Array.from({ length: LIMIT }, (_, i) => i),
          `${label}: each Remaining value once`,
        );
      }
    }
    const pids = servingPids(stack, ME);
    assert.ok(pids.size >= 2, `both workers served the bursts (pids ${[...pids].join(', ')})`);
  });

  test('a larger burst, five rounds: 400 sockets at once, exactly 100 admitted each time', async () => {
    // 100 per hour binds (one refill per 36 s): the admitted part of the burst
    // is long enough to be spread over both workers, where a lost update
    // between two processes would show as more than 100
    const LIMIT = 100;
    const stack = await stackWith({ rate_rest_per_min: 1000, rate_rest_per_hour: LIMIT, fcgi_workers: 2 });
    for (let round = 1; round <= 5; round++) {
      const u = stack.addUser(`big${round}`);
      const res = await rawBurst(stack, Array.from({ length: 4 * LIMIT }, () => ({ path: ME, headers: bearer(u.token) })));
      assert.deepEqual(byStatus(res), { 200: LIMIT, 429: 3 * LIMIT }, `round ${round}`);
    }
  });

  test('several users at once: each gets exactly its own limit', async () => {
    const LIMIT = 20;
    // a small hourly limit binds: one refill per 3 min, so timing cannot add any
    const stack = await stackWith({ rate_rest_per_min: 1000, rate_rest_per_hour: LIMIT, fcgi_workers: 2 });
    const users = ['u1', 'u2', 'u3', 'u4', 'u5'].map((name) => stack.addUser(name));
    const reqs = [];
    for (let i = 0; i < 60; i++) for (const u of users) reqs.push({ u, path: ME, headers: bearer(u.token) });
    const viaFetch = await Promise.all(reqs.slice(0, 150).map((q) => get(stack, ME, q.u.token)));
    const viaRaw = await rawBurst(stack, reqs.slice(150));
    const res = [...viaFetch, ...viaRaw];
    for (const u of users) {
      const counts = byStatus(res.filter((_, i) => reqs[i].u === u));
      assert.deepEqual(counts, { 200: LIMIT, 429: 60 - LIMIT }, `user ${u.userId}`);
    }
  });

  const pairingJobs = (ip) =>
    Array.from({ length: N }, (_, i) => {
      // both pairing endpoints draw from the one per-IP bucket
      const headers = { 'X-Forwarded-For': ip === undefined ? `192.0.2.${i % 250}` : ip };
      return i % 4 === 3
        ? { method: 'POST', path: PAIR_COMPLETE, headers, body: { pairingCode: 'ZZZZZZ' } }
        : { method: 'POST', path: PAIR_REQUEST, headers, body: { deviceName: `c${i}` } };
    });
  const fetchJobs = (stack, jobs) => Promise.all(jobs.map((j) => post(stack, j.path, j.body, j.headers)));

  function assertPairingExact(label, res, limit) {
    const admitted = res.filter((r) => r.status !== 429);
    assert.equal(admitted.length, limit, `${label}: admitted ${admitted.length}: ${JSON.stringify(byStatus(res))}`);
    for (const r of admitted) {
      // pair/request → 201; a wrong code → 400 (invalid_code), after the limiter admitted it
      assert.ok(r.status === 201 || r.status === 400, `${label}: admitted answer ${r.status}: ${r.text.slice(0, 200)}`);
      rateHeaders(r, { limit, policy: `${limit};w=900` });
    }
    for (const r of res.filter((x) => x.status === 429)) {
      assertLimited(r);
      assert.equal(rateHeaders(r, { limit, policy: `${limit};w=900` }).remaining, 0);
    }
  }

  test(`${N} concurrent pairing requests from one IP: exactly the limit admitted`, async () => {
    // default config: 10 per 15 min per IP, X-Forwarded-For not trusted (so the
    // varying spoofed values must not split the bucket)
    const stack = await stackWith({ fcgi_workers: 2, log_level: 'debug' });
    assertPairingExact('spoofed X-Forwarded-For, raw burst', await rawBurst(stack, pairingJobs()), 10);
    const more = await fetchJobs(stack, pairingJobs());
    assert.deepEqual(byStatus(more), { 429: N }, 'the bucket stays empty for parallel fetches');
    const pids = new Set([...servingPids(stack, PAIR_REQUEST), ...servingPids(stack, PAIR_COMPLETE)]);
    assert.ok(pids.size >= 2, `both workers served the bursts (pids ${[...pids].join(', ')})`);
  });

  test(`${N} concurrent pairing requests per trusted client IP, three rounds: exactly the limit each`, async () => {
    const stack = await stackWith({ fcgi_workers: 2, trust_forwarded_for: 'true' });
    let k = 0;
    for (const [label, send] of rounds(
      'pairing',
      (ip) => fetchJobs(stack, pairingJobs(ip)),
      (ip) => rawBurst(stack, pairingJobs(ip)),
    )) {
      const ip = `203.0.113.${++k}`; // a fresh client (bucket) per round
      assertPairingExact(`${label} from ${ip}`, await send(ip), 10);
    }
  });
});

describe('headers', () => {
  test('present and consistent on every limited response; Remaining counts down; 429 carries Retry-After', async () => {
    const stack = await stackWith({ rate_rest_per_min: 20 });
    const u = stack.addUser('hdr');
    const policy = '20;w=60, 1000;w=3600';
    const t0 = Date.now();
    let prevReset = 0;
    for (let i = 0; i < 20; i++) {
      const r = await get(stack, ME, u.token);
      assert.equal(r.status, 200, r.text);
      const h = rateHeaders(r, { limit: 20, policy });
      assert.equal(h.remaining, 19 - i, `Remaining after request ${i + 1}`);
      // the bucket is full again after (i+1) emission intervals of 3 s, less the time spent
      const spent = Math.ceil((Date.now() - t0) / 1000);
      assert.ok(h.reset <= 3 * (i + 1) && h.reset >= 3 * (i + 1) - spent - 1, `Reset ${h.reset} after ${i + 1} requests`);
      assert.ok(h.reset >= prevReset, 'Reset never decreases while requests are admitted back to back');
      prevReset = h.reset;
      assert.equal(r.headers.get('retry-after'), null, 'no Retry-After on an admitted request');
    }
    const denied = await get(stack, ME, u.token);
    const ra = assertLimited(denied);
    const h = rateHeaders(denied, { limit: 20, policy });
    assert.equal(h.remaining, 0, 'Remaining 0 on a 429');
    assert.ok(ra <= 3, `Retry-After ${ra} at most one emission interval (3 s)`);
    assert.ok(h.reset >= ra, `Reset ${h.reset} >= Retry-After ${ra}`);
    assert.match(denied.json.error.message, new RegExp(`${ra} s`));

    // an unauthenticated REST route (per IP) carries them too, also when the
    // request is then refused for its body
    const bad = await post(stack, REFRESH, { refreshToken: 'nope' });
    assert.ok(bad.status === 400 || bad.status === 401, `refresh with junk: ${bad.status}`);
    assert.equal(rateHeaders(bad, { limit: 20, policy }).remaining, 19);
    // and the pairing class has its own policy
    const pr = await post(stack, PAIR_REQUEST, { deviceName: 'hdr' });
    assert.equal(pr.status, 201, pr.text);
    assert.equal(rateHeaders(pr, { limit: 10, policy: '10;w=900' }).remaining, 9);
  });
});

describe('Retry-After', () => {
  test('is not earlier than when a request would succeed (and not a second later)', async () => {
    // 30/min: one request every 2 s
    const stack = await stackWith({ rate_rest_per_min: 30 });
    const u = stack.addUser('patient');
    // exhaust in one concurrent burst, so the first refill is nearly a whole
    // interval away (the early probe below has room even on a slow machine)
    const first = await Promise.all(Array.from({ length: 30 }, () => get(stack, ME, u.token)));
    assert.deepEqual(byStatus(first), { 200: 30 });
    for (let round = 1; round <= 2; round++) {
      const sentAt = Date.now();
      const denied = await get(stack, ME, u.token);
      const recvAt = Date.now();
      const ra = assertLimited(denied);
      assert.ok(ra >= 1 && ra <= 2, `Retry-After ${ra} within one emission interval (2 s)`);
      if (ra >= 2) {
        // Retry-After is rounded up: the true wait is in (ra - 1, ra] from the
        // decision, which came after sentAt; a request arriving before
        // sentAt + ra - 1 must still be refused (sent 250 ms before that, to
        // leave room for a slow round trip)
        await sleep(Math.max(0, sentAt + (ra - 1) * 1000 - 250 - Date.now()));
        const early = await get(stack, ME, u.token);
        assertLimited(early);
      }
      // waiting Retry-After (counted from when the 429 arrived) is enough
      await sleep(Math.max(0, recvAt + ra * 1000 + 20 - Date.now()));
      const ok = await get(stack, ME, u.token);
      assert.equal(ok.status, 200, `after Retry-After ${ra} s (round ${round}): ${ok.status} ${ok.text.slice(0, 200)}`);
      assert.equal(rateHeaders(ok, { limit: 30, policy: '30;w=60, 1000;w=3600' }).remaining, 0);
    }
  });
});

describe('persistence', () => {
  test('the limit survives a responder restart', async () => {
    // a small hourly limit binds (one refill per 3 min), so the seconds a
    // restart takes cannot refill the bucket
    const stack = await stackWith({ rate_rest_per_min: 1000, rate_rest_per_hour: 20, rate_pairing_per_15min: 2 });
    const u = stack.addUser('durable');
    assert.deepEqual(byStatus(await sequential(20, () => get(stack, ME, u.token))), { 200: 20 });
    assertLimited(await get(stack, ME, u.token));
    assert.deepEqual(byStatus(await sequential(2, () => post(stack, PAIR_REQUEST, { deviceName: 'p' }))), { 201: 2 });
    assertLimited(await post(stack, PAIR_REQUEST, { deviceName: 'p' }));

    const before = stack.workerPids();
    await stack.restartFcgi();
    assert.notDeepEqual(stack.workerPids(), before, 'new worker processes');
    const r = await get(stack, ME, u.token);
    assertLimited(r);
    assert.equal(rateHeaders(r, { limit: 20, policy: '1000;w=60, 20;w=3600' }).remaining, 0);
    assertLimited(await post(stack, PAIR_REQUEST, { deviceName: 'p' }));
  });

  test('…and a lost shared-memory table (reboot): buckets come back from SQLite', async () => {
    const stack = await stackWith({ rate_rest_per_min: 1000, rate_rest_per_hour: 20, rate_pairing_per_15min: 2 });
    const u = stack.addUser('rebooted');
    const fresh = stack.addUser('fresh');
    assert.deepEqual(byStatus(await sequential(20, () => get(stack, ME, u.token))), { 200: 20 });
    assertLimited(await get(stack, ME, u.token));
    // part of another user's bucket is used: it must come back as used, not full
    assert.deepEqual(byStatus(await sequential(5, () => get(stack, ME, fresh.token))), { 200: 5 });
    assert.deepEqual(byStatus(await sequential(2, () => post(stack, PAIR_REQUEST, { deviceName: 'p' }))), { 201: 2 });

    // stop the responder (workers save on the way out), drop the table as a
    // reboot of a tmpfs /run would, start again
    await stack.endProcess(stack.fcgi);
    fs.rmSync(stack.config.ratelimit_shm, { force: true });
    await stack.startFcgi();
    assertLimited(await get(stack, ME, u.token));
    assertLimited(await post(stack, PAIR_REQUEST, { deviceName: 'p' }));
    const f = await get(stack, ME, fresh.token);
    assert.equal(f.status, 200, f.text);
    assert.equal(rateHeaders(f, { limit: 20, policy: '1000;w=60, 20;w=3600' }).remaining, 14);
  });
});

describe('what is not limited', () => {
  test('probes are never limited and carry no rate-limit headers', async () => {
    const stack = await stackWith({ rate_rest_per_min: 1, rate_rest_per_hour: 1, rate_pairing_per_15min: 1 });
    const owner = stack.addUser('root', 'owner');
    for (let i = 0; i < 100; i++) {
      const r = await stack.request('/health');
      assert.equal(r.status, 200, `GET /health #${i + 1}: ${r.text.slice(0, 200)}`);
      assertNoRateHeaders(r, `GET /health #${i + 1}`);
    }
    const burst = await Promise.all(Array.from({ length: 100 }, () => stack.request('/health')));
    assert.deepEqual(byStatus(burst), { 200: 100 });
    burst.forEach((r) => assertNoRateHeaders(r, 'concurrent GET /health'));
    for (let i = 0; i < 20; i++) {
      const r = await stack.request('/ready');
      assert.equal(r.status, 200, r.text);
      assertNoRateHeaders(r, 'GET /ready');
      const d = await get(stack, '/health/detailed', owner.token);
      assert.equal(d.status, 200, d.text);
      assertNoRateHeaders(d, 'GET /health/detailed');
    }
    // …while limiting is on: the second authenticated REST request is refused
    assert.equal((await get(stack, ME, owner.token)).status, 200);
    assertLimited(await get(stack, ME, owner.token));
    // and the probes still answer after that
    assert.equal((await stack.request('/health')).status, 200);
  });

  test('ratelimit_enabled = false: no headers, no 429', async () => {
    const stack = await stackWith({
      ratelimit_enabled: 'false',
      rate_rest_per_min: 1,
      rate_rest_per_hour: 1,
      rate_pairing_per_15min: 1,
    });
    const u = stack.addUser('free');
    const seq = await sequential(30, () => get(stack, ME, u.token));
    const conc = await Promise.all(Array.from({ length: 50 }, () => get(stack, ME, u.token)));
    for (const r of [...seq, ...conc]) {
      assert.equal(r.status, 200, r.text.slice(0, 200));
      assertNoRateHeaders(r, 'GET /auth/me');
    }
    const pairs = await sequential(15, (i) => post(stack, PAIR_REQUEST, { deviceName: `f${i}` }));
    for (const r of pairs) {
      assert.equal(r.status, 201, r.text.slice(0, 200));
      assertNoRateHeaders(r, 'POST /pair/request');
    }
    const codes = await sequential(5, () => post(stack, PAIR_COMPLETE, { pairingCode: 'ABCDEF' }));
    for (const r of codes) {
      assert.notEqual(r.status, 429);
      assertNoRateHeaders(r, 'POST /pair/complete');
    }
    const rf = await sequential(5, () => post(stack, REFRESH, { refreshToken: 'nope' }));
    for (const r of rf) {
      assert.notEqual(r.status, 429);
      assertNoRateHeaders(r, 'POST /auth/refresh');
    }
  });
});
