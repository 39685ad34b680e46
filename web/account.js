// account.js — the account menu (the topbar's name and avatar): "Export my
// data" and "Delete account…" (docs/protocol.md "Data lifecycle").
//
// The export is the document `parley export` writes: GET /api/v1/me/export
// with its "messages" (a link) replaced by every message of mine, read page
// by page from GET /api/v1/me/messages until `next` is null; it is
// downloaded as a .json file. Deleting the account asks for the password
// and an explicit confirmation, then app.js ends the session and shows the
// sign-in screen; a 403 is a wrong password (nothing was deleted).

import { $, el, toast } from './dom.js';
import { openMenu } from './menu.js';

const PAGE = 200;                 // the server's largest page of /me/messages

let h = null;

/** hooks: {api, me() -> {id, username}, deleteAccount(password) -> Promise
 *  (app.js: resolves once the app is back at the sign-in screen; rejects
 *  with the ApiError)} */
export function initAccount(hooks) {
  h = hooks;
  $('account-btn').addEventListener('click', (ev) => openAccountMenu(ev.currentTarget));
  $('delete-account-cancel').addEventListener('click', () => $('delete-account-dialog').close());
  $('delete-account-form').addEventListener('submit', submitDelete);
}

function openAccountMenu(opener) {
  openMenu({
    label: 'Your account', opener, align: 'end', testid: 'account-menu',
    items: [
      { label: 'Export my data', icon: 'download', testid: 'account-export', onSelect: () => exportData() },
      { label: 'Delete account…', icon: 'trash', testid: 'account-delete', danger: true, onSelect: openDelete },
    ],
  });
}

/** The export document: the server's export object, "messages" the full
 *  array of my messages, oldest first. */
export async function buildExport(api) {
  const doc = await api.call('GET', '/api/v1/me/export');
  const all = [];
  let after = null;
  for (;;) {
    const page = await api.call('GET', `/api/v1/me/messages?limit=${PAGE}${after ? `&after=${encodeURIComponent(after)}` : ''}`);
    const msgs = page && Array.isArray(page.messages) ? page.messages : [];
    all.push(...msgs);
    const next = page ? page.next : null;
    if (next == null) break;
    // the next page starts after this one's last message: a `next` that
    // does not move on would never end
    if (!msgs.length || String(next) === after) throw new Error('the server’s pages do not move on');
    after = String(next);
  }
  doc.messages = all;
  return doc;
}

let exporting = false;

async function exportData() {
  if (exporting) return;
  exporting = true;
  toast('Preparing your export…');
  try {
    const doc = await buildExport(h.api);
    const me = h.me();
    const day = new Date().toISOString().slice(0, 10);
    const blob = new Blob([JSON.stringify(doc, null, 1) + '\n'], { type: 'application/json' });
    const url = URL.createObjectURL(blob);
    const a = el('a', { href: url, download: `parley-export-${me ? me.username : 'me'}-${day}.json`, hidden: true });
    document.body.append(a);
    a.click();
    a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 60_000);
    const n = doc.messages.length;
    toast(`Exported your data and ${n} message${n === 1 ? '' : 's'}.`);
  } catch (e) {
    toast(e.status === 0 ? 'You are offline: the export could not be made.'
      : `Could not export your data${e.message ? `: ${e.message}` : ''}.`, 'error');
  } finally {
    exporting = false;
  }
}

function openDelete() {
  $('delete-account-form').reset();
  $('delete-account-error').textContent = '';
  $('delete-account-submit').disabled = false;
  $('delete-account-dialog').showModal();
  $('delete-account-password').focus();
}

async function submitDelete(ev) {
  ev.preventDefault();
  const err = $('delete-account-error');
  const pw = $('delete-account-password').value;
  err.textContent = '';
  if (!pw) { err.textContent = 'Type your password to delete the account.'; $('delete-account-password').focus(); return; }
  if (!$('delete-account-confirm').checked) {
    err.textContent = 'Tick the box to confirm that the account and its messages go for good.';
    $('delete-account-confirm').focus();
    return;
  }
  const btn = $('delete-account-submit');
  btn.disabled = true;
  try {
    await h.deleteAccount(pw);
    $('delete-account-password').value = '';
    $('delete-account-dialog').close();
  } catch (e) {
    err.textContent = deleteError(e);
    if (e.status === 403) { $('delete-account-password').select(); $('delete-account-password').focus(); }
  } finally {
    btn.disabled = false;
  }
}

function deleteError(e) {
  if (e.status === 403) return 'Wrong password: nothing was deleted.';
  if (e.status === 0) return 'You are offline: nothing was deleted.';
  if (e.status === 429) return 'Too many attempts: wait a moment and try again.';
  if (e.status === 503) return 'The server could only do part of it (you may have left some conversations): try again.';
  return `Could not delete the account${e.message ? `: ${e.message}` : ''}.`;
}
