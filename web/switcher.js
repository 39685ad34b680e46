// switcher.js — the quick switcher: Ctrl+K (Cmd+K on a Mac) opens a dialog
// to jump to a conversation by typing part of its name. Conversations are
// listed most recent first; names starting with the text come before names
// merely containing it. ↑/↓ move, Enter opens, Escape closes (focus goes
// back where it was).

import { el, $, setAttr, paintAvatar } from './dom.js';
import { icon } from './icons.js';

const MAX = 20;
let h = null;
let opts = [];
let active = 0;
let back = null;

/** hooks: {convs() -> [{id, title, ws (a channel's workspace name to show,
 *  or ''), kind, unread, avatarKey, avatarLabel, square, private}] (most
 *  recent first), open(id), enabled() -> bool} */
export function initSwitcher(hooks) {
  h = hooks;
  const dlg = $('switcher-dialog');
  const input = $('switcher-input');
  document.addEventListener('keydown', (ev) => {
    if ((ev.ctrlKey || ev.metaKey) && !ev.altKey && !ev.shiftKey && ev.key.toLowerCase() === 'k') {
      if (!h.enabled()) return;
      // not over another dialog (search, a group's members…): a conversation
      // chosen here would open behind it
      if (!dlg.open && document.querySelector('dialog[open]')) return;
      ev.preventDefault();
      if (dlg.open) dlg.close();
      else openSwitcher();
    }
  });
  input.addEventListener('input', () => { active = 0; paint(); });
  input.addEventListener('keydown', (ev) => {
    if (ev.isComposing) return;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      ev.preventDefault();
      if (opts.length) active = (active + (ev.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length;
      paint(false);
    } else if (ev.key === 'Enter') {
      ev.preventDefault();
      choose(active);
    }
  });
  dlg.addEventListener('close', () => {
    if (back && back.isConnected && document.activeElement === document.body) back.focus({ preventScroll: true });
    back = null;
  });
  dlg.addEventListener('click', (ev) => { if (ev.target === dlg) dlg.close(); });   // the backdrop
}

export function openSwitcher() {
  const dlg = $('switcher-dialog');
  back = document.activeElement;
  $('switcher-input').value = '';
  active = 0;
  paint();
  dlg.showModal();
  $('switcher-input').focus();
}

function matches(q) {
  const all = h.convs();
  q = q.replace(/^#/, '');                 // "#ran" and "ran" both find #random
  if (!q) return all.slice(0, MAX);
  const starts = [], contains = [];
  for (const c of all) {
    const t = c.title.toLowerCase().replace(/^#/, '');
    if (t.startsWith(q)) starts.push(c);
    else if (t.includes(q) || (c.ws && c.ws.toLowerCase().includes(q))) contains.push(c);
  }
  return starts.concat(contains).slice(0, MAX);
}

function paint(refilter = true) {
  const list = $('switcher-list');
  const input = $('switcher-input');
  if (refilter) opts = matches(input.value.trim().toLowerCase());
  if (active >= opts.length) active = 0;
  list.replaceChildren(...opts.map((c, i) => {
    const av = el('span', { class: 'avatar avatar-xs' + (c.square ? ' avatar-group' : ''), 'aria-hidden': 'true' });
    paintAvatar(av, c.avatarKey, c.avatarLabel || c.title);
    return el('li', {
      id: `switcher-opt-${i}`, role: 'option', class: 'switcher-opt', 'aria-selected': String(i === active),
      'data-testid': 'switcher-option', 'data-conv-id': c.id,
      onpointerdown: (ev) => { ev.preventDefault(); choose(i); },
    }, av, el('span', { class: 'switcher-name', dir: 'auto', text: c.title }),
    c.private ? el('span', { class: 'lock-mark', role: 'img', 'aria-label': 'private channel' }, icon('lock', 13)) : null,
    // the channel's workspace: two #general tell apart
    c.ws ? el('span', { class: 'switcher-ws', dir: 'auto', 'data-testid': 'switcher-workspace', text: `· ${c.ws}` }) : null,
    c.unread ? el('span', { class: 'badge', text: c.unread > 99 ? '99+' : String(c.unread), 'aria-label': `${c.unread} unread` }) : null);
  }));
  if (!opts.length) list.append(el('li', { class: 'switcher-empty', role: 'presentation', text: 'No conversation by that name.' }));
  setAttr(input, 'aria-activedescendant', opts.length ? `switcher-opt-${active}` : null);
  const cur = list.children[active];
  if (cur && cur.scrollIntoView) cur.scrollIntoView({ block: 'nearest' });
}

function choose(i) {
  const c = opts[i];
  if (!c) return;
  back = null;
  $('switcher-dialog').close();
  h.open(c.id);
}
