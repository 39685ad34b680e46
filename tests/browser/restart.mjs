// restart.mjs — the server stops (SIGTERM: it drains, sends `reconnect`,
// closes) and starts again 7 s later on the same port and data. The page
// says "reconnecting" as soon as the `reconnect` frame arrives, comes back
// over WebSocket (a dial that fails while the server is away is not a sign
// that WebSocket is blocked: audit R saw the HTTP fallback, without typing,
// for about 60 s after such a restart), and typing and messages work at
// once; a message sent during the outage goes out once.
//
// usage: node restart.mjs http://127.0.0.1:PORT   (the test harness answers
// a `@@restart N` line on stdout with `@@restarted` on stdin)

import readline from 'node:readline';
import {
  run, signedIn, startDm, send, waitBodies, waitFor, check, log, connState, waitOnline, STEP_MS,
} from './lib.mjs';

const lines = readline.createInterface({ input: process.stdin });
const restarted = () => new Promise((resolve) => {
  const on = (l) => { if (l.trim() === '@@restarted') { lines.off('line', on); resolve(); } };
  lines.on('line', on);
});

await run('a server restart: reconnect over WebSocket, typing and messages at once', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  await startDm(alice, 'bob');
  await startDm(bob, 'alice');
  const expected = ['Before the restart.'];
  await send(alice, expected[0]);
  for (const p of [alice, bob]) await waitBodies(p, expected);

  const states = [];
  await alice.page.exposeFunction('noteState', (s) => states.push([Date.now(), s]));
  await alice.page.evaluate(() => {
    const box = document.querySelector('[data-testid="conn-state"]');
    new MutationObserver(() => window.noteState(box.dataset.state)).observe(box, { attributes: true });
  });

  const t0 = Date.now();
  const back = restarted();
  console.log('@@restart 7');
  await waitFor(async () => (await connState(alice)) === 'reconnecting', 'alice shows reconnecting', 4_000);
  const firstReconnecting = states.find(([, s]) => s === 'reconnecting');
  check(firstReconnecting && firstReconnecting[0] - t0 < 2_500,
    `"reconnecting" at once on the reconnect frame (${firstReconnecting ? firstReconnecting[0] - t0 : '-'} ms)`);
  // bob writes while the server is away: queued, sent once when it is back
  await send(bob, 'Written during the restart.');
  expected.push('Written during the restart.');
  await back;
  log(`server back after ${Date.now() - t0} ms`);
  for (const p of [alice, bob]) await waitOnline(p, STEP_MS * 2);
  for (const p of [alice, bob]) {
    const tr = await p.page.evaluate(() => window.parley.transport());
    check(tr === 'ws', `${p.name} is back over WebSocket, not the HTTP fallback (${tr})`);
  }
  for (const p of [alice, bob]) await waitBodies(p, expected);

  // typing right away, both ways
  const typingOf = (p) => p.page.getByTestId('typing');
  await bob.page.getByTestId('composer-input').fill('still there?');
  await waitFor(async () => (await typingOf(alice).getAttribute('data-users')) === String(bob.id),
    'alice sees bob typing after the restart', 5_000);
  await bob.page.getByTestId('composer-input').press('Enter');
  expected.push('still there?');
  for (const p of [alice, bob]) await waitBodies(p, expected);
  log('reconnected over WebSocket; typing and messages work');
});
