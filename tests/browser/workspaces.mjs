// workspaces.mjs — workspaces and channels through the UI: alice creates a
// workspace and channels (a public one, a private one; a malformed name, a
// taken one and one channel too many are refused in words), adds bob to
// the workspace by username (his #general appears live, no reload); bob
// browses the channels (the private one is not listed, he cannot add
// members), joins the public one (it opens; its history starts at his
// joining); messages go both ways; he leaves it and joins again.
//
// usage: node workspaces.mjs http://127.0.0.1:PORT

import {
  run, person, register, openConv, send, waitBodies, waitFor, check, shot, log,
} from './lib.mjs';

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
  await waitFor(async () => re.test(await p.page.getByTestId('channel-error').textContent()),
    `${p.name}: creating #${name} is refused with ${re}`);
  check(await p.page.getByTestId('workspace-dialog').isVisible(), 'the dialog stays open on an error');
}

await run('workspaces: create, channels, add a member, browse, join, private', async () => {
  const alice = await person('alice');
  const bob = await person('bob');
  for (const p of [alice, bob]) await register(p);
  const A = alice.page, B = bob.page;

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
  await channelError(alice, 'Launch Plan', /not a valid channel name/);
  await channelError(alice, 'general', /already exists in “Acme”/);
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
});
