// lib.mjs — helpers for Parley's browser tests (playwright-core + Debian chromium).
//
// Every scenario script takes the server's base URL as its first argument (or
// $PARLEY_URL), launches /usr/bin/chromium (or $CHROMIUM), and exits 0 only
// when every check passed. Each step has its own timeout and the whole script
// a watchdog, so a hang fails fast. Screenshots go to $PARLEY_SCREENSHOTS
// (default <repo>/test-artifacts/screenshots).

import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

let chromium;
try {
  ({ chromium } = await import('playwright-core'));
} catch (e) {
  console.error('FATAL: playwright-core is not installed (run scripts/deps-browser.sh): ' + e.message);
  process.exit(3);
}

const here = path.dirname(fileURLToPath(import.meta.url));
export const BASE = (process.argv[2] || process.env.PARLEY_URL || '').replace(/\/$/, '');
export const SHOTS = process.env.PARLEY_SCREENSHOTS || path.join(here, '..', '..', 'test-artifacts', 'screenshots');
export const STEP_MS = 10_000;
export const PASSWORD = 'correct horse battery';

if (!BASE) {
  console.error('usage: node <scenario>.mjs http://127.0.0.1:PORT');
  process.exit(2);
}

const pageErrors = [];
let browser = null;

export function log(...a) {
  console.log(`[${new Date().toISOString().slice(11, 23)}]`, ...a);
}

export class CheckError extends Error {}

/** The sections of a scenario. With soft on, a failed check is noted in
 *  `failed` and the scenario goes on: the open dialogs of `pages` are
 *  closed (unless keepDialogs) and they get a desktop size again; the
 *  scenario checks `failed` at its end. Without it a failure ends the run. */
export function sections(soft) {
  const s = { failed: [], pages: [] };
  s.section = async (name, fn, keepDialogs = false) => {
    try {
      await fn();
      log(`ok: ${name}`);
    } catch (e) {
      if (!soft || !(e instanceof CheckError)) throw e;
      s.failed.push(`${name}: ${e.message}`);
      log(`FAILED: ${name}: ${e.message}`);
      for (const page of s.pages) {
        if (!keepDialogs) for (const dlg of await page.locator('dialog[open]').all()) await dlg.evaluate((d) => d.close()).catch(() => {});
        await page.setViewportSize({ width: 1180, height: 760 }).catch(() => {});
      }
    }
  };
  return s;
}

export function check(cond, msg) {
  if (!cond) throw new CheckError(msg);
}

/** Polls fn until it returns a truthy value; fails with desc after timeout. */
export async function waitFor(fn, desc, timeout = STEP_MS) {
  const end = Date.now() + timeout;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new CheckError(`timed out after ${timeout} ms waiting for: ${desc}` +
        (last instanceof Error ? ` (last error: ${last.message})` : last !== undefined ? ` (last value: ${JSON.stringify(last)})` : ''));
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

export async function launch() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  browser = await chromium.launch({
    executablePath,
    timeout: 30_000,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
      '--disable-component-update', '--disable-sync', '--no-first-run', '--disable-quic',
      '--disable-dev-shm-usage', '--disable-renderer-backgrounding',
      '--disable-background-timer-throttling', '--disable-backgrounding-occluded-windows'],
  });
  return browser;
}

/** A fresh browser context (its own storage: another person) with one page.
 *  opts: viewport, colorScheme ('light' default), permissions (e.g.
 *  ['notifications']), initScript (a function run in every page first, with
 *  initArg), locale ('en-US' default), hash (the first page's URL fragment,
 *  e.g. '#/c/3': a deep link), auth (a session from apiRegister: the page
 *  opens signed in), setup (a function given the page before its first load:
 *  to listen to its WebSockets or requests from the start). */
export async function person(name, opts = {}) {
  const ctx = await browser.newContext({
    viewport: opts.viewport || { width: 1180, height: 760 },
    deviceScaleFactor: 1,
    locale: opts.locale || 'en-US',
    timezoneId: 'UTC',
    colorScheme: opts.colorScheme || 'light',
    permissions: opts.permissions || [],
  });
  ctx.setDefaultTimeout(STEP_MS);
  // opts.auth (see signedIn): the first page starts with that session where
  // the client keeps it, as after a sign-in and a reload. Once per context:
  // later loads (reloads, new tabs) find what the client left there (after
  // a logout: nothing). (newContext's storageState does the same but opens
  // a page of its own first: ~3 s a context on a busy machine.)
  if (opts.auth) {
    await ctx.addInitScript(({ key, value, origin }) => {
      try {
        if (location.origin !== origin || localStorage.getItem('test.seeded')) return;
        localStorage.setItem('test.seeded', '1');
        localStorage.setItem(key, value);
      } catch { /* not our origin */ }
    }, { key: AUTH_KEY, value: JSON.stringify(opts.auth), origin: BASE });
  }
  if (opts.initScript) await ctx.addInitScript(opts.initScript, opts.initArg);
  const page = await ctx.newPage();
  page.on('pageerror', (err) => { pageErrors.push(`${name}: ${err.message}`); log(`${name} PAGE ERROR: ${err.message}`); });
  page.on('console', (m) => {
    if (m.type() === 'error' && !/WebSocket|ERR_INTERNET_DISCONNECTED|Failed to load resource/.test(m.text())) {
      log(`${name} console.error: ${m.text()}`);
    }
  });
  if (opts.setup) await opts.setup(page);
  await page.goto(BASE + '/' + (opts.hash || ''), { waitUntil: 'domcontentloaded' });
  return { name, ctx, page, id: null };
}

export async function register(p) {
  const { page } = p;
  await page.getByTestId('auth-screen').waitFor({ state: 'visible' });
  await page.getByTestId('tab-register').click();
  await page.getByTestId('auth-username').fill(p.name);
  await page.getByTestId('auth-password').fill(PASSWORD);
  await page.getByTestId('auth-submit').click();
  await waitFor(async () => (await connState(p)) === 'online' && await page.getByTestId('app-screen').isVisible() ||
    (await page.getByTestId('auth-error').textContent()) ||
    false, `${p.name} to register and go online`);
  const err = await page.getByTestId('auth-error').textContent();
  check(!err || await page.getByTestId('app-screen').isVisible(), `${p.name}: registration failed: ${err}`);
  await waitOnline(p);
  p.id = await page.evaluate(() => window.parley.state.me.id);
  log(`${p.name} registered as user ${p.id}`);
}

/** Where the client keeps its session (web/api.js): localStorage
 *  "parley.auth" = { user, access_token, refresh_token, expires_at }. */
const AUTH_KEY = 'parley.auth';

/** Creates an account over the REST API (what the sign-up form posts:
 *  POST /api/v1/auth/register) and returns its session in the form the
 *  client stores it (web/api.js _store). */
export async function apiRegister(username, password = PASSWORD) {
  const r = await fetch(BASE + '/api/v1/auth/register', {
    method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ username, password }),
  });
  const body = await r.json().catch(() => null);
  check(r.ok && body && body.access_token && body.user, `${username}: registration over the API failed: ${r.status} ${JSON.stringify(body)}`);
  return {
    user: body.user, access_token: body.access_token, refresh_token: body.refresh_token,
    expires_at: Date.now() + (body.expires_in || 900) * 1000,
  };
}

/** People signed up and in, for the scenarios that do not test signing up
 *  (dm.mjs signs up through the form, register() below; session.mjs and
 *  features.mjs sign in through it, login()): each account is created over the REST API, one after another in
 *  the order given (user ids 1, 2, ... as register() in turn gave them), and
 *  their contexts open together, each page starting signed in (the session
 *  in its storage as the client keeps it). specs: names, or [name, opts]
 *  (opts as person()'s). Resolves, online, in the order given. */
export async function signedIn(...specs) {
  const list = specs.map((s) => (Array.isArray(s) ? s : [s, {}]));
  const auths = [];
  for (const [name] of list) auths.push(await apiRegister(name));
  return Promise.all(list.map(async ([name, opts], i) => {
    const p = await person(name, { ...opts, auth: auths[i] });
    await waitOnline(p);
    p.id = auths[i].user.id;
    const me = await p.page.evaluate(() => window.parley.state.me && window.parley.state.me.id);
    check(me === p.id, `${name}: the page is signed in as user ${p.id} (${me})`);
    log(`${p.name} signed up (REST) as user ${p.id}`);
    return p;
  }));
}

/** Sends messages over REST (POST /api/v1/conversations/{id}/messages, the
 *  documented HTTP send) with p's session, from the test itself rather than
 *  from p's page (whose main thread is busy drawing what arrives), one after
 *  another: stored in the order given. Returns the bodies. */
export async function sendMany(p, convId, bodies, cmidPrefix) {
  const tok = await p.page.evaluate((k) => JSON.parse(localStorage.getItem(k)).access_token, AUTH_KEY);
  for (let i = 0; i < bodies.length; i++) {
    const r = await fetch(`${BASE}/api/v1/conversations/${convId}/messages`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tok },
      body: JSON.stringify({ client_msg_id: `${cmidPrefix}-${i + 1}`, body: bodies[i] }),
    });
    if (r.status !== 201) throw new Error(`HTTP send failed: ${r.status} ${await r.text()}`);
  }
  return bodies;
}

/** Signs in as an existing account from the sign-in screen. */
export async function login(p) {
  const { page } = p;
  await page.getByTestId('auth-screen').waitFor({ state: 'visible' });
  await page.getByTestId('tab-login').click();
  await page.getByTestId('auth-username').fill(p.name);
  await page.getByTestId('auth-password').fill(PASSWORD);
  await page.getByTestId('auth-submit').click();
  await waitOnline(p);
  p.id = await page.evaluate(() => window.parley.state.me.id);
}

export async function waitOnline(p, timeout = STEP_MS) {
  await p.page.locator('[data-testid="conn-state"][data-state="online"]').waitFor({ timeout });
}

export async function connState(p) {
  return p.page.getByTestId('conn-state').getAttribute('data-state');
}

export async function startDm(p, username) {
  await p.page.getByTestId('new-dm-username').fill(username);
  await p.page.getByTestId('new-dm-submit').click();
  await p.page.getByTestId('conversation').waitFor({ state: 'visible' });
  await waitFor(async () => (await p.page.getByTestId('conv-title').textContent()) === username,
    `${p.name}: the DM with ${username} opens`);
  return p.page.evaluate(() => window.parley.state.openId);
}

export async function createGroup(p, title, members) {
  const { page } = p;
  await page.getByTestId('new-group').click();
  await page.getByTestId('group-dialog').waitFor({ state: 'visible' });
  await page.getByTestId('group-title').fill(title);
  await page.getByTestId('group-members').fill(members.join(', '));
  await page.getByTestId('group-submit').click();
  await page.getByTestId('group-dialog').waitFor({ state: 'hidden' });
  await page.getByTestId('conversation').waitFor({ state: 'visible' });
  await waitFor(async () => (await page.getByTestId('conv-title').textContent()) === title,
    `${p.name}: the group ${title} opens`);
  return page.evaluate(() => window.parley.state.openId);
}

export function convItem(p, convId) {
  return p.page.locator(`[data-testid="conv-item"][data-conv-id="${convId}"]`);
}

export async function openConv(p, convId) {
  await convItem(p, convId).click();
  await p.page.locator('#msg-list[data-conv="' + convId + '"]').waitFor({ state: 'attached' });
}

/** Types and sends with Enter (the composer's keyboard path). */
export async function send(p, text) {
  const box = p.page.getByTestId('composer-input');
  await box.fill(text);
  await box.press('Enter');
}

/** The open conversation's message items, in DOM order. */
export async function messages(p) {
  return p.page.$$eval('[data-testid="message"]', (els) => els.map((e) => ({
    seq: e.dataset.seq ? Number(e.dataset.seq) : null,
    status: e.dataset.status || null,
    mine: e.classList.contains('mine'),
    cmid: e.dataset.clientMsgId || null,
    body: e.querySelector('[data-testid="message-body"]').textContent,
  })));
}

export async function bodies(p) {
  return (await messages(p)).map((m) => m.body);
}

/** Waits until the open conversation shows exactly `expected` bodies, in order. */
export async function waitBodies(p, expected, timeout = STEP_MS) {
  let got;
  try {
    await waitFor(async () => {
      const ms = await messages(p);
      got = ms.map((m) => m.body);
      // settled: the right bodies in order, each acknowledged (has a seq)
      return JSON.stringify(got) === JSON.stringify(expected) && ms.every((m) => m.seq != null);
    }, `${p.name} to show ${expected.length} messages in order`, timeout);
  } catch (e) {
    throw new CheckError(`${e.message}\n  expected: ${JSON.stringify(expected)}\n  got:      ${JSON.stringify(got)}`);
  }
  const ms = await messages(p);
  const seqs = ms.map((m) => m.seq);
  check(seqs.every((s) => s != null), `${p.name}: every message has a seq: ${JSON.stringify(seqs)}`);
  for (let i = 1; i < seqs.length; i++) check(seqs[i] > seqs[i - 1], `${p.name}: seqs ascend: ${JSON.stringify(seqs)}`);
  check(new Set(seqs).size === seqs.length, `${p.name}: no duplicate seq`);
  return ms;
}

export async function statusOf(p, body) {
  const ms = await messages(p);
  const m = ms.filter((x) => x.body === body);
  check(m.length <= 1, `${p.name}: "${body}" shown ${m.length} times`);
  return m.length ? m[0].status : null;
}

export async function waitStatus(p, body, status, timeout = STEP_MS) {
  await waitFor(async () => (await statusOf(p, body)) === status,
    `${p.name}: "${body}" marked ${status} (now ${await statusOf(p, body).catch(() => '?')})`, timeout);
}

export async function shot(p, name) {
  mkdirSync(SHOTS, { recursive: true });
  const file = path.join(SHOTS, name + '.png');
  await p.page.screenshot({ path: file, animations: 'disabled', caret: 'hide' });
  log(`screenshot ${file}`);
}

/** Runs a scenario with a watchdog; exits 0 on success, 1 on failure. */
export async function run(title, fn, budgetMs = 100_000) {
  const watchdog = setTimeout(() => {
    console.error(`FAIL ${title}: watchdog: scenario exceeded ${budgetMs} ms`);
    process.exit(1);
  }, budgetMs);
  let ok = false;
  try {
    await launch();
    log(`chromium ${browser.version()} — ${title}`);
    await fn();
    check(pageErrors.length === 0, `uncaught errors in pages:\n  ${pageErrors.join('\n  ')}`);
    ok = true;
    console.log(`PASS ${title}`);
  } catch (e) {
    console.error(`FAIL ${title}: ${e instanceof CheckError ? e.message : e.stack || e}`);
  } finally {
    try { if (browser) await Promise.race([browser.close(), new Promise((r) => setTimeout(r, 5000))]); } catch { /* ignore */ }
    clearTimeout(watchdog);
  }
  process.exit(ok ? 0 : 1);
}

/** Opens / closes the conversation's details dialog (members, retention,
 *  block). */
export async function openDetails(p) {
  await p.page.getByTestId('members-button').click();
  await p.page.getByTestId('members-dialog').waitFor({ state: 'visible' });
}

export async function closeDetails(p) {
  await p.page.getByTestId('members-close').click();
  await p.page.getByTestId('members-dialog').waitFor({ state: 'hidden' });
}
