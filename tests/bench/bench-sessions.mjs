#!/usr/bin/env node
// Benchmark (NOT a test, not in CTest): durable writes through the whole stack.
//
//   node tests/bench/bench-sessions.mjs [--duration 10] [--rounds 3]
//
// Starts nginx + meao-fcgi + meao-orchestrator (echo provider) with the e2e
// harness (tests/e2e/lib/stack.mjs; build tree ./build, or MEAO_BUILD_DIR as an
// absolute path), creates a
// user with meaoctl and limits too high to deny, then alternates, per round:
//   - nginx `return 200` (/__static_ok), wrk -t2 -c64: the baseline of the run;
//   - POST /api/v1/sessions (one durable insert per request), wrk -t2 -c64;
//   - POST /api/v1/sessions/:id/messages (a whole echo turn: user message
//     persisted, turn over the orchestrator socket, assistant message
//     persisted), wrk -t2 -c2, each wrk thread on its own session (one turn at
//     a time per session is the contract).
// Then it kills every process of the stack (nginx's master and workers,
// meao-fcgi's master and workers, the orchestrator) with SIGKILL at once and
// counts the rows in the database: every session and message acknowledged with
// 2xx must still be there. Prints a markdown table of medians on stdout, with
// each series' ratio to the static run of the same round and the spread
// (min–max) over the rounds; exits 1 if anything acknowledged was lost or any
// request failed (the issue-5 target is POST /api/v1/sessions ≥ 0.20× static
// with zero errors). The machine's CPU count and load average are printed too:
// on a shared machine, compare only rows of one run.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';

import { childPids, startStack } from '../e2e/lib/stack.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const duration = arg('duration', 10);
const rounds = arg('rounds', 3);
const log = (m) => process.stderr.write(`bench-sessions: ${m}\n`);
const loadBefore = os.loadavg().map((x) => x.toFixed(2)).join(' ');

const stack = await startStack({
  config: {
    rate_rest_per_min: 1000000,
    rate_rest_per_hour: 100000000,
    rate_messages_per_min: 1000000,
    log_level: 'warn',
  },
});
const dir = fs.mkdtempSync('/tmp/meao-bench-sessions-');
try {
  const user = stack.addUser('bench', 'owner');
  const auth = `Authorization: Bearer ${user.token}`;
  const mkSession = async () => {
    const r = await stack.request('/api/v1/sessions', {
      method: 'POST',
      headers: { Authorization: `Bearer ${user.token}`, 'Content-Type': 'application/json' },
      body: '{"channel":"bench"}',
    });
    if (r.status !== 201) throw new Error(`create session: ${r.status} ${r.text}`);
    return r.json.data.id;
  };
  const sids = [await mkSession(), await mkSession()];

  // wrk scripts: a JSON POST; for turns, each thread posts to its own session
  fs.writeFileSync(
    path.join(dir, 'post.lua'),
    `wrk.method = "POST"\nwrk.body = '{"channel":"bench"}'\nwrk.headers["Content-Type"] = "application/json"\n`,
  );
  fs.writeFileSync(
    path.join(dir, 'turn.lua'),
    `local n = 0\nlocal sids = {"${sids[0]}", "${sids[1]}"}\n` +
      'function setup(thread) n = n + 1; thread:set("sid", sids[n]) end\n' +
      'function init(args) wrk.method = "POST"; wrk.headers["Content-Type"] = "application/json";\n' +
      '  wrk.body = \'{"content":"hello bench"}\'; path = "/api/v1/sessions/" .. sid .. "/messages" end\n' +
      'function request() return wrk.format(nil, path) end\n',
  );

  const series = {
    static: { path: '/__static_ok', conns: 64, extra: [] },
    sessions: { path: '/api/v1/sessions', conns: 64, extra: ['-s', path.join(dir, 'post.lua'), '-H', auth] },
    turn: { path: '/', conns: 2, extra: ['-s', path.join(dir, 'turn.lua'), '-H', auth] },
  };
  const results = Object.fromEntries(Object.keys(series).map((k) => [k, []]));
  const acked = { sessions: 2, turn: 0 };
  for (let r = 0; r < rounds; r++) {
    for (const [name, s] of Object.entries(series)) {
      const out = spawnSync(
        'timeout',
        [String(duration + 30), 'wrk', '-t2', `-c${s.conns}`, `-d${duration}s`, '--latency', ...s.extra,
          `${stack.baseUrl}${s.path}`],
        { encoding: 'utf8' },
      );
      if (out.status !== 0) throw new Error(`wrk ${name}: ${out.stderr}${out.stdout}`);
      const rps = Number(/Requests\/sec:\s+([\d.]+)/.exec(out.stdout)[1]);
      const total = Number(/(\d+) requests in/.exec(out.stdout)[1]);
      const non2xx = Number((/Non-2xx or 3xx responses: (\d+)/.exec(out.stdout) || [0, 0])[1]);
      const errs = /Socket errors: (.*)/.exec(out.stdout);
      // wrk prints 812.00us, 2.76ms, 1.02s, 1.50m
      const lat = (q) => /([\d.]+)(us|ms|s|m)$/.exec((new RegExp(`${q}%\\s+(\\S+)`).exec(out.stdout) || [])[1] || '');
      const ms = (m) => (m ? Number(m[1]) * { us: 0.001, ms: 1, s: 1000, m: 60000 }[m[2]] : NaN);
      results[name].push({ rps, p50: ms(lat(50)), p99: ms(lat(99)), non2xx, errs: errs ? errs[1] : '' });
      if (!Number.isFinite(ms(lat(99)))) log(`round ${r + 1} ${name}: unparsed latency:\n${out.stdout}`);
      if (name in acked) acked[name] += total - non2xx;
      log(`round ${r + 1} ${name}: ${rps} req/s, ${non2xx} non-2xx ${errs ? errs[1] : ''}`);
    }
  }

  // kill -9 of every process, at once, right after the load
  // nginx's workers too: killing only its master left them running, orphaned
  const pids = [stack.nginx.pid, ...childPids(stack.nginx.pid), stack.fcgi.pid, ...childPids(stack.fcgi.pid)];
  if (stack.orchestratorHandle?.pid) pids.push(stack.orchestratorHandle.pid);
  for (const pid of pids) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  await new Promise((r) => setTimeout(r, 300));
  const q = (sql) => Number(spawnSync('sqlite3', [stack.dbPath, sql], { encoding: 'utf8' }).stdout.trim());
  const sessionsRows = q('SELECT count(*) FROM sessions');
  const assistantRows = q("SELECT count(*) FROM messages WHERE role = 'assistant'");

  const med = (xs) => {
    const v = xs.filter(Number.isFinite).sort((a, b) => a - b);
    return v.length ? v[Math.floor(v.length / 2)] : NaN;
  };
  const row = (name, label) => {
    const rs = results[name];
    const rps = med(rs.map((x) => x.rps));
    // the ratio of each round against the static run of the same round, then its median
    const ratios = rs.map((x, i) => x.rps / results.static[i].rps);
    const range = (xs, d) => {
      const v = xs.filter(Number.isFinite);
      return v.length ? `${Math.min(...v).toFixed(d)}–${Math.max(...v).toFixed(d)}` : 'n/a';
    };
    return `| ${label} | ${rps.toFixed(0)} (${range(rs.map((x) => x.rps), 0)}) | ` +
      `${med(ratios).toFixed(3)}× (${range(ratios, 3)}) | ` +
      `${med(rs.map((x) => x.p50)).toFixed(2)} ms | ${med(rs.map((x) => x.p99)).toFixed(2)} ms ` +
      `(${range(rs.map((x) => x.p99), 2)}) | ${rs.reduce((a, x) => a + x.non2xx, 0)} | ${rs.filter((x) => x.errs).length} |`;
  };
  console.log(`Medians of ${rounds} × ${duration} s, wrk -t2 (static and sessions -c64, turns -c2), ` +
    `${os.cpus().length} CPUs, load average before the run ${loadBefore}:\n`);
  console.log('| series | req/s (min–max) | ÷ static, per round (min–max) | p50 | p99 (min–max) | non-2xx | rounds with socket errors |\n|---|---:|---:|---:|---:|---:|---:|');
  console.log(row('static', 'nginx `return 200`'));
  console.log(row('sessions', '`POST /api/v1/sessions`'));
  console.log(row('turn', '`POST …/messages` (echo turn)'));
  console.log(`\nAfter kill -9 of every process: ${sessionsRows} sessions in the database for ` +
    `${acked.sessions} acknowledged (${sessionsRows >= acked.sessions ? 'none lost' : 'LOST SOME'}); ` +
    `${assistantRows} assistant messages for ${acked.turn} acknowledged turns ` +
    `(${assistantRows >= acked.turn ? 'none lost' : 'LOST SOME'}).`);
  const errors = Object.values(results).flat().reduce((a, x) => a + x.non2xx + (x.errs ? 1 : 0), 0);
  if (sessionsRows < acked.sessions || assistantRows < acked.turn || errors > 0) process.exitCode = 1;
} finally {
  await stack.stop().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
}
