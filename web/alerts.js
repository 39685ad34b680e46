// alerts.js — telling the user about new messages outside the page: desktop
// notifications, an optional sound, and the unread count in the favicon (the
// title's "(N)" is set by convlist.js).
//
// When: a live message from someone else notifies when the page is not in
// front of the user (hidden tab or unfocused window), or, while it is, when
// it mentions me (or replies to me) in a conversation that is not the open
// one — always within the conversation's notification level (notify.js):
// "all" anything, "mentions" only what concerns me, "none" nothing. Old
// events (a replay after a reconnect) never notify.
//
// Permission is asked at a sensible moment, never on load: after the user's
// first send (once per browser) or from the settings dialog. The sound is off
// by default (settings: "parley.sound" = "1").

import { snippet } from './dom.js';
import { plainText } from './richtext.js';
import { attachmentsSummary } from './media.js';
import { isGroupLike } from './state.js';

const SOUND_KEY = 'parley.sound';
const ASKED_KEY = 'parley.notify-asked';
const STALE_MS = 120_000;          // an event older than this is a replay: no alert

export const stats = { notifications: 0, sounds: 0 };    // for tests and debugging

export const notifSupported = () => typeof window.Notification === 'function';
export const notifPermission = () => (notifSupported() ? window.Notification.permission : 'unsupported');

function lsGet(k) { try { return localStorage.getItem(k); } catch { return null; } }
function lsSet(k, v) { try { localStorage.setItem(k, v); } catch { /* private mode */ } }

/** Asks for permission (from a user gesture); resolves with the answer. */
export async function askPermission() {
  lsSet(ASKED_KEY, '1');
  if (!notifSupported()) return 'unsupported';
  if (window.Notification.permission !== 'default') return window.Notification.permission;
  try { return await window.Notification.requestPermission(); } catch { return window.Notification.permission; }
}

/** After a send: the first time, ask (the user is engaged and the page has
 *  a gesture); never again on its own. */
export function askAfterFirstSend() {
  if (lsGet(ASKED_KEY) || notifPermission() !== 'default') return null;
  return askPermission();
}

export const soundOn = () => lsGet(SOUND_KEY) === '1';
export function setSound(on) { lsSet(SOUND_KEY, on ? '1' : '0'); }

let audio = null;
/** A short two-note chime (Web Audio: nothing fetched). */
export function playSound() {
  stats.sounds++;
  try {
    const AC = window.AudioContext || window.webkitAudioContext;
    if (!AC) return;
    if (!audio) audio = new AC();
    const t = audio.currentTime;
    for (const [f, at] of [[880, 0], [1320, 0.09]]) {
      const o = audio.createOscillator();
      const g = audio.createGain();
      o.frequency.value = f;
      g.gain.setValueAtTime(0.0001, t + at);
      g.gain.exponentialRampToValueAtTime(0.12, t + at + 0.01);
      g.gain.exponentialRampToValueAtTime(0.0001, t + at + 0.18);
      o.connect(g).connect(audio.destination);
      o.start(t + at);
      o.stop(t + at + 0.2);
    }
  } catch { /* no audio: fine */ }
}

/**
 * A live message event e from someone else arrived in conversation c.
 * o: {title (the conversation's), sender (name), concernsMe, isOpen (c is the
 * open conversation), active (the page is in front of the user), open(id)}.
 * Returns what was done: null, or {desktop, sound}.
 */
export function onIncoming(c, e, o) {
  const level = c.notify || 'all';
  if (level === 'none' || (level === 'mentions' && !o.concernsMe)) return null;
  if (e.ts && Date.now() - e.ts > STALE_MS) return null;
  if (o.active && !(o.concernsMe && !o.isOpen)) return null;
  let desktop = false;
  if (notifPermission() === 'granted') {
    const group = isGroupLike(c);
    const title = group ? `${o.sender} in ${o.title}` : o.sender;
    const body = (o.concernsMe && group ? '@ ' : '') +
      (snippet(plainText(e.body || ''), 140) || attachmentsSummary(e.data && e.data.attachments));
    try {
      const n = new window.Notification(title, { body, tag: `parley-${c.id}`, lang: '', dir: 'auto' });
      n.onclick = () => { try { window.focus(); } catch { /* ignore */ } o.open(c.id); n.close(); };
      desktop = true;
      stats.notifications++;
    } catch { /* e.g. Android Chrome needs a service worker: skip */ }
  }
  const sound = soundOn();
  if (sound) playSound();
  return { desktop, sound };
}

// ------------------------------------------------------------- favicon ---

let lastBadge = -1;

/** Draws the unread count on the favicon (a canvas-drawn PNG; 0 = the plain
 *  icon). */
export function setBadge(count) {
  const n = Math.max(0, count | 0);
  if (n === lastBadge) return;
  lastBadge = n;
  const link = document.querySelector('link[rel="icon"]');
  if (!link) return;
  link.dataset.count = String(n);
  if (!n) { link.type = 'image/svg+xml'; link.href = 'favicon.svg'; return; }
  const cv = document.createElement('canvas');
  cv.width = cv.height = 64;
  const g = cv.getContext('2d');
  if (!g) return;
  const grad = g.createLinearGradient(0, 0, 64, 64);
  grad.addColorStop(0, '#4f46e5');
  grad.addColorStop(1, '#7c3aed');
  g.fillStyle = grad;
  g.beginPath();
  g.roundRect ? g.roundRect(2, 2, 60, 60, 16) : g.rect(2, 2, 60, 60);
  g.fill();
  g.fillStyle = '#fff';
  g.font = 'bold 38px system-ui, sans-serif';
  g.textAlign = 'center';
  g.textBaseline = 'middle';
  g.fillText('P', 26, 36);
  const text = n > 99 ? '99+' : String(n);
  const r = text.length > 2 ? 22 : 19;
  g.fillStyle = '#dc2626';
  g.beginPath();
  g.arc(64 - r + 2, r - 2, r, 0, Math.PI * 2);
  g.fill();
  g.fillStyle = '#fff';
  g.font = `bold ${text.length > 2 ? 18 : text.length > 1 ? 24 : 28}px system-ui, sans-serif`;
  g.fillText(text, 64 - r + 2, r);
  link.type = 'image/png';
  link.href = cv.toDataURL('image/png');
}
