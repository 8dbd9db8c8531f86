// meao-orchestrator over its real unix socket (src/orch/PROTOCOL.md), with the
// echo provider's scripts driving tools and approvals.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';

import { Orchestrator, startOrchestrator } from './lib/orchestrator.mjs';
import { pidAlive, waitFor } from './lib/stack.mjs';

const types = (frames) => frames.map((f) => f.type);
const text = (frames) =>
  frames
    .filter((f) => f.type === 'text_delta')
    .map((f) => f.delta)
    .join('');
/** Frame types with consecutive text deltas folded into one "text". */
const shape = (frames) =>
  types(frames).reduce((acc, t) => {
    const name = t === 'text_delta' ? 'text' : t;
    if (!(name === 'text' && acc[acc.length - 1] === 'text')) acc.push(name);
    return acc;
  }, []);
const bash = (command) => `/tool bash ${JSON.stringify({ command })}`;
const writeFile = (p, content) => `/tool write_file ${JSON.stringify({ path: p, content })}`;

describe('meao-orchestrator', () => {
  let orch;
  before(async () => {
    orch = await startOrchestrator({ config: { approval_timeout_ms: 10000 } });
  });
  after(async () => {
    await orch?.stop();
  });

  test('ping and list_tools are short calls', async () => {
    const pong = await orch.call({ type: 'ping', v: 1 });
    assert.equal(pong.type, 'pong');
    assert.match(pong.serverTime, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/);
    const tools = await orch.call({ type: 'list_tools', v: 1 });
    assert.equal(tools.type, 'tools');
    const byName = Object.fromEntries(tools.tools.map((t) => [t.name, t]));
    assert.deepEqual(Object.keys(byName).sort(), ['bash', 'read_file', 'write_file']);
    assert.equal(byName.bash.policy, 'always');
    assert.equal(byName.read_file.policy, 'auto');
    assert.equal(byName.write_file.policy, 'ask');
    assert.equal(byName.bash.enabled, true);
    assert.equal(byName.bash.inputSchema.type, 'object');
    assert.ok(byName.bash.description.length > 0);
  });

  test('plain text streams in order and ends with message_complete', async () => {
    const content = 'Hello from the orchestrator, streamed back in pieces.';
    const c = await orch.turn(content);
    const frames = await c.rest();
    assert.deepEqual(shape(frames), ['text', 'message_complete']);
    assert.ok(frames.filter((f) => f.type === 'text_delta').length >= 2, 'several deltas');
    for (const f of frames) assert.equal(f.requestId, c.requestId);
    assert.equal(text(frames), content);
    const done = frames.at(-1);
    assert.equal(done.content, content);
    assert.deepEqual(done.toolCalls, []);
    assert.deepEqual(done.trustedTools, []);
    assert.ok(done.usage.inputTokens > 0 && done.usage.outputTokens > 0);
  });

  test('approve: bash echo hi runs and its output reaches the answer', async () => {
    const c = await orch.turn(bash('echo hi'));
    const upTo = await c.until('approval_request');
    const req = upTo.at(-1);
    assert.deepEqual(types(upTo), ['tool_call_start', 'approval_request']);
    const start = upTo[0];
    assert.equal(start.toolName, 'bash');
    assert.equal(start.name, 'bash');
    assert.equal(start.id, start.toolCallId);
    assert.match(req.approvalId, /^apr_[0-9A-Za-z]{20}$/);
    assert.equal(req.requestId, req.approvalId);
    assert.equal(req.correlationId, c.requestId);
    assert.equal(req.toolCallId, start.toolCallId);
    assert.equal(req.request.tool, 'bash');
    assert.equal(req.request.isDangerous, true);
    assert.ok(Array.isArray(req.request.risks) && req.request.risks.length > 0);
    assert.equal(req.argsSummary, '$ echo hi');
    assert.equal(req.timeout, 10);
    c.send({ type: 'approval_response', approvalId: req.approvalId, approved: true });
    const frames = await c.rest();
    assert.deepEqual(shape(frames), ['approval_resolved', 'tool_call_result', 'text', 'message_complete']);
    const [resolved, result] = frames;
    assert.equal(resolved.approvalId, req.approvalId);
    assert.equal(resolved.approved, true);
    assert.equal(resolved.reason, 'approved');
    assert.equal(resolved.requestId, c.requestId);
    assert.equal(result.success, true);
    assert.equal(result.output, 'hi');
    assert.equal(result.toolCallId, start.toolCallId);
    assert.match(text(frames), /hi/);
    const done = frames.at(-1);
    assert.equal(done.content, text(frames));
    assert.deepEqual(done.toolCalls, [
      { id: start.toolCallId, name: 'bash', input: { command: 'echo hi' }, success: true, approved: true },
    ]);
  });

  test('deny: the tool never runs', async () => {
    const marker = path.join(orch.workDir, 'deny-marker');
    const c = await orch.turn(bash('touch deny-marker'));
    const req = (await c.until('approval_request')).at(-1);
    c.send({ type: 'approval_response', approvalId: req.approvalId, approved: false });
    const frames = await c.rest();
    assert.deepEqual(shape(frames), ['approval_resolved', 'tool_call_result', 'text', 'message_complete']);
    assert.equal(frames[0].reason, 'denied');
    assert.equal(frames[0].approved, false);
    assert.equal(frames[1].success, false);
    assert.equal(frames[1].output, 'denied by user');
    assert.match(frames.at(-1).content, /denied by user/);
    assert.equal(frames.at(-1).toolCalls[0].approved, false);
    assert.equal(fs.existsSync(marker), false);
  });

  test('cancel on the turn connection denies and ends with CANCELLED', async () => {
    const c = await orch.turn(bash('touch cancel-marker'));
    await c.until('approval_request');
    c.send({ type: 'cancel', targetRequestId: c.requestId });
    const frames = await c.rest();
    assert.deepEqual(types(frames), ['approval_resolved', 'error']);
    assert.equal(frames[0].approved, false);
    assert.equal(frames[1].code, 'CANCELLED');
    assert.equal(frames[1].requestId, c.requestId);
    assert.equal(fs.existsSync(path.join(orch.workDir, 'cancel-marker')), false);
  });

  test('ping on the turn connection is answered between frames', async () => {
    const c = await orch.turn(bash('true'));
    await c.until('approval_request');
    c.send({ type: 'ping' });
    const pong = await c.next();
    assert.equal(pong.type, 'pong');
    c.send({ type: 'cancel' });
    assert.equal((await c.rest()).at(-1).code, 'CANCELLED');
  });

  test('disconnect denies at once: the tool does not run and the daemon is fine', async () => {
    const marker = path.join(orch.workDir, 'disconnect-marker');
    const c = await orch.turn(bash('touch disconnect-marker'), { userId: 'u-drop' });
    const req = (await c.until('approval_request')).at(-1);
    const listed = await orch.call({ type: 'list_approvals', v: 1, userId: 'u-drop' });
    assert.deepEqual(
      listed.approvals.map((a) => a.approvalId),
      [req.approvalId],
    );
    c.close();
    const t0 = Date.now();
    // within a second the approval is decided (denied) and gone from the list
    await waitFor(
      async () => (await orch.call({ type: 'list_approvals', v: 1, userId: 'u-drop' })).approvals.length === 0,
      { timeoutMs: 1000, what: 'the approval to be denied' },
    );
    assert.ok(Date.now() - t0 < 1000);
    const late = await orch.call({ type: 'approval_response', v: 1, approvalId: req.approvalId, approved: true, userId: 'u-drop' });
    assert.equal(late.type, 'error');
    assert.equal(late.code, 'APPROVAL_EXPIRED');
    await sleep(300);
    assert.equal(fs.existsSync(marker), false, 'the tool never ran');
    assert.match(orch.log(), /turn_disconnect/);
    assert.equal((await orch.call({ type: 'ping', v: 1 })).type, 'pong');
  });

  test('an answer on a separate connection: same user acked, another user FORBIDDEN', async () => {
    const c = await orch.turn(bash('echo separate'), { userId: 'alice' });
    const req = (await c.until('approval_request')).at(-1);
    const listed = await orch.call({ type: 'list_approvals', v: 1, userId: 'alice' });
    assert.equal(listed.type, 'approvals');
    assert.equal(listed.approvals.length, 1);
    const item = listed.approvals[0];
    assert.equal(item.approvalId, req.approvalId);
    assert.equal(item.correlationId, c.requestId);
    assert.equal(item.sessionId, 's1');
    assert.equal(item.toolName, 'bash');
    assert.equal(item.argsSummary, '$ echo separate');
    assert.ok(Date.parse(item.expiresAt) > Date.now());
    assert.deepEqual((await orch.call({ type: 'list_approvals', v: 1, userId: 'mallory' })).approvals, []);

    const forbidden = await orch.call({ type: 'approval_response', v: 1, approvalId: req.approvalId, approved: true, userId: 'mallory' });
    assert.equal(forbidden.type, 'error');
    assert.equal(forbidden.code, 'FORBIDDEN');
    // nothing changed: still pending
    assert.equal((await orch.call({ type: 'list_approvals', v: 1, userId: 'alice' })).approvals.length, 1);

    const ack = await orch.call({ type: 'approval_response', v: 1, requestId: req.approvalId, approved: true, userId: 'alice' });
    assert.deepEqual(ack, { type: 'ack', approvalId: req.approvalId, approved: true });
    const frames = await c.rest();
    assert.equal(frames[0].type, 'approval_resolved');
    assert.equal(frames[0].approved, true);
    assert.equal(frames.find((f) => f.type === 'tool_call_result').output, 'separate');
    assert.equal(frames.at(-1).type, 'message_complete');

    // late: the approval is decided now
    const late = await orch.call({ type: 'approval_response', v: 1, approvalId: req.approvalId, approved: false, userId: 'alice' });
    assert.equal(late.code, 'APPROVAL_EXPIRED');
    assert.equal(late.approvalId, req.approvalId);
  });

  test('unknown approval id: APPROVAL_NOT_FOUND; missing userId outside a turn: INVALID_REQUEST', async () => {
    const r = await orch.call({ type: 'approval_response', v: 1, approvalId: 'apr_00000000000000000000', approved: true, userId: 'u1' });
    assert.equal(r.type, 'error');
    assert.equal(r.code, 'APPROVAL_NOT_FOUND');
    const c = await orch.connect();
    c.send({ type: 'approval_response', approvalId: 'apr_00000000000000000000', approved: true });
    const e = await c.next();
    assert.equal(e.code, 'INVALID_REQUEST');
    c.send({ type: 'ping' });
    assert.equal((await c.next()).type, 'pong');
    assert.equal(await c.next(), null);
    c.close();
  });

  test('trustSession: the second write_file of the turn is auto-approved', async () => {
    const c = await orch.turn(`${writeFile('one.txt', '1')}\n${writeFile('two.txt', '2')}`);
    const req = (await c.until('approval_request')).at(-1);
    assert.equal(req.toolName, 'write_file');
    c.send({ type: 'approval_response', approvalId: req.approvalId, approved: true, trustSession: true });
    const frames = await c.rest();
    assert.deepEqual(shape(frames), [
      'approval_resolved',
      'tool_call_result',
      'tool_call_start',
      'approval_resolved',
      'tool_call_result',
      'text',
      'message_complete',
    ]);
    assert.equal(frames[0].trustSession, true);
    assert.equal(frames[3].reason, 'trusted');
    assert.equal(frames[3].approved, true);
    assert.equal(frames.filter((f) => f.type === 'approval_request').length, 0);
    assert.deepEqual(frames.at(-1).trustedTools, ['write_file']);
    assert.equal(fs.readFileSync(path.join(orch.workDir, 'one.txt'), 'utf8'), '1');
    assert.equal(fs.readFileSync(path.join(orch.workDir, 'two.txt'), 'utf8'), '2');
  });

  test('trustSession never trusts bash (policy always)', async () => {
    const c = await orch.turn(`${bash('echo 1')}\n${bash('echo 2')}`, { trustedTools: ['bash'] });
    for (let i = 0; i < 2; i++) {
      const req = (await c.until('approval_request')).at(-1);
      c.send({ type: 'approval_response', approvalId: req.approvalId, approved: true, trustSession: true });
    }
    const frames = await c.rest();
    assert.deepEqual(frames.at(-1).trustedTools, []);
  });

  test('toolPolicies in the turn override the configured policies', async () => {
    const c = await orch.turn(`${bash('echo unasked')}\n${writeFile('w.txt', 'w')}`, {
      toolPolicies: { bash: 'auto', write_file: 'always' },
    });
    const upTo = await c.until('approval_request');
    assert.deepEqual(shape(upTo), ['tool_call_start', 'tool_call_result', 'tool_call_start', 'approval_request']);
    assert.equal(upTo[1].output, 'unasked');
    assert.equal(upTo[3].toolName, 'write_file');
    c.send({ type: 'approval_response', approvalId: upTo[3].approvalId, approved: true, trustSession: true });
    const frames = await c.rest();
    assert.deepEqual(frames.at(-1).trustedTools, [], 'always is never trusted');
    const bad = await orch.turn('x', { toolPolicies: { bash: 'sometimes' } });
    const e = await bad.next();
    assert.equal(e.code, 'INVALID_REQUEST');
    assert.match(e.message, /toolPolicies/);
    bad.close();
  });

  test('malformed lines get an error frame and the connection stays usable', async () => {
    const c = await orch.connect();
    c.send('{not json');
    let e = await c.next();
    assert.equal(e.type, 'error');
    assert.equal(e.code, 'INVALID_REQUEST');
    c.send({ type: 'no_such_type' });
    e = await c.next();
    assert.equal(e.code, 'INVALID_REQUEST');
    assert.match(e.message, /unknown message type/);
    c.send({ type: 'turn', requestId: 'x1', session: { id: 's1', userId: 'u1', channel: 't', workDir: orch.workDir } });
    e = await c.next();
    assert.equal(e.code, 'INVALID_REQUEST');
    assert.match(e.message, /content/);
    c.send({ type: 'turn', v: 1, requestId: 'x2', session: { id: 's1', userId: 'u1', channel: 't', workDir: '/etc' }, content: 'x' });
    e = await c.next();
    assert.equal(e.code, 'INVALID_REQUEST');
    assert.match(e.message, /workDir/);
    c.send('[1,2]');
    assert.equal((await c.next()).code, 'INVALID_REQUEST');
    c.send(Buffer.concat([Buffer.alloc(1024 * 1024 + 10, 'x'), Buffer.from('\n')]));
    e = await c.next();
    assert.equal(e.code, 'LINE_TOO_LONG');
    c.send({ type: 'ping', v: 1 });
    assert.equal((await c.next()).type, 'pong');
    assert.equal(await c.next(), null);
    c.close();
    // a version we do not speak: error and close
    const v = await orch.call({ type: 'ping', v: 2 });
    assert.equal(v.code, 'UNSUPPORTED_VERSION');
    assert.deepEqual(v.supported, [1]);
    // and inside a turn: errors do not end it
    const t = await orch.turn(bash('echo still'));
    const req = (await t.until('approval_request')).at(-1);
    t.send('garbage');
    assert.equal((await t.next()).code, 'INVALID_REQUEST');
    t.send({ type: 'turn', v: 1, requestId: 'again', session: {}, content: 'x' });
    assert.equal((await t.next()).code, 'INVALID_REQUEST');
    t.send(Buffer.concat([Buffer.alloc(1024 * 1024 + 10, 'y'), Buffer.from('\n')]));
    assert.equal((await t.next()).code, 'LINE_TOO_LONG');
    t.send({ type: 'approval_response', approvalId: 'apr_00000000000000000000', approved: true });
    const nf = await t.next();
    assert.equal(nf.code, 'APPROVAL_NOT_FOUND');
    assert.equal(nf.requestId, undefined, 'a per-line error carries no requestId: the turn goes on');
    t.send({ type: 'approval_response', approvalId: req.approvalId, approved: true });
    const frames = await t.rest();
    assert.equal(frames.find((f) => f.type === 'tool_call_result').output, 'still');
    assert.equal(frames.at(-1).type, 'message_complete');
    assert.equal((await orch.call({ type: 'ping', v: 1 })).type, 'pong');
  });

  test('50 concurrent turns complete correctly', async () => {
    const n = 50;
    const contents = Array.from({ length: n }, (_, i) => `turn number ${i}: ${'abc'.repeat(i + 1)}`);
    const clients = await Promise.all(contents.map((c) => orch.turn(c)));
    const results = await Promise.all(clients.map((c) => c.rest(20000)));
    results.forEach((frames, i) => {
      assert.equal(frames.at(-1).type, 'message_complete', JSON.stringify(frames.at(-1)));
      assert.equal(text(frames), contents[i]);
      assert.equal(frames.at(-1).content, contents[i]);
      for (const f of frames) assert.equal(f.requestId, clients[i].requestId);
    });
  });

  test('killing clients mid-turn leaves no fd, thread or process behind', async () => {
    // turn threads are pooled: idle ones exit after 2 s, two stay warm
    const tasks0 = await orch.settledTaskCount();
    const fds0 = orch.fdCount();
    const clients = [];
    // waiting on the provider
    for (let i = 0; i < 4; i++) clients.push(await orch.turn('/sleep 5000\nslow'));
    // waiting on an approval
    for (let i = 0; i < 4; i++) {
      const c = await orch.turn(bash('touch never'));
      await c.until('approval_request');
      clients.push(c);
    }
    // running a tool
    const running = [];
    for (let i = 0; i < 4; i++) {
      const c = await orch.turn(bash(`echo $$ > running-${i}.pid; sleep 30`));
      const req = (await c.until('approval_request')).at(-1);
      c.send({ type: 'approval_response', approvalId: req.approvalId, approved: true });
      running.push(path.join(orch.workDir, `running-${i}.pid`));
      clients.push(c);
    }
    await waitFor(() => running.every((p) => fs.existsSync(p) && fs.readFileSync(p, 'utf8').trim()), {
      what: 'the tools to start',
    });
    assert.ok(orch.taskCount() > tasks0);
    assert.ok(orch.children().length >= 4);
    for (const c of clients) c.close();
    // at once: every turn stopped, every tool killed, every connection closed
    await waitFor(() => orch.fdCount() === fds0 && orch.children().length === 0, {
      timeoutMs: 2000,
      what: `fds back to ${fds0} (now ${orch.fdCount()}) and no children (${orch.children()})`,
    });
    // and the twelve turn threads are idle again: they exit after 2 s
    await waitFor(() => orch.taskCount() <= tasks0, {
      timeoutMs: 6000,
      what: `threads back to ${tasks0} (now ${orch.taskCount()})`,
    });
    for (const p of running) {
      const pid = Number(fs.readFileSync(p, 'utf8').trim());
      await waitFor(() => !pidAlive(pid), { timeoutMs: 2000, what: `tool shell ${pid} to die` });
    }
    assert.equal(fs.existsSync(path.join(orch.workDir, 'never')), false);
    assert.equal((await orch.call({ type: 'ping', v: 1 })).type, 'pong');
  });
});

describe('meao-orchestrator with short approval timeouts', () => {
  let orch;
  before(async () => {
    orch = await startOrchestrator({ config: { approval_timeout_ms: 300 } });
  });
  after(async () => {
    await orch?.stop();
  });

  test('an unanswered approval times out as denied; a late answer is APPROVAL_EXPIRED', async () => {
    const t0 = Date.now();
    const c = await orch.turn(bash('touch timeout-marker'));
    const req = (await c.until('approval_request')).at(-1);
    assert.equal(req.timeout, 1);
    const frames = await c.rest();
    assert.ok(Date.now() - t0 >= 290);
    assert.deepEqual(shape(frames), ['approval_resolved', 'tool_call_result', 'text', 'message_complete']);
    assert.equal(frames[0].reason, 'timeout');
    assert.equal(frames[0].approved, false);
    assert.equal(frames[1].success, false);
    assert.equal(fs.existsSync(path.join(orch.workDir, 'timeout-marker')), false);
    const late = await orch.call({ type: 'approval_response', v: 1, approvalId: req.approvalId, approved: true, userId: 'u1' });
    assert.equal(late.code, 'APPROVAL_EXPIRED');
  });
});

describe('meao-orchestrator limits and lifecycle', () => {
  test('more than orchestrator_max_turns: BUSY', async () => {
    const orch = await startOrchestrator({ config: { orchestrator_max_turns: 2 } });
    try {
      const a = await orch.turn(bash('true'));
      const b = await orch.turn(bash('true'));
      await a.until('approval_request');
      await b.until('approval_request');
      const c = await orch.turn('third');
      const frames = await c.rest();
      assert.deepEqual(types(frames), ['error']);
      assert.equal(frames[0].code, 'BUSY');
      assert.equal(frames[0].requestId, c.requestId);
      a.close();
      b.close();
      // the slots come back
      await waitFor(async () => {
        const d = await orch.turn('fourth');
        return (await d.rest()).at(-1).type === 'message_complete';
      });
    } finally {
      await orch.stop();
    }
  });

  test('refuses to steal a live socket', async () => {
    const orch = await startOrchestrator();
    try {
      const second = orch.spawn();
      const res = await second.exited;
      assert.notEqual(res.code, 0);
      assert.match(orch.log(), /another daemon is listening/);
      assert.equal((await orch.call({ type: 'ping', v: 1 })).type, 'pong');
    } finally {
      await orch.stop();
    }
  });

  test('SIGHUP reopens the log file', async () => {
    const orch = new Orchestrator();
    orch.opts.config = { log_file: path.join(orch.dir, 'file.log') };
    await orch.start();
    try {
      const file = orch.config.log_file;
      await waitFor(() => fs.existsSync(file) && /"event":"start"/.test(fs.readFileSync(file, 'utf8')));
      fs.renameSync(file, `${file}.1`);
      process.kill(orch.pid, 'SIGHUP');
      await waitFor(() => fs.existsSync(file) && /"event":"log_reopen"/.test(fs.readFileSync(file, 'utf8')), {
        what: 'a fresh log file',
      });
      assert.equal((await orch.call({ type: 'ping', v: 1 })).type, 'pong');
    } finally {
      await orch.stop();
    }
  });

  test('SIGTERM: running turns get SHUTTING_DOWN, the daemon exits 0 and removes its socket', async () => {
    const orch = await new Orchestrator().start();
    try {
      assert.equal(fs.readFileSync(orch.pidFile, 'utf8').trim(), String(orch.pid));
      const waiting = await orch.turn(bash('touch term-marker'));
      await waiting.until('approval_request');
      const thinking = await orch.turn('/sleep 10000\nslow');
      await sleep(100);
      const t0 = Date.now();
      const res = await orch.kill('SIGTERM');
      assert.ok(Date.now() - t0 < 3000, 'stopped promptly');
      assert.deepEqual(res, { code: 0, signal: null });
      const w = await waiting.rest();
      assert.deepEqual(types(w), ['approval_resolved', 'error']);
      assert.equal(w[0].reason, 'disconnect');
      assert.equal(w[1].code, 'SHUTTING_DOWN');
      assert.equal(w[1].requestId, waiting.requestId);
      const t = await thinking.rest();
      assert.deepEqual(types(t), ['error']);
      assert.equal(t[0].code, 'SHUTTING_DOWN');
      assert.equal(fs.existsSync(orch.socket), false);
      assert.equal(fs.existsSync(orch.pidFile), false);
      assert.equal(fs.existsSync(path.join(orch.workDir, 'term-marker')), false);
    } finally {
      await orch.stop();
    }
  });
});
