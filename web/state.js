// state.js — the client's state and what is derived from it: conversations
// (their loaded events, cursors, counts), names, presence, the outbox, the
// workspaces I am in; persistence of cursors and outbox in localStorage.
//
// A channel (kind "channel", docs/protocol.md "Workspaces and channels") is
// a group that lives in a workspace: everything that holds for groups holds
// for it (isGroupLike), it is titled "#name" and may be private.
//
// Ordering rule (see app.js): per conversation `applied` is the last seq
// applied; loaded events are contiguous, minLoaded..applied.

import * as actions from './actions.js';
import { concernsMe } from './mentions.js';
import { fmtDuration } from './dom.js';

export const S = {
  me: null,                 // {id, username}
  convs: new Map(),         // id -> conv
  names: new Map(),         // user id -> username
  presence: new Map(),      // user id -> {status, last_seen}
  openId: null,
  outbox: [],               // {conv, cmid, body, ts, seq?, failed?}
  cursorsAtAuth: new Set(), // conversations whose cursor went out with `auth`
  typingOut: null,          // {conv, since, last}
  listLoaded: false,
  conn: 'connecting',       // our own connection's state (conn.js)
  workspaces: new Map(),    // id -> workspace object (REST, without members)
};

export function newConv(id) {
  return {
    id, kind: null, title: null, role: null, members: null,
    workspace: null,          // a channel's workspace id
    private: false,           // a private channel
    streamed: false,          // we hold a position in its live stream
    applied: 0, minLoaded: 1, events: [],
    noOlder: false, loadingOlder: false,
    syncing: false,
    readSeq: 0, readSent: 0, deliveredSent: 0, deliverTimer: 0, lastOther: 0,
    seenSeq: 0,               // highest seq seen on screen (seen.js); what `read` may say
    divider: null,            // seq of the first unread message when opened ("New messages")
    positioning: false,       // being opened at its first unread message
    readKnown: false,         // readSeq came from the server (REST)
    unreadBase: { value: 0, at: 0 },
    mentionBase: { value: 0, at: 0 },   // unread_mentions as of seq `at`
    notify: 'all',            // notification level: all | mentions | none
    stash: new Map(),         // seq -> event that arrived ahead of a gap
    receipts: new Map(),      // user -> {d, r}
    typing: new Map(),        // user -> expiry (ms)
    lastEvent: null, lastTs: 0,
    left: false,
    detailsLoading: null,
    retention: 0,             // seconds the server keeps its messages (0: for ever); retention.js
    retentionSource: null,    // whose value: 'conversation' | 'workspace' | 'server' | null
  };
}

export function conv(id) {
  let c = S.convs.get(id);
  if (!c) { c = newConv(id); S.convs.set(id, c); }
  return c;
}

export const lsKey = (what) => `parley.${what}.${S.me ? S.me.id : 0}`;

export function lsGet(what, dflt) {
  try { const v = JSON.parse(localStorage.getItem(lsKey(what)) || 'null'); return v == null ? dflt : v; }
  catch { return dflt; }
}

export function lsSet(what, v) {
  try { localStorage.setItem(lsKey(what), JSON.stringify(v)); } catch { /* quota or private mode */ }
}

let saveCursorsTimer = 0;
export function saveCursorsSoon() {
  clearTimeout(saveCursorsTimer);
  saveCursorsTimer = setTimeout(() => lsSet('cursors', cursors()), 300);
}

export function saveOutbox() {
  // attachments: the media objects (ids, names, sizes) the send carries; a
  // reload must not send the text without them
  lsSet('outbox', S.outbox.map(({ conv: c, cmid, body, ts, seq, replyTo, replyPreview, attachments }) =>
    ({ conv: c, cmid, body, ts, seq, replyTo, replyPreview, attachments })));
}

export function cursors() {
  const out = {};
  for (const c of S.convs.values()) if (c.streamed && !c.left) out[c.id] = c.applied;
  return out;
}

export function nameOf(uid) {
  if (S.me && uid === S.me.id) return S.me.username;
  return S.names.get(uid) || `user #${uid}`;
}

export function peerOf(c) {
  if (c.kind !== 'direct' || !c.members || !S.me) return null;
  const m = c.members.find((x) => x.id !== S.me.id);
  return m ? m.id : null;
}

/** A group or a channel: several members, admins, titles, @all. */
export function isGroupLike(c) {
  return !!c && (c.kind === 'group' || c.kind === 'channel');
}

/** What a conversation object (REST) or a channel's `created` event data
 *  says of its workspace. */
export function learnChannel(c, d) {
  if (d.workspace !== undefined) c.workspace = d.workspace;
  if (d.private !== undefined) c.private = !!d.private;
}

/** The avatar of a conversation: {key (colour), label (initials), square}. */
export function avatarOf(c) {
  if (c.kind === 'channel') return { key: 'g' + c.id, label: '#', square: true };
  if (c.kind === 'group') return { key: 'g' + c.id, label: titleOf(c), square: true };
  const peer = peerOf(c);
  const title = titleOf(c);
  return { key: peer != null ? 'u' + peer : title, label: title, square: false };
}

export function titleOf(c) {
  if (c.kind === 'channel') return '#' + (c.title || 'channel');
  if (c.kind === 'group') return c.title || 'Group';
  const p = peerOf(c);
  if (p != null) return nameOf(p);
  return c.kind === 'direct' ? 'Direct message' : 'Conversation';
}

/** The name of a channel's workspace, to show beside it ("#general ·
 *  Acme") where channels are listed: when I am in more than one workspace
 *  (every one has a #general) or another channel I hold has its name; ''
 *  otherwise, and for anything but a channel of a workspace I know. */
export function channelWsName(c) {
  if (!c || c.kind !== 'channel') return '';
  const w = S.workspaces.get(c.workspace);
  if (!w) return '';
  if (S.workspaces.size > 1) return w.name;
  for (const o of S.convs.values()) {
    if (o !== c && o.kind === 'channel' && o.title === c.title && o.workspace !== c.workspace) return w.name;
  }
  return '';
}

export function othersOf(c) {
  const ids = new Set();
  if (c.members) for (const m of c.members) ids.add(m.id);
  else for (const u of c.receipts.keys()) ids.add(u);
  if (S.me) ids.delete(S.me.id);
  return [...ids];
}

export function unreadOf(c) {
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

/** Unread messages that mention me or reply to me (what the @ badge
 *  counts): the server's count as of mentionBase.at, plus loaded messages
 *  above it. */
export function mentionsOf(c) {
  if (c.left || !S.me) return 0;
  const floor = Math.max(c.mentionBase.at, c.readSeq);
  let n = c.readSeq >= c.mentionBase.at ? 0 : c.mentionBase.value;
  for (let i = c.events.length - 1; i >= 0; i--) {
    const e = c.events[i];
    if (e.seq <= floor) break;
    if (e.kind !== 'message') continue;
    const parent = e.data && e.data.reply_to != null ? actions.findMsg(c, e.data.reply_to) : null;
    if (concernsMe(e, S.me.id, parent ? parent.sender : undefined)) n++;
  }
  return n;
}

/** The server's counts in a conversation object (REST), taken as of its
 *  last_seq when what we hold covers the seqs above it. */
export function learnCounts(c, rc) {
  if (typeof rc.notify === 'string') c.notify = rc.notify;
  if (typeof rc.unread_mentions === 'number' && typeof rc.last_seq === 'number' &&
      (!c.streamed || rc.last_seq >= c.applied || c.minLoaded <= rc.last_seq + 1)) {
    c.mentionBase = { value: rc.unread_mentions, at: rc.last_seq };
  }
}

export function learnMembers(c, members) {
  c.members = members.map((m) => ({ id: m.id, role: m.role }));
  for (const m of members) if (m.username) S.names.set(m.id, m.username);
}

/** The text of a system line (an event that is not a message), or '' for
 *  a kind this client does not know (drawn as nothing: a newer server may
 *  add kinds). */
export function systemText(e) {
  const who = nameOf(e.sender);
  const d = (e.data && typeof e.data === 'object') ? e.data : {};
  switch (e.kind) {
    case 'created':
      if (d.kind === 'channel') return `${who} created the ${d.private ? 'private ' : ''}channel #${d.title || ''}`;
      return d.kind === 'group' ? `${who} created the group “${d.title || ''}”` : `${who} started the conversation`;
    case 'member_added': return e.sender === d.user ? `${who} joined` : `${who} added ${nameOf(d.user)}`;
    case 'member_removed': {
      // a member removing itself: an admin leaving a group, or (in a
      // channel) someone who left the workspace
      const na = d.new_admin ? `; ${nameOf(d.new_admin)} is now an admin` : '';
      if (e.sender !== d.user) return `${who} removed ${nameOf(d.user)}${na}`;
      return ((S.convs.get(e.conversation) || {}).kind === 'channel' ? `${who} left the workspace` : `${who} left`) + na;
    }
    case 'member_left':
      return `${nameOf(d.user != null ? d.user : e.sender)} left` + (d.new_admin ? `; ${nameOf(d.new_admin)} is now an admin` : '');
    case 'member_role': return `${who} made ${nameOf(d.user)} ${d.role === 'admin' ? 'an admin' : 'a member'}`;
    case 'retention':
      return Number.isSafeInteger(d.seconds) && d.seconds > 0
        ? `${who} set messages to disappear after ${fmtDuration(d.seconds)}` : `${who} turned off disappearing messages`;
    case 'e2ee': return d.op === 'enabled' ? `${who} turned on end-to-end encryption` : '';
    default: return actions.isAction(e) ? actions.actionPreview(S.convs.get(e.conversation), e) : '';
  }
}

export const visible = () => document.visibilityState === 'visible';
