// Database faults (issue 2 "Faults"): an unwritable or locked database makes
// GET /ready answer 503 with the database check marked, while GET /health
// (liveness, no I/O) stays 200; /ready recovers when the lock goes away.
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';

import { NOBODY, isRoot, startStack, waitFor } from './lib/stack.mjs';

function sqlite(db, sql) {
  const r = spawnSync('sqlite3', ['-batch', db, sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`sqlite3 ${sql}: ${r.stderr}`);
  return r.stdout;
}

/**
 * Make the database (and its directory) impossible for the responder to
 * write. As root the responder runs as nobody (setpriv, see stack.mjs) and
 * the files stay root's; as another user the modes are lowered instead.
 */
function makeUnwritable(stack) {
  for (const f of [stack.dbPath, `${stack.dbPath}-wal`, `${stack.dbPath}-shm`]) {
    if (fs.existsSync(f)) fs.chmodSync(f, 0o444);
  }
  fs.chmodSync(stack.dataDir, isRoot ? 0o755 : 0o555);
  if (isRoot) {
    // nobody must still be able to read the secret and write its socket
    fs.chownSync(stack.secretFile, NOBODY, NOBODY);
  }
}

async function assertReadyFailsOnDatabase(stack) {
  const ready = await stack.request('/ready');
  assert.equal(ready.status, 503, `/ready: ${ready.text}`);
  assert.equal(ready.json.ready, false);
  assert.ok(ready.json.checks && ready.json.checks.database, ready.text);
  assert.notEqual(ready.json.checks.database, 'ok', ready.text);
  assert.ok(ready.headers.get('x-request-id'));
  const health = await stack.request('/health');
  assert.equal(health.status, 200, `/health: ${health.text}`);
  assert.equal(health.json.status, 'ok');
}

test('database file exists but is unwritable (never migrated): /ready 503, /health 200', async (t) => {
  const stack = await startStack({
    unprivileged: true,
    prepare: (s) => {
      sqlite(s.dbPath, 'PRAGMA user_version;'); // creates an empty database file
      makeUnwritable(s);
    },
  });
  t.after(() => stack.stop());
  await assertReadyFailsOnDatabase(stack);
  await assertReadyFailsOnDatabase(stack); // and stays so, without crashing
});

test('migrated database made unwritable: /ready 503, /health 200', async (t) => {
  // first run: the responder creates and migrates the database
  const first = await startStack();
  const ready = await first.request('/ready');
  assert.equal(ready.status, 200, ready.text);
  const dbBytes = fs.readFileSync(first.dbPath);
  for (const ext of ['-wal', '-shm']) {
    // a clean stop checkpoints; copy whatever is there
    if (fs.existsSync(first.dbPath + ext)) fs.copyFileSync(first.dbPath + ext, `${first.dir}/keep${ext}`);
  }
  await first.stop();

  const stack = await startStack({
    unprivileged: true,
    prepare: (s) => {
      fs.writeFileSync(s.dbPath, dbBytes);
      makeUnwritable(s);
    },
  });
  t.after(() => stack.stop());
  await assertReadyFailsOnDatabase(stack);
});

test('database locked by another process: /ready 503 within ~1 s, /health 200, then recovers', async (t) => {
  const stack = await startStack();
  t.after(() => stack.stop());
  assert.equal((await stack.request('/ready')).status, 200);

  // A sqlite3 shell holding a write lock, its stdin kept open.
  const holder = spawn('sqlite3', ['-batch', stack.dbPath], { stdio: ['pipe', 'ignore', 'pipe'] });
  let holderErr = '';
  holder.stderr.on('data', (d) => {
    holderErr += d;
  });
  const holderExit = new Promise((resolve) => holder.on('exit', resolve));
  t.after(() => {
    if (holder.exitCode === null) holder.kill('SIGKILL');
  });
  holder.stdin.write('BEGIN EXCLUSIVE;\n');

  // wait until the lock is really held: a second writer must be refused at once
  await waitFor(
    () => {
      const r = spawnSync('sqlite3', ['-batch', '-cmd', '.timeout 0', stack.dbPath, 'BEGIN IMMEDIATE; ROLLBACK;'], {
        encoding: 'utf8',
      });
      return r.status !== 0 && /locked|busy/i.test(r.stderr);
    },
    { timeoutMs: 5000, what: `the sqlite3 shell to hold the lock (${holderErr})` },
  );

  const t0 = Date.now();
  const ready = await stack.request('/ready');
  const took = Date.now() - t0;
  assert.equal(ready.status, 503, `/ready while locked: ${ready.text}`);
  assert.notEqual(ready.json.checks.database, 'ok');
  assert.ok(took < 1500, `/ready took ${took} ms while the database was locked`);
  const health = await stack.request('/health');
  assert.equal(health.status, 200);

  holder.stdin.end('ROLLBACK;\n');
  await holderExit;
  await waitFor(
    async () => (await stack.request('/ready')).status === 200,
    { timeoutMs: 5000, intervalMs: 100, what: '/ready to recover after the lock is released' },
  );
});

test('database file deleted under a running responder: /health stays 200', async (t) => {
  const stack = await startStack();
  t.after(() => stack.stop());
  for (const f of fs.readdirSync(stack.dataDir)) {
    if (f.startsWith(path.basename(stack.dbPath))) fs.rmSync(path.join(stack.dataDir, f));
  }
  const health = await stack.request('/health');
  assert.equal(health.status, 200);
  const ready = await stack.request('/ready');
  assert.ok([200, 503].includes(ready.status), `/ready: ${ready.status} ${ready.text}`);
});
