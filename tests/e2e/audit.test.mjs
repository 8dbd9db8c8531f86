// meaoctl audit export / prune (issue 9): the audit trail leaves the box as
// JSON lines through the command line only (no HTTP route exposes it), with
// time bounds; retention deletes old rows and records that it did; bad input
// is a usage error (exit 2) and an existing output file is never overwritten.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { startStack } from './lib/stack.mjs';

let stack;
let owner;

before(async () => {
  stack = await startStack({ orchestrator: false, config: { audit_retention_days: '30' } });
  owner = stack.addUser('owner', 'owner');
});

after(async () => {
  if (stack) await stack.stop();
});

const lines = (text) =>
  text
    .split('\n')
    .filter(Boolean)
    .map((l) => JSON.parse(l));

test('export: JSON lines of the audit trail, bounded in time', async () => {
  const r = await fetch(stack.url('/api/v1/sessions'), {
    method: 'POST',
    headers: { Authorization: `Bearer ${owner.token}`, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel: 'rest' }),
  });
  assert.equal(r.status, 201);
  const requestId = r.headers.get('x-request-id');

  const all = stack.ctl(['audit', 'export', '--since', '1d', '--format', 'jsonl']);
  assert.equal(all.status, 0, all.stderr);
  const rows = lines(all.stdout);
  assert.ok(rows.length >= 2);
  for (const row of rows) {
    assert.deepEqual(Object.keys(row).sort(), ['action', 'actorUserId', 'at', 'detail', 'id', 'requestId', 'target']);
    assert.match(row.at, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
  }
  const create = rows.find((x) => x.action === 'user.create');
  assert.equal(create.target, 'owner');
  const viaRest = rows.find((x) => x.requestId === requestId);
  assert.ok(viaRest, 'the REST request left a row carrying its request id');
  assert.equal(viaRest.actorUserId, owner.userId);
  assert.doesNotMatch(all.stdout, /meao_at_|meao_rt_/, 'no token in the trail');
  assert.match(all.stderr, new RegExp(`exported ${rows.length} audit row`));

  const future = stack.ctl(['audit', 'export', '--since', '2999-01-01']);
  assert.equal(future.status, 0);
  assert.equal(future.stdout, '');
  const until = stack.ctl(['audit', 'export', '--since', '2000-01-01', '--until', '2000-01-02T00:00:00Z']);
  assert.equal(until.stdout, '');

  const out = path.join(stack.dir, 'audit.jsonl');
  const toFile = stack.ctl(['audit', 'export', '--since', '1d', '--output', out]);
  assert.equal(toFile.status, 0, toFile.stderr);
  assert.equal(fs.statSync(out).mode & 0o777, 0o600);
  assert.equal(lines(fs.readFileSync(out, 'utf8')).length, rows.length);
  const again = stack.ctl(['audit', 'export', '--since', '1d', '--output', out]);
  assert.equal(again.status, 1);
  assert.match(again.stderr, /cannot create/);

  // never over HTTP
  const http = await fetch(stack.url('/api/v1/audit'), { headers: { Authorization: `Bearer ${owner.token}` } });
  await http.arrayBuffer();
  assert.equal(http.status, 404);
});

test('export: bad input is a usage error', () => {
  for (const args of [
    ['audit', 'export'],
    ['audit', 'export', '--since', 'yesterday'],
    ['audit', 'export', '--since', '2026-02-30'],
    ['audit', 'export', '--since', '2026-11-01T25:00:00Z'],
    ['audit', 'export', '--since', '7d', '--format', 'csv'],
    ['audit', 'export', '--since', '7d', 'extra'],
    ['audit', 'frobnicate'],
    ['audit', 'prune', '--days', '0'],
  ]) {
    const r = stack.ctl(args);
    assert.equal(r.status, 2, `${args.join(' ')}: ${r.stderr}`);
    assert.match(r.stderr, /^meaoctl: /);
  }
});

test('prune: rows older than audit_retention_days go, the prune is itself audited', () => {
  const day = 86400000;
  const now = Date.now();
  const sql = `INSERT INTO audit(at_ms, action, target) VALUES (${now - 40 * day}, 'test.old', 'a'),
    (${now - 31 * day}, 'test.old', 'b'), (${now - 29 * day}, 'test.recent', 'c');`;
  const ins = spawnSync('sqlite3', [stack.dbPath, sql], { encoding: 'utf8' });
  assert.equal(ins.status, 0, ins.stderr);
  const r = stack.ctl(['audit', 'prune']);
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /pruned 2 audit row\(s\) older than 30 days/);
  const rows = lines(stack.ctl(['audit', 'export', '--since', '100d']).stdout);
  assert.ok(!rows.some((x) => x.action === 'test.old'));
  assert.ok(rows.some((x) => x.action === 'test.recent'));
  assert.match(rows.find((x) => x.action === 'audit.prune').detail, /^2 rows before /);
  const byDays = stack.ctl(['audit', 'prune', '--days', '1']);
  assert.equal(byDays.status, 0);
  assert.match(byDays.stderr, /pruned 1 audit row/);
});
