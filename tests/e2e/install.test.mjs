// The packaged install (issue 9 acceptance): deploy/install into a temporary
// root, start every unit's ExecStart as its unit file says (User, Group,
// SupplementaryGroups, UMask, RuntimeDirectory — systemd is not PID 1 here),
// include the two snippets with the lines the installer printed into a stock
// nginx server {}, and pass smoke tests through it: probes, an authenticated
// REST call, a message turn, a WebSocket ping, a reload (ExecReload) with
// requests in flight. Then: re-running the installer changes nothing, and
// --uninstall keeps the data unless --purge.
//
// Needs root (the units run as the `meao` system user, which the installer
// creates), nginx, websocketd and setpriv; skipped otherwise.

import { spawn, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { buildDir, childPids, freePort, isRoot, pidAlive, portOpenAt, repoDir, waitFor } from './lib/stack.mjs';
import { WsClient } from './lib/wsclient.mjs';

const have = (cmd) => spawnSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'ignore' }).status === 0;
const skip = !isRoot
  ? 'needs root (creates the meao system user)'
  : !have('websocketd') || !have('nginx') || !have('setpriv')
    ? 'needs nginx, websocketd and setpriv'
    : false;

const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;
const root = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-install-'));
fs.chmodSync(root, 0o755); // the meao user and nginx's workers traverse it
const logDir = path.join(root, 'test-logs');
const unitDir = path.join(root, 'usr/local/lib/systemd/system');
const procs = new Map(); // unit name -> child
let wsPort = 0;
let port = 0;
let token = '';
let includes = [];
let nginx = null;

function runInstall(args) {
  const r = spawnSync('bash', [path.join(repoDir, 'deploy/install'), '--root', root, '--build', buildDir, ...args], {
    encoding: 'utf8',
    timeout: 120000,
  });
  if (r.status !== 0) throw new Error(`deploy/install ${args.join(' ')} exited ${r.status}:\n${r.stderr}`);
  return r;
}

/** [Service] of a unit file: key -> list of values (an empty assignment resets the list). */
function parseUnit(name) {
  const text = fs.readFileSync(path.join(unitDir, name), 'utf8');
  const svc = {};
  let section = '';
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    if (!line || line.startsWith('#') || line.startsWith(';')) continue;
    const sec = /^\[(.+)\]$/.exec(line);
    if (sec) {
      section = sec[1];
      continue;
    }
    if (section !== 'Service') continue;
    const i = line.indexOf('=');
    const key = line.slice(0, i);
    const value = line.slice(i + 1);
    if (value === '') svc[key] = [];
    else (svc[key] ||= []).push(value);
  }
  return svc;
}

const one = (svc, key, dflt) => (svc[key] && svc[key].length ? svc[key][svc[key].length - 1] : dflt);

/** Start a unit's ExecStart as the unit file specifies. */
function startUnit(name) {
  const svc = parseUnit(name);
  const user = one(svc, 'User', 'root');
  const group = one(svc, 'Group', user);
  const supp = (svc.SupplementaryGroups || []).join(' ').split(/\s+/).filter(Boolean);
  const umask = one(svc, 'UMask', '0022');
  // RuntimeDirectory= lives under /run; in the relocated tree that is ROOT/run
  for (const dir of (svc.RuntimeDirectory || []).join(' ').split(/\s+/).filter(Boolean)) {
    const p = path.join(root, 'run', dir);
    fs.mkdirSync(p, { recursive: true });
    const ids = spawnSync('id', ['-u', user], { encoding: 'utf8' }).stdout.trim();
    const gid = spawnSync('getent', ['group', group], { encoding: 'utf8' }).stdout.split(':')[2];
    fs.chownSync(p, Number(ids), Number(gid));
    fs.chmodSync(p, parseInt(one(svc, 'RuntimeDirectoryMode', '0755'), 8));
  }
  const argv = one(svc, 'ExecStart').split(/\s+/);
  const wrap = ['--pdeathsig', 'TERM', `--reuid=${user}`, `--regid=${group}`];
  wrap.push(supp.length ? `--groups=${supp.join(',')}` : '--clear-groups');
  const log = path.join(logDir, `${name}.log`);
  const fd = fs.openSync(log, 'a');
  const child = spawn('setpriv', [...wrap, '--', 'sh', '-c', 'umask "$0"; exec "$@"', umask, ...argv], {
    detached: true,
    stdio: ['ignore', fd, fd],
  });
  fs.closeSync(fd);
  child.log = log;
  child.svc = svc;
  child.exitInfo = null;
  child.exited = new Promise((resolve) =>
    child.on('exit', (code, signal) => {
      child.exitInfo = { code, signal };
      resolve(child.exitInfo);
    }),
  );
  procs.set(name, child);
  return child;
}

async function stopAll() {
  for (const name of ['meao-websocketd.service', 'meao-fcgi.service', 'meao-orchestrator.service']) {
    const child = procs.get(name);
    if (!child) continue;
    if (!child.exitInfo) {
      try {
        process.kill(child.pid, 'SIGTERM');
      } catch {
        /* gone */
      }
      const done = await Promise.race([child.exited, new Promise((r) => setTimeout(() => r(null), 10000))]);
      if (!done) process.kill(-child.pid, 'SIGKILL');
    }
    procs.delete(name);
    const text = fs.readFileSync(child.log, 'utf8');
    assert.doesNotMatch(text, SANITIZER_RE, `${name} log:\n${text}`);
  }
  if (nginx && !nginx.exitInfo) {
    process.kill(nginx.pid, 'SIGQUIT');
    await Promise.race([nginx.exited, new Promise((r) => setTimeout(r, 5000))]);
    try {
      process.kill(-nginx.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
  nginx = null;
}

process.on('exit', () => {
  for (const child of [...procs.values(), nginx].filter(Boolean)) {
    try {
      process.kill(-child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

/** A stock nginx.conf with one plain server {} that includes meao. */
function writeNginx() {
  const dir = path.join(root, 'nginx-test');
  fs.mkdirSync(path.join(dir, 'tmp'), { recursive: true });
  const [upstream, server] = includes;
  const conf = `user www-data www-data;
worker_processes 1;
daemon off;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log info;
events { worker_connections 1024; }
http {
    client_body_temp_path ${dir}/tmp/client_body;
    fastcgi_temp_path ${dir}/tmp/fastcgi;
    proxy_temp_path ${dir}/tmp/proxy;
    scgi_temp_path ${dir}/tmp/scgi;
    uwsgi_temp_path ${dir}/tmp/uwsgi;
    access_log ${dir}/access.log;
    ${upstream}
    server {
        listen 127.0.0.1:${port};
        server_name localhost;
        location / {
            return 200 "the operator's own site\\n";
        }
        ${server}
    }
}
`;
  const file = path.join(dir, 'nginx.conf');
  fs.writeFileSync(file, conf);
  return { dir, file };
}

const url = (p) => `http://127.0.0.1:${port}${p}`;
async function call(method, p, body) {
  const headers = { Authorization: `Bearer ${token}` };
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const r = await fetch(url(p), { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : undefined, text };
}

const sha = (f) => createHash('sha256').update(fs.readFileSync(f)).digest('hex');

before(async () => {
  if (skip) return;
  fs.mkdirSync(logDir, { recursive: true });
  wsPort = await freePort();
  port = await freePort();
});

after(async () => {
  if (skip) return;
  await stopAll();
  if (process.env.MEAO_E2E_KEEP) console.error(`kept ${root}`);
  else fs.rmSync(root, { recursive: true, force: true });
});

test('install, run the units as written, serve through a stock nginx server {}', { skip }, async (t) => {
  const r = runInstall(['--ws-port', String(wsPort)]);
  token = r.stdout.trim();
  assert.match(token, /^meao_at_[A-Za-z0-9]+$/, 'the first owner token is printed once on stdout');
  includes = [...r.stderr.matchAll(/^\s*(include \S+;)$/gm)].map((m) => m[1]);
  assert.equal(includes.length, 2, r.stderr);
  assert.match(includes[0], /share\/meao\/nginx\/meao-upstream\.conf;$/);
  assert.match(includes[1], /share\/meao\/nginx\/meao\.conf;$/);

  await t.test('files, owners and modes', () => {
    const st = (p) => fs.statSync(path.join(root, p));
    const meaoUid = Number(spawnSync('id', ['-u', 'meao'], { encoding: 'utf8' }).stdout);
    for (const bin of ['meao-fcgi', 'meao-orchestrator', 'meao-ws', 'meaoctl', 'meao-replay']) {
      assert.ok(st(`usr/local/bin/${bin}`).mode & 0o111, bin);
    }
    assert.equal(st('etc/meao').mode & 0o777, 0o750);
    assert.equal(st('etc/meao/meao.conf').mode & 0o777, 0o640);
    assert.equal(st('etc/meao/meao.conf').uid, 0);
    assert.equal(st('var/lib/meao').mode & 0o777, 0o700);
    assert.equal(st('var/lib/meao').uid, meaoUid);
    assert.equal(st('var/lib/meao/secret.key').mode & 0o777, 0o600);
    assert.equal(st('var/lib/meao/secret.key').uid, meaoUid);
    assert.equal(st('var/lib/meao/meao.db').uid, meaoUid);
    const conf = fs.readFileSync(path.join(root, 'etc/meao/meao.conf'), 'utf8');
    assert.match(conf, /^fcgi_socket_group = www-data$/m);
    assert.match(conf, new RegExp(`^db_path = ${root}/var/lib/meao/meao.db$`, 'm'));
    for (const u of ['meao-fcgi.service', 'meao-orchestrator.service', 'meao-websocketd.service']) {
      const svc = parseUnit(u);
      for (const key of ['NoNewPrivileges', 'ProtectSystem', 'ProtectHome', 'PrivateTmp', 'ReadWritePaths',
        'RestrictAddressFamilies', 'SystemCallFilter', 'CapabilityBoundingSet', 'Restart']) {
        assert.ok(key in svc, `${u} sets ${key}`);
      }
      assert.equal(one(svc, 'User'), 'meao');
    }
  });

  // in the order the units' After= gives
  for (const u of ['meao-orchestrator.service', 'meao-fcgi.service', 'meao-websocketd.service']) {
    const child = startUnit(u);
    await waitFor(
      async () => {
        if (child.exitInfo) throw new Error(`${u} exited: ${fs.readFileSync(child.log, 'utf8')}`);
        if (u === 'meao-websocketd.service') return portOpenAt(wsPort);
        return fs.existsSync(path.join(root, 'run/meao', u === 'meao-fcgi.service' ? 'fcgi.sock' : 'orchestrator.sock'));
      },
      { timeoutMs: 15000, what: `${u} to listen` },
    );
  }

  await t.test('socket modes: only nginx group may write to the FastCGI socket', () => {
    const wwwGid = Number(spawnSync('getent', ['group', 'www-data'], { encoding: 'utf8' }).stdout.split(':')[2]);
    const sock = fs.statSync(path.join(root, 'run/meao/fcgi.sock'));
    assert.equal(sock.mode & 0o777, 0o660);
    assert.equal(sock.gid, wwwGid);
    assert.equal(fs.statSync(path.join(root, 'run/meao')).mode & 0o777, 0o711);
    const orch = fs.statSync(path.join(root, 'run/meao/orchestrator.sock'));
    assert.equal(orch.mode & 0o777, 0o660);
  });

  const ng = writeNginx();
  const check = spawnSync('nginx', ['-t', '-q', '-p', ng.dir, '-e', path.join(ng.dir, 'error.log'), '-c', ng.file], {
    encoding: 'utf8',
  });
  assert.equal(check.status, 0, check.stderr);
  nginx = spawn('nginx', ['-p', ng.dir, '-e', path.join(ng.dir, 'error.log'), '-c', ng.file], {
    detached: true,
    stdio: 'ignore',
  });
  nginx.exitInfo = null;
  nginx.exited = new Promise((resolve) => nginx.on('exit', (code) => resolve((nginx.exitInfo = { code }))));
  await waitFor(() => portOpenAt(port), { timeoutMs: 10000, what: 'nginx' });

  await t.test('probes and the operator site', async () => {
    const h = await fetch(url('/health'));
    assert.equal(h.status, 200);
    assert.equal((await h.json()).status, 'ok');
    const rd = await fetch(url('/ready'));
    const ready = await rd.json();
    assert.equal(rd.status, 200, JSON.stringify(ready));
    assert.deepEqual(ready.checks, { database: 'ok', orchestrator: 'ok' });
    const site = await fetch(url('/'));
    assert.equal(await site.text(), "the operator's own site\n");
    // the browser client lives under /meao-client/, installed with its CSP
    const page = await fetch(url('/meao-client/'));
    assert.equal(page.status, 200);
    assert.match(await page.text(), /<script type="module" src="\/meao-client\/app.js">/);
    assert.match(page.headers.get('content-security-policy'), /default-src 'none'/);
    const js = await fetch(url('/meao-client/app.js'));
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /javascript/);
  });

  await t.test('authenticated REST and a turn on the orchestrator', async () => {
    const me = await call('GET', '/api/v1/auth/me');
    assert.equal(me.status, 200, me.text);
    assert.equal(me.json.data.role, 'owner');
    assert.equal(me.json.data.name, 'owner');
    const s = await call('POST', '/api/v1/sessions', { channel: 'rest' });
    assert.equal(s.status, 201, s.text);
    const m = await call('POST', `/api/v1/sessions/${s.json.data.id}/messages`, { content: 'hello install' });
    assert.equal(m.status, 200, m.text);
    assert.match(m.json.data.content, /hello install/);
    const bad = await fetch(url('/api/v1/auth/me'), { headers: { Authorization: 'Bearer meao_at_nope' } });
    assert.equal(bad.status, 401);
  });

  await t.test('WebSocket ping through nginx and websocketd', async () => {
    const c = await WsClient.open(`ws://127.0.0.1:${port}/ws?v=1`, { token });
    c.send({ type: 'ping', timestamp: 42 });
    const pong = await c.next((f) => f.type === 'pong');
    assert.equal(pong.timestamp, 42);
    c.close();
  });

  await t.test('meaoctl doctor: all ok, then names what is wrong and how to fix it', () => {
    const ctl = path.join(root, 'usr/local/bin/meaoctl');
    const conf = path.join(root, 'etc/meao/meao.conf');
    const doctor = (...extra) =>
      spawnSync(ctl, ['-c', conf, 'doctor', '--nginx-conf', ng.file, ...extra], { encoding: 'utf8', timeout: 20000 });
    const good = doctor();
    assert.equal(good.status, 0, good.stdout + good.stderr);
    assert.match(good.stdout, /^0 failed, 0 warning\(s\)$/m);
    assert.match(good.stdout, /^ok {4}nginx includes meao-upstream.conf and meao.conf$/m);
    assert.match(good.stdout, /^ok {4}orchestrator answers a ping$/m);
    const secret = path.join(root, 'var/lib/meao/secret.key');
    fs.chmodSync(secret, 0o644);
    try {
      const bad = doctor();
      assert.equal(bad.status, 1);
      assert.match(bad.stdout, new RegExp(`^FAIL  secret file ${secret} — mode 0644 is too open: chmod 0600 ${secret}$`, 'm'));
    } finally {
      fs.chmodSync(secret, 0o600);
    }
    const bare = path.join(root, 'nginx-test', 'bare.conf');
    fs.writeFileSync(bare, `pid ${root}/nginx-test/bare.pid;\nevents {}\nhttp { server { listen 127.0.0.1:1; } }\n`);
    const noSnippet = spawnSync(ctl, ['-c', conf, 'doctor', '--nginx-conf', bare], { encoding: 'utf8' });
    assert.equal(noSnippet.status, 1);
    assert.match(noSnippet.stdout, /^FAIL  nginx snippet meao-upstream.conf — not included: add `include/m);
  });

  await t.test('reload (ExecReload) swaps workers while requests are in flight', async () => {
    const fcgi = procs.get('meao-fcgi.service');
    const before = childPids(fcgi.pid).filter(pidAlive);
    assert.ok(before.length > 0);
    const reload = one(fcgi.svc, 'ExecReload').replace('$MAINPID', String(fcgi.pid)).split(/\s+/);
    let stop = false;
    const statuses = [];
    const loop = async () => {
      while (!stop) {
        const res = await fetch(url('/ready'));
        await res.arrayBuffer();
        statuses.push(res.status);
      }
    };
    const loops = Array.from({ length: 6 }, loop);
    await new Promise((r) => setTimeout(r, 300));
    assert.equal(spawnSync(reload[0], reload.slice(1)).status, 0);
    await waitFor(() => childPids(fcgi.pid).filter(pidAlive).every((p) => !before.includes(p)), {
      timeoutMs: 10000,
      what: 'a fresh set of workers',
    });
    await new Promise((r) => setTimeout(r, 300));
    stop = true;
    await Promise.all(loops);
    assert.ok(statuses.length > 20, `only ${statuses.length} requests`);
    assert.deepEqual([...new Set(statuses)], [200], 'no request failed across the reload');
    assert.ok(pidAlive(fcgi.pid), 'the master stays (same MAINPID)');
  });

  await stopAll();

  await t.test('meaoctl doctor with the services stopped', () => {
    const r = spawnSync(
      path.join(root, 'usr/local/bin/meaoctl'),
      ['-c', path.join(root, 'etc/meao/meao.conf'), 'doctor', '--no-nginx'],
      { encoding: 'utf8' },
    );
    assert.equal(r.status, 1);
    assert.match(r.stdout, /^FAIL  responder socket .* — no socket: is meao-fcgi running\? \(systemctl start meao-fcgi/m);
    assert.match(r.stdout, /^FAIL  orchestrator ping — no answer: systemctl restart meao-orchestrator$/m);
  });

  await t.test('a second run is idempotent', () => {
    const conf = path.join(root, 'etc/meao/meao.conf');
    const confHash = sha(conf);
    const again = runInstall(['--ws-port', String(wsPort)]);
    assert.equal(again.stdout.trim(), '', 'no second token');
    assert.match(again.stderr, /an owner already exists/);
    assert.equal(sha(conf), confHash, 'meao.conf is the operator’s: kept');
  });

  await t.test('--uninstall keeps the data; --purge removes it', () => {
    runInstall(['--uninstall']);
    assert.ok(!fs.existsSync(path.join(root, 'usr/local/bin/meao-fcgi')));
    assert.ok(!fs.existsSync(path.join(unitDir, 'meao-fcgi.service')));
    assert.ok(!fs.existsSync(path.join(root, 'usr/local/share/meao')));
    assert.ok(fs.existsSync(path.join(root, 'etc/meao/meao.conf')));
    assert.ok(fs.existsSync(path.join(root, 'var/lib/meao/meao.db')));
    runInstall(['--uninstall', '--purge']);
    assert.ok(!fs.existsSync(path.join(root, 'etc/meao')));
    assert.ok(!fs.existsSync(path.join(root, 'var/lib/meao')));
  });

  await t.test('--staged: a tree staged with DESTDIR installs without touching existing directories', () => {
    const stage = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-stage-')); // 0700
    try {
      const st = spawnSync('cmake', ['--install', buildDir], { env: { ...process.env, DESTDIR: stage }, encoding: 'utf8' });
      assert.equal(st.status, 0, st.stderr);
      const modeBefore = fs.statSync(root).mode & 0o7777;
      const r = spawnSync('bash', [path.join(repoDir, 'deploy/install'), '--root', root, '--staged', stage], {
        encoding: 'utf8',
        timeout: 120000,
      });
      assert.equal(r.status, 0, r.stderr);
      assert.match(r.stdout.trim(), /^meao_at_/);
      assert.equal(fs.statSync(root).mode & 0o7777, modeBefore, 'the root directory keeps its mode');
      assert.equal(fs.statSync(path.join(root, 'usr/local/bin/meao-fcgi')).uid, 0);
      runInstall(['--uninstall', '--purge']);
      assert.ok(!fs.existsSync(path.join(root, 'usr/local/bin/meao-fcgi')));
    } finally {
      fs.rmSync(stage, { recursive: true, force: true });
    }
  });
});
