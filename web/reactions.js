// reactions.js — emoji reactions: the picker, the chips under a message
// (emoji and count; mine pressed) and applying `reaction` events.
//
// A `reaction` event carries the emoji's new count (docs/protocol.md,
// "Reactions"), so applying one is idempotent: set that count, drop the chip
// at 0, flip `me` when the sender is me. History returns the current form
// `reactions: [{emoji, count, me}]` in order of first use.

import { el, setAttr } from './dom.js';
import { openMenu } from './menu.js';
import { icon } from './icons.js';

export const QUICK = [
  ['👍', 'thumbs up'], ['❤️', 'heart'], ['😂', 'laughing'], ['🎉', 'party popper'],
  ['😮', 'surprised'], ['😢', 'sad'], ['🙏', 'thank you'], ['👀', 'eyes'],
];
const NAMES = new Map(QUICK);

export function emojiName(e) { return NAMES.get(e) || e; }

/** Applies a `reaction` event to its target message (in place). */
export function applyReaction(msg, ev, me) {
  const d = ev.data || {};
  if (!d.emoji || msg.deleted) return;
  const list = Array.isArray(msg.reactions) ? msg.reactions.slice() : [];
  const i = list.findIndex((r) => r.emoji === d.emoji);
  const r = i >= 0 ? { ...list[i] } : { emoji: d.emoji, count: 0, me: false };
  if (typeof d.count === 'number') r.count = d.count;
  else r.count = Math.max(0, r.count + (d.op === 'remove' ? -1 : 1));
  if (ev.sender === me) r.me = d.op !== 'remove';
  if (r.count <= 0) { if (i >= 0) list.splice(i, 1); }
  else if (i >= 0) list[i] = r;
  else list.push(r);
  msg.reactions = list;
}

/** Whether I have reacted with emoji on msg. */
export function hasMine(msg, emoji) {
  return !!(msg.reactions || []).find((r) => r.emoji === emoji && r.me);
}

/**
 * Renders msg's reactions into box: one toggle button per emoji, then an
 * "add reaction" button. onToggle(emoji) adds or removes mine; onAdd(opener)
 * opens the picker. Rebuilt only when the reactions change.
 */
export function renderReactions(box, msg, { onToggle, onAdd, canReact }) {
  const list = msg.deleted ? [] : (msg.reactions || []);
  const key = JSON.stringify([list, canReact]);
  if (box._key === key) return;
  box._key = key;
  box.hidden = list.length === 0;
  box.replaceChildren(...list.map((r) => {
    const label = `${emojiName(r.emoji)}: ${r.count} ${r.count === 1 ? 'reaction' : 'reactions'}` +
      (r.me ? ', including yours. Press to remove yours' : '. Press to add yours');
    return el('button', {
      type: 'button', class: 'chip' + (r.me ? ' chip-mine' : ''), 'data-testid': 'reaction',
      'data-emoji': r.emoji, 'data-count': r.count, 'data-me': String(!!r.me), 'aria-pressed': String(!!r.me),
      'aria-label': label, title: label, disabled: !canReact,
      onclick: () => onToggle(r.emoji),
    }, el('span', { class: 'chip-emoji', 'aria-hidden': 'true', text: r.emoji }),
    el('span', { class: 'chip-count', 'aria-hidden': 'true', text: String(r.count) }));
  }), canReact && list.length ? el('button', {
    type: 'button', class: 'chip chip-add', 'aria-label': 'Add a reaction', title: 'Add a reaction',
    'data-testid': 'reaction-add', onclick: (ev) => onAdd(ev.currentTarget),
  }, icon('smile', 15), el('span', { 'aria-hidden': 'true', text: '+' })) : null);
  setAttr(box, 'aria-label', list.length ? 'Reactions' : null);
}

/** Opens the emoji picker next to opener; onPick(emoji) with the choice.
 *  Emoji I already used on msg are marked (choosing one removes it). */
export function openPicker(opener, msg, onPick, at) {
  return openMenu({
    opener, at, grid: true, label: 'Choose a reaction', testid: 'reaction-picker',
    items: QUICK.map(([emoji, name]) => {
      const mine = hasMine(msg, emoji);
      return {
        label: emoji, emoji, testid: 'pick-emoji', ariaLabel: mine ? `Remove ${name}` : `React with ${name}`,
        title: name, on: mine, onSelect: () => onPick(emoji),
      };
    }),
  });
}
