// api.js — REST calls and the login session (tokens).
//
// Tokens live in localStorage under "parley.auth" so a reload stays logged in.
// The access token is refreshed a minute before it expires and on any 401;
// refresh tokens rotate, so every refresh stores the new one. Another tab may
// rotate first: before refreshing we re-read storage and adopt a newer token.

const AUTH_KEY = 'parley.auth';
const EARLY_MS = 60_000;          // refresh this long before expiry

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'http_' + status;
  }
}

function readStored() {
  try {
    const a = JSON.parse(localStorage.getItem(AUTH_KEY) || 'null');
    if (a && a.access_token && a.refresh_token && a.user) return a;
  } catch { /* corrupt: ignore */ }
  return null;
}

export class Api {
  constructor() {
    this.auth = readStored();
    this.onLoggedOut = () => {};
    this.onTokens = () => {};
    this._refreshing = null;
    this._timer = 0;
    window.addEventListener('storage', (ev) => {
      if (ev.key !== AUTH_KEY) return;
      const a = readStored();
      if (!a && this.auth) { this.auth = null; this.onLoggedOut(); }
      else if (a && this.auth && a.user.id === this.auth.user.id) { this.auth = a; this._schedule(); }
    });
    this._schedule();
  }

  get user() { return this.auth ? this.auth.user : null; }

  _store(body) {
    this.auth = {
      user: body.user || (this.auth && this.auth.user),
      access_token: body.access_token,
      refresh_token: body.refresh_token,
      expires_at: Date.now() + (body.expires_in || 900) * 1000,
    };
    try { localStorage.setItem(AUTH_KEY, JSON.stringify(this.auth)); } catch { /* private mode */ }
    this._schedule();
    this.onTokens();
  }

  _clear() {
    this.auth = null;
    clearTimeout(this._timer);
    try { localStorage.removeItem(AUTH_KEY); } catch { /* ignore */ }
  }

  _schedule() {
    clearTimeout(this._timer);
    if (!this.auth) return;
    const wait = Math.max(5_000, this.auth.expires_at - Date.now() - EARLY_MS);
    this._timer = setTimeout(() => { this.refresh().catch(() => {}); }, Math.min(wait, 2 ** 31 - 1));
  }

  async _fetch(method, path, body, token) {
    const headers = {};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (token) headers.Authorization = 'Bearer ' + token;
    const ctl = new AbortController();
    const t = setTimeout(() => ctl.abort(), 15_000);
    let res;
    try {
      res = await fetch(path, {
        method, headers, body: body === undefined ? undefined : JSON.stringify(body),
        signal: ctl.signal, cache: 'no-store', credentials: 'omit',
      });
    } catch (e) {
      throw new ApiError(0, 'network', 'Cannot reach the server');
    } finally {
      clearTimeout(t);
    }
    let data = null;
    if (res.status !== 204) {
      const text = await res.text();
      if (text) { try { data = JSON.parse(text); } catch { data = null; } }
    }
    if (!res.ok) {
      const err = data && data.error;
      throw new ApiError(res.status, err && err.code, err && err.message);
    }
    return data;
  }

  async register(username, password) {
    this._store(await this._fetch('POST', '/api/v1/auth/register', { username, password }));
    return this.auth.user;
  }

  async login(username, password) {
    this._store(await this._fetch('POST', '/api/v1/auth/login', { username, password }));
    return this.auth.user;
  }

  /** Rotates the refresh token. Resolves true when new tokens are stored;
   *  on 401 the session is over (logged out). Network errors reject. */
  refresh() {
    if (this._refreshing) return this._refreshing;
    this._refreshing = (async () => {
      const stored = readStored();
      if (stored && this.auth && stored.user.id === this.auth.user.id &&
          stored.refresh_token !== this.auth.refresh_token) {
        this.auth = stored;                    // another tab rotated it
        if (stored.expires_at - Date.now() > EARLY_MS) { this._schedule(); return true; }
      }
      if (!this.auth) return false;
      const used = this.auth.refresh_token;
      try {
        this._store(await this._fetch('POST', '/api/v1/auth/refresh', { refresh_token: used }));
        return true;
      } catch (e) {
        if (e.status === 401) {
          // Two tabs refreshing at once: the server rotated the token for
          // the other one and refused ours (without revoking, inside its
          // reuse grace). Its new tokens reach storage a moment later:
          // adopt them rather than log out (and wipe them).
          if (await this._adoptNewer(used)) return true;
          this._clear();
          this.onLoggedOut();
          return false;
        }
        throw e;
      }
    })().finally(() => { this._refreshing = null; });
    return this._refreshing;
  }

  /** Waits up to ~1.5 s for another tab to store tokens newer than `used`
   *  for the same user; true when adopted (here, or already by the
   *  'storage' listener). */
  async _adoptNewer(used) {
    for (let i = 0; i < 8; i++) {
      if (this.auth && this.auth.refresh_token !== used) return true;
      const stored = readStored();
      if (stored && this.auth && stored.user.id === this.auth.user.id &&
          stored.refresh_token !== used) {
        this.auth = stored;
        this._schedule();
        return true;
      }
      await new Promise((r) => setTimeout(r, 200));
    }
    return false;
  }

  /** A usable access token (refreshed first when about to expire). */
  async token() {
    if (!this.auth) throw new ApiError(401, 'unauthorized', 'Not logged in');
    if (this.auth.expires_at - Date.now() < EARLY_MS / 2) {
      try { await this.refresh(); } catch { /* offline: try the old one */ }
    }
    if (!this.auth) throw new ApiError(401, 'unauthorized', 'Not logged in');
    return this.auth.access_token;
  }

  /** An authenticated REST call; on 401 refreshes once and retries. */
  async call(method, path, body) {
    const tok = await this.token();
    try {
      return await this._fetch(method, path, body, tok);
    } catch (e) {
      if (e.status !== 401) throw e;
      if (!(await this.refresh())) throw e;
      return this._fetch(method, path, body, this.auth.access_token);
    }
  }

  /** Resolves when no token refresh is in flight (whatever its outcome). */
  idle() {
    return (this._refreshing || Promise.resolve()).then(() => {}, () => {});
  }

  /** DELETE /api/v1/me with the password asked again (a wrong one is a
   *  403). token() refreshed one close to expiry, so there is no refresh
   *  and retry: the ApiError is the answer.
   *  On success the account's tokens (revoked by the server) are forgotten. */
  async deleteAccount(password) {
    const tok = await this.token();
    await this._fetch('DELETE', '/api/v1/me', { password }, tok);
    this._clear();
  }

  async logout() {
    const a = this.auth;
    this._clear();
    if (!a) return;
    try {
      await this._fetch('POST', '/api/v1/auth/logout', { refresh_token: a.refresh_token }, a.access_token);
    } catch { /* best effort: tokens are gone from this browser anyway */ }
  }
}
