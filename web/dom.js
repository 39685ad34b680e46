// dom.js — small DOM and formatting helpers shared by the client's modules.
//
// Everything that puts user text in the page goes through textContent (`el`
// with `text`, `setText`); nothing here parses markup.

/** Creates an element: attrs may hold `class`, `text` (textContent),
 *  `on<event>` listeners and plain attributes (true = present, null/false =
 *  left out); kids are nodes or strings (appended as text). */
export function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  if (attrs) {
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === 'class') e.className = v;
      else if (k === 'text') e.textContent = v;
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : String(v));
    }
  }
  for (const k of kids) if (k != null && k !== false) e.append(k);
  return e;
}

export const $ = (id) => document.getElementById(id);

export function setAttr(e, k, v) {
  const s = v == null ? null : String(v);
  if (s == null) { if (e.hasAttribute(k)) e.removeAttribute(k); }
  else if (e.getAttribute(k) !== s) e.setAttribute(k, s);
}

export function setText(e, s) { if (e.textContent !== s) e.textContent = s; }

// A server's refusal as text for the UI: the protocol's `"title" must ...`
// names the field in words, and the sentence starts with a capital letter
// and ends with a stop (audit R: they showed word for word, lower-case,
// field names in JSON quotes, next to the client's own friendly messages).
const FIELDS = { title: 'The name', name: 'The name', username: 'The username', password: 'The password',
  body: 'The message', display_name: 'The display name' };
export function readable(msg) {
  if (!msg) return msg;
  const s = msg.replace(/^"([a-z_]+)"\s/, (m, f) => `${FIELDS[f] || 'The ' + f.replace(/_/g, ' ')} `);
  const t = s.charAt(0).toUpperCase() + s.slice(1);
  return /[.!?…]$/.test(t) ? t : t + '.';
}

/** The first character a reader sees of s: a whole grapheme (an emoji with
 *  its modifiers and joiners, a letter with its accents), never half of a
 *  surrogate pair (which showed as "T\uFFFD" for "Team \u{1F680}"). */
const graphemes = typeof Intl !== 'undefined' && Intl.Segmenter
  ? new Intl.Segmenter(undefined, { granularity: 'grapheme' }) : null;
function firstGrapheme(s) {
  if (graphemes) for (const g of graphemes.segment(s)) return g.segment;
  return Array.from(s)[0] || '';
}

export function initials(name) {
  const parts = String(name).replace(/^user #/, '#').split(/[\s._-]+/).filter(Boolean);
  const s = firstGrapheme(parts[0] || '?') + (parts[1] ? firstGrapheme(parts[1]) : '');
  return s.toUpperCase();
}

export function hue(s) {
  let h = 0;
  for (const ch of String(s)) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

export function paintAvatar(node, key, label) {
  setText(node, initials(label));
  node.dataset.hue = String(hue(key) % 12);
}

/** A user's avatar: initials of the name, the colour from the user id (so
 *  it stays when the name is not known yet, and is the same everywhere). */
export function paintUserAvatar(node, uid, name) {
  paintAvatar(node, 'u' + uid, name);
}

// Locale-aware formats (the browser's locale), built once. A time is the
// locale's own short time ("00:03" in de-DE, "12:03 AM" in en-US); the full
// form, which cannot take timeStyle with its other fields, writes the hour
// with the digits the locale's short time uses ('numeric' gave "0:03").
const SHORT_TIME = new Intl.DateTimeFormat(undefined, { timeStyle: 'short' });
const HOUR = (SHORT_TIME.formatToParts(new Date(2000, 0, 1, 1, 3)).find((p) => p.type === 'hour') || { value: '' })
  .value.length === 2 ? '2-digit' : 'numeric';
const F = {
  time: SHORT_TIME,
  weekday: new Intl.DateTimeFormat(undefined, { weekday: 'short' }),
  monthDay: new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric' }),
  day: new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric' }),
  dayYear: new Intl.DateTimeFormat(undefined, { weekday: 'long', month: 'long', day: 'numeric', year: 'numeric' }),
  full: new Intl.DateTimeFormat(undefined, { weekday: 'short', month: 'short', day: 'numeric', year: 'numeric',
    hour: HOUR, minute: '2-digit' }),
  date: new Intl.DateTimeFormat(undefined, { month: 'short', day: 'numeric', year: 'numeric' }),
};

export function fmtTime(ts) {
  return F.time.format(new Date(ts));
}

/** A list's date: the time today, "Yesterday" (as the conversation's
 *  separator says), the weekday within the week, else the date. */
export function fmtShort(ts) {
  if (!ts) return '';
  const d = new Date(ts), now = new Date();
  if (d.toDateString() === now.toDateString()) return fmtTime(ts);
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  const diff = (now - d) / 86_400_000;
  if (diff < 6) return F.weekday.format(d);
  return d.getFullYear() === now.getFullYear() ? F.monthDay.format(d) : F.date.format(d);
}

/** A date separator's text: "Today", "Yesterday", else the date (with the
 *  year when it is not this year). */
export function fmtDay(ts) {
  const d = new Date(ts), now = new Date();
  if (d.toDateString() === now.toDateString()) return 'Today';
  const y = new Date(now); y.setDate(now.getDate() - 1);
  if (d.toDateString() === y.toDateString()) return 'Yesterday';
  return (d.getFullYear() === now.getFullYear() ? F.day : F.dayYear).format(d);
}

export function fmtFull(ts) {
  return F.full.format(new Date(ts));
}

export function fmtDate(ts) {
  return F.date.format(new Date(ts));
}

export function fmtAgo(ts) {
  if (!ts) return '';
  const s = Math.max(0, (Date.now() - ts) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.floor(s / 60)} min ago`;
  if (s < 86400) return `${Math.floor(s / 3600)} h ago`;
  const d = fmtShort(ts);
  return d === 'Yesterday' ? 'yesterday' : d;      // "Last seen yesterday"
}

/** A duration in words, in the largest unit that divides it exactly
 *  (a year is 365 days): "1 day", "7 days", "1 year", "90 minutes". The
 *  CLI words it the same way (cli/format.c). */
export function fmtDuration(seconds) {
  const units = [[31_536_000, 'year'], [86_400, 'day'], [3_600, 'hour'], [60, 'minute']];
  let n = seconds, name = 'second';
  for (const [len, u] of units) {
    if (seconds > 0 && seconds % len === 0) { n = seconds / len; name = u; break; }
  }
  return `${n} ${name}${n === 1 ? '' : 's'}`;
}

/** The first n characters (code points) of s, with an ellipsis when cut. */
export function snippet(s, n = 100) {
  const cps = [...String(s || '').replace(/\s+/g, ' ').trim()];
  return cps.length > n ? cps.slice(0, n).join('') + '…' : cps.join('');
}

// ----------------------------------------------------------------- toasts ---

/** Shows a short, unobtrusive note at the bottom of the screen (a polite
 *  live region: screen readers announce it without moving focus). */
export function toast(text, kind = 'info', ms = 4000) {
  let box = $('toasts');
  if (!box) {
    box = el('div', { id: 'toasts', class: 'toasts', role: 'status', 'aria-live': 'polite', 'data-testid': 'toasts' });
    document.body.append(box);
  }
  const t = el('div', { class: 'toast toast-' + kind, 'data-testid': 'toast', 'data-kind': kind, text });
  if (kind === 'info') for (const old of box.querySelectorAll('.toast-info')) old.remove();   // the latest says it
  box.append(t);
  while (box.children.length > 3) box.firstElementChild.remove();
  setTimeout(() => { t.classList.add('leaving'); setTimeout(() => t.remove(), 250); }, ms);
  return t;
}

/** Copies text to the clipboard (the async API, else a hidden textarea). */
export async function copyText(text) {
  try {
    if (navigator.clipboard && window.isSecureContext) { await navigator.clipboard.writeText(text); return true; }
  } catch { /* fall back */ }
  const ta = el('textarea', { class: 'sr-only', readonly: true, 'aria-hidden': 'true' });
  ta.value = text;
  const prev = document.activeElement;
  document.body.append(ta);
  ta.select();
  let ok = false;
  try { ok = document.execCommand('copy'); } catch { ok = false; }
  ta.remove();
  if (prev && prev.focus) prev.focus();
  return ok;
}
