// workspaces.mjs — workspaces and channels through the UI: alice creates a
// workspace and channels (a public one, a private one; a malformed name, a
// taken one and one channel too many are refused in words), adds bob to
// the workspace by username (his #general appears live, no reload); bob
// browses the channels (the private one is not listed, he cannot add
// members), joins the public one (it opens; its history starts at his
// joining); messages go both ways; he leaves it and joins again.
// Audit q3: a malformed channel name is refused with the rule in plain
// words and a name that would do (never "bytes", "combining mark" or a
// quoted field name); adding bob again, or herself, says "already a member"
// (no "was added"); in a second workspace (Beta) bob's two #general show
// their workspace's name in the list, the Ctrl+K switcher and search's
// "In" filter; at 390 px the channel's header still leads to its workspace
// and the list item fits; #general offers "Leave workspace", not "Leave
// channel", and the workspace dialog has "Leave workspace" (both asked
// first; Cancel leaves nothing). Audit q4: at 375 px the channel's header
// keeps its name and member count whole beside the workspace's link.
// WORKSPACES_SOFT=1 runs each of these
// sections even after one failed (to see each fail against an old client).
//
// usage: node workspaces.mjs http://127.0.0.1:PORT

import {
  run, signedIn, sections, openConv, send, waitBodies, waitFor, check, shot, log,
} from './lib.mjs';

const steps = sections(process.env.WORKSPACES_SOFT === '1');
const { section, failed } = steps;

const item = (p, title) => p.page.locator(`[data-testid="conv-item"][data-title="${title}"]`);
const channelRow = (p, name) => p.page.locator(`[data-testid="channel-item"][data-name="${name}"]`);

/** Opens the workspace's dialog from the sidebar's "Workspaces" list. */
async function openWorkspace(p, name) {
  const { page } = p;
  await page.getByTestId('workspaces-button').click();
  await page.getByTestId('workspaces-dialog').waitFor({ state: 'visible' });
  const ws = page.locator(`[data-testid="workspace-item"][data-name="${name}"]`);
  await ws.waitFor({ state: 'visible' });
  await ws.click();
  await page.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
  await waitFor(async () => (await page.getByTestId('workspace-title').textContent()) === name, `${p.name}: ${name}'s dialog`);
  await channelRow(p, 'general').waitFor({ state: 'visible' });
}

async function createChannel(p, name, priv) {
  const { page } = p;
  await page.getByTestId('channel-name').fill(name);
  if (priv) await page.getByTestId('channel-private').check();
  await page.getByTestId('channel-create').click();
  await page.getByTestId('workspace-dialog').waitFor({ state: 'hidden' });
  await waitFor(async () => (await page.getByTestId('conv-title').textContent()) === '#' + name, `${p.name}: #${name} opens`);
  return page.evaluate(() => window.parley.state.openId);
}

async function channelError(p, name, re) {
  await p.page.getByTestId('channel-name').fill(name);
  await p.page.getByTestId('channel-create').click();
  let said = '';
  await waitFor(async () => re.test(said = await p.page.getByTestId('channel-error').textContent()),
    `${p.name}: creating #${name} is refused with ${re} (said ${JSON.stringify(said)})`);
  check(await p.page.getByTestId('workspace-dialog').isVisible(), 'the dialog stays open on an error');
  return said;
}

/** Starts recording the text of every toast shown in p's page from now on
 *  (window.__toasts): a toast goes too fast to be caught otherwise. */
function recordToasts(p) {
  return p.page.evaluate(() => {
    window.__toasts = [];
    new MutationObserver((ms) => {
      for (const m of ms) {
        for (const n of m.addedNodes) {
          if (n.nodeType === 1 && n.matches('[data-testid="toast"]')) window.__toasts.push(n.textContent);
        }
      }
    }).observe(document.body, { childList: true, subtree: true });
  });
}

/** The texts of the items of p's list titled title: name and workspace. */
function listed(p, title) {
  return item(p, title).evaluateAll((els) => els.map((b) => {
    const ws = b.querySelector('[data-testid="conv-workspace"]');
    return { id: Number(b.dataset.convId), ws: ws && !ws.hidden && ws.getClientRects().length ? ws.textContent : '' };
  }));
}

await run('workspaces: create, channels, add a member, browse, join, private', async () => {
  const [alice, bob] = await signedIn('alice', 'bob');
  const A = alice.page, B = bob.page;
  steps.pages = [A, B];

  // alice creates a workspace: its dialog opens, #general (joined) listed
  await A.getByTestId('workspaces-button').click();
  await A.getByTestId('workspaces-dialog').waitFor({ state: 'visible' });
  await A.getByTestId('workspace-name').fill('Acme');
  await A.getByTestId('workspace-create').click();
  await A.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
  await waitFor(async () => (await A.getByTestId('workspace-title').textContent()) === 'Acme', 'alice: Acme opens');
  await waitFor(async () => (await channelRow(alice, 'general').getAttribute('data-joined')) === 'true', 'alice: #general joined');
  await item(alice, '#general').waitFor({ state: 'visible' });

  // refusals in words: a malformed name (400), a taken one (409)
  await section('a malformed channel name in plain words', async () => {
    const bad = await channelError(alice, 'Launch Plan', /not|can’t|valid/);
    check(/lowercase letters, digits/.test(bad) && /no spaces/.test(bad) && /“launch-plan”/.test(bad),
      `the rule in plain words, with a name that would do: ${JSON.stringify(bad)}`);
    check(!/bytes|combining|"name"|ASCII/.test(bad), `not the API's wording: ${JSON.stringify(bad)}`);
  }, true);
  await channelError(alice, 'general', /already exists in “Acme”/);
  await channelError(alice, 'g\u0435neral', /looks too much like the name of a channel already in “Acme”/);
  const launch = await createChannel(alice, 'launch', false);
  await send(alice, 'Before bob came');
  await waitBodies(alice, ['Before bob came']);

  // a private channel, from the channel header's workspace button
  await A.getByTestId('workspace-button').click();
  await A.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
  await channelRow(alice, 'launch').waitFor({ state: 'visible' });
  const secret = await createChannel(alice, 'secret', true);
  check(await A.getByTestId('conv-private-mark').isVisible(), 'alice: the header marks #secret private');
  check(await item(alice, '#secret').getByTestId('private-mark').isVisible(), 'alice: the list marks #secret private');
  check(!(await item(alice, '#launch').getByTestId('private-mark').isVisible()), 'alice: #launch is not marked private');
  check(await A.getByTestId('members-button').isVisible(), 'alice: a channel has a members button (as a group)');
  log(`alice: #launch ${launch}, #secret ${secret}`);

  // alice adds bob (and an unknown name is refused in words); the
  // workspace is full of channels (--workspace-max-channels 3)
  await A.getByTestId('workspace-button').click();
  await A.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
  await channelError(alice, 'one-more', /has the most channels a workspace may have/);
  await A.getByTestId('workspace-add-username').fill('nobody-here');
  await A.getByTestId('workspace-add-submit').click();
  await waitFor(async () => /No user named “nobody-here”/.test(await A.getByTestId('workspace-members-error').textContent()),
    'alice: adding an unknown user is refused');
  await A.getByTestId('workspace-add-username').fill('bob');
  await A.getByTestId('workspace-add-submit').click();
  await A.locator(`[data-testid="workspace-member"][data-user="${bob.id}"]`).waitFor({ state: 'visible' });
  check(!(await A.getByTestId('workspace-members-error').textContent()), 'alice: no error left after adding bob');
  // bob again (any case), or herself: nothing changes, and she is told so
  await section('adding a member already in', async () => {
    await recordToasts(alice);
    for (const [name, re] of [['bob', /^bob is already a member of Acme\.$/], ['BOB', /^bob is already a member of Acme\.$/],
      ['alice', /^You are already a member of Acme\.$/]]) {
      await A.getByTestId('workspace-add-username').fill(name);
      await A.getByTestId('workspace-add-submit').click();
      let said = '';
      try {
        await waitFor(async () => re.test(said = await A.getByTestId('workspace-members-error').textContent()), 'the error line', 3_000);
      } catch { /* said below */ }
      check(re.test(said), `alice: adding ${name} again says so: ${JSON.stringify(said)}`);
    }
    const toasts = await A.evaluate(() => window.__toasts);
    check(!toasts.some((t) => /was added/.test(t)), `no "was added" for someone already in: ${JSON.stringify(toasts)}`);
    check(await A.getByTestId('workspace-member').count() === 2, 'alice: still two members');
  });
  if (!(await A.getByTestId('workspace-dialog').isVisible())) await A.getByTestId('workspace-button').click();
  await shot(alice, '30-workspace-dialog');
  await A.getByTestId('workspace-close').click();

  // bob's #general appears live; Acme is in his list; he browses it
  await item(bob, '#general').waitFor({ state: 'visible' });
  await openWorkspace(bob, 'Acme');
  await waitFor(async () => (await B.getByTestId('channel-item').count()) === 2, 'bob: two channels listed');
  const rows = await B.getByTestId('channel-item').evaluateAll((els) => els.map((e) => `${e.dataset.name}:${e.dataset.joined}`));
  check(JSON.stringify(rows) === JSON.stringify(['general:true', 'launch:false']),
    `bob sees #general (joined) and #launch, not #secret: ${JSON.stringify(rows)}`);
  check(!(await B.getByTestId('workspace-add-form').isVisible()), 'bob (a member) has no "add a member" form');
  await shot(bob, '31-workspace-browse');

  // bob joins #launch: it opens; its history starts at his joining
  await channelRow(bob, 'launch').getByTestId('channel-join').click();
  await B.getByTestId('workspace-dialog').waitFor({ state: 'hidden' });
  await waitFor(async () => (await B.getByTestId('conv-title').textContent()) === '#launch', 'bob: #launch opens');
  await B.locator('[data-testid="system-event"]', { hasText: 'bob joined' }).waitFor({ state: 'visible' });
  await waitFor(async () => (await B.evaluate((id) => window.parley.state.convs.get(id).streamed, launch)), 'bob: #launch is live');
  await openConv(alice, launch);
  await send(alice, 'Welcome, bob');
  await waitBodies(bob, ['Welcome, bob']);
  await send(bob, 'Thanks!');
  await waitBodies(alice, ['Before bob came', 'Welcome, bob', 'Thanks!']);
  await waitBodies(bob, ['Welcome, bob', 'Thanks!']);
  check(!(await item(bob, '#secret').count()), 'bob has no #secret in his list');
  await shot(bob, '32-channel');

  // bob leaves #launch and joins it again: it streams again from his new
  // joining (nothing from while he was out)
  await B.getByTestId('members-button').click();
  await B.getByTestId('leave-group').click();
  await B.getByTestId('left-note').waitFor({ state: 'visible' });
  await send(alice, 'While bob was out');
  await openWorkspace(bob, 'Acme');
  await waitFor(async () => (await channelRow(bob, 'launch').getAttribute('data-joined')) === 'false', 'bob: #launch not joined');
  await channelRow(bob, 'launch').getByTestId('channel-join').click();
  await B.getByTestId('composer').waitFor({ state: 'visible' });
  await waitFor(async () => (await B.evaluate((id) => window.parley.state.convs.get(id).streamed, launch)), 'bob: #launch is live again');
  await send(alice, 'Welcome back');
  await waitBodies(bob, ['Welcome back']);

  // --- audit q3: a second workspace; two #general tell apart -------------
  await A.getByTestId('workspaces-button').click();
  await A.getByTestId('workspaces-dialog').waitFor({ state: 'visible' });
  await A.getByTestId('workspace-name').fill('Beta');
  await A.getByTestId('workspace-create').click();
  await waitFor(async () => (await A.getByTestId('workspace-title').textContent()) === 'Beta', 'alice: Beta opens');
  await A.getByTestId('workspace-add-username').fill('bob');
  await A.getByTestId('workspace-add-submit').click();
  await A.locator(`[data-testid="workspace-member"][data-user="${bob.id}"]`).waitFor({ state: 'visible' });
  await A.getByTestId('workspace-close').click();
  await waitFor(async () => B.evaluate(() => [...window.parley.state.workspaces.values()].some((x) => x.name === 'Beta')), 'bob: Beta is known');
  const [betaId, betaGeneral] = await B.evaluate(() => {
    const w = [...window.parley.state.workspaces.values()].find((x) => x.name === 'Beta');
    return [w.id, w.general];
  });
  await section('channels of one name show their workspace', async () => {
    let generals = [];
    await waitFor(async () => {
      generals = await listed(bob, '#general');
      return generals.length === 2 && generals.every((g) => g.ws);
    }, `bob: two #general, each with its workspace (${JSON.stringify(generals)})`);
    check(JSON.stringify(generals.map((g) => g.ws).sort()) === '["· Acme","· Beta"]', `bob's list names the workspaces: ${JSON.stringify(generals)}`);
    check(generals.some((g) => g.id === betaGeneral), `Beta's #general is ${betaGeneral}: ${JSON.stringify(generals)}`);
    // Ctrl+K
    await B.getByTestId('composer-input').focus();
    await B.keyboard.press('Control+k');
    await B.getByTestId('switcher-input').fill('general');
    let opts = [];
    await waitFor(async () => (opts = await B.getByTestId('switcher-option').allTextContents()).length === 2, 'bob: two switcher options');
    check(opts.some((t) => /#general.*Acme/.test(t)) && opts.some((t) => /#general.*Beta/.test(t)),
      `the switcher names the workspaces: ${JSON.stringify(opts)}`);
    await B.keyboard.press('Escape');
    // search's "In" filter
    await B.getByTestId('search-button').click();
    await B.getByTestId('search-dialog').waitFor({ state: 'visible' });
    const inOpts = await B.locator('#search-conv option').allTextContents();
    check(inOpts.includes('#general · Acme') && inOpts.includes('#general · Beta'), `search's "In" names the workspaces: ${JSON.stringify(inOpts)}`);
    await B.getByTestId('search-q').press('Escape');
    await B.getByTestId('search-dialog').waitFor({ state: 'hidden' });

  });

  await section('390 px: the header leads to the workspace', async () => {
    await B.setViewportSize({ width: 390, height: 844 });
    if (await B.getByTestId('back').isVisible()) await B.getByTestId('back').click();
    const betaItem = B.locator(`[data-testid="conv-item"][data-conv-id="${betaGeneral}"]`);
    await betaItem.waitFor({ state: 'visible' });
    const fit = await betaItem.evaluate((b) => {
      const r = (e) => { const x = e.getBoundingClientRect(); return [Math.round(x.left), Math.round(x.right), Math.round(x.width)]; };
      return { item: r(b), name: r(b.querySelector('[data-testid="conv-name"]')), ws: b.querySelector('[data-testid="conv-workspace"]') ? r(b.querySelector('[data-testid="conv-workspace"]')) : [0, 0, 0],
        scroll: document.documentElement.scrollWidth, client: document.documentElement.clientWidth };
    });
    check(fit.ws[2] > 0 && fit.ws[1] <= fit.item[1] && fit.name[2] > 30, `390 px: the workspace beside #general, inside the item: ${JSON.stringify(fit)}`);
    check(fit.scroll <= fit.client, `390 px: no sideways scroll: ${JSON.stringify(fit)}`);
    await betaItem.click();
    await waitFor(async () => (await B.getByTestId('conv-title').textContent()) === '#general' && await B.getByTestId('conversation').isVisible(), 'bob: Beta\'s #general opens');
    const link = B.getByTestId('workspace-link');
    await waitFor(async () => await link.isVisible() && (await link.textContent()) === 'Beta', 'bob, 390 px: the header names its workspace');
    check(await link.evaluate((e) => e.scrollWidth <= e.clientWidth), '390 px: the workspace\'s name is not cut');
    const lb = await link.boundingBox();
    check(lb && lb.x >= 0 && lb.x + lb.width <= 390, `390 px: the workspace link is on screen: ${JSON.stringify(lb)}`);
    check(await B.evaluate(() => document.documentElement.scrollWidth <= document.documentElement.clientWidth), '390 px: the channel has no sideways scroll');
    await shot(bob, '33-channel-390-workspace');
    await link.click();
    await B.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
    await waitFor(async () => (await B.getByTestId('workspace-title').textContent()) === 'Beta', 'bob, 390 px: the link opens Beta');
    check(await B.getByTestId('workspace-leave').isVisible(), 'the workspace dialog offers "Leave workspace"');
    await B.getByTestId('workspace-close').click();
    await B.setViewportSize({ width: 1180, height: 760 });
  });

  // audit q4: at 375 px the workspace's link took the room of the channel's
  // name and of its count ("#gene…", "2 …")
  await section('375 px: the channel\'s header keeps its name and count', async () => {
    await B.setViewportSize({ width: 375, height: 740 });
    await B.waitForTimeout(100);
    if (await B.getByTestId('back').isVisible()) await B.getByTestId('back').click();
    await B.locator(`[data-testid="conv-item"][data-conv-id="${betaGeneral}"]`).click();
    await waitFor(async () => (await B.getByTestId('conv-title').textContent()) === '#general' && await B.getByTestId('conversation').isVisible() &&
      /online/.test(await B.getByTestId('conv-sub').textContent()), 'bob, 375 px: Beta\'s #general and its count');
    await B.waitForTimeout(100);
    const fit = await B.evaluate(() => {
      const cut = (e) => ({ text: e.textContent, scroll: e.scrollWidth, client: e.clientWidth, cut: e.scrollWidth > e.clientWidth });
      const w = document.documentElement.clientWidth, off = [];
      for (const e of document.querySelectorAll('.conv-head > *, #ws-link')) {
        const b = e.getBoundingClientRect();
        if (b.width && (b.left < 0 || b.right > w)) off.push(e.id || e.className);
      }
      return { title: cut(document.getElementById('conv-title')), sub: cut(document.getElementById('conv-sub')),
        link: cut(document.getElementById('ws-link')), linkShown: !!document.getElementById('ws-link').offsetParent, off,
        pageScroll: document.documentElement.scrollWidth, pageClient: w };
    });
    await shot(bob, '34-channel-375-header');
    check(!fit.title.cut && !fit.sub.cut, `375 px: the channel's name and its member count are not cut: ${JSON.stringify(fit)}`);
    check(fit.linkShown && fit.link.scroll > 0, `375 px: the header still leads to the workspace: ${JSON.stringify(fit)}`);
    check(!fit.off.length && fit.pageScroll <= fit.pageClient, `375 px: the header is on screen, no sideways scroll: ${JSON.stringify(fit)}`);
    await B.setViewportSize({ width: 1180, height: 760 });
  });

  await section('#general: leave the workspace', async () => {
    // --- #general: "Leave workspace" (asked first), never "Leave channel"
    await B.getByTestId('members-button').click();
    await B.getByTestId('members-dialog').waitFor({ state: 'visible' });
    const leaveText = await B.getByTestId('leave-group').textContent();
    check(!/leave channel/i.test(leaveText) && /leave workspace/i.test(leaveText), `#general offers to leave the workspace: ${JSON.stringify(leaveText)}`);
    await B.getByTestId('leave-group').click();
    const confirm = B.getByTestId('confirm-dialog');
    await confirm.waitFor({ state: 'visible' });
    check(/Beta/.test(await confirm.textContent()), `the confirmation names Beta: ${await confirm.textContent()}`);
    await B.getByTestId('confirm-cancel').click();
    await confirm.waitFor({ state: 'hidden' });
    await B.waitForTimeout(300);
    check(await B.evaluate(([w, g]) => window.parley.state.workspaces.has(w) && !window.parley.state.convs.get(g).left, [betaId, betaGeneral]) &&
      !(await B.getByTestId('left-note').isVisible()), 'Cancel: bob is still in Beta');
    await B.keyboard.press('Escape');
    await B.getByTestId('members-dialog').waitFor({ state: 'hidden' });
    // from the workspace dialog
    await B.getByTestId('workspace-button').click();
    await B.getByTestId('workspace-dialog').waitFor({ state: 'visible' });
    await B.getByTestId('workspace-leave').click();
    await confirm.waitFor({ state: 'visible' });
    await B.getByTestId('confirm-delete').click();
    await B.getByTestId('workspace-dialog').waitFor({ state: 'hidden' });
    await B.getByTestId('left-note').waitFor({ state: 'visible' });
    await waitFor(async () => B.evaluate((w) => !window.parley.state.workspaces.has(w), betaId), 'bob: Beta is no longer his');
    await waitFor(async () => (await B.locator(`[data-testid="conv-item"][data-conv-id="${betaGeneral}"]`).getAttribute('class')).includes('is-left'),
      'bob: Beta\'s #general is shown as left');
    check(await A.locator(`[data-testid="conv-item"][data-conv-id="${betaGeneral}"]`).isVisible(), 'alice still has Beta\'s #general');
  });

  check(failed.length === 0, `${failed.length} section(s) failed:\n  ${failed.join('\n  ')}`);
});
