// polish.mjs — things a user of Slack or WhatsApp expects, found by using
// the client (audit c). Run with `--rate-user-msgs 1 --rate-user-burst 3`
// and polish-filter.txt as the content filter (test_browser.py):
// - a burst of sends over the rate limit is stored in the order typed (the
//   client sends one at a time per conversation, and a rate-limited one
//   holds the ones after it);
//
// usage: node polish.mjs http://127.0.0.1:PORT

import {
  run, person, register, startDm, openConv, send, waitBodies, check, log,
} from './lib.mjs';

await run('web client polish', async () => {
  const alice = await person('alice');
  const bob = await person('bob');
  await register(alice);
  await register(bob);
  const dm = await startDm(alice, 'bob');
  await openConv(bob, dm);

  // --- a burst over the rate limit (1/s, burst 3) arrives in order
  const burst = [];
  for (let i = 1; i <= 8; i++) burst.push(`burst ${i}`);
  for (const b of burst) await send(alice, b);
  await waitBodies(bob, burst, 20_000);
  await waitBodies(alice, burst, 5_000);
  log('a burst over the rate limit arrives in order');
}, 120_000);
