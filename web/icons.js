// icons.js — the few line icons of the interface, as inline SVG built with
// DOM calls (no markup parsing, no emoji font needed). 24×24, stroked with
// currentColor (a few parts filled, or "knocked out" in the background colour);
// always decorative (aria-hidden): the button or mark carries the label.

const NS = 'http://www.w3.org/2000/svg';

const PATHS = {
  bell: ['M6 9a6 6 0 0 1 12 0c0 6 2.5 8 2.5 8h-17S6 15 6 9z', 'M10 20.5a2.2 2.2 0 0 0 4 0'],
  'bell-off': ['M8.5 4.2A6 6 0 0 1 18 9c0 2.6.5 4.5 1.1 5.8', 'M17 17H3.5S6 15 6 9c0-.7.1-1.3.3-1.9',
    'M10 20.5a2.2 2.2 0 0 0 4 0', 'M3 3l18 18'],
  at: ['M16 12a4 4 0 1 1-8 0 4 4 0 0 1 8 0z', 'M16 8v5.5a2.5 2.5 0 0 0 5 0V12a9 9 0 1 0-3.5 7.1'],
  pin: ['M9 3h6', 'M10 3v5.5L7 12.5V15h10v-2.5l-3-4V3', 'M12 15v6'],
  trash: ['M4 7h16', 'M9.5 7V4.5h5V7', 'M6 7l1 13h10l1-13', 'M10 11v5.5', 'M14 11v5.5'],
  copy: ['M9 9h11v11H9z', 'M15 9V4H4v11h5'],
  edit: ['M4 20h4.5L19.5 9 15 4.5 4 15.5z', 'M13 6.5l4.5 4.5'],
  reply: ['M9.5 14.5L4 9l5.5-5.5', 'M4 9h10a6 6 0 0 1 6 6v4'],
  smile: ['M21 12a9 9 0 1 1-18 0 9 9 0 0 1 18 0z', 'M8 14.5s1.5 2 4 2 4-2 4-2', 'M9 9.5h.01', 'M15 9.5h.01'],
  more: ['M5 12h.01', 'M12 12h.01', 'M19 12h.01'],
  close: ['M6 6l12 12', 'M18 6L6 18'],
  'arrow-down': ['M12 5v14', 'M6 13l6 6 6-6'],
  search: ['M17 10.5a6.5 6.5 0 1 1-13 0 6.5 6.5 0 0 1 13 0z', 'M15.5 15.5L21 21'],
  settings: ['M15 12a3 3 0 1 1-6 0 3 3 0 0 1 6 0z',
    'M12 2.5v2.2M12 19.3v2.2M4.9 4.9l1.6 1.6M17.5 17.5l1.6 1.6M2.5 12h2.2M19.3 12h2.2M4.9 19.1l1.6-1.6M17.5 6.5l1.6-1.6',
    'M18.5 12a6.5 6.5 0 1 1-13 0 6.5 6.5 0 0 1 13 0z'],
  message: ['M4 5h16v11H9l-5 4z'],
  // report a message (reports.js)
  flag: ['M5 21V4', 'M5 4h12l-2.5 4.5L17 13H5'],
  // a private channel (convlist.js, convview.js, workspaces.js)
  lock: ['M5.5 11h13v9.5h-13z', 'M8.5 11V7.5a3.5 3.5 0 0 1 7 0V11'],
  // attachments (media.js)
  paperclip: ['M20.5 11.5l-8.2 8.2a5.3 5.3 0 0 1-7.5-7.5l8.6-8.6a3.5 3.5 0 0 1 5 5l-8.6 8.6a1.8 1.8 0 0 1-2.5-2.5l7.9-7.9'],
  download: ['M12 4v11', 'M7 10.5l5 5 5-5', 'M5 20h14'],
  // delivery marks: distinct shapes, not only colours (see convview.js)
  clock: ['M20 12a8 8 0 1 1-16 0 8 8 0 0 1 16 0z', 'M12 8v4.5l2.5 1.5'],
  tick: ['M5 12.5l4.5 4.5L19 7.5'],
  ticks: ['M1.5 12.5l4.5 4.5L16.5 6.5', 'M11.5 15.5L13 17 23 6.5'],
  // a filled disc with a double tick knocked out of it
  read: [{ fill: 'M12 1.5a10.5 10.5 0 1 1 0 21 10.5 10.5 0 0 1 0-21z' },
    { knock: 'M5 12.5l3 3 6.5-6.5' }, { knock: 'M11 14.5l1 1 6.5-6.5' }],
  alert: ['M20 12a8 8 0 1 1-16 0 8 8 0 0 1 16 0z', 'M12 8v4.5', 'M12 16h.01'],
  // the header's members / details button on a phone (convview.js)
  users: ['M15 19.5v-1.5a3.5 3.5 0 0 0-3.5-3.5h-5A3.5 3.5 0 0 0 3 18v1.5', 'M12.5 7.5a3.5 3.5 0 1 1-7 0 3.5 3.5 0 0 1 7 0z',
    'M21 19.5v-1.5a3.5 3.5 0 0 0-2.6-3.4', 'M15.5 4.1a3.5 3.5 0 0 1 0 6.8'],
  info: ['M21 12a9 9 0 1 1-18 0 9 9 0 0 1 18 0z', 'M12 16.5V11', 'M12 7.5h.01'],
};

/** An <svg> icon element (class "icon icon-<name>"). */
export function icon(name, size = 18) {
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', '0 0 24 24');
  svg.setAttribute('width', String(size));
  svg.setAttribute('height', String(size));
  svg.setAttribute('fill', 'none');
  svg.setAttribute('stroke', 'currentColor');
  svg.setAttribute('stroke-width', name === 'more' ? '3' : '2');
  svg.setAttribute('stroke-linecap', 'round');
  svg.setAttribute('stroke-linejoin', 'round');
  svg.setAttribute('aria-hidden', 'true');
  svg.setAttribute('focusable', 'false');
  svg.setAttribute('class', `icon icon-${name}`);
  for (const d of PATHS[name] || []) {
    const p = document.createElementNS(NS, 'path');
    if (typeof d === 'string') p.setAttribute('d', d);
    else if (d.fill) { p.setAttribute('d', d.fill); p.setAttribute('fill', 'currentColor'); p.setAttribute('stroke', 'none'); }
    else { p.setAttribute('d', d.knock); p.setAttribute('class', 'knock'); }   // stroked in the background colour (CSS)
    svg.append(p);
  }
  return svg;
}

/** Replaces node's content with the icon (when it is not already that one). */
export function setIcon(node, name, size) {
  if (node.dataset.icon === name) return;
  node.dataset.icon = name;
  node.replaceChildren(icon(name, size));
}
