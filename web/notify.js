// notify.js — per-conversation notification levels and the list's badges.
//
// Levels (docs/protocol.md, "Notification preferences"): "all" (default),
// "mentions" (only mentions and replies to me), "none" (muted). Counts are
// always kept; the level decides what the list shows: the unread badge for
// "all", only the @ badge (unread mentions) for "mentions", nothing for
// "none". The level is set with PUT /api/v1/conversations/{id}/notify.

import { openMenu } from './menu.js';

export const LEVELS = [
  { level: 'all', label: 'All messages', short: 'All', icon: 'bell' },
  { level: 'mentions', label: 'Mentions and replies only', short: 'Mentions', icon: 'at' },
  { level: 'none', label: 'Nothing (mute)', short: 'Muted', icon: 'bell-off' },
];

export const levelInfo = (level) => LEVELS.find((l) => l.level === level) || LEVELS[0];

/** What the list shows for a conversation with `unread` unread messages and
 *  `mentions` unread mentions at `level`: {count (the number badge, 0 =
 *  none), at (the @ badge shown), attention (counts toward the title)}. */
export function badgesOf(level, unread, mentions) {
  if (level === 'none') return { count: 0, at: false, attention: 0 };
  if (level === 'mentions') return { count: mentions, at: mentions > 0, attention: mentions };
  return { count: unread, at: mentions > 0, attention: unread };
}

/** Opens the level menu for conversation c; setLevel(level) does the rest. */
export function openNotifyMenu(opener, c, setLevel) {
  const cur = c.notify || 'all';
  return openMenu({
    opener, label: 'Notifications for this conversation', testid: 'notify-menu', align: 'end',
    items: LEVELS.map((l) => ({
      label: l.label, icon: l.icon, checked: l.level === cur, testid: 'notify-' + l.level,
      onSelect: () => { if (l.level !== cur) setLevel(l.level); },
    })),
  });
}
