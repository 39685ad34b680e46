// workspaces.js — workspaces and the way into their channels
// (docs/protocol.md "Workspaces and channels"): the "Workspaces" dialog (the
// ones I am in; creating one) and one workspace's dialog (browsing its
// channels — the public ones and the private ones I am in, with joined
// marks —, joining a public one, creating one, public or private; its
// members and, for an admin, adding one by username).
//
// It does not own channels once joined: a channel is a conversation of kind
// "channel" that the rest of the client treats as a group (state.js
// isGroupLike); joining one hands the conversation object to upsertConv and
// opens it, and its events (from our own `member_added` on) come on the
// live stream like any other conversation's.
//
// S.workspaces is the list (GET /api/v1/workspaces, without members): loaded
// at start and on every (re)connection, and again soon after a channel of a
// workspace we do not know shows up (being added to a workspace makes its
// `general` appear live) or after we leave or lose a channel (we may have
// left or been removed from its workspace). The open workspace dialog is
// refreshed by its own actions, not live.
//
// Server refusals are said in words on the dialog's alert line (errorText):
// a taken or malformed name, an action for admins only, a workspace's
// quota, a user or channel that is not there.

import { el, $, setText, setAttr, paintAvatar, paintUserAvatar, toast } from './dom.js';
import { icon } from './icons.js';
import { S, nameOf } from './state.js';
import { attachPeoplePicker } from './people.js';
import { confirmDialog } from './actions.js';

const RELOAD_SOON_MS = 300;

let h = null;
let shownId = null;         // the workspace whose dialog is open (or was last)
let busy = false;           // a create / join / add is under way
let reloadTimer = 0;
let reloadGen = 0;
let loaded = false;         // S.workspaces has been loaded once
let shownMembers = null;    // {id, list}: the members last shown in the workspace dialog

const cap = (s) => s.charAt(0).toUpperCase() + s.slice(1);

/** hooks: {api, render(what), openConv(id), upsertConv(d) -> c,
 *  queryPresence(ids), openProfile(uid)} */
export function initWorkspaces(hooks) {
  h = hooks;
  $('workspaces-btn').addEventListener('click', openWorkspaces);
  $('workspaces-close').addEventListener('click', () => $('workspaces-dialog').close());
  $('ws-create-form').addEventListener('submit', createWorkspace);
  $('workspace-close').addEventListener('click', () => $('workspace-dialog').close());
  $('ws-back').addEventListener('click', () => { $('workspace-dialog').close(); openWorkspaces(); });
  $('channel-form').addEventListener('submit', createChannel);
  $('ws-leave').addEventListener('click', (ev) => leaveWorkspace(shownId, ev.currentTarget, $('ws-members-error')));
  $('ws-add-form').addEventListener('submit', addMember);
  attachPeoplePicker($('ws-add-username'), $('ws-people-list'), (u) => {
    $('ws-add-username').value = u.username;
    $('ws-add-form').requestSubmit();
  });
  for (const b of ['ws-btn', 'ws-link']) {
    $(b).addEventListener('click', () => {
      const c = S.convs.get(S.openId);
      if (c && c.workspace != null) openWorkspace(c.workspace);
    });
  }
}

// ------------------------------------------------------------- the list ---

/** Loads the workspaces I am in; resolves when done (quietly keeps what we
 *  had when offline). */
export async function loadWorkspaces() {
  clearTimeout(reloadTimer);
  const my = ++reloadGen;
  let r;
  try { r = await h.api.call('GET', '/api/v1/workspaces'); } catch { return; }
  if (my !== reloadGen) return;           // a newer load is under way
  S.workspaces.clear();
  for (const w of (r && r.workspaces) || []) S.workspaces.set(w.id, w);
  loaded = true;
  h.render('list');
  h.render('conv');
  if ($('workspaces-dialog').open) renderWorkspaces();
}

/** Signed out: forget everything (S.workspaces is cleared by the caller). */
export function resetWorkspaces() {
  clearTimeout(reloadTimer);
  reloadGen++;
  loaded = false;
  shownId = null;
  shownMembers = null;
  for (const d of ['workspaces-dialog', 'workspace-dialog']) if ($(d).open) $(d).close();
}

function loadWorkspacesSoon() {
  clearTimeout(reloadTimer);
  reloadTimer = setTimeout(loadWorkspaces, RELOAD_SOON_MS);
}

/** A channel of workspace id showed up: learn the workspace when we do not
 *  know it (we were just added to it). */
export function noteWorkspace(id) {
  if (id != null && !S.workspaces.has(id)) loadWorkspacesSoon();
}

/** Our membership of a channel ended or began: the list may have changed. */
export function workspacesChanged() {
  loadWorkspacesSoon();
}

function openWorkspaces() {
  $('ws-create-form').reset();
  setText($('workspaces-error'), '');
  renderWorkspaces();
  $('workspaces-dialog').showModal();
  $('ws-name').focus();
  loadWorkspaces();
}

function wsAvatar(w, cls) {
  const av = el('span', { class: `avatar ${cls} avatar-group`, 'aria-hidden': 'true' });
  paintAvatar(av, 'w' + w.id, w.name);
  return av;
}

function wsMeta(w) {
  const n = w.member_count || 0, k = w.channel_count || 0;
  return `${w.role === 'admin' ? 'Admin · ' : ''}${n} member${n === 1 ? '' : 's'} · ${k} channel${k === 1 ? '' : 's'}`;
}

function renderWorkspaces() {
  const all = [...S.workspaces.values()];
  setText($('workspaces-state'), all.length ? '' : !loaded ? 'Loading…'
    : 'You are not in any workspace yet: create one, or ask an admin of one to add you.');
  $('ws-list').replaceChildren(...all.map((w) => el('li', {},
    el('button', {
      type: 'button', class: 'ws-item', 'data-testid': 'workspace-item', 'data-ws-id': w.id, 'data-name': w.name,
      'aria-label': `${w.name}: ${wsMeta(w)}`, onclick: () => { $('workspaces-dialog').close(); openWorkspace(w.id); },
    }, wsAvatar(w, 'avatar-sm'),
    el('span', { class: 'ws-item-text' },
      el('span', { class: 'ws-item-name', dir: 'auto', text: w.name }),
      el('span', { class: 'ws-item-meta', text: wsMeta(w) }))))));
}

async function createWorkspace(ev) {
  ev.preventDefault();
  const err = $('workspaces-error');
  setText(err, '');
  const name = $('ws-name').value.trim();
  if (!name) { setText(err, 'Give the workspace a name.'); $('ws-name').focus(); return; }
  if (busy) return;
  busy = true;
  try {
    const w = await h.api.call('POST', '/api/v1/workspaces', { name });
    S.workspaces.set(w.id, w);
    $('workspaces-dialog').close();
    toast(`Workspace “${w.name}” created, with its #general channel.`);
    openWorkspace(w.id, w);
  } catch (e) {
    setText(err, errorText(e, 'workspace'));
  } finally { busy = false; }
}

// ------------------------------------------------------- one workspace ---

/** Opens workspace id's dialog (its channels and members). detail: the
 *  workspace with its members, when the caller already has it. */
export async function openWorkspace(id, detail) {
  shownId = id;
  const dlg = $('workspace-dialog');
  $('channel-form').reset();
  $('ws-add-form').reset();
  for (const e of ['channel-error', 'ws-members-error']) setText($(e), '');
  const w = detail || S.workspaces.get(id) || { id, name: 'Workspace', role: 'member' };
  paintWorkspace(w);
  $('ws-channels').replaceChildren();
  if (!w.members) $('ws-members').replaceChildren();
  setText($('ws-channels-state'), 'Loading channels…');
  if (!dlg.open) dlg.showModal();
  $('channel-name').focus();
  await refreshWorkspace(detail);
}

/** Reloads the shown workspace (unless detail is given) and its channels. */
async function refreshWorkspace(detail) {
  const id = shownId;
  try {
    const [w, ch] = await Promise.all([
      detail ? Promise.resolve(detail) : h.api.call('GET', `/api/v1/workspaces/${id}`),
      h.api.call('GET', `/api/v1/workspaces/${id}/channels`),
    ]);
    if (shownId !== id) return;
    learnWorkspace(w);
    paintWorkspace(w);
    paintChannels((ch && ch.channels) || []);
  } catch (e) {
    if (shownId !== id) return;
    setText($('ws-channels-state'), errorText(e, 'open'));
    if (e.status === 404) { S.workspaces.delete(id); h.render('conv'); }
  }
}

function learnWorkspace(w) {
  const { members, ...rest } = w;
  S.workspaces.set(w.id, rest);
  for (const m of members || []) if (m.username) S.names.set(m.id, m.username);
  h.render('list');
  h.render('conv');
}

function paintWorkspace(w) {
  const admin = w.role === 'admin';
  setText($('workspace-title'), w.name);
  $('workspace-dialog').dataset.wsId = String(w.id);
  $('workspace-dialog').dataset.role = w.role || '';
  const av = $('workspace-avatar');
  paintAvatar(av, 'w' + w.id, w.name);
  setText($('workspace-sub'), `${admin ? 'You are an admin · ' : ''}${w.member_count || 0} member${w.member_count === 1 ? '' : 's'}`);
  $('ws-add-form').hidden = !admin;
  $('ws-add-note').hidden = admin;
  if (!w.members) return;
  shownMembers = { id: w.id, list: w.members };
  const members = w.members.slice().sort((a, b) => (a.role === b.role ? 0 : a.role === 'admin' ? -1 : 1));
  $('ws-members').replaceChildren(...members.map((m) => {
    const me = S.me && m.id === S.me.id;
    const name = m.username || nameOf(m.id);
    const mav = el('span', { class: 'avatar avatar-sm', 'aria-hidden': 'true' });
    paintUserAvatar(mav, m.id, name);
    return el('li', { class: 'member', 'data-testid': 'workspace-member', 'data-user': m.id, 'data-role': m.role },
      mav,
      el('button', { type: 'button', class: 'member-name', dir: 'auto', 'aria-label': `${name}${me ? ' (you)' : ''}: show profile`,
        onclick: () => h.openProfile(m.id) }, name + (me ? ' (you)' : '')),
      el('span', { class: 'role', text: m.role === 'admin' ? 'Admin' : 'Member' }));
  }));
}

function paintChannels(channels) {
  setText($('ws-channels-state'), channels.length ? '' : 'No channels.');
  $('ws-channels').replaceChildren(...channels.map((ch) => {
    const title = '#' + ch.title;
    const n = ch.member_count || 0;
    const meta = `${ch.private ? 'Private · ' : ''}${n} member${n === 1 ? '' : 's'}`;
    const action = ch.joined
      ? el('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'channel-open',
        'aria-label': `Open ${title}`, text: 'Open', onclick: () => openChannel(ch) })
      : el('button', { type: 'button', class: 'btn btn-primary btn-sm', 'data-testid': 'channel-join',
        'aria-label': `Join ${title}`, text: 'Join', onclick: (ev) => joinChannel(ch, ev.currentTarget) });
    return el('li', {
      class: 'ws-channel', 'data-testid': 'channel-item', 'data-conv-id': ch.id, 'data-name': ch.title,
      'data-joined': String(!!ch.joined), 'data-private': String(!!ch.private),
    },
    el('span', { class: 'ws-channel-text' },
      el('span', { class: 'ws-channel-name' },
        el('span', { dir: 'auto', text: title }),
        ch.private ? el('span', { class: 'lock-mark', role: 'img', 'aria-label': 'private', title: 'Private channel' }, icon('lock', 13)) : null),
      el('span', { class: 'ws-channel-meta', text: meta })),
    ch.joined ? el('span', { class: 'joined-mark', 'data-testid': 'joined-mark' }, icon('tick', 14), 'Joined') : null,
    action);
  }));
}

/** Opens a channel I am in (known to the list, or fetched first). */
async function openChannel(ch) {
  const err = $('channel-error');
  setText(err, '');
  try {
    if (!S.convs.has(ch.id) || !S.convs.get(ch.id).kind) h.upsertConv(await h.api.call('GET', `/api/v1/conversations/${ch.id}`));
    $('workspace-dialog').close();
    h.openConv(ch.id);
  } catch (e) {
    setText(err, errorText(e, 'open-channel', { name: ch.title }));
  }
}

async function joinChannel(ch, btn) {
  const err = $('channel-error');
  setText(err, '');
  if (busy) return;
  busy = true;
  btn.disabled = true;
  try {
    const d = await h.api.call('POST', `/api/v1/conversations/${ch.id}/join`);
    const c = h.upsertConv(d);
    $('workspace-dialog').close();
    h.openConv(c.id);
  } catch (e) {
    btn.disabled = false;
    setText(err, errorText(e, 'join', { name: ch.title }));
    if (e.status === 404) refreshWorkspace();
  } finally { busy = false; }
}

async function createChannel(ev) {
  ev.preventDefault();
  const err = $('channel-error');
  setText(err, '');
  const name = $('channel-name').value.trim().replace(/^#/, '');
  const priv = $('channel-private').checked;
  if (!name) { setText(err, 'Give the channel a name.'); $('channel-name').focus(); return; }
  if (busy) return;
  busy = true;
  try {
    const d = await h.api.call('POST', `/api/v1/workspaces/${shownId}/channels`, { name, private: priv });
    const c = h.upsertConv(d);
    const w = S.workspaces.get(shownId);
    if (w) w.channel_count = (w.channel_count || 0) + 1;
    $('workspace-dialog').close();
    h.openConv(c.id);
  } catch (e) {
    setText(err, errorText(e, 'channel', { name }));
    $('channel-name').focus();
  } finally { busy = false; }
}

async function addMember(ev) {
  ev.preventDefault();
  const err = $('ws-members-error');
  const input = $('ws-add-username');
  setText(err, '');
  const username = input.value.trim().replace(/^@/, '');
  if (!username) { setText(err, 'Type the username of the person to add.'); input.focus(); return; }
  if (busy) return;
  busy = true;
  const lower = username.toLowerCase();
  const isMe = !!(S.me && S.me.username && S.me.username.toLowerCase() === lower);
  // who was in before: adding a member again is a 200 that changes nothing
  // (docs/protocol.md), so "was added" is said only when they were not
  const known = shownMembers && shownMembers.id === shownId ? shownMembers.list : null;
  const before = S.workspaces.get(shownId);
  const countBefore = before && typeof before.member_count === 'number' ? before.member_count : null;
  try {
    const w = await h.api.call('POST', `/api/v1/workspaces/${shownId}/members`, { username });
    input.value = '';
    const added = (w.members || []).find((m) => m.username && m.username.toLowerCase() === lower);
    const already = isMe || (known ? known.some((m) => m.username && m.username.toLowerCase() === lower)
      : countBefore != null && w.member_count === countBefore);
    learnWorkspace(w);
    paintWorkspace(w);
    if (already) {
      setText(err, isMe ? `You are already a member of ${w.name}.`
        : `${added ? added.username : username} is already a member of ${w.name}.`);
      return;
    }
    if (added) h.queryPresence([added.id]);
    refreshWorkspace(w);                    // #general's member count
    toast(`${added ? added.username : username} was added to ${w.name} and its #general channel.`);
  } catch (e) {
    setText(err, errorText(e, 'member', { name: username }));
  } finally { busy = false; }
}

// ------------------------------------------------------------- leaving ---

/** Leaves workspace id, and so each of its channels, #general included
 *  (the only way out of #general: docs/protocol.md), after a confirmation.
 *  opener: where focus goes back; errEl: the alert line for a refusal.
 *  Resolves true once left. */
export async function leaveWorkspace(id, opener, errEl) {
  if (id == null) return false;
  const w = S.workspaces.get(id);
  const name = w ? w.name : 'this workspace';
  if (errEl) setText(errEl, '');
  const ok = await confirmDialog({
    title: w ? `Leave ${w.name}?` : 'Leave this workspace?',
    text: `You will leave every channel of ${name}, #general too, and no longer get their messages. ` +
      `To come back, an admin of ${name} has to add you again.`,
    ok: 'Leave workspace', opener,
  });
  if (!ok || busy) return false;
  busy = true;
  try {
    await h.api.call('POST', `/api/v1/workspaces/${id}/leave`);
  } catch (e) {
    if (errEl) setText(errEl, e.status === 404 ? 'You are no longer a member of it.' : errorText(e, 'leave'));
    return false;
  } finally { busy = false; }
  S.workspaces.delete(id);
  for (const c of S.convs.values()) {
    if (c.kind !== 'channel' || c.workspace !== id || c.left) continue;
    c.left = true;                    // its member_removed events say so too
    if (S.me && c.members) c.members = c.members.filter((m) => m.id !== S.me.id);
  }
  for (const d of ['workspace-dialog', 'members-dialog']) if ($(d).open) $(d).close();
  if (shownId === id) shownId = null;
  toast(`You left ${name}.`);
  h.render();
  loadWorkspacesSoon();
  return true;
}

// -------------------------------------------------------------- errors ---

/** A channel name close to what was typed that the server takes (ASCII
 *  capitals lowered, spaces as "-", what a name cannot hold left out, 80
 *  bytes at most), or '' when nothing is left or it is what was typed. */
function channelNameLike(name) {
  const s = String(name).normalize('NFC')
    .replace(/[A-Z]/g, (ch) => ch.toLowerCase())
    .replace(/\s+/gu, '-')
    .replace(/[\u0000-\u007f]/g, (ch) => (/[a-z0-9._-]/.test(ch) ? ch : ''))
    .replace(/[\p{Cc}\p{Cf}\p{Z}]/gu, '')
    .replace(/^\p{M}+/u, '')
    .replace(/-{2,}/g, '-')
    .replace(/^-+|-+$/g, '');
  const enc = new TextEncoder();
  let out = '', bytes = 0;
  for (const ch of s) {
    const n = enc.encode(ch).length;
    if (bytes + n > 80) break;
    out += ch;
    bytes += n;
  }
  return out && out !== name ? out : '';
}

/** A server refusal in words. op: workspace (creating one), open (a
 *  workspace), channel (creating one), join, open-channel, member (adding
 *  one); x.name: the name the user typed. */
function errorText(e, op, x = {}) {
  const w = S.workspaces.get(shownId);
  const ws = w ? `“${w.name}”` : 'this workspace';
  if (e.status === 0) return 'You are offline — nothing was changed. Try again when connected.';
  switch (e.status) {
    case 400:
      // the server's message names the rule the name broke
      if (op === 'workspace') return e.message ? `Not a workspace name: ${e.message}.` : 'A workspace name is 1–64 bytes, without control characters.';
      // the rule in plain words (never the API's: "bytes", quoted field
      // names, "combining mark"), and a name that would do
      if (op === 'channel') {
        const like = channelNameLike(x.name);
        return `“${x.name}” can’t be a channel name. Channel names use lowercase letters, digits, - _ and . ` +
          `(letters of other scripts too), with no spaces${like ? `: try “${like}”.` : '.'}`;
      }
      break;
    case 403:
      if (op === 'member') return `Only admins of ${ws} can add members.`;
      if (op === 'channel') return `Only members of ${ws} can create channels in it.`;
      return 'You are not allowed to do that here.';
    case 404:
      if (op === 'member') return `No user named “${x.name}”.`;
      if (op === 'join' || op === 'open-channel') return `#${x.name} no longer exists, is private, or you are no longer in ${ws}.`;
      return `${cap(ws)} does not exist or you are no longer a member of it.`;
    case 409:
      if (op === 'channel' && /looks like/.test(e.message || ''))
        return `#${x.name} looks too much like the name of a channel already in ${ws}: pick another name.`;
      if (op === 'channel') return `A channel named #${x.name} already exists in ${ws}: pick another name.`;
      break;
    case 413:
      if (e.code === 'quota') {
        if (op === 'member') return `${cap(ws)} is full: it has the most members a workspace may have (quota).`;
        if (op === 'channel') return `${cap(ws)} has the most channels a workspace may have (quota): none can be added.`;
      }
      return 'Too large: the server refused it.';
    case 429: return 'Too many requests: wait a moment and try again.';
    default: break;
  }
  return e.message ? `The server refused: ${e.message}.` : `The server refused (${e.code || e.status}).`;
}
