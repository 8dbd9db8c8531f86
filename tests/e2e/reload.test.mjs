// systemctl reload meao-fcgi (ExecReload=/bin/kill -USR2 $MAINPID, as
// deploy/systemd/meao-fcgi.service says): requests in flight when the reload
// arrives complete on the old workers, a fresh set of workers takes new
// requests at once, the old ones exit once idle, the master stays (same
// MAINPID), and a changed setting in the file applies to the new workers.

import fs from 'node:fs';
import path from 'node:path';
import { execFileSync } from 'node:child_process';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { pidAlive, repoDir, startStack, waitFor } from './lib/stack.mjs';

let stack;

before(async () => {
  stack = await startStack({ orchestrator: false, config: { fcgi_workers: '2' } });
});

after(async () => {
  if (stack) await stack.stop();
});

/** The unit file's ExecReload with $MAINPID filled in. */
function reloadCommand(mainPid) {
  const unit = fs.readFileSync(path.join(repoDir, 'deploy/systemd/meao-fcgi.service'), 'utf8');
  const line = unit.split('\n').find((l) => l.startsWith('ExecReload='));
  assert.ok(line, 'the unit has an ExecReload');
  return line.slice('ExecReload='.length).replace('$MAINPID', String(mainPid)).split(/\s+/);
}

test('a request in flight during a reload completes; new workers serve at once', async () => {
  const master = stack.masterPid;
  const oldWorkers = stack.workerPids().filter(pidAlive);
  assert.equal(oldWorkers.length, 2);

  // three slow requests in flight on the old workers
  const slow = Array.from({ length: 3 }, () =>
    fetch(stack.url('/__debug/sleep?ms=1500')).then(async (r) => ({ status: r.status, body: await r.json() })),
  );
  await new Promise((r) => setTimeout(r, 300));

  fs.appendFileSync(stack.configFile, 'log_level = debug\n');
  const [cmd, ...args] = reloadCommand(master);
  execFileSync(cmd, args);

  await waitFor(() => stack.workerPids().filter(pidAlive).some((p) => !oldWorkers.includes(p)), {
    timeoutMs: 5000,
    what: 'new workers',
  });
  // new requests are answered while the old workers still finish theirs
  const t0 = Date.now();
  const h = await fetch(stack.url('/health'));
  await h.arrayBuffer();
  assert.equal(h.status, 200);
  assert.ok(Date.now() - t0 < 1000, 'not queued behind the slow requests');

  for (const r of await Promise.all(slow)) {
    assert.equal(r.status, 200, JSON.stringify(r.body));
    assert.equal(r.body.data.sleptMs, 1500);
  }
  await waitFor(() => oldWorkers.every((p) => !pidAlive(p)), { timeoutMs: 10000, what: 'old workers to exit' });
  assert.ok(pidAlive(master), 'the master stays: systemd keeps the same MAINPID');
  assert.equal(stack.workerPids().filter(pidAlive).length, 2);
  // log_level = debug from the re-read file: 200s are logged now (info does not
  // log them). Asked once the old workers are gone: until then nginx may still
  // reuse a kept connection to an old worker, which keeps the old level.
  const again = await fetch(stack.url('/health'));
  await again.arrayBuffer();
  assert.equal(again.status, 200);
  await waitFor(() => /"event":"request".*"path":"\/health".*"status":200/.test(stack.readLog('fcgi')), {
    timeoutMs: 3000,
    what: 'a debug request line from a new worker',
  });
  assert.match(stack.readLog('fcgi'), /"event":"reload"/);
});
