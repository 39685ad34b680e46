// blocks.js — blocking a user (docs/protocol.md "Blocking a user"): the
// "Block NAME" / "Unblock NAME" button of a direct conversation's details
// dialog (groups.js), the notice that replaces the composer of a blocked
// direct conversation, and the words for a write the server refused as
// "blocked".
//
// What the client knows: a direct conversation object says `"blocked":
// true` while either member blocks the other (c.blocked), and GET
// /api/v1/blocks lists whom *I* block (so only then is "Unblock" offered).
// A block makes no event: the state is asked again on every (re)connection,
// after my own block or unblock, and when a write is refused as "blocked".

import { $, setText, toast } from './dom.js';
import { S, nameOf, peerOf } from './state.js';
import { confirmDialog } from './actions.js';

let h = null;
const blocking = new Set();      // ids of the users I block
let busy = false;                // a block or unblock in flight

/** hooks: {api, render(what), loadDetails(c, force)} */
export function initBlocks(hooks) {
  h = hooks;
  $('block-btn').addEventListener('click', (ev) => {
    const c = S.convs.get(S.openId);
    if (c) toggleBlock(c, ev.currentTarget);
  });
  $('blocked-unblock').addEventListener('click', (ev) => {
    const c = S.convs.get(S.openId);
    if (c) toggleBlock(c, ev.currentTarget);
  });
}

/** GET /api/v1/blocks: whom I block. Failures keep what was known. */
export async function loadBlocks() {
  try {
    const d = await h.api.call('GET', '/api/v1/blocks');
    blocking.clear();
    for (const u of (d && d.blocked) || []) {
      blocking.add(u.id);
      if (u.username) S.names.set(u.id, u.username);
    }
  } catch { return; }
  h.render('conv');
  if ($('members-dialog').open) renderBlock(S.convs.get(S.openId));
}

export function resetBlocks() { blocking.clear(); }

/** What a conversation object (REST) says of a block. */
export function learnBlocked(c, d) {
  if (d && typeof d.blocked === 'boolean') c.blocked = d.blocked;
}

/** A write to c was refused because of a block: ask for the state again
 *  (a block makes no event), so the composer gives way to the notice. */
export function onBlockedRefusal(c) {
  if (!c) return;
  c.blocked = true;
  h.render('conv');
  loadBlocks();
  Promise.resolve(h.loadDetails(c, true)).catch(() => {});
}

/** Words for a write refused with `forbidden` "blocked". */
export const BLOCKED_TEXT = 'You can’t send messages in this conversation.';

const isBlockedDirect = (c) => !!c && c.kind === 'direct' && !c.left && !!c.blocked;

/** The composer of the open conversation, or the notice in its place. */
export function renderBlockedNote(c) {
  const blocked = isBlockedDirect(c);
  $('blocked-note').hidden = !blocked;
  if (!blocked) return;
  const peer = peerOf(c);
  const mine = peer != null && blocking.has(peer);
  setText($('blocked-note-text'), mine ? `${BLOCKED_TEXT} You blocked ${nameOf(peer)}.` : BLOCKED_TEXT);
  $('blocked-unblock').hidden = !mine;
  $('blocked-unblock').disabled = busy;
}

/** The block button of the details dialog (direct conversations only). */
export function renderBlock(c) {
  const b = $('block-btn');
  const peer = c && c.kind === 'direct' && !c.left ? peerOf(c) : null;
  b.hidden = peer == null;
  if (peer == null) return;
  const name = nameOf(peer);
  setText(b, `${blocking.has(peer) ? 'Unblock' : 'Block'} ${name}`);
  b.dataset.state = blocking.has(peer) ? 'blocking' : 'none';
  b.disabled = busy;
}

async function toggleBlock(c, opener) {
  const peer = peerOf(c);
  if (peer == null || busy) return;
  const name = nameOf(peer);
  const block = !blocking.has(peer);
  const err = $('members-error');
  err.textContent = '';
  if (block) {
    const ok = await confirmDialog({
      title: `Block ${name}?`,
      text: `Neither of you will be able to send messages, edits or reactions in this conversation until you unblock ${name}. ${name} is not told, but sees that the conversation is blocked. Groups and channels you share are not affected.`,
      ok: 'Block', opener,
    });
    if (!ok) return;
  }
  busy = true;
  renderBlock(c);
  renderBlockedNote(c);
  try {
    const d = await h.api.call(block ? 'PUT' : 'DELETE', `/api/v1/users/${peer}/block`);
    if (d && d.blocked) blocking.add(peer);
    else blocking.delete(peer);
    toast(d && d.blocked ? `You blocked ${name}.` : `You unblocked ${name}.`);
  } catch (e) {
    const text = blockError(e, block, name);
    if ($('members-dialog').open) err.textContent = text;
    else toast(text, 'error');
  } finally {
    busy = false;
  }
  // the conversation's own state says whether a block remains (the other
  // one may block me too)
  await Promise.resolve(h.loadDetails(c, true)).catch(() => {});
  h.render('conv');
  if ($('members-dialog').open && S.openId === c.id) renderBlock(c);
}

function blockError(e, block, name) {
  const what = block ? `block ${name}` : `unblock ${name}`;
  if (e.status === 0) return `You are offline: could not ${what}.`;
  if (e.status === 404) return `${name} no longer exists.`;
  if (e.status === 429) return 'Too many changes: wait a moment and try again.';
  return `Could not ${what}${e.message ? `: ${e.message}` : ''}.`;
}
