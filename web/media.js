// media.js — attachments (docs/protocol.md section 8 "Media"): the
// composer's pending uploads and the attachments shown in messages.
//
// Composer side: the attach button (a hidden <input type=file multiple>),
// files dropped on the open conversation and files pasted into the composer
// become chips above the composer (an image preview from a blob: URL, name,
// size, a progress bar, cancel / remove), at most MAX_ATTACHMENTS per
// message. Each file is uploaded as soon as it is added, with XMLHttpRequest
// (upload progress; cancel aborts): `POST /api/v1/media` below
// config.resumableOver, else the resumable routes (`POST .../uploads`, then
// PATCHes of config.chunk bytes; a dropped connection asks `HEAD` where the
// upload stands and goes on from there, a few times with backoff). The
// server's refusals (413 too_large / quota, 415, ...), and an empty file
// (refused here, never uploaded), stay on the chip as an error until
// removed; a send waits until they are (composer.js). composer.js asks
// takeReady() for the finished uploads when a message is sent.
//
// Message side: renderAttachments() fills a message's `.msg-media` box from
// `data.attachments`: images as thumbnails in a box sized from
// width/height, over a canvas painted from the BlurHash placeholder until the
// thumbnail has loaded, opening a lightbox (a modal <dialog>: the full image,
// its name as alt text, Esc or the close button closes, Tab stays inside);
// audio and video with the browser's own players; anything else as a file
// card (type badge, name, size, a download link). Signed URLs expire
// (--media-url-ttl): when an element fails to load, or a download link is
// followed, after its URL's `exp`, fresh URLs are fetched once with
// `GET /api/v1/media/{id}?info=1` and put in place (and in the event, so
// later renders use them).
//
// Every name and type is set as text or attribute (never parsed as HTML).

import { el, $, setText, setAttr } from './dom.js';
import { icon } from './icons.js';

export const MAX_ATTACHMENTS = 10;
/** Tunables (tests may lower them through window.parley.mediaConfig). */
export const config = {
  resumableOver: 8 * 1024 * 1024,    // bytes: larger files use the resumable routes
  chunk: 4 * 1024 * 1024,            // bytes per PATCH
  retries: 5,                        // network failures in a row before giving up
};

let h = null;            // hooks: {api, onReadyChange()}
let pending = [];        // {key, file, name, size, type, state, loaded, media, error, xhr, url, chip}
let nextKey = 1;

/** hooks: {api, onReadyChange() (an upload finished, failed or was removed)} */
export function initMedia(hooks) {
  h = hooks;
  const input = $('attach-input');
  const btn = $('attach-btn');
  btn.replaceChildren(icon('paperclip', 20));
  btn.addEventListener('click', () => input.click());
  input.addEventListener('change', () => {
    addFiles(input.files);
    input.value = '';
    $('composer-input').focus();
  });
  // paste: files (a screenshot, a copied file) become attachments; text
  // pastes as usual
  $('composer-input').addEventListener('paste', (ev) => {
    const files = ev.clipboardData ? [...ev.clipboardData.files] : [];
    if (!files.length) return;
    ev.preventDefault();
    addFiles(files);
  });
  // drag and drop onto the open conversation
  const zone = $('conv');
  let depth = 0;
  const hasFiles = (ev) => ev.dataTransfer && [...(ev.dataTransfer.types || [])].includes('Files');
  zone.addEventListener('dragenter', (ev) => {
    if (!hasFiles(ev) || $('composer').hidden) return;
    ev.preventDefault();
    depth++;
    zone.classList.add('drop-target');
  });
  zone.addEventListener('dragover', (ev) => {
    if (!hasFiles(ev) || $('composer').hidden) return;
    ev.preventDefault();
    ev.dataTransfer.dropEffect = 'copy';
  });
  zone.addEventListener('dragleave', () => { if (--depth <= 0) { depth = 0; zone.classList.remove('drop-target'); } });
  zone.addEventListener('drop', (ev) => {
    depth = 0;
    zone.classList.remove('drop-target');
    if (!ev.dataTransfer || !ev.dataTransfer.files || !ev.dataTransfer.files.length || $('composer').hidden) return;
    ev.preventDefault();
    addFiles(ev.dataTransfer.files);
    $('composer-input').focus();
  });
}

// ------------------------------------------------------------ composer ---

/** Adds files to the composer (each starts uploading at once). */
export function addFiles(list) {
  const files = [...(list || [])];
  if (!files.length) return;
  const room = MAX_ATTACHMENTS - pending.length;
  if (files.length > room) notice(`At most ${MAX_ATTACHMENTS} attachments per message${room > 0 ? `: ${files.length - room} left out` : ''}.`);
  else notice('');
  for (const file of files.slice(0, Math.max(0, room))) {
    const p = { key: nextKey++, file, name: file.name || 'file', size: file.size, type: file.type || '',
      state: 'uploading', loaded: 0, media: null, error: null, xhr: null, url: null, chip: null, cancelled: false };
    pending.push(p);
    if (!p.size) {
      // nothing to send (the server refuses an empty upload): said on the
      // chip at once, in the client's words
      p.state = 'error';
      p.error = 'Not attached: this file is empty.';
      continue;
    }
    if (/^image\/(png|jpeg|gif|webp|avif|bmp)$/.test(p.type)) p.url = URL.createObjectURL(file);
    upload(p);
  }
  renderChips();
}

const parked = new Map();  // conversation id -> its attachments while another conversation is open

/** Another conversation opens: the attachments in the composer stay with
 *  the one they were added in (a file meant for one chat must not go to the
 *  next with its message), and the new one's come back. Uploads go on. */
export function switchAttachments(fromId, toId) {
  if (fromId != null && fromId !== toId) {
    if (pending.length) parked.set(fromId, pending); else parked.delete(fromId);
    pending = [];
  }
  if (toId != null && parked.has(toId)) { pending = parked.get(toId); parked.delete(toId); }
  notice('');
  renderChips();
}

/** Logging out: every attachment goes (uploads cancelled). */
export function resetAttachments() {
  for (const list of [pending, ...parked.values()]) for (const p of list) drop(p);
  pending = [];
  parked.clear();
  notice('');
  renderChips();
}

/** The composer's attachments: how many, and whether any is still
 *  uploading; failedNames: the names of the refused ones. */
export function status() {
  return {
    failedNames: pending.filter((p) => p.state === 'error').map((p) => p.name),
    count: pending.length,
    uploading: pending.filter((p) => p.state === 'uploading').length,
    ready: pending.filter((p) => p.state === 'done').length,
    failed: pending.filter((p) => p.state === 'error').length,
  };
}

/** The finished uploads' media objects, in the order added; clears the
 *  composer's attachments (composer.js sends none while one has failed). */
export function takeReady() {
  const out = pending.filter((p) => p.state === 'done').map((p) => p.media);
  for (const p of pending) drop(p);
  pending = [];
  notice('');
  renderChips();
  return out;
}

function drop(p) {
  if (p.state === 'uploading') { p.cancelled = true; if (p.xhr) p.xhr.abort(); }
  if (p.url) { URL.revokeObjectURL(p.url); p.url = null; }
}

function removePending(p) {
  drop(p);
  pending = pending.filter((x) => x !== p);
  renderChips();
  if (h) h.onReadyChange();
  $('composer-input').focus();
}

/** A note under the chips (too many files, "sending when the uploads
 *  finish"); '' hides it. */
export function notice(text) {
  const n = $('attach-notice');
  setText(n, text);
  n.hidden = !text;
}

export function fmtSize(n) {
  if (!(n >= 0)) return '';
  if (n < 1024) return `${n} B`;
  const u = ['KB', 'MB', 'GB', 'TB'];
  let v = n / 1024, i = 0;
  while (v >= 1024 && i < u.length - 1) { v /= 1024; i++; }
  return `${v < 10 ? v.toFixed(1) : Math.round(v)} ${u[i]}`;
}

function renderChips() {
  const ul = $('attach-list');
  ul.hidden = !pending.length;
  const keep = new Set(pending.map((p) => p.key));
  for (const li of [...ul.children]) if (!keep.has(Number(li.dataset.key))) li.remove();
  let prev = null;
  for (const p of pending) {
    if (!p.chip) p.chip = chip(p);
    updateChip(p);
    const next = prev ? prev.nextElementSibling : ul.firstElementChild;
    if (next !== p.chip) ul.insertBefore(p.chip, next);
    prev = p.chip;
  }
}

function chip(p) {
  return el('li', { class: 'attach-chip', 'data-key': p.key, 'data-testid': 'attach-chip', 'data-name': p.name },
    p.url ? el('img', { class: 'attach-thumb', src: p.url, alt: '' }) : el('span', { class: 'attach-badge', 'aria-hidden': 'true', text: badgeOf(p.name, p.type) }),
    el('span', { class: 'attach-text' },
      el('span', { class: 'attach-name', dir: 'auto', text: p.name, title: p.name }),
      el('span', { class: 'attach-sub', 'data-testid': 'attach-status' }),
      el('progress', { class: 'attach-progress', max: '100', value: '0', 'data-testid': 'attach-progress', 'aria-label': `Uploading ${p.name}` })),
    el('button', { type: 'button', class: 'btn btn-ghost btn-sm btn-icon attach-remove', 'data-testid': 'attach-remove',
      onclick: () => removePending(p) }, icon('close', 16)));
}

function updateChip(p) {
  const c = p.chip;
  setAttr(c, 'data-state', p.state);
  c.classList.toggle('error', p.state === 'error');
  const bar = c.querySelector('.attach-progress');
  bar.hidden = p.state !== 'uploading';
  const pct = p.size ? Math.floor((100 * p.loaded) / p.size) : 0;
  if (p.state === 'uploading') bar.value = pct;
  const sub = c.querySelector('.attach-sub');
  setText(sub, p.state === 'error' ? p.error : p.state === 'uploading' ? `${fmtSize(p.size)} · ${pct}%` : fmtSize(p.size));
  setAttr(sub, 'role', p.state === 'error' ? 'alert' : null);
  const rm = c.querySelector('.attach-remove');
  const label = p.state === 'uploading' ? `Cancel the upload of ${p.name}` : `Remove ${p.name}`;
  setAttr(rm, 'aria-label', label);
  setAttr(rm, 'title', p.state === 'uploading' ? 'Cancel upload' : 'Remove');
  setAttr(rm, 'data-action', p.state === 'uploading' ? 'cancel' : 'remove');
}

// -------------------------------------------------------------- upload ---

class UploadError extends Error {
  constructor(status, code, message, offset) {
    super(message || code || `HTTP ${status}`);
    this.status = status;
    this.code = code || 'http_' + status;
    this.offset = offset;
  }
}

/** What the chip says for a refused upload. */
function explain(p, e) {
  if (e.code === 'quota') return 'Not uploaded: your storage quota is full.';
  if (e.status === 413) return 'Not uploaded: the file is too large for its type.';
  if (e.status === 415) return 'Not uploaded: this type of file is not accepted.';
  if (e.code === 'digest_mismatch') return 'Not uploaded: the file changed while uploading.';
  if (e.status === 0) return 'Not uploaded: cannot reach the server.';
  return `Not uploaded${e.message ? `: ${e.message}` : ''}.`;
}

async function upload(p) {
  try {
    p.media = p.size > config.resumableOver ? await uploadResumable(p) : await uploadWhole(p);
    if (p.cancelled) return;
    p.state = 'done';
    p.loaded = p.size;
  } catch (e) {
    if (p.cancelled) return;
    p.state = 'error';
    p.error = explain(p, e);
  }
  if (p.chip) updateChip(p);
  if (h) h.onReadyChange();
}

function query(p, extra) {
  const q = new URLSearchParams(extra || {});
  q.set('name', p.name);
  if (p.type) q.set('type', p.type);
  return q.toString();
}

function uploadWhole(p) {
  return withToken((tok) => xhr(p, 'POST', '/api/v1/media?' + query(p), p.file, tok,
    p.type ? { 'Content-Type': p.type } : {}, 0));
}

async function uploadResumable(p) {
  const made = await withToken((tok) => xhr(p, 'POST', '/api/v1/media/uploads?' + query(p, { length: String(p.size) }), null, tok, {}, 0));
  const path = '/api/v1/media/uploads/' + encodeURIComponent(made.upload_id);
  let offset = 0, fails = 0;
  for (;;) {
    if (p.cancelled) throw new UploadError(0, 'cancelled');
    const end = Math.min(p.size, offset + config.chunk);
    try {
      const r = await withToken((tok) => xhr(p, 'PATCH', path, p.file.slice(offset, end), tok,
        { 'Upload-Offset': String(offset), 'Content-Type': 'application/offset+octet-stream' }, offset));
      if (r && r.id != null) return r;                        // 201: complete
      offset = end;
      fails = 0;
    } catch (e) {
      if (p.cancelled) throw e;
      if (e.code === 'offset_mismatch' && e.offset != null) { offset = e.offset; continue; }
      if (e.status !== 0 || ++fails > config.retries) throw e;
      await new Promise((r) => setTimeout(r, Math.min(500 * 2 ** fails, 8000)));
      offset = await withToken((tok) => headOffset(path, tok));   // where it stands
    }
  }
}

/** Runs fn(token); on 401 refreshes the token once and runs it again. */
async function withToken(fn) {
  const tok = await h.api.token();
  try {
    return await fn(tok);
  } catch (e) {
    if (e.status !== 401 || !(await h.api.refresh())) throw e;
    return fn(h.api.auth.access_token);
  }
}

async function headOffset(path, tok) {
  let res;
  try {
    res = await fetch(path, { method: 'HEAD', headers: { Authorization: 'Bearer ' + tok }, cache: 'no-store', credentials: 'omit' });
  } catch {
    throw new UploadError(0, 'network', 'Cannot reach the server');
  }
  if (!res.ok) throw new UploadError(res.status, res.status === 404 ? 'not_found' : null, 'The upload is gone');
  const o = Number(res.headers.get('Upload-Offset'));
  if (!Number.isSafeInteger(o) || o < 0) throw new UploadError(res.status, 'bad_response');
  return o;
}

/** One request with upload progress (base: bytes already on the server);
 *  resolves with the JSON answer (null for 204), rejects with UploadError. */
function xhr(p, method, url, body, tok, headers, base) {
  return new Promise((resolve, reject) => {
    const x = new XMLHttpRequest();
    p.xhr = x;
    x.open(method, url);
    x.setRequestHeader('Authorization', 'Bearer ' + tok);
    for (const [k, v] of Object.entries(headers)) x.setRequestHeader(k, v);
    x.upload.onprogress = (ev) => {
      if (!ev.lengthComputable) return;
      p.loaded = base + ev.loaded;
      if (p.chip) updateChip(p);
    };
    x.onerror = () => reject(new UploadError(0, 'network', 'Cannot reach the server'));
    x.onabort = () => reject(new UploadError(0, 'cancelled'));
    x.onload = () => {
      let data = null;
      try { data = x.responseText ? JSON.parse(x.responseText) : null; } catch { data = null; }
      if (x.status >= 200 && x.status < 300) { resolve(data); return; }
      const err = data && data.error;
      const off = Number(x.getResponseHeader('Upload-Offset'));
      reject(new UploadError(x.status, err && err.code, err && err.message,
        Number.isSafeInteger(off) ? off : data && Number.isSafeInteger(data.offset) ? data.offset : null));
    };
    x.send(body);
  });
}

// ------------------------------------------------------------ messages ---

/** What a message without text says in previews and notifications:
 *  "📎 Photo: a.png (+2)"; '' without attachments. */
export function attachmentsSummary(atts) {
  if (!Array.isArray(atts) || !atts.length) return '';
  const a = atts[0];
  const what = { image: 'Photo', video: 'Video', audio: 'Audio' }[a.kind] || 'File';
  return `📎 ${what}: ${a.name || ''}${atts.length > 1 ? ` (+${atts.length - 1})` : ''}`;
}

const THUMB_MAX = 280;     // px: the largest side of an inline image

/** Fills li's `.msg-media` box (created after the body) from atts (the
 *  message's data.attachments, or a pending send's media objects); removes
 *  it when there are none (or the message was deleted). */
export function renderAttachments(li, atts, deleted) {
  let box = li.querySelector('.msg-media');
  const list = !deleted && Array.isArray(atts) ? atts.filter((a) => a && a.id != null) : [];
  if (!list.length) { if (box) box.remove(); li.classList.remove('has-media'); return; }
  li.classList.add('has-media');
  const sig = list.map((a) => a.id).join(',');
  if (box && box.dataset.sig === sig) return;          // already shown (keeps loaded images)
  if (!box) {
    box = el('div', { class: 'msg-media', 'data-testid': 'message-media' });
    li.querySelector('.msg-body').after(box);
  }
  box.dataset.sig = sig;
  box.replaceChildren(...list.map(attachmentNode));
}

function attachmentNode(a) {
  if (a.kind === 'image' && a.thumb_url) return imageNode(a);
  if (a.kind === 'audio' && a.url) {
    const au = el('audio', { controls: true, preload: 'metadata', src: a.url, 'data-testid': 'media-audio', 'aria-label': a.name });
    refreshOnError(au, a, 'url');
    return el('div', { class: 'media-audio', 'data-media-id': a.id },
      el('span', { class: 'media-caption', dir: 'auto', text: `${a.name} · ${fmtSize(a.size)}` }), au);
  }
  if (a.kind === 'video' && a.url) {
    const v = el('video', { controls: true, preload: 'metadata', src: a.url, 'data-testid': 'media-video', 'aria-label': a.name,
      poster: a.thumb_url || null, playsinline: true });
    const sz = fitSize(a.width, a.height, 360);
    if (sz) { v.width = sz.w; v.height = sz.h; }
    refreshOnError(v, a, 'url');
    return el('div', { class: 'media-video', 'data-media-id': a.id }, v);
  }
  return fileCard(a);
}

function fitSize(w, h, max) {
  if (!(w > 0 && h > 0)) return null;
  const s = Math.min(1, max / w, max / h);
  return { w: Math.max(1, Math.round(w * s)), h: Math.max(1, Math.round(h * s)) };
}

function imageNode(a) {
  const sz = fitSize(a.width, a.height, THUMB_MAX) || { w: 200, h: 150 };
  const fig = el('button', { type: 'button', class: 'media-image', 'data-testid': 'media-image', 'data-media-id': a.id,
    'aria-label': `Open image ${a.name}`, onclick: () => openLightbox(a) });
  fig.style.width = sz.w + 'px';
  fig.style.aspectRatio = `${sz.w} / ${sz.h}`;
  if (a.placeholder) {
    const px = decodeBlurHash(a.placeholder, 32, 32);
    if (px) {
      const cv = el('canvas', { class: 'media-placeholder', width: '32', height: '32', 'data-testid': 'media-placeholder', 'aria-hidden': 'true' });
      const ctx = cv.getContext('2d');
      if (ctx) ctx.putImageData(new ImageData(px, 32, 32), 0, 0);
      fig.append(cv);
    }
  }
  const img = el('img', { class: 'media-thumb', alt: a.name, src: a.thumb_url, decoding: 'async', 'data-testid': 'media-thumb' });
  img.addEventListener('load', () => fig.classList.add('loaded'));
  refreshOnError(img, a, 'thumb_url');
  fig.append(img);
  return fig;
}

const BADGES = [
  [/^application\/pdf$/, 'PDF'], [/zip|compressed|x-tar|gzip|x-7z|x-rar/, 'ZIP'], [/^text\/csv$/, 'CSV'],
  [/spreadsheet|excel/, 'XLS'], [/wordprocessing|msword|opendocument\.text/, 'DOC'], [/presentation|powerpoint/, 'PPT'],
  [/^text\//, 'TXT'], [/^audio\//, 'AUD'], [/^video\//, 'VID'], [/^image\//, 'IMG'],
];

/** A short type badge (PDF, ZIP, TXT...) from the MIME type, else the
 *  name's extension. */
function badgeOf(name, mime) {
  for (const [re, b] of BADGES) if (re.test(mime || '')) return b;
  const m = /\.([A-Za-z0-9]{1,4})$/.exec(name || '');
  return m ? m[1].toUpperCase() : 'FILE';
}

function fileCard(a) {
  const link = el('a', { class: 'media-download', href: a.url || '#', download: a.name, 'data-testid': 'media-download',
    'aria-label': `Download ${a.name}, ${fmtSize(a.size)}` }, icon('download', 18));
  link.addEventListener('click', (ev) => {
    if (!expired(link.getAttribute('href'))) return;
    ev.preventDefault();                                   // fetch a fresh URL first
    freshUrls(a).then((f) => { if (f && f.url) { link.href = f.url; link.click(); } });
  });
  return el('div', { class: 'media-file', 'data-testid': 'media-file', 'data-media-id': a.id, 'data-kind': a.kind },
    el('span', { class: 'media-badge', 'aria-hidden': 'true', text: badgeOf(a.name, a.mime) }),
    el('span', { class: 'media-file-text' },
      el('span', { class: 'media-file-name', dir: 'auto', 'data-testid': 'media-file-name', text: a.name, title: a.name }),
      el('span', { class: 'media-file-size', 'data-testid': 'media-file-size', text: `${fmtSize(a.size)} · ${badgeOf(a.name, a.mime)}` })),
    link);
}

// --------------------------------------------------- signed URL expiry ---

function expired(url, slackMs = 5_000) {
  const m = /[?&]exp=(\d+)/.exec(url || '');
  return !!m && Number(m[1]) * 1000 <= Date.now() + slackMs;
}

const refreshing = new Map();     // media id -> Promise<media object | null>

/** Fresh signed URLs for an attachment (once at a time per id); updates the
 *  attachment object in place. */
function freshUrls(a) {
  if (!refreshing.has(a.id)) {
    refreshing.set(a.id, h.api.call('GET', `/api/v1/media/${encodeURIComponent(a.id)}?info=1`)
      .then((m) => {
        if (m && m.url) { a.url = m.url; if (m.thumb_url) a.thumb_url = m.thumb_url; }
        return m;
      })
      .catch(() => null)
      .finally(() => setTimeout(() => refreshing.delete(a.id), 10_000)));
  }
  return refreshing.get(a.id);
}

/** When node (img/audio/video) fails to load with an expired URL, fetches
 *  fresh URLs once and sets node's src again. */
function refreshOnError(node, a, field) {
  let tried = false;
  node.addEventListener('error', () => {
    if (tried || !expired(node.getAttribute('src'))) return;
    tried = true;
    freshUrls(a).then((m) => {
      if (!m) return;
      if (node.tagName === 'VIDEO' && m.thumb_url) node.poster = m.thumb_url;
      if (m[field]) node.src = m[field];
    });
  });
}

// ------------------------------------------------------------ lightbox ---

let box = null;
let boxOpener = null;

function openLightbox(a) {
  if (!box) {
    box = el('dialog', { class: 'lightbox', 'data-testid': 'lightbox' },
      el('div', { class: 'lightbox-bar' },
        el('span', { class: 'lightbox-name', dir: 'auto' }),
        el('a', { class: 'btn btn-ghost btn-sm lightbox-download', 'data-testid': 'lightbox-download', text: 'Download' }),
        el('button', { type: 'button', class: 'btn btn-ghost btn-sm btn-icon lightbox-close', 'data-testid': 'lightbox-close',
          'aria-label': 'Close', onclick: () => box.close() }, icon('close', 18))),
      el('img', { class: 'lightbox-img', 'data-testid': 'lightbox-img', alt: '' }));
    // a click on the backdrop (outside the picture and the bar) closes
    box.addEventListener('click', (ev) => { if (ev.target === box) box.close(); });
    // keep Tab within the dialog (showModal makes the page inert; this also
    // cycles between its own controls)
    box.addEventListener('keydown', (ev) => {
      if (ev.key !== 'Tab') return;
      const f = [...box.querySelectorAll('a[href], button')];
      if (!f.length) return;
      const i = f.indexOf(document.activeElement);
      const n = ev.shiftKey ? (i <= 0 ? f.length - 1 : i - 1) : (i < 0 || i === f.length - 1 ? 0 : i + 1);
      ev.preventDefault();
      f[n].focus();
    });
    box.addEventListener('close', () => {
      box.querySelector('.lightbox-img').removeAttribute('src');
      if (boxOpener && boxOpener.isConnected) boxOpener.focus();
      boxOpener = null;
    });
    document.body.append(box);
  }
  boxOpener = document.activeElement;
  setAttr(box, 'aria-label', a.name);
  setText(box.querySelector('.lightbox-name'), a.name);
  const img = box.querySelector('.lightbox-img');
  img.alt = a.name;
  const dl = box.querySelector('.lightbox-download');
  dl.setAttribute('download', a.name);
  const show = (u) => { img.src = u; dl.href = u; };
  if (expired(a.url)) freshUrls(a).then((m) => show((m && m.url) || a.url));
  else show(a.url);
  box.showModal();
  box.querySelector('.lightbox-close').focus();
}

// ------------------------------------------------------------ BlurHash ---

const B83 = '0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz#$%*+,-.:;=?@[]^_{|}~';

function d83(s) {
  let v = 0;
  for (const ch of s) {
    const i = B83.indexOf(ch);
    if (i < 0) return NaN;
    v = v * 83 + i;
  }
  return v;
}

const toLinear = (v) => { const x = v / 255; return x <= 0.04045 ? x / 12.92 : ((x + 0.055) / 1.055) ** 2.4; };
const toSrgb = (v) => {
  const x = Math.max(0, Math.min(1, v));
  return Math.round((x <= 0.0031308 ? x * 12.92 : 1.055 * x ** (1 / 2.4) - 0.055) * 255);
};
const signPow = (v, e) => Math.sign(v) * Math.abs(v) ** e;

/** Decodes a BlurHash (https://blurha.sh) into w×h RGBA pixels, or null
 *  when the string is not a valid BlurHash. */
export function decodeBlurHash(hash, w, h) {
  if (typeof hash !== 'string' || hash.length < 6) return null;
  const size = d83(hash[0]);
  const ny = Math.floor(size / 9) + 1, nx = (size % 9) + 1;
  if (!(size >= 0) || hash.length !== 4 + 2 * nx * ny) return null;
  const max = (d83(hash[1]) + 1) / 166;
  const dc = d83(hash.slice(2, 6));
  if (!Number.isFinite(max) || !Number.isFinite(dc)) return null;
  const colors = [[toLinear(dc >> 16), toLinear((dc >> 8) & 255), toLinear(dc & 255)]];
  for (let i = 1; i < nx * ny; i++) {
    const v = d83(hash.slice(4 + i * 2, 6 + i * 2));
    if (!Number.isFinite(v)) return null;
    colors.push([Math.floor(v / 361), Math.floor(v / 19) % 19, v % 19].map((q) => signPow((q - 9) / 9, 2) * max));
  }
  const px = new Uint8ClampedArray(w * h * 4);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let r = 0, g = 0, b = 0;
      for (let j = 0; j < ny; j++) {
        const cy = Math.cos((Math.PI * y * j) / h);
        for (let i = 0; i < nx; i++) {
          const basis = Math.cos((Math.PI * x * i) / w) * cy;
          const c = colors[i + j * nx];
          r += c[0] * basis; g += c[1] * basis; b += c[2] * basis;
        }
      }
      const o = 4 * (x + y * w);
      px[o] = toSrgb(r); px[o + 1] = toSrgb(g); px[o + 2] = toSrgb(b); px[o + 3] = 255;
    }
  }
  return px;
}
