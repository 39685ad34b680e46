// composer.js — the message composer: the textarea (Enter sends, Shift+Enter
// a new line, growing up to 160 px), the @ autocomplete of the open
// conversation's members (mentions.js), typing notifications (start at most
// every 2 s while typing, stop on send, blur or empty), and the send itself
// (app.js's outbox) or an edit's save (actions.js: reply / edit modes, Up to
// edit the last message). Attachments are media.js's: a send waits for
// their uploads (a send pressed while they run goes out when the last one
// finishes, unless one failed) and carries the finished ones; the body may
// then be empty.

import { $ } from './dom.js';
import * as actions from './actions.js';
import { attachAutocomplete } from './mentions.js';
import * as alerts from './alerts.js';
import { S, isGroupLike, lsGet, lsSet } from './state.js';
import { openMenu } from './menu.js';
import { icon } from './icons.js';
import * as media from './media.js';

/** The composer's emoji picker: [emoji, name]. */
const PICK = [
  ['😀', 'grinning'], ['😂', 'joy'], ['😊', 'blush'], ['😍', 'heart eyes'], ['🤔', 'thinking'], ['😅', 'sweat smile'],
  ['😢', 'cry'], ['😮', 'surprised'], ['👍', 'thumbs up'], ['👎', 'thumbs down'], ['👏', 'clap'], ['🙏', 'thank you'],
  ['👋', 'wave'], ['💪', 'muscle'], ['🎉', 'party popper'], ['🔥', 'fire'], ['❤️', 'heart'], ['✅', 'check'],
  ['👀', 'eyes'], ['🚀', 'rocket'], ['💯', 'hundred'], ['☕', 'coffee'], ['🍕', 'pizza'], ['⚠️', 'warning'],
];

const TYPING_SEND_EVERY_MS = 2_000;

let h = null;
let mentionBox = null;     // the composer's @ autocomplete
let sendWhenReady = null;  // conversation id: send once the uploads finish
// Drafts live in localStorage ('drafts': conversation id -> text), shared by
// the account's tabs: each tab writes only the conversations it changed, on
// the stored map as it is then, so one tab does not erase another's.
let stored = null;         // the stored map, parsed (dropped when another tab writes it)
const unsaved = new Map(); // conversation id -> text ('' = none) not written yet
let draftTimer = 0;

function storedDrafts() {
  if (!stored) {
    const v = lsGet('drafts', {});
    stored = v && typeof v === 'object' && !Array.isArray(v) ? v : {};
  }
  return stored;
}

function saveDraftsSoon() {
  clearTimeout(draftTimer);
  draftTimer = setTimeout(saveDrafts, 300);
}

function saveDrafts() {
  if (!unsaved.size || !S.me) return;
  stored = null;                                   // as it is now, other tabs' changes included
  const m = { ...storedDrafts() };
  for (const [k, v] of unsaved) { if (v) m[k] = v; else delete m[k]; }
  unsaved.clear();
  lsSet('drafts', m);
  stored = m;
}

addEventListener('storage', (ev) => { if (ev.key && ev.key.startsWith('parley.drafts.')) stored = null; });
addEventListener('pagehide', saveDrafts);

/** The text in the composer is conversation convId's draft (an edit's own
 *  text is not: the draft it put aside is). */
export function keepDraft(convId) {
  if (convId == null) return;
  const mode = actions.composeMode();
  const text = mode && mode.mode === 'edit' ? mode.draft || '' : $('composer-input').value;
  unsaved.set(convId, text.trim() ? text : '');
  saveDraftsSoon();
}

/** Conversation convId's draft ('' when none). */
export function draftOf(convId) {
  if (unsaved.has(convId)) return unsaved.get(convId);
  const v = storedDrafts()[convId];
  return typeof v === 'string' ? v : '';
}

/** Another conversation opens: the composer's text and attachments stay
 *  with the one left (a send waiting for its uploads waits for the user to
 *  come back), and the new one's draft and attachments come back. */
export function switchComposer(fromId, toId) {
  sendWhenReady = null;
  if (fromId != null) keepDraft(fromId);
  media.switchAttachments(fromId, toId);
}

/** Logging out (or another account): forget the drafts in memory and the
 *  attachments. */
export function resetDrafts() {
  clearTimeout(draftTimer);
  stored = null;
  unsaved.clear();
  sendWhenReady = null;
  media.resetAttachments();
}

/** hooks: {api, conn() -> Connection, send(c, body, reply, attachments), loadDetails(c)} */
export function initComposer(hooks) {
  h = hooks;
  media.initMedia({ api: hooks.api, onReadyChange });
  const input = $('composer-input');
  $('composer').addEventListener('submit', submitComposer);
  mentionBox = attachAutocomplete(input, $('mention-list'), mentionCandidates);
  input.addEventListener('keydown', (ev) => {
    if (mentionBox.handleKey(ev)) return;
    if (actions.handleComposerKey(ev)) return;
    if (ev.key === 'Enter' && !ev.shiftKey && !ev.isComposing) submitComposer(ev);
  });
  input.addEventListener('input', () => {
    autosize();
    const c = S.convs.get(S.openId);
    if (!c) return;
    keepDraft(c.id);
    const mode = actions.composeMode();
    if (input.value.trim() && !(mode && mode.mode === 'edit')) typingStart(c);   // editing is not typing
    else typingStop();
  });
  input.addEventListener('blur', typingStop);
  const eb = $('emoji-btn');
  eb.replaceChildren(icon('smile', 20));
  eb.addEventListener('click', () => openMenu({
    opener: eb, grid: true, label: 'Insert an emoji', testid: 'emoji-picker', align: 'end',
    items: PICK.map(([emoji, name]) => ({
      label: emoji, emoji, testid: 'emoji-option', ariaLabel: name, title: name, keepFocusAway: true,
      onSelect: () => insertAtCaret(emoji),
    })),
  }));
}

/** Inserts text at the composer's caret (replacing a selection). */
function insertAtCaret(text) {
  const t = $('composer-input');
  const a = t.selectionStart ?? t.value.length, b = t.selectionEnd ?? t.value.length;
  t.value = t.value.slice(0, a) + text + t.value.slice(b);
  t.focus();
  t.setSelectionRange(a + text.length, a + text.length);
  t.dispatchEvent(new Event('input', { bubbles: true }));
}

export function closeMentions() { if (mentionBox) mentionBox.close(); }

export function autosize() {
  const t = $('composer-input');
  t.style.height = 'auto';
  t.style.height = Math.min(t.scrollHeight, 160) + 'px';
}

function submitComposer(ev) {
  if (ev) ev.preventDefault();
  const c = S.convs.get(S.openId);
  const t = $('composer-input');
  let body = t.value.replace(/\s+$/, '');
  const mode = actions.composeMode();
  const editing = !!(mode && mode.mode === 'edit' && c && mode.conv === c.id);
  const st = media.status();
  const withMedia = !editing && st.count > 0;
  sendWhenReady = null;
  if (!c || c.left) return;
  if (editing && !body.trim()) {
    // a message can't be empty: offer to delete it instead (as Slack does)
    actions.emptyEdit(c, mode.seq);
    return;
  }
  if (!body.trim() && !(withMedia && (st.ready || st.uploading || st.failed))) return;
  if (withMedia && st.failed) {
    // a refused file does not go quietly: the send waits until it is removed
    const n = st.failedNames;
    media.notice(`${n.length === 1 ? `“${n[0]}” was` : `${n.length} files were`} not attached: remove ${n.length === 1 ? 'it' : 'them'} (×), then send again.`);
    return;
  }
  if (withMedia && st.uploading) {
    sendWhenReady = c.id;
    media.notice('Sending when the uploads finish…');
    return;
  }
  if (!body.trim()) body = '';
  if (new TextEncoder().encode(body).length > 16384) {
    t.setCustomValidity('This message is too long (16 KB at most).');
    t.reportValidity();
    return;
  }
  t.setCustomValidity('');
  const attachments = withMedia ? media.takeReady() : [];
  if (!body && !attachments.length) return;
  t.value = '';
  autosize();
  if (!editing) keepDraft(c.id);     // sent: no draft left
  typingStop();
  if (mentionBox) mentionBox.close();
  if (editing) {
    actions.submitEdit(c, mode.seq, body);
  } else {
    const reply = actions.replyFor(c);
    h.send(c, body, reply, attachments);
    actions.cancelCompose(false);
    alerts.askAfterFirstSend();      // a sensible moment: the user is engaged (and this is a gesture)
  }
  t.focus();
}

/** An upload finished, failed or was removed: a send waiting for the
 *  uploads goes out when none is left running and none failed. */
function onReadyChange() {
  if (sendWhenReady == null) return;
  const st = media.status();
  if (st.failed) { sendWhenReady = null; media.notice('An upload failed: remove it, then send again.'); return; }
  if (st.uploading) return;
  const conv = sendWhenReady;
  sendWhenReady = null;
  media.notice('');
  if (conv === S.openId) submitComposer(null);
}

/** Members I can @mention in the open conversation (and @all/@here in
 *  groups and channels). */
function mentionCandidates() {
  const c = S.convs.get(S.openId);
  if (!c || c.left) return [];
  if (!c.members) { h.loadDetails(c); return []; }
  const out = [];
  for (const m of c.members) {
    if (S.me && m.id === S.me.id) continue;
    const name = S.names.get(m.id);
    if (name) out.push({ id: m.id, username: name, hint: m.role === 'admin' && isGroupLike(c) ? 'admin' : '' });
  }
  if (isGroupLike(c)) {
    const hint = `everyone in this ${c.kind === 'channel' ? 'channel' : 'group'}`;
    out.push({ id: 0, username: 'all', hint, special: true });
    out.push({ id: 0, username: 'here', hint, special: true });
  }
  return out;
}

function typingStart(c) {
  const now = Date.now();
  const t = S.typingOut;
  if (t && t.conv === c.id && now - t.last < TYPING_SEND_EVERY_MS) return;
  if (t && t.conv !== c.id) typingStop();
  const conn = h.conn();
  if (conn && conn.send({ type: 'typing', conversation: c.id, state: 'start' })) S.typingOut = { conv: c.id, last: now };
}

export function typingStop() {
  const t = S.typingOut;
  if (!t) return;
  S.typingOut = null;
  const conn = h.conn();
  if (conn) conn.send({ type: 'typing', conversation: t.conv, state: 'stop' });
}
