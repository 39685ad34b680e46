// mentions.js — @mentions: highlighting them in message bodies (mentions of
// me stand out), whether a message concerns me, and the composer's `@`
// autocomplete of the conversation's members.
//
// The server resolves mentions (docs/protocol.md, "Mentions"): a message's
// data.mentions holds the ids of the mentioned members, data.mention_all
// "all" or "here". The body is only scanned here to find where those names
// are, with the server's rule: `@` at the start or after a character that
// cannot be part of a name, then 3–32 of [A-Za-z0-9_.-], a trailing `.` or
// `-` being punctuation.

import { el, setAttr } from './dom.js';
import { renderRich, expandShortcodes } from './richtext.js';

const NAME_CH = /[A-Za-z0-9_.-]/;
const MAX_OPTIONS = 8;

/** [{start, end, name}] of the @name tokens of body (name without the @). */
export function scanMentions(body) {
  const out = [];
  const s = String(body || '');
  for (let i = 0; i < s.length; i++) {
    if (s[i] !== '@' || (i > 0 && NAME_CH.test(s[i - 1]))) continue;
    let j = i + 1;
    while (j < s.length && NAME_CH.test(s[j])) j++;
    let end = j;
    while (end > i + 1 && (s[end - 1] === '.' || s[end - 1] === '-')) end--;
    const len = end - i - 1;
    if (len >= 3 && len <= 32) out.push({ start: i, end, name: s.slice(i + 1, end) });
    i = j - 1;
  }
  return out;
}

/** Whether message event e mentions user `me` (by name, @all/@here, or a
 *  reply to one of my messages — what counts as an unread mention). */
export function concernsMe(e, me, parentSender) {
  if (!e || e.kind !== 'message' || e.deleted || !me || e.sender === me) return false;
  const d = e.data || {};
  if (Array.isArray(d.mentions) && d.mentions.includes(me)) return true;
  if (d.mention_all) return true;
  if (d.reply_to == null) return false;
  return parentSender === me || !!(e.reply_preview && e.reply_preview.sender === me);
}

/** Whether the body itself mentions me (by name or @all/@here). */
export function mentionsMe(e, me) {
  if (!e || e.deleted || !me || e.sender === me) return false;
  const d = e.data || {};
  return !!d.mention_all || (Array.isArray(d.mentions) && d.mentions.includes(me));
}

/**
 * Renders body into node (richtext.js: the safe Markdown subset, links,
 * shortcodes), with the resolved mentions in its text runs wrapped in
 * <span class="mention"> (class "mention-me" for mentions of me). `names` is
 * a Set of lower-case usernames to highlight, `all` whether @all/@here is
 * resolved, `meName` my lower-case username, `mine` whether I wrote it.
 * Returns whether anything was highlighted. Only DOM calls and Text nodes
 * are used: nothing of the body is parsed as HTML.
 */
export function renderBody(node, body, { names, all, meName, mine }) {
  const key = JSON.stringify([body, [...names], all, meName, mine]);
  if (node._bodyKey === key) return !!node._hasMention;
  node._bodyKey = key;
  let any = false;
  const text = (run) => {
    const toks = scanMentions(run).filter((t) => {
      const n = t.name.toLowerCase();
      return names.has(n) || (all && (n === 'all' || n === 'here'));
    });
    if (!toks.length) return [document.createTextNode(expandShortcodes(run))];
    any = true;
    const out = [];
    let at = 0;
    for (const t of toks) {
      if (t.start > at) out.push(document.createTextNode(expandShortcodes(run.slice(at, t.start))));
      const n = t.name.toLowerCase();
      const me = !mine && (n === meName || n === 'all' || n === 'here');
      out.push(el('span', { class: 'mention' + (me ? ' mention-me' : ''), 'data-testid': me ? 'mention-me' : 'mention',
        text: run.slice(t.start, t.end) }));
      at = t.end;
    }
    if (at < run.length) out.push(document.createTextNode(expandShortcodes(run.slice(at))));
    return out;
  };
  node.replaceChildren(...renderRich(body, text));
  node._hasMention = any;
  return any;
}

// ----------------------------------------------------------- autocomplete ---

/**
 * The composer's `@` autocomplete: a listbox above the textarea (the
 * textarea is its combobox). candidates() returns [{id, username, hint?}]
 * of the open conversation (without me); handleKey(ev) must be called
 * first from the textarea's keydown and returns true when it used the key.
 */
export function attachAutocomplete(input, list, candidates) {
  let opts = [], active = 0, token = null;

  setAttr(input, 'role', 'combobox');
  setAttr(input, 'aria-autocomplete', 'list');
  setAttr(input, 'aria-controls', list.id);
  setAttr(input, 'aria-expanded', 'false');

  function close() {
    if (!opts.length && list.hidden) return;
    opts = [];
    token = null;
    list.hidden = true;
    list.replaceChildren();
    setAttr(input, 'aria-expanded', 'false');
    setAttr(input, 'aria-activedescendant', null);
  }

  /** The @prefix the caret is in, or null. */
  function currentToken() {
    if (input.selectionStart !== input.selectionEnd) return null;
    const upto = input.value.slice(0, input.selectionStart);
    const m = /(^|[^A-Za-z0-9_.-])@([A-Za-z0-9_.-]{0,32})$/.exec(upto);
    if (!m) return null;
    return { start: upto.length - m[2].length - 1, end: upto.length, prefix: m[2].toLowerCase() };
  }

  function paint() {
    list.replaceChildren(...opts.map((o, i) => el('li', {
      id: `mention-opt-${i}`, role: 'option', class: 'mention-opt', 'aria-selected': String(i === active),
      'data-testid': 'mention-option', 'data-username': o.username,
      onpointerdown: (ev) => { ev.preventDefault(); active = i; accept(); },
    }, el('span', { class: 'mention-opt-name', text: '@' + o.username }),
    o.hint ? el('span', { class: 'mention-opt-hint', text: o.hint }) : null)));
    setAttr(input, 'aria-activedescendant', opts.length ? `mention-opt-${active}` : null);
    const cur = list.children[active];
    if (cur) cur.scrollIntoView({ block: 'nearest' });
  }

  function update() {
    token = currentToken();
    if (!token) { close(); return; }
    const all = candidates();
    const p = token.prefix;
    opts = all.filter((c) => c.username.toLowerCase().startsWith(p))
      .sort((a, b) => (a.special ? 1 : 0) - (b.special ? 1 : 0) || a.username.localeCompare(b.username))
      .slice(0, MAX_OPTIONS);
    if (!opts.length) { close(); return; }
    active = Math.min(active, opts.length - 1);
    list.hidden = false;
    setAttr(input, 'aria-expanded', 'true');
    paint();
  }

  function accept() {
    const o = opts[active];
    if (!o || !token) { close(); return; }
    const v = input.value;
    const after = v.slice(token.end);
    const ins = '@' + o.username + (after.startsWith(' ') ? '' : ' ');
    input.value = v.slice(0, token.start) + ins + after;
    const caret = token.start + ins.length + (after.startsWith(' ') ? 1 : 0);
    input.setSelectionRange(caret, caret);
    close();
    input.dispatchEvent(new Event('input', { bubbles: true }));
  }

  function handleKey(ev) {
    if (list.hidden || !opts.length || ev.isComposing) return false;
    if (ev.key === 'ArrowDown' || ev.key === 'ArrowUp') {
      active = (active + (ev.key === 'ArrowDown' ? 1 : opts.length - 1)) % opts.length;
      paint();
    } else if (ev.key === 'Enter' || ev.key === 'Tab') {
      accept();
    } else if (ev.key === 'Escape') {
      close();
    } else return false;
    ev.preventDefault();
    ev.stopPropagation();
    return true;
  }

  input.addEventListener('input', update);
  input.addEventListener('click', update);
  input.addEventListener('blur', () => setTimeout(() => { if (document.activeElement !== input) close(); }, 100));
  list.hidden = true;
  return { handleKey, close, update };
}
