// theme-boot.js — applies the remembered colour theme before the first paint
// (a classic script in <head>, so a dark page does not flash white while the
// modules load). theme.js owns the theme afterwards; the two share the
// localStorage key "parley.theme" ("light" | "dark" | "system", default
// "system").
(function () {
  var pref = 'system';
  try { pref = localStorage.getItem('parley.theme') || 'system'; } catch (e) { /* private mode */ }
  var dark = pref === 'dark' || (pref !== 'light' && window.matchMedia &&
    window.matchMedia('(prefers-color-scheme: dark)').matches);
  document.documentElement.setAttribute('data-theme', dark ? 'dark' : 'light');
}());
