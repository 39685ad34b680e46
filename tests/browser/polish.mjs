// polish.mjs — things a user of Slack or WhatsApp expects, found by using
// the client (audit c). Run with `--rate-user-msgs 1 --rate-user-burst 3`
// and polish-filter.txt as the content filter (test_browser.py):
// - a burst of sends over the rate limit is stored in the order typed (the
//   client sends one at a time per conversation, and a rate-limited one
//   holds the ones after it), and the sender is told they are held back;
// - each conversation keeps its unsent text (a draft) when another is
//   opened, and over a reload; sending clears it; the list shows
//   "Draft: …" for the others; two tabs of one account do not erase each
//   other's drafts;
// - a paste longer than the limit is not cut silently: it stays whole and
//   the send is refused in words;
// - a message the content filter refused offers "Edit": its text (and its
//   reply) goes back into the composer, the failed copy goes away, and the
//   changed text is sent once;
// - a message with an attachment queued while offline keeps the attachment
//   when the page is closed and opened again before it went out;
// - Escape in the search box closes the search dialog (one press, not a
//   first one that only empties the box), and Ctrl+K does not open the
//   switcher over it;
// - on a phone the account button (its avatar) is there, so "Export my
//   data" and "Delete account…" can be reached; a 320 px wide screen has no
//   sideways scroll;
// - attachments stay with the conversation they were added in: another
//   conversation's send does not carry them, and they are back on return;
// - leaving a group asks first (Cancel leaves nobody); once left, the
//   header counts the others and claims no one online;
// - "Find people"'s refusal goes away once the name is changed or a
//   conversation opens;
//
// usage: node polish.mjs http://127.0.0.1:PORT

import {
  run, signedIn, person, register, startDm, openConv, send, waitBodies, check, log, createGroup, waitOnline, waitFor,
} from './lib.mjs';

await run('web client polish', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  const dm = await startDm(alice, 'bob');
  await openConv(bob, dm);

  // --- a burst over the rate limit (1/s, burst 3) arrives in order
  const burst = [];
  for (let i = 1; i <= 8; i++) burst.push(`burst ${i}`);
  for (const b of burst) await send(alice, b);
  await waitFor(async () => (await alice.page.getByTestId('toasts').textContent().catch(() => '')).includes('limits how fast'),
    'alice is told her sends are held back');
  await waitBodies(bob, burst, 20_000);
  await waitBodies(alice, burst, 5_000);
  log('a burst over the rate limit arrives in order');

  // --- drafts: kept per conversation, over a switch and a reload
  const box = alice.page.getByTestId('composer-input');
  await box.fill('half a thought for bob');
  const group = await createGroup(alice, 'Drafts', ['bob']);
  check(await box.inputValue() === '', 'a new conversation opens with an empty composer');
  await box.fill('for the group');
  const dmPreview = alice.page.locator(`[data-testid="conv-item"][data-conv-id="${dm}"] [data-testid="conv-preview"]`);
  await waitFor(async () => (await dmPreview.textContent()) === 'Draft: half a thought for bob',
    'the list shows the DM\'s draft');
  await openConv(alice, dm);
  check(await alice.page.locator(`[data-testid="conv-item"][data-conv-id="${group}"] [data-testid="conv-draft"]`).count() === 1,
    'the group\'s draft is in the list now');
  check(await box.inputValue() === 'half a thought for bob', `the DM's draft is back: ${JSON.stringify(await box.inputValue())}`);
  await openConv(alice, group);
  check(await box.inputValue() === 'for the group', 'the group\'s draft is back');
  await alice.page.waitForTimeout(500);          // drafts are saved shortly after typing
  await alice.page.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(alice);
  await openConv(alice, dm);
  check(await box.inputValue() === 'half a thought for bob', 'the draft survives a reload');
  await box.press('End');
  await box.type(', finished');
  await box.press('Enter');
  await waitBodies(bob, [...burst, 'half a thought for bob, finished']);
  await openConv(alice, group);
  await openConv(alice, dm);
  check(await box.inputValue() === '', 'a sent draft is gone');
  log('drafts are kept per conversation');

  // --- two tabs of one account: neither erases the other's drafts
  const tab2 = { name: 'alice (tab 2)', page: await alice.ctx.newPage() };
  await tab2.page.goto(alice.page.url(), { waitUntil: 'domcontentloaded' });
  await waitOnline(tab2);
  await openConv(tab2, group);
  const box2 = tab2.page.getByTestId('composer-input');
  await box2.fill('from tab two');
  await tab2.page.waitForTimeout(500);
  await box.fill('from tab one');
  await alice.page.waitForTimeout(500);
  await tab2.page.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(tab2);
  await openConv(tab2, dm);
  check(await box2.inputValue() === 'from tab one', `tab 2 has tab 1's draft: ${JSON.stringify(await box2.inputValue())}`);
  await openConv(tab2, group);
  check(await box2.inputValue() === 'from tab two', `tab 2 kept its own draft: ${JSON.stringify(await box2.inputValue())}`);
  await box2.fill('');
  await tab2.page.waitForTimeout(500);
  await tab2.page.close();
  await box.fill('');
  log('two tabs keep each other\'s drafts');

  // --- a paste over the limit is kept whole and refused in words
  const huge = 'y'.repeat(20_000);
  await box.focus();
  await alice.page.keyboard.insertText(huge);
  check((await box.inputValue()).length === huge.length,
    `the pasted text is kept whole (${(await box.inputValue()).length} of ${huge.length} characters)`);
  await box.press('Enter');
  check(/too long/.test(await box.evaluate((e) => e.validationMessage)), 'an over-long message is refused in words');
  check((await box.inputValue()).length === huge.length, 'the refused text stays in the composer');
  await box.fill('');
  log('an over-long paste is refused, not cut');

  // --- a filtered message: Edit puts it back in the composer, as a reply
  const bobsLast = alice.page.locator('[data-testid="message"]', { hasText: 'burst 8' });
  await bobsLast.hover();
  await bobsLast.getByTestId('action-reply').click();
  await send(alice, 'that badword again');
  const failed = alice.page.locator('[data-testid="message"][data-status="failed"]');
  await failed.waitFor({ state: 'visible' });
  await failed.getByTestId('failed-edit').click();
  await failed.waitFor({ state: 'detached' });
  check(await box.inputValue() === 'that badword again', `the refused text is back in the composer: ${JSON.stringify(await box.inputValue())}`);
  check(await alice.page.getByTestId('compose-context').isVisible(), 'still a reply');
  await box.fill('that word again');
  await box.press('Enter');
  await waitBodies(bob, [...burst, 'half a thought for bob, finished', 'that word again']);
  const quote = bob.page.locator('[data-testid="message"]', { hasText: 'that word again' }).getByTestId('reply-quote');
  check((await quote.textContent()).includes('burst 8'), 'the edited message went out as the reply');
  check(await failed.count() === 0, 'no failed copy left');
  log('a filtered message is edited and sent');

  // --- Find people: a refusal goes when the name changes or a conversation opens
  const who = alice.page.getByTestId('new-dm-username');
  await who.fill('alice');
  await alice.page.getByTestId('new-dm-submit').click();
  const err = alice.page.getByTestId('new-dm-error');
  await waitFor(async () => (await err.textContent()).includes('That is you'), 'starting a DM with myself is refused');
  await who.fill('bo');
  check(await err.textContent() === '', 'the refusal goes once the name is changed');
  await who.fill('nobody_here');
  await alice.page.getByTestId('new-dm-submit').click();
  await waitFor(async () => (await err.textContent()).includes('No user named'), 'an unknown name is refused');
  await openConv(alice, group);
  check(await err.textContent() === '', 'the refusal goes once a conversation opens');
  log('stale refusals go away');

  // --- search: Escape closes it at once; no switcher over it
  await alice.page.getByTestId('search-button').click();
  await alice.page.getByTestId('search-dialog').waitFor({ state: 'visible' });
  await alice.page.getByTestId('search-q').fill('burst');
  await alice.page.getByTestId('search-q').press('Enter');
  await alice.page.locator('[data-testid="search-dialog"] mark').first().waitFor({ state: 'visible' });
  await alice.page.keyboard.press('Control+k');
  check(!(await alice.page.getByTestId('switcher').isVisible()), 'Ctrl+K does not open the switcher over the search');
  await alice.page.getByTestId('search-q').press('Escape');
  await alice.page.getByTestId('search-dialog').waitFor({ state: 'hidden', timeout: 2_000 });
  await alice.page.keyboard.press('Control+k');
  await alice.page.getByTestId('switcher').waitFor({ state: 'visible' });
  await alice.page.keyboard.press('Escape');
  await alice.page.getByTestId('switcher').waitFor({ state: 'hidden' });
  log('Escape closes the search at once');

  // --- phones: the account menu is reachable; 320 px fits
  const [carol] = await signedIn(['carol', { viewport: { width: 390, height: 844 } }]);
  const acct = carol.page.getByTestId('account-button');
  const boxAt390 = await acct.boundingBox();
  check(boxAt390 && boxAt390.width >= 24 && boxAt390.height >= 24, `the account button is there on a phone: ${JSON.stringify(boxAt390)}`);
  await acct.click();
  await carol.page.getByTestId('account-export').waitFor({ state: 'visible' });
  await carol.page.keyboard.press('Escape');
  await carol.page.setViewportSize({ width: 320, height: 640 });
  await carol.page.waitForTimeout(100);
  const sw = await carol.page.evaluate(() => document.documentElement.scrollWidth);
  check(sw <= 320, `no sideways scroll at 320 px (${sw})`);
  check(await acct.isVisible() && await carol.page.getByTestId('logout').isVisible(), 'account and log out stay at 320 px');
  await carol.ctx.close();
  log('phones reach the account menu; 320 px fits');

  // --- queued offline with an attachment, the page closed and opened again
  await openConv(alice, dm);
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('notes\n') }]);
  await waitFor(async () => (await alice.page.locator('[data-testid="attach-chip"]').getAttribute('data-state')) === 'done',
    'the attachment is uploaded');
  await alice.ctx.setOffline(true);
  await waitFor(async () => (await alice.page.getByTestId('conn-state').getAttribute('data-state')) !== 'online', 'alice is offline');
  await send(alice, 'with notes attached');
  await alice.page.waitForTimeout(400);       // the outbox is saved
  await alice.page.close();
  await alice.ctx.setOffline(false);
  alice.page = await alice.ctx.newPage();
  await alice.page.goto(new URL('/', bob.page.url()).href, { waitUntil: 'domcontentloaded' });
  await waitOnline(alice);
  await waitBodies(bob, [...burst, 'half a thought for bob, finished', 'that word again', 'with notes attached']);
  const lastOnBob = bob.page.locator('[data-testid="message"]').last();
  await lastOnBob.getByTestId('media-file-name').waitFor({ state: 'visible' });
  check(await lastOnBob.getByTestId('media-file-name').textContent() === 'notes.txt', 'the queued message kept its attachment');
  log('a queued message keeps its attachment over a new page');

  // --- attachments stay with their conversation
  await openConv(alice, dm);
  await alice.page.getByTestId('attach-input').setInputFiles([{ name: 'for-bob.txt', mimeType: 'text/plain', buffer: Buffer.from('only bob\n') }]);
  await waitFor(async () => (await alice.page.locator('[data-testid="attach-chip"]').getAttribute('data-state')) === 'done',
    'the attachment is uploaded');
  await openConv(alice, group);
  check(await alice.page.locator('[data-testid="attach-chip"]').count() === 0, 'the DM\'s attachment is not in the group\'s composer');
  await send(alice, 'group only');
  const groupMsg = alice.page.locator('[data-testid="message"]', { hasText: 'group only' });
  await groupMsg.waitFor({ state: 'visible' });
  await waitFor(async () => (await groupMsg.getAttribute('data-seq')) != null, 'the group message is sent');
  check(await groupMsg.getByTestId('media-file').count() === 0, 'the group message carries no attachment');
  await openConv(alice, dm);
  await waitFor(async () => (await alice.page.locator('[data-testid="attach-chip"]').getAttribute('data-name')) === 'for-bob.txt',
    'the attachment is back in the DM\'s composer');
  await send(alice, 'the file');
  await waitFor(async () => (await bob.page.locator('[data-testid="message"]').last().getByTestId('media-file-name').textContent()
    .catch(() => '')) === 'for-bob.txt', 'bob gets the file in the DM');
  log('attachments stay with their conversation');

  // --- leaving a group: asked first; the header afterwards
  await openConv(bob, group);
  await bob.page.getByTestId('members-button').click();
  await bob.page.getByTestId('leave-group').click();
  const confirm = bob.page.getByTestId('confirm-dialog');
  await confirm.waitFor({ state: 'visible' });
  check((await confirm.textContent()).includes('Leave “Drafts”?'), `the confirmation names the group: ${await confirm.textContent()}`);
  await bob.page.getByTestId('confirm-cancel').click();
  await confirm.waitFor({ state: 'hidden' });
  check(await bob.page.getByTestId('members-dialog').isVisible(), 'Cancel: still in the members dialog');
  check(!(await bob.page.getByTestId('left-note').isVisible()), 'Cancel: still a member');
  await bob.page.getByTestId('leave-group').click();
  await confirm.waitFor({ state: 'visible' });
  await bob.page.getByTestId('confirm-delete').click();
  await bob.page.getByTestId('left-note').waitFor({ state: 'visible' });
  const sub = await bob.page.getByTestId('conv-sub').textContent();
  check(sub === '1 member', `the header of a group bob left: ${JSON.stringify(sub)}`);
  log('leaving a group is confirmed; the header after it');
}, 120_000);
