// richtext.js — how a message body is shown: a small, safe Markdown subset,
// clickable links and emoji shortcodes.
//
// Owns: parsing a body into blocks (paragraph text, ``` code blocks, > quote
// blocks) and inline spans (`code`, **bold**, *italic* / _italic_,
// ~~strike~~, [text](url) links, bare http(s):// and mailto: links,
// :shortcode: emoji), and building them with DOM calls only. It does not own
// mentions (mentions.js passes a hook that renders plain text runs).
//
// Safety rules (issue 14): message text is never parsed as HTML — no
// innerHTML, no insertAdjacentHTML; every piece of the body reaches the page
// as a Text node. The only elements created are the fixed set below
// (strong, em, del, code, pre, blockquote, a, span, br is not used: line
// breaks stay in text with white-space: pre-wrap), and the only attribute
// whose value comes from the body is a link's href, set only for http:,
// https: and mailto: URLs that the URL parser accepts (javascript:, data:,
// vbscript:, relative URLs... are shown as text). Links open in a new tab
// with rel="noopener noreferrer". Nesting is bounded (MAX_DEPTH).

const MAX_DEPTH = 4;
const SPAN_MAX = 400;           // a span's closing mark is looked for this far at most
const SAFE_SCHEMES = new Set(['http:', 'https:', 'mailto:']);

/** A small table of shortcodes (the common ones of Slack / GitHub). */
export const SHORTCODES = {
  smile: '😄', smiley: '😃', grin: '😁', joy: '😂', laughing: '😆', wink: '😉', blush: '😊',
  heart_eyes: '😍', thinking: '🤔', neutral_face: '😐', confused: '😕', cry: '😢', sob: '😭',
  angry: '😠', scream: '😱', sunglasses: '😎', sweat_smile: '😅', upside_down: '🙃', rofl: '🤣',
  heart: '❤️', broken_heart: '💔', thumbsup: '👍', '+1': '👍', thumbsdown: '👎', '-1': '👎',
  clap: '👏', wave: '👋', pray: '🙏', ok_hand: '👌', muscle: '💪', raised_hands: '🙌', eyes: '👀',
  fire: '🔥', tada: '🎉', rocket: '🚀', star: '⭐', sparkles: '✨', white_check_mark: '✅',
  x: '❌', warning: '⚠️', bulb: '💡', coffee: '☕', pizza: '🍕', beer: '🍺', cake: '🍰',
  100: '💯', zap: '⚡', bug: '🐛', memo: '📝', calendar: '📅', lock: '🔒', point_up: '☝️',
};

/** Replaces known :shortcodes: in s (used for text runs and by the composer). */
export function expandShortcodes(s) {
  return String(s).replace(/:([a-z0-9_+-]{1,32}):/g, (m, k) => (Object.hasOwn(SHORTCODES, k) ? SHORTCODES[k] : m));
}

/** The URL string u as a safe link target (an absolute http(s) or mailto
 *  URL), or null. */
export function safeHref(u) {
  if (!/^(https?:\/\/|mailto:)/i.test(u) || /[\s\u0000-\u001f\u007f]/.test(u)) return null;
  let url;
  try { url = new URL(u); } catch { return null; }
  if (!SAFE_SCHEMES.has(url.protocol)) return null;
  if (url.protocol !== 'mailto:' && !url.hostname) return null;
  return url.href;
}

function link(href, kids) {
  const a = document.createElement('a');
  a.setAttribute('href', href);
  a.setAttribute('target', '_blank');
  a.setAttribute('rel', 'noopener noreferrer');
  a.setAttribute('data-testid', 'message-link');
  a.append(...kids);
  return a;
}

function elem(tag, cls, kids) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  e.append(...kids);
  return e;
}

// a bare URL: up to whitespace; trailing punctuation is not part of it
const BARE_URL = /(?:https?:\/\/|mailto:)[^\s<>"]+/iy;

function trimUrl(u) {
  let s = u;
  for (;;) {
    const last = s[s.length - 1];
    if (/[.,;:!?'"*_~]/.test(last)) { s = s.slice(0, -1); continue; }
    if (last === ')' && (s.split('(').length - 1) < (s.split(')').length - 1)) { s = s.slice(0, -1); continue; }
    break;
  }
  return s;
}

const isWordCh = (ch) => !!ch && /[\p{L}\p{N}_]/u.test(ch);

// a backslash before one of these stands for the character itself
const ESCAPABLE = /^[!-/:-@[-`{-~]$/;

/** The length of the run of s[i] at i. */
function runAt(s, i) {
  let k = i;
  while (s[k] === s[i]) k++;
  return k - i;
}

/** The first run of mark characters in s[from, lim) that can close a span
 *  (not after a space; a single * or a _ not before a letter or digit
 *  either; not escaped, not in a `code` span) and whose length ok(len)
 *  accepts: its index, or -1. */
function findClose(s, mark, from, lim, ok) {
  for (let k = from; k < lim; k++) {
    const c = s[k];
    if (c === '\\') { k++; continue; }
    if (c === '`') {
      const j = s.indexOf('`', k + 1);
      if (j > k + 1 && j < lim) { k = j; continue; }
    }
    if (c !== mark) continue;
    const n = runAt(s, k);
    const inWord = mark === '_' || (mark === '*' && n === 1);
    if (k > from && !/\s/.test(s[k - 1]) && !(inWord && isWordCh(s[k + n])) && ok(n)) return k;
    k += n - 1;
  }
  return -1;
}

/**
 * The emphasis span opened by the run of * (or a single _) at i, as
 * {tags: outer first, from, to: the inner text, end: just past the span},
 * or null. A single mark is em, a double strong, a triple both
 * (***x*** is <em><strong>); a run closes the first run that fits it:
 * *a **b** c* and **a *b* c** nest, ***a** b* is <em><strong>a</strong>
 * b</em>, **a *b*** closes both. Anything else stays text.
 */
function emphasis(s, i, lim) {
  const mark = s[i];
  const n = runAt(s, i);
  if (n > 3 || (mark === '_' && n > 1)) return null;
  if (n === 1 && isWordCh(s[i - 1])) return null;      // 2*3*4, snake_case
  const open = i + n;
  if (!s[open] || /\s/.test(s[open])) return null;
  if (n === 3) {
    const k = findClose(s, mark, open, lim, () => true);
    if (k < 0) return null;
    const m = runAt(s, k);
    if (m >= 3) return { tags: ['em', 'strong'], from: open, to: k, end: k + 3 };
    // ***a** b* : the inner ** closes first, so em holds strong; ***a* b**: strong holds em
    const single = m === 2;
    const k2 = findClose(s, mark, k + m, lim, single ? (x) => x !== 2 : (x) => x >= 2);
    if (k2 < 0) return null;
    return single ? { tags: ['em'], from: i + 1, to: k2, end: k2 + 1 } : { tags: ['strong'], from: i + 2, to: k2, end: k2 + 2 };
  }
  // a single mark closes on a run of 1, or of 3 (*a **b*** : its last);
  // a double on a run of 2, or of 3 (**a *b*** : its last two)
  const k = findClose(s, mark, open, lim, n === 1 ? (x) => x !== 2 : (x) => x >= 2);
  if (k < 0) return null;
  const m = runAt(s, k);
  const to = k + m - n;           // a longer closing run leaves its first marks inside
  return { tags: [n === 1 ? 'em' : 'strong'], from: open, to, end: k + m };
}

/**
 * Inline spans of s, as an array of nodes. text(str) renders a plain run
 * (mentions, shortcodes) and returns nodes; inLink forbids nested links.
 */
function inline(s, depth, text, inLink) {
  const out = [];
  let buf = '';
  const flush = () => { if (buf) { out.push(...text(buf)); buf = ''; } };
  let i = 0;
  let lineEnd = -1;
  while (i < s.length) {
    const ch = s[i];
    const prev = i > 0 ? s[i - 1] : '';
    // spans close on the same line, within SPAN_MAX characters (so the scan
    // stays linear-ish on hostile input: a 16 KB line of unclosed marks)
    if (lineEnd < i) { lineEnd = s.indexOf('\n', i); if (lineEnd < 0) lineEnd = s.length; }
    const lim = Math.min(lineEnd, i + SPAN_MAX);
    const before = (j) => j >= 0 && j < lim;
    // \* \_ \` ...: the character itself (as GitHub, Slack and Discord
    // read it), as plain text that no mark, mention or shortcode takes up
    if (ch === '\\' && ESCAPABLE.test(s[i + 1] || '')) {
      flush();
      out.push(document.createTextNode(s[i + 1]));
      i += 2;
      continue;
    }
    // `code`
    if (ch === '`') {
      const j = s.indexOf('`', i + 1);
      if (j > i + 1 && before(j)) {
        flush();
        out.push(elem('code', 'md-code', [document.createTextNode(s.slice(i + 1, j))]));
        i = j + 1;
        continue;
      }
    }
    if (depth < MAX_DEPTH) {
      // ~~strike~~
      if (s.startsWith('~~', i) && s[i + 2] && !/\s/.test(s[i + 2])) {
        const j = findClose(s, '~', i + 2, lim, (m) => m === 2);
        if (j > i + 2) {
          flush();
          out.push(elem('del', null, inline(s.slice(i + 2, j), depth + 1, text, inLink)));
          i = j + 2;
          continue;
        }
      }
      // *italic*, **bold**, ***both*** and their nestings; _italic_ (not
      // inside a word: snake_case stays as is)
      if ((ch === '*' || ch === '_') && prev !== ch) {
        const span = emphasis(s, i, lim);
        if (span) {
          flush();
          const kids = inline(s.slice(span.from, span.to), depth + 1, text, inLink);
          const one = (tag, k) => elem(tag, null, k);
          out.push(span.tags.length === 2 ? one(span.tags[0], [one(span.tags[1], kids)]) : one(span.tags[0], kids));
          i = span.end;
          continue;
        }
      }
    }
    if (!inLink) {
      // [text](url)
      if (ch === '[') {
        const close = s.indexOf('](', i + 1);
        const end = before(close) ? s.indexOf(')', close + 2) : -1;
        if (close > i + 1 && end > close + 2 && before(end) && !s.slice(i + 1, close).includes('[')) {
          const href = safeHref(s.slice(close + 2, end));
          if (href) {
            flush();
            out.push(link(href, depth < MAX_DEPTH ? inline(s.slice(i + 1, close), depth + 1, text, true)
              : [document.createTextNode(s.slice(i + 1, close))]));
            i = end + 1;
            continue;
          }
        }
      }
      // a bare URL
      if ((ch === 'h' || ch === 'H' || ch === 'm' || ch === 'M') && !isWordCh(prev)) {
        BARE_URL.lastIndex = i;
        const m = BARE_URL.exec(s);
        if (m) {
          const u = trimUrl(m[0]);
          const href = safeHref(u);
          if (href) {
            flush();
            out.push(link(href, [document.createTextNode(u)]));
            i += u.length;
            continue;
          }
        }
      }
    }
    buf += ch;
    i++;
  }
  flush();
  return out;
}

/** Splits body into blocks: {type: 'text' | 'code' | 'quote', text}. */
export function blocks(body) {
  const lines = String(body).split('\n');
  const out = [];
  const push = (type, text) => {
    const last = out[out.length - 1];
    if (type === 'text' && last && last.type === 'text') last.text += '\n' + text;
    else out.push({ type, text });
  };
  for (let i = 0; i < lines.length; i++) {
    const line = lines[i];
    if (/^\s*```/.test(line)) {
      // a fenced code block (the rest of the opening line is its language: dropped)
      let j = i + 1;
      while (j < lines.length && !/^\s*```\s*$/.test(lines[j])) j++;
      if (j < lines.length || j > i + 1) {
        out.push({ type: 'code', text: lines.slice(i + 1, j).join('\n') });
        i = j;
        continue;
      }
    }
    if (/^>/.test(line)) {
      const q = [];
      while (i < lines.length && /^>/.test(lines[i])) { q.push(lines[i].replace(/^> ?/, '')); i++; }
      i--;
      out.push({ type: 'quote', text: q.join('\n') });
      continue;
    }
    push('text', line);
  }
  // a line break between blocks is the block's edge, not text
  for (let k = 0; k < out.length; k++) {
    if (out[k].type !== 'text') continue;
    if (k > 0) out[k].text = out[k].text.replace(/^\n/, '');
    if (k < out.length - 1) out[k].text = out[k].text.replace(/\n$/, '');
  }
  return out.filter((b) => b.type !== 'text' || b.text !== '');
}

/**
 * The nodes of body rendered. text(str) -> [nodes] renders a plain run
 * (default: shortcodes expanded, as a Text node). links: false shows links
 * as their text (no <a>: where the body sits inside a button, as a search
 * result does).
 */
export function renderRich(body, text = (s) => [document.createTextNode(expandShortcodes(s))], { links = true } = {}) {
  const nodes = [];
  for (const b of blocks(body)) {
    if (b.type === 'code') {
      nodes.push(elem('pre', 'md-pre', [elem('code', null, [document.createTextNode(b.text)])]));
    } else if (b.type === 'quote') {
      nodes.push(elem('blockquote', 'md-quote', inline(b.text, 1, text, !links)));
    } else {
      nodes.push(...inline(b.text, 0, text, !links));
    }
  }
  return nodes;
}

const plainCache = new Map();
/** body as it reads once rendered (marks dropped, shortcodes expanded): for
 *  previews, drafts and notifications. Blocks (a quote, a code block, the
 *  text around them) and lines are parted by a space, so their words do
 *  not run together ("what you said my answer"). Cached (bounded). */
export function plainText(body) {
  const key = String(body || '');
  let v = plainCache.get(key);
  if (v === undefined) {
    v = blocks(key).map((b) => {
      if (b.type === 'code') return b.text;
      const frag = document.createDocumentFragment();
      frag.append(...inline(b.text, b.type === 'quote' ? 1 : 0, (s) => [document.createTextNode(expandShortcodes(s))], false));
      return frag.textContent;
    }).map((t) => t.replace(/\s*\n\s*/g, ' ').trim()).filter(Boolean).join(' ');
    if (plainCache.size >= 500) plainCache.delete(plainCache.keys().next().value);
    plainCache.set(key, v);
  }
  return v;
}
