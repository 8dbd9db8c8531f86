// A small WebSocket test client on the `ws` package (a real RFC 6455 client):
// collects every frame the server sends, in order, and lets a test wait for
// the next one matching a predicate.
//
//   const c = await WsClient.open(stack.wsUrl(), { token });
//   c.send({ type: 'ping' });
//   const pong = await c.next((f) => f.type === 'pong');

import WebSocket from 'ws';

export class WsClient {
  constructor(ws) {
    this.ws = ws;
    this.frames = []; // every parsed frame, in arrival order
    this.raw = []; // the same, as text
    this.cursor = 0; // frames before this index were consumed by next()
    this.waiters = new Set();
    this.closeInfo = null;
    this.closed = new Promise((resolve) => {
      ws.on('close', (code, reason) => {
        this.closeInfo = { code, reason: reason.toString() };
        resolve(this.closeInfo);
        this.wake();
      });
    });
    ws.on('message', (data) => {
      const text = data.toString();
      this.raw.push(text);
      let f;
      try {
        f = JSON.parse(text);
      } catch {
        f = { type: '__unparsable', text };
      }
      this.frames.push(f);
      this.wake();
    });
    ws.on('error', () => {
      /* reported through close */
    });
  }

  /**
   * Connect; resolves with a client once open. opts: token (Authorization
   * header), origin, headers. Rejects with err.status set when the upgrade
   * is refused with an HTTP answer.
   */
  static open(url, { token, origin, headers = {}, timeoutMs = 5000 } = {}) {
    const h = { ...headers };
    if (token) h.Authorization = `Bearer ${token}`;
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, { headers: h, origin, handshakeTimeout: timeoutMs });
      const client = new WsClient(ws);
      ws.once('open', () => resolve(client));
      ws.once('unexpected-response', (req, res) => {
        let body = '';
        res.on('data', (d) => {
          body += d;
        });
        res.on('end', () => {
          const e = new Error(`upgrade refused: ${res.statusCode}`);
          e.status = res.statusCode;
          e.body = body;
          reject(e);
        });
      });
      ws.once('error', reject);
    });
  }

  wake() {
    for (const w of this.waiters) w();
  }

  send(obj) {
    this.ws.send(typeof obj === 'string' || Buffer.isBuffer(obj) ? obj : JSON.stringify(obj));
  }

  /**
   * The next unconsumed frame for which pred is true (frames before it are
   * consumed too). Rejects after timeoutMs, or when the socket closes first.
   */
  next(pred = () => true, timeoutMs = 5000) {
    return new Promise((resolve, reject) => {
      let timer;
      const check = () => {
        for (let i = this.cursor; i < this.frames.length; i++) {
          if (pred(this.frames[i])) {
            this.cursor = i + 1;
            done();
            resolve(this.frames[i]);
            return;
          }
        }
        if (this.closeInfo) {
          done();
          const seen = JSON.stringify(this.frames.slice(-5));
          reject(new Error(`socket closed (${this.closeInfo.code}) before the frame; last: ${seen}`));
        }
      };
      const done = () => {
        clearTimeout(timer);
        this.waiters.delete(check);
      };
      timer = setTimeout(() => {
        done();
        reject(new Error(`no matching frame in ${timeoutMs} ms; last: ${JSON.stringify(this.frames.slice(-5))}`));
      }, timeoutMs);
      this.waiters.add(check);
      check();
    });
  }

  /** next() by type. */
  nextType(type, timeoutMs) {
    return this.next((f) => f.type === type, timeoutMs);
  }

  /** Frames of the turn requestId up to and including its final frame. */
  async turn(requestId, timeoutMs = 10000) {
    const out = [];
    for (;;) {
      const f = await this.next(
        (x) => x.requestId === requestId || x.correlationId === requestId,
        timeoutMs,
      );
      out.push(f);
      if (f.type === 'message_complete' || f.type === 'error') return out;
    }
  }

  close() {
    try {
      this.ws.close();
    } catch {
      /* already */
    }
    return this.closed;
  }

  /** Drop the TCP connection without a close handshake. */
  terminate() {
    this.ws.terminate();
    return this.closed;
  }
}
