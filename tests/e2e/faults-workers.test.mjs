// Process faults of the responder (issue 2 "Faults"): a worker killed with -9
// is replaced and requests keep succeeding; SIGTERM to the master lets an
// in-flight request finish, then the master exits.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { assertHealthy, pidAlive, startStack, waitFor, within } from './lib/stack.mjs';

test('kill -9 of a worker: the next 20 requests succeed and a new worker appears', async (t) => {
  const stack = await startStack({ config: { fcgi_workers: '2' } });
  t.after(() => stack.stop());

  const before = await waitFor(() => (stack.workerPids().length >= 1 ? stack.workerPids() : null), {
    what: 'meao-fcgi workers',
  });
  const victim = before[0];
  process.kill(victim, 'SIGKILL');
  await waitFor(() => !pidAlive(victim) || !stack.workerPids().includes(victim), {
    what: `worker ${victim} to die`,
  });

  for (let i = 0; i < 20; i++) {
    const r = await stack.request(i % 2 ? '/ready' : '/health');
    assert.equal(r.status, 200, `request ${i + 1} after the kill: ${r.status} ${r.text.slice(0, 200)}`);
  }

  const after = await waitFor(
    () => {
      const now = stack.workerPids();
      return now.length >= before.length && !now.includes(victim) ? now : null;
    },
    { timeoutMs: 5000, what: 'the master to start a replacement worker' },
  );
  assert.ok(after.some((p) => !before.includes(p)), `new worker among ${after} (before: ${before})`);
  assert.ok(pidAlive(stack.masterPid), 'master still running');
  await assertHealthy(assert, stack);
});

test('kill -9 of every worker, twice: the master keeps restarting them', async (t) => {
  const stack = await startStack({ config: { fcgi_workers: '2' } });
  t.after(() => stack.stop());
  for (let round = 0; round < 2; round++) {
    const pids = await waitFor(() => (stack.workerPids().length >= 2 ? stack.workerPids() : null), {
      timeoutMs: 5000,
      what: 'two workers',
    });
    for (const p of pids) process.kill(p, 'SIGKILL');
    await waitFor(
      async () => {
        const r = await stack.request('/health');
        return r.status === 200;
      },
      { timeoutMs: 5000, what: `GET /health after killing all workers (round ${round + 1})` },
    );
  }
  for (let i = 0; i < 20; i++) await assertHealthy(assert, stack);
});

test('SIGTERM to the master with a slow request in flight: it completes with 200, then the master exits', async (t) => {
  const stack = await startStack({ config: { fcgi_workers: '2' } });
  t.after(() => stack.stop());

  const probe = await stack.request('/__debug/sleep?ms=1');
  assert.equal(probe.status, 200, `GET /__debug/sleep (debug_routes = true): ${probe.text}`);

  const workers = stack.workerPids();
  const started = Date.now();
  const slow = stack.request('/__debug/sleep?ms=1500', { headers: { 'X-Request-ID': 'slow-1' } });
  await sleep(400); // the request is now inside a worker
  process.kill(stack.masterPid, 'SIGTERM');

  const r = await slow;
  assert.equal(r.status, 200, `in-flight request after SIGTERM: ${r.text.slice(0, 200)}`);
  assert.equal(r.json.requestId, 'slow-1');
  assert.ok(Date.now() - started >= 1400, 'the slow request really slept');

  const exit = await within(stack.fcgi.exited, 10000);
  assert.ok(exit, 'master exited within 10 s of SIGTERM');
  assert.equal(exit.code, 0, `master exit status ${JSON.stringify(exit)}`);
  await waitFor(() => workers.every((p) => !pidAlive(p)), { timeoutMs: 5000, what: 'workers to exit' });

  // with the responder gone nginx answers the JSON 503 itself
  const gone = await stack.request('/health');
  assert.equal(gone.status, 503);
  assert.equal(gone.json.error.code, 'SERVICE_UNAVAILABLE');
});

test('SIGTERM to an idle master: prompt exit with status 0', async (t) => {
  const stack = await startStack();
  t.after(() => stack.stop());
  await assertHealthy(assert, stack); // leaves a kept-alive upstream connection open
  const t0 = Date.now();
  process.kill(stack.masterPid, 'SIGTERM');
  const exit = await within(stack.fcgi.exited, 10000);
  assert.ok(exit, 'master exited within 10 s');
  assert.equal(exit.code, 0, JSON.stringify(exit));
  assert.ok(Date.now() - t0 < 5000, `idle stop took ${Date.now() - t0} ms (kept connections must not hold it)`);
});
