// conn.js — the connection to the server: the WebSocket to /ws, or, where
// WebSocket cannot get through, the HTTP fallback (Server-Sent Events from
// GET /api/v1/events to receive, REST to send); authenticate, keep alive,
// reconnect.
//
// States: "connecting" (first attempt), "online" (after `ready`),
// "reconnecting" (dropped; waiting with exponential backoff and jitter, or
// dialing again), "offline" (the browser says it has no network; we wait for
// it to come back). Each attempt authenticates and presents the caller's
// cursors, so the server replays what was missed: in the WebSocket's `auth`
// message, or (SSE) as a Last-Event-ID made from them (the id format is
// public: docs/protocol.md "Server-Sent Events").
//
// Transport: WebSocket first. After WS_FAILS_FOR_SSE dials in a row that
// never reached `ready` while the server answered plain HTTP (blocked by a
// proxy, say; a dial that fails while the server is away, restarting, is no
// such sign and does not count), the stream is read with
// fetch() (which, unlike EventSource, sends the Authorization header: the
// token never goes into a URL), and every WS_PROBE_EVERY_MS a WebSocket is
// tried again; one that opens takes over. On SSE, `online` stays false (the
// callers' REST paths serve history and actions) and send() carries what the
// app sends by itself over REST: `send` (its ack or error comes back through
// message() as over the WebSocket), `read`, `delivered`; `sync` restarts the
// stream from the caller's cursors; typing and presence are not sent.

const BACKOFF_BASE_MS = 300;
const BACKOFF_MAX_MS = 5_000;
const PING_EVERY_MS = 20_000;     // also our presence heartbeat (any message counts)
const DEAD_AFTER_MS = 45_000;     // nothing heard for this long: reconnect
const READY_TIMEOUT_MS = 10_000;
const WS_FAILS_FOR_SSE = 3;       // WebSocket dials in a row without `ready`: use SSE
const WS_PROBE_EVERY_MS = 60_000; // on SSE: try a WebSocket again this often
const SSE_DEAD_AFTER_MS = 45_000; // heartbeats come every 15 s (--sse-heartbeat)

// ---- the SSE id (docs/protocol.md "Server-Sent Events", ids) -------------
// "c1." + base64url(varint n, n x [varint conv delta, varint seq], crc32 le)

function varint(out, v) {
  while (v >= 128) { out.push((v % 128) + 128); v = Math.floor(v / 128); }
  out.push(v);
}

function crc32(bytes) {
  let c = 0xffffffff;
  for (const b of bytes) {
    c ^= b;
    for (let k = 0; k < 8; k++) c = (c >>> 1) ^ (0xedb88320 & -(c & 1));
  }
  return (c ^ 0xffffffff) >>> 0;
}

/** The Last-Event-ID for cursors {conversationId: lastAppliedSeq}. */
export function encodeCursorId(cursors) {
  const list = Object.entries(cursors).map(([k, v]) => [Number(k), Number(v)])
    .filter(([k, v]) => Number.isSafeInteger(k) && k > 0 && Number.isSafeInteger(v) && v >= 0)
    .sort((a, b) => a[0] - b[0]);
  const bytes = [];
  varint(bytes, list.length);
  let prev = 0;
  for (const [conv, seq] of list) { varint(bytes, conv - prev); varint(bytes, seq); prev = conv; }
  const crc = crc32(bytes);
  for (let k = 0; k < 4; k++) bytes.push(Math.floor(crc / 2 ** (8 * k)) % 256);
  return 'c1.' + btoa(String.fromCharCode(...bytes)).replace(/\+/g, '-').replace(/\//g, '_').replace(/=+$/, '');
}

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
    this.transport = 'ws';         // 'ws' or 'sse' (the HTTP fallback)
    this.wsFails = 0;              // WebSocket dials in a row that never got `ready`
    this.sse = null;               // the stream's AbortController while one is open
    this.sseClose = 0;             // the code of the stream's last `close` event
    this.probe = 0;                // timer: try a WebSocket again (on SSE)
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

  /** Sends when online; returns false otherwise (the caller queues). On
   *  SSE: what the header says. */
  send(obj) {
    if (this.transport === 'sse') return this._sseSend(obj);
    if (!this.online) return false;
    try { this.ws.send(JSON.stringify(obj)); return true; } catch { return false; }
  }

  /** A request whose reply carries the same `req`. Rejects when offline,
   *  on an `error` reply, on a drop, or after timeoutMs. */
  request(obj, timeoutMs = 10_000) {
    if (this.transport === 'sse' && this.state === 'online') return this._sseRequest(obj);
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
    clearTimeout(this.probe);
    if (this.sse) { try { this.sse.abort(); } catch { /* ignore */ } this.sse = null; }
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
    if (this.transport === 'ws' && this.wsFails >= WS_FAILS_FOR_SSE) {
      this.transport = 'sse';                   // WebSocket does not get through here
      this.attempt = 0;
    }
    if (this.transport === 'sse') { this._dialSse(); return; }
    if (this.stopped || this.ws) return;
    if (navigator.onLine === false) { this._setState('offline'); return; }
    if (this.state !== 'connecting') this._setState('reconnecting', { dialing: true });
    const gen = ++this.gen;
    const token = await this._dialToken(gen);
    if (token === null) return;
    const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
    let ws;
    try { ws = new WebSocket(url); } catch { this.wsFails++; this._scheduleRetry(); return; }
    this.ws = ws;
    let gotReady = false;
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
        gotReady = true;
        this.wsFails = 0;
        this.pinger = setInterval(() => this._keepAlive(gen), PING_EVERY_MS / 2);
      }
      this._onMessage(msg);
    };
    ws.onclose = (ev) => {
      if (gen !== this.gen) return;
      this.ws = null;
      this._drop(1000, '');
      if (ev.code === 4001) this._authFailed();
      else if (!gotReady) this._wsFailed(this.gen);
      else this._scheduleRetry();
    };
    ws.onerror = () => { /* onclose follows */ };
  }

  /** A message from the server, either transport. */
  _onMessage(msg) {
    if (msg.type === 'reconnect') { this._serverLeaving(msg); return; }
    if (msg.type === 'ready') {
      clearTimeout(this.readyTimer);
      this.attempt = 0;
      this.authFailures = 0;
      this._setState('online', { transport: this.transport });
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
  }

  _lost() {
    const noReady = this.transport === 'ws' && this.state !== 'online';   // no `ready` in time
    this._drop(4000, 'no answer');
    if (noReady) this._wsFailed(this.gen);
    else this._scheduleRetry();
  }

  /** A WebSocket dial that never reached `ready`. It counts toward the HTTP
   *  fallback only if plain HTTP gets through to the server meanwhile: when
   *  the server itself is away (a restart), WebSocket is not what is wrong,
   *  and the fallback (no typing, no presence) would outlast the outage by
   *  up to WS_PROBE_EVERY_MS. */
  async _wsFailed(gen) {
    let reachable = false;
    try {
      const r = await fetch('/healthz', { cache: 'no-store', credentials: 'omit' });
      reachable = r.ok;
    } catch { /* the server is away */ }
    if (gen !== this.gen || this.stopped) return;
    if (reachable) this.wsFails++;
    this._scheduleRetry();
  }

  /** The server drains (`reconnect`, docs/protocol.md): everything we sent
   *  that it received is acknowledged already; leave now and dial again
   *  after retry_after_ms, showing "reconnecting" meanwhile (sends wait in
   *  the outbox and go out, with their keys, once back). */
  _serverLeaving(msg) {
    const wait = Math.max(0, Number(msg.retry_after_ms) || 1000);
    this._drop(1000, 'server going away');
    this.attempt = 0;
    const at = Math.round(wait + Math.random() * wait / 2);
    this._setState('reconnecting', { retryAt: Date.now() + at });
    clearTimeout(this.timer);
    this.timer = setTimeout(() => this._dial(), at);
  }

  // ---- the HTTP fallback: Server-Sent Events in, REST out -----------------

  /** The access token for dial number gen, or null when this dial is over:
   *  superseded or stopped, logged out (401), or failed (a retry is set). */
  async _dialToken(gen) {
    let token;
    try {
      token = await this.h.token();
    } catch (e) {
      if (gen !== this.gen) return null;
      if (!(e && e.status === 401)) this._scheduleRetry();   // 401: logged out
      return null;
    }
    if (gen !== this.gen || this.stopped) return null;
    return token;
  }

  async _dialSse() {
    if (this.stopped || this.ws || this.sse) return;
    if (navigator.onLine === false) { this._setState('offline'); return; }
    if (this.state !== 'connecting') this._setState('reconnecting', { dialing: true, transport: 'sse' });
    const gen = ++this.gen;
    const token = await this._dialToken(gen);
    if (token === null) return;
    const ctl = new AbortController();
    this.sse = ctl;
    this.sseClose = 0;
    const headers = { Authorization: 'Bearer ' + token, Accept: 'text/event-stream' };
    const cur = this.h.cursors();
    if (Object.keys(cur).length) headers['Last-Event-ID'] = encodeCursorId(cur);
    this.readyTimer = setTimeout(() => { if (gen === this.gen) this._lost(); }, READY_TIMEOUT_MS);
    let res;
    try {
      res = await fetch('/api/v1/events', { headers, signal: ctl.signal, cache: 'no-store', credentials: 'omit' });
    } catch {
      if (gen === this.gen) { this._drop(1000, ''); this._scheduleRetry(); }
      return;
    }
    if (gen !== this.gen) return;
    if (res.status === 401) { this._drop(1000, ''); this._authFailed(); return; }
    if (!res.ok || !res.body) { this._drop(1000, ''); this._scheduleRetry(); return; }
    this.lastRx = Date.now();
    this.pinger = setInterval(() => {
      if (gen === this.gen && Date.now() - this.lastRx > SSE_DEAD_AFTER_MS) this._lost();
    }, 5_000);
    this._scheduleProbe(gen);
    const reader = res.body.getReader();
    const dec = new TextDecoder();
    let buf = '', data = [];
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done || gen !== this.gen) break;
        this.lastRx = Date.now();
        buf += dec.decode(value, { stream: true });
        for (let i = buf.indexOf('\n'); i >= 0; i = buf.indexOf('\n')) {
          let line = buf.slice(0, i);
          buf = buf.slice(i + 1);
          if (line.endsWith('\r')) line = line.slice(0, -1);
          if (line === '') {                               // end of an event
            if (data.length) this._sseEvent(data.join('\n'));
            data = [];
          } else if (line.startsWith('data:')) {
            data.push(line.slice(line[5] === ' ' ? 6 : 5));
          }                                                  // comments (heartbeats), id:
        }
        if (gen !== this.gen) break;
      }
    } catch { /* aborted, or the network */ }
    if (gen !== this.gen) return;
    const code = this.sseClose;
    this._drop(1000, '');
    if (code === 4001) this._authFailed();
    else this._scheduleRetry();
  }

  _sseEvent(text) {
    let msg;
    try { msg = JSON.parse(text); } catch { return; }
    if (!msg || typeof msg !== 'object') return;
    if (msg.type === 'close') { this.sseClose = msg.code; return; }   // the stream ends next
    this._onMessage(msg);
  }

  /** On SSE, a WebSocket is tried now and then; one that opens takes over. */
  _scheduleProbe(gen) {
    clearTimeout(this.probe);
    this.probe = setTimeout(() => {
      if (gen !== this.gen || this.transport !== 'sse' || this.stopped) return;
      const url = (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.host + '/ws';
      let t;
      try { t = new WebSocket(url); } catch { this._scheduleProbe(gen); return; }
      t.onopen = () => {
        try { t.close(1000, 'probe'); } catch { /* ignore */ }
        if (gen !== this.gen || this.transport !== 'sse') return;
        this.transport = 'ws';
        this.wsFails = 0;
        this._drop(1000, 'websocket works again');
        this._dialNow();
      };
      t.onerror = t.onclose = () => { if (gen === this.gen) this._scheduleProbe(gen); t.onerror = t.onclose = null; };
    }, WS_PROBE_EVERY_MS);
  }

  /** An authenticated REST call; on 401 the tokens are refreshed once. */
  async _rest(method, path, body) {
    for (let i = 0; ; i++) {
      const headers = { Authorization: 'Bearer ' + await this.h.token() };
      if (body !== undefined) headers['Content-Type'] = 'application/json';
      const res = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store', credentials: 'omit',
      });
      if (res.status === 401 && i === 0 && await this.h.authFailed().catch(() => false)) continue;
      const text = res.status === 204 ? '' : await res.text();
      let data = null;
      if (text) { try { data = JSON.parse(text); } catch { data = null; } }
      if (!res.ok) {
        const err = (data && data.error) || {};
        const e = new Error(err.message || `HTTP ${res.status}`);
        e.code = err.code || 'http_' + res.status;
        e.retry_after = err.retry_after;
        throw e;
      }
      return data || {};
    }
  }

  _sseSend(obj) {
    if (this.state !== 'online') return false;
    const base = obj.conversation != null ? `/api/v1/conversations/${obj.conversation}` : '';
    switch (obj.type) {
      case 'send': {
        const body = { client_msg_id: obj.client_msg_id, body: obj.body };
        if (obj.reply_to != null) body.reply_to = obj.reply_to;
        if (obj.attachments) body.attachments = obj.attachments;
        this._rest('POST', `${base}/messages`, body).then(
          (ack) => this._onMessage({ ...ack, type: 'sent', req: obj.req }),
          (e) => this._onMessage({
            type: 'error', req: obj.req, conversation: obj.conversation,
            code: e.code === 'http_0' || e instanceof TypeError ? 'unavailable' : e.code,
            message: e.message, retry_after: e.retry_after,
          }));
        return true;
      }
      case 'read':
      case 'delivered':
        this._rest('POST', `${base}/${obj.type}`, { seq: obj.seq }).catch(() => {});
        return true;
      case 'sync': {                          // a gap: start again from the caller's cursors
        const gen = this.gen;
        setTimeout(() => { if (gen === this.gen && this.transport === 'sse') { this._drop(1000, ''); this._dialNow(); } }, 0);
        return true;
      }
      default:                                // typing, presence, ping: WebSocket only
        return false;
    }
  }

  async _sseRequest(obj) {
    const base = `/api/v1/conversations/${obj.conversation}`;
    switch (obj.type) {
      case 'history': {
        const q = ['after', 'before', 'limit'].filter((k) => obj[k] != null).map((k) => `${k}=${obj[k]}`).join('&');
        return { ...(await this._rest('GET', `${base}/messages${q ? '?' + q : ''}`)), type: 'history' };
      }
      case 'receipts':
        return { ...(await this._rest('GET', `${base}/receipts${obj.seq ? '?seq=' + obj.seq : ''}`)), type: 'receipts' };
      case 'presence_query':
        return { ...(await this._rest('GET', `/api/v1/presence?users=${(obj.users || []).join(',')}`)), type: 'presence' };
      default:
        throw new Error('offline');
    }
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
