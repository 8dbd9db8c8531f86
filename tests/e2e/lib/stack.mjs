// End-to-end harness: a private meao stack (meao-fcgi + nginx) per call.
//
// startStack() makes a temp directory, picks a free loopback port, writes a
// meao config, starts meao-fcgi (from $MEAO_BUILD_DIR, default ../../build
// relative to tests/e2e) and nginx rendered from nginx/standalone.conf.in by
// nginx/render-standalone, and waits for GET /health. stop() ends both by pid
// (SIGTERM, then SIGKILL after a grace period), also when a test failed; a
// process 'exit' hook kills anything still running if a test file crashes,
// and every child is started under `setpriv --pdeathsig` so it dies with us
// even when we are killed with -9.
//
// Environment:
//   MEAO_BUILD_DIR   build tree holding cgi/meao-fcgi (CTest sets it)
//   MEAO_E2E_KEEP=1  keep the temp directory (logs, config) and print its path
//   MEAO_E2E_DEBUG=1 copy the responder's and nginx's logs to stderr at stop

import { spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
export const repoDir = path.resolve(here, '../../..');
export const e2eDir = path.resolve(here, '..');
export const buildDir = path.resolve(e2eDir, process.env.MEAO_BUILD_DIR || '../../build');
export const fcgiBin = path.join(buildDir, 'cgi', 'meao-fcgi');
export const ctlBin = path.join(buildDir, 'meaoctl');
export const wsBin = path.join(buildDir, 'ws', 'meao-ws');
export const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
export const NOBODY = 65534;

const live = new Set(); // every child process we started and have not reaped

// Every child leads its own process group (spawn's `detached` = setsid), so
// killing -pid also reaches what it forked (nginx and meao-fcgi workers).
function killGroup(pid, signal = 'SIGKILL') {
  for (const target of [-pid, pid]) {
    try {
      process.kill(target, signal);
    } catch {
      /* already gone */
    }
  }
}

process.on('exit', () => {
  for (const child of live) killGroup(child.pid);
});

/** A free TCP port on 127.0.0.1 (bind to 0, read it, release it). */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

function userExists(name) {
  return spawnSync('getent', ['passwd', name], { stdio: 'ignore' }).status === 0;
}

/** Pids of the direct children of pid (all threads), from /proc. */
export function childPids(pid) {
  const out = new Set();
  let tasks = [];
  try {
    tasks = fs.readdirSync(`/proc/${pid}/task`);
  } catch {
    return [];
  }
  for (const t of tasks) {
    try {
      const txt = fs.readFileSync(`/proc/${pid}/task/${t}/children`, 'utf8');
      for (const c of txt.split(/\s+/)) if (c) out.add(Number(c));
    } catch {
      /* task ended meanwhile */
    }
  }
  return [...out].sort((a, b) => a - b);
}

/** Does something accept TCP connections on 127.0.0.1:port? */
export function portOpenAt(port) {
  return new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1');
    s.on('connect', () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

export function pidAlive(pid) {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return e.code === 'EPERM';
  }
  // a zombie is not alive for our purposes
  try {
    const st = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) Z /.test(st);
  } catch {
    return false;
  }
}

/** promise's value, or null when it has not settled after ms (timer cleared either way). */
export async function within(promise, ms) {
  let timer;
  const timeout = new Promise((resolve) => {
    timer = setTimeout(() => resolve(null), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** An error that stops waitFor() at once (a process we wait on has died). */
export function fatal(message) {
  const e = new Error(message);
  e.fatal = true;
  return e;
}

/** Poll fn() until it returns a truthy value or timeoutMs passes; fn may throw fatal(). */
export async function waitFor(fn, { timeoutMs = 5000, intervalMs = 25, what = 'condition' } = {}) {
  const deadline = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      if (e && e.fatal) throw e;
      last = e;
    }
    if (Date.now() > deadline) {
      const why = last instanceof Error ? `: ${last.message}` : '';
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${why}`);
    }
    await sleep(intervalMs);
  }
}

function tail(file, lines = 30) {
  try {
    return fs.readFileSync(file, 'utf8').trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no log)';
  }
}

// Reports of the sanitizers (MEAO_SANITIZE=ON builds) in a log.
const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

export class Stack {
  constructor(opts = {}) {
    this.opts = opts;
    this.unprivileged = Boolean(opts.unprivileged) && isRoot;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-e2e-'));
    // nginx's workers (www-data or nobody) must reach the socket inside.
    fs.chmodSync(this.dir, 0o711);
    this.runDir = path.join(this.dir, 'run'); // responder-writable: socket, pid file
    this.dataDir = path.join(this.dir, 'data'); // database
    fs.mkdirSync(this.runDir, { mode: 0o755 });
    fs.mkdirSync(this.dataDir, { mode: 0o755 });
    this.socket = path.join(this.runDir, 'fcgi.sock');
    this.dbPath = path.join(this.dataDir, 'meao.db');
    this.secretFile = path.join(this.dataDir, 'secret.key');
    this.configFile = path.join(this.dir, 'meao.conf');
    this.fcgiLog = path.join(this.dir, 'fcgi.log');
    this.nginxErrorLog = path.join(this.dir, 'nginx-error.log');
    this.accessLog = path.join(this.dir, 'nginx-access.log');
    this.fcgi = null;
    this.nginx = null;
    this.websocketd = null;
    this.wsLog = path.join(this.dir, 'websocketd.log');
    this.wsPort = 0;
    this.port = 0;
    this.baseUrl = '';
    this.stopped = false;
  }

  get nginxUser() {
    if (!isRoot) return '';
    if (this.unprivileged) return 'nobody nogroup';
    return userExists('www-data') ? 'www-data www-data' : 'nobody nogroup';
  }

  writeConfig() {
    const cfg = {
      db_path: this.dbPath,
      secret_file: this.secretFile,
      fcgi_socket: this.socket,
      fcgi_socket_mode: '0660',
      // the group nginx's workers run as; the unprivileged responder keeps its own (nogroup)
      fcgi_socket_group: isRoot && !this.unprivileged ? this.nginxUser.split(' ')[1] : '',
      fcgi_workers: '2',
      pid_file: path.join(this.runDir, 'fcgi.pid'),
      log_file: '',
      log_level: 'info',
      orchestrator_socket: path.join(this.runDir, 'orchestrator.sock'),
      ratelimit_shm: path.join(this.runDir, 'ratelimit.shm'),
      workspace_root: path.join(this.dir, 'workspace'),
      debug_routes: 'true',
      ...(this.opts.config || {}),
    };
    const text = Object.entries(cfg)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n');
    fs.writeFileSync(this.configFile, `# written by tests/e2e/lib/stack.mjs\n${text}\n`, { mode: 0o644 });
    this.config = cfg;
  }

  writeSecret() {
    if (fs.existsSync(this.secretFile)) return;
    const hex = randomBytes(32).toString('hex');
    fs.writeFileSync(this.secretFile, `${hex}\n`, { mode: 0o600 });
    if (this.unprivileged) fs.chownSync(this.secretFile, NOBODY, NOBODY);
  }

  spawnLogged(cmd, args, logFile, { asNobody = false, env = {} } = {}) {
    const wrap = ['--pdeathsig', 'TERM'];
    if (asNobody) wrap.push(`--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups');
    const fd = fs.openSync(logFile, 'a');
    const child = spawn('setpriv', [...wrap, '--', cmd, ...args], {
      cwd: this.dir,
      detached: true, // own process group: a Ctrl-C aimed at the test runner is ours to forward
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...env },
    });
    fs.closeSync(fd);
    live.add(child);
    child.exitInfo = null;
    child.exited = new Promise((resolve) => {
      child.on('exit', (code, signal) => {
        live.delete(child);
        child.exitInfo = { code, signal };
        resolve(child.exitInfo);
      });
      child.on('error', (err) => {
        live.delete(child);
        child.exitInfo = { code: -1, signal: null, error: err };
        resolve(child.exitInfo);
      });
    });
    return child;
  }

  async startFcgi() {
    if (!fs.existsSync(fcgiBin)) {
      throw new Error(`${fcgiBin} not found: build first (cmake --build), or set MEAO_BUILD_DIR`);
    }
    let bin = fcgiBin;
    if (this.unprivileged) {
      fs.chownSync(this.runDir, NOBODY, NOBODY);
      // nobody may not be able to reach the build tree (e.g. a clone under
      // /root): run a copy from the temp dir instead.
      fs.mkdirSync(path.join(this.dir, 'bin'), { mode: 0o755 });
      bin = path.join(this.dir, 'bin', 'meao-fcgi');
      fs.copyFileSync(fcgiBin, bin);
      fs.chmodSync(bin, 0o755);
    }
    this.fcgi = this.spawnLogged(bin, ['-c', this.configFile], this.fcgiLog, {
      asNobody: this.unprivileged,
      env: this.opts.env || {},
    });
    const child = this.fcgi;
    await waitFor(
      () => {
        if (child.exitInfo) {
          throw fatal(`meao-fcgi exited early (${JSON.stringify(child.exitInfo)}):\n${tail(this.fcgiLog)}`);
        }
        return fs.existsSync(this.socket);
      },
      { timeoutMs: 15000, what: `meao-fcgi socket ${this.socket}` },
    );
  }

  async startNginx() {
    for (let attempt = 1; ; attempt++) {
      this.port = this.opts.port || (await freePort());
      const args = [
        path.join(repoDir, 'nginx', 'render-standalone'),
        '--run-dir', this.dir,
        '--port', String(this.port),
        '--socket', this.socket,
        '--access-log', `${this.accessLog} meao_json`,
        '--error-log', `${this.nginxErrorLog} info`,
        '--user', this.nginxUser,
        ...(this.wsPort ? ['--ws-port', String(this.wsPort)] : []),
        ...(this.opts.nginxWorkers ? ['--workers', String(this.opts.nginxWorkers)] : []),
        ...(this.opts.wsOrigins || []).flatMap((o) => ['--ws-origin', o]),
      ];
      const r = spawnSync('bash', args, { encoding: 'utf8' });
      if (r.status !== 0) throw new Error(`render-standalone failed:\n${r.stderr}`);
      const conf = r.stdout.trim();
      this.nginx = this.spawnLogged(
        'nginx',
        ['-p', path.dirname(conf), '-e', this.nginxErrorLog, '-c', conf],
        path.join(this.dir, 'nginx-stderr.log'),
      );
      this.baseUrl = `http://127.0.0.1:${this.port}`;
      const child = this.nginx;
      try {
        await waitFor(
          async () => {
            if (child.exitInfo) throw fatal('nginx exited early');
            return this.portOpen();
          },
          { timeoutMs: 10000, what: 'nginx to listen' },
        );
        return;
      } catch (e) {
        const log = tail(this.nginxErrorLog) + tail(path.join(this.dir, 'nginx-stderr.log'));
        if (attempt < 5 && /Address already in use/.test(log) && !this.opts.port) continue;
        throw new Error(`${e.message}:\n${log}`);
      }
    }
  }

  /**
   * websocketd on a free loopback port, running meao-ws with this stack's
   * config for every connection, as deploy/run-local does (opts.wsMaxForks:
   * --maxforks, default 64). meao-ws logs to its stderr, which websocketd
   * copies into websocketd.log (readLog('ws')).
   */
  async startWebsocketd(fixedPort = 0) {
    if (!fs.existsSync(wsBin)) throw new Error(`${wsBin} not found: build first`);
    for (let attempt = 1; ; attempt++) {
      this.wsPort = fixedPort || (await freePort());
      this.websocketd = this.spawnLogged(
        'websocketd',
        [
          '--address=127.0.0.1',
          `--port=${this.wsPort}`,
          `--maxforks=${this.opts.wsMaxForks || 64}`,
          '--loglevel=error',
          wsBin,
          '-c',
          this.configFile,
        ],
        this.wsLog,
      );
      const child = this.websocketd;
      try {
        await waitFor(
          async () => {
            if (child.exitInfo) throw fatal(`websocketd exited early:\n${tail(this.wsLog)}`);
            return portOpenAt(this.wsPort);
          },
          { timeoutMs: 10000, what: 'websocketd to listen' },
        );
        return;
      } catch (e) {
        if (attempt < 5 && /address already in use/i.test(tail(this.wsLog))) {
          if (fixedPort) await sleep(200);
          continue;
        }
        throw e;
      }
    }
  }

  /** Pids of the meao-ws programs websocketd is running now. */
  wsPrograms() {
    return this.websocketd ? childPids(this.websocketd.pid).filter(pidAlive) : [];
  }

  /** Zombie children of websocketd (should always be none). */
  wsZombies() {
    if (!this.websocketd) return [];
    return childPids(this.websocketd.pid).filter((pid) => {
      try {
        return /^\d+ \(.*\) Z /.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
      } catch {
        return false;
      }
    });
  }

  /** ws://.../ws?v=1 through nginx. */
  wsUrl(query = 'v=1') {
    return `ws://127.0.0.1:${this.port}/ws${query ? `?${query}` : ''}`;
  }

  portOpen() {
    return new Promise((resolve) => {
      const s = net.connect(this.port, '127.0.0.1');
      s.on('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.on('error', () => resolve(false));
    });
  }

  async start() {
    this.writeConfig();
    this.writeSecret();
    if (this.opts.prepare) await this.opts.prepare(this);
    await this.startFcgi();
    // the whole stack, as deploy/run-local runs it; {orchestrator: false} leaves it out
    if (this.opts.orchestrator !== false) await this.startOrchestrator();
    if (this.opts.ws) await this.startWebsocketd();
    // {telegram: true} also starts the Telegram worker (telegram*.test.mjs)
    if (this.opts.telegram) await this.startTelegram();
    await this.startNginx();
    await waitFor(
      async () => {
        if (this.fcgi.exitInfo) throw fatal(`meao-fcgi exited:\n${tail(this.fcgiLog)}`);
        if (this.nginx.exitInfo) throw fatal(`nginx exited:\n${tail(this.nginxErrorLog)}`);
        const r = await fetch(`${this.baseUrl}/health`);
        await r.arrayBuffer();
        return r.status === 200;
      },
      { timeoutMs: 15000, what: 'GET /health = 200' },
    );
    return this;
  }

  url(p) {
    return `${this.baseUrl}${p}`;
  }

  /** fetch + read the body: { status, headers, text, json (or undefined) }. */
  async request(p, init = {}) {
    const r = await fetch(this.url(p), { redirect: 'manual', ...init });
    const text = await r.text();
    let json;
    try {
      json = JSON.parse(text);
    } catch {
      json = undefined;
    }
    return { status: r.status, headers: r.headers, text, json };
  }

  /**
   * Send raw bytes (a whole HTTP/1.1 request) and read until the server closes
   * or a complete response arrived. Returns { status, headers (lower-case
   * names), body }. For what fetch refuses to send, e.g. invalid UTF-8.
   */
  raw(bytes, { timeoutMs = 5000 } = {}) {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.port, '127.0.0.1');
      const chunks = [];
      const timer = setTimeout(() => {
        sock.destroy();
        reject(new Error('raw request timed out'));
      }, timeoutMs);
      const finish = () => {
        clearTimeout(timer);
        const buf = Buffer.concat(chunks);
        const sep = buf.indexOf('\r\n\r\n');
        if (sep < 0) return reject(new Error(`no HTTP response: ${JSON.stringify(buf.toString('latin1'))}`));
        const head = buf.subarray(0, sep).toString('latin1').split('\r\n');
        const status = Number(head[0].split(' ')[1]);
        const headers = {};
        for (const line of head.slice(1)) {
          const i = line.indexOf(':');
          headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
        }
        resolve({ status, headers, body: buf.subarray(sep + 4).toString('utf8') });
      };
      sock.on('data', (d) => {
        chunks.push(d);
        // stop as soon as Content-Length says the response is complete
        const buf = Buffer.concat(chunks);
        const sep = buf.indexOf('\r\n\r\n');
        if (sep >= 0) {
          const m = /\r\ncontent-length:\s*(\d+)/i.exec(buf.subarray(0, sep).toString('latin1'));
          if (m && buf.length >= sep + 4 + Number(m[1])) {
            sock.destroy();
            finish();
          }
        }
      });
      sock.on('end', finish);
      sock.on('error', (e) => {
        if (chunks.length) finish();
        else {
          clearTimeout(timer);
          reject(e);
        }
      });
      sock.write(bytes);
    });
  }

  /**
   * Run meaoctl against this stack's database and secrets. Returns
   * { status, stdout, stderr, json (parsed stdout, when --json) }.
   */
  ctl(args, { json = false } = {}) {
    const r = spawnSync(ctlBin, ['-c', this.configFile, ...(json ? ['--json'] : []), ...args], {
      encoding: 'utf8',
      timeout: 15000,
    });
    let parsed;
    if (json) {
      try {
        parsed = JSON.parse(r.stdout);
      } catch {
        parsed = undefined;
      }
    }
    return { status: r.status, stdout: r.stdout, stderr: r.stderr, json: parsed };
  }

  /** Create a user with meaoctl and return { token, refreshToken, deviceId, userId }. */
  addUser(name, role = 'user') {
    const r = this.ctl(['user', 'add', '--role', role, name], { json: true });
    if (r.status !== 0 || !r.json) throw new Error(`meaoctl user add ${name}: ${r.status} ${r.stderr}`);
    return r.json;
  }

  /** Stop the responder (SIGTERM, all workers) and start it again. */
  async restartFcgi() {
    await this.endProcess(this.fcgi);
    await this.startFcgi();
  }

  get masterPid() {
    return this.fcgi ? this.fcgi.pid : 0;
  }

  workerPids() {
    return this.masterPid ? childPids(this.masterPid) : [];
  }

  readLog(which) {
    const file = {
      fcgi: this.fcgiLog,
      nginxError: this.nginxErrorLog,
      access: this.accessLog,
      ws: this.wsLog,
    }[which];
    try {
      return fs.readFileSync(file, 'utf8');
    } catch {
      return '';
    }
  }

  /** Signal a child and wait for it; SIGKILL it (and its children) after graceMs. */
  async endProcess(child, graceMs = 5000) {
    if (!child || child.exitInfo) return child ? child.exitInfo : null;
    const kids = childPids(child.pid);
    try {
      process.kill(child.pid, 'SIGTERM');
    } catch {
      /* gone */
    }
    let res = await within(child.exited, graceMs);
    if (!res) {
      for (const pid of [child.pid, ...kids]) killGroup(pid);
      res = await child.exited;
    }
    // whatever it left behind in its process group (e.g. orphaned workers)
    killGroup(child.pid);
    return res;
  }

  /**
   * Stop everything this stack started, by pid. Throws when a sanitizer
   * reported an error in the responder's log (MEAO_SANITIZE builds).
   */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    const workers = this.workerPids();
    await this.endProcess(this.nginx);
    await this.endProcess(this.websocketd);
    await this.endProcess(this.fcgi);
    // workers left behind by a master that died without reaping them
    for (const pid of workers) {
      if (pidAlive(pid)) {
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    const fcgiLog = this.readLog('fcgi') + this.readLog('ws');
    if (process.env.MEAO_E2E_DEBUG) {
      process.stderr.write(`--- ${this.fcgiLog}\n${fcgiLog}\n--- ${this.nginxErrorLog}\n${this.readLog('nginxError')}\n`);
    }
    const san = SANITIZER_RE.exec(fcgiLog);
    if (process.env.MEAO_E2E_KEEP || san) {
      process.stderr.write(`meao e2e: kept ${this.dir}\n`);
    } else {
      fs.rmSync(this.dir, { recursive: true, force: true });
    }
    if (san) {
      const at = fcgiLog.lastIndexOf('\n', san.index) + 1;
      throw new Error(`sanitizer report in meao-fcgi's log:\n${fcgiLog.slice(at, at + 4000)}`);
    }
  }
}

/** Start a stack; on failure everything already started is stopped again. */
export async function startStack(opts = {}) {
  const s = new Stack(opts);
  try {
    await s.start();
  } catch (e) {
    try {
      await s.stop();
    } catch {
      /* the start error matters more */
    }
    throw e;
  }
  return s;
}

// --- assertions shared by the test files -------------------------------------

export const UUID_V4 = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
export const VALID_ID = /^[A-Za-z0-9._:-]{1,64}$/;

/** The /api/v1 error envelope, with its requestId equal to the response header. */
export function assertErrorEnvelope(assert, res, status, code) {
  assert.equal(res.status, status, `status (body: ${res.text.slice(0, 300)})`);
  const hdrId = res.headers.get ? res.headers.get('x-request-id') : res.headers['x-request-id'];
  assert.ok(hdrId, 'X-Request-ID header present');
  assert.ok(res.json, `JSON body expected, got: ${res.text.slice(0, 200)}`);
  assert.equal(res.json.success, false);
  assert.equal(res.json.requestId, hdrId, 'envelope requestId equals X-Request-ID');
  assert.equal(typeof res.json.timestamp, 'string');
  assert.ok(!Number.isNaN(Date.parse(res.json.timestamp)), 'timestamp parses as a date');
  assert.equal(typeof res.json.error, 'object');
  assert.equal(res.json.error.code, code);
  assert.equal(typeof res.json.error.message, 'string');
  assert.ok(res.json.error.message.length <= 200, 'message at most 200 chars');
}

/** GET /health answers 200 (the responder keeps serving). */
export async function assertHealthy(assert, stack) {
  const r = await stack.request('/health');
  assert.equal(r.status, 200, `GET /health after the previous request: ${r.text.slice(0, 200)}`);
  assert.equal(r.json && r.json.status, 'ok');
}

// --- the orchestrator, for suites that run turns (sessions.test.mjs) --------
//
// Appended by the sessions work: starts build/meao-orchestrator on the
// stack's own orchestrator_socket, reading the stack's config file (the
// daemon shares the configuration keys), unless something already answers
// there (e.g. once startStack() starts the orchestrator itself). Returns a
// handle { pid, child, started, stop(signal), kill() }.

export const orchestratorBin = path.join(buildDir, 'meao-orchestrator');

function orchestratorPing(socketPath, timeoutMs = 1000) {
  return new Promise((resolve) => {
    const s = net.connect(socketPath);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      resolve(false);
    }, timeoutMs);
    s.on('connect', () => s.write('{"type":"ping","v":1}\n'));
    s.on('data', (d) => {
      buf += d;
      if (buf.includes('\n')) {
        clearTimeout(timer);
        s.destroy();
        resolve(/"pong"/.test(buf));
      }
    });
    s.on('error', () => {
      clearTimeout(timer);
      resolve(false);
    });
  });
}

Stack.prototype.orchestratorSocket = function orchestratorSocket() {
  return this.config.orchestrator_socket;
};

Stack.prototype.orchestratorAlive = function orchestratorAlive() {
  return orchestratorPing(this.orchestratorSocket());
};

Stack.prototype.startOrchestrator = async function startOrchestrator() {
  const sock = this.orchestratorSocket();
  if (this.orchestratorHandle && this.orchestratorHandle.child && !this.orchestratorHandle.child.exitInfo) {
    return this.orchestratorHandle;
  }
  if (await orchestratorPing(sock, 300)) return { pid: 0, child: null, started: false };
  if (!fs.existsSync(orchestratorBin)) throw new Error(`${orchestratorBin} not found: build it first`);
  if (this.config.workspace_root) fs.mkdirSync(this.config.workspace_root, { recursive: true, mode: 0o700 });
  try {
    fs.unlinkSync(sock); // a stale socket of a killed daemon
  } catch {
    /* none */
  }
  const log = path.join(this.dir, 'orchestrator.log');
  this.orchestratorLog = log;
  const child = this.spawnLogged(orchestratorBin, ['-c', this.configFile], log, { env: this.opts.env || {} });
  await waitFor(
    async () => {
      if (child.exitInfo) throw fatal(`meao-orchestrator exited early (${JSON.stringify(child.exitInfo)}):\n${tail(log)}`);
      return orchestratorPing(sock, 300);
    },
    { timeoutMs: 10000, what: `meao-orchestrator on ${sock}` },
  );
  const stack = this;
  const handle = {
    pid: child.pid,
    child,
    started: true,
    async stop() {
      await stack.endProcess(child);
    },
    async kill() {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await child.exited;
    },
  };
  this.orchestratorHandle = handle;
  // stopped with the stack
  const stop = this.stop.bind(this);
  this.stop = async function stopWithOrchestrator() {
    if (handle.child && !handle.child.exitInfo) await stack.endProcess(handle.child);
    const olog = (() => {
      try {
        return fs.readFileSync(log, 'utf8');
      } catch {
        return '';
      }
    })();
    if (process.env.MEAO_E2E_DEBUG) process.stderr.write(`--- ${log}\n${olog}\n`);
    const san = SANITIZER_RE.exec(olog);
    await stop();
    if (san) throw new Error(`sanitizer report in meao-orchestrator's log:\n${olog.slice(san.index, san.index + 4000)}`);
  };
  return handle;
};

// --- the Telegram worker, for suites that need it (telegram*.test.mjs) -------
//
// startTelegram() starts build/meao-telegram on the stack's config file (the
// worker shares the configuration keys: telegram_bot_token,
// telegram_api_base, ...). Returns a handle { pid, child, stop(), kill() };
// stopTelegram() ends it gracefully. The stack's stop() ends it too and fails
// when a sanitizer reported in its log.

export const telegramBin = path.join(buildDir, 'meao-telegram');

Stack.prototype.startTelegram = async function startTelegram() {
  if (this.telegramHandle && this.telegramHandle.child && !this.telegramHandle.child.exitInfo) {
    return this.telegramHandle;
  }
  if (!fs.existsSync(telegramBin)) throw new Error(`${telegramBin} not found: build it first`);
  const log = path.join(this.dir, 'telegram.log');
  this.telegramLog = log;
  let from = 0; // a restart appends to the log: look only at what this run writes
  try {
    from = fs.statSync(log).size;
  } catch {
    /* first start */
  }
  const child = this.spawnLogged(telegramBin, ['-c', this.configFile], log, { env: this.opts.env || {} });
  await waitFor(
    () => {
      if (child.exitInfo) throw fatal(`meao-telegram exited early (${JSON.stringify(child.exitInfo)}):\n${tail(log)}`);
      return /"event":"start"/.test(fs.readFileSync(log, 'utf8').slice(from));
    },
    { timeoutMs: 10000, what: 'meao-telegram to start' },
  );
  const stack = this;
  const handle = {
    pid: child.pid,
    child,
    async stop() {
      await stack.endProcess(child, 20000);
    },
    async kill() {
      try {
        process.kill(child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      await child.exited;
    },
  };
  this.telegramHandle = handle;
  if (!this.telegramStopHooked) {
    this.telegramStopHooked = true;
    const stop = this.stop.bind(this);
    this.stop = async function stopWithTelegram() {
      const h = stack.telegramHandle;
      if (h && h.child && !h.child.exitInfo) await stack.endProcess(h.child, 20000);
      let tlog = '';
      try {
        tlog = fs.readFileSync(log, 'utf8');
      } catch {
        /* never started */
      }
      if (process.env.MEAO_E2E_DEBUG) process.stderr.write(`--- ${log}\n${tlog}\n`);
      const san = SANITIZER_RE.exec(tlog);
      await stop();
      if (san) throw new Error(`sanitizer report in meao-telegram's log:\n${tlog.slice(san.index, san.index + 4000)}`);
    };
  }
  return handle;
};

Stack.prototype.stopTelegram = async function stopTelegram() {
  if (this.telegramHandle) await this.telegramHandle.stop();
};
