// Plain CGI hosting (issue 9): deploy/cgi/meao.cgi run the way a web server
// runs a CGI program — a fresh process per request, the request in the
// environment as Apache sets it after deploy/cgi/htaccess.example's rewrite
// (REQUEST_URI as the client sent it, SCRIPT_NAME of the script, Authorization
// passed by CGIPassAuth), the body on stdin — answers the REST API: probes,
// an authenticated call, a POST with a body, and clear errors.

import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';

import { buildDir, ctlBin, repoDir } from './lib/stack.mjs';

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'meao-cgi-'));
const conf = path.join(dir, 'meao.conf');
let token = '';

before(() => {
  const example = fs.readFileSync(path.join(repoDir, 'deploy/cgi/meao.conf.example'), 'utf8');
  fs.writeFileSync(conf, example.replaceAll('/home/USER/meao', dir), { mode: 0o600 });
  fs.mkdirSync(path.join(dir, 'data'), { mode: 0o700 });
  const init = spawnSync(ctlBin, ['-c', conf, 'init'], { encoding: 'utf8' });
  assert.equal(init.status, 0, init.stderr);
  const add = spawnSync(ctlBin, ['-c', conf, 'user', 'add', '--role', 'owner', 'owner'], { encoding: 'utf8' });
  assert.equal(add.status, 0, add.stderr);
  token = add.stdout.trim();
});

after(() => {
  fs.rmSync(dir, { recursive: true, force: true });
});

/** One request through the CGI script; returns { status, headers, json }. */
function cgi(method, uri, { auth = true, body, env = {} } = {}) {
  const q = uri.indexOf('?');
  const e = {
    PATH: process.env.PATH,
    HOME: dir,
    MEAO_BIN: path.join(buildDir, 'cgi', 'meao-fcgi'),
    MEAO_CONF: conf,
    GATEWAY_INTERFACE: 'CGI/1.1',
    SERVER_PROTOCOL: 'HTTP/1.1',
    SERVER_SOFTWARE: 'Apache',
    SERVER_NAME: 'example.org',
    SERVER_PORT: '443',
    HTTPS: 'on',
    REQUEST_METHOD: method,
    REQUEST_URI: uri,
    QUERY_STRING: q >= 0 ? uri.slice(q + 1) : '',
    SCRIPT_NAME: '/cgi-bin/meao.cgi',
    SCRIPT_FILENAME: path.join(repoDir, 'deploy/cgi/meao.cgi'),
    REMOTE_ADDR: '198.51.100.7',
    HTTP_HOST: 'example.org',
    HTTP_USER_AGENT: 'curl/8',
    ...(auth ? { HTTP_AUTHORIZATION: `Bearer ${token}` } : {}),
    ...(body !== undefined
      ? { CONTENT_TYPE: 'application/json', CONTENT_LENGTH: String(Buffer.byteLength(body)) }
      : {}),
    ...env,
  };
  const r = spawnSync(path.join(repoDir, 'deploy/cgi/meao.cgi'), [], {
    env: e,
    input: body || '',
    encoding: 'utf8',
    timeout: 10000,
  });
  assert.equal(r.status, 0, r.stderr);
  const sep = r.stdout.indexOf('\r\n\r\n');
  assert.ok(sep > 0, `a CGI response: ${JSON.stringify(r.stdout)}`);
  const head = r.stdout.slice(0, sep).split('\r\n');
  const headers = Object.fromEntries(
    head.map((l) => [l.slice(0, l.indexOf(':')).toLowerCase(), l.slice(l.indexOf(':') + 1).trim()]),
  );
  const status = Number(/^(\d{3}) /.exec(headers.status)[1]);
  const text = r.stdout.slice(sep + 4);
  return { status, headers, json: text ? JSON.parse(text) : undefined, stderr: r.stderr };
}

test('probes and authenticated REST, one process per request', () => {
  const h = cgi('GET', '/health', { auth: false });
  assert.equal(h.status, 200);
  assert.equal(h.json.status, 'ok');
  assert.ok(h.headers['x-request-id']);
  const me = cgi('GET', '/api/v1/auth/me');
  assert.equal(me.status, 200);
  assert.equal(me.json.data.name, 'owner');
  const s = cgi('POST', '/api/v1/sessions', { body: JSON.stringify({ channel: 'rest' }) });
  assert.equal(s.status, 201, JSON.stringify(s.json));
  const list = cgi('GET', '/api/v1/sessions?limit=5');
  assert.equal(list.status, 200);
  assert.equal(list.json.data.sessions[0].id, s.json.data.id);
});

test('errors stay clear under CGI', () => {
  const noAuth = cgi('GET', '/api/v1/auth/me', { auth: false });
  assert.equal(noAuth.status, 401);
  assert.equal(noAuth.json.error.code, 'AUTH_REQUIRED');
  const missing = cgi('GET', '/api/v1/nope');
  assert.equal(missing.status, 404);
  const bad = cgi('POST', '/api/v1/sessions', { body: '{"channel":' });
  assert.equal(bad.status, 400);
  const big = cgi('POST', '/api/v1/sessions', {
    body: 'x',
    env: { CONTENT_LENGTH: String(64 * 1024 * 1024) }, // declared, never sent: not read
  });
  assert.equal(big.status, 413);
  // no orchestrator on a CGI-only host: a turn is a clear 503, not a hang
  const sid = cgi('POST', '/api/v1/sessions', { body: '{"channel":"rest"}' }).json.data.id;
  const turn = cgi('POST', `/api/v1/sessions/${sid}/messages`, { body: '{"content":"hi"}' });
  assert.equal(turn.status, 503);
  assert.equal(turn.json.error.code, 'SERVICE_UNAVAILABLE');
});
