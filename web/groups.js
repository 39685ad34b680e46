// groups.js — the group dialogs: "New group" (a title and members by
// username) and "Members" (the list with roles and presence, a member's
// profile card, an admin adding and removing members, leaving the group;
// for admins, the way to the conversation's reports, reports.js; how long
// messages are kept, retention.js).
// REST: docs/protocol.md section 2. The members dialog serves channels too
// (a channel is a group inside a workspace; only its workspace's members
// can be added to it), and direct conversations as "Details" (the two
// members, the retention and blocking the other, blocks.js: no adding, no
// leaving).

import { el, $, paintUserAvatar, setText, readable } from './dom.js';
import { S, nameOf, learnMembers, titleOf } from './state.js';
import { presenceOf } from './convlist.js';
import { attachPeoplePicker } from './people.js';
import { renderRetention } from './retention.js';
import { renderBlock } from './blocks.js';
import { confirmDialog } from './actions.js';
import { leaveWorkspace } from './workspaces.js';

/** A workspace's #general: everyone in the workspace is in it, and only
 *  leaving the workspace leaves it (docs/protocol.md). Channel names are
 *  unique in a workspace and each has its general. */
const isGeneral = (c) => c.kind === 'channel' && c.title === 'general';

let h = null;

/** hooks: {api, render(what), openConv(id), lookupUser(name) -> Promise<user>,
 *  upsertConv(d) -> c, loadDetails(c, force), queryPresence(ids),
 *  openProfile(uid), refreshReportsButton(c) (reports.js)} */
export function initGroups(hooks) {
  h = hooks;
  $('new-group').addEventListener('click', () => {
    $('group-form').reset();
    $('group-error').textContent = '';
    $('group-dialog').showModal();
    $('group-title').focus();
  });
  $('group-cancel').addEventListener('click', () => $('group-dialog').close());
  $('group-form').addEventListener('submit', createGroup);
  $('members-btn').addEventListener('click', () => {
    const c = S.convs.get(S.openId);
    $('members-error').textContent = '';
    $('retention-error').textContent = '';
    $('reports-btn').hidden = true;
    if (c) {
      // its admins get a "Reports" button with the open count, once the
      // role is fresh
      Promise.resolve(h.loadDetails(c, true)).catch(() => {}).then(() => {
        if ($('members-dialog').open && S.openId === c.id) h.refreshReportsButton(c);
      });
    }
    renderMembers();
    $('members-dialog').showModal();
  });
  $('members-close').addEventListener('click', () => $('members-dialog').close());
  $('add-member-form').addEventListener('submit', addMember);
  attachPeoplePicker($('group-members'), $('group-people-list'), null, true);
  attachPeoplePicker($('add-member-username'), $('add-people-list'), (u) => {
    $('add-member-username').value = u.username;
    $('add-member-form').requestSubmit();
  });
  $('leave-group').addEventListener('click', leaveGroup);
}

export function renderMembers() {
  const c = S.convs.get(S.openId);
  const ul = $('member-list');
  if (!c) return;
  const admin = c.role === 'admin' && !c.left && c.kind !== 'direct';
  setText($('members-dialog-title'), c.kind === 'direct' ? 'Details' : 'Members');
  $('add-member-form').hidden = !admin;
  if (!admin) $('reports-btn').hidden = true;
  $('leave-group').hidden = c.left || c.kind === 'direct';
  renderRetention(c);
  renderBlock(c);
  // #general cannot be left alone: its button leaves the workspace (asked first)
  setText($('leave-group'), isGeneral(c) ? 'Leave workspace' : c.kind === 'channel' ? 'Leave channel' : 'Leave group');
  const ws = isGeneral(c) ? S.workspaces.get(c.workspace) : null;
  $('leave-group').setAttribute('aria-label', isGeneral(c) ? `Leave the workspace${ws ? ` ${ws.name}` : ''} (and so #general)` : $('leave-group').textContent);
  const members = (c.members || []).slice().sort((a, b) => (a.role === b.role ? nameOf(a.id).localeCompare(nameOf(b.id)) : a.role === 'admin' ? -1 : 1));
  ul.replaceChildren(...members.map((m) => {
    const name = nameOf(m.id);
    const me = S.me && m.id === S.me.id;
    const pres = S.conn !== 'online' ? 'unknown' : me ? 'online' : presenceOf(m.id);
    const av = el('span', { class: 'avatar avatar-sm', 'aria-hidden': 'true' });
    paintUserAvatar(av, m.id, name);
    return el('li', { class: 'member', 'data-testid': 'member', 'data-user': m.id, 'data-role': m.role },
      av,
      el('span', { class: 'pdot', 'data-status': pres, 'aria-hidden': 'true' }),
      el('button', { type: 'button', class: 'member-name', dir: 'auto', 'data-testid': 'member-name',
        'aria-label': `${name}${me ? ' (you)' : ''}: show profile`, onclick: () => h.openProfile(m.id) }, name + (me ? ' (you)' : '')),
      el('span', { class: 'role', text: m.role === 'admin' ? 'Admin' : 'Member' }),
      el('span', { class: 'sr-only', text: pres === 'unknown' ? '' : `, ${pres}` }),
      admin && !me ? el('span', { class: 'member-actions' },
        el('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'member-role',
          'aria-label': m.role === 'admin' ? `Make ${name} a member` : `Make ${name} an admin`,
          text: m.role === 'admin' ? 'Make member' : 'Make admin',
          onclick: () => setRole(c, m.id, m.role === 'admin' ? 'member' : 'admin') }),
        el('button', { type: 'button', class: 'btn btn-ghost btn-sm', 'data-testid': 'remove-member',
          'aria-label': `Remove ${name}`, text: 'Remove', onclick: (ev) => removeMember(c, m.id, ev.currentTarget) })) : null);
  }));
}

async function setRole(c, uid, role) {
  const err = $('members-error');
  err.textContent = '';
  try {
    const d = await h.api.call('PATCH', `/api/v1/conversations/${c.id}/members/${uid}`, { role });
    if (d && d.members) learnMembers(c, d.members);
    renderMembers();
  } catch (e) {
    err.textContent = e.status === 403 ? 'Only admins can change roles.' : (readable(e.message) || 'Could not change the role.');
  }
}

async function createGroup(ev) {
  ev.preventDefault();
  const err = $('group-error');
  err.textContent = '';
  const title = $('group-title').value.trim();
  const names = $('group-members').value.split(/[\s,;]+/).map((s) => s.trim()).filter(Boolean);
  if (!title) { err.textContent = 'Give the group a name.'; $('group-title').focus(); return; }
  try {
    const users = await Promise.all(names.map(h.lookupUser));
    const ids = [...new Set(users.map((u) => u.id).filter((id) => !S.me || id !== S.me.id))];
    const d = await h.api.call('POST', '/api/v1/conversations', { kind: 'group', title, members: ids });
    const c = h.upsertConv(d);
    $('group-dialog').close();
    h.queryPresence(ids);
    h.openConv(c.id);
  } catch (e) {
    err.textContent = readable(e.message) || 'Could not create the group.';
  }
}

async function addMember(ev) {
  ev.preventDefault();
  const c = S.convs.get(S.openId);
  const input = $('add-member-username');
  const err = $('members-error');
  err.textContent = '';
  if (!c) return;
  try {
    const u = await h.lookupUser(input.value);
    const d = await h.api.call('POST', `/api/v1/conversations/${c.id}/members`, { user: u.id });
    if (d && d.members) learnMembers(c, d.members);
    input.value = '';
    h.queryPresence([u.id]);
    renderMembers();
    h.render('conv');
  } catch (e) {
    err.textContent = addError(c, e, input.value.trim().replace(/^@/, ''));
  }
}

function addError(c, e, name) {
  if (e.status === 403 && c.kind === 'channel' && (c.role === 'admin' || /workspace/i.test(e.message))) {
    // an admin refused: the user is not in the channel's workspace
    const w = S.workspaces.get(c.workspace);
    return `${name} is not a member of ${w ? `the workspace “${w.name}”` : 'this workspace'}: a workspace admin must add them to it first.`;
  }
  if (e.status === 403) return 'Only admins can add members.';
  return readable(e.message) || 'Could not add the member.';
}

/** Removes a member, asked first (as leaving is): a mis-tap must not put
 *  someone out of the conversation. */
async function removeMember(c, uid, opener) {
  const err = $('members-error');
  err.textContent = '';
  const name = nameOf(uid);
  const where = c.kind === 'channel' ? titleOf(c) : `“${titleOf(c)}”`;
  const ok = await confirmDialog({
    title: `Remove ${name} from ${where}?`,
    text: `${name} will no longer get its messages. To bring ${name} back, an admin has to add them again.`,
    ok: 'Remove', opener,
  });
  if (!ok || S.openId !== c.id || !(c.members || []).some((m) => m.id === uid)) return;
  try {
    await h.api.call('DELETE', `/api/v1/conversations/${c.id}/members/${uid}`);
    if (c.members) c.members = c.members.filter((m) => m.id !== uid);
    renderMembers();
    h.render('conv');
  } catch (e) {
    err.textContent = e.status === 403 ? 'Only admins can remove members.' : (readable(e.message) || 'Could not remove the member.');
  }
}

async function leaveGroup() {
  const c = S.convs.get(S.openId);
  const err = $('members-error');
  err.textContent = '';
  if (!c) return;
  if (isGeneral(c)) { await leaveWorkspace(c.workspace, $('leave-group'), err); return; }
  // a group or a private channel takes someone adding you back: asked first
  // (a public channel is joined again from its workspace)
  if (c.kind !== 'channel' || c.private) {
    const what = c.kind === 'channel' ? 'channel' : 'group';
    const ok = await confirmDialog({
      title: `Leave ${c.kind === 'channel' ? titleOf(c) : `“${titleOf(c)}”`}?`,
      text: `You will no longer get its messages. To come back, someone in the ${what} has to add you again.`,
      ok: `Leave ${what}`, opener: $('leave-group'),
    });
    if (!ok || S.openId !== c.id || c.left) return;
  }
  try {
    await h.api.call('POST', `/api/v1/conversations/${c.id}/leave`);
    c.left = true;
    if (S.me && c.members) c.members = c.members.filter((m) => m.id !== S.me.id);
    $('members-dialog').close();
    h.render();
  } catch (e) {
    err.textContent = readable(e.message) || `Could not leave the ${c.kind === 'channel' ? 'channel' : 'group'}.`;
  }
}
