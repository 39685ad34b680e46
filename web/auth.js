// auth.js — the sign-in screen: "Sign in" / "Create account" tabs (arrow
// keys switch them), the form's checks (the server's username and password
// rules) and its errors; api.js keeps the session. After a sign-in the
// app starts (app.js startApp).

import { $, readable } from './dom.js';
import { setBadge } from './alerts.js';

let h = null;

/** hooks: {api, signedIn()} */
export function initAuth(hooks) {
  h = hooks;
  $('tab-login').addEventListener('click', () => setAuthMode('login'));
  $('tab-register').addEventListener('click', () => setAuthMode('register'));
  for (const tab of [$('tab-login'), $('tab-register')]) {
    tab.addEventListener('keydown', (ev) => {
      if (ev.key === 'ArrowLeft' || ev.key === 'ArrowRight') {
        const other = tab.id === 'tab-login' ? $('tab-register') : $('tab-login');
        other.focus();
        setAuthMode(other.dataset.mode);
      }
    });
  }
  $('auth-form').addEventListener('submit', submitAuth);
}

let authMode = 'login';

function setAuthMode(mode) {
  authMode = mode;
  $('tab-login').setAttribute('aria-selected', String(mode === 'login'));
  $('tab-register').setAttribute('aria-selected', String(mode === 'register'));
  $('auth-form').setAttribute('aria-labelledby', mode === 'login' ? 'tab-login' : 'tab-register');
  $('auth-submit').textContent = mode === 'login' ? 'Sign in' : 'Create account';
  $('auth-password').setAttribute('autocomplete', mode === 'login' ? 'current-password' : 'new-password');
  $('auth-error').textContent = '';
}

async function submitAuth(ev) {
  ev.preventDefault();
  const u = $('auth-username').value.trim();
  const p = $('auth-password').value;
  const err = $('auth-error');
  err.textContent = '';
  if (!/^[A-Za-z0-9_.-]{3,32}$/.test(u) || (authMode === 'register' && /[.-]$/.test(u))) {
    err.textContent = 'Usernames are 3–32 letters, digits, _ . or -, not ending in . or -.'; $('auth-username').focus(); return;
  }
  // the server counts a password's UTF-8 bytes (8-256): so does this check,
  // and it says so (the field's maxlength counts characters)
  const bytes = new TextEncoder().encode(p).length;
  if (bytes < 8 || bytes > 256) {
    err.textContent = bytes < 8 ? 'Passwords have at least 8 bytes: 8 plain letters or digits (an accented or non-Latin letter counts 2–4).'
      : `Passwords have at most 256 bytes (an accented or non-Latin letter counts 2–4): this one has ${bytes}.`;
    $('auth-password').focus();
    return;
  }
  const btn = $('auth-submit');
  btn.disabled = true;
  try {
    if (authMode === 'login') await h.api.login(u, p);
    else await h.api.register(u, p);
    $('auth-password').value = '';
    h.signedIn();
  } catch (e) {
    if (e.status === 401) err.textContent = 'Wrong username or password.';
    else if (e.status === 409) err.textContent = 'That username is taken.';
    else if (e.status === 429) err.textContent = 'Too many attempts — wait a moment and try again.';
    else err.textContent = readable(e.message) || 'Something went wrong.';
  } finally {
    btn.disabled = false;
  }
}

export function showAuth() {
  $('app-screen').hidden = true;
  $('auth-screen').hidden = false;
  document.title = 'Parley — sign in';
  setBadge(0);
  setAuthMode(authMode);
  $('auth-username').focus();
}
