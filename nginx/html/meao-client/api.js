// REST client for /api/v1 (the envelope of API.md) and the token store.
//
// Tokens live in localStorage ("meao.tokens": the pair from pairing or a
// refresh). Every call carries the access token; a 401 AUTH_INVALID_TOKEN
// refreshes once (POST /auth/refresh rotates both tokens) and retries. A
// timer refreshes ahead of expiry; listeners hear about every new pair (the
// WebSocket re-authenticates its open connection with it).

const KEY = 'meao.tokens';
const listeners = new Set();
let refreshing = null;
let refreshTimer = null;

export class ApiError extends Error {
  constructor(status, code, message, retryAfter) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'HTTP_ERROR';
    this.retryAfter = retryAfter;
  }
}

export function tokens() {
  try {
    return JSON.parse(localStorage.getItem(KEY) || 'null');
  } catch {
    return null;
  }
}

export function saveTokens(pair) {
  localStorage.setItem(KEY, JSON.stringify(pair));
  scheduleRefresh();
  for (const fn of listeners) fn(pair);
}

export function clearTokens() {
  localStorage.removeItem(KEY);
  clearTimeout(refreshTimer);
}

/** fn(pair) runs after every refresh. */
export function onTokens(fn) {
  listeners.add(fn);
}

async function parse(res) {
  if (res.status === 204) return null;
  let body = null;
  try {
    body = await res.json();
  } catch {
    /* nginx error pages are JSON too, but be safe */
  }
  if (res.ok && body && body.success !== false) return body.data !== undefined ? body.data : body;
  const err = (body && body.error) || {};
  throw new ApiError(res.status, err.code, err.message, err.retryAfter);
}

async function raw(method, path, body, token) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  const res = await fetch(`/api/v1${path}`, {
    method,
    headers,
    body: body !== undefined ? JSON.stringify(body) : undefined,
    cache: 'no-store',
  });
  return parse(res);
}

/** Rotate the token pair (once at a time); throws when the refresh token is dead. */
export function refresh() {
  if (!refreshing) {
    const t = tokens();
    refreshing = (async () => {
      if (!t || !t.refreshToken) throw new ApiError(401, 'AUTH_REQUIRED', 'Not paired');
      const pair = await raw('POST', '/auth/refresh', { refreshToken: t.refreshToken });
      saveTokens(pair);
      return pair;
    })().finally(() => {
      refreshing = null;
    });
  }
  return refreshing;
}

function scheduleRefresh() {
  clearTimeout(refreshTimer);
  const t = tokens();
  if (!t || !t.expiresAt) return;
  // five minutes before expiry (at least a minute from now)
  const at = Date.parse(t.expiresAt) - 5 * 60 * 1000;
  const wait = Math.max(60 * 1000, at - Date.now());
  refreshTimer = setTimeout(() => refresh().catch(() => {}), Math.min(wait, 2 ** 31 - 1));
}

/** An authenticated call; refreshes once on an invalid token. */
export async function api(method, path, body) {
  const t = tokens();
  if (!t) throw new ApiError(401, 'AUTH_REQUIRED', 'Not paired');
  try {
    return await raw(method, path, body, t.token);
  } catch (e) {
    if (!(e instanceof ApiError) || e.code !== 'AUTH_INVALID_TOKEN') throw e;
    const pair = await refresh();
    return raw(method, path, body, pair.token);
  }
}

/** Unauthenticated pairing calls. */
export function pairRequest(deviceName) {
  return raw('POST', '/auth/pair/request', { deviceName });
}
export function pairComplete(body) {
  return raw('POST', '/auth/pair/complete', body);
}

scheduleRefresh();
