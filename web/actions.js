// actions.js — message actions: replies, edits, deletes, reactions, pins,
// copy, report (its dialog is reports.js's); the hover toolbar and the
// context menu of each message; the reply / edit bar above the composer;
// the delete confirmation; the pins dialog.
//
// Actions are events in the conversation's log (docs/protocol.md, "Message
// actions"): `edit`, `delete`, `reaction` and `pin` name their target by
// seq (data.target). applyAction() changes the target message in memory to
// its current form — the form history returns (body, edited_ts, deleted,
// pinned, reactions, reply_preview) — so a re-render shows it. Events for
// messages not loaded change nothing: history returns them current.
//
// Requests go over the WebSocket when it is up (answered by `ok` or `error`
// with our req), else over REST; the change itself shows when its event
// arrives, like everyone else's. Failures are shown as a toast.
//
// Everything is rendered with textContent and DOM calls.

import { el, $, setAttr, setText, snippet, fmtFull, toast, copyText } from './dom.js';
import { openMenu, closeMenu } from './menu.js';
import { applyReaction, renderReactions, openPicker, hasMine } from './reactions.js';
import { renderBody, mentionsMe } from './mentions.js';
import { icon, setIcon } from './icons.js';
import { isGroupLike } from './state.js';

export const ACTION_KINDS = new Set(['edit', 'delete', 'reaction', 'pin']);
export const isAction = (e) => !!e && ACTION_KINDS.has(e.kind);

let ctx = null;
let compose = null;      // {mode: 'reply' | 'edit', conv, seq, draft?}
let confirmResolve = null;

/**
 * ctx: {S, api, conn(), render(what), nameOf(uid), loadOlder(c) -> Promise,
 *       autosize(), openConv() -> c | null, openProfile(uid)?,
 *       canReport(c, m)?, openReport(c, m, opener)? (reports.js),
 *       onBlocked(c)? (a write refused as "blocked": blocks.js)}
 */
export function initActions(context) {
  ctx = context;
  $('compose-cancel').replaceChildren(icon('close', 16));
  $('compose-cancel').addEventListener('click', () => { cancelCompose(true); $('composer-input').focus(); });
  const dlg = $('confirm-dialog');
  dlg.addEventListener('close', () => {
    const r = confirmResolve;
    confirmResolve = null;
    if (r) r(dlg.returnValue === 'ok');
  });
  $('confirm-cancel').addEventListener('click', () => dlg.close('cancel'));
  $('confirm-ok').addEventListener('click', () => dlg.close('ok'));
  $('pins-close').addEventListener('click', () => $('pins-dialog').close());

  const list = $('msg-list');
  list.addEventListener('contextmenu', (ev) => {
    const li = ev.target.closest('li.msg');
    if (!li || !actionable(li)) return;
    ev.preventDefault();
    openActionsMenu(li, null, { x: ev.clientX, y: ev.clientY });
  });
  list.addEventListener('keydown', onListKey);
  list.addEventListener('focusin', (ev) => {
    const li = ev.target.closest('li.msg');
    if (li) rove(li);
  });
}

// ------------------------------------------------------------ the model ---

/** The loaded message event with that seq, or null. Loaded events are
 *  contiguous, so the index is the seq's distance from the first. */
export function findMsg(c, seq) {
  if (!c || !c.events.length || typeof seq !== 'number') return null;
  const first = c.events[0].seq;
  let e = c.events[seq - first];
  if (!e || e.seq !== seq) e = c.events.find((x) => x.seq === seq);
  return e && e.kind === 'message' ? e : null;
}

function previewOfMsg(m) {
  if (m.deleted) return { seq: m.seq, deleted: true };
  return { seq: m.seq, sender: m.sender, body: [...(m.body || '')].slice(0, 100).join('') };
}

/** Replies to m that are loaded show its current form. */
function refreshReplyPreviews(c, m) {
  for (const e of c.events) {
    if (e.kind === 'message' && e.reply_preview && e.reply_preview.seq === m.seq) e.reply_preview = previewOfMsg(m);
  }
  for (const o of ctx.S.outbox) if (o.conv === c.id && o.replyTo === m.seq) o.replyPreview = previewOfMsg(m);
}

/** Applies an action event (already appended to c.events) to its target. */
export function applyAction(c, e) {
  const d = e.data || {};
  // the message the list previews when no history is held (app.js
  // fillPreview) follows its edits and deletes too
  const pm = c.previewMsg && c.previewMsg.event;
  const t = findMsg(c, d.target) || (pm && pm.kind === 'message' && pm.seq === d.target ? pm : null);
  const me = ctx.S.me && ctx.S.me.id;
  switch (e.kind) {
    case 'edit': {
      if (!t || t.deleted || e.deleted || typeof e.body !== 'string') return;
      t.body = e.body;
      t.edited_ts = e.ts || Date.now();
      const data = { ...(t.data || {}) };
      delete data.mentions;
      delete data.mention_all;
      if (Array.isArray(d.mentions) && d.mentions.length) data.mentions = d.mentions;
      if (d.mention_all) data.mention_all = d.mention_all;
      t.data = Object.keys(data).length ? data : undefined;
      refreshReplyPreviews(c, t);
      return;
    }
    case 'delete': {
      if (!t) return;
      t.deleted = true;
      for (const k of ['body', 'data', 'reactions', 'pinned', 'edited_ts', 'reply_preview']) delete t[k];
      for (const x of c.events) {
        if (x.kind === 'edit' && x.data && x.data.target === t.seq) { delete x.body; x.deleted = true; }
      }
      refreshReplyPreviews(c, t);
      if (compose && compose.conv === c.id && compose.seq === t.seq) {
        const was = compose.mode;
        cancelCompose(was === 'edit');
        toast(was === 'edit' ? 'The message you were editing was deleted.' : 'The message you were replying to was deleted.');
      }
      return;
    }
    case 'reaction':
      if (t) applyReaction(t, e, me);
      return;
    case 'pin':
      if (t && !t.deleted) t.pinned = d.op !== 'unpin';
      return;
    default:
  }
}

/** After a history page was prepended: action events that arrived while it
 *  was in flight (seq > sinceSeq) may be missing from its current form;
 *  re-applying them in order is idempotent (reactions carry counts). */
export function reapplyAfterPage(c, pageFirst, pageLast, sinceSeq) {
  for (const e of c.events) {
    if (e.seq <= sinceSeq || !isAction(e)) continue;
    const t = e.data && e.data.target;
    if (typeof t === 'number' && t >= pageFirst && t <= pageLast) applyAction(c, e);
  }
}

/** The system line shown for an action event, or null (most are silent:
 *  they change their target). */
export function actionLine(c, e) {
  if (e.kind !== 'pin' || !e.data || e.data.op === 'unpin') return null;
  const t = findMsg(c, e.data.target);
  const who = ctx.nameOf(e.sender);
  if (!t) return `${who} pinned a message`;
  if (t.deleted) return `${who} pinned a message (deleted)`;
  return `${who} pinned “${snippet(t.body, 60)}”`;
}

/** The conversation list's preview of an action event (when it is the
 *  latest thing we know of). */
export function actionPreview(c, e) {
  const mine = ctx.S.me && e.sender === ctx.S.me.id;
  const who = mine ? 'You' : ctx.nameOf(e.sender);
  const d = e.data || {};
  switch (e.kind) {
    case 'edit': return `${who} edited a message`;
    case 'delete': return `${who} deleted a message`;
    case 'reaction': return d.op === 'remove' ? `${who} removed a reaction` : `${who} reacted ${d.emoji || ''}`.trim();
    case 'pin': return d.op === 'unpin' ? `${who} unpinned a message` : `${who} pinned a message`;
    default: return '';
  }
}

// ------------------------------------------------------------- requests ---

const ACTION_VERB = { edit: 'edit the message', delete: 'delete the message', react: 'react', pin: 'pin the message', unpin: 'unpin the message' };

function explain(err, what) {
  const code = err && (err.code || (err.message && /^(offline|timeout|disconnected)$/.test(err.message) ? err.message : null));
  switch (code) {
    case 'offline': case 'disconnected': case 'network': return `You are offline — could not ${what}.`;
    case 'timeout': return `No answer from the server — could not ${what}.`;
    case 'not_found': return `Could not ${what}: it is no longer available.`;
    case 'gone': return `Could not ${what}: it was deleted.`;
    case 'forbidden':
      if (err.message === 'blocked') return `Could not ${what}: you can’t send messages, edits or reactions in this conversation.`;
      if (what.startsWith('edit')) return 'You can only edit your own messages.';
      if (what.startsWith('delete')) return 'Only its author or an admin of the group or channel can delete a message.';
      return `You are not allowed to ${what}.`;
    case 'rate_limited': return 'Slow down a little — try again in a moment.';
    case 'filtered': return `Could not ${what}: the server’s content filter refused the text.`;
    case 'bad_request': return `Could not ${what}${err.message && err.message !== code ? `: ${err.message}` : '.'}`;
    default: return `Could not ${what}${err && err.message ? ` (${err.message})` : ''}.`;
  }
}

/** Sends an action: WebSocket when online, else REST. Resolves with the
 *  `ok` reply; rejects with an Error whose .code is the protocol's code. */
async function request(c, msg) {
  const conn = ctx.conn();
  if (conn && conn.online) return conn.request({ ...msg, conversation: c.id });
  const base = `/api/v1/conversations/${c.id}`;
  const api = ctx.api;
  try {
    switch (msg.type) {
      case 'edit': return await api.call('PATCH', `${base}/messages/${msg.seq}`, { body: msg.body });
      case 'delete': return await api.call('DELETE', `${base}/messages/${msg.seq}`);
      case 'react': return await api.call('POST', `${base}/messages/${msg.seq}/reactions`,
        msg.op ? { emoji: msg.emoji, op: msg.op } : { emoji: msg.emoji });
      case 'pin': return await api.call(msg.op === 'unpin' ? 'DELETE' : 'PUT', `${base}/pins/${msg.seq}`);
      case 'pins': return await api.call('GET', `${base}/pins?offset=${msg.offset || 0}`);
      default: throw new Error('unknown action');
    }
  } catch (e) {
    if (e.status === 0) e.code = 'offline';
    throw e;
  }
}

async function act(c, msg, verb) {
  try {
    return await request(c, msg);
  } catch (e) {
    toast(explain(e, verb), 'error');
    if (e && e.message === 'blocked' && ctx.onBlocked) ctx.onBlocked(c);
    return null;
  }
}

export function react(c, m, emoji) {
  const op = hasMine(m, emoji) ? 'remove' : undefined;
  const msg = { type: 'react', seq: m.seq, emoji };
  if (op) msg.op = op;
  return act(c, msg, op ? 'remove the reaction' : ACTION_VERB.react);
}

export function togglePin(c, m) {
  const unpin = !!m.pinned;
  const msg = { type: 'pin', seq: m.seq };
  if (unpin) msg.op = 'unpin';
  return act(c, msg, unpin ? ACTION_VERB.unpin : ACTION_VERB.pin).then((r) => {
    if (r) toast(unpin ? 'Message unpinned.' : 'Message pinned.');
    return r;
  });
}

export async function deleteMessage(c, m, opener) {
  const ok = await confirmDelete(m, opener);
  if (!ok) return null;
  return act(c, { type: 'delete', seq: m.seq }, ACTION_VERB.delete);
}

/** Sends an edit; on failure the text goes back into the composer. */
export async function submitEdit(c, seq, body) {
  const m = findMsg(c, seq);
  cancelCompose(true);
  if (!m || m.deleted) { toast('That message was deleted.', 'error'); return; }
  if (body === m.body) return;
  const r = await act(c, { type: 'edit', seq, body }, ACTION_VERB.edit);
  if (!r) {
    const input = $('composer-input');
    if (!compose && !input.value && c.id === ctx.S.openId) { startEdit(c, m); input.value = body; ctx.autosize(); }
  }
}

/** Saving an edit with no text: a message can't be empty, so (as Slack
 *  does) the user is asked whether to delete it instead; Cancel goes back
 *  to the edit. */
export async function emptyEdit(c, seq) {
  const m = findMsg(c, seq);
  if (!m || m.deleted) { cancelCompose(true); toast('That message was deleted.', 'error'); return; }
  const input = $('composer-input');
  const ok = await confirmDialog({
    title: 'Delete this message?',
    text: 'A message can’t be empty. Delete it instead? It will be deleted for everyone in this conversation.',
    quote: snippet(m.body || '', 140), ok: 'Delete', opener: input,
  });
  if (!ok || !compose || compose.mode !== 'edit' || compose.seq !== seq || ctx.S.openId !== c.id) return;
  cancelCompose(true);
  await act(c, { type: 'delete', seq }, ACTION_VERB.delete);
}

// --------------------------------------------------------- permissions ---

export function canEdit(c, m) {
  return !!(m && !m.deleted && m.seq && ctx.S.me && m.sender === ctx.S.me.id && !c.left);
}

export function canDelete(c, m) {
  if (!m || m.deleted || !m.seq || c.left) return false;
  if (ctx.S.me && m.sender === ctx.S.me.id) return true;
  return isGroupLike(c) && c.role === 'admin';
}

const canAct = (c, m) => !!(c && m && m.seq && !m.deleted && !c.left);

function actionable(li) {
  const c = ctx.openConv();
  const m = c && findMsg(c, Number(li.dataset.seq));
  return canAct(c, m);
}

// ----------------------------------------------------------- composer ---

export function composeMode() { return compose; }

function paintCompose() {
  const bar = $('compose-context');
  const input = $('composer-input');
  const c = ctx.openConv();
  if (!compose || !c || compose.conv !== c.id) {
    bar.hidden = true;
    setAttr(bar, 'data-mode', null);
    setAttr(input, 'aria-describedby', 'composer-hint');
    setText($('composer-send'), 'Send');
    return;
  }
  const m = findMsg(c, compose.seq);
  const title = compose.mode === 'edit' ? 'Editing your message'
    : `Replying to ${m ? (ctx.S.me && m.sender === ctx.S.me.id ? 'yourself' : ctx.nameOf(m.sender)) : 'a message'}`;
  bar.hidden = false;
  setAttr(bar, 'data-mode', compose.mode);
  setAttr(bar, 'data-seq', compose.seq);
  setIcon($('compose-context-icon'), compose.mode === 'edit' ? 'edit' : 'reply', 18);
  setText($('compose-context-title'), title);
  setText($('compose-context-snippet'), m ? (m.deleted ? 'Deleted message' : snippet(m.body, 120)) : '');
  setAttr($('compose-cancel'), 'aria-label', compose.mode === 'edit' ? 'Cancel editing' : 'Cancel reply');
  setAttr(input, 'aria-describedby', 'compose-context-title composer-hint');
  setText($('composer-send'), compose.mode === 'edit' ? 'Save' : 'Send');
}

export function startReply(c, m) {
  if (compose && compose.mode === 'edit') cancelCompose(true);
  compose = { mode: 'reply', conv: c.id, seq: m.seq };
  paintCompose();
  const input = $('composer-input');
  input.focus();
}

export function startEdit(c, m) {
  if (!canEdit(c, m)) return;
  const input = $('composer-input');
  const draft = compose && compose.mode === 'edit' ? compose.draft : input.value;
  compose = { mode: 'edit', conv: c.id, seq: m.seq, draft };
  input.value = m.body;
  ctx.autosize();
  paintCompose();
  input.focus();
  input.setSelectionRange(input.value.length, input.value.length);
}

/** Leaves reply or edit mode; leaving edit mode puts the draft back when
 *  restoreDraft. */
export function cancelCompose(restoreDraft = true) {
  if (!compose) return;
  const was = compose;
  compose = null;
  if (was.mode === 'edit' && restoreDraft) {
    const input = $('composer-input');
    input.value = was.draft || '';
    ctx.autosize();
  }
  paintCompose();
}

/** The reply to attach to a send from conversation c (and the preview the
 *  pending bubble shows), or null. */
export function replyFor(c) {
  if (!compose || compose.mode !== 'reply' || compose.conv !== c.id) return null;
  const m = findMsg(c, compose.seq);
  return { seq: compose.seq, preview: m ? previewOfMsg(m) : { seq: compose.seq } };
}

/** Keys in the composer that belong to actions: Escape leaves reply / edit
 *  mode; ArrowUp in an empty composer edits my last message. */
export function handleComposerKey(ev) {
  const input = $('composer-input');
  if (ev.key === 'Escape' && compose) {
    ev.preventDefault();
    cancelCompose(true);
    return true;
  }
  if (ev.key === 'ArrowUp' && !input.value && !compose && !ev.shiftKey && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
    const c = ctx.openConv();
    if (!c) return false;
    for (let i = c.events.length - 1; i >= 0; i--) {
      const e = c.events[i];
      if (e.kind === 'message' && canEdit(c, e)) { ev.preventDefault(); startEdit(c, e); return true; }
    }
  }
  return false;
}

/** Called when the open conversation changes. */
export function onConvSwitch() {
  closeMenu(false);
  if (compose) cancelCompose(false);
  paintCompose();
}

// ------------------------------------------------------- message nodes ---

/** The parts of a message item this module owns, created once per item. */
export function createParts(li) {
  const bubble = li.querySelector('.bubble');
  const quote = el('button', { type: 'button', class: 'quote', 'data-testid': 'reply-quote', hidden: true },
    el('span', { class: 'quote-name', dir: 'auto' }), el('span', { class: 'quote-text', dir: 'auto' }));
  quote.addEventListener('click', (ev) => {
    ev.stopPropagation();
    const c = ctx.openConv();
    const seq = Number(quote.dataset.seq);
    if (c && seq) jumpTo(c, seq);
  });
  bubble.prepend(quote);
  const info = bubble.querySelector('.msg-info');
  info.prepend(
    el('span', { class: 'pin-mark', 'data-testid': 'pinned-mark', role: 'img', 'aria-label': 'Pinned', title: 'Pinned', hidden: true },
      icon('pin', 13)),
    el('span', { class: 'edited', 'data-testid': 'edited', hidden: true, text: 'edited' }));
  const reactions = el('div', { class: 'reactions', 'data-testid': 'reactions', role: 'group', hidden: true });
  const tools = el('div', { class: 'msg-tools', role: 'toolbar', 'aria-label': 'Message actions', 'data-testid': 'message-tools' },
    el('button', { type: 'button', class: 'tool', 'data-testid': 'action-react', 'aria-label': 'Add a reaction', title: 'React',
      onclick: (ev) => withMsg(li, (c, m) => openPicker(ev.currentTarget, m, (emoji) => react(c, m, emoji))) },
    icon('smile')),
    el('button', { type: 'button', class: 'tool', 'data-testid': 'action-reply', 'aria-label': 'Reply', title: 'Reply',
      onclick: () => withMsg(li, (c, m) => startReply(c, m)) },
    icon('reply')),
    el('button', { type: 'button', class: 'tool', 'data-testid': 'action-more', 'aria-label': 'More actions', title: 'More',
      'aria-haspopup': 'menu', onclick: (ev) => openActionsMenu(li, ev.currentTarget) },
    icon('more')));
  li.append(reactions, tools);
}

function withMsg(li, fn) {
  const c = ctx.openConv();
  const m = c && findMsg(c, Number(li.dataset.seq));
  if (canAct(c, m)) fn(c, m);
}

/** Updates this module's parts of a message item from `it` (see app.js
 *  buildItems: it.ev is the message event, it.pending an outbox entry). */
export function updateParts(li, it, c) {
  const S = ctx.S;
  const e = it.ev || null;
  const deleted = !!(e && e.deleted);
  const me = S.me ? S.me.id : null;

  // quoted parent
  const rp = e ? (e.reply_preview || (e.data && e.data.reply_to ? { seq: e.data.reply_to } : null))
    : (it.pending && it.pending.replyTo ? (it.pending.replyPreview || { seq: it.pending.replyTo }) : null);
  const quote = li.querySelector('.quote');
  if (rp && !deleted) {
    const parent = findMsg(c, rp.seq);
    const pv = parent ? previewOfMsg(parent) : rp;
    quote.hidden = false;
    setAttr(quote, 'data-seq', rp.seq);
    const who = pv.deleted ? '' : pv.sender != null ? (pv.sender === me ? 'You' : ctx.nameOf(pv.sender)) : '';
    setText(quote.querySelector('.quote-name'), who);
    setText(quote.querySelector('.quote-text'), pv.deleted ? 'Original message was deleted' : snippet(pv.body || '…', 100));
    quote.classList.toggle('quote-deleted', !!pv.deleted);
    setAttr(quote, 'aria-label', pv.deleted ? 'Reply to a deleted message'
      : `Reply to ${who || 'a message'}: ${snippet(pv.body || '', 100)}. Show the original`);
  } else if (!quote.hidden) {
    quote.hidden = true;
    setAttr(quote, 'data-seq', null);
  }

  // body: tombstone, or text with mentions highlighted
  const body = li.querySelector('.msg-body');
  body.classList.toggle('tombstone', deleted);
  setAttr(li, 'data-deleted', deleted ? 'true' : null);
  let mine = false;
  if (deleted) {
    body._bodyKey = null;
    setText(body, 'This message was deleted');
  } else {
    const names = new Set();
    let all = false;
    if (e) {
      const d = e.data || {};
      for (const u of d.mentions || []) names.add(ctx.nameOf(u).toLowerCase());
      all = !!d.mention_all;
    } else if (c && c.members) {
      for (const m of c.members) names.add(ctx.nameOf(m.id).toLowerCase());
      all = isGroupLike(c);
    }
    renderBody(body, it.body || '', { names, all, meName: S.me ? S.me.username.toLowerCase() : '', mine: it.mine });
    mine = mentionsMe(e, me);
  }
  li.classList.toggle('mentions-me', mine);
  setAttr(li, 'data-mentions-me', mine ? 'true' : null);

  // edited / pinned marks
  const ed = li.querySelector('.edited');
  ed.hidden = !(e && e.edited_ts && !deleted);
  if (!ed.hidden) setAttr(ed, 'title', 'Edited ' + fmtFull(e.edited_ts));
  const pin = li.querySelector('.pin-mark');
  pin.hidden = !(e && e.pinned && !deleted);
  li.classList.toggle('pinned', !pin.hidden);

  // reactions and tools
  const actable = canAct(c, e);
  renderReactions(li.querySelector('.reactions'), e || { reactions: [] }, {
    canReact: actable,
    onToggle: (emoji) => { if (canAct(c, e)) react(c, e, emoji); },
    onAdd: (opener) => { if (canAct(c, e)) openPicker(opener, e, (emoji) => react(c, e, emoji)); },
  });
  li.querySelector('.msg-tools').hidden = !actable;
  if (!li.hasAttribute('tabindex')) {
    li.tabIndex = -1;
    setAttr(li, 'aria-describedby', 'msg-keys-hint');
  }
  innerTabStops(li);
}

/** A message's quote and reaction chips are tab stops only while the
 *  message is the list's tab stop (else every chip would be one). */
function innerTabStops(li) {
  const t = li.tabIndex === 0 ? 0 : -1;
  for (const b of li.querySelectorAll('.quote, .chip')) if (b.tabIndex !== t) b.tabIndex = t;
}

/** One message in the list is the tab stop (roving tabindex). */
function rove(li) {
  const list = $('msg-list');
  const cur = list.querySelector(':scope > li.msg[tabindex="0"]');
  if (cur && cur !== li) { cur.tabIndex = -1; innerTabStops(cur); }
  li.tabIndex = 0;
  innerTabStops(li);
}

/** After a render: make sure one message is the list's tab stop. */
export function ensureTabStop() {
  const list = $('msg-list');
  if (list.querySelector(':scope > li.msg[tabindex="0"]')) return;
  const msgs = list.querySelectorAll(':scope > li.msg');
  if (msgs.length) rove(msgs[msgs.length - 1]);
}

function onListKey(ev) {
  const li = ev.target;
  if (!(li instanceof HTMLElement) || !li.matches('li.msg')) return;
  const msgs = [...$('msg-list').querySelectorAll(':scope > li.msg')];
  const i = msgs.indexOf(li);
  let to = null;
  if (ev.key === 'ArrowUp') to = msgs[i - 1];
  else if (ev.key === 'ArrowDown') to = msgs[i + 1];
  else if (ev.key === 'Home') to = msgs[0];
  else if (ev.key === 'End') to = msgs[msgs.length - 1];
  else if (ev.key === 'Enter' || ev.key === 'ContextMenu' || (ev.key === 'F10' && ev.shiftKey)) {
    if (actionable(li)) { ev.preventDefault(); openActionsMenu(li, null); }
    return;
  } else if (ev.key === 'Escape') {
    ev.preventDefault();
    $('composer-input').focus();
    return;
  } else return;
  ev.preventDefault();
  if (to) { rove(to); to.focus(); to.scrollIntoView({ block: 'nearest' }); }
}

/** The context menu of message li (opened by the ⋯ button, a right click,
 *  or the keyboard). */
export function openActionsMenu(li, opener, at) {
  const c = ctx.openConv();
  const m = c && findMsg(c, Number(li.dataset.seq));
  if (!canAct(c, m)) return;
  const back = opener || li;
  openMenu({
    opener: back, at, label: 'Message actions', testid: 'message-menu', align: 'end',
    items: [
      { label: 'Reply', icon: 'reply', testid: 'menu-reply', onSelect: () => startReply(c, m) },
      ctx.openProfile && !(ctx.S.me && m.sender === ctx.S.me.id)
        ? { label: `Profile of ${ctx.nameOf(m.sender)}`, icon: 'message', testid: 'menu-profile', onSelect: () => ctx.openProfile(m.sender) } : null,
      { label: 'React…', icon: 'smile', testid: 'menu-react',
        onSelect: () => openPicker(back, m, (emoji) => react(c, m, emoji), at) },
      canEdit(c, m) ? { label: 'Edit', icon: 'edit', testid: 'menu-edit', onSelect: () => startEdit(c, m) } : null,
      { label: m.pinned ? 'Unpin' : 'Pin', icon: 'pin', testid: 'menu-pin', onSelect: () => togglePin(c, m) },
      { label: 'Copy text', icon: 'copy', testid: 'menu-copy',
        onSelect: async () => toast((await copyText(m.body || '')) ? 'Copied to the clipboard.' : 'Could not copy the text.') },
      ctx.canReport && ctx.canReport(c, m) ? { label: 'Report…', icon: 'flag', testid: 'menu-report',
        onSelect: () => ctx.openReport(c, m, back) } : null,
      canDelete(c, m) ? { label: 'Delete', icon: 'trash', testid: 'menu-delete', danger: true,
        onSelect: () => deleteMessage(c, m, back) } : null,
    ],
  });
}

// ------------------------------------------------------------- jumping ---

/** Scrolls to message seq (loading older pages when needed) and flashes it. */
export async function jumpTo(c, seq) {
  for (let n = 0; n < 40 && c.minLoaded > seq && !c.noOlder && c.id === ctx.S.openId; n++) {
    const before = c.minLoaded;
    await ctx.loadOlder(c);
    if (c.minLoaded === before && !c.loadingOlder) break;
    if (c.loadingOlder) await new Promise((r) => setTimeout(r, 100));
  }
  const li = $('msg-list').querySelector(`:scope > li.msg[data-seq="${seq}"]`);
  if (!li) { toast('That message is not available any more.'); return; }
  // at once, not smooth: a render right after (openConv's own, receipts,
  // a read) found the view still at the bottom and stuck it there again,
  // so a result in the open conversation, or one with unread messages,
  // stayed off screen (audit M5); the flash shows where it landed
  li.scrollIntoView({ block: 'center', behavior: 'auto' });
  li.classList.remove('flash');
  void li.offsetWidth;       // restart the animation
  li.classList.add('flash');
  setTimeout(() => li.classList.remove('flash'), 1600);
  rove(li);
  li.focus({ preventScroll: true });
}

// --------------------------------------------------------------- dialogs ---

function confirmDelete(m, opener) {
  return confirmDialog({
    title: 'Delete this message?',
    text: 'It will be deleted for everyone in this conversation. This cannot be undone.',
    quote: snippet(m.body || '', 140), ok: 'Delete', opener,
  });
}

/** The confirmation dialog: resolves true when its OK button (labelled
 *  `ok`) closes it; focus goes back to opener. `quote`: a text shown as a
 *  quotation, or none. */
export function confirmDialog({ title, text, quote = '', ok, opener }) {
  const dlg = $('confirm-dialog');
  setText($('confirm-title'), title);
  setText($('confirm-text'), text);
  setText($('confirm-quote'), quote);
  $('confirm-quote').hidden = !quote;
  setText($('confirm-ok'), ok);
  if (confirmResolve) confirmResolve(false);
  return new Promise((resolve) => {
    confirmResolve = (yes) => {
      if (opener && opener.isConnected) opener.focus({ preventScroll: true });
      resolve(yes);
    };
    dlg.returnValue = '';
    dlg.showModal();
    $('confirm-cancel').focus();
  });
}

/** The pinned messages of c, in a dialog (fetched: pins may be older than
 *  what is loaded). */
export async function showPins(c) {
  const dlg = $('pins-dialog');
  const ul = $('pins-list');
  const state = $('pins-state');
  ul.replaceChildren();
  setText(state, 'Loading…');
  dlg.showModal();
  const evs = [];
  try {                        // a reply is bounded in bytes: page until has_more is false
    for (let more = true; more && evs.length < 1000;) {
      const res = await request(c, { type: 'pins', offset: evs.length });
      const page = (res && res.events) || [];
      evs.push(...page);
      more = !!(res && res.has_more) && page.length > 0;
    }
  } catch (e) {
    setText(state, explain(e, 'load the pinned messages'));
    return;
  }
  if (!dlg.open) return;
  setText(state, evs.length ? '' : 'No pinned messages yet. Pin one from its menu.');
  ul.replaceChildren(...evs.map((p) => {
    const loaded = findMsg(c, p.seq);
    const m = loaded || p;
    const who = ctx.S.me && m.sender === ctx.S.me.id ? 'You' : ctx.nameOf(m.sender);
    return el('li', { class: 'pin-item', 'data-testid': 'pin-item', 'data-seq': p.seq },
      el('div', { class: 'pin-item-text' },
        el('span', { class: 'pin-item-name', dir: 'auto', text: who }),
        el('span', { class: 'pin-item-body', dir: 'auto', text: m.deleted ? 'Deleted message' : snippet(m.body, 140) })),
      el('button', { type: 'button', class: 'btn btn-ghost btn-sm', text: 'Show', 'aria-label': `Show the message from ${who}`,
        onclick: () => { dlg.close(); jumpTo(c, p.seq); } }),
      el('button', { type: 'button', class: 'btn btn-ghost btn-sm', text: 'Unpin', 'data-testid': 'pin-item-unpin',
        'aria-label': `Unpin the message from ${who}`,
        onclick: async (ev) => {
          const r = await act(c, { type: 'pin', seq: p.seq, op: 'unpin' }, ACTION_VERB.unpin);
          if (r) { ev.target.closest('li').remove(); if (!ul.children.length) setText(state, 'No pinned messages.'); }
        } }));
  }));
}
