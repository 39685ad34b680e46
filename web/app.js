// app.js — Parley's web client: protocol handling, loading, user actions
// on conversations and the composer, screens and wiring.
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
// Modules: state.js (state and what derives from it), auth.js (the sign-in
// screen), convlist.js (the conversation list), convview.js (the open
// conversation), composer.js (the composer and typing), actions.js and
// reactions.js (message actions: replies, edits, deletes, reactions, pins),
// mentions.js (@mentions and their autocomplete), richtext.js (Markdown
// subset, links, shortcodes), groups.js (group dialogs), reports.js
// (reporting a message; admins reviewing reports), workspaces.js
// (workspaces: browsing, joining and creating channels), retention.js
// (disappearing messages), account.js (export, account deletion), blocks.js
// (blocking a user), people.js (people
// search, profile card), search.js (message search), switcher.js
// (Ctrl/Cmd+K), alerts.js (desktop notifications, sound, favicon count),
// theme.js and settings.js (dark mode, settings dialog), notify.js
// (notification levels), menu.js (popup menus), seen.js (what has been on
// screen: read receipts), dom.js and icons.js (helpers).
//
// Read receipts: `read` says only what the user has seen — items that were
// on screen while the page was visible and focused (seen.js), up to the
// highest such seq. A conversation with unread messages opens at the first
// of them, under a "New messages" divider.
//
// User-supplied text is only ever put in the page as Text nodes (textContent,
// or richtext.js's DOM building): never parsed as HTML.

import { Api, ApiError } from './api.js';
import { Connection } from './conn.js';
import { el, $, setText, paintUserAvatar, toast, readable } from './dom.js';
import { closeMenu } from './menu.js';
import { icon } from './icons.js';
import * as actions from './actions.js';
import { openNotifyMenu } from './notify.js';
import {
  S, conv, lsKey, lsGet, saveCursorsSoon, saveOutbox, cursors, nameOf, unreadOf,
  learnCounts, learnMembers, visible, titleOf, learnChannel, avatarOf, channelWsName,
} from './state.js';
import { initConvList, renderList, presenceOf, previewable } from './convlist.js';
import {
  initConvView, renderConvHead, renderHistoryState, renderMessages, renderTyping, renderPill,
} from './convview.js';
import { initSeen, pageActive, highestOnScreen } from './seen.js';
import { concernsMe } from './mentions.js';
import { initTheme } from './theme.js';
import { initSettings, openSettings } from './settings.js';
import * as alerts from './alerts.js';
import { initPeople, openProfile, refreshProfile } from './people.js';
import { initSwitcher } from './switcher.js';
import { initSearch, openSearch } from './search.js';
import { initGroups, renderMembers } from './groups.js';
import { initReports, canReport, openReport, refreshReportsButton } from './reports.js';
import {
  initWorkspaces, loadWorkspaces, noteWorkspace, workspacesChanged, resetWorkspaces,
} from './workspaces.js';
import { initComposer, autosize, typingStop, closeMentions, switchComposer, draftOf, resetDrafts } from './composer.js';
import { initAuth, showAuth } from './auth.js';
import { initRetention, learnRetention, onRetentionEvent, expire } from './retention.js';
import { initAccount } from './account.js';
import { initBlocks, loadBlocks, learnBlocked, onBlockedRefusal, resetBlocks, BLOCKED_TEXT } from './blocks.js';
import { config as mediaConfig } from './media.js';

const HISTORY_PAGE = 50;
const UNREAD_PAGE = 200;          // history page size when loading back to the first unread
const UNREAD_MAX_PAGES = 8;       // ... and how far back we go for it
const TYPING_SHOW_MS = 6_000;
const DELIVERED_COALESCE_MS = 200;

const api = new Api();
let conn = null;

// ------------------------------------------------------------ scheduling ---

let stick = true;          // keep the newest message in view while the pane resizes
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
    case 'synced': return onSynced(m);
    case 'mention': return onMention(m);
    case 'receipt': return onReceipt(m);
    case 'receipts': return onReceipts(m);
    case 'typing': return onTyping(m);
    case 'presence': return onPresence(m);
    case 'error': return onError(m);
    default: return;   // pong, history replies without a waiter, future types
  }
}

function onSynced(m) {
  const c = S.convs.get(m.conversation);
  if (!c) return;
  c.syncing = false;
  if (m.online_only && typeof m.seq === 'number' && m.seq > c.applied) {
    // A large group: not replayed; the cursor moved to its head. What we
    // hold is no longer contiguous with the live stream: start from there
    // (history fills in when it is opened).
    c.events = [];
    c.applied = m.seq;
    c.minLoaded = m.seq + 1;
    c.noOlder = m.seq < 1;
    for (const k of [...c.stash.keys()]) if (k <= m.seq) c.stash.delete(k);
    drainStash(c);
    saveCursorsSoon();
    if (c.id === S.openId) { ensureHistory(c); render('msgs'); }
    render('list');
  }
}

let countsTimer = 0;
function onMention(m) {
  // A large group's message about me that was not replayed: the counts come
  // from the conversation list; history shows it when opened.
  const c = conv(m.conversation);
  if (m.event && (!c.lastEvent || m.event.seq > c.lastEvent.seq)) { c.lastEvent = m.event; c.lastTs = Math.max(c.lastTs, m.event.ts || 0); }
  clearTimeout(countsTimer);
  countsTimer = setTimeout(refreshConversations, 300);
  render('list');
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
    if (typeof rc.unread_mentions === 'number') c.mentionBase = { value: rc.unread_mentions, at: rc.last_seq };
    if (typeof rc.notify === 'string') c.notify = rc.notify;
  }
  for (const c of S.convs.values()) {
    if (c.streamed && !seen.has(c.id)) { c.left = true; }
  }
  saveCursorsSoon();
  flushOutbox();
  refreshConversations();
  loadWorkspaces();
  loadBlocks();             // a block makes no event: asked on every connection
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
  if (e.seq !== c.applied + 1) {                        // gap
    if (c.stash.size < 1000) c.stash.set(e.seq, e);
    requestSync(c);
    return;
  }
  apply(c, e);
  drainStash(c);
}

/** Applies stashed events that are now next in line. */
function drainStash(c) {
  if (!c.stash.size) return;
  for (const k of [...c.stash.keys()]) if (k <= c.applied) c.stash.delete(k);
  for (let e = c.stash.get(c.applied + 1); e; e = c.stash.get(c.applied + 1)) {
    c.stash.delete(e.seq);
    apply(c, e);
  }
}

function apply(c, e) {
  c.events.push(e);
  c.applied = e.seq;
  if (!c.lastEvent || e.seq >= c.lastEvent.seq) { c.lastEvent = e; c.lastTs = e.ts || c.lastTs; }
  const mine = S.me && e.sender === S.me.id;
  if (e.kind === 'message') {
    if (mine) {
      const i = S.outbox.findIndex((o) => o.conv === c.id && o.cmid === e.client_msg_id);
      if (i >= 0) { S.outbox.splice(i, 1); saveOutbox(); pumpOutbox(c.id); }
    } else {
      c.typing.delete(e.sender);
      c.lastOther = e.seq;
      scheduleDelivered(c);
      if (!c.syncing) alertFor(c, e);
    }
  } else if (actions.isAction(e)) {
    actions.applyAction(c, e);
  } else if (e.kind === 'created') {
    const d = e.data || {};
    if (!c.kind && d.kind) c.kind = d.kind;
    if (!c.title && d.title) c.title = d.title;
    if (d.kind === 'channel') { learnChannel(c, d); noteWorkspace(c.workspace); }
    if (!c.members && Array.isArray(d.members)) {
      c.members = d.members.map((u) => ({ id: u, role: u === e.sender ? 'admin' : 'member' }));
    }
  } else if (e.kind === 'retention') {
    onRetentionEvent(c, e);
  } else if (e.kind === 'member_role') {
    const u = e.data && e.data.user;
    if (c.members) { const m = c.members.find((x) => x.id === u); if (m) m.role = e.data.role; }
    if (S.me && u === S.me.id) c.role = e.data.role;
    loadDetails(c, true);
  } else if (e.kind === 'member_added' || e.kind === 'member_removed' || e.kind === 'member_left') {
    const u = e.data && e.data.user;
    if (S.me && u === S.me.id && e.kind !== 'member_added') {
      c.left = true;
      c.role = null;
      if (c.members) c.members = c.members.filter((m) => m.id !== u);   // the header counts the others
      if (c.kind === 'channel') workspacesChanged();   // perhaps out of its workspace too
    } else {
      if (S.me && u === S.me.id) c.left = false;
      if (c.members) {
        if (e.kind === 'member_added') { if (!c.members.some((m) => m.id === u)) c.members.push({ id: u, role: 'member' }); }
        else c.members = c.members.filter((m) => m.id !== u);
      }
      loadDetails(c, true);
    }
    // the last admin left: the longest-standing member is admin now
    const na = e.data && e.data.new_admin;
    if (na) {
      if (c.members) { const m = c.members.find((x) => x.id === na); if (m) m.role = 'admin'; }
      if (S.me && na === S.me.id) c.role = 'admin';
    }
  }
  saveCursorsSoon();
  if (c.id === S.openId) { markRead(c); render('msgs'); render('conv'); }
  render('list');
}

/** A live message from someone else: a desktop notification and a sound
 *  when alerts.js says so (the page in the background, or a mention
 *  elsewhere; within the conversation's level). */
function alertFor(c, e) {
  const parent = e.data && e.data.reply_to != null ? actions.findMsg(c, e.data.reply_to) : null;
  alerts.onIncoming(c, e, {
    title: titleOf(c), sender: nameOf(e.sender),
    concernsMe: concernsMe(e, S.me && S.me.id, parent ? parent.sender : undefined),
    isOpen: c.id === S.openId, active: pageActive(), open: (id) => openConv(id),
  });
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
  settled(m.conversation, m.client_msg_id);
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
  refreshProfile();
}

function onError(m) {
  const isSend = typeof m.req === 'string' && m.req.startsWith('send:');
  const o = isSend ? S.outbox.find((x) => x.cmid === m.req.slice(5)) : null;
  // not_found for a conversation: we are no longer a member (but a reply to
  // a message we may not see is only that send's problem)
  if (m.conversation != null && m.code === 'not_found' && !(o && o.replyTo)) {
    const c = S.convs.get(m.conversation);
    if (c) { c.syncing = false; c.left = true; render(); }
  }
  if (isSend) {
    if (!o) return;
    if (m.code === 'rate_limited' || m.code === 'unavailable' || m.code === 'internal') {
      holdOutbox(o.conv, Math.max(500, (m.retry_after || 1) * 1000));
      if (m.code === 'rate_limited' && Date.now() - slowToastAt > 10_000) {
        slowToastAt = Date.now();       // said once in a while, not for every held message
        toast('Sending more slowly: the server limits how fast messages go out. They will go out in order.');
      }
    } else {
      o.failed = m.code || 'error';
      settled(o.conv, o.cmid);    // the next one goes on
      if (m.code === 'gone') toast('Not sent: the message you replied to was deleted.', 'error');
      else if (m.code === 'forbidden' && m.message === 'blocked') {
        toast(`Not sent: ${BLOCKED_TEXT.charAt(0).toLowerCase()}${BLOCKED_TEXT.slice(1)}`, 'error');
        onBlockedRefusal(S.convs.get(o.conv));
      } else if (m.code === 'forbidden') toast(`Not sent: ${m.message || 'not allowed here'}.`, 'error');
      else if (m.code === 'filtered') toast('Not sent: the server’s content filter refused this message. Edit it and try again.', 'error');
      else if (m.code === 'not_found' && o.replyTo) toast('Not sent: the message you replied to is not available.', 'error');
      render('msgs');
    }
  } else if (m.req !== undefined && m.code !== 'rate_limited') {
    // an answer to a request nobody waits for any more (timed out): say so
    toast(m.message ? `The server said: ${m.message}` : `The server refused a request (${m.code}).`, 'error');
  }
}

// ------------------------------------------------------ protocol: out ---

// Sends go out one at a time per conversation: the next waits for the
// previous one's `sent` (or refusal). Pipelined sends could be stored out of
// order: a rate-limited one retried after the later ones were accepted, or
// (over REST) parallel requests finishing in any order.
const inflight = new Map();    // conversation id -> {cmid, at}
const holdUntil = new Map();   // conversation id -> {until, timer}: rate limited
const INFLIGHT_RESEND_MS = 15_000;
let slowToastAt = 0;           // when the user was last told sends are held back   // no answer for this long: send again (the server deduplicates)

function sendOne(o) {
  if (!S.outbox.includes(o) || o.seq) return;
  pumpOutbox(o.conv);
}

/** Sends the first message of conversation convId's outbox that has no seq
 *  and did not fail, unless one is already on its way or the server asked
 *  us to wait. */
function pumpOutbox(convId) {
  const h = holdUntil.get(convId);
  if (h && Date.now() < h.until) return;
  holdUntil.delete(convId);
  const o = S.outbox.find((x) => x.conv === convId && !x.seq && !x.failed);
  if (!o) { inflight.delete(convId); return; }
  const f = inflight.get(convId);
  if (f && f.cmid === o.cmid && Date.now() - f.at < INFLIGHT_RESEND_MS) return;
  const msg = { type: 'send', req: 'send:' + o.cmid, conversation: o.conv, client_msg_id: o.cmid, body: o.body };
  if (o.replyTo) msg.reply_to = o.replyTo;
  if (o.attachments && o.attachments.length) msg.attachments = o.attachments.map((a) => a.id);
  if (conn.send(msg)) {
    inflight.set(convId, { cmid: o.cmid, at: Date.now() });
    setTimeout(() => pumpOutbox(convId), INFLIGHT_RESEND_MS + 100);
  } else inflight.delete(convId);
}

/** The server answered the send of cmid: the next one may go. */
function settled(convId, cmid) {
  const f = inflight.get(convId);
  if (f && f.cmid === cmid) inflight.delete(convId);
  pumpOutbox(convId);
}

/** The server asked us to wait (rate limited): this conversation's sends
 *  pause, then go on in order. */
function holdOutbox(convId, ms) {
  const prev = holdUntil.get(convId);
  if (prev) clearTimeout(prev.timer);
  inflight.delete(convId);
  holdUntil.set(convId, { until: Date.now() + ms, timer: setTimeout(() => pumpOutbox(convId), ms) });
}

function flushOutbox() {
  inflight.clear();             // a new connection: nothing is on its way
  const convs = new Set();
  for (const o of [...S.outbox]) {
    const c = S.convs.get(o.conv);
    if (o.seq && c && c.streamed && o.seq < c.minLoaded) { S.outbox.splice(S.outbox.indexOf(o), 1); continue; }
    if (!o.failed) { o.seq = o.seq && c && o.seq > c.applied ? o.seq : undefined; convs.add(o.conv); }
  }
  for (const id of convs) pumpOutbox(id);
  saveOutbox();
}

function newId() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join('');
}

function sendMessage(c, body, reply, attachments) {
  const o = { conv: c.id, cmid: newId(), body, ts: Date.now() };
  if (attachments && attachments.length) o.attachments = attachments;   // media objects (media.js)
  if (reply) { o.replyTo = reply.seq; o.replyPreview = reply.preview; }
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

/** Tells the server what the user has read in the open conversation: up to
 *  the highest seq seen on screen (noteSeen), never more. */
function markRead(c) {
  if (c.id !== S.openId || !pageActive() || !c.streamed || c.left || c.positioning) return;
  const seq = Math.min(c.seenSeq, c.applied);
  if (seq <= c.readSent) return;
  const needed = unreadOf(c) > 0 || c.lastOther > c.readSent;
  if (!needed) return;
  if (conn.send({ type: 'read', conversation: c.id, seq })) {
    c.readSent = seq;
    c.readSeq = Math.max(c.readSeq, seq);
    c.deliveredSent = Math.max(c.deliveredSent, seq);
    c.unreadBase = { value: 0, at: seq };
    c.mentionBase = { value: 0, at: seq };
    render('list');
  }
}

/** What is on screen may have changed (scroll, new items, the page came to
 *  the front): if the page is in front of the user, what is on screen is
 *  seen, and read. */
function noteSeen() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  schedulePill();
  if (!c || !conn || c.positioning || !pageActive()) return;
  const list = $('msg-list');
  if (list.dataset.conv !== String(c.id)) return;
  let seq = highestOnScreen();
  if (seq) {
    // the list's last item is seen: so is what follows it without a line of
    // its own (reactions, edits...), up to what the list was built from
    let last = 0;
    for (let li = list.lastElementChild; li && !last; li = li.previousElementSibling) last = Number(li.dataset.seq) || 0;
    if (seq >= last) seq = Math.max(seq, Number(list.dataset.applied) || 0);
    if (seq > c.seenSeq) c.seenSeq = seq;
  }
  markRead(c);
}

let pillQueued = false;
function schedulePill() {
  if (pillQueued) return;
  pillQueued = true;
  requestAnimationFrame(() => { pillQueued = false; renderPill(); });
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
    learnChannel(c, rc);
    noteWorkspace(c.workspace);
    c.readSeq = Math.max(c.readSeq, rc.read_seq || 0);
    c.readSent = Math.max(c.readSent, rc.read_seq || 0);
    c.readKnown = true;
    if (!c.streamed && typeof rc.unread === 'number') c.unreadBase = { value: rc.unread, at: rc.last_seq };
    learnCounts(c, rc);
    learnBlocked(c, rc);
    if (rc.last && (!c.lastEvent || rc.last.seq > c.lastEvent.seq)) c.lastEvent = rc.last;
    c.lastTs = Math.max(c.lastTs, rc.last_ts || 0, (rc.last && rc.last.ts) || 0);
    fillPreview(c);
    if (!c.members) loadDetails(c);
  }
  S.listLoaded = true;
  restoreRoute(new Set((data.conversations || []).map((rc) => rc.id)));
  render();
}

// ------------------------------------------------------------- the URL ---
//
// The open conversation is in the URL's fragment, #/c/<id>, so a reload or
// a link (also one followed before signing in) opens it again: once the
// conversation list has come, and only when the user is in it (else the
// list, and the fragment goes; nothing is asked about that id). On a phone
// (the list and the conversation are separate screens) opening one from
// the list is a history entry of its own, so the browser's Back returns to
// the list as the back button does (which goes back through that entry);
// everywhere else the URL is replaced, and Back leaves as before.

const ROUTE = /^#\/c\/([1-9]\d{0,14})$/;
let pendingRoute = null;    // a conversation id from the URL, opened when the list says we are in it

const routeId = () => { const m = ROUTE.exec(location.hash); return m ? Number(m[1]) : null; };
const narrow = () => matchMedia('(max-width: 720px)').matches;
const listUrl = () => location.pathname + location.search;
const overList = () => !!(history.state && history.state.parley === 'conv' && history.state.overList);

/** The URL names conversation id (openConv): a new entry when it was opened
 *  from the list on a phone, else the current one replaced. */
function routeTo(id, fromList) {
  if (routeId() === id) return;
  if (fromList && narrow()) history.pushState({ parley: 'conv', overList: true }, '', `#/c/${id}`);
  else history.replaceState({ parley: 'conv', overList: overList() }, '', `#/c/${id}`);
}

/** The URL names no conversation (the entry replaced). */
function routeToList() {
  if (location.hash) history.replaceState(null, '', listUrl());
}

/** The list has come (ids: the conversations we are in): the conversation
 *  the URL named at start, if we are in it, opens; else the fragment goes. */
function restoreRoute(ids) {
  const id = pendingRoute;
  if (id == null) return;
  pendingRoute = null;
  if (routeId() !== id || S.openId != null) return;      // opened another meanwhile
  if (!ids.has(id)) { routeToList(); return; }
  if (narrow()) {
    // Back from it leads to the list, as if it had been opened from there
    history.replaceState(null, '', listUrl());
    history.pushState({ parley: 'conv', overList: true }, '', `#/c/${id}`);
  }
  openConv(id);
}

/** The list's screen (a phone's back button, or Back in the browser). */
function showList() {
  typingStop();
  $('layout').dataset.view = 'list';
  const cur = document.querySelector(`.conv-item[data-conv-id="${S.openId}"]`);
  if (cur) cur.focus();
}

function onPopState() {
  if (!S.me) return;
  const id = routeId();
  if (id == null) {
    if ($('layout').dataset.view === 'conv') showList();
    return;
  }
  const c = S.convs.get(id);
  if (c && c.kind && !c.left) {
    if (S.openId !== id || $('layout').dataset.view !== 'conv') openConv(id);
  } else if (!S.listLoaded) {
    pendingRoute = id;
  } else {
    showList();
    routeToList();
  }
}

/** After a reload the list knows a conversation's latest event only. When
 *  that is an edit, a delete, a reaction or a pin, the list shows the
 *  latest message in its current form, as it did live (convlist.js
 *  previewOf): fetched here (the page just below that event) when no
 *  history is held. */
function fillPreview(c) {
  const e = c.lastEvent;
  if (!e || !actions.isAction(e) || c.left) return;
  if (c.previewMsg && c.previewMsg.at === e.seq) return;        // done, or under way
  if (c.events.some(previewable)) return;
  const at = e.seq;
  const pm = { at, event: null };
  c.previewMsg = pm;
  api.call('GET', `/api/v1/conversations/${c.id}/messages?before=${at}&limit=50`).then((r) => {
    if (c.previewMsg !== pm) return;
    const evs = ((r && r.events) || []).filter((x) => x.seq < at).sort((a, b) => a.seq - b.seq);
    for (let i = evs.length - 1; i >= 0; i--) if (previewable(evs[i])) { pm.event = evs[i]; break; }
    // actions that came live meanwhile (an edit of that message)
    for (const x of c.events) if (pm.event && x.seq > pm.event.seq && actions.isAction(x)) actions.applyAction(c, x);
    render('list');
  }).catch(() => { if (c.previewMsg === pm) c.previewMsg = null; });
}

function loadDetails(c, force) {
  if (c.detailsLoading && !force) return c.detailsLoading;
  const p = api.call('GET', `/api/v1/conversations/${c.id}`).then((d) => {
    c.kind = d.kind;
    c.title = d.title;
    c.role = d.role;
    learnChannel(c, d);
    noteWorkspace(c.workspace);
    c.readSeq = Math.max(c.readSeq, d.read_seq || 0);
    c.readSent = Math.max(c.readSent, d.read_seq || 0);
    c.readKnown = true;
    if (typeof d.notify === 'string') c.notify = d.notify;
    learnMembers(c, d.members || []);
    learnRetention(c, d);
    learnBlocked(c, d);
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

/** Loads a page of history below what we hold; resolves when done (the
 *  page being loaded already, when there is one). */
function loadOlder(c, limit = HISTORY_PAGE) {
  if (c.loadingOlder) return c.olderPromise || Promise.resolve();
  const p = loadOlderPage(c, limit);
  if (c.loadingOlder) c.olderPromise = p;
  return p;
}

async function loadOlderPage(c, limit) {
  if (c.loadingOlder || c.noOlder || !c.streamed) return;
  if (c.minLoaded <= 1) { c.noOlder = true; return; }
  c.loadingOlder = true;
  renderHistoryState();
  const before = c.minLoaded;
  const appliedAtAsk = c.applied;
  let res;
  try {
    if (conn.online) {
      res = await conn.request({ type: 'history', conversation: c.id, before, limit });
    } else {
      res = await api.call('GET', `/api/v1/conversations/${c.id}/messages?before=${before}&limit=${limit}`);
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
    actions.reapplyAfterPage(c, add[0].seq, add[add.length - 1].seq, appliedAtAsk);
    for (const e of add) {
      if (e.kind === 'message' && S.me && e.sender !== S.me.id) c.lastOther = Math.max(c.lastOther, e.seq);
      if (!c.lastEvent || e.seq > c.lastEvent.seq) c.lastEvent = e;
    }
    scheduleDelivered(c);
    expire(c);                       // what the server has not purged yet
  }
  if (!res.has_more || !add.length || c.minLoaded <= 1) c.noOlder = true;
  if (c.id === S.openId) {
    const box = $('messages');
    const fromBottom = box.scrollHeight - box.scrollTop;
    renderMessages();
    box.scrollTop = box.scrollHeight - fromBottom;
    markRead(c);
    // fill the screen
    if (!c.noOlder && !c.positioning && box.scrollHeight <= box.clientHeight + 40) loadOlder(c);
  }
  renderHistoryState();
}

function ensureHistory(c) {
  if (c.streamed && !c.noOlder && c.events.length < 30 && !c.positioning) loadOlder(c);
}

/** Opens c at its first unread message: loads history back to it (bounded),
 *  puts the "New messages" divider above it and scrolls it to the top of
 *  the pane. Until then nothing is marked read (c.positioning). */
async function openAtUnread(c) {
  // where the user stopped reading: the server's read cursor (the list or
  // the conversation's details say it; ask when neither has yet)
  if (!c.readKnown) { try { await loadDetails(c); } catch { /* offline: what we have */ } }
  const floor = c.readSeq;
  for (let pages = 0; pages < UNREAD_MAX_PAGES; pages++) {
    if (S.openId !== c.id || !c.positioning) return;
    if (c.minLoaded <= floor + 1 || c.noOlder) break;
    const before = c.minLoaded;
    await loadOlder(c, UNREAD_PAGE);
    if (c.minLoaded === before && !c.loadingOlder) break;   // nothing came (offline, refused)
  }
  if (S.openId !== c.id || !c.positioning) return;
  const first = c.events.find((e) => e.seq > floor && e.kind === 'message' && S.me && e.sender !== S.me.id);
  c.divider = first ? first.seq : null;
  renderConvHead();       // the pane must be laid out to be scrolled
  renderMessages();
  c.positioning = false;
  const box = $('messages');
  const d = $('msg-list').querySelector(':scope > [data-key="unread"]');
  if (d) box.scrollTop += d.getBoundingClientRect().top - box.getBoundingClientRect().top - 12;
  else box.scrollTop = box.scrollHeight;
  stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
  renderPill();
  ensureHistory(c);
  requestAnimationFrame(noteSeen);
}

// ------------------------------------------------------------- actions ---

/** Opens conversation id (its screen, on a phone). at: a seq the caller
 *  shows next (a search result, jumpToMessage): the view is not put at the
 *  bottom nor the composer focused, so nothing below it is taken as seen. */
function openConv(id, { at = null } = {}) {
  if (S.typingOut && S.typingOut.conv !== id) typingStop();
  const switched = S.openId !== id;
  const prev = switched && S.openId != null ? S.convs.get(S.openId) : null;
  if (prev) { prev.divider = null; prev.positioning = false; }
  S.openId = id;
  const c = S.convs.get(id);
  let atUnread = false;     // openAtUnread places the view (perhaps at once)
  closeMentions();
  $('new-dm-error').textContent = '';   // a refusal of an earlier try is stale once a conversation opens
  const fromList = $('layout').dataset.view !== 'conv';
  $('layout').dataset.view = 'conv';
  routeTo(id, fromList);
  if (switched) {
    switchComposer(prev ? prev.id : null, id);   // each conversation keeps its unsent text and files
    actions.onConvSwitch();
    $('composer-input').value = draftOf(id);
    autosize();
    if (c) {
      c.divider = null;
      c.positioning = atUnread = c.streamed && !c.left && unreadOf(c) > 0;
      if (c.positioning) openAtUnread(c);
    }
  }
  render();
  if (c) {
    // a blocked DM is asked again on opening: an unblock makes no event
    if (!c.members || c.blocked) loadDetails(c, !!c.blocked);
    if (conn.online) fetchReceipts(c);
    ensureHistory(c);
    markRead(c);
  }
  if (at != null) return;
  queueMicrotask(() => {
    const b = $('messages');
    if (!atUnread) b.scrollTop = b.scrollHeight;
    $('composer-input').focus();
  });
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
  learnChannel(c, d);
  noteWorkspace(c.workspace);
  // A conversation we had left and are in again (a channel joined back)
  // whose `member_added` has not come yet: its stream starts again there
  // (onEvent), not after the cursor we had when we left.
  if (c.left && c.streamed) c.streamed = false;
  c.left = false;
  if (d.members) learnMembers(c, d.members);
  learnRetention(c, d);
  learnBlocked(c, d);
  c.lastTs = Math.max(c.lastTs, d.last_ts || 0, Date.now());
  return c;
}

/** Opens (creating it when needed) the direct conversation with uid. */
async function openDm(uid) {
  if (S.me && uid === S.me.id) throw new Error('That is you — pick someone else.');
  const d = await api.call('POST', '/api/v1/conversations', { kind: 'direct', user: uid });
  const c = upsertConv(d);
  if (conn && conn.online) queryPresence([uid]);
  openConv(c.id);
  return c;
}

/** Opens conversation convId at message seq (a search result): loads the
 *  history back to a little before it, then scrolls it into view and
 *  focuses it (actions.jumpTo). It always goes through openConv: the
 *  conversation may be the open one yet not on screen (a phone's back
 *  button shows the list and keeps S.openId). */
async function jumpToMessage(convId, seq) {
  const c = conv(convId);
  openConv(convId, { at: seq });
  for (let n = 0; n < 100 && S.openId === convId && (c.positioning || !c.streamed); n++) {
    await new Promise((r) => setTimeout(r, 50));
  }
  const CONTEXT = 10;
  for (let pages = 0; pages < 30 && S.openId === convId && c.minLoaded > Math.max(1, seq - CONTEXT) && !c.noOlder; pages++) {
    const before = c.minLoaded;
    await loadOlder(c, UNREAD_PAGE);
    if (c.minLoaded === before && !c.loadingOlder) break;
  }
  if (S.openId !== convId) return;
  stick = false;
  await actions.jumpTo(c, seq);
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
    await openDm(u.id);
    input.value = '';
  } catch (e) {
    err.textContent = e.status === 403 && e.message === 'blocked'
      ? 'You can’t start a conversation with this user: one of you has blocked the other.'
      : readable(e.message) || 'Could not start the conversation.';
  }
}

// This browser's other tabs of the same account follow a notification
// level chosen here at once (the server tells other devices only when they
// next fetch the list: docs/protocol.md), as they share drafts and logout.
const tabs = typeof BroadcastChannel === 'function' ? new BroadcastChannel('parley') : null;
if (tabs) {
  tabs.onmessage = (ev) => {
    const m = ev.data || {};
    if (m.kind !== 'notify' || !S.me || m.user !== S.me.id || typeof m.level !== 'string') return;
    const c = S.convs.get(m.conv);
    if (!c || c.notify === m.level) return;
    c.notify = m.level;
    render('list');
    render('conv');
  };
}

async function setNotify(c, level) {
  const prev = c.notify;
  c.notify = level;
  render('list');
  render('conv');
  try {
    const r = await api.call('PUT', `/api/v1/conversations/${c.id}/notify`, { level });
    if (r && typeof r.notify === 'string') c.notify = r.notify;
    if (tabs && S.me) tabs.postMessage({ kind: 'notify', user: S.me.id, conv: c.id, level: c.notify });
    toast(level === 'none' ? 'Conversation muted.' : level === 'mentions' ? 'You will be notified of mentions and replies only.'
      : 'You will be notified of all messages.');
  } catch (e) {
    c.notify = prev;
    toast(e.status === 0 ? 'You are offline — the notification setting was not changed.'
      : `Could not change notifications${e.message ? `: ${e.message}` : ''}.`, 'error');
  }
  render('list');
  render('conv');
}

// ----------------------------------------------------------- screens ---

function resetState() {
  S.me = null;
  S.convs.clear();
  S.names.clear();
  S.presence.clear();
  S.openId = null;
  pendingRoute = null;
  S.outbox = [];
  S.cursorsAtAuth.clear();
  S.typingOut = null;
  S.listLoaded = false;
  S.workspaces.clear();
  resetWorkspaces();
  resetBlocks();
  resetDrafts();
  actions.onConvSwitch();
  closeMenu(false);
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
  paintUserAvatar($('me-avatar'), S.me.id, S.me.username);
  $('layout').dataset.view = 'list';
  pendingRoute = routeId();     // opened once the list says we are in it
  // restore the outbox and the stream positions of the last visit
  S.outbox = lsGet('outbox', []).filter((o) => o && o.conv && o.cmid && typeof o.body === 'string')
    .map((o) => (Number.isSafeInteger(o.replyTo) && o.replyTo > 0 ? o : { ...o, replyTo: undefined, replyPreview: undefined }))
    .map((o) => (o.attachments === undefined || (Array.isArray(o.attachments) &&
      o.attachments.every((a) => a && (typeof a.id === 'number' || typeof a.id === 'string'))) ? o : { ...o, attachments: undefined }));
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
  loadWorkspaces();
  render();
}

async function logout() {
  typingStop();
  if (conn) { conn.stop(); conn = null; }
  try { for (const k of ['cursors', 'outbox', 'drafts']) localStorage.removeItem(lsKey(k)); } catch { /* ignore */ }
  resetDrafts();
  await api.logout();
  resetState();
  routeToList();
  showAuth();
}

let deletingAccount = false;      // DELETE /me in flight: its 4001 closes are expected

/** Deletes the account (account.js asked for the password and the
 *  confirmation): on success the session ends here and the sign-in screen
 *  says so; a refusal rejects with the ApiError and changes nothing. */
async function deleteAccount(password) {
  deletingAccount = true;
  try {
    await api.deleteAccount(password);
  } catch (e) {
    deletingAccount = false;
    throw e;
  }
  typingStop();
  if (conn) { conn.stop(); conn = null; }
  // the server closed our socket with 4001 as it revoked the logins: a
  // refresh that started then ends in a 401, which must not say "session
  // ended" over what happened
  await api.idle();
  try { for (const k of ['cursors', 'outbox', 'drafts']) localStorage.removeItem(lsKey(k)); } catch { /* ignore */ }
  resetDrafts();
  resetState();
  routeToList();
  showAuth();
  $('auth-error').textContent = 'Your account was deleted.';
  deletingAccount = false;
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
  S.conn = state;
  if (state !== 'online') {
    for (const c of S.convs.values()) { c.syncing = false; c.typing.clear(); }
    S.typingOut = null;
    // what we knew of others' presence is stale: unknown until asked again
    S.presence.clear();
    renderTyping();
  }
  render('conv');
  render('list');
  if ($('members-dialog').open) renderMembers();
}

// -------------------------------------------------------------- wiring ---

function wire() {
  initAuth({ api, signedIn: startApp });
  $('logout').addEventListener('click', logout);
  $('new-dm-form').addEventListener('submit', startDm);
  // an old refusal goes as soon as the name is changed
  $('new-dm-username').addEventListener('input', () => { $('new-dm-error').textContent = ''; });
  initGroups({
    api, render, openConv, lookupUser, upsertConv, loadDetails,
    queryPresence: (ids) => { if (conn && conn.online) queryPresence(ids); },
    openProfile: (uid) => openProfile(uid, nameOf(uid)),
    refreshReportsButton,
  });
  initWorkspaces({
    api, render, openConv, upsertConv,
    queryPresence: (ids) => { if (conn && conn.online) queryPresence(ids); },
    openProfile: (uid) => openProfile(uid, nameOf(uid)),
  });
  $('conv-lock').replaceChildren(icon('lock', 14));
  $('back').addEventListener('click', () => {
    showList();
    // the entry opening it pushed over the list's: Back to it, as the
    // browser's Back does (onPopState); else the URL just drops it
    if (overList() && routeId() != null) history.back();
    else routeToList();
  });
  window.addEventListener('popstate', onPopState);

  initComposer({ api, conn: () => conn, send: sendMessage, loadDetails });
  $('notify-btn').addEventListener('click', (ev) => {
    const c = S.convs.get(S.openId);
    if (c) openNotifyMenu(ev.currentTarget, c, (level) => setNotify(c, level));
  });
  $('pins-btn').replaceChildren(icon('pin', 18));
  $('pins-btn').addEventListener('click', () => {
    const c = S.convs.get(S.openId);
    if (c) actions.showPins(c);
  });
  initConvList({ openConv });
  initConvView({ sendOne, render, openProfile: (uid) => openProfile(uid, nameOf(uid)) });
  initTheme();
  initSettings();
  $('settings-btn').replaceChildren(icon('settings', 18));
  $('settings-btn').addEventListener('click', openSettings);
  $('search-btn').replaceChildren(icon('search', 18));
  $('search-btn').addEventListener('click', openSearch);
  initPeople({
    api, me: () => S.me, presence: (uid) => S.presence.get(uid), live: () => S.conn === 'online',
    queryPresence: (ids) => { if (conn && conn.online) queryPresence(ids); },
    learnName: (id, name) => S.names.set(id, name), openDm,
  });
  const convChoices = () => [...S.convs.values()].filter((c) => (c.kind || c.streamed) && !c.left)
    .sort((a, b) => (b.lastTs - a.lastTs) || (b.id - a.id))
    .map((c) => {
      const a = avatarOf(c);
      return { id: c.id, title: titleOf(c), ws: channelWsName(c), kind: c.kind, unread: unreadOf(c), private: c.kind === 'channel' && c.private,
        avatarKey: a.key, avatarLabel: a.label, square: a.square };
    });
  initSwitcher({ convs: convChoices, open: openConv, enabled: () => !!conn && !$('app-screen').hidden });
  initSearch({
    api, convs: convChoices, lookupUser, nameOf: (uid) => (S.me && uid === S.me.id ? 'You' : nameOf(uid)),
    titleOf: (id) => {
      if (!S.convs.has(id)) return `Conversation ${id}`;
      const c = S.convs.get(id), ws = channelWsName(c);
      return ws ? `${titleOf(c)} · ${ws}` : titleOf(c);
    },
    jump: jumpToMessage,
  });
  actions.initActions({
    S, api, conn: () => conn, render, nameOf, loadOlder, autosize,
    openConv: () => (S.openId != null ? S.convs.get(S.openId) || null : null),
    openProfile: (uid) => openProfile(uid, nameOf(uid)),
    canReport, openReport, onBlocked: onBlockedRefusal,
  });
  initReports({ S, api, nameOf, openConv: () => (S.openId != null ? S.convs.get(S.openId) || null : null) });
  initRetention({ api, render, loadDetails });
  initBlocks({ api, render, loadDetails });
  initAccount({ api, me: () => S.me, deleteAccount });

  const box = $('messages');
  box.addEventListener('scroll', () => {
    stick = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
    const c = S.convs.get(S.openId);
    if (c && box.scrollTop < 80) loadOlder(c);
    schedulePill();
  }, { passive: true });
  initSeen(box, noteSeen);
  $('new-pill').addEventListener('click', () => {
    box.scrollTop = box.scrollHeight;
    stick = true;
    renderPill();
    $('composer-input').focus();
  });
  if (window.ResizeObserver) {
    new ResizeObserver(() => {
      const c = S.convs.get(S.openId);
      if (stick && !(c && c.positioning)) box.scrollTop = box.scrollHeight;
    }).observe(box);
  }

  document.addEventListener('visibilitychange', () => {
    if (!conn) return;
    sendPresenceState();
    noteSeen();
  });
  window.addEventListener('focus', () => { if (conn) noteSeen(); });

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
    if (deletingAccount) return;       // deleteAccount ends the session itself
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
  transport: () => (conn ? conn.transport : null),   // 'ws', or 'sse' (the HTTP fallback)
  // closes the socket as a network failure would (the client then reconnects)
  dropConnection: () => { if (conn && conn.ws) conn.ws.close(); },
  alerts: alerts.stats,
  mediaConfig,               // upload tunables (media.js), for tests
  refreshNow: () => api.refresh(),   // rotates the refresh token now (tests)
};
