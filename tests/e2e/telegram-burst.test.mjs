// Telegram webhook under concurrent deliveries, in both telegram_inbox_sync
// modes: the inserts of the two responder workers join their group commits
// (one shared transaction and, with `full`, one WAL fsync per epoll batch),
// every delivery is answered 200 promptly (no worker may wait on another's
// lock for seconds), a redelivery inside the same burst is stored once and
// acknowledged as a duplicate, and every acknowledged update is in the inbox
// after kill -9 of nginx and every responder process right after the last
// answer.
import assert from 'node:assert/strict';
import http from 'node:http';
import { after, before, describe, test } from 'node:test';

import { childPids } from './lib/stack.mjs';
import { startTelegramStack } from './lib/telegram.mjs';

const BURSTS = 6;
const PER_BURST = 120; // fresh update_ids per burst
const REDELIVERED = 20; // ... and this many of them sent twice in the same burst

function update(id) {
  return JSON.stringify({
    update_id: id,
    message: { message_id: 1, from: { id: 1001, is_bot: false, first_name: 'b' }, chat: { id: 1001, type: 'private' }, date: 1, text: 'burst' },
  });
}

/** One delivery over a kept connection: { id, status, ms, duplicate }. */
function deliver(t, agent, id) {
  const body = update(id);
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(
      t.stack.url('/telegram/webhook'),
      {
        method: 'POST',
        agent,
        headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Telegram-Bot-Api-Secret-Token': t.secret },
      },
      (res) => {
        let text = '';
        res.setEncoding('utf8');
        res.on('data', (d) => (text += d));
        res.on('end', () => {
          const ms = Number(process.hrtime.bigint() - t0) / 1e6;
          let duplicate = false;
          try {
            duplicate = JSON.parse(text).duplicate === true;
          } catch {
            /* an error body */
          }
          resolve({ id, status: res.statusCode, ms, duplicate });
        });
      },
    );
    req.on('error', reject);
    req.end(body);
  });
}

for (const sync of ['full', 'normal']) {
  describe(`telegram_inbox_sync = ${sync}`, () => {
    let t;
    before(async () => {
      t = await startTelegramStack({ worker: false, config: { telegram_inbox_sync: sync } });
    });
    after(async () => {
      await t?.close();
    });

    test('bursts of concurrent deliveries: all 200, duplicates once, nothing acknowledged is lost to kill -9', async () => {
      assert.equal(t.stack.workerPids().length, 2, 'two responder workers');
      const agent = new http.Agent({ keepAlive: true, maxSockets: PER_BURST + REDELIVERED });
      const acked = new Map(); // update_id -> answers that were not duplicates
      let slowest = 0;
      try {
        for (let b = 0; b < BURSTS; b++) {
          const base = 7_000_000_000 + b * 1000;
          const ids = Array.from({ length: PER_BURST }, (_, i) => base + i);
          const sends = [...ids, ...ids.slice(0, REDELIVERED)];
          const out = await Promise.all(sends.map((id) => deliver(t, agent, id)));
          for (const r of out) {
            assert.equal(r.status, 200, `update ${r.id}: ${r.status}`);
            slowest = Math.max(slowest, r.ms);
            acked.set(r.id, (acked.get(r.id) || 0) + (r.duplicate ? 0 : 1));
          }
        }
      } finally {
        agent.destroy();
      }
      // each update stored exactly once, the redelivery answered as a duplicate
      for (const [id, stored] of acked) assert.equal(stored, 1, `update ${id} acknowledged as new ${stored} times`);
      // generous for a loaded CI machine, far below the 5 s of a writer stuck on a lock
      assert.ok(slowest < 3000, `slowest acknowledgement ${slowest.toFixed(1)} ms`);

      // kill -9 of nginx and every responder process, at once, right after the last answer
      const victims = [t.stack.nginx, t.stack.fcgi];
      // masters first, so that neither starts a new worker in between
      const pids = [t.stack.fcgi.pid, t.stack.nginx.pid, ...t.stack.workerPids(), ...childPids(t.stack.nginx.pid)];
      for (const pid of pids) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
      await Promise.all(victims.map((c) => c.exited));
      const rows = Number(t.sql(`SELECT count(*) FROM telegram_inbox WHERE update_id >= 7000000000 AND status = 'new'`));
      assert.equal(rows, acked.size, `${acked.size} acknowledged, ${rows} in the inbox after kill -9`);
    });
  });
}
