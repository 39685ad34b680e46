// menu.js — one accessible popup menu at a time (context menus, the
// message "more" menu, the reaction picker, the notification menu).
//
// The menu is a role="menu" of buttons (role menuitem or menuitemradio). It
// opens with focus on its first (or checked) item; arrow keys, Home and End
// move; Enter and Space activate; Escape closes and gives focus back to the
// opener; Tab, a click outside, scrolling the message list or resizing close it.

import { el } from './dom.js';
import { icon } from './icons.js';

let open = null;      // {node, opener, onClose}

export function isMenuOpen() { return !!open; }

export function closeMenu(restoreFocus = true) {
  if (!open) return;
  const { node, opener, onClose } = open;
  open = null;
  node.remove();
  document.removeEventListener('pointerdown', onOutside, true);
  window.removeEventListener('resize', onResize);
  if (restoreFocus && opener && opener.isConnected && opener.focus) opener.focus({ preventScroll: true });
  if (onClose) onClose();
}

function onOutside(ev) {
  if (open && !open.node.contains(ev.target) && !(open.opener && open.opener.contains(ev.target))) closeMenu(false);
}

function onResize() { closeMenu(false); }

/**
 * Opens a menu.
 * @param {object} o
 *   items: [{label, icon? (an icons.js name), testid?, onSelect(), checked?, danger?, hint?, emoji?}]
 *          (null entries skipped)
 *   label: accessible name of the menu
 *   opener: the element that opened it (focus returns there)
 *   at: {x, y} (a pointer position) — or the opener's rect is used
 *   grid: true for a horizontal row of emoji buttons (the reaction picker)
 *   testid: data-testid of the menu
 *   align: 'start' | 'end' (relative to the opener)
 */
export function openMenu(o) {
  closeMenu(false);
  const items = o.items.filter(Boolean);
  const radio = items.some((it) => it.checked !== undefined);
  const node = el('div', {
    class: 'menu' + (o.grid ? ' menu-grid' : ''), role: 'menu', 'aria-label': o.label,
    'aria-orientation': o.grid ? 'horizontal' : 'vertical', 'data-testid': o.testid || 'menu', tabindex: '-1',
  });
  const buttons = items.map((it) => {
    const b = el('button', {
      type: 'button', role: radio ? 'menuitemradio' : 'menuitem', tabindex: '-1',
      class: 'menu-item' + (it.danger ? ' danger' : '') + (it.emoji ? ' menu-emoji' : '') + (it.on ? ' is-on' : ''),
      'data-testid': it.testid || null, 'aria-checked': radio ? String(!!it.checked) : null,
      'aria-label': it.ariaLabel || null, title: it.title || null,
      'data-emoji': it.emoji || null,
    },
    it.icon ? el('span', { class: 'menu-icon', 'aria-hidden': 'true' }, icon(it.icon, 16)) : null,
    el('span', { class: 'menu-label', text: it.label }),
    it.hint ? el('span', { class: 'menu-hint', 'aria-hidden': 'true', text: it.hint }) : null);
    b.addEventListener('click', (ev) => {
      ev.preventDefault();
      closeMenu(!it.keepFocusAway);
      it.onSelect();
    });
    return b;
  });
  node.append(...buttons);
  node.addEventListener('keydown', (ev) => {
    const i = buttons.indexOf(document.activeElement);
    const prevKey = o.grid ? 'ArrowLeft' : 'ArrowUp';
    const nextKey = o.grid ? 'ArrowRight' : 'ArrowDown';
    let j = -1;
    if (ev.key === nextKey || (o.grid && ev.key === 'ArrowDown')) j = (i + 1) % buttons.length;
    else if (ev.key === prevKey || (o.grid && ev.key === 'ArrowUp')) j = (i - 1 + buttons.length) % buttons.length;
    else if (ev.key === 'Home') j = 0;
    else if (ev.key === 'End') j = buttons.length - 1;
    else if (ev.key === 'Escape') { ev.preventDefault(); ev.stopPropagation(); closeMenu(true); return; }
    else if (ev.key === 'Tab') { ev.preventDefault(); closeMenu(true); return; }
    else if (!o.grid && ev.key.length === 1 && /\S/.test(ev.key)) {
      // type-ahead: the next item starting with that letter
      const k = ev.key.toLowerCase();
      for (let n = 1; n <= buttons.length; n++) {
        const b = buttons[(i + n) % buttons.length];
        if (b.textContent.trim().toLowerCase().startsWith(k)) { j = (i + n) % buttons.length; break; }
      }
    }
    if (j >= 0) { ev.preventDefault(); buttons[j].focus(); }
  });
  document.body.append(node);
  open = { node, opener: o.opener || null, onClose: o.onClose || null };

  // position: below the opener (or at the pointer), kept inside the viewport
  const vw = document.documentElement.clientWidth, vh = document.documentElement.clientHeight;
  const w = node.offsetWidth, h = node.offsetHeight;
  let x, y;
  if (o.at) { x = o.at.x; y = o.at.y; }
  else if (o.opener) {
    const r = o.opener.getBoundingClientRect();
    x = o.align === 'end' ? r.right - w : r.left;
    y = r.bottom + 4;
    if (y + h > vh - 8 && r.top - h - 4 > 8) y = r.top - h - 4;
  } else { x = (vw - w) / 2; y = (vh - h) / 2; }
  x = Math.max(8, Math.min(x, vw - w - 8));
  y = Math.max(8, Math.min(y, vh - h - 8));
  node.style.left = `${Math.round(x)}px`;
  node.style.top = `${Math.round(y)}px`;

  const first = buttons.find((b) => b.getAttribute('aria-checked') === 'true') || buttons[0];
  if (first) first.focus({ preventScroll: true });
  else node.focus();
  setTimeout(() => {
    if (!open || open.node !== node) return;
    document.addEventListener('pointerdown', onOutside, true);
    window.addEventListener('resize', onResize);
  }, 0);
  return node;
}
