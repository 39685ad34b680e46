// dm.mjs — two people, two browser contexts: register, start a DM, exchange
// messages. Each message appears once and in order on both sides; the
// sender's marks go sent -> delivered (the peer's client got it) -> read (the
// peer opened the conversation). Also: a reload stays logged in and shows the
// history; logging out returns to the sign-in screen.
//
// usage: node dm.mjs http://127.0.0.1:PORT

import {
  run, person, register, startDm, convItem, openConv, send, waitBodies, waitStatus,
  waitFor, check, shot, log, messages, waitOnline, sendMany,
} from './lib.mjs';

await run('direct messages between two browsers', async () => {
  // the one scenario that signs up through the form (the others: signedIn)
  const [alice, bob] = await Promise.all([person('alice'), person('bob')]);
  await shot(alice, '01-sign-in');

  await register(alice);
  await register(bob);

  // alice starts the DM by username; bob has the app open on his list
  const convId = await startDm(alice, 'bob');
  log(`alice opened DM ${convId}`);
  await shot(alice, '02-empty-dm');

  await send(alice, 'Hi Bob! Are you around?');
  await waitFor(async () => (await messages(alice)).length === 1, 'alice sees her message');

  // bob's list shows the conversation with one unread message, not yet opened
  const item = convItem(bob, convId);
  await item.waitFor({ state: 'visible' });
  await waitFor(async () => (await item.getAttribute('data-unread')) === '1', 'bob sees 1 unread');
  await waitFor(async () => (await item.getByTestId('conv-preview').textContent()).includes('Are you around'),
    'bob sees the latest message in the list');

  // delivered (bob's client acknowledged) but not read: bob has not opened it
  await waitStatus(alice, 'Hi Bob! Are you around?', 'delivered');
  await shot(bob, '03-conversation-list-unread');

  // bob opens it: read
  await openConv(bob, convId);
  await waitBodies(bob, ['Hi Bob! Are you around?']);
  await waitStatus(alice, 'Hi Bob! Are you around?', 'read');
  await waitFor(async () => (await item.getAttribute('data-unread')) === '0', 'bob has no unread after opening');

  // a conversation both ways, with quick successive sends
  await send(bob, 'Hey Alice — yes, here.');
  await waitBodies(alice, ['Hi Bob! Are you around?', 'Hey Alice — yes, here.']);
  const burst = ['First, the agenda.', 'Second, the budget.', 'Third, <b>no HTML</b> & "quotes" stay text.'];
  for (const b of burst) await send(alice, b);
  const all = ['Hi Bob! Are you around?', 'Hey Alice — yes, here.', ...burst];
  const onAlice = await waitBodies(alice, all);
  const onBob = await waitBodies(bob, all);
  check(JSON.stringify(onAlice.map((m) => m.seq)) === JSON.stringify(onBob.map((m) => m.seq)),
    'both sides show the same seqs');
  // stored XSS check: the body is text, not markup
  check(await bob.page.locator('[data-testid="message-body"] b').count() === 0, 'message bodies are not parsed as HTML');

  // alice's own messages become read (bob has the conversation open)
  for (const b of burst) await waitStatus(alice, b, 'read');
  // bob's own message is read by alice (she has it open)
  await waitStatus(bob, 'Hey Alice — yes, here.', 'read');
  // marks are only on one's own messages
  check((await messages(alice)).filter((m) => !m.mine).every((m) => m.status == null), 'no marks on others\' messages');
  await shot(alice, '04-dm-conversation');
  await shot(bob, '05-dm-conversation-bob');

  // a reload keeps the login (refresh token) and shows the history again
  await alice.page.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(alice);
  check((await alice.page.getByTestId('me-name').textContent()) === 'alice', 'still logged in after reload');
  await openConv(alice, convId);
  await waitBodies(alice, all);
  log('reload: still logged in, history shown');

  // scroll-back: 120 more messages (sent over REST, the documented HTTP send),
  // then bob signs in on a second device (a fresh context: no cursors) and
  // pages back through the history by scrolling to the top
  const many = await sendMany(alice, convId, Array.from({ length: 120 }, (_, i) => `History line ${String(i + 1).padStart(3, '0')}`), 'h');
  const everything = [...all, ...many];
  await waitBodies(alice, everything);
  const bob2 = await person('bob (second device)');
  await bob2.page.getByTestId('auth-username').fill('bob');
  await bob2.page.getByTestId('auth-password').fill('correct horse battery');
  await bob2.page.getByTestId('auth-submit').click();
  await waitOnline(bob2);
  await openConv(bob2, convId);
  await waitFor(async () => (await messages(bob2)).length >= 50, 'bob2 shows the latest page');
  const firstPage = (await messages(bob2)).length;
  check(firstPage < everything.length, `bob2 starts with a page, not everything (${firstPage})`);
  await waitFor(async () => {
    await bob2.page.getByTestId('messages').evaluate((e) => { e.scrollTop = 0; e.dispatchEvent(new Event('scroll')); });
    return (await bob2.page.getByTestId('history-state').getAttribute('data-state')) === 'start' &&
      (await messages(bob2)).length === everything.length;
  }, 'bob2 scrolls back to the beginning', 20_000);
  await waitBodies(bob2, everything);
  await shot(bob2, '06-scrolled-back-history');
  log(`scroll-back: first page ${firstPage}, then all ${everything.length}`);
  // bob's first device has the conversation open: nothing unread there
  await waitFor(async () => (await convItem(bob, convId).getAttribute('data-unread')) === '0', 'bob\'s first device has no unread');
  await bob2.ctx.close();

  // narrow screen: list and conversation one at a time
  await bob.page.setViewportSize({ width: 390, height: 760 });
  await bob.page.waitForTimeout(150);
  await shot(bob, '07-mobile-conversation');
  await bob.page.getByTestId('back').click();
  await convItem(bob, convId).waitFor({ state: 'visible' });
  await shot(bob, '08-mobile-list');
  await bob.page.setViewportSize({ width: 1180, height: 760 });

  // log out: back to the sign-in screen; a reload stays logged out
  await bob.page.getByTestId('logout').click();
  await bob.page.getByTestId('auth-screen').waitFor({ state: 'visible' });
  await bob.page.reload({ waitUntil: 'domcontentloaded' });
  await bob.page.getByTestId('auth-screen').waitFor({ state: 'visible' });
  check(await bob.page.evaluate(() => localStorage.getItem('parley.auth')) === null, 'tokens are gone after logout');
  log('logout ok');
});
