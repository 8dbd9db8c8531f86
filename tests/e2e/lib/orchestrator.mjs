// End-to-end harness for meao-orchestrator: a private daemon per call.
//
// startOrchestrator({config, env}) makes a temp directory with a workspace
// root (and a work directory `s1` inside it), writes a config pointing the
// socket, pid file and workspace there, starts $MEAO_BUILD_DIR/meao-orchestrator
// under `setpriv --pdeathsig` (it dies with us even on kill -9) and waits until
// it answers a ping. stop() ends it by pid (SIGTERM, then SIGKILL after a
// grace period) and fails when a sanitizer reported in its log.
//
// connect() gives a JSON-lines client over the unix socket: send(obj|string|
// Buffer), next(ms) (the next frame, or null at end of stream), until(type),
// rest() (every frame until the daemon closes), close().
//
// Environment: MEAO_BUILD_DIR (see stack.mjs), MEAO_E2E_KEEP=1 keeps the temp
// directory, MEAO_E2E_DEBUG=1 prints the daemon's log at stop.

import { spawn } from 'node:child_process';
import fs from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { buildDir, childPids, fatal, waitFor, within } from './stack.mjs';

export const orchBin = path.join(buildDir, 'meao-orchestrator');

const live = new Set();
process.on('exit', () => {
  for (const child of live) {
    try {
      process.kill(child.pid, 'SIGKILL');
    } catch {
      /* gone */
    }
  }
});

const SANITIZER_RE = /ERROR: (AddressSanitizer|LeakSanitizer)|runtime error:|SUMMARY: UndefinedBehaviorSanitizer/;

/** A JSON-lines client on one connection. */
export class LineClient {
  constructor(sock) {
    this.sock = sock;
    this.buf = '';
    this.frames = [];
    this.waiters = [];
    this.ended = false;
    this.closed = new Promise((resolve) => sock.once('close', resolve));
    sock.setEncoding('utf8');
    sock.on('data', (d) => {
      this.buf += d;
      let i;
      while ((i = this.buf.indexOf('\n')) >= 0) {
        const line = this.buf.slice(0, i);
        this.buf = this.buf.slice(i + 1);
        if (line.length === 0) continue;
        this.frames.push(JSON.parse(line));
      }
      this.wake();
    });
    const end = () => {
      this.ended = true;
      this.wake();
    };
    sock.on('end', end);
    sock.on('close', end);
    sock.on('error', end);
  }

  wake() {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }

  /** Send an object (one line), a string (sent as is, plus a newline) or raw bytes. */
  send(msg) {
    if (Buffer.isBuffer(msg)) this.sock.write(msg);
    else if (typeof msg === 'string') this.sock.write(`${msg}\n`);
    else this.sock.write(`${JSON.stringify(msg)}\n`);
  }

  /** The next frame; null once the daemon closed and nothing is left. */
  async next(timeoutMs = 5000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.frames.length) return this.frames.shift();
      if (this.ended) return null;
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms`);
      await within(new Promise((resolve) => this.waiters.push(resolve)), left);
    }
  }

  /** Frames up to and including the first of `type` (throws at end of stream). */
  async until(type, timeoutMs = 5000) {
    const got = [];
    for (;;) {
      const f = await this.next(timeoutMs);
      if (f === null) throw new Error(`stream ended before ${type}: ${JSON.stringify(got)}`);
      got.push(f);
      if (f.type === type) return got;
    }
  }

  /** Every frame until the daemon closes the connection. */
  async rest(timeoutMs = 5000) {
    const got = [];
    for (;;) {
      const f = await this.next(timeoutMs);
      if (f === null) return got;
      got.push(f);
    }
  }

  close() {
    this.sock.destroy();
  }
}

export class Orchestrator {
  constructor(opts = {}) {
    this.opts = opts;
    this.dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-orch-'));
    this.root = path.join(this.dir, 'workspace');
    this.workDir = path.join(this.root, 's1');
    fs.mkdirSync(this.workDir, { recursive: true });
    this.socket = path.join(this.dir, 'orchestrator.sock');
    this.pidFile = path.join(this.dir, 'orchestrator.pid');
    this.logFile = path.join(this.dir, 'orchestrator.log');
    this.configFile = path.join(this.dir, 'meao.conf');
    this.child = null;
    this.stopped = false;
    this.seq = 0;
  }

  writeConfig() {
    const cfg = {
      orchestrator_socket: this.socket,
      orchestrator_socket_mode: '0660',
      pid_file: this.pidFile,
      workspace_root: this.root,
      provider: 'echo',
      log_level: 'info',
      log_file: '',
      ...(this.opts.config || {}),
    };
    const text = Object.entries(cfg)
      .filter(([, v]) => v !== undefined && v !== null)
      .map(([k, v]) => `${k} = ${v}`)
      .join('\n');
    fs.writeFileSync(this.configFile, `# written by tests/e2e/lib/orchestrator.mjs\n${text}\n`);
    this.config = cfg;
  }

  /** Start the daemon (config written first) and wait until it answers a ping. */
  async start() {
    if (!fs.existsSync(orchBin)) {
      throw new Error(`${orchBin} not found: build first (cmake --build), or set MEAO_BUILD_DIR`);
    }
    this.writeConfig();
    this.child = this.spawn();
    const child = this.child;
    await waitFor(
      async () => {
        if (child.exitInfo) throw fatal(`meao-orchestrator exited early (${JSON.stringify(child.exitInfo)}):\n${this.log()}`);
        if (!fs.existsSync(this.socket)) return false;
        const pong = await this.call({ type: 'ping', v: 1 }).catch(() => null);
        return pong && pong.type === 'pong';
      },
      { timeoutMs: 15000, what: `meao-orchestrator on ${this.socket}` },
    );
    // threads before any turn: the main one (plus a sanitizer's own, if any);
    // turn threads are pooled, idle ones exit after 2 s and 2 stay warm
    this.startTasks = this.taskCount();
    this.idleTasksMax = this.startTasks + 2;
    return this;
  }

  /** Spawn the binary with this config (also used to start a second one that must fail). */
  spawn() {
    const fd = fs.openSync(this.logFile, 'a');
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', orchBin, '-c', this.configFile], {
      cwd: this.dir,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...(this.opts.env || {}) },
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
    });
    return child;
  }

  get pid() {
    return this.child ? this.child.pid : 0;
  }

  log() {
    try {
      return fs.readFileSync(this.logFile, 'utf8');
    } catch {
      return '';
    }
  }

  /** Open a connection. */
  connect() {
    return new Promise((resolve, reject) => {
      const sock = net.connect(this.socket);
      sock.once('connect', () => resolve(new LineClient(sock)));
      sock.once('error', reject);
    });
  }

  /** A short call: send msg on a fresh connection, return the first frame; the daemon closes. */
  async call(msg, timeoutMs = 5000) {
    const c = await this.connect();
    try {
      c.send(msg);
      const f = await c.next(timeoutMs);
      const more = await c.rest(timeoutMs);
      if (more.length) throw new Error(`short call answered more than one frame: ${JSON.stringify(more)}`);
      return f;
    } finally {
      c.close();
    }
  }

  /** A turn request object; session fields and the rest can be overridden. */
  turnRequest(content, { requestId, userId = 'u1', workDir = this.workDir, trustedTools, toolPolicies, history, session = {} } = {}) {
    return {
      type: 'turn',
      v: 1,
      requestId: requestId || `t-${process.pid}-${++this.seq}`,
      session: { id: 's1', userId, channel: 'test', workDir, ...(trustedTools ? { trustedTools } : {}), ...session },
      ...(toolPolicies ? { toolPolicies } : {}),
      history: history || [],
      content,
    };
  }

  /** Connect and send a turn; returns { client, requestId }. */
  async turn(content, opts = {}) {
    const c = await this.connect();
    const req = this.turnRequest(content, opts);
    c.send(req);
    c.requestId = req.requestId;
    return c;
  }

  /** Open descriptors and threads of the daemon, from /proc. */
  fdCount() {
    return fs.readdirSync(`/proc/${this.pid}/fd`).length;
  }

  taskCount() {
    return fs.readdirSync(`/proc/${this.pid}/task`).length;
  }

  children() {
    return childPids(this.pid);
  }

  /**
   * The daemon's thread count once the turn-thread pool has shrunk back
   * (idle threads exit after 2 s, 2 stay warm): at most idleTasksMax, or,
   * with a runtime that starts threads of its own later (TSan), a count that
   * held still across an idle period.
   */
  async settledTaskCount(timeoutMs = 12000) {
    const deadline = Date.now() + timeoutMs;
    let last = this.taskCount();
    for (;;) {
      if (last <= this.idleTasksMax) return last;
      await sleep(2200);
      const now = this.taskCount();
      if (now === last) return now;
      if (Date.now() > deadline) throw new Error(`thread count still moving: ${last} -> ${now}`);
      last = now;
    }
  }

  /** Send a signal and wait for the exit; SIGKILL after graceMs. */
  async kill(signal = 'SIGTERM', graceMs = 10000) {
    if (!this.child || this.child.exitInfo) return this.child ? this.child.exitInfo : null;
    try {
      process.kill(this.child.pid, signal);
    } catch {
      /* gone */
    }
    let res = await within(this.child.exited, graceMs);
    if (!res) {
      try {
        process.kill(this.child.pid, 'SIGKILL');
      } catch {
        /* gone */
      }
      res = await this.child.exited;
    }
    return res;
  }

  /** Stop the daemon by pid and clean up; throws when a sanitizer reported. */
  async stop() {
    if (this.stopped) return;
    this.stopped = true;
    await this.kill('SIGTERM');
    const log = this.log();
    if (process.env.MEAO_E2E_DEBUG) process.stderr.write(`--- ${this.logFile}\n${log}\n`);
    if (process.env.MEAO_E2E_KEEP) process.stderr.write(`kept ${this.dir}\n`);
    else fs.rmSync(this.dir, { recursive: true, force: true });
    if (SANITIZER_RE.test(log)) throw new Error(`sanitizer report in the orchestrator's log:\n${log}`);
  }
}

/** new Orchestrator(opts).start() */
export async function startOrchestrator(opts = {}) {
  return new Orchestrator(opts).start();
}
