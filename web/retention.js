// retention.js — disappearing messages (docs/protocol.md "Data lifecycle"):
// what a conversation's retention is and who set it, the select that
// changes it in the conversation's details dialog (groups.js), and dropping
// what is older than it from what this page holds.
//
// The server erases messages past their conversation's retention every
// purge interval *without an event* (history then shows them as deleted at
// their seq), so the client does the same on its own: a message older than
// the retention is marked `expired` in place (its text, attachments and
// reactions dropped, the event kept so seqs stay contiguous) and is not
// drawn (convview.js). Checked when the retention is learned, when history
// pages arrive, and every EXPIRE_EVERY_MS. The clock is the browser's: a
// skewed clock drops a message a little early or late, never keeps it for
// good (the server's purge is the authority).
//
// Who may change it (the server decides; a refusal is shown in words): an
// admin of a group or channel, either member of a direct conversation. The
// server's own admins may too, but the client cannot know who they are.

import { $, el, setText, fmtDuration } from './dom.js';
import { S, isGroupLike } from './state.js';

const EXPIRE_EVERY_MS = 30_000;

/** The choices of the select, in seconds (0: off). A conversation whose own
 *  value is none of these (set from the CLI) gets it as one more option. */
export const CHOICES = [
  [0, 'Off'], [86_400, '1 day'], [604_800, '7 days'], [2_592_000, '30 days'], [7_776_000, '90 days'],
  [31_536_000, '1 year'],
];

let h = null;

/** hooks: {api, render(what), loadDetails(c, force)} */
export function initRetention(hooks) {
  h = hooks;
  $('retention-select').addEventListener('change', (ev) => {
    const c = S.convs.get(S.openId);
    if (c) changeRetention(c, Number(ev.target.value));
  });
  setInterval(() => { if (S.me) expireAll(); }, EXPIRE_EVERY_MS);
}

/** What a conversation object (REST) says of the retention. */
export function learnRetention(c, d) {
  if (!d || typeof d.retention_seconds !== 'number') return;
  c.retention = d.retention_seconds;
  c.retentionSource = typeof d.retention_source === 'string' ? d.retention_source : null;
  expire(c);
}

/** A `retention` event: the conversation's own value changed. Unset (0),
 *  the workspace's or the server's applies, which only the server knows:
 *  ask it. */
export function onRetentionEvent(c, e) {
  const secs = e.data && Number.isSafeInteger(e.data.seconds) ? e.data.seconds : null;
  if (secs && secs > 0) {
    c.retention = secs;
    c.retentionSource = 'conversation';
    expire(c);
  } else {
    Promise.resolve(h.loadDetails(c, true)).catch(() => {});
  }
  if ($('members-dialog').open && S.openId === c.id) renderRetention(c);
}

/** "Messages are kept for 1 day (set by the workspace)." */
export function retentionText(c) {
  if (!c.retention) return 'Messages are kept until they are deleted: disappearing messages are off.';
  const by = { conversation: 'set for this conversation', workspace: 'set by the workspace', server: 'set by the server' }[c.retentionSource];
  return `Messages are kept for ${fmtDuration(c.retention)}${by ? ` (${by})` : ''}.`;
}

export function canSetRetention(c) {
  return !!c && !c.left && (c.kind === 'direct' || (isGroupLike(c) && c.role === 'admin'));
}

/** The retention part of the details dialog. */
export function renderRetention(c) {
  setText($('retention-text'), retentionText(c));
  $('retention-text').dataset.seconds = String(c.retention || 0);
  $('retention-text').dataset.source = c.retentionSource || '';
  const allowed = canSetRetention(c);
  $('retention-field').hidden = !allowed;
  if (!allowed) return;
  const own = c.retentionSource === 'conversation' ? c.retention : 0;
  const sel = $('retention-select');
  if (sel.disabled) return;                 // a change in flight: its answer renders
  const choices = CHOICES.slice();
  if (!choices.some(([v]) => v === own)) choices.push([own, fmtDuration(own)]);
  // the dialog is drawn again on every presence change: rebuilding the
  // options would close a select the user has open
  const key = choices.map(([v]) => v).join(',');
  if (sel.dataset.choices !== key) {
    sel.replaceChildren(...choices.map(([v, label]) => el('option', { value: String(v), text: label })));
    sel.dataset.choices = key;
  }
  if (sel.value !== String(own)) sel.value = String(own);
  setText($('retention-hint'), c.kind === 'channel'
    ? 'Everyone in the channel sees the change. “Off” follows the workspace’s setting, if it has one.'
    : 'Everyone in the conversation sees the change. Messages older than this are erased for everyone.');
}

async function changeRetention(c, seconds) {
  const err = $('retention-error');
  const sel = $('retention-select');
  err.textContent = '';
  sel.disabled = true;
  try {
    const d = await h.api.call('PUT', `/api/v1/conversations/${c.id}/retention`, { seconds });
    learnRetention(c, d);
    h.render('msgs');
    h.render('list');
  } catch (e) {
    err.textContent = retentionError(e);
  } finally {
    sel.disabled = false;
    if ($('members-dialog').open && S.openId === c.id) renderRetention(c);
  }
}

function retentionError(e) {
  if (e.status === 0) return 'You are offline: the setting was not changed.';
  if (e.status === 403) return 'Only the admins of this conversation can change how long messages are kept.';
  if (e.status === 404) return 'You are no longer a member of this conversation.';
  if (e.status === 400) return 'That duration is not allowed.';
  if (e.status === 429) return 'Too many changes: wait a moment and try again.';
  return `Could not change it${e.message ? `: ${e.message}` : ''}.`;
}

/** Marks what c holds past its retention as expired; true when something
 *  changed. */
export function expire(c, now = Date.now()) {
  if (!c.retention) return false;
  const cutoff = now - c.retention * 1000;
  let changed = false;
  for (const e of c.events) {
    if (e.kind !== 'message' || e.expired || !e.ts || e.ts >= cutoff) continue;
    e.expired = true;
    e.deleted = true;
    delete e.body;
    delete e.data;
    delete e.reactions;
    delete e.reply_preview;
    e.pinned = false;
    changed = true;
  }
  if (changed) {
    if (c.id === S.openId) h.render('msgs');
    h.render('list');
  }
  return changed;
}

export function expireAll() {
  const now = Date.now();
  for (const c of S.convs.values()) expire(c, now);
}
