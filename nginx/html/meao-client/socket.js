// The chat connection: /ws?v=1 on this page's origin, authenticated with the
// first frame (browsers cannot set headers on a WebSocket), reconnecting
// with exponential backoff and jitter (a random delay between half and all
// of 0.5 s doubling up to 30 s; reset by a connection that stayed up 10 s),
// re-authenticating an open connection when
// the tokens are refreshed. Events: "state" (detail: connecting | open |
// offline), "frame" (detail: a server frame), "authfail".

import { refresh, tokens } from './api.js';

const BASE_MS = 500;
const MAX_MS = 30000;
const STABLE_MS = 10000;

export class ChatSocket extends EventTarget {
  constructor() {
    super();
    this.ws = null;
    this.state = 'offline';
    this.attempt = 0;
    this.timer = null;
    this.stopped = false;
    this.openedAt = 0;
  }

  setState(s) {
    this.state = s;
    this.dispatchEvent(new CustomEvent('state', { detail: s }));
  }

  start() {
    this.stopped = false;
    this.connect();
  }

  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    if (this.ws) this.ws.close();
  }

  connect() {
    clearTimeout(this.timer);
    const t = tokens();
    if (!t) return;
    const proto = window.location.protocol === 'https:' ? 'wss:' : 'ws:';
    const ws = new WebSocket(`${proto}//${window.location.host}/ws?v=1`);
    this.ws = ws;
    this.setState('connecting');
    ws.addEventListener('open', () => {
      ws.send(JSON.stringify({ type: 'auth', token: tokens().token, requestId: 'auth' }));
    });
    ws.addEventListener('message', (ev) => {
      let f;
      try {
        f = JSON.parse(ev.data);
      } catch {
        return;
      }
      if (f.type === 'auth_result') return this.onAuth(f);
      if (f.type === 'error' && f.reauth) {
        // our token was rotated or revoked: send the current one
        this.reauth();
        return;
      }
      this.dispatchEvent(new CustomEvent('frame', { detail: f }));
    });
    ws.addEventListener('close', () => {
      if (this.ws !== ws) return;
      this.ws = null;
      if (this.openedAt && Date.now() - this.openedAt > STABLE_MS) this.attempt = 0;
      this.openedAt = 0;
      this.setState('offline');
      if (!this.stopped) this.schedule();
    });
  }

  async onAuth(f) {
    if (f.success) {
      this.openedAt = Date.now();
      this.setState('open');
      return;
    }
    if (f.error && f.error.code === 'AUTH_INVALID_TOKEN') {
      try {
        await refresh(); // the next connection uses the new pair
      } catch {
        this.stopped = true;
        this.dispatchEvent(new CustomEvent('authfail'));
      }
    }
  }

  async reauth() {
    const t = tokens();
    if (this.ws && t) this.ws.send(JSON.stringify({ type: 'auth', token: t.token, requestId: 'reauth' }));
  }

  schedule() {
    const cap = Math.min(MAX_MS, BASE_MS * 2 ** this.attempt);
    this.attempt++;
    const delay = Math.round(cap / 2 + Math.random() * (cap / 2));
    this.timer = setTimeout(() => this.connect(), delay);
  }

  /** Send a frame when the connection is ready; false when it is not. */
  send(frame) {
    if (this.state !== 'open' || !this.ws) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }
}
