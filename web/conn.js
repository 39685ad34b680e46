// conn.js — the WebSocket to /ws: authenticate, keep alive, reconnect.
//
// States: "connecting" (first attempt), "online" (after `ready`),
// "reconnecting" (dropped; waiting with exponential backoff and jitter, or
// dialing again), "offline" (the browser says it has no network; we wait for
// it to come back). Each attempt authenticates with its first message and
// presents the caller's cursors, so the server replays what was missed.

const BACKOFF_BASE_MS = 300;
const BACKOFF_MAX_MS = 5_000;
const PING_EVERY_MS = 20_000;     // also our presence heartbeat (any message counts)
const DEAD_AFTER_MS = 45_000;     // nothing heard for this long: reconnect
const READY_TIMEOUT_MS = 10_000;

export class Connection {
  /**
   * @param {object} h handlers:
   *   token(): Promise<string>        an access token
   *   cursors(): object                {conversationId: lastAppliedSeq}
   *   message(msg)                     every message after `ready` (and `ready` itself)
   *   state(state, detail)             connection state changes
   *   authFailed(): Promise<boolean>   4001: refresh tokens; false = give up
   */
  constructor(h) {
    this.h = h;
    this.ws = null;
    this.gen = 0;
    this.state = 'connecting';
    this.attempt = 0;
    this.timer = 0;
    this.pinger = 0;
    this.readyTimer = 0;
    this.lastRx = 0;
    this.stopped = true;
    this.authFailures = 0;
    this.nextReq = 1;
    this.pending = new Map();      // req -> {resolve, reject, timer}
    this._onOnline = () => { if (!this.stopped) this._dialNow(); };
    this._onOffline = () => { if (!this.stopped) this._goOffline(); };
  }

  start() {
    if (!this.stopped) return;
    this.stopped = false;
    window.addEventListener('online', this._onOnline);
    window.addEventListener('offline', this._onOffline);
    this._setState('connecting');
    if (navigator.onLine === false) this._goOffline();
    else this._dial();
  }

  stop() {
    this.stopped = true;
    window.removeEventListener('online', this._onOnline);
    window.removeEventListener('offline', this._onOffline);
    clearTimeout(this.timer);
    this._drop(1000, 'logout');
  }

  get online() { return this.state === 'online' && this.ws && this.ws.readyState === WebSocket.OPEN; }

  /** Sends when online; returns false otherwise (the caller queues). */
  send(obj) {
    if (!this.online) return false;
    try { this.ws.send(JSON.stringify(obj)); return true; } catch { return false; }
  }

  /** A request whose reply carries the same `req`. Rejects when offline,
   *  on an `error` reply, on a drop, or after timeoutMs. */
  request(obj, timeoutMs = 10_000) {
    return new Promise((resolve, reject) => {
      const req = this.nextReq++;
      if (!this.send({ ...obj, req })) { reject(new Error('offline')); return; }
      const timer = setTimeout(() => { this.pending.delete(req); reject(new Error('timeout')); }, timeoutMs);
      this.pending.set(req, { resolve, reject, timer });
    });
  }

  _setState(s, detail) {
    if (this.state === s && !detail) return;
    this.state = s;
    this.h.state(s, detail || {});
  }

  _goOffline() {
    clearTimeout(this.timer);
    this._drop(4000, 'browser offline');
    this._setState('offline');
  }

  _dialNow() {
    clearTimeout(this.timer);
    this.attempt = 0;
    if (!this.ws) this._dial();
  }

  _drop(code, reason) {
    const ws = this.ws;
    this.ws = null;
    this.gen++;
    clearInterval(this.pinger);
    clearTimeout(this.readyTimer);
    for (const [, p] of this.pending) { clearTimeout(p.timer); p.reject(new Error('disconnected')); }
    this.pending.clear();
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
      try { ws.close(code >= 4000 || code === 1000 ? code : 1000, reason); } catch { /* ignore */ }
    }
  }

  _scheduleRetry() {
    if (this.stopped) return;
    if (navigator.onLine === false) { this._setState('offline'); return; }
    const cap = Math.min(BACKOFF_MAX_MS, BACKOFF_BASE_MS * 2 ** this.attempt);
    const wait = Math.round(cap / 2 + Math.random() * cap / 2);     // "equal jitter"
    this.attempt = Math.min(this.attempt + 1, 10);
    this._setState('reconnecting', { retryAt: Date.now() + wait });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._dial(), wait);
  }

  async _dial() {
    if (this.stopped || this.ws) return;
    if (navigator.onLine === false) { this._setState('offline'); return; }
    if (this.state !== 'connecting') this._setState('reconnecting', { dialing: true });
    const gen = ++this.gen;
    let token;
    try {
      token = await this.h.token();
    } catch (e) {
      if (gen !== this.gen) return;
      if (e && e.status === 401) return;              // logged out
      this._scheduleRetry();
      return;
    }
    if (gen !== this.gen || this.stopped) return;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try { ws = new WebSocket(url); } catch { this._scheduleRetry(); return; }
    this.ws = ws;
    ws.onopen = () => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      ws.send(JSON.stringify({ type: 'auth', token, cursors: this.h.cursors() }));
      this.readyTimer = setTimeout(() => { if (gen === this.gen) this._lost(); }, READY_TIMEOUT_MS);
    };
    ws.onmessage = (ev) => {
      if (gen !== this.gen) return;
      this.lastRx = Date.now();
      let msg;
      try { msg = JSON.parse(ev.data); } catch { return; }
      if (!msg || typeof msg !== 'object') return;
      if (msg.type === 'ready') {
        clearTimeout(this.readyTimer);
        this.attempt = 0;
        this.authFailures = 0;
        this._setState('online');
        this.pinger = setInterval(() => this._keepAlive(gen), PING_EVERY_MS / 2);
      }
      if (msg.req !== undefined && this.pending.has(msg.req)) {
        const p = this.pending.get(msg.req);
        this.pending.delete(msg.req);
        clearTimeout(p.timer);
        if (msg.type === 'error') { const e = new Error(msg.message || msg.code); e.code = msg.code; p.reject(e); }
        else p.resolve(msg);
        return;
      }
      try { this.h.message(msg); } catch (e) { console.error('parley: handler failed', e); }
    };
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.ws = null;
      this._drop(1000, '');
      if (ev.code === 4001) this._authFailed();
      else this._scheduleRetry();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  _lost() {
    this._drop(4000, 'no answer');
    this._scheduleRetry();
  }

  async _authFailed() {
    this.authFailures++;
    if (this.authFailures > 3) { this._scheduleRetry(); return; }
    let ok = false;
    try { ok = await this.h.authFailed(); } catch { ok = true; /* network: just retry */ }
    if (!ok || this.stopped) return;
    this._scheduleRetry();
  }

  _keepAlive(gen) {
    if (gen !== this.gen || !this.ws) return;
    if (Date.now() - this.lastRx > DEAD_AFTER_MS) { this._lost(); return; }
    try { this.ws.send(JSON.stringify({ type: 'ping' })); } catch { /* onclose follows */ }
  }
}
