// sse.mjs — the HTTP fallback in the browser: WebSocket is blocked (every
// `new WebSocket` fails at once, as behind a proxy that refuses upgrades), so
// the web client falls back to Server-Sent Events (GET /api/v1/events, read
// with fetch) to receive and REST to send. Two people chat: each message
// once, in order, marked sent -> delivered -> read; one of them drops off
// the network while the other writes, and comes back resuming from its
// cursors (a Last-Event-ID): everything once, in order, no reload.
//
// usage: node sse.mjs http://127.0.0.1:PORT

import {
  run, signedIn, startDm, convItem, openConv, send, waitBodies, waitStatus,
  waitFor, check, shot, log, waitOnline,
} from './lib.mjs';

/** Runs first in every page: WebSocket never connects. */
function blockWebSocket() {
  window.__wsTries = 0;
  class Blocked {
    constructor(url) {
      window.__wsTries++;
      this.url = url;
      this.readyState = 0;
      setTimeout(() => {
        this.readyState = 3;
        if (this.onerror) this.onerror(new Event('error'));
        if (this.onclose) this.onclose({ code: 1006, reason: '', wasClean: false });
      }, 20);
    }
    send() { throw new DOMException('not open', 'InvalidStateError'); }
    close() {}
  }
  Object.assign(Blocked, { CONNECTING: 0, OPEN: 1, CLOSING: 2, CLOSED: 3 });
  window.WebSocket = Blocked;
}

await run('chat over Server-Sent Events with WebSocket blocked', async () => {
  const streams = { alice: [], bob: [] };
  const recordStreams = (list) => (page) => page.on('request', (r) => {
    if (r.url().endsWith('/api/v1/events')) list.push(r.headers()['last-event-id'] || null);
  });
  // online: over SSE, after the WebSocket tries fail
  const [alice, bob] = await signedIn(['alice', { initScript: blockWebSocket, setup: recordStreams(streams.alice) }],
    ['bob', { initScript: blockWebSocket, setup: recordStreams(streams.bob) }]);
  for (const p of [alice, bob]) {
    const tries = await p.page.evaluate(() => window.__wsTries);
    check(tries >= 3, `${p.name}: tried WebSocket first (${tries} tries)`);
    check(streams[p.name].length >= 1, `${p.name}: reads GET /api/v1/events`);
  }
  log(`WebSocket blocked: alice and bob online over SSE (streams: ${streams.alice.length}, ${streams.bob.length})`);

  const convId = await startDm(alice, 'bob');
  await send(alice, 'Hello over SSE');
  const item = convItem(bob, convId);
  await item.waitFor({ state: 'visible' });
  await waitFor(async () => (await item.getAttribute('data-unread')) === '1', 'bob sees 1 unread');
  await waitStatus(alice, 'Hello over SSE', 'delivered');        // bob's `delivered` went by REST
  await openConv(bob, convId);
  await waitBodies(bob, ['Hello over SSE']);
  await waitStatus(alice, 'Hello over SSE', 'read');

  const talk = ['Hello over SSE', 'Hi! No WebSocket here either.', 'One', 'Two', 'Three'];
  await send(bob, talk[1]);
  await waitBodies(alice, talk.slice(0, 2));
  for (const b of talk.slice(2)) await send(alice, b);
  await waitBodies(alice, talk);
  await waitBodies(bob, talk);
  for (const b of talk.slice(2)) await waitStatus(alice, b, 'read');

  // bob drops off the network while alice writes; back online, his stream
  // resumes from his cursors: each message once, in order, no reload
  const before = streams.bob.length;
  await bob.ctx.setOffline(true);
  await waitFor(async () => (await bob.page.getByTestId('conn-state').getAttribute('data-state')) !== 'online',
    'bob notices he is offline');
  const away = ['While you were away 1', 'While you were away 2', 'While you were away 3'];
  for (const b of away) await send(alice, b);
  await waitBodies(alice, [...talk, ...away]);
  await bob.ctx.setOffline(false);
  await waitOnline(bob, 20_000);
  await waitBodies(bob, [...talk, ...away], 20_000);
  const resumed = streams.bob.slice(before);
  check(resumed.length >= 1 && resumed.every((id) => id && id.startsWith('c1.')),
    `bob's new stream presents a Last-Event-ID (${JSON.stringify(resumed)})`);
  for (const b of away) await waitStatus(alice, b, 'read');
  await send(bob, 'Back, and nothing missing.');
  await waitBodies(alice, [...talk, ...away, 'Back, and nothing missing.']);
  await shot(alice, 'sse-01-dm-over-sse-alice');
  await shot(bob, 'sse-02-dm-over-sse-bob');
  log('resume after offline: every message once, in order');
});
