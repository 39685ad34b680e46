// actions.mjs — message actions between two browsers (alice and bob), each
// seeing the other's change live: a reply (hover toolbar, quoted parent,
// @ autocomplete, my mention standing out), reactions (picker, chips with
// counts, toggling), an edit (menu -> composer; "edited" mark; the reply's
// quote follows), a pin, a delete with its confirmation (tombstone), an
// error shown as a toast; after a reload history shows the current form.
// Then a group: an admin deletes a member's message; notification levels
// (mentions only: only the @ badge; muted: nothing) drive the list's badges.
// The server runs with --large-group 1, so the group is "large": after alice
// was offline it is not replayed (a `mention` frame and `synced` with
// online_only instead) and her client fetches what she missed; a member's
// @all there is refused (shown on the message and as a toast).
//
// usage: node actions.mjs http://127.0.0.1:PORT   (server with --large-group 1)

import {
  run, signedIn, startDm, createGroup, convItem, openConv, send, waitBodies,
  waitFor, check, shot, log, messages, waitOnline, connState, BASE,
} from './lib.mjs';

/** The message item whose body contains text. */
const msg = (p, text) => p.page.locator('[data-testid="message"]',
  { has: p.page.locator('[data-testid="message-body"]', { hasText: text }) });

/** {emoji: {count, me}} of a message's reaction chips. */
async function chips(p, text) {
  return msg(p, text).locator('[data-testid="reaction"]').evaluateAll((els) => Object.fromEntries(
    els.map((e) => [e.dataset.emoji, { count: Number(e.dataset.count), me: e.getAttribute('aria-pressed') === 'true' }])));
}

async function waitChips(p, text, want, desc) {
  let got;
  await waitFor(async () => {
    got = await chips(p, text);
    return JSON.stringify(got) === JSON.stringify(want);
  }, `${p.name}: ${desc} (want ${JSON.stringify(want)}, got ${JSON.stringify(got)})`);
}

/** Opens a message's menu through its hover toolbar. */
async function openMenuOf(p, text) {
  const li = msg(p, text);
  await li.hover();
  await li.getByTestId('action-more').click();
  await p.page.getByTestId('message-menu').waitFor({ state: 'visible' });
}

async function menuItems(p) {
  return p.page.getByTestId('message-menu').locator('[role="menuitem"]').evaluateAll((els) => els.map((e) => e.dataset.testid));
}

async function setLevel(p, level) {
  await p.page.getByTestId('notify-button').click();
  await p.page.getByTestId('notify-menu').waitFor({ state: 'visible' });
  await p.page.getByTestId('notify-' + level).click();
  await waitFor(async () => (await p.page.getByTestId('notify-button').getAttribute('data-level')) === level,
    `${p.name}: notification level ${level}`);
}

const badges = (p, convId) => convItem(p, convId).evaluate((b) => ({
  unread: Number(b.dataset.unread), mentions: Number(b.dataset.mentions), notify: b.dataset.notify,
  badge: b.querySelector('[data-testid="unread"]').hidden ? null : b.querySelector('[data-testid="unread"]').textContent,
  at: b.querySelector('[data-testid="mention-badge"]').hidden ? null : b.querySelector('[data-testid="mention-badge"]').textContent,
  muted: !b.querySelector('[data-testid="muted-icon"]').hidden,
}));

await run('message actions: reply, react, edit, pin, delete, mentions, notification levels', async () => {
  // what alice's client receives on its WebSocket (to see the large group's frames)
  const aliceFrames = [];
  const [alice, bob] = await signedIn(['alice', {
    setup: (page) => page.on('websocket', (ws) => ws.on('framereceived', (f) => aliceFrames.push(String(f.payload)))),
  }], 'bob');
  await alice.ctx.grantPermissions(['clipboard-read', 'clipboard-write'], { origin: BASE });

  const dm = await startDm(alice, 'bob');
  const Q = 'Shall we ship on Friday?';
  await send(alice, Q);
  await convItem(bob, dm).waitFor({ state: 'visible' });
  await openConv(bob, dm);
  await waitBodies(bob, [Q]);

  // ---- reply (hover toolbar) with @ autocomplete --------------------------
  await msg(bob, Q).hover();
  await msg(bob, Q).getByTestId('action-reply').click();
  const ctxBar = bob.page.getByTestId('compose-context');
  await ctxBar.waitFor({ state: 'visible' });
  check((await ctxBar.getAttribute('data-mode')) === 'reply', 'bob: the composer is in reply mode');
  check((await bob.page.getByTestId('compose-context-title').textContent()) === 'Replying to alice', 'bob: "Replying to alice"');
  const box = bob.page.getByTestId('composer-input');
  await box.pressSequentially('Friday works for me @al');
  const opt = bob.page.locator('[data-testid="mention-option"][data-username="alice"]');
  await opt.waitFor({ state: 'visible' });
  check((await box.getAttribute('aria-expanded')) === 'true', 'bob: the composer (combobox) says the @ list is open');
  await shot(bob, '15-actions-mention-autocomplete');
  await box.press('Enter');                                  // takes the suggestion, does not send
  check((await box.inputValue()) === 'Friday works for me @alice ', `bob: the mention completed (${await box.inputValue()})`);
  await box.pressSequentially('see you then');
  await box.press('Enter');
  const R = 'Friday works for me @alice see you then';
  for (const p of [alice, bob]) {
    await waitBodies(p, [Q, R]);
    await waitFor(async () => (await msg(p, R).getByTestId('reply-quote').textContent()).includes(Q),
      `${p.name}: the reply quotes its parent`);
  }
  await ctxBar.waitFor({ state: 'hidden' });
  const replyData = await alice.page.evaluate((t) => {
    const c = window.parley.state.convs.get(window.parley.state.openId);
    const e = c.events.find((x) => x.body === t);
    return { data: e.data, rp: e.reply_preview };
  }, R);
  const qSeq = (await messages(alice)).find((m) => m.body === Q).seq;
  check(replyData.data && replyData.data.reply_to === qSeq, `the reply carries reply_to ${qSeq}: ${JSON.stringify(replyData)}`);
  check(replyData.rp && replyData.rp.seq === qSeq && replyData.rp.body === Q, `the reply carries reply_preview: ${JSON.stringify(replyData)}`);
  check(replyData.data.mentions && replyData.data.mentions.includes(alice.id), `the server resolved @alice: ${JSON.stringify(replyData)}`);
  // my mention stands out (alice), bob's own view shows a plain mention
  await waitFor(async () => (await msg(alice, R).getAttribute('data-mentions-me')) === 'true', 'alice: the reply mentions her');
  check((await msg(alice, R).getByTestId('mention-me').textContent()) === '@alice', 'alice: "@alice" highlighted as her mention');
  check((await msg(bob, R).getByTestId('mention').textContent()) === '@alice', 'bob: "@alice" highlighted');
  check(await msg(bob, R).getByTestId('mention-me').count() === 0, 'bob: not his mention');
  // the quote takes alice to the parent
  await msg(alice, R).getByTestId('reply-quote').click();
  await waitFor(async () => alice.page.evaluate((t) => {
    const a = document.activeElement;
    return a && a.matches('li.msg') && a.querySelector('[data-testid="message-body"]').textContent === t;
  }, Q), 'alice: clicking the quote focuses the parent message');
  await shot(alice, '16-actions-reply-mention');

  // alice replies to bob's reply (through the context menu) — later deleted
  await openMenuOf(alice, R);
  const aliceSees = await menuItems(alice);
  check(!aliceSees.includes('menu-edit') && !aliceSees.includes('menu-delete'),
    `alice: no edit or delete on bob's message in a DM (${aliceSees})`);
  await alice.page.getByTestId('menu-reply').click();
  await alice.page.getByTestId('compose-context').waitFor({ state: 'visible' });
  const A2 = 'Great, Friday it is.';
  await send(alice, A2);
  for (const p of [alice, bob]) await waitBodies(p, [Q, R, A2]);
  await waitFor(async () => (await msg(bob, A2).getByTestId('reply-quote').textContent()).includes('Friday works'),
    'bob: alice\'s answer quotes his reply');

  // ---- reactions -------------------------------------------------------------
  await msg(alice, R).hover();
  await msg(alice, R).getByTestId('action-react').click();
  await alice.page.getByTestId('reaction-picker').waitFor({ state: 'visible' });
  await alice.page.locator('[data-testid="reaction-picker"] [data-emoji="👍"]').click();
  await waitChips(alice, R, { '👍': { count: 1, me: true } }, 'her 👍 shows');
  await waitChips(bob, R, { '👍': { count: 1, me: false } }, 'alice\'s 👍 shows live');
  // bob adds his through the chip
  await msg(bob, R).locator('[data-testid="reaction"][data-emoji="👍"]').click();
  await waitChips(bob, R, { '👍': { count: 2, me: true } }, 'his 👍 joins');
  await waitChips(alice, R, { '👍': { count: 2, me: true } }, 'two 👍');
  // bob reacts 🎉 to alice's question through a right click
  await msg(bob, Q).locator('.bubble').click({ button: 'right' });
  await bob.page.getByTestId('message-menu').waitFor({ state: 'visible' });
  await bob.page.getByTestId('menu-react').click();
  await bob.page.getByTestId('reaction-picker').waitFor({ state: 'visible' });
  await bob.page.locator('[data-testid="reaction-picker"] [data-emoji="🎉"]').click();
  await waitChips(alice, Q, { '🎉': { count: 1, me: false } }, 'bob\'s 🎉 shows live');
  await waitChips(bob, Q, { '🎉': { count: 1, me: true } }, 'his 🎉 shows');
  // alice takes her 👍 back (the chip toggles)
  await msg(alice, R).locator('[data-testid="reaction"][data-emoji="👍"]').click();
  await waitChips(alice, R, { '👍': { count: 1, me: false } }, 'her 👍 removed');
  await waitChips(bob, R, { '👍': { count: 1, me: true } }, 'one 👍 left');
  await shot(bob, '17-actions-reactions');

  // ---- edit (menu -> composer) ---------------------------------------------
  await openMenuOf(alice, Q);
  check((await menuItems(alice)).includes('menu-edit'), 'alice: her message can be edited');
  await shot(alice, '18-actions-menu');
  await alice.page.getByTestId('menu-edit').click();
  await waitFor(async () => (await alice.page.getByTestId('compose-context').getAttribute('data-mode')) === 'edit',
    'alice: the composer is in edit mode');
  const abox = alice.page.getByTestId('composer-input');
  check((await abox.inputValue()) === Q, 'alice: the composer holds the text to edit');
  const Q2 = 'Shall we ship on Monday instead?';
  await abox.fill(Q2);
  await abox.press('Enter');
  for (const p of [alice, bob]) {
    await waitBodies(p, [Q2, R, A2]);
    await msg(p, Q2).getByTestId('edited').waitFor({ state: 'visible' });
    // the reply's quote follows the edit
    await waitFor(async () => (await msg(p, R).getByTestId('reply-quote').textContent()).includes('Monday instead'),
      `${p.name}: the quote shows the edited parent`);
  }
  check(await alice.page.getByTestId('compose-context').isHidden(), 'alice: edit mode ended');
  // copy text (menu)
  await openMenuOf(alice, Q2);
  await alice.page.getByTestId('menu-copy').click();
  await waitFor(async () => (await alice.page.getByTestId('toast').allTextContents()).includes('Copied to the clipboard.'),
    'alice: "copied" toast');
  check(await alice.page.evaluate(() => navigator.clipboard.readText()) === Q2, 'alice: the clipboard holds the text');
  // ArrowUp in the empty composer edits my last message; Escape cancels
  await bob.page.getByTestId('composer-input').focus();
  await bob.page.getByTestId('composer-input').press('ArrowUp');
  await waitFor(async () => (await bob.page.getByTestId('compose-context').getAttribute('data-mode')) === 'edit',
    'bob: ArrowUp edits his last message');
  check((await bob.page.getByTestId('composer-input').inputValue()) === R, 'bob: his last message in the composer');
  await bob.page.getByTestId('composer-input').press('Escape');
  await bob.page.getByTestId('compose-context').waitFor({ state: 'hidden' });
  check((await bob.page.getByTestId('composer-input').inputValue()) === '', 'bob: Escape left edit mode, composer empty');
  // keyboard: a focused message opens its menu with Enter; Escape closes it
  await msg(bob, Q2).focus();
  await bob.page.keyboard.press('Enter');
  await bob.page.getByTestId('message-menu').waitFor({ state: 'visible' });
  await bob.page.keyboard.press('ArrowDown');
  await bob.page.keyboard.press('Escape');
  await bob.page.getByTestId('message-menu').waitFor({ state: 'detached' });
  check(await msg(bob, Q2).evaluate((e) => e === document.activeElement), 'bob: focus back on the message');

  // ---- pin ---------------------------------------------------------------------
  await openMenuOf(bob, Q2);
  await bob.page.getByTestId('menu-pin').click();
  for (const p of [alice, bob]) {
    await msg(p, Q2).getByTestId('pinned-mark').waitFor({ state: 'visible' });
    await waitFor(async () => (await p.page.locator('[data-testid="system-event"][data-kind="pin"]').textContent() || '')
      .includes('bob pinned “Shall we ship on Monday'), `${p.name}: "bob pinned …" line`);
  }
  await alice.page.getByTestId('pins-button').click();
  await waitFor(async () => (await alice.page.getByTestId('pin-item').count()) === 1, 'alice: one pinned message listed');
  check((await alice.page.getByTestId('pin-item').textContent()).includes('Monday instead'), 'alice: the pin is the edited question');
  await alice.page.getByTestId('pins-close').click();

  // ---- delete (with confirmation) ---------------------------------------
  // alice has bob's reply's menu open when bob deletes it; her pin then fails
  await openMenuOf(alice, R);
  await openMenuOf(bob, R);
  await bob.page.getByTestId('menu-delete').click();
  await bob.page.getByTestId('confirm-dialog').waitFor({ state: 'visible' });
  await shot(bob, '19-actions-confirm-delete');
  await bob.page.getByTestId('confirm-cancel').click();      // first: cancel keeps it
  await bob.page.getByTestId('confirm-dialog').waitFor({ state: 'hidden' });
  check(await msg(bob, R).count() === 1, 'bob: cancel kept the message');
  await openMenuOf(bob, R);
  await bob.page.getByTestId('menu-delete').click();
  await bob.page.getByTestId('confirm-delete').click();
  for (const p of [alice, bob]) {
    await waitBodies(p, [Q2, 'This message was deleted', A2]);
    const li = p.page.locator('[data-testid="message"][data-deleted="true"]');
    check(await li.count() === 1, `${p.name}: one tombstone`);
    check(await li.locator('[data-testid="reaction"]').count() === 0, `${p.name}: the tombstone has no reactions`);
    await waitFor(async () => (await msg(p, A2).getByTestId('reply-quote').textContent()).includes('deleted'),
      `${p.name}: the answer's quote says the parent was deleted`);
  }
  // alice's menu (opened before the delete) still offers Pin: the server
  // answers `gone`, shown as a toast
  check(await alice.page.getByTestId('message-menu').isVisible(), 'alice: her menu is still open');
  await alice.page.getByTestId('menu-pin').click();
  await waitFor(async () => (await alice.page.getByTestId('toast').allTextContents())
    .some((t) => t === 'Could not pin the message: it was deleted.'), 'alice: the error is shown as a toast');
  await shot(alice, '20-actions-after-delete');

  // ---- history returns the current form ---------------------------------
  await alice.page.reload({ waitUntil: 'domcontentloaded' });
  await convItem(alice, dm).waitFor({ state: 'visible' });
  await openConv(alice, dm);
  await waitBodies(alice, [Q2, 'This message was deleted', A2]);
  await msg(alice, Q2).getByTestId('edited').waitFor({ state: 'visible' });
  await msg(alice, Q2).getByTestId('pinned-mark').waitFor({ state: 'visible' });
  await waitChips(alice, Q2, { '🎉': { count: 1, me: false } }, 'reactions after reload');
  check((await msg(alice, A2).getByTestId('reply-quote').textContent()).includes('deleted'), 'alice: reply_preview of a deleted parent after reload');
  log('DM: reply, reactions, edit, pin, delete ok; history shows the current form');

  // ---- group: admin delete, notification levels --------------------------
  const g = await createGroup(alice, 'Release', ['bob']);
  await convItem(bob, g).waitFor({ state: 'visible' });
  await openConv(bob, g);
  await send(bob, 'Release notes are up.');
  await waitBodies(alice, ['Release notes are up.']);
  await setLevel(alice, 'mentions');
  check((await badges(alice, g)).notify === 'mentions', 'alice: the list knows the level');
  await openConv(alice, dm);                                 // the group is not open any more

  await send(bob, 'Plain update, nothing for you.');
  await waitFor(async () => (await badges(alice, g)).unread === 1, 'alice: one unread in the group');
  let b = await badges(alice, g);
  check(b.badge === null && b.at === null, `alice (mentions only): no badge for a plain message ${JSON.stringify(b)}`);
  await send(bob, '@alice can you review the notes?');
  await waitFor(async () => (await badges(alice, g)).at === '@', 'alice: the @ badge shows');
  b = await badges(alice, g);
  check(b.unread === 2 && b.mentions === 1 && b.badge === null, `alice (mentions only): @ only ${JSON.stringify(b)}`);
  await shot(alice, '21-actions-mention-badge');

  await openConv(alice, g);
  await waitFor(async () => (await msg(alice, 'can you review').getAttribute('data-mentions-me')) === 'true',
    'alice: bob\'s mention of her stands out');
  await waitFor(async () => (await badges(alice, g)).mentions === 0, 'alice: opening the group reads the mention');
  // an admin deletes a member's message
  await openMenuOf(alice, 'Plain update');
  check((await menuItems(alice)).includes('menu-delete'), 'alice (admin) may delete bob\'s message');
  await alice.page.getByTestId('menu-delete').click();
  await alice.page.getByTestId('confirm-delete').click();
  for (const p of [alice, bob]) {
    await waitBodies(p, ['Release notes are up.', 'This message was deleted', '@alice can you review the notes?']);
  }
  await openMenuOf(bob, 'Release notes');
  const bobSees = await menuItems(bob);
  check(bobSees.includes('menu-edit') && bobSees.includes('menu-delete'), `bob: his own message can be edited and deleted (${bobSees})`);
  await bob.page.keyboard.press('Escape');

  // muted: nothing shows, even for a mention
  await setLevel(alice, 'none');
  await openConv(alice, dm);
  await send(bob, '@alice last call');
  await waitFor(async () => (await badges(alice, g)).mentions === 1, 'alice: the mention is counted');
  b = await badges(alice, g);
  check(b.badge === null && b.at === null && b.muted, `alice (muted): no badges, a muted icon ${JSON.stringify(b)}`);
  // and back to all: the unread count shows with the @ badge
  await openConv(alice, g);
  await setLevel(alice, 'all');
  await openConv(alice, dm);
  await send(bob, 'And @alice one more.');
  await waitFor(async () => {
    const x = await badges(alice, g);
    return x.badge === '1' && x.at === '@';
  }, 'alice (all): unread badge and @ badge');
  await shot(alice, '22-actions-notify-all');
  const all = await messages(bob);
  check(all.length === 5, `bob's group view: ${all.length} messages`);
  log('group: admin delete, notification levels ok');

  // ---- the large group after being offline: not replayed, fetched -----------
  await openConv(alice, g);
  const before = (await messages(alice)).map((m) => m.body);
  await alice.ctx.setOffline(true);
  await waitFor(async () => (await connState(alice)) === 'offline', 'alice is offline');
  await send(bob, '@alice while you were away');
  await send(bob, 'and one more while away');
  await waitBodies(bob, [...before, '@alice while you were away', 'and one more while away']);
  aliceFrames.length = 0;
  await alice.ctx.setOffline(false);
  await waitOnline(alice, 20_000);
  await waitBodies(alice, [...before, '@alice while you were away', 'and one more while away']);
  const frames = aliceFrames.map((f) => { try { return JSON.parse(f); } catch { return {}; } });
  const mention = frames.find((f) => f.type === 'mention' && f.conversation === g);
  const synced = frames.find((f) => f.type === 'synced' && f.conversation === g);
  check(mention && mention.event && /while you were away/.test(mention.event.body || ''),
    `alice got the missed mention as a "mention" frame: ${JSON.stringify(mention)}`);
  check(synced && synced.online_only === true, `the group's synced is online_only: ${JSON.stringify(synced)}`);
  check(!frames.some((f) => f.type === 'event' && f.conversation === g && /one more while away/.test(f.body || '')),
    'the large group was not replayed as events');
  // and live again afterwards
  await send(bob, 'back to live');
  await waitFor(async () => (await messages(alice)).some((m) => m.body === 'back to live'), 'alice: live again in the group');

  // a member's @all in a large group is refused: shown on the message and as a toast
  await send(bob, '@all hands on deck');
  await waitFor(async () => (await msg(bob, 'hands on deck').getAttribute('data-status')) === 'failed', 'bob: @all marked not sent');
  await waitFor(async () => (await bob.page.getByTestId('toast').allTextContents()).some((t) => t.startsWith('Not sent')),
    'bob: the refusal shown as a toast');
  await shot(bob, '23-actions-refused-all');
  await msg(bob, 'hands on deck').getByRole('button', { name: 'Discard' }).click();
  check(await msg(bob, 'hands on deck').count() === 0, 'bob: discarded');
  log('large group: resume without replay, @all refused for members ok');
});
