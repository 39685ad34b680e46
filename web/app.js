// app.js — Parley's web client: state, protocol handling and rendering.
//
// It speaks only the documented protocol (docs/protocol.md): REST for
// accounts and conversations, the WebSocket for events, sends, receipts,
// typing, presence and history.
//
// Ordering rule: per conversation we keep `applied`, the last seq applied.
// An event is applied only when its seq is applied + 1; an older one is a
// duplicate and is ignored; a newer one means a gap, and we ask the server to
// `sync` from `applied`. Loaded events are contiguous: minLoaded..applied.
//
// Sends go through an outbox (memory + localStorage) keyed by client_msg_id.
// They are shown at once as "sending", re-sent after every reconnect with the
// same client_msg_id (the server deduplicates), and merged with their event
// when it arrives, so a message never shows twice.
//
// User-supplied text is only ever put in the page with textContent.

import { Api, ApiError } from './api.js';
import { Connection } from './conn.js';

const HISTORY_PAGE = 50;
const TYPING_SEND_EVERY_MS = 2_000;
const TYPING_SHOW_MS = 6_000;
const DELIVERED_COALESCE_MS = 200;

const api = new Api();
let conn = null;

// ---------------------------------------------------------------- state ---

const S = {
  me: null,                 // {id, username}
  convs: new Map(),         // id -> conv
  names: new Map(),         // user id -> username
  presence: new Map(),      // user id -> {status, last_seen}
  openId: null,
  outbox: [],               // {conv, cmid, body, ts, seq?, failed?}
  cursorsAtAuth: new Set(), // conversations whose cursor went out with `auth`
  typingOut: null,          // {conv, since, last}
  listLoaded: false,
};

function newConv(id) {
  return {
    id, kind: null, title: null, role: null, members: null,
    streamed: false,          // we hold a position in its live stream
    applied: 0, minLoaded: 1, events: [],
    noOlder: false, loadingOlder: false,
    syncing: false,
    readSeq: 0, readSent: 0, deliveredSent: 0, deliverTimer: 0, lastOther: 0,
    unreadBase: { value: 0, at: 0 },
    receipts: new Map(),      // user -> {d, r}
    typing: new Map(),        // user -> expiry (ms)
    lastEvent: null, lastTs: 0,
    left: false,
    detailsLoading: null,
  };
}

function conv(id) {
  let c = S.convs.get(id);
  if (!c) { c = newConv(id); S.convs.set(id, c); }
  return c;
}

const lsKey = (what) => `parley.${what}.${S.me ? S.me.id : 0}`;

function lsGet(what, dflt) {
  try { const v = JSON.parse(localStorage.getItem(lsKey(what)) || 'null'); return v == null ? dflt : v; }
  catch { return dflt; }
}

function lsSet(what, v) {
  try { localStorage.setItem(lsKey(what), JSON.stringify(v)); } catch { /* quota or private mode */ }
}

let saveCursorsTimer = 0;
function saveCursorsSoon() {
  clearTimeout(saveCursorsTimer);
  saveCursorsTimer = setTimeout(() => lsSet('cursors', cursors()), 300);
}

function saveOutbox() {
  lsSet('outbox', S.outbox.map(({ conv: c, cmid, body, ts, seq }) => ({ conv: c, cmid, body, ts, seq })));
}

function cursors() {
  const out = {};
  for (const c of S.convs.values()) if (c.streamed && !c.left) out[c.id] = c.applied;
  return out;
}

function nameOf(uid) {
  if (S.me && uid === S.me.id) return S.me.username;
  return S.names.get(uid) || `user #${uid}`;
}

function peerOf(c) {
  if (c.kind !== 'direct' || !c.members || !S.me) return null;
  const m = c.members.find((x) => x.id !== S.me.id);
  return m ? m.id : null;
}

function titleOf(c) {
  if (c.kind === 'group') return c.title || 'Group';
  const p = peerOf(c);
  if (p != null) return nameOf(p);
  return c.kind === 'direct' ? 'Direct message' : 'Conversation';
}

function othersOf(c) {
  const ids = new Set();
  if (c.members) for (const m of c.members) ids.add(m.id);
  else for (const u of c.receipts.keys()) ids.add(u);
  if (S.me) ids.delete(S.me.id);
  return [...ids];
}

function unreadOf(c) {
  if (c.left) return 0;
  const floor = Math.max(c.unreadBase.at, c.readSeq);
  let n = c.readSeq >= c.unreadBase.at ? 0 : c.unreadBase.value;
  for (let i = c.events.length - 1; i >= 0; i--) {
    const e = c.events[i];
    if (e.seq <= floor) break;
    if (e.kind === 'message' && e.sender !== S.me.id) n++;
  }
  return n;
}

function learnMembers(c, members) {
  c.members = members.map((m) => ({ id: m.id, role: m.role }));
  for (const m of members) if (m.username) S.names.set(m.id, m.username);
}

// --------------------------------------------------------------- helpers ---

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const k of kids) if (k != null) e.append(k);
  return e;
}

const $ = (id) => document.getElementById(id);

function setAttr(e, k, v) {
  const s = v == null ? null : String(v);
  if (s == null) { if (e.hasAttribute(k)) e.removeAttribute(k); }
  else if (e.getAttribute(k) !== s) e.setAttribute(k, s);
}

function setText(e, s) { if (e.textContent !== s) e.textContent = s; }

function initials(name) {
  const parts = String(name).replace(/^user #/, '#').split(/[\s._-]+/).filter(Boolean);
  const s = (parts[0] || '?')[0] + (parts[1] ? parts[1][0] : '');
  return s.toUpperCase();
}

function hue(s) {
  let h = 0;
  for (const ch of String(s)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

function paintAvatar(node, key, label) {
  setText(node, initials(label));
  node.dataset.hue = String(hue(key) % 12);
}

function fmtTime(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' });
}

function fmtShort(ts) {
  if (!ts) return '';
  const d = new Date(ts), now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtTime(ts);
  const diff = (now - d) / 86_400_000;
  if (diff < 6) return d.toLocaleDateString([], { weekday: 'short' });
  return d.toLocaleDateString([], { month: 'short', day: 'numeric' });
}

function fmtDay(ts) {
  const d = new Date(ts), now = new Date();
  if (d.toDateString() === now.toDateString()) return 'Today';
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  return d.toLocaleDateString([], { weekday: 'long', month: 'long', day: 'numeric' });
}

function fmtAgo(ts) {
  if (!ts) return '';
  const s = Math.max(0, (Date.now() - ts) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  return fmtShort(ts);
}

function systemText(e) {
  const who = nameOf(e.sender);
  const d = e.data || {};
  switch (e.kind) {
    case 'created':
      return d.kind === 'group' ? `${who} created the group “${d.title || ''}”` : `${who} started the conversation`;
    case 'member_added': return `${who} added ${nameOf(d.user)}`;
    case 'member_removed': return `${who} removed ${nameOf(d.user)}`;
    case 'member_left': return `${nameOf(d.user != null ? d.user : e.sender)} left`;
    default: return `${e.kind}`;
  }
}

const visible = () => document.visibilityState === 'visible';

// ------------------------------------------------------------ scheduling ---

let renderQueued = false;
const dirty = { list: false, conv: false, msgs: false };
function render(what = 'all') {
  if (what === 'all') { dirty.list = dirty.conv = dirty.msgs = true; }
  else dirty[what] = true;
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(() => {
    renderQueued = false;
    const d = { ...dirty };
    dirty.list = dirty.conv = dirty.msgs = false;
    if (d.list) renderList();
    if (d.conv) renderConvHead();
    if (d.msgs) renderMessages();
  });
}

// ------------------------------------------------------- protocol: in ---

function onMessage(m) {
  switch (m.type) {
    case 'ready': return onReady(m);
    case 'event': return onEvent(m);
    case 'sent': return onSent(m);
    case 'synced': {
      const c = S.convs.get(m.conversation);
      if (c) c.syncing = false;
      return;
    }
    case 'receipt': return onReceipt(m);
    case 'receipts': return onReceipts(m);
    case 'typing': return onTyping(m);
    case 'presence': return onPresence(m);
    case 'error': return onError(m);
    default: return;   // pong, history replies without a waiter, future types
  }
}

function onReady(m) {
  S.me = m.user;
  S.names.set(m.user.id, m.user.username);
  const seen = new Set();
  for (const rc of m.conversations || []) {
    seen.add(rc.id);
    const c = conv(rc.id);
    c.left = false;
    if (!S.cursorsAtAuth.has(rc.id)) {
      // Live from rc.last_seq on; older events come from history.
      if (!c.streamed || c.applied < rc.last_seq) {
        c.events = c.events.filter((e) => e.seq > rc.last_seq);
        if (c.events.length && c.events[0].seq !== rc.last_seq + 1) c.events = [];
        c.applied = c.events.length ? c.events[c.events.length - 1].seq : rc.last_seq;
        c.minLoaded = c.events.length ? c.events[0].seq : rc.last_seq + 1;
        c.noOlder = c.minLoaded <= 1;
      }
      c.streamed = true;
    }
    if (typeof rc.unread === 'number') c.unreadBase = { value: rc.unread, at: rc.last_seq };
  }
  for (const c of S.convs.values()) {
    if (c.streamed && !seen.has(c.id)) { c.left = true; }
  }
  saveCursorsSoon();
  flushOutbox();
  refreshConversations();
  queryPresence();
  for (const c of S.convs.values()) {
    if (c.left) continue;
    fetchReceipts(c);
    if (c.lastOther > c.deliveredSent) scheduleDelivered(c);   // acks lost to a drop
  }
  sendPresenceState();
  if (S.openId != null) { const c = S.convs.get(S.openId); if (c) { ensureHistory(c); markRead(c); } }
  render();
}

function onEvent(e) {
  const c = conv(e.conversation);
  if (c.left && e.seq > c.applied + 1 && e.kind === 'member_added' && S.me && e.data && e.data.user === S.me.id) {
    c.streamed = false;      // added back after a gap: start again from here
    c.left = false;
  }
  if (!c.streamed) {
    // A conversation we did not know (created or joined just now): the
    // server streams it to us from this event on.
    c.streamed = true;
    c.applied = e.seq - 1;
    c.minLoaded = e.seq;
    c.events = [];
    c.noOlder = e.seq <= 1;
    c.unreadBase = { value: 0, at: e.seq - 1 };
    loadDetails(c);
  }
  if (e.seq <= c.applied) return;                       // duplicate
  if (e.seq !== c.applied + 1) { requestSync(c); return; } // gap
  apply(c, e);
}

function apply(c, e) {
  c.events.push(e);
  c.applied = e.seq;
  if (!c.lastEvent || e.seq >= c.lastEvent.seq) { c.lastEvent = e; c.lastTs = e.ts || c.lastTs; }
  const mine = S.me && e.sender === S.me.id;
  if (e.kind === 'message') {
    if (mine) {
      const i = S.outbox.findIndex((o) => o.conv === c.id && o.cmid === e.client_msg_id);
      if (i >= 0) { S.outbox.splice(i, 1); saveOutbox(); }
    } else {
      c.typing.delete(e.sender);
      c.lastOther = e.seq;
      scheduleDelivered(c);
    }
  } else if (e.kind === 'created') {
    const d = e.data || {};
    if (!c.kind && d.kind) c.kind = d.kind;
    if (!c.title && d.title) c.title = d.title;
    if (!c.members && Array.isArray(d.members)) {
      c.members = d.members.map((u) => ({ id: u, role: u === e.sender ? 'admin' : 'member' }));
    }
  } else if (e.kind === 'member_added' || e.kind === 'member_removed' || e.kind === 'member_left') {
    const u = e.data && e.data.user;
    if (S.me && u === S.me.id && e.kind !== 'member_added') {
      c.left = true;
      c.role = null;
    } else {
      if (S.me && u === S.me.id) c.left = false;
      if (c.members) {
        if (e.kind === 'member_added') { if (!c.members.some((m) => m.id === u)) c.members.push({ id: u, role: 'member' }); }
        else c.members = c.members.filter((m) => m.id !== u);
      }
      loadDetails(c, true);
    }
  }
  saveCursorsSoon();
  if (c.id === S.openId) { markRead(c); render('msgs'); render('conv'); }
  render('list');
}

function requestSync(c) {
  if (c.syncing) return;
  if (conn.send({ type: 'sync', cursors: { [c.id]: c.applied } })) c.syncing = true;
}

function onSent(m) {
  const o = S.outbox.find((x) => x.conv === m.conversation && x.cmid === m.client_msg_id);
  if (!o) return;
  o.seq = m.seq;
  o.ts = m.ts || o.ts;
  o.failed = null;
  const c = S.convs.get(m.conversation);
  // Already applied (so merged) or older than what we hold: nothing to wait for.
  if (!c || m.seq <= c.applied) S.outbox.splice(S.outbox.indexOf(o), 1);
  saveOutbox();
  if (m.conversation === S.openId) render('msgs');
  render('list');
}

function onReceipt(m) {
  const c = S.convs.get(m.conversation);
  if (!c) return;
  const r = c.receipts.get(m.user) || { d: 0, r: 0 };
  r.d = Math.max(r.d, m.delivered_seq || 0, m.read_seq || 0);
  r.r = Math.max(r.r, m.read_seq || 0);
  c.receipts.set(m.user, r);
  if (S.me && m.user === S.me.id) {
    c.readSeq = Math.max(c.readSeq, r.r);
    c.readSent = Math.max(c.readSent, r.r);
    c.deliveredSent = Math.max(c.deliveredSent, r.d);
    if (typeof m.unread === 'number') c.unreadBase = { value: m.unread, at: Math.max(c.applied, r.r) };
    render('list');
  }
  if (c.id === S.openId) render('msgs');
}

function onReceipts(m) {
  const c = S.convs.get(m.conversation);
  if (!c || !Array.isArray(m.members)) return;
  for (const x of m.members) onReceipt({ conversation: c.id, user: x.user, delivered_seq: x.delivered_seq, read_seq: x.read_seq });
}

function onTyping(m) {
  const c = S.convs.get(m.conversation);
  if (!c || (S.me && m.user === S.me.id)) return;
  if (m.state === 'start') c.typing.set(m.user, Date.now() + TYPING_SHOW_MS);
  else c.typing.delete(m.user);
  renderTyping();
  render('list');
}

function onPresence(m) {
  if (Array.isArray(m.users)) {
    for (const u of m.users) S.presence.set(u.user, { status: u.status, last_seen: u.last_seen });
  } else if (m.user != null) {
    S.presence.set(m.user, { status: m.status, last_seen: m.last_seen });
  }
  render('list');
  render('conv');
  if ($('members-dialog').open) renderMembers();
}

function onError(m) {
  if (m.conversation != null) {
    const c = S.convs.get(m.conversation);
    if (c && m.code === 'not_found') { c.syncing = false; c.left = true; render(); }
  }
  if (typeof m.req === 'string' && m.req.startsWith('send:')) {
    const cmid = m.req.slice(5);
    const o = S.outbox.find((x) => x.cmid === cmid);
    if (!o) return;
    if (m.code === 'rate_limited' || m.code === 'unavailable' || m.code === 'internal') {
      const wait = Math.max(500, (m.retry_after || 1) * 1000);
      setTimeout(() => sendOne(o), wait);
    } else {
      o.failed = m.code || 'error';
      render('msgs');
    }
  }
}

// ------------------------------------------------------ protocol: out ---

function sendOne(o) {
  if (!S.outbox.includes(o) || o.seq) return;
  conn.send({ type: 'send', req: 'send:' + o.cmid, conversation: o.conv, client_msg_id: o.cmid, body: o.body });
}

function flushOutbox() {
  for (const o of [...S.outbox]) {
    const c = S.convs.get(o.conv);
    if (o.seq && c && c.streamed && o.seq < c.minLoaded) { S.outbox.splice(S.outbox.indexOf(o), 1); continue; }
    if (!o.failed) { o.seq = o.seq && c && o.seq > c.applied ? o.seq : undefined; sendOne(o); }
  }
  saveOutbox();
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function sendMessage(c, body) {
  const o = { conv: c.id, cmid: newId(), body, ts: Date.now() };
  S.outbox.push(o);
  saveOutbox();
  sendOne(o);
  c.lastTs = Math.max(c.lastTs, o.ts);
  render('msgs');
  render('list');
}

function scheduleDelivered(c) {
  if (c.deliverTimer) return;
  c.deliverTimer = setTimeout(() => {
    c.deliverTimer = 0;
    if (c.lastOther > c.deliveredSent && conn.send({ type: 'delivered', conversation: c.id, seq: c.lastOther })) {
      c.deliveredSent = c.lastOther;
    }
  }, DELIVERED_COALESCE_MS);
}

function markRead(c) {
  if (c.id !== S.openId || !visible() || !c.streamed || c.left) return;
  const seq = c.applied;
  if (seq <= c.readSent) return;
  const needed = unreadOf(c) > 0 || c.lastOther > c.readSent;
  if (!needed) return;
  if (conn.send({ type: 'read', conversation: c.id, seq })) {
    c.readSent = seq;
    c.readSeq = Math.max(c.readSeq, seq);
    c.deliveredSent = Math.max(c.deliveredSent, seq);
    c.unreadBase = { value: 0, at: seq };
    render('list');
  }
}

function fetchReceipts(c) {
  conn.request({ type: 'receipts', conversation: c.id }).then(onReceipts).catch(() => {});
}

function queryPresence(ids) {
  if (!ids) {
    const all = new Set();
    for (const c of S.convs.values()) if (c.members && !c.left) for (const m of c.members) all.add(m.id);
    ids = [...all];
  }
  ids = ids.filter((u) => !S.me || u !== S.me.id);
  for (let i = 0; i < ids.length; i += 200) {
    conn.request({ type: 'presence_query', users: ids.slice(i, i + 200) }).then(onPresence).catch(() => {});
  }
}

function sendPresenceState() {
  conn.send({ type: 'presence', status: visible() ? 'online' : 'away' });
}

function typingStart(c) {
  const now = Date.now();
  const t = S.typingOut;
  if (t && t.conv === c.id && now - t.last < TYPING_SEND_EVERY_MS) return;
  if (t && t.conv !== c.id) typingStop();
  if (conn.send({ type: 'typing', conversation: c.id, state: 'start' })) S.typingOut = { conv: c.id, last: now };
}

function typingStop() {
  const t = S.typingOut;
  if (!t) return;
  S.typingOut = null;
  conn.send({ type: 'typing', conversation: t.conv, state: 'stop' });
}

// -------------------------------------------------------- REST loaders ---

async function refreshConversations() {
  let data;
  try { data = await api.call('GET', '/api/v1/conversations'); }
  catch (e) { return; }
  for (const rc of data.conversations || []) {
    const c = conv(rc.id);
    c.kind = rc.kind;
    c.title = rc.title;
    c.role = rc.role;
    c.readSeq = Math.max(c.readSeq, rc.read_seq || 0);
    c.readSent = Math.max(c.readSent, rc.read_seq || 0);
    if (!c.streamed && typeof rc.unread === 'number') c.unreadBase = { value: rc.unread, at: rc.last_seq };
    if (rc.last && (!c.lastEvent || rc.last.seq > c.lastEvent.seq)) c.lastEvent = rc.last;
    c.lastTs = Math.max(c.lastTs, rc.last_ts || 0, (rc.last && rc.last.ts) || 0);
    if (!c.members) loadDetails(c);
  }
  S.listLoaded = true;
  render();
}

function loadDetails(c, force) {
  if (c.detailsLoading && !force) return c.detailsLoading;
  const p = api.call('GET', `/api/v1/conversations/${c.id}`).then((d) => {
    c.kind = d.kind;
    c.title = d.title;
    c.role = d.role;
    c.readSeq = Math.max(c.readSeq, d.read_seq || 0);
    c.readSent = Math.max(c.readSent, d.read_seq || 0);
    learnMembers(c, d.members || []);
    if (!c.lastTs && d.last_ts) c.lastTs = d.last_ts;
    const fresh = c.members.map((m) => m.id).filter((u) => !S.presence.has(u) && !(S.me && u === S.me.id));
    if (fresh.length && conn.online) queryPresence(fresh);
    render();
    if ($('members-dialog').open && S.openId === c.id) renderMembers();
  }).catch((e) => {
    if (e instanceof ApiError && e.status === 404) { c.left = true; render(); }
  }).finally(() => { if (c.detailsLoading === p) c.detailsLoading = null; });
  c.detailsLoading = p;
  return p;
}

async function loadOlder(c) {
  if (c.loadingOlder || c.noOlder || !c.streamed) return;
  if (c.minLoaded <= 1) { c.noOlder = true; return; }
  c.loadingOlder = true;
  renderHistoryState();
  const before = c.minLoaded;
  let res;
  try {
    if (conn.online) {
      res = await conn.request({ type: 'history', conversation: c.id, before, limit: HISTORY_PAGE });
    } else {
      res = await api.call('GET', `/api/v1/conversations/${c.id}/messages?before=${before}&limit=${HISTORY_PAGE}`);
    }
  } catch (e) {
    c.loadingOlder = false;
    if (e && (e.code === 'not_found' || e.status === 404 || e.code === 'forbidden')) c.noOlder = true;
    renderHistoryState();
    return;
  }
  c.loadingOlder = false;
  if (before !== c.minLoaded) { renderHistoryState(); return; }  // state moved meanwhile
  const evs = (res.events || []).filter((e) => e.seq < before).sort((a, b) => a.seq - b.seq);
  // keep only the run that ends right below what we hold
  let start = evs.length;
  for (let want = before - 1; start > 0 && evs[start - 1].seq === want; want--) start--;
  const add = evs.slice(start);
  if (add.length) {
    c.events = add.concat(c.events);
    c.minLoaded = add[0].seq;
    for (const e of add) {
      if (e.kind === 'message' && S.me && e.sender !== S.me.id) c.lastOther = Math.max(c.lastOther, e.seq);
      if (!c.lastEvent || e.seq > c.lastEvent.seq) c.lastEvent = e;
    }
    scheduleDelivered(c);
  }
  if (!res.has_more || !add.length || c.minLoaded <= 1) c.noOlder = true;
  if (c.id === S.openId) {
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    renderMessages();
    box.scrollTop = box.scrollHeight - fromBottom;
    markRead(c);
    // fill the screen
    if (!c.noOlder && box.scrollHeight <= box.clientHeight + 40) loadOlder(c);
  }
  renderHistoryState();
}

function ensureHistory(c) {
  if (c.streamed && !c.noOlder && c.events.length < 30) loadOlder(c);
}

// -------------------------------------------------------------- render ---

function presenceOf(uid) {
  const p = S.presence.get(uid);
  return p ? p.status : 'unknown';
}

function convPresence(c) {
  const p = peerOf(c);
  if (p != null) return presenceOf(p);
  return null;
}

function previewOf(c) {
  const pend = S.outbox.filter((o) => o.conv === c.id);
  const typers = [...c.typing.keys()];
  if (typers.length && c.id !== S.openId) return { text: typers.length === 1 && c.kind === 'direct' ? 'typing…' : `${nameOf(typers[0])} is typing…`, typing: true };
  if (pend.length && (!c.lastEvent || pend[pend.length - 1].ts >= (c.lastEvent.ts || 0))) {
    return { text: 'You: ' + pend[pend.length - 1].body };
  }
  const e = c.lastEvent;
  if (!e) return { text: c.kind === 'group' ? 'No messages yet' : 'Say hello 👋' };
  if (e.kind === 'message') {
    const mine = S.me && e.sender === S.me.id;
    const who = mine ? 'You: ' : c.kind === 'group' ? nameOf(e.sender) + ': ' : '';
    return { text: who + e.body };
  }
  return { text: systemText(e) };
}

function renderList() {
  const list = $('conv-list');
  let total = 0;
  for (const c of S.convs.values()) total += unreadOf(c);
  const open = S.openId != null && S.convs.get(S.openId);
  document.title = (total ? `(${total}) ` : '') + (open ? `${titleOf(open)} · Parley` : 'Parley');
  const convs = [...S.convs.values()].filter((c) => c.kind || c.streamed)
    .sort((a, b) => (b.lastTs - a.lastTs) || (b.id - a.id));
  $('conv-empty').hidden = convs.length > 0 || !S.listLoaded;
  const keep = new Set();
  let prev = null;
  for (const c of convs) {
    const key = 'c' + c.id;
    keep.add(key);
    let li = list.querySelector(`:scope > li[data-key="${key}"]`);
    if (!li) li = createConvItem(c, key);
    updateConvItem(li, c);
    const next = prev ? prev.nextElementSibling : list.firstElementChild;
    if (next !== li) list.insertBefore(li, next);
    prev = li;
  }
  for (const li of [...list.children]) if (!keep.has(li.dataset.key)) li.remove();
}

function createConvItem(c, key) {
  const btn = el('button', { type: 'button', class: 'conv-item', 'data-testid': 'conv-item', onclick: () => openConv(c.id) },
    el('span', { class: 'avatar', 'aria-hidden': 'true' }),
    el('span', { class: 'pdot', 'aria-hidden': 'true' }),
    el('span', { class: 'conv-main' },
      el('span', { class: 'conv-top' },
        el('span', { class: 'conv-name', 'data-testid': 'conv-name' }),
        el('time', { class: 'conv-time' })),
      el('span', { class: 'conv-bottom' },
        el('span', { class: 'conv-preview', 'data-testid': 'conv-preview' }),
        el('span', { class: 'badge', 'data-testid': 'unread' }))));
  return el('li', { 'data-key': key, 'data-conv-id': c.id }, btn);
}

function updateConvItem(li, c) {
  const btn = li.firstElementChild;
  const title = titleOf(c);
  const unread = unreadOf(c);
  const pres = convPresence(c);
  const pv = previewOf(c);
  setAttr(btn, 'data-conv-id', c.id);
  setAttr(btn, 'data-title', title);
  setAttr(btn, 'data-kind', c.kind || '');
  setAttr(btn, 'data-unread', unread);
  setAttr(btn, 'aria-current', c.id === S.openId ? 'true' : null);
  const presLabel = pres && pres !== 'unknown' ? `, ${pres}` : '';
  setAttr(btn, 'aria-label', `${title}${c.kind === 'group' ? ' (group)' : ''}${presLabel}${unread ? `, ${unread} unread` : ''}${c.left ? ', left' : ''}`);
  btn.classList.toggle('is-unread', unread > 0);
  btn.classList.toggle('is-left', c.left);
  const av = btn.querySelector('.avatar');
  paintAvatar(av, c.kind === 'group' ? 'g' + c.id : title, title);
  av.classList.toggle('avatar-group', c.kind === 'group');
  const dot = btn.querySelector('.pdot');
  dot.hidden = pres == null || pres === 'unknown';
  setAttr(dot, 'data-status', pres || '');
  setAttr(dot, 'data-testid', 'presence-dot');
  setText(btn.querySelector('.conv-name'), title);
  const time = btn.querySelector('.conv-time');
  setText(time, fmtShort(c.lastTs));
  if (c.lastTs) setAttr(time, 'datetime', new Date(c.lastTs).toISOString());
  const pre = btn.querySelector('.conv-preview');
  setText(pre, pv.text);
  pre.classList.toggle('is-typing', !!pv.typing);
  const badge = btn.querySelector('.badge');
  setText(badge, unread > 99 ? '99+' : String(unread));
  badge.hidden = unread === 0;
}

function renderConvHead() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  $('conv').hidden = !c;
  $('pane-empty').hidden = !!c;
  if (!c) return;
  const title = titleOf(c);
  setText($('conv-title'), title);
  paintAvatar($('conv-avatar'), c.kind === 'group' ? 'g' + c.id : title, title);
  $('conv-avatar').classList.toggle('avatar-group', c.kind === 'group');
  let sub = '';
  const sc = $('conv-sub');
  if (c.kind === 'group') {
    const n = c.members ? c.members.length : 0;
    const on = c.members ? c.members.filter((m) => m.id !== S.me.id && presenceOf(m.id) === 'online').length : 0;
    sub = `${n} member${n === 1 ? '' : 's'}${on ? ` · ${on} online` : ''}`;
    setAttr(sc, 'data-status', null);
  } else {
    const p = peerOf(c);
    const pr = p != null ? S.presence.get(p) : null;
    if (pr) sub = pr.status === 'online' ? 'Online' : pr.status === 'away' ? 'Away' : (pr.last_seen ? `Last seen ${fmtAgo(pr.last_seen)}` : 'Offline');
    setAttr(sc, 'data-status', pr ? pr.status : null);
  }
  setText(sc, sub);
  $('members-btn').hidden = c.kind !== 'group';
  $('left-note').hidden = !c.left;
  $('composer').hidden = c.left;
  renderTyping();
  renderHistoryState();
}

function renderHistoryState() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  const p = $('history-state');
  if (!c) return;
  let t = '';
  if (c.loadingOlder) t = 'Loading earlier messages…';
  else if (c.noOlder && c.events.length) t = c.minLoaded <= 1 ? 'This is the beginning of the conversation.' : '';
  else if (!c.streamed) t = 'Loading…';
  setText(p, t);
  setAttr(p, 'data-state', c.loadingOlder ? 'loading' : c.noOlder ? 'start' : 'more');
}

function statusOf(c, seq) {
  const others = othersOf(c);
  if (!others.length) return { status: 'sent', label: 'Sent' };
  let nd = 0, nr = 0;
  for (const u of others) {
    const r = c.receipts.get(u);
    if (!r) continue;
    if (r.r >= seq) nr++;
    if (r.d >= seq || r.r >= seq) nd++;
  }
  if (c.kind === 'direct') {
    if (nr) return { status: 'read', label: 'Read' };
    if (nd) return { status: 'delivered', label: 'Delivered' };
    return { status: 'sent', label: 'Sent' };
  }
  const n = others.length;
  const status = nr === n ? 'read' : nd === n ? 'delivered' : 'sent';
  let label = status === 'read' ? 'Read by everyone' : status === 'delivered' ? 'Delivered to everyone' : 'Sent';
  if (status !== 'read' && nr) label = `Read by ${nr}`;
  else if (status === 'sent' && nd) label = `Delivered to ${nd}`;
  return { status, label, nr, nd };
}

function buildItems(c) {
  const items = [];
  let lastDay = '', lastSender = null, lastTs = 0;
  const push = (it) => {
    const ts = it.ts || Date.now();
    const day = new Date(ts).toDateString();
    if (day !== lastDay) {
      items.push({ key: 'd' + day, type: 'day', text: fmtDay(ts) });
      lastDay = day;
      lastSender = null;
    }
    if (it.type === 'msg') {
      it.first = lastSender !== it.sender || ts - lastTs > 5 * 60_000;
      lastSender = it.sender;
      lastTs = ts;
    } else lastSender = null;
    items.push(it);
  };
  const pendingIds = new Set();
  for (const e of c.events) {
    if (e.kind === 'message') {
      const mine = S.me && e.sender === S.me.id;
      const st = mine ? statusOf(c, e.seq) : null;
      push({ key: 's' + e.seq, type: 'msg', seq: e.seq, sender: e.sender, mine, body: e.body, ts: e.ts,
             cmid: e.client_msg_id, status: st ? st.status : null, statusLabel: st ? st.label : null, st });
    } else {
      push({ key: 's' + e.seq, type: 'sys', seq: e.seq, text: systemText(e), ts: e.ts });
    }
  }
  for (const o of S.outbox) {
    if (o.conv !== c.id || pendingIds.has(o.cmid)) continue;
    pendingIds.add(o.cmid);
    const status = o.failed ? 'failed' : o.seq ? 'sent' : 'sending';
    const label = o.failed ? 'Not sent' : o.seq ? 'Sent' : 'Sending…';
    push({ key: 'p' + o.cmid, type: 'msg', pending: o, seq: o.seq || null, sender: S.me.id, mine: true,
           body: o.body, ts: o.ts, cmid: o.cmid, status, statusLabel: label });
  }
  return items;
}

const MARKS = { sending: '◷', sent: '✓', delivered: '✓✓', read: '✓✓', failed: '!' };

function createItem(it) {
  if (it.type === 'day') {
    return el('li', { class: 'day', 'data-key': it.key, role: 'presentation' }, el('span', { text: it.text }));
  }
  if (it.type === 'sys') {
    return el('li', { class: 'sys', 'data-key': it.key, 'data-testid': 'system-event', 'data-seq': it.seq },
      el('span', { text: it.text }));
  }
  const li = el('li', { 'data-key': it.key, 'data-testid': 'message' },
    el('div', { class: 'msg-sender' }),
    el('div', { class: 'bubble' },
      el('p', { class: 'msg-body', 'data-testid': 'message-body' }),
      el('span', { class: 'msg-info' },
        el('time', { class: 'msg-time' }),
        el('span', { class: 'mark', 'data-testid': 'message-status' }),
        el('span', { class: 'mark-count' }))));
  return li;
}

function updateItem(li, it) {
  if (it.type !== 'msg') return;
  li.className = 'msg' + (it.mine ? ' mine' : ' theirs') + (it.first ? ' first' : '') + (it.pending ? ' pending' : '');
  setAttr(li, 'data-seq', it.seq);
  setAttr(li, 'data-sender', it.sender);
  setAttr(li, 'data-client-msg-id', it.cmid || null);
  setAttr(li, 'data-status', it.status);
  const sender = li.querySelector('.msg-sender');
  const c = S.convs.get(S.openId);
  const showName = !it.mine && it.first && c && c.kind === 'group';
  sender.hidden = !showName;
  setText(sender, showName ? nameOf(it.sender) : '');
  setText(li.querySelector('.msg-body'), it.body);
  const t = li.querySelector('.msg-time');
  setText(t, fmtTime(it.ts || Date.now()));
  if (it.ts) setAttr(t, 'datetime', new Date(it.ts).toISOString());
  const mark = li.querySelector('.mark');
  const count = li.querySelector('.mark-count');
  if (it.mine) {
    setText(mark, MARKS[it.status] || '');
    setAttr(mark, 'data-status', it.status);
    setAttr(mark, 'aria-label', it.statusLabel);
    setAttr(mark, 'title', it.statusLabel);
    let ct = '';
    if (c && c.kind === 'group' && it.st && it.status !== 'read') {
      if (it.st.nr) ct = `read by ${it.st.nr}`;
      else if (it.st.nd && it.status !== 'delivered') ct = `delivered to ${it.st.nd}`;
    }
    setText(count, ct);
    setAttr(count, 'data-testid', ct ? 'read-count' : null);
    mark.hidden = false;
  } else {
    mark.hidden = true;
    setText(count, '');
  }
  let retry = li.querySelector('.retry');
  if (it.status === 'failed') {
    if (!retry) {
      retry = el('span', { class: 'retry' },
        el('button', { type: 'button', class: 'linkbtn', text: 'Retry', onclick: () => { it.pending.failed = null; sendOne(it.pending); render('msgs'); } }),
        el('button', { type: 'button', class: 'linkbtn', text: 'Discard', onclick: () => {
          S.outbox.splice(S.outbox.indexOf(it.pending), 1); saveOutbox(); render('msgs'); render('list'); } }));
      li.querySelector('.bubble').append(retry);
    }
  } else if (retry) retry.remove();
}

function renderMessages() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  const list = $('msg-list');
  if (!c) { list.replaceChildren(); return; }
  if (list.dataset.conv !== String(c.id)) { list.replaceChildren(); list.dataset.conv = String(c.id); }
  const box = $('messages');
  const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  const items = buildItems(c);
  const byKey = new Map();
  for (const li of list.children) byKey.set(li.dataset.key, li);
  let prev = null;
  const keep = new Set();
  let grewMine = false;
  for (const it of items) {
    keep.add(it.key);
    let li = byKey.get(it.key);
    if (!li) { li = createItem(it); if (it.mine && it.pending) grewMine = true; }
    updateItem(li, it);
    const next = prev ? prev.nextElementSibling : list.firstElementChild;
    if (next !== li) list.insertBefore(li, next);
    prev = li;
  }
  for (const li of [...list.children]) if (!keep.has(li.dataset.key)) li.remove();
  if (atBottom || grewMine) box.scrollTop = box.scrollHeight;
  renderHistoryState();
}

function renderTyping() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  const t = $('typing');
  if (!c) { setText(t, ''); return; }
  const now = Date.now();
  for (const [u, exp] of c.typing) if (exp <= now) c.typing.delete(u);
  const names = [...c.typing.keys()].map(nameOf);
  let s = '';
  if (names.length === 1) s = `${names[0]} is typing…`;
  else if (names.length === 2) s = `${names[0]} and ${names[1]} are typing…`;
  else if (names.length > 2) s = `${names.length} people are typing…`;
  setText(t, s);
  setAttr(t, 'data-users', [...c.typing.keys()].join(','));
  t.classList.toggle('on', !!s);
}

function renderMembers() {
  const c = S.convs.get(S.openId);
  const ul = $('member-list');
  if (!c) return;
  const admin = c.role === 'admin' && !c.left;
  $('add-member-form').hidden = !admin;
  $('leave-group').hidden = c.left;
  const members = (c.members || []).slice().sort((a, b) => (a.role === b.role ? nameOf(a.id).localeCompare(nameOf(b.id)) : a.role === 'admin' ? -1 : 1));
  ul.replaceChildren(...members.map((m) => {
    const name = nameOf(m.id);
    const me = S.me && m.id === S.me.id;
    const pres = me ? 'online' : presenceOf(m.id);
    const av = el('span', { class: 'avatar avatar-sm', 'aria-hidden': 'true' });
    paintAvatar(av, name, name);
    return el('li', { class: 'member', 'data-testid': 'member', 'data-user': m.id, 'data-role': m.role },
      av,
      el('span', { class: 'pdot', 'data-status': pres, 'aria-hidden': 'true' }),
      el('span', { class: 'member-name', text: name + (me ? ' (you)' : '') }),
      el('span', { class: 'role', text: m.role === 'admin' ? 'Admin' : 'Member' }),
      el('span', { class: 'sr-only', text: pres === 'unknown' ? '' : `, ${pres}` }),
      admin && !me ? el('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'remove-member',
        'aria-label': `Remove ${name}`, text: 'Remove', onclick: () => removeMember(c, m.id) }) : null);
  }));
}

// ------------------------------------------------------------- actions ---

function openConv(id) {
  if (S.typingOut && S.typingOut.conv !== id) typingStop();
  S.openId = id;
  const c = S.convs.get(id);
  $('layout').dataset.view = 'conv';
  $('composer-input').value = '';
  autosize();
  render();
  if (c) {
    if (!c.members) loadDetails(c);
    if (conn.online) fetchReceipts(c);
    ensureHistory(c);
    markRead(c);
  }
  queueMicrotask(() => { const b = $('messages'); b.scrollTop = b.scrollHeight; $('composer-input').focus(); });
}

async function lookupUser(name) {
  const n = name.trim().replace(/^@/, '');
  if (!/^[A-Za-z0-9_.-]{3,32}$/.test(n)) throw new Error(`“${n}” is not a valid username`);
  try {
    const u = await api.call('GET', `/api/v1/users/${encodeURIComponent(n)}`);
    S.names.set(u.id, u.username);
    return u;
  } catch (e) {
    if (e.status === 404) throw new Error(`No user named “${n}”`);
    throw e;
  }
}

function upsertConv(d) {
  const c = conv(d.id);
  c.kind = d.kind;
  c.title = d.title;
  c.role = d.role;
  c.left = false;
  if (d.members) learnMembers(c, d.members);
  c.lastTs = Math.max(c.lastTs, d.last_ts || 0, Date.now());
  return c;
}

async function startDm(ev) {
  ev.preventDefault();
  const input = $('new-dm-username');
  const err = $('new-dm-error');
  err.textContent = '';
  const name = input.value.trim();
  if (!name) { err.textContent = 'Type a username to start a conversation.'; input.focus(); return; }
  try {
    const u = await lookupUser(name);
    if (S.me && u.id === S.me.id) throw new Error('That is you — pick someone else.');
    const d = await api.call('POST', '/api/v1/conversations', { kind: 'direct', user: u.id });
    const c = upsertConv(d);
    input.value = '';
    if (conn.online) queryPresence([u.id]);
    openConv(c.id);
  } catch (e) {
    err.textContent = e.message || 'Could not start the conversation.';
  }
}

async function createGroup(ev) {
  ev.preventDefault();
  const err = $('group-error');
  err.textContent = '';
  const title = $('group-title').value.trim();
  const names = $('group-members').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
  if (!title) { err.textContent = 'Give the group a name.'; $('group-title').focus(); return; }
  try {
    const users = await Promise.all(names.map(lookupUser));
    const ids = [...new Set(users.map((u) => u.id).filter((id) => !S.me || id !== S.me.id))];
    const d = await api.call('POST', '/api/v1/conversations', { kind: 'group', title, members: ids });
    const c = upsertConv(d);
    $('group-dialog').close();
    if (conn.online) queryPresence(ids);
    openConv(c.id);
  } catch (e) {
    err.textContent = e.message || 'Could not create the group.';
  }
}

async function addMember(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.openId);
  const input = $('add-member-username');
  const err = $('members-error');
  err.textContent = '';
  if (!c) return;
  try {
    const u = await lookupUser(input.value);
    const d = await api.call('POST', `/api/v1/conversations/${c.id}/members`, { user: u.id });
    if (d && d.members) learnMembers(c, d.members);
    input.value = '';
    if (conn.online) queryPresence([u.id]);
    renderMembers();
    render('conv');
  } catch (e) {
    err.textContent = e.status === 403 ? 'Only admins can add members.' : (e.message || 'Could not add the member.');
  }
}

async function removeMember(c, uid) {
  const err = $('members-error');
  err.textContent = '';
  try {
    await api.call('DELETE', `/api/v1/conversations/${c.id}/members/${uid}`);
    if (c.members) c.members = c.members.filter((m) => m.id !== uid);
    renderMembers();
    render('conv');
  } catch (e) {
    err.textContent = e.status === 403 ? 'Only admins can remove members.' : (e.message || 'Could not remove the member.');
  }
}

async function leaveGroup() {
  const c = S.convs.get(S.openId);
  const err = $('members-error');
  err.textContent = '';
  if (!c) return;
  try {
    await api.call('POST', `/api/v1/conversations/${c.id}/leave`);
    c.left = true;
    $('members-dialog').close();
    render();
  } catch (e) {
    err.textContent = e.message || 'Could not leave the group.';
  }
}

function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight, 160) + 'px';
}

function submitComposer(ev) {
  if (ev) ev.preventDefault();
  const c = S.convs.get(S.openId);
  const t = $('composer-input');
  const body = t.value.replace(/\s+$/, '');
  if (!c || c.left || !body.trim()) return;
  if (new TextEncoder().encode(body).length > 16384) {
    t.setCustomValidity('This message is too long (16 KB at most).');
    t.reportValidity();
    return;
  }
  t.setCustomValidity('');
  t.value = '';
  autosize();
  typingStop();
  sendMessage(c, body);
  t.focus();
}

// ----------------------------------------------------------- screens ---

let authMode = 'login';

function setAuthMode(mode) {
  authMode = mode;
  $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('tab-register').setAttribute('aria-selected', String(mode === 'register'));
  $('auth-form').setAttribute('aria-labelledby', mode === 'login' ? 'tab-login' : 'tab-register');
  $('auth-submit').textContent = mode === 'login' ? 'Sign in' : 'Create account';
  $('auth-password').setAttribute('autocomplete', mode === 'login' ? 'current-password' : 'new-password');
  $('auth-error').textContent = '';
}

async function submitAuth(ev) {
  ev.preventDefault();
  const u = $('auth-username').value.trim();
  const p = $('auth-password').value;
  const err = $('auth-error');
  err.textContent = '';
  if (!/^[A-Za-z0-9_.-]{3,32}$/.test(u)) { err.textContent = 'Usernames are 3–32 letters, digits, _ . or -.'; $('auth-username').focus(); return; }
  if (p.length < 8) { err.textContent = 'Passwords have at least 8 characters.'; $('auth-password').focus(); return; }
  const btn = $('auth-submit');
  btn.disabled = true;
  try {
    if (authMode === 'login') await api.login(u, p);
    else await api.register(u, p);
    $('auth-password').value = '';
    startApp();
  } catch (e) {
    if (e.status === 401) err.textContent = 'Wrong username or password.';
    else if (e.status === 409) err.textContent = 'That username is taken.';
    else if (e.status === 429) err.textContent = 'Too many attempts — wait a moment and try again.';
    else err.textContent = e.message || 'Something went wrong.';
  } finally {
    btn.disabled = false;
  }
}

function showAuth() {
  $('app-screen').hidden = true;
  $('auth-screen').hidden = false;
  document.title = 'Parley — sign in';
  setAuthMode(authMode);
  $('auth-username').focus();
}

function resetState() {
  S.me = null;
  S.convs.clear();
  S.names.clear();
  S.presence.clear();
  S.openId = null;
  S.outbox = [];
  S.cursorsAtAuth.clear();
  S.typingOut = null;
  S.listLoaded = false;
  $('conv-list').replaceChildren();
  $('msg-list').replaceChildren();
  delete $('msg-list').dataset.conv;
}

function startApp() {
  resetState();
  S.me = api.user;
  S.names.set(S.me.id, S.me.username);
  $('auth-screen').hidden = true;
  $('app-screen').hidden = false;
  document.title = 'Parley';
  setText($('me-name'), S.me.username);
  paintAvatar($('me-avatar'), S.me.username, S.me.username);
  $('layout').dataset.view = 'list';
  // restore the outbox and the stream positions of the last visit
  S.outbox = lsGet('outbox', []).filter((o) => o && o.conv && o.cmid && typeof o.body === 'string');
  const saved = lsGet('cursors', {});
  for (const [k, v] of Object.entries(saved)) {
    const id = Number(k), seq = Number(v);
    if (!Number.isSafeInteger(id) || !Number.isSafeInteger(seq) || seq < 0) continue;
    const c = conv(id);
    c.streamed = true;
    c.applied = seq;
    c.minLoaded = seq + 1;
    c.noOlder = seq === 0;
    c.unreadBase = { value: 0, at: seq };
  }
  conn = new Connection({
    token: () => api.token(),
    cursors: () => {
      const cur = cursors();
      S.cursorsAtAuth = new Set(Object.keys(cur).map(Number));
      for (const c of S.convs.values()) c.syncing = S.cursorsAtAuth.has(c.id);
      return cur;
    },
    message: onMessage,
    state: renderConnState,
    authFailed: () => api.refresh(),
  });
  conn.start();
  refreshConversations();
  render();
}

async function logout() {
  typingStop();
  if (conn) { conn.stop(); conn = null; }
  try { localStorage.removeItem(lsKey('cursors')); localStorage.removeItem(lsKey('outbox')); } catch { /* ignore */ }
  await api.logout();
  resetState();
  showAuth();
}

function renderConnState(state) {
  const box = $('conn-state');
  const labels = {
    connecting: 'Connecting…',
    online: 'Online',
    reconnecting: 'Reconnecting…',
    offline: 'Offline · messages will wait',
  };
  box.dataset.state = state;
  setText(box.querySelector('.conn-label'), labels[state] || state);
  document.body.dataset.conn = state;
  if (state !== 'online') {
    for (const c of S.convs.values()) { c.syncing = false; c.typing.clear(); }
    S.typingOut = null;
    renderTyping();
  }
}

// -------------------------------------------------------------- wiring ---

function wire() {
  $('tab-login').addEventListener('click', () => setAuthMode('login'));
  $('tab-register').addEventListener('click', () => setAuthMode('register'));
  for (const tab of [$('tab-login'), $('tab-register')]) {
    tab.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight') {
        const other = tab.id === 'tab-login' ? $('tab-register') : $('tab-login');
        other.focus();
        setAuthMode(other.dataset.mode);
      }
    });
  }
  $('auth-form').addEventListener('submit', submitAuth);
  $('logout').addEventListener('click', logout);
  $('new-dm-form').addEventListener('submit', startDm);
  $('new-group').addEventListener('click', () => {
    $('group-form').reset();
    $('group-error').textContent = '';
    $('group-dialog').showModal();
    $('group-title').focus();
  });
  $('group-cancel').addEventListener('click', () => $('group-dialog').close());
  $('group-form').addEventListener('submit', createGroup);
  $('members-btn').addEventListener('click', () => {
    const c = S.convs.get(S.openId);
    $('members-error').textContent = '';
    if (c) loadDetails(c, true);
    renderMembers();
    $('members-dialog').showModal();
  });
  $('members-close').addEventListener('click', () => $('members-dialog').close());
  $('add-member-form').addEventListener('submit', addMember);
  $('leave-group').addEventListener('click', leaveGroup);
  $('back').addEventListener('click', () => {
    typingStop();
    $('layout').dataset.view = 'list';
    const cur = document.querySelector(`.conv-item[data-conv-id="${S.openId}"]`);
    if (cur) cur.focus();
  });

  const input = $('composer-input');
  $('composer').addEventListener('submit', submitComposer);
  input.addEventListener('keydown', (ev) => {
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) submitComposer(ev);
  });
  input.addEventListener('input', () => {
    autosize();
    const c = S.convs.get(S.openId);
    if (!c) return;
    if (input.value.trim()) typingStart(c);
    else typingStop();
  });
  input.addEventListener('blur', typingStop);

  const box = $('messages');
  let stick = true;       // keep the newest message in view while the pane resizes
  box.addEventListener('scroll', () => {
    stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const c = S.convs.get(S.openId);
    if (c && box.scrollTop < 80) loadOlder(c);
  }, { passive: true });
  if (window.ResizeObserver) {
    new ResizeObserver(() => { if (stick) box.scrollTop = box.scrollHeight; }).observe(box);
  }

  document.addEventListener('visibilitychange', () => {
    if (!conn) return;
    sendPresenceState();
    const c = S.convs.get(S.openId);
    if (c) markRead(c);
  });
  window.addEventListener('focus', () => { const c = S.convs.get(S.openId); if (c && conn) markRead(c); });

  // expire typing indicators and refresh relative times
  setInterval(() => {
    if (!conn) return;
    let changed = false;
    const now = Date.now();
    for (const c of S.convs.values()) for (const [u, exp] of c.typing) if (exp <= now) { c.typing.delete(u); changed = true; }
    if (changed) { renderTyping(); render('list'); }
  }, 500);
  setInterval(() => { if (conn) render('conv'); }, 30_000);

  api.onLoggedOut = () => {
    if (conn) { conn.stop(); conn = null; }
    resetState();
    showAuth();
    $('auth-error').textContent = 'Your session has ended — please sign in again.';
  };
}

wire();
if (api.user) startApp();
else showAuth();

// for tests and debugging: a read-only peek at the client's state
window.parley = {
  state: S,
  connState: () => (conn ? conn.state : 'stopped'),
  // closes the socket as a network failure would (the client then reconnects)
  dropConnection: () => { if (conn && conn.ws) conn.ws.close(); },
};
