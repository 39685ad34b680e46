// group.mjs — a group of three in three browser contexts: a message from one
// appears (once, in order) in the others; typing shows and disappears; the
// sender's marks aggregate the group's receipts; members are managed through
// the members dialog (add, remove). Moderation: bob reports carol's message
// from its menu (a reason is required; his own message has no "Report");
// alice, the admin, finds it under the members dialog's "Reports (1)" with
// the text, sender, reporter, reason and note, deletes the message through
// the usual confirmation and resolves the report.
//
// usage: node group.mjs http://127.0.0.1:PORT

import {
  run, signedIn, createGroup, convItem, openConv, send, waitBodies, waitStatus,
  waitFor, check, shot, log,
} from './lib.mjs';

await run('group of three: messages, typing, receipts, members', async () => {
  const [alice, bob, carol] = await signedIn('alice', 'bob', 'carol');

  const convId = await createGroup(alice, 'Launch plan', ['bob', 'carol']);
  log(`alice created group ${convId}`);
  for (const p of [bob, carol]) {
    await convItem(p, convId).waitFor({ state: 'visible' });
    check((await convItem(p, convId).getAttribute('data-title')) === 'Launch plan', `${p.name} sees the group title`);
    await openConv(p, convId);
  }

  // a message from alice appears once in the others
  await send(alice, 'Morning all — launch is on Thursday.');
  for (const p of [alice, bob, carol]) await waitBodies(p, ['Morning all — launch is on Thursday.']);
  // everyone has it open: read by both
  await waitStatus(alice, 'Morning all — launch is on Thursday.', 'read');

  // typing: bob types, alice and carol see it, it disappears when he sends
  const typingOf = (p) => p.page.getByTestId('typing');
  await bob.page.getByTestId('composer-input').fill('Sounds good, I will');
  for (const p of [alice, carol]) {
    await waitFor(async () => (await typingOf(p).getAttribute('data-users')) === String(bob.id),
      `${p.name} sees bob typing`);
    check((await typingOf(p).textContent()).includes('typing'), `${p.name}: typing text shown`);
  }
  check(!(await typingOf(bob).textContent()), 'bob does not see himself typing');
  await shot(carol, '09-group-typing');
  await bob.page.getByTestId('composer-input').press('End');
  await bob.page.getByTestId('composer-input').pressSequentially(' prepare the notes.');
  await bob.page.getByTestId('composer-input').press('Enter');
  for (const p of [alice, carol]) {
    await waitFor(async () => !(await typingOf(p).textContent()), `${p.name}: typing indicator gone after bob sent`);
  }

  // typing that is abandoned (text cleared) disappears too
  await carol.page.getByTestId('composer-input').fill('hmm');
  await waitFor(async () => (await typingOf(alice).getAttribute('data-users')) === String(carol.id), 'alice sees carol typing');
  await carol.page.getByTestId('composer-input').fill('');
  await waitFor(async () => !(await typingOf(alice).textContent()), 'carol stopped typing');

  await send(carol, 'Count me in.');
  await send(alice, 'Great, thanks both!');
  const all = ['Morning all — launch is on Thursday.', 'Sounds good, I will prepare the notes.', 'Count me in.', 'Great, thanks both!'];
  const seqs = [];
  for (const p of [alice, bob, carol]) seqs.push(JSON.stringify((await waitBodies(p, all)).map((m) => m.seq)));
  check(seqs[0] === seqs[1] && seqs[1] === seqs[2], `same seqs everywhere: ${seqs.join(' | ')}`);
  await waitStatus(alice, 'Great, thanks both!', 'read');
  await waitStatus(bob, 'Sounds good, I will prepare the notes.', 'read');
  await shot(alice, '10-group-conversation');

  // receipts aggregate: carol closes the conversation (opens nothing else:
  // she goes back to an empty pane by opening another conversation is not
  // possible, so she reloads onto the list: the address without the open
  // conversation's #/c/<id>, which a reload would open again), alice sends,
  // it is delivered to both but read by one.
  await carol.page.evaluate(() => history.replaceState(null, '', location.pathname));
  await carol.page.reload({ waitUntil: 'domcontentloaded' });
  await convItem(carol, convId).waitFor({ state: 'visible' });
  await send(alice, 'One more thing: bring the slides.');
  await waitFor(async () => {
    const li = alice.page.locator('[data-testid="message"]', { hasText: 'bring the slides' });
    return (await li.getAttribute('data-status')) === 'delivered' &&
      (await li.getByTestId('read-count').textContent()) === 'read by 1';
  }, 'alice sees "delivered" with "read by 1"');
  await shot(alice, '11-group-read-by-1');
  await openConv(carol, convId);
  await waitStatus(alice, 'One more thing: bring the slides.', 'read');

  // members dialog: alice (admin) removes carol (confirmed), adds her back
  await alice.page.getByTestId('members-button').click();
  await alice.page.getByTestId('members-dialog').waitFor({ state: 'visible' });
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 3, 'three members listed');
  await shot(alice, '12-group-members');
  await alice.page.locator(`[data-testid="member"][data-user="${carol.id}"] [data-testid="remove-member"]`).click();
  await alice.page.getByTestId('confirm-dialog').waitFor({ state: 'visible' });     // asked first
  await alice.page.getByTestId('confirm-delete').click();
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 2, 'carol removed');
  await carol.page.getByTestId('left-note').waitFor({ state: 'visible' });
  await alice.page.getByTestId('add-member-username').fill('carol');
  await alice.page.getByTestId('add-member-submit').click();
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 3, 'carol added back');
  // roles: alice makes carol an admin; carol's members dialog then offers her the admin's buttons
  await alice.page.locator(`[data-testid="member"][data-user="${carol.id}"] [data-testid="member-role"]`).click();
  await waitFor(async () => (await alice.page.locator(`[data-testid="member"][data-user="${carol.id}"]`)
    .getAttribute('data-role')) === 'admin', 'carol shown as an admin');
  await waitFor(async () => (await carol.page.locator('.system', { hasText: 'an admin' }).count()) >= 1 ||
    (await carol.page.getByText(/made .* an admin/).count()) >= 1, 'carol sees the member_role line');
  await alice.page.getByTestId('members-close').click();
  await carol.page.getByTestId('composer').waitFor({ state: 'visible' });
  await send(carol, 'Back again.');
  await waitFor(async () => (await alice.page.locator('[data-testid="message"]', { hasText: 'Back again.' }).count()) === 1,
    'alice sees carol\'s message after re-adding her');
  log('members: remove and add ok');

  // reports: bob reports carol's message; his own has no "Report"
  const msg = (p, text) => p.page.locator('[data-testid="message"]', { hasText: text });
  const openMenuOf = async (p, text) => {
    await msg(p, text).hover();
    await msg(p, text).getByTestId('action-more').click();
    await p.page.getByTestId('message-menu').waitFor({ state: 'visible' });
  };
  const B = bob.page, A = alice.page;
  await openMenuOf(bob, 'Sounds good');
  check(!(await B.getByTestId('menu-report').count()), 'bob: no "Report" on his own message');
  await B.keyboard.press('Escape');
  await openMenuOf(bob, 'Count me in.');
  await B.getByTestId('menu-report').click();
  await B.getByTestId('report-dialog').waitFor({ state: 'visible' });
  check((await B.locator('#report-quote').textContent()) === 'Count me in.', 'bob: the dialog quotes the message');
  check(/carol is not told who reported it/.test(await B.locator('#report-text').textContent()), 'bob: who will see it is said');
  await B.getByTestId('report-submit').click();
  await waitFor(async () => (await B.getByTestId('report-error').textContent()) === 'Choose a reason.', 'bob: a reason is required');
  await B.getByTestId('report-reason-harassment').check();
  await B.getByTestId('report-note').fill('Third time this week.');
  await shot(bob, '13-group-report');
  await B.getByTestId('report-submit').click();
  await B.getByTestId('report-dialog').waitFor({ state: 'hidden' });
  await waitFor(async () => (await B.getByTestId('toast').allTextContents()).some((t) => t.startsWith('Report sent.')),
    'bob: "report sent" confirmation');
  check(!(await B.getByTestId('report-dialog').isVisible()), 'bob: the dialog closed');

  // alice (admin) reviews it from the members dialog: deletes the message, resolves
  await A.getByTestId('members-button').click();
  await A.getByTestId('members-dialog').waitFor({ state: 'visible' });
  await waitFor(async () => (await A.getByTestId('reports-button').textContent()) === 'Reports (1)', 'alice: "Reports (1)"');
  await A.getByTestId('reports-button').click();
  await A.getByTestId('reports-dialog').waitFor({ state: 'visible' });
  const rep = A.getByTestId('report-item');
  await waitFor(async () => (await rep.count()) === 1, 'alice: one open report');
  const got = {
    reason: await rep.getByTestId('report-reason').textContent(),
    sender: await rep.getByTestId('report-sender').textContent(),
    reporter: await rep.getByTestId('report-reporter').textContent(),
    body: await rep.getByTestId('report-body').textContent(),
    note: await rep.getByTestId('report-note').textContent(),
  };
  check(JSON.stringify(got) === JSON.stringify({ reason: 'Harassment', sender: 'carol', reporter: 'bob',
    body: 'Count me in.', note: 'Note: Third time this week.' }), `alice: the report as sent: ${JSON.stringify(got)}`);
  await shot(alice, '14-group-reports');
  await rep.getByTestId('report-delete').click();
  await A.getByTestId('confirm-delete').click();
  await rep.getByTestId('report-deleted').waitFor({ state: 'visible' });
  check((await rep.getByTestId('report-body').textContent()) === 'Count me in.', 'alice: the report keeps the text');
  for (const p of [alice, bob]) {
    await waitFor(async () => (await msg(p, 'This message was deleted').count()) === 1, `${p.name}: carol's message deleted`);
  }
  await rep.getByTestId('report-resolve').click();
  await waitFor(async () => (await rep.count()) === 0, 'alice: the report is resolved');
  check(/^No open reports/.test(await A.getByTestId('reports-state').textContent()), 'alice: "no open reports"');
  await A.getByTestId('reports-close').click();
  await waitFor(async () => (await A.getByTestId('reports-button').textContent()) === 'Reports', 'alice: the count is gone (server side too)');
  await A.getByTestId('members-close').click();
  log('reports: report, review, delete, resolve ok');
});
