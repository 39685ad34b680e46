// convview.js — the open conversation: its header, the message list
// (days, system lines, bubbles with their status marks; message actions'
// parts come from actions.js), the history state line and typing; the
// "New messages" divider and the "new messages" pill (jump to latest).
// A message's attachments are drawn by media.js (renderAttachments). A
// channel's header: "#name" (a lock mark when private), its workspace and
// members, and a button to the workspace's channels (workspaces.js). A
// blocked direct conversation shows blocks.js's notice instead of the
// composer.
//
// Text whose direction we cannot know (message bodies, names, previews) gets
// dir="auto", so Arabic or Hebrew reads right to left on its own.

import { el, $, setAttr, setText, paintAvatar, paintUserAvatar, fmtTime, fmtDay, fmtAgo, fmtFull } from './dom.js';
import { icon, setIcon } from './icons.js';
import * as actions from './actions.js';
import { levelInfo } from './notify.js';
import { S, titleOf, nameOf, peerOf, othersOf, systemText, saveOutbox, isGroupLike, avatarOf } from './state.js';
import { presenceOf } from './convlist.js';
import { watch, unwatch, resetSeen, lastInView } from './seen.js';
import { renderAttachments } from './media.js';
import { renderBlockedNote } from './blocks.js';

let hooks = { sendOne: () => {}, render: () => {}, openProfile: () => {} };

/** hooks: {sendOne(outboxEntry), render(what), openProfile(uid, opener)} */
export function initConvView(h) { hooks = h; }

export function renderConvHead() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  $('conv').hidden = !c;
  $('pane-empty').hidden = !!c;
  if (!c) return;
  const title = titleOf(c);
  setText($('conv-title'), title);
  const a = avatarOf(c);
  paintAvatar($('conv-avatar'), a.key, a.label);
  $('conv-avatar').classList.toggle('avatar-group', a.square);
  const channel = c.kind === 'channel';
  const ws = channel ? S.workspaces.get(c.workspace) : null;
  $('conv-lock').hidden = !(channel && c.private);
  // the way back to its workspace: a button beside the title, on a phone
  // (style.css) a small link before the member count
  for (const [b, label] of [['ws-btn', 'ws-btn-label'], ['ws-link', 'ws-link-label']]) {
    $(b).hidden = !channel || c.workspace == null;
    setText($(label), ws ? ws.name : 'Workspace');
    setAttr($(b), 'aria-label', `${ws ? ws.name : 'Workspace'}: browse channels and members`);
  }
  let sub = '';
  const sc = $('conv-sub');
  // Presence is only known while we are connected ourselves: when our own
  // connection is down (or the answer is not in yet) we say so rather than
  // repeat what was true before.
  const live = S.conn === 'online';
  if (isGroupLike(c)) {
    const n = c.members ? c.members.length : 0;
    // everyone online, me included (I am, when connected); not known once
    // I have left
    const on = c.members ? c.members.filter((m) => (S.me && m.id === S.me.id) || presenceOf(m.id) === 'online').length : 0;
    sub = `${c.private ? 'Private · ' : ''}${n} member${n === 1 ? '' : 's'}${!c.members || c.left ? '' : !live ? ' · connecting…' : on ? ` · ${on} online` : ''}`;
    setAttr(sc, 'data-status', null);
  } else {
    const p = peerOf(c);
    const pr = p != null && live ? S.presence.get(p) : null;
    if (pr) sub = pr.status === 'online' ? 'Online' : pr.status === 'away' ? 'Away' : (pr.last_seen ? `Last seen ${fmtAgo(pr.last_seen)}` : 'Offline');
    else if (p != null) sub = 'Connecting…';
    setAttr(sc, 'data-status', pr ? pr.status : 'unknown');
  }
  setText(sc, sub);
  // a group's members, or a direct conversation's details (its retention)
  $('members-btn').hidden = !isGroupLike(c) && c.kind !== 'direct';
  // a word on a wide screen, an icon on a phone (style.css)
  setText($('members-label'), c.kind === 'direct' ? 'Details' : 'Members');
  setIcon($('members-icon'), c.kind === 'direct' ? 'info' : 'users', 18);
  const li = levelInfo(c.notify);
  const nb = $('notify-btn');
  setAttr(nb, 'data-level', li.level);
  setAttr(nb, 'aria-label', `Notifications: ${li.label.toLowerCase()}`);
  setAttr(nb, 'title', `Notifications: ${li.label}`);
  setIcon($('notify-icon'), li.icon, 18);
  nb.hidden = c.left;
  $('pins-btn').hidden = c.left;
  $('left-note').hidden = !c.left;
  // a blocked direct conversation takes no writes: a notice instead (blocks.js)
  const blocked = c.kind === 'direct' && !!c.blocked;
  $('composer').hidden = c.left || blocked;
  $('composer-area').hidden = c.left || blocked;
  renderBlockedNote(c);
  renderTyping();
  renderHistoryState();
}

export function renderHistoryState() {
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

export function statusOf(c, seq) {
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

export function buildItems(c) {
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
    if (c.divider != null && it.seq === c.divider) {
      items.push({ key: 'unread', type: 'divider' });
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
    if (e.expired) continue;          // past the conversation's retention (retention.js)
    if (e.kind === 'message') {
      const mine = S.me && e.sender === S.me.id;
      const st = mine ? statusOf(c, e.seq) : null;
      push({ key: 's' + e.seq, type: 'msg', seq: e.seq, sender: e.sender, mine, body: e.body, ts: e.ts,
             cmid: e.client_msg_id, status: st ? st.status : null, statusLabel: st ? st.label : null, st, ev: e,
             atts: e.data && e.data.attachments, deleted: !!e.deleted });
    } else if (actions.isAction(e)) {
      const text = actions.actionLine(c, e);     // most actions only change their target
      if (text) push({ key: 's' + e.seq, type: 'sys', seq: e.seq, text, ts: e.ts, kind: e.kind, target: e.data && e.data.target });
    } else {
      const text = systemText(e);      // '' for a kind this client does not know
      if (text) push({ key: 's' + e.seq, type: 'sys', seq: e.seq, text, ts: e.ts, kind: e.kind });
    }
  }
  for (const o of S.outbox) {
    if (o.conv !== c.id || pendingIds.has(o.cmid)) continue;
    pendingIds.add(o.cmid);
    const status = o.failed ? 'failed' : o.seq ? 'sent' : 'sending';
    const label = o.failed ? 'Not sent' : o.seq ? 'Sent' : 'Sending…';
    push({ key: 'p' + o.cmid, type: 'msg', pending: o, seq: o.seq || null, sender: S.me.id, mine: true,
           body: o.body, ts: o.ts, cmid: o.cmid, status, statusLabel: label, atts: o.attachments });
  }
  return items;
}

/** The mark of each state of my messages: a different shape for each (not
 *  only a different colour): a clock, one tick, two ticks, two ticks on a
 *  filled disc, an alert. */
export const MARKS = { sending: 'clock', sent: 'tick', delivered: 'ticks', read: 'read', failed: 'alert' };

export function createItem(it) {
  if (it.type === 'day') {
    return el('li', { class: 'day', 'data-key': it.key, role: 'presentation' }, el('span', { text: it.text }));
  }
  if (it.type === 'divider') {
    return el('li', { class: 'unread-divider', 'data-key': it.key, 'data-testid': 'unread-divider' },
      el('span', { text: 'New messages' }));
  }
  if (it.type === 'sys') {
    return el('li', { class: 'sys', 'data-key': it.key, 'data-testid': 'system-event', 'data-seq': it.seq,
      'data-kind': it.kind || null }, el('span', { text: it.text }));
  }
  const li = el('li', { 'data-key': it.key, 'data-testid': 'message' },
    el('button', { type: 'button', class: 'avatar avatar-xs msg-avatar', 'data-testid': 'message-avatar', tabindex: '-1',
      hidden: true, onclick: (ev) => { ev.stopPropagation(); hooks.openProfile(Number(li.dataset.sender), ev.currentTarget); } }),
    el('button', { type: 'button', class: 'msg-sender', dir: 'auto', tabindex: '-1', 'data-testid': 'message-sender',
      onclick: (ev) => { ev.stopPropagation(); hooks.openProfile(Number(li.dataset.sender), ev.currentTarget); } }),
    el('div', { class: 'bubble' },
      el('div', { class: 'msg-body', 'data-testid': 'message-body', dir: 'auto' }),
      el('span', { class: 'msg-info' },
        el('time', { class: 'msg-time' }),
        el('span', { class: 'mark', 'data-testid': 'message-status', role: 'img' }),
        el('span', { class: 'mark-count' }))));
  actions.createParts(li);
  return li;
}

export function updateItem(li, it) {
  if (it.type === 'sys') { setText(li.firstElementChild, it.text); return; }
  if (it.type !== 'msg') return;
  li.className = 'msg' + (it.mine ? ' mine' : ' theirs') + (it.first ? ' first' : '') + (it.pending ? ' pending' : '');
  setAttr(li, 'data-seq', it.seq);
  setAttr(li, 'data-sender', it.sender);
  setAttr(li, 'data-client-msg-id', it.cmid || null);
  setAttr(li, 'data-status', it.status);
  const sender = li.querySelector('.msg-sender');
  const c = S.convs.get(S.openId);
  // in groups, others' messages have an avatar beside them: shown on the
  // first of a run (same sender, a few minutes apart), room kept on the rest
  const inGroup = !it.mine && isGroupLike(c);
  const showName = inGroup && it.first;
  li.classList.toggle('with-avatar', inGroup);
  sender.hidden = !showName;
  setText(sender, showName ? nameOf(it.sender) : '');
  setAttr(sender, 'aria-label', showName ? `${nameOf(it.sender)}: show profile` : null);
  const av = li.querySelector('.msg-avatar');
  av.hidden = !showName;
  if (showName) {
    paintUserAvatar(av, it.sender, nameOf(it.sender));
    setAttr(av, 'aria-label', `${nameOf(it.sender)}: show profile`);
    setAttr(av, 'title', nameOf(it.sender));
  }
  actions.updateParts(li, it, c);
  renderAttachments(li, it.atts, it.deleted);
  const t = li.querySelector('.msg-time');
  setText(t, fmtTime(it.ts || Date.now()));
  if (it.ts) { setAttr(t, 'datetime', new Date(it.ts).toISOString()); setAttr(t, 'title', fmtFull(it.ts)); }
  const mark = li.querySelector('.mark');
  const count = li.querySelector('.mark-count');
  if (it.mine) {
    if (MARKS[it.status]) setIcon(mark, MARKS[it.status], 16);
    else { mark.replaceChildren(); delete mark.dataset.icon; }
    setAttr(mark, 'data-status', it.status);
    setAttr(mark, 'aria-label', it.statusLabel);
    setAttr(mark, 'title', it.statusLabel);
    let ct = '';
    if (isGroupLike(c) && it.st && it.status !== 'read') {
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
        el('button', { type: 'button', class: 'linkbtn', text: 'Retry', 'data-testid': 'failed-retry', onclick: () => { it.pending.failed = null; hooks.sendOne(it.pending); hooks.render('msgs'); } }),
        it.pending.attachments && it.pending.attachments.length ? null
          : el('button', { type: 'button', class: 'linkbtn', text: 'Edit', 'data-testid': 'failed-edit',
            title: 'Put the text back in the composer to change it', onclick: () => editFailed(it.pending) }),
        el('button', { type: 'button', class: 'linkbtn', text: 'Discard', 'data-testid': 'failed-discard', onclick: () => {
          S.outbox.splice(S.outbox.indexOf(it.pending), 1); saveOutbox(); hooks.render('msgs'); hooks.render('list'); } }));
      li.querySelector('.bubble').append(retry);
    }
  } else if (retry) retry.remove();
}

/** A message the server refused (its content filter, say): its text goes
 *  back into the composer (before whatever is there), as a reply again when
 *  it was one, and the failed copy leaves the list. Attachments stay with
 *  the failed copy's retry only, so a message with them is not offered. */
function editFailed(o) {
  const c = S.convs.get(o.conv);
  if (!c || S.openId !== c.id) return;
  const mode = actions.composeMode();
  if (mode && mode.mode === 'edit') actions.cancelCompose(true);
  const i = S.outbox.indexOf(o);
  if (i >= 0) { S.outbox.splice(i, 1); saveOutbox(); }
  const input = $('composer-input');
  const rest = input.value.trim() ? '\n' + input.value : '';
  input.value = o.body + rest;
  const parent = o.replyTo ? actions.findMsg(c, o.replyTo) : null;
  if (parent && !parent.deleted) actions.startReply(c, parent);
  input.dispatchEvent(new Event('input', { bubbles: true }));   // size, draft
  input.focus();
  input.setSelectionRange(o.body.length, o.body.length);
  hooks.render('msgs');
  hooks.render('list');
}

export function renderMessages() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  const list = $('msg-list');
  if (!c) { list.replaceChildren(); return; }
  if (list.dataset.conv !== String(c.id)) { resetSeen(); list.replaceChildren(); list.dataset.conv = String(c.id); }
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
    if (li.dataset.seq) watch(li);
    prev = li;
  }
  for (const li of [...list.children]) if (!keep.has(li.dataset.key)) { unwatch(li); li.remove(); }
  // everything up to here is on the list (events after the last item, such
  // as reactions, have no line of their own)
  list.dataset.applied = String(c.applied);
  actions.ensureTabStop();
  // while the conversation is being placed at its first unread message, the
  // view does not follow the bottom
  if (!c.positioning && (atBottom || grewMine)) box.scrollTop = box.scrollHeight;
  renderHistoryState();
  renderPill();
}

/** The "new messages" pill: shown while the view is scrolled up, with the
 *  number of others' messages below what is on screen; a click jumps to the
 *  latest message. */
export function renderPill() {
  const c = S.openId != null ? S.convs.get(S.openId) : null;
  const pill = $('new-pill');
  if (!pill) return;
  const box = $('messages');
  const fromBottom = box.scrollHeight - box.scrollTop - box.clientHeight;
  let n = 0;
  if (c && !c.positioning && fromBottom > 80) {
    const below = Math.max(lastInView($('msg-list')), c.readSeq);
    for (let i = c.events.length - 1; i >= 0; i--) {
      const e = c.events[i];
      if (e.seq <= below) break;
      if (e.kind === 'message' && !e.deleted && S.me && e.sender !== S.me.id) n++;
    }
  }
  const show = !!c && !c.positioning && fromBottom > 80 && (n > 0 || fromBottom > box.clientHeight);
  pill.hidden = !show;
  if (!show) return;
  const text = n ? `${n > 999 ? '999+' : n} new message${n === 1 ? '' : 's'}` : 'Jump to latest';
  if (!pill.firstElementChild) pill.append(icon('arrow-down', 16), el('span', { class: 'pill-text' }));
  setText(pill.querySelector('.pill-text'), text);
  setAttr(pill, 'data-count', n);
  setAttr(pill, 'aria-label', n ? `${text}, jump to the latest` : 'Jump to the latest message');
  setAttr(pill, 'title', 'Jump to the latest message');
}

export function renderTyping() {
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
