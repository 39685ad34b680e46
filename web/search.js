// search.js — the message search dialog: words, filters (conversation,
// sender, dates, mentions of me, has attachments), results newest first with their
// highlighted snippet, paged with "More results"; a result opens its
// conversation at that message, with the history around it loaded
// (app.js jumpToMessage). The API is docs/protocol.md "Search"
// (GET /api/v1/search).
//
// A snippet is rendered as the conversation renders a body (richtext.js:
// the Markdown subset, quotes, code blocks, :shortcodes:), links shown as
// text (a result is one button). It marks matched words with U+0002 ...
// U+0003, the only markup the server adds: those become <mark> elements;
// every piece of text is a Text node (never parsed as HTML).

import { el, $, setText, fmtFull } from './dom.js';
import { renderRich, plainText, SHORTCODES } from './richtext.js';

const PAGE = 20;
const MAX_Q_BYTES = 256;   // the API's limit on q (docs/protocol.md "Search")
let h = null;
let last = null;         // the params of the shown results
let cursor = null;
let gen = 0;

/** hooks: {api, convs() -> [{id, title, ws}], lookupUser(name) -> Promise<{id}>, nameOf(uid), titleOf(convId),
 *  jump(convId, seq)} */
export function initSearch(hooks) {
  h = hooks;
  $('search-form').addEventListener('submit', (ev) => { ev.preventDefault(); runSearch(false); });
  $('search-more').addEventListener('click', () => runSearch(true));
  $('search-close').addEventListener('click', () => $('search-dialog').close());
  // Escape closes the dialog at once: in a type="search" box it would only
  // clear the words (the results of them staying) and need a second press
  $('search-q').addEventListener('keydown', (ev) => {
    if (ev.key === 'Escape' && !ev.isComposing) { ev.preventDefault(); $('search-dialog').close(); }
  });
  for (const id of ['search-conv', 'search-mentions', 'search-media', 'search-after', 'search-before']) {
    $(id).addEventListener('change', () => { if ($('search-q').value.trim()) runSearch(false); });
  }
}

export function openSearch() {
  const sel = $('search-conv');
  const prev = sel.value;
  sel.replaceChildren(el('option', { value: '', text: 'All conversations' }),
    ...h.convs().map((c) => el('option', { value: String(c.id), text: c.ws ? `${c.title} · ${c.ws}` : c.title })));
  sel.value = prev && [...sel.options].some((o) => o.value === prev) ? prev : '';
  $('search-dialog').showModal();
  $('search-q').focus();
  $('search-q').select();
}

function dayStart(v) {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(v || '');
  return m ? new Date(Number(m[1]), Number(m[2]) - 1, Number(m[3])).getTime() : null;
}

async function params() {
  const q = $('search-q').value.trim();
  if (!q) throw new Error('Type a word to search for.');
  // the server takes 256 bytes of words (UTF-8: an accented or non-Latin
  // letter is 2 to 4): said here, in words a user can act on
  if (new TextEncoder().encode(q).length > MAX_Q_BYTES) throw new Error('Search words are too long: shorten them.');
  const p = new URLSearchParams({ q, limit: String(PAGE) });
  const conv = $('search-conv').value;
  if (conv) p.set('conversation', conv);
  const who = $('search-sender').value.trim().replace(/^@/, '');
  if (who) {
    let u;
    try { u = await h.lookupUser(who); } catch (e) { throw new Error(e.message || `No user named “${who}”.`); }
    p.set('sender', String(u.id));
  }
  const after = dayStart($('search-after').value);
  const before = dayStart($('search-before').value);
  if (after != null) p.set('after', String(after));
  if (before != null) p.set('before', String(before));
  if (after != null && before != null && before <= after) throw new Error('“Before” must be a later day than “After”.');
  if ($('search-mentions').checked) p.set('mentions', '1');
  if ($('search-media').checked) p.set('has_media', '1');
  return p;
}

async function runSearch(more) {
  const state = $('search-state');
  const ul = $('search-results');
  const my = ++gen;
  let p;
  try {
    p = more && last ? new URLSearchParams(last) : await params();
  } catch (e) {
    setText(state, e.message);
    return;
  }
  if (more) { if (!cursor) return; p.set('cursor', cursor); }
  else { ul.replaceChildren(); cursor = null; }
  last = new URLSearchParams(p);
  last.delete('cursor');
  setText(state, 'Searching…');
  $('search-more').hidden = true;
  let r;
  try {
    r = await h.api.call('GET', '/api/v1/search?' + p.toString());
  } catch (e) {
    if (my !== gen) return;
    setText(state, e.status === 0 ? 'You are offline — search needs the server.'
      : e.status === 400 ? 'Search failed: these words or filters cannot be searched.'
        : `Search failed${e.status ? ` (error ${e.status})` : ''}: try again.`);
    return;
  }
  if (my !== gen) return;
  const results = (r && r.results) || [];
  cursor = r && typeof r.next_cursor === 'string' ? r.next_cursor : null;
  ul.append(...results.map(resultItem));
  const n = ul.children.length;
  setText(state, n ? `${n}${cursor ? '+' : ''} message${n === 1 ? '' : 's'} found.` : 'Nothing found.');
  $('search-more').hidden = !cursor;
}

// a shortcode, also one whose name is a match (":\u0002smile\u0003:": the
// emoji, highlighted)
const SHORTCODE = /:(\u0002?)([a-z0-9_+-]{1,32})(\u0003?):/g;
const emoji = (run) => run.replace(SHORTCODE,
  (m, open, k, close) => (Object.hasOwn(SHORTCODES, k) && !open === !close ? open + SHORTCODES[k] + close : m));

/**
 * The snippet rendered (richtext.js) with the marked words as <mark>. The
 * markers go through the renderer inside the text (a match is a word, and
 * punctuation parts words, so a marker never sits inside a Markdown mark);
 * then every Text node of the result, code included, is split at them:
 * what lies between a start and an end (across nodes too) is a <mark>, and
 * an unpaired marker is dropped.
 */
function snippetNodes(s) {
  const box = document.createElement('span');
  box.append(...renderRich(String(s || ''), (run) => [document.createTextNode(emoji(run))], { links: false }));
  const texts = [];
  const walk = document.createTreeWalker(box, NodeFilter.SHOW_TEXT);
  while (walk.nextNode()) texts.push(walk.currentNode);
  let marked = false;
  for (const t of texts) {
    if (!/[\u0002\u0003]/.test(t.data) && !marked) continue;
    const pieces = [];
    for (const part of t.data.split(/([\u0002\u0003])/)) {
      if (part === '\u0002' || part === '\u0003') marked = part === '\u0002';
      else if (part) pieces.push(marked ? el('mark', { text: part }) : document.createTextNode(part));
    }
    t.replaceWith(...pieces);
  }
  return [...box.childNodes];
}

function resultItem(m) {
  const title = h.titleOf(m.conversation);
  const who = h.nameOf(m.sender);
  const open = () => { $('search-dialog').close(); h.jump(m.conversation, m.seq); };
  return el('li', { class: 'search-result', 'data-testid': 'search-result', 'data-conv-id': m.conversation, 'data-seq': m.seq },
    el('button', { type: 'button', class: 'search-open', onclick: open,
      'aria-label': `${who} in ${title}, ${fmtFull(m.ts)}: ${plainText(String(m.snippet || m.body || '').replace(/[\u0002\u0003]/g, ''))}. Show in the conversation` },
    el('span', { class: 'search-meta' },
      el('span', { class: 'search-conv', dir: 'auto', text: title }),
      el('span', { class: 'search-who', dir: 'auto', text: who }),
      el('time', { class: 'search-time', datetime: new Date(m.ts).toISOString(), text: fmtFull(m.ts) })),
    el('span', { class: 'search-snippet', dir: 'auto', 'data-testid': 'search-snippet' }, ...snippetNodes(m.snippet || m.body)),
    attachmentsLine(m.data && m.data.attachments)));
}

/** "📎 2 attachments: a.png, b.pdf" under a result that has some. */
function attachmentsLine(atts) {
  if (!Array.isArray(atts) || !atts.length) return null;
  return el('span', { class: 'search-media', dir: 'auto', 'data-testid': 'search-attachments',
    text: `📎 ${atts.length} attachment${atts.length === 1 ? '' : 's'}: ${atts.map((a) => a.name).join(', ')}` });
}

export function searchOpen() { return $('search-dialog').open; }
