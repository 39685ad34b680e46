// convlist.js — the conversation list (sidebar): order, names, previews,
// presence dots, unread and @ badges as the notification level says. Names
// and previews carry dir="auto" (right-to-left text shows as such). A
// channel shows as "#name", a private one with a lock mark.

import { el, $, setAttr, setText, paintAvatar, fmtShort } from './dom.js';
import { icon } from './icons.js';
import * as actions from './actions.js';
import { badgesOf } from './notify.js';
import { setBadge } from './alerts.js';
import { plainText } from './richtext.js';
import { attachmentsSummary } from './media.js';
import { draftOf } from './composer.js';
import { S, titleOf, nameOf, peerOf, unreadOf, mentionsOf, systemText, isGroupLike, avatarOf, channelWsName } from './state.js';

let openConv = () => {};

/** hooks: {openConv(id)} */
export function initConvList(hooks) { openConv = hooks.openConv; }

export function presenceOf(uid) {
  const p = S.presence.get(uid);
  return p ? p.status : 'unknown';
}

export function convPresence(c) {
  const p = peerOf(c);
  if (p != null) return presenceOf(p);
  return null;
}

/** An event the list can preview (a message or a system line; not an
 *  edit, delete, reaction or pin, nor one past the retention). */
export function previewable(x) {
  return !actions.isAction(x) && !x.expired && (x.kind === 'message' || !!systemText(x));
}

export function previewOf(c) {
  const pend = S.outbox.filter((o) => o.conv === c.id);
  const typers = [...c.typing.keys()];
  if (typers.length && c.id !== S.openId) return { text: typers.length === 1 && c.kind === 'direct' ? 'typing…' : `${nameOf(typers[0])} is typing…`, typing: true };
  // unsent text left in another conversation, as Slack and WhatsApp show it
  const draft = c.id !== S.openId && !c.left ? draftOf(c.id) : '';
  if (draft.trim()) return { who: 'Draft: ', text: plainText(draft), draft: true };
  if (pend.length && (!c.lastEvent || pend[pend.length - 1].ts >= (c.lastEvent.ts || 0))) {
    const o = pend[pend.length - 1];
    return { who: 'You: ', text: plainText(o.body) || attachmentsSummary(o.attachments) };
  }
  let e = c.lastEvent;
  if (e && (actions.isAction(e) || e.expired || (e.kind !== 'message' && !systemText(e)))) {
    // an edit, delete, reaction or pin: show the latest message (current
    // form) when we hold it, else say what happened; nothing past the
    // retention (retention.js) nor a kind this client does not know
    let found = null;
    for (let i = c.events.length - 1; i >= 0; i--) {
      if (previewable(c.events[i])) { found = c.events[i]; break; }
    }
    // none held (after a reload the list knows only the action): the latest
    // message as fetched for the list (app.js fillPreview), so the preview
    // reads as it did live ("lunch at 1?", not "dan edited a message")
    const held = c.previewMsg && c.previewMsg.event;
    if (!found && held && held.seq < e.seq && previewable(held)) found = held;
    if (found) e = found;
    if (e.expired) e = null;
  }
  if (!e) return { text: isGroupLike(c) ? 'No messages yet' : 'Say hello 👋' };
  // a deleted message reads the same whether we hold it (a tombstone) or
  // only know the delete (after a reload, before the history is loaded);
  // no name: the one who deleted is not always its sender (an admin)
  if ((e.kind === 'message' && e.deleted) || e.kind === 'delete') return { text: 'Message deleted' };
  if (e.kind === 'message') {
    const mine = S.me && e.sender === S.me.id;
    const who = mine ? 'You: ' : isGroupLike(c) ? nameOf(e.sender) + ': ' : '';
    return { who, text: plainText(e.body || '') || attachmentsSummary(e.data && e.data.attachments) };
  }
  return { text: systemText(e) };
}

export function renderList() {
  const list = $('conv-list');
  let total = 0;
  for (const c of S.convs.values()) total += badgesOf(c.notify, unreadOf(c), mentionsOf(c)).attention;
  const open = S.openId != null && S.convs.get(S.openId);
  document.title = (total ? `(${total}) ` : '') + (open ? `${titleOf(open)} · Parley` : 'Parley');
  setBadge(total);
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

export function createConvItem(c, key) {
  const btn = el('button', { type: 'button', class: 'conv-item', 'data-testid': 'conv-item', onclick: () => openConv(c.id) },
    el('span', { class: 'avatar', 'aria-hidden': 'true' }),
    el('span', { class: 'pdot', 'aria-hidden': 'true' }),
    el('span', { class: 'conv-main' },
      el('span', { class: 'conv-top' },
        el('span', { class: 'conv-name', 'data-testid': 'conv-name', dir: 'auto' }),
        el('span', { class: 'lock-mark', 'data-testid': 'private-mark', title: 'Private channel', 'aria-hidden': 'true', hidden: true }, icon('lock', 13)),
        // a channel's workspace ("#general · Acme"): two channels of one name tell apart
        el('span', { class: 'conv-ws', 'data-testid': 'conv-workspace', dir: 'auto', 'aria-hidden': 'true', hidden: true }),
        el('span', { class: 'muted-icon', 'data-testid': 'muted-icon', 'aria-hidden': 'true', hidden: true }, icon('bell-off', 14)),
        el('time', { class: 'conv-time', 'data-testid': 'conv-time' })),
      el('span', { class: 'conv-bottom' },
        el('span', { class: 'conv-preview', 'data-testid': 'conv-preview', dir: 'auto' }),
        el('span', { class: 'badge badge-at', 'data-testid': 'mention-badge', 'aria-hidden': 'true', hidden: true }),
        el('span', { class: 'badge', 'data-testid': 'unread' }))));
  return el('li', { 'data-key': key, 'data-conv-id': c.id }, btn);
}

export function updateConvItem(li, c) {
  const btn = li.firstElementChild;
  const title = titleOf(c);
  const unread = unreadOf(c);
  const mentions = mentionsOf(c);
  const level = c.notify || 'all';
  const badges = badgesOf(level, unread, mentions);
  const pres = convPresence(c);
  const pv = previewOf(c);
  setAttr(btn, 'data-conv-id', c.id);
  setAttr(btn, 'data-title', title);
  setAttr(btn, 'data-kind', c.kind || '');
  setAttr(btn, 'data-unread', unread);
  setAttr(btn, 'data-mentions', mentions);
  setAttr(btn, 'data-notify', level);
  setAttr(btn, 'data-badge', badges.count);
  setAttr(btn, 'aria-current', c.id === S.openId ? 'true' : null);
  const presLabel = pres && pres !== 'unknown' ? `, ${pres}` : '';
  const ws = c.kind === 'channel' ? S.workspaces.get(c.workspace) : null;
  const wsName = ws ? ws.name : '';
  const countLabel = level === 'none' ? ', muted' : level === 'mentions'
    ? `${mentions ? `, ${mentions} unread ${mentions === 1 ? 'mention' : 'mentions'}` : ''}, mentions only`
    : `${unread ? `, ${unread} unread` : ''}${mentions ? `, ${mentions} ${mentions === 1 ? 'mention' : 'mentions'}` : ''}`;
  const kindLabel = c.kind === 'group' ? ' (group)' : c.kind === 'channel' ? ` (${c.private ? 'private ' : ''}channel${wsName ? ` in ${wsName}` : ''})` : '';
  setAttr(btn, 'aria-label', `${title}${kindLabel}${presLabel}${countLabel}${c.left ? ', left' : ''}`);
  btn.classList.toggle('is-unread', badges.count > 0);
  btn.classList.toggle('is-muted', level === 'none');
  btn.classList.toggle('is-left', c.left);
  setAttr(btn, 'data-private', c.kind === 'channel' ? String(c.private) : null);
  setAttr(btn, 'title', wsName ? `${title} · ${wsName}` : null);
  const av = btn.querySelector('.avatar');
  const a = avatarOf(c);
  paintAvatar(av, a.key, a.label);
  av.classList.toggle('avatar-group', a.square);
  btn.querySelector('.lock-mark').hidden = !(c.kind === 'channel' && c.private);
  const dot = btn.querySelector('.pdot');
  dot.hidden = pres == null || pres === 'unknown';
  setAttr(dot, 'data-status', pres || '');
  setAttr(dot, 'data-testid', 'presence-dot');
  setText(btn.querySelector('.conv-name'), title);
  const wsShown = channelWsName(c);
  const wsEl = btn.querySelector('.conv-ws');
  setText(wsEl, wsShown ? `· ${wsShown}` : '');
  wsEl.hidden = !wsShown;
  setAttr(btn, 'data-workspace', wsShown || null);
  const time = btn.querySelector('.conv-time');
  setText(time, fmtShort(c.lastTs));
  if (c.lastTs) setAttr(time, 'datetime', new Date(c.lastTs).toISOString());
  const pre = btn.querySelector('.conv-preview');
  // the sender's name, then the message in its own direction (isolated:
  // an Arabic or Hebrew message reads right to left after "You: ")
  const key = (pv.draft ? 'd' : '') + (pv.who || '') + '\u0000' + pv.text;
  if (pre._key !== key) {
    pre._key = key;
    if (pv.who) {
      pre.replaceChildren(el('span', { class: pv.draft ? 'preview-who preview-draft' : 'preview-who', 'data-testid': pv.draft ? 'conv-draft' : null, text: pv.who }),
        el('bdi', { text: pv.text }));
    }
    else pre.textContent = pv.text;
  }
  pre.classList.toggle('is-typing', !!pv.typing);
  const badge = btn.querySelector('.badge:not(.badge-at)');
  setText(badge, badges.count > 99 ? '99+' : String(badges.count));
  badge.hidden = badges.count === 0 || (level === 'mentions' && badges.at);
  const at = btn.querySelector('.badge-at');
  at.hidden = !badges.at;
  setText(at, level === 'mentions' && mentions > 1 ? `@${mentions > 99 ? '99+' : mentions}` : '@');
  setAttr(at, 'data-count', mentions);
  btn.querySelector('.muted-icon').hidden = level !== 'none';
}
