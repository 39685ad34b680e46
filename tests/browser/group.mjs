// group.mjs — a group of three in three browser contexts: a message from one
// appears (once, in order) in the others; typing shows and disappears; the
// sender's marks aggregate the group's receipts; members are managed through
// the members dialog (add, remove).
//
// usage: node group.mjs http://127.0.0.1:PORT

import {
  run, person, register, createGroup, convItem, openConv, send, waitBodies, waitStatus,
  waitFor, check, shot, log,
} from './lib.mjs';

await run('group of three: messages, typing, receipts, members', async () => {
  const alice = await person('alice');
  const bob = await person('bob');
  const carol = await person('carol');
  for (const p of [alice, bob, carol]) await register(p);

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
  // possible, so she reloads onto the list), alice sends, it is delivered to
  // both but read by one.
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

  // members dialog: alice (admin) removes carol, adds her back
  await alice.page.getByTestId('members-button').click();
  await alice.page.getByTestId('members-dialog').waitFor({ state: 'visible' });
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 3, 'three members listed');
  await shot(alice, '12-group-members');
  await alice.page.locator(`[data-testid="member"][data-user="${carol.id}"] [data-testid="remove-member"]`).click();
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 2, 'carol removed');
  await carol.page.getByTestId('left-note').waitFor({ state: 'visible' });
  await alice.page.getByTestId('add-member-username').fill('carol');
  await alice.page.getByTestId('add-member-submit').click();
  await waitFor(async () => (await alice.page.getByTestId('member').count()) === 3, 'carol added back');
  await alice.page.getByTestId('members-close').click();
  await carol.page.getByTestId('composer').waitFor({ state: 'visible' });
  await send(carol, 'Back again.');
  await waitFor(async () => (await alice.page.locator('[data-testid="message"]', { hasText: 'Back again.' }).count()) === 1,
    'alice sees carol\'s message after re-adding her');
  log('members: remove and add ok');
});
