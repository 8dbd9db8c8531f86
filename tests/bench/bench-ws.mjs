#!/usr/bin/env node
// WebSocket benchmark (issue 6): a real WebSocket client (the `ws` package)
// → nginx → websocketd → meao-ws → the reference orchestrator (echo
// provider), on a private stack started like the e2e tests (loopback only).
// Not a test: it prints numbers for the README and asserts nothing.
//
//   node tests/bench/bench-ws.mjs [--idle 1000] [--mem 500]
//
// Measures, in order:
//   1. ping round trip over 2000 pings on one connection (p50/p99);
//   2. connect-to-first-pong over 200 connections, one after another
//      (TCP + upgrade through nginx + program start + header auth + ping);
//   3. new connections per second, 8 concurrent loops for 5 s;
//   4. memory per idle connection with --mem (500) open: PSS of every meao-ws
//      plus websocketd's growth, divided by the count;
//   5. --idle (1000) concurrent idle connections held for 10 s, then each
//      pinged: errors counted;
//   6. first text_delta of an 8-word echo turn, 200 turns on one connection;
//   7. the platform floor for (1): the same pings straight to websocketd
//      (no nginx) running meao-ws, and to a second websocketd running
//      /bin/cat (an echo that does nothing at all).
// Needs a build in ./build (or MEAO_BUILD_DIR) and tests/e2e/node_modules.
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { setTimeout as sleep } from 'node:timers/promises';

const here = path.dirname(fileURLToPath(import.meta.url));
const e2e = path.resolve(here, '../e2e');
process.env.MEAO_BUILD_DIR ||= path.resolve(here, '../../build');
const { startStack, childPids, freePort, portOpenAt, waitFor } = await import(path.join(e2e, 'lib/stack.mjs'));
const { spawn } = await import('node:child_process');
const { WsClient } = await import(path.join(e2e, 'lib/wsclient.mjs'));

const args = process.argv.slice(2);
const opt = (name, def) => {
  const i = args.indexOf(name);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const IDLE = opt('--idle', 1000);
const MEM = opt('--mem', 500);
const PER_USER = 5;

const pct = (xs, p) => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))];
};
const ms = (ns) => Number(ns) / 1e6;
const fmt = (x) => x.toFixed(2);
const now = () => process.hrtime.bigint();

function pssKb(pid) {
  try {
    return Number(/^Pss:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/smaps_rollup`, 'utf8'))[1]);
  } catch {
    return 0;
  }
}

const stack = await startStack({
  ws: true,
  nginxWorkers: process.env.MEAO_BENCH_NGINX_WORKERS || undefined,
  wsMaxForks: Math.max(IDLE, MEM) + 64,
  config: {
    ws_max_connections_per_user: PER_USER,
    rate_ws_messages_per_min: 1000000,
    rate_rest_per_min: 1000000,
    rate_rest_per_hour: 100000000,
    log_level: 'warn',
  },
});
const results = {};
try {
  const nUsers = Math.ceil(Math.max(IDLE, MEM) / PER_USER) + 2;
  const users = [];
  for (let i = 0; i < nUsers; i++) users.push(stack.addUser(`bench${i}`, 'user'));
  const tokenFor = (i) => users[Math.floor(i / PER_USER)].token;
  const url = stack.wsUrl();
  const openAuthed = async (token) => {
    const c = await WsClient.open(url, { token, timeoutMs: 30000 });
    const r = await c.nextType('auth_result', 30000);
    if (!r.success) throw new Error(`auth failed: ${JSON.stringify(r)}`);
    return c;
  };

  // 1. ping round trip (and 7. without nginx, and with /bin/cat)
  const pings = async (c, reply) => {
    for (let i = 0; i < 200; i++) {
      c.send({ type: 'ping' });
      await c.next(reply);
    }
    const rtt = [];
    for (let i = 0; i < 2000; i++) {
      const t0 = now();
      c.send({ type: 'ping', timestamp: i });
      await c.next(reply);
      rtt.push(ms(now() - t0));
    }
    await c.close();
    return { p50: pct(rtt, 50), p99: pct(rtt, 99) };
  };
  results.pingRtt = await pings(await openAuthed(users.at(-1).token), (f) => f.type === 'pong');
  {
    const direct = await WsClient.open(`ws://127.0.0.1:${stack.wsPort}/ws?v=1`, { token: users.at(-1).token });
    await direct.nextType('auth_result');
    results.pingDirect = await pings(direct, (f) => f.type === 'pong');
    const port = await freePort();
    const cat = spawn('websocketd', ['--address=127.0.0.1', `--port=${port}`, '--loglevel=fatal', '/bin/cat'], {
      stdio: 'ignore',
    });
    try {
      await waitFor(() => portOpenAt(port), { what: 'websocketd /bin/cat' });
      results.pingCat = await pings(await WsClient.open(`ws://127.0.0.1:${port}/`), () => true);
    } finally {
      cat.kill('SIGTERM');
    }
  }

  // 2. connect to first pong
  {
    const t = [];
    for (let i = 0; i < 200; i++) {
      const t0 = now();
      const c = await openAuthed(users.at(-2).token);
      c.send({ type: 'ping' });
      await c.nextType('pong');
      t.push(ms(now() - t0));
      await c.close();
    }
    results.connectToPong = { p50: pct(t, 50), p99: pct(t, 99) };
  }
  await sleep(500);

  // 3. new connections per second
  {
    let done = 0;
    let errors = 0;
    const until = Date.now() + 5000;
    const loop = async (k) => {
      while (Date.now() < until) {
        try {
          const c = await openAuthed(tokenFor(k * PER_USER));
          await c.close();
          done++;
        } catch {
          errors++;
        }
      }
    };
    const t0 = now();
    await Promise.all(Array.from({ length: 8 }, (_, k) => loop(k)));
    results.connectionsPerSecond = { rate: done / (ms(now() - t0) / 1000), errors };
  }
  await sleep(1000);

  // 4. memory per idle connection
  {
    const wsdBefore = pssKb(stack.websocketd.pid);
    const conns = [];
    for (let i = 0; i < MEM; i++) conns.push(await openAuthed(tokenFor(i)));
    await sleep(2000);
    const progs = childPids(stack.websocketd.pid);
    const progPss = progs.reduce((a, p) => a + pssKb(p), 0);
    const wsdAfter = pssKb(stack.websocketd.pid);
    results.memory = {
      connections: MEM,
      programs: progs.length,
      programPssKbPerConn: progPss / progs.length,
      websocketdKbPerConn: (wsdAfter - wsdBefore) / MEM,
      totalKbPerConn: (progPss + wsdAfter - wsdBefore) / MEM,
    };
    await Promise.all(conns.map((c) => c.close()));
  }
  await sleep(2000);

  // 5. idle connections held
  {
    const conns = [];
    let errors = 0;
    for (let i = 0; i < IDLE; i++) {
      try {
        conns.push(await openAuthed(tokenFor(i)));
      } catch {
        errors++;
      }
    }
    await sleep(10000);
    const pongs = await Promise.allSettled(
      conns.map((c) => {
        c.send({ type: 'ping' });
        return c.nextType('pong', 20000);
      }),
    );
    const failed = pongs.filter((p) => p.status !== 'fulfilled').length + conns.filter((c) => c.closeInfo).length;
    results.idleHeld = { opened: conns.length, openErrors: errors, pingFailures: failed };
    await Promise.all(conns.map((c) => c.close()));
  }
  await sleep(1000);

  // 6. first text_delta of an 8-word echo turn
  {
    const c = await openAuthed(users.at(-1).token);
    const t = [];
    const total = [];
    for (let i = 0; i < 220; i++) {
      const id = `b${i}`;
      const t0 = now();
      c.send({ type: 'message', content: 'one two three four five six seven eight', requestId: id });
      await c.next((f) => f.requestId === id && f.type === 'text_delta');
      const t1 = now();
      await c.next((f) => f.requestId === id && (f.type === 'message_complete' || f.type === 'error'));
      if (i >= 20) {
        t.push(ms(t1 - t0));
        total.push(ms(now() - t0));
      }
    }
    results.firstDelta = { p50: pct(t, 50), p99: pct(t, 99), turnP50: pct(total, 50), turnP99: pct(total, 99) };
    await c.close();
  }
} finally {
  await stack.stop();
}

const r = results;
console.log(`ping round trip (2000 on one connection): p50 ${fmt(r.pingRtt.p50)} ms, p99 ${fmt(r.pingRtt.p99)} ms`);
console.log(`  same, straight to websocketd (no nginx):  p50 ${fmt(r.pingDirect.p50)} ms, p99 ${fmt(r.pingDirect.p99)} ms`);
console.log(`  floor: websocketd running /bin/cat:       p50 ${fmt(r.pingCat.p50)} ms, p99 ${fmt(r.pingCat.p99)} ms`);
console.log(`connect to first pong (200, sequential):   p50 ${fmt(r.connectToPong.p50)} ms, p99 ${fmt(r.connectToPong.p99)} ms`);
console.log(`new connections per second (8 loops, 5 s): ${r.connectionsPerSecond.rate.toFixed(0)}/s, errors ${r.connectionsPerSecond.errors}`);
console.log(
  `memory per idle connection (${r.memory.connections} open, ${r.memory.programs} programs): ` +
    `meao-ws PSS ${r.memory.programPssKbPerConn.toFixed(1)} kB + websocketd ${r.memory.websocketdKbPerConn.toFixed(1)} kB = ${r.memory.totalKbPerConn.toFixed(1)} kB`,
);
console.log(`idle connections held 10 s: ${r.idleHeld.opened} opened, ${r.idleHeld.openErrors} open errors, ${r.idleHeld.pingFailures} ping failures`);
console.log(
  `first text_delta, 8-word echo turn (200): p50 ${fmt(r.firstDelta.p50)} ms, p99 ${fmt(r.firstDelta.p99)} ms; ` +
    `whole turn p50 ${fmt(r.firstDelta.turnP50)} ms, p99 ${fmt(r.firstDelta.turnP99)} ms`,
);
