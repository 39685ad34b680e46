// people.js — finding people and showing who they are: the "Find people"
// box's suggestions (people search, GET /api/v1/users?q=, docs/protocol.md)
// and the profile card (name, presence or last seen, a "Message" button that
// opens the direct conversation).
//
// The suggestions are a listbox under the input (the input is its
// combobox): typing part of a name lists the people the server lets me see
// (those I share a conversation with); ↑/↓ choose, Enter or a click picks,
// Escape closes. Enter with nothing chosen submits the form, which looks the
// exact username up (anyone, also people I share nothing with).

import { el, $, setAttr, setText, paintUserAvatar, fmtAgo, readable } from './dom.js';

const DEBOUNCE_MS = 120;
const LIMIT = 8;

let h = null;
let profileUid = null;

/**
 * hooks: {api, me() -> {id} | null, presence(uid) -> {status, last_seen} |
 * undefined, live() -> bool (our connection is up), queryPresence(ids),
 * learnName(id, name), openDm(uid) -> Promise}
 */
export function initPeople(hooks) {
  h = hooks;
  attachPeoplePicker($('new-dm-username'), $('people-list'), (u) => h.openDm(u.id));
  $('profile-close').addEventListener('click', () => $('profile-dialog').close());
  $('profile-message').addEventListener('click', async () => {
    const uid = profileUid;
    if (uid == null) return;
    setText($('profile-error'), '');
    try {
      await h.openDm(uid);
      $('profile-dialog').close();
    } catch (e) {
      setText($('profile-error'), readable(e.message) || 'Could not open the conversation.');
    }
  });
}

/** Searches people whose name contains q (the server's scope). */
export async function searchPeople(q, limit = LIMIT) {
  const r = await h.api.call('GET', `/api/v1/users?q=${encodeURIComponent(q)}&limit=${limit}`);
  const users = (r && r.users) || [];
  for (const u of users) h.learnName(u.id, u.username);
  return users;
}

/** What is known of uid's presence, in words. */
export function presenceText(uid) {
  const me = h.me();
  if (me && uid === me.id) return h.live() ? 'Online' : 'Connecting…';
  if (!h.live()) return 'Connecting…';
  const p = h.presence(uid);
  if (!p) return '';
  if (p.status === 'online') return 'Online';
  if (p.status === 'away') return 'Away';
  return p.last_seen ? `Last seen ${fmtAgo(p.last_seen)}` : 'Offline';
}

/**
 * Makes input a combobox of people suggestions in list; onPick(user) when
 * one is chosen. multi: the input holds several names (commas or spaces):
 * the last one is completed, and a pick replaces it with the full name
 * (onPick is not called). Returns {close}.
 */
export function attachPeoplePicker(input, list, onPick, multi = false) {
  let opts = [];
  let active = -1;
  let timer = 0;
  let gen = 0;

  setAttr(input, 'role', 'combobox');
  setAttr(input, 'aria-autocomplete', 'list');
  setAttr(input, 'aria-controls', list.id);
  setAttr(input, 'aria-expanded', 'false');

  function close() {
    clearTimeout(timer);
    gen++;
    opts = [];
    active = -1;
    list.hidden = true;
    list.replaceChildren();
    setAttr(input, 'aria-expanded', 'false');
    setAttr(input, 'aria-activedescendant', null);
  }

  function paint() {
    list.replaceChildren(...opts.map((u, i) => {
      const av = el('span', { class: 'avatar avatar-xs', 'aria-hidden': 'true' });
      paintUserAvatar(av, u.id, u.username);
      const pres = presenceText(u.id);
      return el('li', {
        id: `${list.id}-opt-${i}`, role: 'option', class: 'people-opt', 'aria-selected': String(i === active),
        'data-testid': 'people-option', 'data-username': u.username, 'data-user': u.id,
        onpointerdown: (ev) => { ev.preventDefault(); pick(i); },
      }, av, el('span', { class: 'people-name', dir: 'auto', text: u.username }),
      pres ? el('span', { class: 'people-hint', text: pres }) : null);
    }));
    list.hidden = opts.length === 0;
    setAttr(input, 'aria-expanded', String(opts.length > 0));
    setAttr(input, 'aria-activedescendant', active >= 0 && opts.length ? `${list.id}-opt-${active}` : null);
  }

  const SEP = /[\s,;]+/;
  /** The name being typed: the whole input, or (multi) its last name. */
  function typed() {
    if (!multi) return input.value.trim();
    const parts = input.value.split(SEP);
    return parts[parts.length - 1];
  }

  function pick(i) {
    const u = opts[i];
    close();
    if (!u) return;
    if (multi) {
      const v = input.value;
      const m = /[^\s,;]*$/.exec(v);
      input.value = v.slice(0, m.index) + u.username + ', ';
      input.focus();
      return;
    }
    input.value = '';
    onPick(u);
  }

  async function update() {
    clearTimeout(timer);
    const q = typed().replace(/^@/, '');
    if (!q || q.length > 32) { close(); return; }
    const my = ++gen;
    timer = setTimeout(async () => {
      let users;
      try { users = await searchPeople(q); } catch { users = []; }
      if (my !== gen) return;               // a newer query (or close) came meanwhile
      const me = h.me();
      opts = users.filter((u) => !me || u.id !== me.id);
      // nothing chosen until ↓ (Enter then looks the typed name up), unless
      // a suggestion is exactly the typed name
      active = opts.findIndex((u) => u.username.toLowerCase() === q.toLowerCase());
      const fresh = opts.map((u) => u.id).filter((id) => !h.presence(id));
      if (fresh.length && h.live()) h.queryPresence(fresh);
      paint();
    }, DEBOUNCE_MS);
  }

  input.addEventListener('input', update);
  input.addEventListener('keydown', (ev) => {
    if (ev.isComposing) return;
    if (ev.key === 'Escape' && !list.hidden) { ev.preventDefault(); close(); return; }
    if (list.hidden || !opts.length) return;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      active = active < 0 ? (ev.key === 'ArrowDown' ? 0 : opts.length - 1)
        : (active + (ev.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length;
      paint();
    } else if (ev.key === 'Enter' && active >= 0) {
      // a suggestion whose name is what was typed, or the chosen one
      ev.preventDefault();
      pick(active);
    }
  });
  input.addEventListener('blur', () => setTimeout(() => { if (document.activeElement !== input) close(); }, 150));
  return { close };
}

/** Opens the profile card of uid (opener gets the focus back). */
export function openProfile(uid, name) {
  if (!Number.isSafeInteger(uid)) return;
  profileUid = uid;
  const me = h.me();
  paintUserAvatar($('profile-avatar'), uid, name);
  setText($('profile-name'), name);
  setText($('profile-error'), '');
  refreshProfile();
  $('profile-message').hidden = !!(me && uid === me.id);
  setAttr($('profile-message'), 'aria-label', `Message ${name}`);
  $('profile-dialog').dataset.user = String(uid);
  if (!h.presence(uid) && h.live() && !(me && uid === me.id)) h.queryPresence([uid]);
  if (!$('profile-dialog').open) $('profile-dialog').showModal();
  ($('profile-message').hidden ? $('profile-close') : $('profile-message')).focus();
}

/** Presence changed: the open card says so. */
export function refreshProfile() {
  if (profileUid == null) return;
  const t = presenceText(profileUid);
  const p = $('profile-presence');
  setText(p, t || 'Presence not known');
  const me = h.me();
  setAttr(p, 'data-status', me && profileUid === me.id ? 'online' : (h.presence(profileUid) || {}).status || 'unknown');
}
