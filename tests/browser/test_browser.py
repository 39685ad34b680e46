"""Browser tests of the web client (issue 4), run by `make test`.

Each scenario is a node script driving Debian's chromium through
playwright-core against a real parleyd (see conftest.py):

- dm.mjs: two browser contexts register, start a DM and exchange messages;
  each message appears once and in order on both sides, the sender's marks go
  sent -> delivered -> read; reload stays logged in; logout.
- group.mjs: a group of three in three contexts: messages reach the others,
  typing shows and disappears, group receipts ("read by 1"), members dialog;
  a member reports a message, the admin reviews it (deletes, resolves).
- offline.mjs: one context goes offline (network emulation) while the others
  send and it queues a message; back online (no reload) it shows everything
  exactly once, in order, and its queued message is sent once; a dropped
  socket shows "reconnecting" and resumes.
- session.mjs: with 2-second access tokens, refresh keeps REST, reconnects
  and reloads working; logout on one device ends only that session.
- actions.mjs: message actions between alice and bob, each seeing the
  other's change live: a reply (quoted parent, @ autocomplete, my mention
  highlighted), reactions (picker, chips with counts), an edit, a pin, a
  delete with confirmation (tombstone), an error as a toast; after a reload
  history shows the current form; in a group an admin deletes a member's
  message and notification levels drive the list's badges.
- defects.mjs (issue 14): read receipts only for what was on screen in a
  visible, focused page; 330 unread open at the first under a "New
  messages" divider and are read as seen; the "new messages" pill; dir="auto"
  on messages, names and previews (Arabic, Hebrew); presence unknown while my
  connection is down, "3 online" in a group of three; sent / delivered / read
  marks of different shapes with labels.
- features.mjs (issue 14's gaps): the safe Markdown subset (nested
  emphasis, backslash escapes), links and
  shortcodes, and hostile input that must not become markup; dark mode
  (system and the remembered switch); desktop notifications (hidden tab,
  mentions, levels, sound) and the favicon count; people search, avatars
  and the profile card; grouped messages, time format (en-US, de-DE),
  Ctrl+K switcher; the open conversation in the URL (reload, deep link
  after sign-in, not a member); a 390x844 phone (the browser's Back);
  message search with filters jumping into history.
- sse.mjs: WebSocket blocked in the page (every `new WebSocket` fails): the
  client falls back to Server-Sent Events (fetch) and REST; two people chat,
  each message once and in order with sent -> delivered -> read marks; one
  goes offline and resumes from its cursors (a Last-Event-ID).
- media.mjs (issue 13): attachments: the attach button, drop and paste,
  progress, cancel, an over-limit error, a resumable upload resumed after a
  dropped connection; thumbnails over BlurHash placeholders, the lightbox,
  file cards, audio; search with "has attachments".
- workspaces.mjs: workspaces and channels: create a workspace and channels
  (public, private; a bad and a taken name, one too many refused in
  words), add a member
  by username (its #general appears live), browse (the private channel is
  not listed for a non-member), join a public channel (history from the
  join), messages both ways. Audit q3: a malformed name refused in plain
  words, "already a member", two #general told apart by their workspace
  (list, Ctrl+K, search), the workspace link at 390 px, leaving a
  workspace (from #general too), confirmed. Audit q4: at 375 px the
  channel's name and member count are not cut beside the link.
- lifecycle.mjs: the data lifecycle: a DM's retention set from its details
  dialog and seen live by the other member (system line, dialog), only a
  group's admin may change it, a refusal in words; messages past a short
  retention leave both screens (also after a reload); an unknown event kind
  draws nothing; "Export my data" downloads valid JSON with the user's
  messages; "Delete account…" (wrong password in words), back to sign-in,
  the other member sees her leave and, after a reload, "deleted#N".
- blocks.mjs: alice blocks bob from their DM's details (confirmed); her
  composer gives way to a notice with "Unblock"; bob's send is refused in
  words, and after a reload he has the notice (no "Unblock") and the API
  refuses his send; alice unblocks, bob sends again and she sees it.
- polish.mjs (audit c): a burst of sends over the rate limit is stored in
  the order typed; drafts kept per conversation (two tabs included); an
  over-long paste is refused, not cut; a filtered message edited from its
  "Edit"; a stale "Find people" refusal cleared; a queued message keeps
  its attachment over a new page; Escape closes the search at once, no
  switcher over it; the account menu on a phone, no sideways scroll at
  320 px; leaving a group is confirmed, and the header after it;
  attachments stay with their conversation.
- polish2.mjs (audit q2): a long code block scrolls inside its bubble and
  code in my own bubble is readable; the members dialog fits 390 px and
  removing a member asks first; over-long search words, an empty file, an
  empty edit and an over-long password are refused in the client's words;
  a deleted last message's preview is the same after a reload; "Yesterday"
  in the list. Audit q3: previews keep blocks apart (quotes, code, drafts,
  notification text); an edit's preview is the same live and after a
  reload; a second tab follows a bell level. Audit q4 (375 px): a search
  result in the conversation just left opens it and marks it read; the
  header keeps the name and the member count whole; search snippets
  rendered as messages are, matches highlighted.
- restart.mjs (audit R): the server stops (SIGTERM) and comes back 7 s
  later: the page says "reconnecting" as soon as the `reconnect` frame
  comes, resumes over WebSocket (not the HTTP fallback, which has no
  typing), and typing and messages work at once; what was sent meanwhile
  arrives once.

Screenshots of the main screens are written to test-artifacts/screenshots/.
"""

import os
import subprocess
import threading
import time

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
SCENARIO_TIMEOUT = 150     # seconds; each script also has its own watchdog


SCENARIOS = {
    "dm": (),
    "group": (),
    "offline": (),
    "session": ("--access-ttl", "2"),      # access tokens expire during the test
    "actions": ("--large-group", "1"),    # its group is "large": not replayed on resume
    "defects": (),
    "features": (),
    "sse": ("--sse-heartbeat", "2"),      # WebSocket blocked: Server-Sent Events and REST
    "media": ("--media-max-file", "1048576"),   # a 1 MiB document limit: the over-limit case
    "workspaces": ("--workspace-max-channels", "3"),   # its third channel fills the workspace: 413 quota
    "lifecycle": (),
    "blocks": (),
    # a low send rate (its burst goes over it) and a content filter
    "polish": ("--rate-user-msgs", "1", "--rate-user-burst", "3",
               "--content-filter", os.path.join(HERE, "polish-filter.txt")),
    "restart": ("--shutdown-grace", "3"),  # the server stops (SIGTERM) and starts again
    "polish2": (),
}


def _run_scenario(node, script, parleyd, env):
    """Runs a scenario; a line `@@restart N` on its stdout stops the server
    (SIGTERM, a graceful drain), keeps it down N seconds, starts it again on
    the same port and data directory, and answers `@@restarted` on the
    script's stdin. Returns (returncode, output)."""
    p = subprocess.Popen([node, script, parleyd.base_url], cwd=HERE, env=env, text=True,
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    out, deadline = [], time.monotonic() + SCENARIO_TIMEOUT
    timer = threading.Timer(SCENARIO_TIMEOUT, p.kill)
    timer.start()
    try:
        for line in p.stdout:
            out.append(line)
            if line.startswith("@@restart"):
                down = float(line.split()[1]) if len(line.split()) > 1 else 1.0
                parleyd.stop()
                time.sleep(down)
                parleyd.start()
                p.stdin.write("@@restarted\n")
                p.stdin.flush()
        rc = p.wait()
    finally:
        timer.cancel()
    if time.monotonic() > deadline:
        pytest.fail(f"{os.path.basename(script)} did not finish within {SCENARIO_TIMEOUT}s\n"
                    f"{''.join(out)[-4000:]}", pytrace=False)
    return rc, "".join(out)


@pytest.mark.parametrize("scenario", list(SCENARIOS))
def test_browser(scenario, parleyd_factory, browser_deps):
    parleyd = parleyd_factory(SCENARIOS[scenario])
    script = os.path.join(HERE, scenario + ".mjs")
    env = dict(os.environ)
    env["CHROMIUM"] = browser_deps["chromium"]
    rc, output = _run_scenario(browser_deps["node"], script, parleyd, env)
    if rc == 3:
        pytest.fail(f"playwright-core is not installed (run scripts/deps-browser.sh):\n{output[-4000:]}",
                    pytrace=False)
    assert rc == 0, f"{scenario}.mjs failed (exit {rc}):\n{output[-6000:]}\n{parleyd.log_tail(40)}"
