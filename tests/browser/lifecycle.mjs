// lifecycle.mjs — the data lifecycle through the UI (docs/protocol.md "Data
// lifecycle"): alice sets a direct conversation's retention from its
// details dialog ("Keep messages for": 7 days) and bob sees the system line
// live, and the same words in his dialog, where he may change it too (a
// member of a direct conversation); in a group only the admin gets the
// select, and a refusal is said in words. A retention shorter than a
// message's age drops it from both screens at once, also after a reload
// (the server erases it later, without an event). An event of a kind the
// client does not know (a real frame rewritten on its way to bob) draws
// nothing and breaks nothing. "Export my data" downloads one JSON document
// with alice's messages (and none of bob's). "Delete account…": a wrong
// password is refused in words, then the account goes: alice is back at the
// sign-in screen, bob sees her leave the group, and after a reload their
// direct conversation is with "deleted#N".
//
// usage: node lifecycle.mjs http://127.0.0.1:PORT

import { readFileSync } from 'node:fs';
import {
  run, signedIn, startDm, createGroup, openConv, send, waitBodies, waitFor, check, shot, log, waitOnline,
  openDetails, closeDetails,
  PASSWORD,
} from './lib.mjs';

const sysLines = (p, kind) => p.page.locator(`[data-testid="system-event"]${kind ? `[data-kind="${kind}"]` : ''}`);

async function sysTexts(p, kind) {
  return (await sysLines(p, kind).allTextContents()).map((t) => t.trim());
}

async function retentionText(p) {
  return (await p.page.getByTestId('retention-text').textContent()).trim();
}

/** PUT .../retention with the page's own token (a value the select does
 *  not offer). */
async function putRetention(p, conv, seconds) {
  return p.page.evaluate(async ([c, s]) => {
    const tok = JSON.parse(localStorage.getItem('parley.auth')).access_token;
    const r = await fetch(`/api/v1/conversations/${c}/retention`, {
      method: 'PUT', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + tok },
      body: JSON.stringify({ seconds: s }),
    });
    return r.status;
  }, [conv, seconds]);
}

await run('lifecycle: retention, export, account deletion', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  const A = alice.page, B = bob.page;

  // bob's socket goes through a route that rewrites one marked message into
  // an event of a kind no client knows yet (a newer server's)
  await B.routeWebSocket(/\/ws/, (ws) => {
    const server = ws.connectToServer();
    server.onMessage((m) => {
      if (typeof m === 'string' && m.includes('FROM THE FUTURE')) {
        const f = JSON.parse(m);
        if (f.type === 'event' && f.kind === 'message') {
          ws.send(JSON.stringify({ ...f, kind: 'hologram', body: undefined, data: { shape: 'cube' } }));
          return;
        }
      }
      ws.send(m);
    });
  });
  await B.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(bob);

  // ---- retention of a direct conversation, set from the details dialog
  const dm = await startDm(alice, 'bob');
  await send(alice, 'Hello bob');
  await waitBodies(alice, ['Hello bob']);
  await openConv(bob, dm);
  await waitBodies(bob, ['Hello bob']);
  check((await A.getByTestId('members-button').textContent()) === 'Details', 'alice: a DM has a "Details" button');
  await openDetails(alice);
  check(/disappearing messages are off/.test(await retentionText(alice)), `alice: retention off at first: ${await retentionText(alice)}`);
  check(await A.getByTestId('retention-select').isVisible(), 'alice: a DM member may change it');
  check(await A.getByTestId('member').count() === 2, 'alice: both members listed');
  check(!(await A.getByTestId('leave-group').isVisible()), 'alice: no "leave" in a DM');
  check(!(await A.getByTestId('add-member-form').isVisible()), 'alice: no "add a member" in a DM');
  await A.getByTestId('retention-select').selectOption('604800');
  await waitFor(async () => (await retentionText(alice)) === 'Messages are kept for 7 days (set for this conversation).',
    'alice: the dialog says 7 days');
  await shot(alice, '60-retention-dialog');
  await closeDetails(alice);
  await waitFor(async () => (await sysTexts(alice, 'retention')).includes('alice set messages to disappear after 7 days'),
    'alice: the system line');
  await waitFor(async () => (await sysTexts(bob, 'retention')).includes('alice set messages to disappear after 7 days'),
    'bob: the system line, live');
  await waitBodies(bob, ['Hello bob']);                 // a week: nothing dropped
  await openDetails(bob);
  await waitFor(async () => (await retentionText(bob)) === 'Messages are kept for 7 days (set for this conversation).',
    'bob: the same words in his dialog');
  check(await B.getByTestId('retention-select').inputValue() === '604800', 'bob: the select shows 7 days');
  await closeDetails(bob);
  log('retention: set from the dialog, seen live by the other member');

  // ---- an unknown event kind: nothing drawn, rendering goes on
  await send(alice, 'FROM THE FUTURE');
  await send(alice, 'After the future');
  await waitBodies(bob, ['Hello bob', 'After the future']);
  check(!(await B.locator('#msg-list').textContent()).includes('hologram'), 'bob: the unknown kind shows no raw name');
  log('an unknown event kind renders as nothing');

  // ---- messages past the retention leave both screens (the server erases them later)
  await new Promise((r) => setTimeout(r, 2_500));
  check(await putRetention(alice, dm, 2) === 200, 'alice: retention 2 s accepted');
  await waitFor(async () => (await sysTexts(bob, 'retention')).includes('alice set messages to disappear after 2 seconds'),
    'bob: "after 2 seconds"');
  await waitBodies(bob, []);
  await waitBodies(alice, []);
  const listPreview = await bob.page.locator(`[data-testid="conv-item"][data-conv-id="${dm}"] [data-testid="conv-preview"]`).textContent();
  check(!/Hello bob|After the future/.test(listPreview), `bob: the list's preview drops them too: ${listPreview}`);
  await B.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(bob);
  await openConv(bob, dm);
  await waitFor(async () => (await sysTexts(bob, 'retention')).length >= 2, 'bob: history after the reload');
  await waitBodies(bob, []);
  // off again, from bob's dialog
  await openDetails(bob);
  await waitFor(async () => /2 seconds/.test(await retentionText(bob)), 'bob: the dialog says 2 seconds');
  check((await B.getByTestId('retention-select').locator('option').allTextContents()).includes('2 seconds'),
    'bob: a value set elsewhere is one of the choices');
  await B.getByTestId('retention-select').selectOption('0');
  await waitFor(async () => /disappearing messages are off/.test(await retentionText(bob)), 'bob: off again');
  await closeDetails(bob);
  await waitFor(async () => (await sysTexts(alice, 'retention')).includes('bob turned off disappearing messages'),
    'alice: "bob turned off disappearing messages"');
  await send(bob, 'Kept now');
  await waitBodies(alice, ['Kept now']);
  log('retention: expired messages dropped from both screens, also after a reload');

  // ---- a group: only its admin has the select; a refusal in words
  const g = await createGroup(alice, 'Retention crew', ['bob']);
  await send(alice, 'In the group');
  await waitFor(async () => (await bob.page.locator(`[data-testid="conv-item"][data-conv-id="${g}"]`).count()) === 1,
    'bob: the group appears');
  await openConv(bob, g);
  await openDetails(bob);
  await waitFor(async () => /disappearing messages are off/.test(await retentionText(bob)), 'bob: the group\'s retention');
  check(!(await B.getByTestId('retention-select').isVisible()), 'bob (a member): no select');
  await closeDetails(bob);
  await A.route(/\/retention$/, (route) => route.fulfill({
    status: 403, contentType: 'application/json',
    body: JSON.stringify({ error: { code: 'forbidden', message: 'admins only' } }),
  }));
  await openDetails(alice);
  await A.getByTestId('retention-select').selectOption('86400');
  await waitFor(async () => /Only the admins of this conversation/.test(await A.getByTestId('retention-error').textContent()),
    'alice: a 403 said in words');
  check(await A.getByTestId('retention-select').inputValue() === '0', 'alice: the select goes back');
  await A.unroute(/\/retention$/);
  await A.getByTestId('retention-select').selectOption('2592000');
  await waitFor(async () => (await retentionText(alice)) === 'Messages are kept for 30 days (set for this conversation).',
    'alice: 30 days');
  check((await A.getByTestId('retention-error').textContent()) === '', 'alice: the error is gone');
  await closeDetails(alice);
  await waitFor(async () => (await sysTexts(bob, 'retention')).includes('alice set messages to disappear after 30 days'),
    'bob: the group\'s system line');
  log('retention: a group admin only; refusals in words');

  // ---- export: one JSON document with alice's messages
  await A.getByTestId('account-button').click();
  await A.getByTestId('account-menu').waitFor({ state: 'visible' });
  await shot(alice, '61-account-menu');
  const [download] = await Promise.all([A.waitForEvent('download'), A.getByTestId('account-export').click()]);
  check(/^parley-export-alice-\d{4}-\d\d-\d\d\.json$/.test(download.suggestedFilename()), `file name: ${download.suggestedFilename()}`);
  const doc = JSON.parse(readFileSync(await download.path(), 'utf8'));
  check(doc.user && doc.user.username === 'alice' && doc.user.id === alice.id, `export: the user: ${JSON.stringify(doc.user)}`);
  check(Array.isArray(doc.conversations) && doc.conversations.length === 2, `export: two conversations (${doc.conversations && doc.conversations.length})`);
  check(Array.isArray(doc.messages) && doc.messages.every((m) => m.sender === alice.id), 'export: only alice\'s messages');
  const bodiesOut = doc.messages.map((m) => m.body);
  check(bodiesOut.includes('In the group') && !bodiesOut.includes('Kept now'), `export: alice's bodies: ${JSON.stringify(bodiesOut)}`);
  check(Array.isArray(doc.workspaces) && Array.isArray(doc.push_devices) && typeof doc.exported === 'number', 'export: the other parts');
  log(`export: ${doc.messages.length} messages downloaded`);

  // ---- delete the account: a wrong password first
  await A.getByTestId('account-button').click();
  await A.getByTestId('account-delete').click();
  await A.getByTestId('delete-account-dialog').waitFor({ state: 'visible' });
  await A.getByTestId('delete-account-password').fill(PASSWORD);
  await A.getByTestId('delete-account-submit').click();
  await waitFor(async () => /Tick the box/.test(await A.getByTestId('delete-account-error').textContent()), 'alice: confirm first');
  await A.getByTestId('delete-account-password').fill('not the password at all');
  await A.getByTestId('delete-account-confirm').check();
  await A.getByTestId('delete-account-submit').click();
  await waitFor(async () => (await A.getByTestId('delete-account-error').textContent()) === 'Wrong password: nothing was deleted.',
    'alice: a wrong password said in words');
  check(await A.getByTestId('app-screen').isVisible(), 'alice: still in the app');
  await shot(alice, '62-delete-account');
  await A.getByTestId('delete-account-password').fill(PASSWORD);
  await A.getByTestId('delete-account-submit').click();
  await A.getByTestId('auth-screen').waitFor({ state: 'visible' });
  await waitFor(async () => (await A.getByTestId('auth-error').textContent()) === 'Your account was deleted.',
    'alice: back at the sign-in screen, told why');
  check(!(await A.evaluate(() => localStorage.getItem('parley.auth'))), 'alice: the tokens are gone');
  // bob: alice left the group; after a reload their DM is with deleted#N
  await openConv(bob, g);
  // (she was its admin: bob, the longest-standing member left, is now)
  await waitFor(async () => (await sysTexts(bob)).includes('alice left; bob is now an admin'),
    'bob: "alice left; bob is now an admin" in the group');
  await openDetails(bob);
  await waitFor(async () => (await B.getByTestId('member').count()) === 1, 'bob: alone in the group');
  await closeDetails(bob);
  await B.reload({ waitUntil: 'domcontentloaded' });
  await waitOnline(bob);
  const peer = `deleted#${alice.id}`;
  await waitFor(async () => (await bob.page.locator(`[data-testid="conv-item"][data-conv-id="${dm}"]`).getAttribute('data-title')) === peer,
    `bob: the DM is now with ${peer}`);
  await openConv(bob, dm);
  check((await B.getByTestId('conv-title').textContent()) === peer, 'bob: the header too');
  await shot(bob, '63-deleted-peer');
  log('delete account: the session ends, the others see it');
}, 130_000);
