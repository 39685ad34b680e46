// seen.js — what of the open conversation has actually been on screen.
//
// Read receipts follow what the user could have read: an item counts as seen
// only while the page is visible AND focused and the item is (mostly) inside
// the message pane. An IntersectionObserver on the pane tells us which items
// are near the viewport; their geometry is checked again when we decide, so a
// stale observation (a scroll done meanwhile) never counts as seen.

let io = null;
let root = null;
const near = new Set();          // items the observer reports as intersecting
let changed = () => {};

/** Is the page in front of the user (visible tab, focused window)? */
export function pageActive() {
  return document.visibilityState === 'visible' && document.hasFocus();
}

/** box: the scrolling message pane; onChange(): called when what is on
 *  screen may have changed (after the observer reported). */
export function initSeen(box, onChange) {
  root = box;
  changed = onChange;
  if (!window.IntersectionObserver) return;
  const thresholds = [];
  for (let i = 0; i <= 10; i++) thresholds.push(i / 10);
  io = new IntersectionObserver((entries) => {
    for (const e of entries) {
      if (e.isIntersecting) near.add(e.target);
      else near.delete(e.target);
    }
    changed();
  }, { root: box, threshold: thresholds });
}

/** Starts watching an item (an <li> with data-seq). */
export function watch(li) {
  if (io && !li._watched) { li._watched = true; io.observe(li); }
}

export function unwatch(li) {
  if (io && li._watched) { li._watched = false; io.unobserve(li); }
  near.delete(li);
}

/** Forgets every item (the pane was emptied for another conversation). */
export function resetSeen() {
  if (io) { for (const li of near) li._watched = false; io.disconnect(); io = null; initSeen(root, changed); }
  near.clear();
}

/** Whether li is on screen now: at least half of it, or (a tall item) at
 *  least half of the pane's height, inside the pane. */
function onScreen(li, box) {
  if (!li.isConnected) return false;
  const r = li.getBoundingClientRect();
  if (r.height === 0) return false;
  const top = Math.max(r.top, box.top), bottom = Math.min(r.bottom, box.bottom);
  const shown = bottom - top;
  return shown > 0 && (shown >= r.height * 0.5 - 0.5 || shown >= (box.bottom - box.top) * 0.5);
}

/** The highest seq of the items on screen now (0 if none), whatever the
 *  page's state; the caller decides whether that counts as seen. */
export function highestOnScreen() {
  if (!root) return 0;
  const box = root.getBoundingClientRect();
  let best = 0;
  const cands = io ? near : root.querySelectorAll('li[data-seq]');
  for (const li of cands) {
    const seq = Number(li.dataset.seq);
    if (seq > best && onScreen(li, box)) best = seq;
  }
  return best;
}

/** The highest seq shown at or above the pane's bottom edge (by geometry;
 *  for the "new messages" count). */
export function lastInView(list) {
  if (!root) return 0;
  const bottom = root.getBoundingClientRect().bottom;
  for (let li = list.lastElementChild; li; li = li.previousElementSibling) {
    if (!li.dataset.seq) continue;
    if (li.getBoundingClientRect().top < bottom) return Number(li.dataset.seq);
  }
  return 0;
}
