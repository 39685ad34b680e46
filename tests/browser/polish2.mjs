// polish2.mjs — audit q2: ten things a user of Slack or WhatsApp expects
// of the web client, each checked the way the audit found it wrong:
// - a code block with a long line scrolls inside its bubble: the bubble
//   stays inside the message column (both sides; 1180 px and 390 px);
// - code in my own bubble is readable in light mode (contrast ≥ 4.5:1);
// - at 390 px the members dialog's rows fit: "Remove" and "Make admin"
//   inside the dialog, no sideways scroll in the list;
// - removing a member asks first (Cancel removes nobody);
// - search words over 256 bytes are refused in the client's words, before
//   any request (never the server's `"q" is too long`);
// - an empty file is refused on its chip in the client's words, and a send
//   neither drops the chip nor the refusal silently;
// - saving an edit with no text says a message can't be empty (and offers
//   to delete it); Cancel keeps the message;
// - the sign-up form's hint gives the password's upper limit, and a
//   400-byte password is refused by the form itself, in its own words;
// - the list's preview of a deleted last message is the same live and
//   after a reload;
// - a message from yesterday says "Yesterday" in the list as in the
//   conversation (the page's clock moved a day on).
// And audit q3:
// - a preview (and a draft, and a notification's text) keeps a space
//   between a quote or a code block and the text after it;
// - the preview after an edit (of the last message, or of an older one)
//   reads the same live and after a reload: the latest message as it is;
// - two tabs of one account: a bell level chosen in one is followed by
//   the other at once.
// And audit q4, on a 375 px phone:
// - a search result in the conversation just left (back to the list)
//   shows that conversation, at the message (the page itself not
//   scrolled), and marks it read;
// - a group's and a DM's header keep their name and member/online count
//   whole (not cut by an ellipsis);
// - search snippets are rendered as the conversation renders them
//   (Markdown, quotes, code blocks, :shortcodes:), their matches still
//   highlighted, with no element or attribute from the text and no link
//   inside the result's button.
// POLISH2_SOFT=1 runs every section even after a failure (to see each fail
// against an old client).
//
// usage: node polish2.mjs http://127.0.0.1:PORT

import {
  run, signedIn, sections, person, startDm, openConv, send, waitBodies, check, log, createGroup, waitOnline, waitFor,
  CheckError, convItem, openDetails, closeDetails, BASE, shot,
} from './lib.mjs';

const steps = sections(process.env.POLISH2_SOFT === '1');
const { section, failed } = steps;

/** Where a message's bubble and its code block sit, against the message
 *  list's visible box. */
function codeGeometry(p, text) {
  return p.page.locator('[data-testid="message"]', { hasText: text }).first().evaluate((li) => {
    const r = (e) => { const b = e.getBoundingClientRect(); return { left: Math.round(b.left), right: Math.round(b.right), width: Math.round(b.width) }; };
    const pre = li.querySelector('pre');
    const col = document.getElementById('messages');
    return {
      bubble: r(li.querySelector('.bubble')), msg: r(li), col: r(col),
      preScroll: pre.scrollWidth, preClient: pre.clientWidth, colScroll: col.scrollWidth, colClient: col.clientWidth,
    };
  });
}

function checkCodeFits(who, g) {
  const desc = `${who}: ${JSON.stringify(g)}`;
  check(g.bubble.left >= g.col.left - 1 && g.bubble.right <= g.col.right + 1, `the bubble stays inside the message column (${desc})`);
  check(g.bubble.width <= g.msg.width + 1, `the bubble is no wider than its message (${desc})`);
  check(g.preScroll > g.preClient, `the code block scrolls inside the bubble (${desc})`);
  check(g.colScroll <= g.colClient + 1, `the message column does not scroll sideways (${desc})`);
}

/** The contrast of the text of `sel` in the last message with `text`
 *  against what is painted behind it (backgrounds composited up to the
 *  first opaque one). */
function contrastOf(p, text, sel) {
  return p.page.locator('[data-testid="message"]', { hasText: text }).last().locator(sel).first().evaluate((node) => {
    const parse = (s) => { const m = s.match(/[\d.]+/g).map(Number); return { r: m[0], g: m[1], b: m[2], a: m.length > 3 ? m[3] : 1 }; };
    const layers = [];
    for (let e = node; e; e = e.parentElement) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c.a > 0) layers.push(c);
      if (c.a >= 1) break;
    }
    let bg = { r: 255, g: 255, b: 255 };
    for (const c of layers.reverse()) bg = { r: c.r * c.a + bg.r * (1 - c.a), g: c.g * c.a + bg.g * (1 - c.a), b: c.b * c.a + bg.b * (1 - c.a) };
    const fgc = parse(getComputedStyle(node).color);
    const fg = { r: fgc.r * fgc.a + bg.r * (1 - fgc.a), g: fgc.g * fgc.a + bg.g * (1 - fgc.a), b: fgc.b * fgc.a + bg.b * (1 - fgc.a) };
    const lum = (c) => {
      const f = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
      return 0.2126 * f(c.r) + 0.7152 * f(c.g) + 0.0722 * f(c.b);
    };
    const [l1, l2] = [lum(fg), lum(bg)].sort((a, b) => b - a);
    return { ratio: (l1 + 0.05) / (l2 + 0.05), fg: getComputedStyle(node).color, bg };
  });
}

await run('web client polish (audit q2)', async () => {
  const [alice, bob, carol] = await signedIn('alice', 'bob', 'carol');
  await carol.ctx.close();
  steps.pages = [alice.page, bob.page];
  const dm = await startDm(alice, 'bob');
  await openConv(bob, dm);
  const sent = [];

  // --- 1 and 2: a long code block; code in my own bubble in light mode
  const line = 'const x = 1; '.repeat(40).trim();
  await section('long code blocks', async () => {
    await send(alice, '```\n' + line + '\n```');
    sent.push(line);
    await waitBodies(bob, sent);
    await waitBodies(alice, sent);
    checkCodeFits('bob, 1180 px', await codeGeometry(bob, 'const x = 1;'));
    checkCodeFits('alice, 1180 px', await codeGeometry(alice, 'const x = 1;'));
    await alice.page.setViewportSize({ width: 390, height: 844 });
    await alice.page.waitForTimeout(200);
    checkCodeFits('alice, 390 px', await codeGeometry(alice, 'const x = 1;'));
    await shot(alice, 'polish2-code-390');
    await alice.page.setViewportSize({ width: 1180, height: 760 });
  });
  await section('code in my own bubble', async () => {
    await send(alice, '```\nconst answer = 42;\n```');
    sent.push('const answer = 42;');
    await waitBodies(alice, sent);
    const own = await contrastOf(alice, 'const answer = 42;', 'pre code');
    check(own.ratio >= 4.5, `code in my own bubble is readable in light mode: ${JSON.stringify(own)}`);
    const theirs = await contrastOf(bob, 'const answer = 42;', 'pre code');
    check(theirs.ratio >= 4.5, `code in their bubble is readable: ${JSON.stringify(theirs)}`);
  });

  // --- 3 and 4: the members dialog at 390 px; removing asks first
  const group = await createGroup(alice, 'Crew', ['bob', 'carol']);
  await section('members dialog at 390 px', async () => {
    await alice.page.setViewportSize({ width: 390, height: 844 });
    await alice.page.waitForTimeout(200);
    await openDetails(alice);
    const g = await alice.page.getByTestId('members-dialog').evaluate((dlg) => {
      const d = dlg.getBoundingClientRect();
      const list = dlg.querySelector('[data-testid="member-list"]');
      const out = { dialog: [Math.round(d.left), Math.round(d.right)], listScroll: list.scrollWidth, listClient: list.clientWidth, parts: [] };
      for (const sel of ['[data-testid="remove-member"]', '[data-testid="member-role"]', '.role', '[data-testid="member-name"]']) {
        for (const e of dlg.querySelectorAll(sel)) {
          const b = e.getBoundingClientRect();
          out.parts.push({ sel, text: e.textContent, left: Math.round(b.left), right: Math.round(b.right) });
        }
      }
      return out;
    });
    await shot(alice, 'polish2-members-390');
    check(g.parts.filter((x) => x.sel.includes('remove')).length === 2, `two Remove buttons: ${JSON.stringify(g)}`);
    check(g.listScroll <= g.listClient + 1, `the member list does not scroll sideways: ${JSON.stringify(g)}`);
    for (const x of g.parts) {
      check(x.left >= g.dialog[0] && x.right <= g.dialog[1], `"${x.text}" is inside the dialog at 390 px: ${JSON.stringify(x)} in ${JSON.stringify(g.dialog)}`);
    }
    await closeDetails(alice);
    await alice.page.setViewportSize({ width: 1180, height: 760 });
  });

  await section('removing a member asks first', async () => {
    await openDetails(alice);
    const carolRow = alice.page.locator('[data-testid="member"]', { hasText: 'carol' });
    await carolRow.getByTestId('remove-member').click();
    const confirm = alice.page.getByTestId('confirm-dialog');
    await waitFor(async () => await confirm.isVisible() || (await carolRow.count()) === 0, 'a confirmation or the removal');
    check(await confirm.isVisible(), 'removing carol asks first');
    check((await confirm.textContent()).includes('carol'), `the confirmation names her: ${await confirm.textContent()}`);
    await alice.page.getByTestId('confirm-cancel').click();
    await confirm.waitFor({ state: 'hidden' });
    await alice.page.waitForTimeout(300);
    check(await carolRow.count() === 1, 'Cancel: carol is still a member');
    check(await alice.page.getByTestId('members-dialog').isVisible(), 'Cancel: back in the members dialog');
    await carolRow.getByTestId('remove-member').click();
    await confirm.waitFor({ state: 'visible' });
    await alice.page.getByTestId('confirm-delete').click();
    await carolRow.waitFor({ state: 'detached' });
    check(await alice.page.locator('[data-testid="member"]', { hasText: 'bob' }).count() === 1, 'bob is still a member');
    await closeDetails(alice);
  });

  // --- 5: search words over 256 bytes
  await section('long search words', async () => {
    const searches = [];
    const onReq = (r) => { if (r.url().includes('/api/v1/search')) searches.push(r.url()); };
    alice.page.on('request', onReq);
    await alice.page.getByTestId('search-button').click();
    await alice.page.getByTestId('search-dialog').waitFor({ state: 'visible' });
    await alice.page.getByTestId('search-q').fill('ü'.repeat(150));
    await alice.page.getByTestId('search-q').press('Enter');
    const state = alice.page.getByTestId('search-state');
    await waitFor(async () => { const t = await state.textContent(); return t && !t.startsWith('Searching') && t; }, 'the search answers');
    const said = await state.textContent();
    alice.page.off('request', onReq);
    await alice.page.getByTestId('search-q').press('Escape');
    check(/too long/i.test(said), `over-long search words are refused: ${JSON.stringify(said)}`);
    check(!/"q"|bytes/.test(said), `in the client's own words, not the server's: ${JSON.stringify(said)}`);
    check(searches.length === 0, `nothing was asked of the server: ${JSON.stringify(searches)}`);
  });

  // --- 6: an empty file
  await section('an empty file', async () => {
    await openConv(alice, dm);
    await alice.page.getByTestId('attach-input').setInputFiles([
      { name: 'empty.txt', mimeType: 'text/plain', buffer: Buffer.alloc(0) },
      { name: 'n1.txt', mimeType: 'text/plain', buffer: Buffer.from('one\n') },
    ]);
    const emptyChip = alice.page.locator('[data-testid="attach-chip"][data-name="empty.txt"]');
    const okChip = alice.page.locator('[data-testid="attach-chip"][data-name="n1.txt"]');
    await waitFor(async () => (await okChip.getAttribute('data-state')) === 'done' && (await emptyChip.getAttribute('data-state')) === 'error',
      'n1.txt uploaded, empty.txt refused');
    const why = await emptyChip.getByTestId('attach-status').textContent();
    check(/empty/i.test(why) && !/body/.test(why), `the chip says the file is empty, in the client's words: ${JSON.stringify(why)}`);
    await send(alice, 'with files');
    await alice.page.waitForTimeout(1500);
    const notice = await alice.page.getByTestId('attach-notice').textContent();
    check(await emptyChip.count() === 1 || /empty\.txt|not attached|not uploaded|left out/i.test(notice),
      `the refused file neither vanished silently at send: chip gone, notice ${JSON.stringify(notice)}`);
    if (await emptyChip.count()) await emptyChip.getByTestId('attach-remove').click();
    if (await alice.page.getByTestId('composer-input').inputValue()) await alice.page.getByTestId('composer-input').press('Enter');
    sent.push('with files');
    await waitBodies(bob, sent);
    const names = await bob.page.locator('[data-testid="message"]').last().getByTestId('media-file-name').allTextContents();
    check(JSON.stringify(names) === '["n1.txt"]', `bob gets n1.txt alone: ${JSON.stringify(names)}`);
  });
  await alice.page.locator('[data-testid="attach-chip"] [data-testid="attach-remove"]').first().click({ timeout: 500 }).catch(() => {});

  // --- 7: an edit saved with no text
  await section('an empty edit', async () => {
    await openConv(alice, dm);
    await send(alice, 'keep me');
    sent.push('keep me');
    await waitBodies(alice, sent);
    const box = alice.page.getByTestId('composer-input');
    await box.press('ArrowUp');
    await alice.page.getByTestId('compose-context').waitFor({ state: 'visible' });
    await box.fill('   ');
    await alice.page.getByTestId('composer-send').click();
    const confirm = alice.page.getByTestId('confirm-dialog');
    const toasts = alice.page.getByTestId('toasts');
    let said = '';
    try {
      await waitFor(async () => {
        if (await confirm.isVisible()) said = await confirm.textContent();
        else said = (await toasts.textContent()) || await box.evaluate((e) => e.validationMessage);
        return /empty/i.test(said);
      }, 'the client says a message cannot be empty', 3_000);
    } catch (e) {
      throw new CheckError(`saving an empty edit is not silent: ${JSON.stringify(said)}`);
    }
    if (await confirm.isVisible()) {
      check(/delete/i.test(await alice.page.getByTestId('confirm-delete').textContent()), 'it offers to delete the message');
      await alice.page.getByTestId('confirm-cancel').click();
      await confirm.waitFor({ state: 'hidden' });
    }
    check(await alice.page.getByTestId('compose-context').isVisible(), 'Cancel: still editing');
    await box.press('Escape');
    await waitBodies(bob, sent);
  });

  // --- 9: the preview of a deleted last message, live and after a reload
  await section('a deleted last message in the list', async () => {
    await openConv(bob, group);
    const last = alice.page.locator('[data-testid="message"]', { hasText: 'keep me' });
    await last.hover();
    await alice.page.getByTestId('composer-input').focus();
    await alice.page.getByTestId('composer-input').press('ArrowUp');
    await alice.page.getByTestId('compose-context').waitFor({ state: 'visible' });
    await alice.page.getByTestId('composer-input').fill('');
    await alice.page.getByTestId('composer-send').click();
    const confirm = alice.page.getByTestId('confirm-dialog');
    if (await confirm.isVisible().catch(() => false) || await confirm.waitFor({ state: 'visible', timeout: 1500 }).then(() => true, () => false)) {
      await alice.page.getByTestId('confirm-delete').click();
    } else {
      // the old client: delete from the message's menu
      await alice.page.keyboard.press('Escape');
      await last.hover();
      await last.getByTestId('action-more').click();
      await alice.page.getByTestId('menu-delete').click();
      await alice.page.getByTestId('confirm-delete').click();
    }
    await alice.page.locator('[data-testid="message"][data-deleted]').last().waitFor({ state: 'attached' });
    const preview = bob.page.locator(`[data-testid="conv-item"][data-conv-id="${dm}"] [data-testid="conv-preview"]`);
    const live = await waitFor(async () => { const t = await preview.textContent(); return /delete/i.test(t) && t; }, 'bob\'s list says the message was deleted');
    await bob.page.reload({ waitUntil: 'domcontentloaded' });
    await waitOnline(bob);
    await waitFor(async () => /delete/i.test(await preview.textContent()), 'bob\'s list after the reload');
    const after = await preview.textContent();
    check(after === live, `the same words live and after a reload: ${JSON.stringify(live)} then ${JSON.stringify(after)}`);
  });

  // --- q3 2: blocks in previews, drafts and notifications
  const dmPreview = bob.page.locator(`[data-testid="conv-item"][data-conv-id="${dm}"] [data-testid="conv-preview"]`);
  const groupPreview = bob.page.locator(`[data-testid="conv-item"][data-conv-id="${group}"] [data-testid="conv-preview"]`);
  await section('quotes and code blocks in previews', async () => {
    await openConv(bob, group);
    await openConv(alice, dm);
    for (const [body, want] of [['> what you said\nmy answer', 'what you said my answer'],
      ['```\nmake test\n```\nthen push', 'make test then push'], ['**bold**\n*italic*', 'bold italic']]) {
      await send(alice, body);
      await waitFor(async () => (await dmPreview.textContent()) === want, `bob's preview of ${JSON.stringify(body)} is ${JSON.stringify(want)}`);
    }
    // a draft left in the group
    await bob.page.getByTestId('composer-input').fill('> draft quote\ndraft answer');
    await openConv(bob, dm);
    await waitFor(async () => (await groupPreview.textContent()) === 'Draft: draft quote draft answer',
      'bob\'s draft reads "Draft: draft quote draft answer"');
    await openConv(bob, group);
    await bob.page.getByTestId('composer-input').fill('');
    // a notification's text is made by the same function (alerts.js)
    const plain = await bob.page.evaluate(async () => (await import('/richtext.js')).plainText('> quoted\n```\ncode\n```\nafter'));
    check(plain === 'quoted code after', `a notification's text keeps the blocks apart: ${JSON.stringify(plain)}`);
  });

  // --- q3 3: an edit's preview, live and after a reload
  // The reload as on a new device: without the page's saved cursors, so
  // nothing is replayed and the list knows only the latest event (the edit)
  const freshReload = async () => {
    await bob.page.waitForTimeout(500);          // the cursors' save has run
    await bob.page.evaluate(() => { for (const k of Object.keys(localStorage)) if (k.startsWith('parley.cursors.')) localStorage.removeItem(k); });
    await bob.page.reload({ waitUntil: 'domcontentloaded' });
    await waitOnline(bob);
  };
  await section('an edited message in the list', async () => {
    await openConv(bob, group);
    await openConv(alice, dm);
    const box = alice.page.getByTestId('composer-input');
    await send(alice, 'lunch at 12?');
    await waitFor(async () => (await dmPreview.textContent()) === 'lunch at 12?', 'bob\'s preview: lunch at 12?');
    await alice.page.locator('[data-testid="message"]', { hasText: 'lunch at 12?' }).waitFor({ state: 'visible' });
    await box.press('ArrowUp');
    await alice.page.getByTestId('compose-context').waitFor({ state: 'visible' });
    await box.fill('lunch at 1?');
    await box.press('Enter');
    await waitFor(async () => (await dmPreview.textContent()) === 'lunch at 1?', 'bob\'s preview follows the edit live');
    await freshReload();
    let got = '';
    try {
      await waitFor(async () => (got = await dmPreview.textContent()) === 'lunch at 1?', 'after the reload', 4_000);
    } catch { /* said below */ }
    check(got === 'lunch at 1?', `the edited last message, live and after a reload: "lunch at 1?" then ${JSON.stringify(got)}`);
    // an older message edited: the list still shows the latest one
    await send(alice, 'msg B');
    await waitFor(async () => (await dmPreview.textContent()) === 'msg B', 'bob\'s preview: msg B');
    const older = alice.page.locator('[data-testid="message"]', { hasText: 'lunch at 1?' });
    await older.hover();
    await older.getByTestId('action-more').click();
    await alice.page.getByTestId('menu-edit').click();
    await alice.page.getByTestId('compose-context').waitFor({ state: 'visible' });
    await box.fill('lunch at one?');
    await box.press('Enter');
    await alice.page.locator('[data-testid="message"]', { hasText: 'lunch at one?' }).waitFor({ state: 'visible' });
    await bob.page.waitForTimeout(500);
    const live = await dmPreview.textContent();
    await freshReload();
    try {
      await waitFor(async () => (got = await dmPreview.textContent()) === live, 'after the reload', 4_000);
    } catch { /* said below */ }
    check(live === 'msg B' && got === live, `an older message edited: live ${JSON.stringify(live)}, after a reload ${JSON.stringify(got)}`);
  });

  // --- q3 8: two tabs of one account follow each other's bell
  await section('two tabs follow a mute', async () => {
    await openConv(bob, dm);
    const tab2 = await bob.ctx.newPage();
    await tab2.goto(BASE + '/', { waitUntil: 'domcontentloaded' });
    const bob2 = { name: 'bob (tab 2)', page: tab2, ctx: bob.ctx };
    await waitOnline(bob2);
    const level2 = () => convItem(bob2, dm).getAttribute('data-notify');
    await waitFor(async () => (await level2()) === 'all', 'tab 2: the DM notifies of all');
    // bob goes back to his first tab to choose (the new tab had come to the
    // front: in a background tab each click waited ~2 s for animation frames)
    await bob.page.bringToFront();
    for (const level of ['none', 'mentions', 'all']) {
      await bob.page.getByTestId('notify-button').click();
      await bob.page.getByTestId('notify-menu').waitFor({ state: 'visible' });
      await bob.page.getByTestId('notify-' + level).click();
      await waitFor(async () => (await bob.page.getByTestId('notify-button').getAttribute('data-level')) === level, `tab 1: ${level}`);
      let got = '';
      try {
        await waitFor(async () => (got = await level2()) === level, `tab 2 follows: ${level}`, 3_000);
      } catch { /* said below */ }
      check(got === level, `tab 2 follows tab 1's "${level}" without a reload: ${JSON.stringify(got)}`);
    }
    await tab2.close();
  });

  // --- audit q4: a phone (375 px), search and the conversation's header
  /** Searches for q in p's search dialog until n results show. */
  const searchFor = async (p, q, n) => {
    if (!(await p.page.getByTestId('search-dialog').isVisible())) {
      await p.page.getByTestId('search-button').click();
      await p.page.getByTestId('search-dialog').waitFor({ state: 'visible' });
    }
    await p.page.getByTestId('search-q').fill(q);
    await waitFor(async () => {
      await p.page.getByTestId('search-submit').click();
      await p.page.waitForTimeout(150);
      return (await p.page.getByTestId('search-result').count()) === n;
    }, `${p.name}: the search for "${q}" finds ${n}`);
  };
  /** A 375 px phone showing the list. */
  const phoneList = async (p) => {
    await p.page.setViewportSize({ width: 375, height: 740 });
    await p.page.waitForTimeout(100);
    if (await p.page.getByTestId('back').isVisible()) await p.page.getByTestId('back').click();
    await p.page.locator('#layout[data-view="list"]').waitFor({ state: 'attached' });
  };
  /** Whether the header's title and subtitle show whole (not cut by an
   *  ellipsis), its parts on screen, and the page without sideways scroll. */
  const headerFit = (p) => p.page.evaluate(() => {
    const cut = (e) => ({ text: e.textContent, scroll: e.scrollWidth, client: e.clientWidth, cut: e.scrollWidth > e.clientWidth });
    const out = { title: cut(document.getElementById('conv-title')), sub: cut(document.getElementById('conv-sub')), off: [],
      pageScroll: document.documentElement.scrollWidth, pageClient: document.documentElement.clientWidth };
    for (const e of document.querySelectorAll('.conv-head > *, #ws-link')) {
      const b = e.getBoundingClientRect();
      if (b.width && (b.left < 0 || b.right > document.documentElement.clientWidth)) out.off.push(e.id || e.className);
    }
    return out;
  });
  await section('q4: a search result in the conversation just left (375 px)', async () => {
    await openConv(alice, dm);
    await phoneList(bob);
    await convItem(bob, dm).click();
    await bob.page.getByTestId('conversation').waitFor({ state: 'visible' });
    await bob.page.getByTestId('back').click();
    await convItem(bob, dm).waitFor({ state: 'visible' });
    await send(alice, 'the okapi came back');
    await waitFor(async () => (await convItem(bob, dm).getAttribute('data-unread')) === '1', 'bob, on the list: the DM has 1 unread');
    await searchFor(bob, 'okapi', 1);
    const seq = Number(await bob.page.getByTestId('search-result').first().getAttribute('data-seq'));
    await bob.page.locator('[data-testid="search-result"] button').first().click();
    await bob.page.getByTestId('search-dialog').waitFor({ state: 'hidden' });
    let got = null;
    try {
      await waitFor(async () => (got = await bob.page.evaluate((seq) => {
        const a = document.activeElement, box = document.getElementById('messages').getBoundingClientRect();
        const r = a && a.getBoundingClientRect();
        return { view: document.getElementById('layout').dataset.view, shown: !!document.getElementById('conv').offsetParent,
          focused: !!a && a.dataset.seq === String(seq), inView: !!r && r.height > 0 && r.top >= box.top - 1 && r.bottom <= box.bottom + 1,
          pageY: window.scrollY };
      }, seq)).view === 'conv' && got.shown && got.focused && got.inView, 'the result shows', 4_000);
    } catch { /* said below */ }
    await shot(bob, 'polish2-q4-search-same-conv-375');
    check(got && got.view === 'conv' && got.shown, `375 px: a result in the conversation just left shows that conversation: ${JSON.stringify(got)}`);
    check(got.focused && got.inView, `the found message is in view and focused: ${JSON.stringify(got)}`);
    check(got.pageY === 0, `the jump scrolls the messages, not the page (the top bar stays): ${JSON.stringify(got)}`);
    await waitFor(async () => (await convItem(bob, dm).getAttribute('data-unread')) === '0', 'what it shows is read: the DM has no unread');
  });
  await section('q4: the header fits at 375 px', async () => {
    await phoneList(bob);
    for (const [id, title] of [[group, 'Crew'], [dm, 'alice']]) {
      await convItem(bob, id).click();
      await waitFor(async () => (await bob.page.getByTestId('conv-title').textContent()) === title && /\S/.test(await bob.page.getByTestId('conv-sub').textContent()),
        `bob, 375 px: ${title}'s header`);
      await bob.page.waitForTimeout(100);
      const fit = await headerFit(bob);
      if (id === group) await shot(bob, 'polish2-q4-header-375');
      check(!fit.title.cut && !fit.sub.cut, `375 px: ${title}'s name and count are not cut: ${JSON.stringify(fit)}`);
      check(!fit.off.length && fit.pageScroll <= fit.pageClient, `375 px: ${title}'s header is on screen: ${JSON.stringify(fit)}`);
      await bob.page.getByTestId('back').click();
    }
    await bob.page.setViewportSize({ width: 1180, height: 760 });
  });
  await section('q4: search snippets are rendered as messages are', async () => {
    await openConv(alice, dm);
    await send(alice, '**bold tapir** and *it tapir* `tapir code` ~~tapir~~ :smile: https://tapir.example/x');
    await send(alice, '> quoted tapir\n```\n<script>tapir()</script>\n```\nafter <b>the tapir</b>');
    await searchFor(bob, 'tapir', 2);
    await shot(bob, 'polish2-q4-search-rich');
    const snips = await bob.page.$$eval('[data-testid="search-result"]', (lis) => lis.map((li) => {
      const s = li.querySelector('[data-testid="search-snippet"]');
      const attrs = [];
      for (const e of s.querySelectorAll('*')) for (const a of e.attributes) if (a.name !== 'class') attrs.push(`${e.tagName}.${a.name}`);
      const q = (sel) => [...s.querySelectorAll(sel)].map((e) => e.textContent);
      return { text: s.textContent, tags: [...new Set([...s.querySelectorAll('*')].map((e) => e.tagName))].sort(), attrs,
        marks: q('mark'), strong: q('strong'), em: q('em'), code: q('code'), del: q('del'), quote: q('blockquote'), pre: q('pre'),
        label: li.querySelector('button').getAttribute('aria-label') };
    }));
    const [blocks, spans] = snips;
    const desc = JSON.stringify(snips);
    check(spans && spans.strong.includes('bold tapir') && spans.em.includes('it tapir') && spans.code.includes('tapir code') && spans.del.includes('tapir'),
      `bold, italic, code and strike are rendered: ${desc}`);
    check(!/\*\*|~~|`|:smile:/.test(spans.text) && spans.text.includes('😄'), `no Markdown marks, the shortcode as its emoji: ${desc}`);
    check(blocks && blocks.quote.some((t) => t.includes('quoted tapir')) && blocks.pre.some((t) => t.includes('<script>tapir()</script>')),
      `the quote and the code block are rendered: ${desc}`);
    check(!/^>|```/.test(blocks.text) && blocks.text.includes('<b>the tapir</b>'), `no block marks; HTML stays text: ${desc}`);
    for (const x of snips) {
      check(x.marks.length >= 1 && x.marks.every((m) => m.toLowerCase() === 'tapir'), `the matches are highlighted: ${desc}`);
      check(x.tags.every((t) => ['MARK', 'STRONG', 'EM', 'DEL', 'CODE', 'PRE', 'BLOCKQUOTE', 'SPAN'].includes(t)) && !x.attrs.length,
        `only the renderer's elements, no link inside the result's button, no attribute from the text: ${desc}`);
      check(!/\*\*|```|:smile:|[\u0002\u0003]/.test(x.label), `the result's label reads as the snippet shows: ${desc}`);
    }
    await bob.page.getByTestId('search-q').press('Escape');
    await bob.page.getByTestId('search-dialog').waitFor({ state: 'hidden' });
  });

  // --- 8: the password's limits on the sign-up form
  await section('password limits', async () => {
    const dave = await person('dave');
    const reqs = [];
    dave.page.on('request', (r) => { if (r.url().includes('/api/v1/auth/')) reqs.push(r.url()); });
    await dave.page.getByTestId('auth-screen').waitFor({ state: 'visible' });
    await dave.page.getByTestId('tab-register').click();
    const hint = await dave.page.locator('#auth-hint').textContent();
    check(/256/.test(hint), `the hint gives the password's upper limit: ${JSON.stringify(hint)}`);
    await dave.page.getByTestId('auth-username').fill('dave');
    await dave.page.getByTestId('auth-password').fill('é'.repeat(200));
    await dave.page.getByTestId('auth-submit').click();
    const err = dave.page.getByTestId('auth-error');
    await waitFor(async () => (await err.textContent()) || (await dave.page.getByTestId('app-screen').isVisible()), 'the form answers');
    const said = await err.textContent();
    check(/256/.test(said) && said !== 'Password must be 8-256 bytes.', `a 400-byte password is refused in the form's words: ${JSON.stringify(said)}`);
    check(reqs.length === 0, `the form refused it itself: ${JSON.stringify(reqs)}`);
    await dave.ctx.close();
  });

  // --- 10: "Yesterday" in the list as in the conversation
  await section('yesterday', async () => {
    await bob.page.clock.setSystemTime(new Date(Date.now() + 86_400_000));
    await bob.page.reload({ waitUntil: 'domcontentloaded' });
    await waitOnline(bob);
    const when = convItem(bob, dm).locator('.conv-time');
    await waitFor(async () => (await when.textContent()) !== '', 'the list shows a date');
    const listSays = await when.textContent();
    await openConv(bob, dm);
    await bob.page.locator('#msg-list .day').first().waitFor({ state: 'attached' });
    const days = await bob.page.locator('#msg-list .day').allTextContents();
    check(days.includes('Yesterday'), `the conversation says "Yesterday": ${JSON.stringify(days)}`);
    check(listSays === 'Yesterday', `the list says "Yesterday" too: ${JSON.stringify(listSays)}`);
  });

  check(failed.length === 0, `${failed.length} section(s) failed:\n  ${failed.join('\n  ')}`);
}, 120_000);
