// theme.js — the colour theme: light or dark, following the system
// (prefers-color-scheme) unless the user picked one; the choice is kept in
// localStorage ("parley.theme": "light" | "dark" | "system"). The effective
// theme is <html data-theme="light|dark"> (style.css holds both palettes)
// and the color-scheme meta (form controls, scrollbars). theme-boot.js
// applies it before the first paint.

const KEY = 'parley.theme';
const PREFS = ['light', 'dark', 'system'];
const mq = window.matchMedia ? window.matchMedia('(prefers-color-scheme: dark)') : null;
let listeners = [];
let mem = null;             // the choice when localStorage cannot keep it

export function themePref() {
  let v = mem;
  try { v = localStorage.getItem(KEY) || mem; } catch { /* private mode */ }
  return PREFS.includes(v) ? v : 'system';
}

export function effectiveTheme(pref = themePref()) {
  if (pref === 'light' || pref === 'dark') return pref;
  return mq && mq.matches ? 'dark' : 'light';
}

function apply() {
  const t = effectiveTheme();
  const root = document.documentElement;
  if (root.dataset.theme !== t) root.dataset.theme = t;
  const meta = document.querySelector('meta[name="color-scheme"]');
  if (meta) meta.setAttribute('content', t);
  for (const f of listeners) f(t);
}

/** Remembers pref ("light" | "dark" | "system") and applies it. */
export function setThemePref(pref) {
  if (!PREFS.includes(pref)) return;
  mem = pref;
  try { localStorage.setItem(KEY, pref); } catch { /* private mode: this page only */ }
  apply();
}

/** Starts following the system's scheme; onChange(theme) after each change. */
export function initTheme(onChange) {
  if (onChange) listeners.push(onChange);
  if (mq) mq.addEventListener('change', apply);
  window.addEventListener('storage', (ev) => { if (ev.key === KEY) apply(); });   // another tab chose
  apply();
}
