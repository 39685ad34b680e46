// offline.mjs — one browser goes offline (network emulation) while the others
// keep talking, and it sends a message of its own while offline. When it comes
// back (no reload) it reconnects, resumes from its last seq and shows every
// message exactly once and in order; its queued message is sent exactly once
// with its client_msg_id. A second round drops the connection while a send is
// in flight.
//
// usage: node offline.mjs http://127.0.0.1:PORT

import {
  run, signedIn, createGroup, convItem, openConv, send, waitBodies, waitFor, check,
  shot, log, messages, connState, waitOnline, STEP_MS,
} from './lib.mjs';

await run('offline, queue and resume without loss or duplicates', async () => {
  const [alice, bob, carol] = await signedIn('alice', 'bob', 'carol');

  const convId = await createGroup(alice, 'Field team', ['bob', 'carol']);
  for (const p of [bob, carol]) { await convItem(p, convId).waitFor({ state: 'visible' }); await openConv(p, convId); }
  const expected = ['Before the outage.'];
  await send(alice, expected[0]);
  for (const p of [alice, bob, carol]) await waitBodies(p, expected);

  // carol drops off the network
  await carol.ctx.setOffline(true);
  await waitFor(async () => (await connState(carol)) === 'offline', 'carol shows offline');
  log('carol offline');

  // carol writes while offline: shown at once as "sending", queued
  await send(carol, 'Written while offline.');
  await waitFor(async () => {
    const ms = await messages(carol);
    const m = ms.find((x) => x.body === 'Written while offline.');
    return m && m.status === 'sending';
  }, 'carol sees her queued message as sending');
  check(await carol.page.evaluate(() => JSON.parse(localStorage.getItem(`parley.outbox.${window.parley.state.me.id}`)).length) === 1,
    'the queued message is kept in localStorage');
  await shot(carol, '13-offline-queued');

  // the others keep talking
  for (let i = 1; i <= 6; i++) {
    const who = i % 2 ? alice : bob;
    const text = `While carol is away #${i} (${who.name})`;
    await send(who, text);
    expected.push(text);
    await waitBodies(alice, expected);   // keeps the order deterministic
  }
  await waitBodies(bob, expected);
  check(!(await carol.page.locator('[data-testid="message"]', { hasText: 'While carol is away' }).count()),
    'carol received nothing while offline');

  // back online, no reload: reconnect, replay the gap, send the queued one
  await carol.ctx.setOffline(false);
  await waitOnline(carol, STEP_MS * 2);
  log('carol back online');
  expected.push('Written while offline.');
  const onCarol = await waitBodies(carol, expected);
  const onAlice = await waitBodies(alice, expected);
  await waitBodies(bob, expected);
  check(JSON.stringify(onCarol.map((m) => m.seq)) === JSON.stringify(onAlice.map((m) => m.seq)), 'same seqs on carol and alice');
  await waitFor(async () => (await messages(carol)).find((m) => m.body === 'Written while offline.').status !== 'sending',
    'carol\'s queued message is acknowledged');
  check(await carol.page.evaluate(() => window.parley.state.outbox.length) === 0, 'carol\'s outbox is empty');
  await shot(carol, '14-back-online');

  // round two: a send in flight when the network drops, then more traffic
  await carol.ctx.setOffline(true);
  await send(carol, 'Sent as the network dropped.');
  await waitFor(async () => (await connState(carol)) === 'offline', 'carol offline again');
  await send(alice, 'Did that arrive?');
  expected.push('Did that arrive?');
  await carol.ctx.setOffline(false);
  await waitOnline(carol, STEP_MS * 2);
  const tail = ['Did that arrive?', 'Sent as the network dropped.'];
  // the in-flight message may have been committed before the drop or only on
  // resend; either way it appears exactly once, at the same seq everywhere.
  await waitFor(async () => {
    const b = (await messages(carol)).map((m) => m.body);
    return b.filter((x) => x === 'Sent as the network dropped.').length === 1 && b.includes('Did that arrive?') &&
      (await messages(carol)).every((m) => m.seq != null);
  }, 'carol shows both new messages once');
  const final = (await messages(carol)).map((m) => m.body);
  check(final.length === expected.length + 1, `carol shows ${expected.length + 1} messages, not ${final.length}: ${JSON.stringify(final)}`);
  for (const t of tail) check(final.filter((x) => x === t).length === 1, `"${t}" shown once on carol`);
  for (const p of [alice, bob]) await waitBodies(p, final);
  log('round two ok');

  // round three: the socket drops (as on a network failure, browser still
  // "online"): the badge shows reconnecting, the client dials again with
  // backoff, resumes from its cursors; nothing lost, nothing doubled
  const states = [];
  await carol.page.exposeFunction('__connState', (s) => states.push(s));
  await carol.page.evaluate(() => {
    new MutationObserver(() => window.__connState(document.getElementById('conn-state').dataset.state))
      .observe(document.getElementById('conn-state'), { attributes: true, attributeFilter: ['data-state'] });
  });
  await carol.page.evaluate(() => window.parley.dropConnection());
  await send(bob, 'After the drop (bob).');
  await send(alice, 'After the drop (alice).');
  final.push('After the drop (bob).', 'After the drop (alice).');
  await waitOnline(carol, STEP_MS * 2);
  check(states.includes('reconnecting'), `carol's badge showed reconnecting (saw ${JSON.stringify(states)})`);
  for (const p of [alice, bob, carol]) await waitBodies(p, final);
  log('round three ok');

  // the list reflects everything
  check((await convItem(alice, convId).getAttribute('data-unread')) === '0', 'alice has nothing unread in the open conversation');
});
