// settings.js — the settings dialog (the topbar's gear): the colour theme
// (light / dark / system, theme.js), desktop notifications (permission, asked
// only from here or after the first send: alerts.js) and the sound toggle.

import { $, setText } from './dom.js';
import { themePref, setThemePref } from './theme.js';
import { notifPermission, askPermission, soundOn, setSound, playSound } from './alerts.js';

export function initSettings() {
  const dlg = $('settings-dialog');
  for (const r of dlg.querySelectorAll('input[name="theme"]')) {
    r.addEventListener('change', () => { if (r.checked) setThemePref(r.value); });
  }
  $('notif-enable').addEventListener('click', async () => {
    await askPermission();
    paint();
  });
  $('sound-toggle').addEventListener('change', (ev) => {
    setSound(ev.target.checked);
    if (ev.target.checked) playSound();       // what it sounds like
  });
  $('settings-close').addEventListener('click', () => dlg.close());
}

function paint() {
  const pref = themePref();
  for (const r of $('settings-dialog').querySelectorAll('input[name="theme"]')) r.checked = r.value === pref;
  const perm = notifPermission();
  const text = {
    granted: 'Desktop notifications are on: new messages notify you while Parley is in the background, and mentions in other conversations.',
    denied: 'Desktop notifications are blocked for this site. Allow them in your browser’s site settings.',
    default: 'Desktop notifications are off.',
    unsupported: 'This browser cannot show desktop notifications.',
  }[perm] || '';
  setText($('notif-state'), text);
  $('notif-state').dataset.permission = perm;
  $('notif-enable').hidden = perm !== 'default';
  $('sound-toggle').checked = soundOn();
}

export function openSettings() {
  paint();
  $('settings-dialog').showModal();
  const checked = $('settings-dialog').querySelector('input[name="theme"]:checked');
  (checked || $('settings-close')).focus();
}
