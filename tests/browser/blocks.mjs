// blocks.mjs — blocking a user through the UI (docs/protocol.md "Blocking a
// user"): alice blocks bob from their direct conversation's details dialog
// (after a confirmation) and her composer gives way to a notice with
// "Unblock". A block makes no event: bob's open page learns it when his
// send is refused (said in words, the notice replaces his composer), and
// after a reload the notice is there from the start, without "Unblock" (he
// is not the one blocking); his send through the API is refused with
// `403 forbidden "blocked"`. alice unblocks from the notice; bob (after a
// reload) sends again and alice sees it.
//
// usage: node blocks.mjs http://127.0.0.1:PORT

import {
  run, signedIn, startDm, openConv, send, waitBodies, waitFor, check, shot, log, waitOnline,
  openDetails, closeDetails,
} from './lib.mjs';

const visible = (p, id) => p.page.getByTestId(id).isVisible();
const text = async (p, id) => (await p.page.getByTestId(id).textContent()).trim();

/** POST a message with the page's own token: the HTTP status and error. */
async function apiSend(p, conv, body) {
  return p.page.evaluate(async ([c, b]) => {
    const tok = JSON.parse(localStorage.getItem('parley.auth')).access_token;
    const r = await fetch(`/api/v1/conversations/${c}/messages`, {
      method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tok },
      body: JSON.stringify({ client_msg_id: 'api-' + Date.now(), body: b }),
    });
    const j = await r.json().catch(() => null);
    return { status: r.status, error: j && j.error };
  }, [conv, body]);
}

await run('blocks: block and unblock from the details dialog', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  const A = alice.page, B = bob.page;

  const dm = await startDm(alice, 'bob');
  await send(alice, 'Hi bob');
  await openConv(bob, dm);
  await waitBodies(bob, ['Hi bob']);
  await send(bob, 'Hi alice');
  await waitBodies(alice, ['Hi bob', 'Hi alice']);

  // ---- alice blocks bob from the DM's details, after a confirmation
  await openDetails(alice);
  check((await text(alice, 'block-button')) === 'Block bob', `alice: "Block bob": ${await text(alice, 'block-button')}`);
  await A.getByTestId('block-button').click();
  const confirm = A.getByTestId('confirm-dialog');
  await confirm.waitFor({ state: 'visible' });
  check((await A.locator('#confirm-title').textContent()) === 'Block bob?', 'alice: the confirmation names bob');
  await shot(alice, '70-block-confirm');
  await A.getByTestId('confirm-cancel').click();                 // cancelled: nothing happens
  await confirm.waitFor({ state: 'hidden' });
  check((await text(alice, 'block-button')) === 'Block bob', 'alice: a cancelled block blocks nobody');
  await A.getByTestId('block-button').click();
  await confirm.waitFor({ state: 'visible' });
  await confirm.getByRole('button', { name: 'Block' }).click();
  await waitFor(async () => (await text(alice, 'block-button')) === 'Unblock bob', 'alice: the button turns to "Unblock bob"');
  check(!(await A.getByTestId('retention-select').isVisible()), 'alice: no retention change in a blocked DM');
  await closeDetails(alice);
  await waitFor(async () => visible(alice, 'blocked-note'), 'alice: the notice replaces her composer');
  check(!(await visible(alice, 'composer-input')), 'alice: no composer');
  check((await text(alice, 'blocked-note-text')).startsWith('You can’t send messages in this conversation.'),
    `alice: the notice's words: ${await text(alice, 'blocked-note-text')}`);
  check(await visible(alice, 'blocked-unblock'), 'alice: "Unblock" in the notice (she is the one blocking)');
  await shot(alice, '71-blocked-notice');
  log('alice blocked bob from the details dialog');

  // ---- bob's open page: no event; his send is refused in words
  check(await visible(bob, 'composer-input'), 'bob: a block sends no event (his composer is still there)');
  await send(bob, 'Are you there?');
  await waitFor(async () => (await B.getByTestId('toast').allTextContents())
    .some((t) => t === 'Not sent: you can’t send messages in this conversation.'), 'bob: the refusal in words');
  await waitFor(async () => visible(bob, 'blocked-note'), 'bob: the notice replaces his composer after the refusal');
  const failed = B.locator('[data-testid="message"][data-status="failed"]');
  check(await failed.count() === 1, 'bob: his message is marked not sent');
  await failed.getByRole('button', { name: 'Discard' }).click();
  await waitBodies(bob, ['Hi bob', 'Hi alice']);

  // ---- after a reload: the notice from the start, without "Unblock"
  await B.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(bob);
  await openConv(bob, dm);
  await waitFor(async () => visible(bob, 'blocked-note'), 'bob: the notice after a reload');
  check(!(await visible(bob, 'composer-input')), 'bob: no composer');
  check((await text(bob, 'blocked-note-text')) === 'You can’t send messages in this conversation.',
    `bob: the notice's words: ${await text(bob, 'blocked-note-text')}`);
  check(!(await visible(bob, 'blocked-unblock')), 'bob: no "Unblock" (he does not block alice)');
  await openDetails(bob);
  check((await text(bob, 'block-button')) === 'Block alice', 'bob: he may block alice too');
  await closeDetails(bob);
  const r = await apiSend(bob, dm, 'through the API');
  check(r.status === 403 && r.error && r.error.code === 'forbidden' && r.error.message === 'blocked',
    `bob: a send through the API is refused: ${JSON.stringify(r)}`);
  log('bob: refused, the notice after a reload and through the API');

  // ---- alice unblocks from the notice; bob sends again
  await A.getByTestId('blocked-unblock').click();
  await waitFor(async () => !(await visible(alice, 'blocked-note')), 'alice: the notice goes');
  check(await visible(alice, 'composer-input'), 'alice: her composer is back');
  await openDetails(alice);
  check((await text(alice, 'block-button')) === 'Block bob', 'alice: "Block bob" again');
  await closeDetails(alice);
  await B.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(bob);
  await openConv(bob, dm);
  await waitFor(async () => visible(bob, 'composer-input'), 'bob: his composer is back after a reload');
  check(!(await visible(bob, 'blocked-note')), 'bob: no notice');
  await send(bob, 'Back again');
  await waitBodies(bob, ['Hi bob', 'Hi alice', 'Back again']);
  await waitBodies(alice, ['Hi bob', 'Hi alice', 'Back again']);
  await send(alice, 'Welcome back');
  await waitBodies(bob, ['Hi bob', 'Hi alice', 'Back again', 'Welcome back']);
  log('unblocked: messages both ways again');
});
