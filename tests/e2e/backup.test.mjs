// meaoctl backup / restore (issue 9): a backup taken under write load (REST
// POST /api/v1/sessions in concurrent loops) passes PRAGMA integrity_check
// and holds every session acknowledged before the backup started; restore
// refuses while the gateway has the database open, then — gateway stopped —
// brings the database back to the backup (later writes gone, earlier ones
// served again). Bad input gets a clear error and a non-zero exit.

import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { ctlBin, startStack } from './lib/stack.mjs';

let stack;
let owner;

function runCtl(args) {
  return new Promise((resolve) => {
    const child = spawn(ctlBin, ['-c', stack.configFile, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    child.on('close', (status) => resolve({ status, stdout, stderr }));
  });
}

async function createSession() {
  const r = await fetch(stack.url('/api/v1/sessions'), {
    method: 'POST',
    headers: { Authorization: `Bearer ${owner.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'rest' }),
  });
  const body = await r.json();
  assert.equal(r.status, 201, JSON.stringify(body));
  return body.data.id;
}

/** Session ids stored in a database file, read with the sqlite3 shell. */
function sessionIds(file) {
  const r = spawnSync('sqlite3', ['-readonly', file, 'SELECT public_id FROM sessions;'], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return new Set(r.stdout.split('\n').filter(Boolean));
}

const haveSqlite = spawnSync('sh', ['-c', 'command -v sqlite3'], { stdio: 'ignore' }).status === 0;

before(async () => {
  stack = await startStack({ orchestrator: false, config: { ratelimit_enabled: 'false' } });
  owner = stack.addUser('owner', 'owner');
});

after(async () => {
  if (stack) await stack.stop();
});

test('backup under write load, restore refused while serving, restore after stop', async () => {
  const acked = []; // [id, time the 201 arrived]
  let stop = false;
  const loop = async () => {
    while (!stop) {
      const id = await createSession();
      acked.push([id, Date.now()]);
    }
  };
  const loops = Array.from({ length: 4 }, loop);
  await new Promise((r) => setTimeout(r, 700));

  const backupFile = path.join(stack.dir, 'backup.db');
  const startedAt = Date.now();
  const ackedBefore = acked.filter(([, t]) => t < startedAt).map(([id]) => id);
  const b = await runCtl(['backup', backupFile]);
  const endedAt = Date.now();
  await new Promise((r) => setTimeout(r, 300));
  stop = true;
  await Promise.all(loops);

  assert.equal(b.status, 0, b.stderr);
  assert.match(b.stderr, /integrity ok/);
  assert.equal(fs.statSync(backupFile).mode & 0o777, 0o600, 'a backup is private');
  assert.ok(ackedBefore.length > 20, `only ${ackedBefore.length} writes before the backup`);
  const ackedAfter = acked.filter(([, t]) => t > endedAt + 50).map(([id]) => id);
  assert.ok(ackedAfter.length > 0, 'writes went on after the backup');

  if (haveSqlite) {
    const ic = spawnSync('sqlite3', ['-readonly', backupFile, 'PRAGMA integrity_check;'], { encoding: 'utf8' });
    assert.equal(ic.stdout.trim(), 'ok');
    const inBackup = sessionIds(backupFile);
    const missing = ackedBefore.filter((id) => !inBackup.has(id));
    assert.deepEqual(missing, [], 'every acknowledged write before the backup is in it');
  }

  // the responder has the database open: restore refuses and changes nothing
  const busy = await runCtl(['restore', backupFile]);
  assert.equal(busy.status, 1, busy.stderr);
  assert.match(busy.stderr, /in use \(pid \d+\): stop meao-fcgi/);
  const still = await fetch(stack.url(`/api/v1/sessions/${ackedAfter[0]}`), {
    headers: { Authorization: `Bearer ${owner.token}` },
  });
  assert.equal(still.status, 200);

  // the documented procedure: stop, restore, start
  await stack.endProcess(stack.fcgi);
  const r = await runCtl(['restore', backupFile]);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /kept the current database as .*\.pre-restore-\d{8}T\d{6}Z/);
  assert.match(r.stderr, /integrity ok/);
  await stack.startFcgi();

  const get = async (id) => {
    const res = await fetch(stack.url(`/api/v1/sessions/${id}`), {
      headers: { Authorization: `Bearer ${owner.token}` },
    });
    await res.arrayBuffer();
    return res.status;
  };
  const statuses = [];
  for (let i = 0; i < ackedBefore.length; i += 16) {
    statuses.push(...(await Promise.all(ackedBefore.slice(i, i + 16).map(get))));
  }
  assert.deepEqual([...new Set(statuses)], [200], 'every write before the backup is served after restore');
  assert.equal(await get(ackedAfter[ackedAfter.length - 1]), 404, 'a write after the backup is gone');
});

test('bad input: clear errors, nothing overwritten', async () => {
  const existing = path.join(stack.dir, 'exists.db');
  fs.writeFileSync(existing, 'keep me');
  const over = await runCtl(['backup', existing]);
  assert.equal(over.status, 1);
  assert.match(over.stderr, /already exists/);
  assert.equal(fs.readFileSync(existing, 'utf8'), 'keep me');

  const none = await runCtl(['backup']);
  assert.equal(none.status, 2);
  assert.match(none.stderr, /backup needs one PATH/);

  const notDb = await runCtl(['restore', existing]);
  assert.equal(notDb.status, 1);
  assert.match(notDb.stderr, /not a usable backup/);

  const missing = await runCtl(['restore', path.join(stack.dir, 'nope.db')]);
  assert.equal(missing.status, 1);
  assert.match(missing.stderr, /not a usable backup/);

  const noDir = await runCtl(['backup', path.join(stack.dir, 'no/such/dir/b.db')]);
  assert.equal(noDir.status, 3);
  assert.match(noDir.stderr, /cannot create/);
});
