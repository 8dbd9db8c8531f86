#!/usr/bin/env node
// Benchmark (NOT a test, not in CTest): Telegram webhook acknowledgements.
//
//   node tests/bench/bench-telegram.mjs [--duration 10] [--rounds 3] [--connections 200]
//                                       [--bursts 50] [--sync full|normal]
//
// Starts nginx + meao-fcgi + meao-orchestrator with the e2e harness
// (tests/e2e/lib/stack.mjs; build tree ./build, or MEAO_BUILD_DIR as an
// absolute path) and a fake Bot API, sets the webhook up with meaoctl (so the
// secret token is real), leaves the worker stopped (only the acknowledgement
// path is measured: secret check, parse, durable insert with
// synchronous=FULL, 200), then per round runs wrk -t2 -c200 against
// POST /telegram/webhook with a fresh update_id per request (saturation: a
// closed loop), then sends bursts of 200 deliveries at once from node over
// kept connections (the next burst when the last answer came). Afterwards it
// counts the inbox rows: every update acknowledged with 200 must be there
// (zero lost), and nothing else. Prints a markdown table on stdout.
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import http from 'node:http';
import path from 'node:path';

import { startTelegramStack } from '../e2e/lib/telegram.mjs';

const arg = (name, def) => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : def;
};
const duration = arg('duration', 10);
const rounds = arg('rounds', 3);
const connections = arg('connections', 200);
const log = (m) => process.stderr.write(`bench-telegram: ${m}\n`);

const LUA = `
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  secret = args[1]
  base = tonumber(args[2])
  counter = 0
end
function request()
  counter = counter + 1
  local id = base + tid * 100000000 + counter
  local body = '{"update_id":' .. id .. ',"message":{"message_id":' .. counter ..
    ',"from":{"id":1001,"is_bot":false,"first_name":"bench"},"chat":{"id":1001,"type":"private"},' ..
    '"date":1700000000,"text":"benchmark update"}}'
  return wrk.format("POST", "/telegram/webhook",
    {["Content-Type"] = "application/json", ["X-Telegram-Bot-Api-Secret-Token"] = secret}, body)
end
done = function(summary, latency, requests)
  io.write(string.format('RESULT {"requests":%d,"non2xx":%d,"errors":%d,"p50":%.3f,"p99":%.3f,"max":%.3f,"rps":%.1f}\\n',
    summary.requests, summary.errors.status, summary.errors.connect + summary.errors.read +
    summary.errors.write + summary.errors.timeout, latency:percentile(50) / 1000,
    latency:percentile(99) / 1000, latency.max / 1000, summary.requests / (summary.duration / 1e6)))
end
`;

const bursts = arg('bursts', 50);
const syncIdx = process.argv.indexOf('--sync');
const sync = syncIdx > 0 ? process.argv[syncIdx + 1] : 'full';
const t = await startTelegramStack({ worker: false, config: { log_level: 'warn', telegram_inbox_sync: sync } });

/** One delivery over a kept connection; resolves its latency in ms (or -1 on non-2xx). */
function deliver(agent, id) {
  const body = JSON.stringify({
    update_id: id,
    message: { message_id: 1, from: { id: 1001, is_bot: false, first_name: 'b' }, chat: { id: 1001, type: 'private' }, date: 1, text: 'burst' },
  });
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    const req = http.request(t.stack.url('/telegram/webhook'), {
      method: 'POST',
      agent,
      headers: { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body), 'X-Telegram-Bot-Api-Secret-Token': t.secret },
    }, (res) => {
      res.resume();
      res.on('end', () => resolve(res.statusCode === 200 ? Number(process.hrtime.bigint() - t0) / 1e6 : -1));
    });
    req.on('error', reject);
    req.end(body);
  });
}
const dir = fs.mkdtempSync('/tmp/meao-bench-telegram-');
try {
  const script = path.join(dir, 'webhook.lua');
  fs.writeFileSync(script, LUA);
  const results = [];
  let acked = 0;
  for (let r = 0; r < rounds; r++) {
    const out = spawnSync('wrk', ['-t2', `-c${connections}`, `-d${duration}s`, '--timeout', '10s', '-s', script,
      t.stack.url('/telegram/webhook'), '--', t.secret, String(r * 1000000000)], { encoding: 'utf8' });
    const m = /RESULT (\{.*\})/.exec(out.stdout);
    if (!m) throw new Error(`wrk failed: ${out.stdout}\n${out.stderr}`);
    const res = JSON.parse(m[1]);
    results.push(res);
    acked += res.requests - res.non2xx;
    log(`round ${r + 1}: ${JSON.stringify(res)}`);
  }
  // Bursts: 200 deliveries at the same moment (what Telegram does after an
  // outage, at most max_connections at a time), over kept connections; the
  // next burst starts when the last answer arrived.
  const agent = new http.Agent({ keepAlive: true, maxSockets: connections });
  const lat = [];
  let burstFail = 0;
  for (let b = 0; b < bursts; b++) {
    const base = 9000000000 + b * 1000;
    const out = await Promise.all(Array.from({ length: connections }, (_, i) => deliver(agent, base + i)));
    for (const ms of out) {
      if (ms < 0) burstFail++;
      else if (b > 0) lat.push(ms); // the first burst opens the connections
    }
    acked += out.filter((ms) => ms >= 0).length;
  }
  agent.destroy();
  lat.sort((a, b) => a - b);
  const pct = (p) => lat[Math.min(lat.length - 1, Math.floor((p / 100) * lat.length))];
  // wrk counts a request when its response arrives; requests in flight at the
  // end of a run may still have been stored (acknowledged to nobody): rows may
  // exceed the 2xx count by at most the connection count, never fall below it.
  const rows = Number(t.sql('SELECT count(*) FROM telegram_inbox'));
  const median = (k) => results.map((x) => x[k]).sort((a, b) => a - b)[Math.floor(results.length / 2)];
  console.log(`| wrk -t2 -c${connections}, ${rounds} x ${duration} s | req/s | p50 | p99 | max | non-2xx |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  console.log(`| POST /telegram/webhook (median) | ${median('rps').toFixed(0)} | ${median('p50').toFixed(2)} ms | ${median('p99').toFixed(2)} ms | ${median('max').toFixed(2)} ms | ${results.reduce((a, x) => a + x.non2xx, 0)} |`);
  for (const [i, x] of results.entries()) {
    console.log(`| round ${i + 1} | ${x.rps.toFixed(0)} | ${x.p50.toFixed(2)} ms | ${x.p99.toFixed(2)} ms | ${x.max.toFixed(2)} ms | ${x.non2xx} |`);
  }
  console.log(`| ${bursts - 1} bursts of ${connections} concurrent deliveries | – | ${pct(50).toFixed(2)} ms | ${pct(99).toFixed(2)} ms | ${lat.at(-1).toFixed(2)} ms | ${burstFail} |`);
  console.log(`\ntelegram_inbox_sync = ${sync}; acknowledged (2xx): ${acked}; inbox rows: ${rows}; lost: ${Math.max(0, acked - rows)}`);
  if (rows < acked) process.exitCode = 1;
} finally {
  await t.close();
  fs.rmSync(dir, { recursive: true, force: true });
}
