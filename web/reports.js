// reports.js — reports of messages (docs/protocol.md "Reports
// (moderation)"): the "Report" dialog a member opens from another user's
// message (a reason, an optional note), and the review list an admin of a
// group or channel opens from its members dialog (the reported text as it
// was, who sent and who reported it, why; "Show", "Delete message" through
// actions.js's delete, "Resolve").
//
// Reports are REST only and are not events: nothing here changes the
// conversation's log. A report keeps the message as it was when reported,
// so the review list shows that text even after an edit or a delete. The
// server's own admins (--admins) review every report, but the client cannot
// tell who they are: it offers the review list to group and channel admins
// only (server admins use `parley reports`).
//
// Everything is rendered with textContent and DOM calls.

import { el, $, setText, snippet, fmtAgo, fmtFull, toast } from './dom.js';
import { findMsg, jumpTo, deleteMessage } from './actions.js';
import { isGroupLike } from './state.js';

export const REASONS = [
  ['spam', 'Spam', 'ads, scams, the same thing again and again'],
  ['abuse', 'Abuse', 'insults, threats, hateful words'],
  ['harassment', 'Harassment', 'aimed at someone, again and again'],
  ['illegal', 'Illegal', 'content that breaks the law'],
  ['other', 'Other', 'something else: say what in the note'],
];
const REASON_LABEL = Object.fromEntries(REASONS.map(([v, l]) => [v, l]));
const NOTE_MAX = 500;                   // bytes (the server's limit)
const PAGE = 50;

let ctx = null;
let reporting = null;                   // {c, m, opener} while the report dialog is open
let reviewing = null;                   // {c, items: [report], more, before} while the review is open
let countReq = 0;                       // the latest count request (older answers are dropped)

/** context: {S, api, nameOf(uid), openConv() -> c | null} */
export function initReports(context) {
  ctx = context;
  const reasons = $('report-reasons');
  reasons.append(...REASONS.map(([value, label, hint]) => el('label', { class: 'check report-reason' },
    el('input', { type: 'radio', name: 'report-reason', value, 'data-testid': `report-reason-${value}` }),
    el('span', {}, el('span', { class: 'report-reason-label', text: label }),
      el('span', { class: 'report-reason-hint', text: ` — ${hint}` })))));
  reasons.addEventListener('change', () => setText($('report-error'), ''));
  $('report-form').addEventListener('submit', submitReport);
  $('report-cancel').addEventListener('click', () => $('report-dialog').close());
  $('report-dialog').addEventListener('close', () => {
    const r = reporting;
    reporting = null;
    if (r && r.opener && r.opener.isConnected) r.opener.focus({ preventScroll: true });
  });
  $('reports-btn').addEventListener('click', () => {
    const c = ctx.openConv();
    if (c) openReview(c);
  });
  $('reports-close').addEventListener('click', () => $('reports-dialog').close());
  $('reports-more').addEventListener('click', () => { if (reviewing) loadPage(reviewing, true); });
  $('reports-dialog').addEventListener('close', () => {
    const c = reviewing && reviewing.c;
    reviewing = null;
    if (c && $('members-dialog').open) refreshReportsButton(c);
  });
}

// ------------------------------------------------------------ reporting ---

/** May I report m? Another user's message that I can still see. */
export function canReport(c, m) {
  return !!(c && m && m.seq && !m.deleted && !c.left && ctx.S.me && m.sender !== ctx.S.me.id);
}

/** Opens the "Report" dialog for message m of c (opener gets focus back). */
export function openReport(c, m, opener) {
  if (!canReport(c, m)) return;
  const senderName = ctx.nameOf(m.sender);
  reporting = { c, m, opener };
  $('report-form').reset();
  setText($('report-error'), '');
  setText($('report-text'), isGroupLike(c)
    ? `The admins of this ${c.kind === 'channel' ? 'channel' : 'group'} and the server's moderators will see it. ${senderName} is not told who reported it.`
    : `The server's moderators will see it. ${senderName} is not told who reported it.`);
  setText($('report-quote'), m.body ? snippet(m.body, 280) : '(no text: attachments or an encrypted message)');
  $('report-submit').disabled = false;
  $('report-dialog').showModal();
  $('report-reasons').querySelector('input').focus();
}

function noteBytes(s) { return new TextEncoder().encode(s).length; }

function reportError(e) {
  switch (e && e.status) {
    case 0: return 'You are offline: the report was not sent. Try again when you are back online.';
    case 404: return 'This message is no longer available to report.';
    case 410: return 'This message was deleted: there is nothing left to report.';
    case 429: return 'Too many requests: try again in a moment.';
    case 400: return `The report was refused: ${e.message}.`;
    default: return `Could not send the report${e && e.message ? ` (${e.message})` : ''}. Try again.`;
  }
}

async function submitReport(ev) {
  ev.preventDefault();
  const r = reporting;
  if (!r) return;
  const err = $('report-error');
  setText(err, '');
  const picked = $('report-form').querySelector('input[name="report-reason"]:checked');
  if (!picked) {
    setText(err, 'Choose a reason.');
    $('report-reasons').querySelector('input').focus();
    return;
  }
  const note = $('report-note').value.trim();
  const n = noteBytes(note);
  if (n > NOTE_MAX) {
    setText(err, `The note is too long: at most ${NOTE_MAX} bytes (it has ${n}; accents and emoji take more than one).`);
    $('report-note').focus();
    return;
  }
  const body = note ? { reason: picked.value, note } : { reason: picked.value };
  const btn = $('report-submit');
  btn.disabled = true;
  try {
    const res = await ctx.api.call('POST', `/api/v1/conversations/${r.c.id}/messages/${r.m.seq}/report`, body);
    if (reporting !== r) return;
    $('report-dialog').close();
    toast(res && res.created === false
      ? 'You already reported this message: the moderators have it.'
      : 'Report sent. Thank you: the moderators will review it.');
  } catch (e) {
    if (reporting !== r) return;
    setText(err, reportError(e));
  } finally {
    btn.disabled = false;
  }
}

// ------------------------------------------------------------ reviewing ---

const isAdmin = (c) => isGroupLike(c) && c.role === 'admin' && !c.left;

function reportsPath(c, before) {
  return `/api/v1/conversations/${c.id}/reports?limit=${PAGE}${before ? `&before=${before}` : ''}`;
}

/** The members dialog's "Reports" button: shown to the conversation's
 *  admins, with the number of open reports (fetched: call when the dialog
 *  opens, not on every render). */
export async function refreshReportsButton(c) {
  const btn = $('reports-btn');
  const show = isAdmin(c);
  btn.hidden = !show;
  if (!show) return;
  const mine = ++countReq;
  let label = 'Reports', aria = 'Reports of messages';
  try {
    const res = await ctx.api.call('GET', reportsPath(c));
    const n = (res.reports || []).length;
    if (n) {
      label = `Reports (${n}${res.has_more ? '+' : ''})`;
      aria = `Reports of messages: ${n}${res.has_more ? ' or more' : ''} open`;
    } else {
      aria = 'Reports of messages: none open';
    }
  } catch { /* the dialog says why when opened */ }
  if (mine !== countReq) return;
  setText(btn, label);
  btn.setAttribute('aria-label', aria);
}

function reviewError(e, what) {
  switch (e && e.status) {
    case 0: return `You are offline: could not ${what}.`;
    case 403: return 'Only the admins of this conversation can review its reports.';
    case 404: return what.startsWith('resolve') ? 'This report is no longer available.' : `Could not ${what}: this conversation is no longer available.`;
    default: return `Could not ${what}${e && e.message ? ` (${e.message})` : ''}.`;
  }
}

/** Opens the open reports of c (over the members dialog). */
export async function openReview(c) {
  const rv = { c, items: [], more: false, before: 0 };
  reviewing = rv;
  $('report-list').replaceChildren();
  setText($('reports-error'), '');
  $('reports-more').hidden = true;
  setText($('reports-title'), `Reports in ${c.kind === 'channel' ? 'this channel' : 'this group'}`);
  $('reports-dialog').showModal();
  await loadPage(rv, false);
}

async function loadPage(rv, more) {
  const state = $('reports-state');
  setText(state, 'Loading…');
  setText($('reports-error'), '');
  try {
    const res = await ctx.api.call('GET', reportsPath(rv.c, more ? rv.before : 0));
    if (reviewing !== rv) return;
    const page = res.reports || [];
    rv.items.push(...page);
    rv.more = !!res.has_more && page.length > 0;
    rv.before = res.next_before || (page.length ? page[page.length - 1].id : rv.before);
    renderReview(rv);
  } catch (e) {
    if (reviewing !== rv) return;
    setText(state, '');
    setText($('reports-error'), reviewError(e, 'load the reports'));
  }
}

function renderReview(rv) {
  const ul = $('report-list');
  setText($('reports-state'), rv.items.length
    ? `${rv.items.length}${rv.more ? '+' : ''} open report${rv.items.length === 1 ? '' : 's'}, newest first.`
    : 'No open reports. Members report a message from its menu.');
  $('reports-more').hidden = !rv.more;
  ul.replaceChildren(...rv.items.map((r) => reportItem(rv, r)));
}

function reportItem(rv, r) {
  const c = rv.c;
  const loaded = findMsg(c, r.seq);
  const gone = r.deletedHere || (loaded && loaded.deleted);
  const sender = r.sender ? r.sender.username : 'someone';
  const reporter = r.reporter ? r.reporter.username : 'the content filter';
  const reason = REASON_LABEL[r.reason] || r.reason;
  const body = r.message && typeof r.message.body === 'string' ? r.message.body : null;
  return el('li', { class: 'report-item', 'data-testid': 'report-item', 'data-report': r.id, 'data-seq': r.seq },
    el('p', { class: 'report-head' },
      el('span', { class: 'report-reason-tag', 'data-testid': 'report-reason', text: reason }),
      el('span', { class: 'report-meta' }, 'Message from ',
        el('strong', { dir: 'auto', 'data-testid': 'report-sender', text: sender }),
        ', reported by ',
        el('strong', { dir: 'auto', 'data-testid': 'report-reporter', text: reporter }),
        ' ',
        el('time', { datetime: new Date(r.created).toISOString(), title: fmtFull(r.created), text: fmtAgo(r.created) }))),
    el('blockquote', { class: 'confirm-quote report-quote', dir: 'auto', 'data-testid': 'report-body',
      text: body != null ? snippet(body, 400) : '(no text: attachments or an encrypted message)' }),
    r.note ? el('p', { class: 'report-note', dir: 'auto', 'data-testid': 'report-note', text: `Note: ${r.note}` }) : null,
    gone ? el('p', { class: 'report-gone', 'data-testid': 'report-deleted', text: 'The message has since been deleted.' }) : null,
    el('div', { class: 'report-actions' },
      el('button', { type: 'button', class: 'btn btn-ghost btn-sm', text: 'Show',
        'aria-label': `Show the message from ${sender}`,
        onclick: () => { $('reports-dialog').close(); $('members-dialog').close(); jumpTo(c, r.seq); } }),
      gone ? null : el('button', { type: 'button', class: 'btn btn-danger-ghost btn-sm', text: 'Delete message',
        'data-testid': 'report-delete', 'aria-label': `Delete the message from ${sender}`,
        onclick: (ev) => deleteReported(rv, r, ev.currentTarget) }),
      el('button', { type: 'button', class: 'btn btn-primary btn-sm', text: 'Resolve', 'data-testid': 'report-resolve',
        'aria-label': `Resolve the report of ${reporter} about the message from ${sender}`,
        onclick: (ev) => resolve(rv, r, ev.currentTarget) })));
}

/** The existing delete (its confirmation, its errors as toasts); the report
 *  stays open: resolving it is a separate step. */
async function deleteReported(rv, r, btn) {
  const m = findMsg(rv.c, r.seq) || { seq: r.seq, body: r.message && r.message.body };
  const ok = await deleteMessage(rv.c, m, btn);
  if (!ok || reviewing !== rv) return;
  r.deletedHere = true;
  renderReview(rv);
  const res = $('report-list').querySelector(`[data-report="${r.id}"] [data-testid="report-resolve"]`);
  if (res) res.focus();
}

async function resolve(rv, r, btn) {
  setText($('reports-error'), '');
  btn.disabled = true;
  try {
    await ctx.api.call('POST', `/api/v1/reports/${r.id}/resolve`);
    if (reviewing !== rv) return;
    const i = rv.items.indexOf(r);
    rv.items = rv.items.filter((x) => x !== r);
    renderReview(rv);
    toast('Report resolved.');
    const rest = $('report-list').querySelectorAll('[data-testid="report-resolve"]');
    (rest[Math.min(i, rest.length - 1)] || $('reports-close')).focus();
  } catch (e) {
    if (reviewing !== rv) return;
    btn.disabled = false;
    setText($('reports-error'), reviewError(e, 'resolve the report'));
  }
}
