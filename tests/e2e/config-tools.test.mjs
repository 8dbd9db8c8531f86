// Tools (from the orchestrator's registry) and the configuration: safe fields
// only, owner-only PATCH, validated, audited, persisted, and applied by every
// responder worker within about a second.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { spawnSync } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';

import { assertErrorEnvelope, startStack } from './lib/stack.mjs';

let stack;
let owner;
let bob;
let workspace;

before(async () => {
  workspace = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-ws-'));
  stack = await startStack({
    config: {
      workspace_root: workspace,
      rate_rest_per_min: 100000,
      rate_rest_per_hour: 1000000,
      rate_messages_per_min: 100000,
      provider_api_key: 'sk-e2e-must-never-show',
      provider_model: 'echo-model-1',
      fcgi_workers: 4,
      approval_timeout_ms: 3000,
    },
  });
  await stack.startOrchestrator();
  owner = stack.addUser('alice', 'owner');
  bob = stack.addUser('bob', 'user');
});
after(async () => {
  await stack?.stop();
  if (workspace) fs.rmSync(workspace, { recursive: true, force: true });
});

const auth = (t) => ({ Authorization: `Bearer ${t}` });
function call(method, p, token, body) {
  const init = { method, headers: auth(token) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = typeof body === 'string' ? body : JSON.stringify(body);
  }
  return stack.request(p, init);
}
function sql(statement) {
  const r = spawnSync('sqlite3', [stack.dbPath, statement], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return r.stdout.trim();
}

describe('tools', () => {
  test('list and get: name, description, input schema, policy, enabled', async () => {
    const r = await call('GET', '/api/v1/tools', bob.token);
    assert.equal(r.status, 200, r.text);
    const names = r.json.data.tools.map((t) => t.name).sort();
    assert.deepEqual(names, ['bash', 'read_file', 'write_file']);
    for (const t of r.json.data.tools) {
      assert.equal(typeof t.description, 'string');
      assert.equal(typeof t.inputSchema, 'object');
      assert.ok(['auto', 'ask', 'always'].includes(t.policy));
      assert.equal(typeof t.enabled, 'boolean');
    }
    const bash = await call('GET', '/api/v1/tools/bash', bob.token);
    assert.equal(bash.status, 200);
    assert.equal(bash.json.data.name, 'bash');
    assert.equal(bash.json.data.policy, 'always');
    for (const name of ['nope', 'x'.repeat(200), 'bash%20x']) {
      assertErrorEnvelope(assert, await call('GET', `/api/v1/tools/${name}`, bob.token), 404, 'NOT_FOUND');
    }
  });
});

describe('config', () => {
  test('GET shows safe fields only', async () => {
    const r = await call('GET', '/api/v1/config', bob.token);
    assert.equal(r.status, 200, r.text);
    const c = r.json.data;
    assert.equal(c.logLevel, 'info');
    assert.equal(c.limits.restPerMinute, 100000);
    assert.equal(c.limits.messagesPerMinute, 100000);
    assert.equal(c.limits.maxBodyBytes, 1048576);
    assert.deepEqual(c.tools.policies, { bash: 'always', read_file: 'auto', write_file: 'ask' });
    assert.deepEqual(c.provider, { name: 'echo', model: 'echo-model-1' });
    assert.doesNotMatch(r.text, /sk-e2e/);
    assert.doesNotMatch(r.text, /secret|apiKey|api_key/i);
    assert.ok(!r.text.includes(stack.dir), 'no paths');
    assert.ok(!r.text.includes(workspace), 'no paths');
    assert.doesNotMatch(r.text, /\.sock|\.db|\.key/);
  });

  test('PATCH is for owners, validated, and bad patches change nothing', async () => {
    assertErrorEnvelope(assert, await call('PATCH', '/api/v1/config', bob.token, { logLevel: 'debug' }), 403, 'AUTH_INSUFFICIENT_SCOPE');
    for (const body of [
      {},
      { logLevel: 'loud' },
      { logLevel: 3 },
      { logLevel: '' },
      { limits: { restPerMinute: 0 } },
      { limits: { restPerMinute: -1 } },
      { limits: { restPerMinute: 1e12 } },
      { limits: { restPerMinute: '60' } },
      { limits: { restPerMinute: 1.5 } },
      { limits: { maxBodyBytes: 10 } },
      { limits: 5 },
      { limits: { nope: 1 } },
      { tools: { policies: { bash: 'never' } } },
      { tools: { policies: { rm: 'auto' } } },
      { tools: 'x' },
      { provider: { name: 'openai' } },
      { provider: { apiKey: 'x' } },
      { version: '9' },
      { workspaceRoot: '/' },
      { logLevel: 'debug', limits: { restPerMinute: 0 } },
      [],
    ]) {
      const r = await call('PATCH', '/api/v1/config', owner.token, body);
      assert.equal(r.status, 400, `${JSON.stringify(body)} → ${r.status} ${r.text}`);
    }
    assertErrorEnvelope(assert, await call('PATCH', '/api/v1/config', owner.token, '{"logLevel":"debug"'), 400, 'INVALID_REQUEST');
    assert.equal(sql('SELECT count(*) FROM settings'), '0');
    assert.equal((await call('GET', '/api/v1/config', owner.token)).json.data.logLevel, 'info');
  });

  test('PATCH applies in every worker within a second, persists, audits, resets with null', async () => {
    const r = await call('PATCH', '/api/v1/config', owner.token, {
      limits: { restPerMinute: 77777 },
      tools: { policies: { read_file: 'ask' } },
    });
    assert.equal(r.status, 200, r.text);
    assert.equal(r.json.data.limits.restPerMinute, 77777);
    assert.equal(r.json.data.tools.policies.read_file, 'ask');
    await sleep(1100);
    // four workers, kept-alive and fresh connections: every answer has the new limit
    for (let i = 0; i < 40; i++) {
      const g = await call('GET', '/api/v1/auth/me', bob.token);
      assert.equal(g.status, 200);
      assert.match(g.headers.get('ratelimit-policy') || '', /^77777;w=60\b/, `request ${i}`);
    }
    const tools = await call('GET', '/api/v1/tools/read_file', bob.token);
    assert.equal(tools.json.data.policy, 'ask');
    assert.equal(sql("SELECT value FROM settings WHERE key = 'rate_rest_per_min'"), '77777');
    const audit = sql("SELECT actor_user_id || ' ' || detail FROM audit WHERE action = 'config.update'");
    assert.equal(audit, `${owner.userId} rate_rest_per_min,tool_policy_read_file`);

    // it survives a restart of the responder
    await stack.restartFcgi();
    assert.equal((await call('GET', '/api/v1/config', bob.token)).json.data.limits.restPerMinute, 77777);

    const reset = await call('PATCH', '/api/v1/config', owner.token, {
      limits: { restPerMinute: null },
      tools: { policies: { read_file: null } },
    });
    assert.equal(reset.status, 200, reset.text);
    assert.equal(reset.json.data.limits.restPerMinute, 100000);
    await sleep(1100);
    for (let i = 0; i < 20; i++) {
      const g = await call('GET', '/api/v1/auth/me', bob.token);
      assert.match(g.headers.get('ratelimit-policy') || '', /^100000;w=60\b/);
    }
    assert.equal(sql('SELECT count(*) FROM settings'), '0');
  });

  // The gateway sends the changed policies with every turn (`toolPolicies`,
  // PROTOCOL.md); the reference orchestrator must honour them for this to pass.
  test('a changed tool policy applies to the next turn', async () => {
    const p = await call('PATCH', '/api/v1/config', owner.token, { tools: { policies: { write_file: 'auto' } } });
    assert.equal(p.status, 200, p.text);
    try {
      const s = await call('POST', '/api/v1/sessions', bob.token, { channel: 'rest' });
      const t0 = Date.now();
      const r = await call('POST', `/api/v1/sessions/${s.json.data.id}/messages`, bob.token, {
        content: '/tool write_file {"path":"auto.txt","content":"no ask"}',
      });
      assert.equal(r.status, 200, r.text);
      assert.ok(Date.now() - t0 < 5000);
      assert.equal(r.json.data.toolCalls[0].success, true, 'written without an approval');
    } finally {
      await call('PATCH', '/api/v1/config', owner.token, { tools: { policies: { write_file: null } } });
    }
  });

  test('logLevel is applied at run time', async () => {
    const p = await call('PATCH', '/api/v1/config', owner.token, { logLevel: 'debug' });
    assert.equal(p.status, 200, p.text);
    await sleep(1100);
    for (let i = 0; i < 8; i++) await call('GET', '/api/v1/auth/me', bob.token);
    const log = stack.readLog('fcgi');
    assert.match(log, /"level":"debug"[^\n]*"path":"\/api\/v1\/auth\/me"/);
    await call('PATCH', '/api/v1/config', owner.token, { logLevel: null });
  });
});
