"""Message actions (docs/protocol.md, "Message actions over REST", "Events",
"Message actions: replies, mentions, edits, deletes, reactions, pins",
"Notification preferences", "Large groups", error code `gone`).

Written from the document alone: each test encodes what it says; a failure
is either a server bug or a discrepancy with the document.

  * edits, deletes, replies, reactions and pins are events with the next
    seq, seen live by every member device in log order and replayed by
    `sync` in their current form, also in a busy group
    (test_actions_live_in_order_and_replayed);
  * who may do what, and every documented error, changing nothing
    (test_action_permissions, test_action_errors_change_nothing,
    test_reaction_and_pin_limits, test_edit_window); an emoji with any
    Unicode space or control character is refused, ZWJ sequences are not
    (test_emoji_unicode_spaces_and_controls);
  * a delete erases the body from history, reply previews and the database
    (test_delete_erases_everywhere, test_delete_erases_sqlite_bytes);
  * mentions and unread-mention counts, notification levels, restarts
    (test_mentions_and_unread_mentions, test_mentions_at_most_50); the 50
    count members only: names of non-members do not use them up
    (test_mentions_cap_counts_members_only);
  * large groups: @all needs an admin, no replay on resume but `mention`
    frames and `online_only` (test_large_group_online_only);
  * the REST equivalents and the WebSocket `pins` list
    (test_rest_actions_and_pins).

Every wait is bounded (short polls where the server coalesces); the only
fixed sleep is the edit window's.
"""

import asyncio
import json
import os
import secrets
import sqlite3
import time

import pytest

from pclient import Harness, assert_contiguous, async_test, cmid, pipeline_send, seqs

THUMBS = "\U0001F44D"          # 👍 (4 bytes of UTF-8)
PARTY = "\U0001F389"           # 🎉
HEART = "\u2764\ufe0f"         # ❤️ (two code points, 6 bytes)


# --------------------------------------------------------------------------
# requests


def edit(cid, seq, body):
    return {"type": "edit", "conversation": cid, "seq": seq, "body": body}


def delete(cid, seq):
    return {"type": "delete", "conversation": cid, "seq": seq}


def react(cid, seq, emoji, remove=False):
    m = {"type": "react", "conversation": cid, "seq": seq, "emoji": emoji}
    if remove:
        m["op"] = "remove"
    return m


def pin(cid, seq, unpin=False):
    m = {"type": "pin", "conversation": cid, "seq": seq}
    if unpin:
        m["op"] = "unpin"
    return m


def send(cid, body, reply_to=None, cm=None):
    m = {"type": "send", "conversation": cid, "client_msg_id": cm or cmid(), "body": body}
    if reply_to is not None:
        m["reply_to"] = reply_to
    return m


async def ok(ws, obj, changed=True):
    """An action answered `ok`; with changed, the `seq` it appended."""
    r = await ws.request(obj)
    assert r.get("type") == "ok", f"{ws.name}: {obj} answered {r} (expected ok)"
    assert r.get("conversation") == obj["conversation"], f"{obj}: {r}"
    assert r.get("changed") is changed, f"{obj}: expected changed={changed}: {r}"
    if changed:
        assert isinstance(r.get("seq"), int) and r["seq"] > 0, f"{obj}: ok without seq: {r}"
    else:
        assert "seq" not in r, f"{obj}: changed:false must carry no seq: {r}"
    return r


async def err(ws, obj, code):
    r = await ws.request(obj)
    assert r.get("type") == "error" and r.get("code") == code, \
        f"{ws.name}: {obj} answered {r} (expected error {code})"
    return r


async def sendm(ws, cid, body, reply_to=None, cm=None):
    """A send (optionally a reply); returns the `sent` ack."""
    obj = send(cid, body, reply_to, cm)
    r = await ws.request(obj)
    assert r.get("type") == "sent", f"{ws.name}: {obj} answered {r} (expected sent)"
    assert r.get("conversation") == cid and r.get("client_msg_id") == obj["client_msg_id"], r
    return r


async def connect(h, who, name, cursors=None):
    """A device authenticated at the handshake. Its first message is a `sync`
    with `cursors` (waits for every `synced`) or, without, a ping (live at
    once)."""
    ws = await h.ws(who, name=name)
    if cursors is None:
        await ws.ping()
        return ws
    start = len(ws.msgs)
    await ws.send_json({"type": "sync", "cursors": {str(k): v for k, v in cursors.items()}})
    for c in cursors:
        await ws.wait_for(lambda m, c=c: m.get("type") == "synced" and m.get("conversation") == c,
                          start=start, what=f"synced {c}")
    return ws


async def resume(h, who, name, cid, cursor):
    """A new device resuming `cid` from `cursor`: returns (frames between the
    sync and its synced, synced)."""
    ws = await h.ws(who, name=name)
    start = len(ws.msgs)
    await ws.send_json({"type": "sync", "cursors": {str(cid): cursor}})
    synced = await ws.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == cid,
                               start=start, what=f"synced {cid}")
    upto = ws.msgs.index(synced)
    return ws, ws.msgs[start:upto], synced


# --------------------------------------------------------------------------
# REST


async def conv_get(api, user, cid):
    r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=user.token)
    return r.body


async def conv_listed(api, user, cid):
    r = await api.expect(200, "GET", "/api/v1/conversations", token=user.token)
    for c in r.body["conversations"]:
        if c["id"] == cid:
            return c
    raise AssertionError(f"conversation {cid} not in {user}'s list: {r!r}")


async def last_seq(api, user, cid):
    return (await conv_get(api, user, cid))["last_seq"]


async def history_map(api, user, cid):
    """seq -> event, the whole log as `user` sees it (checked contiguous)."""
    evs = await api.history_all(user, cid)
    assert_contiguous(seqs(evs), what=f"history seqs of {cid} for {user}")
    return {e["seq"]: e for e in evs}


async def mention_counts(api, user, cid):
    """(unread_mentions in the list, in GET /{id}); both must agree."""
    listed = await conv_listed(api, user, cid)
    one = await conv_get(api, user, cid)
    return listed.get("unread_mentions"), one.get("unread_mentions")


async def wait_mentions(api, user, cid, want, timeout=5.0):
    """unread_mentions of `user` (list and object) reach `want` (reads are
    coalesced by the server: bounded polling)."""
    deadline = time.monotonic() + timeout
    while True:
        got = await mention_counts(api, user, cid)
        if got == (want, want):
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"{user}: unread_mentions (list, object) = {got}, expected {want}")
        await asyncio.sleep(0.05)


# --------------------------------------------------------------------------
# event checks


def check_event(ev, cid, seq, kind, sender, **fields):
    """ev is the event `seq` of `kind` by `sender`; each keyword is a field's
    expected value (ABSENT: not there)."""
    where = f"event {seq}: {ev}"
    assert ev.get("conversation", cid) == cid, where
    assert ev.get("seq") == seq, where
    assert ev.get("kind") == kind, where
    assert ev.get("sender") == sender, where
    assert isinstance(ev.get("id"), str) and ev["id"].isdigit(), where
    assert isinstance(ev.get("ts"), int), where
    for k, v in fields.items():
        if v is ABSENT:
            assert k not in ev, f"{k!r} must be absent: {where}"
        else:
            assert ev.get(k) == v, f"{k!r}: expected {v!r}: {where}"


class _Absent:
    def __repr__(self):
        return "ABSENT"


ABSENT = _Absent()


CURRENT_FORM = {"edited_ts", "deleted", "pinned", "reactions"}   # keys only a message's current form has


def events_between(frames, cid):
    return [m for m in frames if m.get("type") == "event" and m.get("conversation") == cid]


# --------------------------------------------------------------------------
# 1. every action is an event: live on every device, in order, and replayed


@async_test(90)
@pytest.mark.parametrize("busy", [False, True], ids=["small", "busy"])
async def test_actions_live_in_order_and_replayed(server, mode, busy):
    """busy: the group also has many other members online (20 per node), so
    a node keeps its recent frames (design.md "Recent frames of busy
    conversations"); replays must still carry the current form."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "act")
        others = await api.register_many((60 if mode == "cluster" else 20) if busy else 0, "busy")
        cid = (await api.create_group(alice, [bob.id] + [u.id for u in others], title="actions"))["id"]
        for i, u in enumerate(others):
            await connect(h, u, f"other-{i}")
        login2 = await api.login(alice)
        # alice on two devices (two logins), bob on one; all from seq 1
        a1 = await connect(h, alice, "alice-1", {cid: 0})
        a2 = await connect(h, login2["access_token"], "alice-2", {cid: 0})
        b1 = await connect(h, bob, "bob-1", {cid: 0})
        devices = (a1, a2, b1)

        m1 = (await sendm(a1, cid, f"hello @{bob.username}"))["seq"]
        m2 = (await sendm(b1, cid, "second"))["seq"]
        cursor = m2                                   # taken before any action
        e1 = (await ok(a1, edit(cid, m1, "hello edited")))["seq"]
        rp = (await sendm(b1, cid, "agreed", reply_to=m1))["seq"]
        r1 = (await ok(b1, react(cid, m1, THUMBS)))["seq"]
        r2 = (await ok(a2, react(cid, m1, THUMBS)))["seq"]
        r3 = (await ok(b1, react(cid, m1, PARTY)))["seq"]
        p1 = (await ok(a1, pin(cid, m1)))["seq"]
        p2 = (await ok(b1, pin(cid, m2)))["seq"]
        m3 = (await sendm(b1, cid, "oops"))["seq"]
        d1 = (await ok(b1, delete(cid, m3)))["seq"]
        r4 = (await ok(b1, react(cid, m1, THUMBS, remove=True)))["seq"]
        p3 = (await ok(a1, pin(cid, m2, unpin=True)))["seq"]
        order = [m1, m2, e1, rp, r1, r2, r3, p1, p2, m3, d1, r4, p3]
        assert order == list(range(2, 2 + len(order))), \
            f"acks/oks of successive actions are not the next seqs: {order}"
        N = p3
        assert await last_seq(api, alice, cid) == N

        # The events as appended (what live delivery carries).
        appended = {
            m1: ("message", alice.id, dict(body=f"hello @{bob.username}",
                                            data={"mentions": [bob.id]})),
            m2: ("message", bob.id, dict(body="second", data=ABSENT)),
            e1: ("edit", alice.id, dict(body="hello edited", data={"target": m1})),
            rp: ("message", bob.id, dict(body="agreed", data={"reply_to": m1},
                                          reply_preview={"seq": m1, "sender": alice.id,
                                                         "body": "hello edited"})),
            r1: ("reaction", bob.id, dict(data={"target": m1, "emoji": THUMBS, "op": "add", "count": 1})),
            r2: ("reaction", alice.id, dict(data={"target": m1, "emoji": THUMBS, "op": "add", "count": 2})),
            r3: ("reaction", bob.id, dict(data={"target": m1, "emoji": PARTY, "op": "add", "count": 1})),
            p1: ("pin", alice.id, dict(data={"target": m1, "op": "pin"})),
            p2: ("pin", bob.id, dict(data={"target": m2, "op": "pin"})),
            m3: ("message", bob.id, dict(body="oops")),
            d1: ("delete", bob.id, dict(data={"target": m3}, body=ABSENT)),
            r4: ("reaction", bob.id, dict(data={"target": m1, "emoji": THUMBS, "op": "remove", "count": 1})),
            p3: ("pin", alice.id, dict(data={"target": m2, "op": "unpin"})),
        }
        for ws in devices:
            await ws.wait_seq(cid, N)
            evs = ws.conv_events(cid)
            assert seqs(evs) == list(range(1, N + 1)), \
                f"{ws.name}: event seqs are not exactly 1..{N}: {seqs(evs)}"
            assert evs[0]["kind"] == "created", evs[0]
            for ev in evs[1:]:
                kind, sender, fields = appended[ev["seq"]]
                if mode == "cluster" and kind == "message" and CURRENT_FORM & ev.keys():
                    # read from the store by a node the bus reached late:
                    # its current form (protocol.md "Events")
                    check_event(ev, cid, ev["seq"], kind, sender)
                    continue
                check_event(ev, cid, ev["seq"], kind, sender, **fields)
            assert not ws.errors(), f"{ws.name}: {ws.errors()}"

        # A device resuming from a cursor taken before the actions gets every
        # one of them, in order; messages in their current form.
        b2, frames, synced = await resume(h, bob, "bob-2", cid, cursor)
        assert synced.get("seq") == N, synced
        assert "online_only" not in synced or synced["online_only"] is False, synced
        replay = events_between(frames, cid)
        assert seqs(replay) == list(range(cursor + 1, N + 1)), \
            f"replay from {cursor} is not exactly {cursor + 1}..{N}: {seqs(replay)}"
        for ev in replay:
            kind, sender, fields = appended[ev["seq"]]
            if ev["seq"] == m3:      # deleted since: a tombstone
                check_event(ev, cid, m3, "message", bob.id, deleted=True, body=ABSENT, data=ABSENT)
                continue
            check_event(ev, cid, ev["seq"], kind, sender, **fields)

        # History: every message in its current form.
        for u in (alice, bob):
            hist = await history_map(api, u, cid)
            assert max(hist) == N and min(hist) == 1, sorted(hist)
            msg = hist[m1]
            check_event(msg, cid, m1, "message", alice.id, body="hello edited", pinned=True)
            assert isinstance(msg.get("edited_ts"), int) and msg["edited_ts"] >= msg["ts"], msg
            assert "mentions" not in (msg.get("data") or {}), \
                f"mentions follow the edited body (no @ left): {msg}"
            assert msg.get("reactions") == [
                {"emoji": THUMBS, "count": 1, "me": u is alice},
                {"emoji": PARTY, "count": 1, "me": u is bob}], f"reactions for {u}: {msg}"
            assert hist[m2].get("pinned") in (None, False), f"m2 was unpinned: {hist[m2]}"
            assert "edited_ts" not in hist[m2] and not hist[m2].get("reactions"), hist[m2]
            check_event(hist[rp], cid, rp, "message", bob.id, body="agreed",
                        data={"reply_to": m1},
                        reply_preview={"seq": m1, "sender": alice.id, "body": "hello edited"})
            check_event(hist[m3], cid, m3, "message", bob.id, deleted=True, body=ABSENT, data=ABSENT)
            for s in (e1, r1, r2, r3, p1, p2, d1, r4, p3):
                kind, sender, fields = appended[s]
                check_event(hist[s], cid, s, kind, sender, **fields)

        # Actions are not messages: they leave unread counts alone.
        r = await api.req("POST", f"/api/v1/conversations/{cid}/read", token=alice.token,
                          json_body={"seq": N})
        assert r.status == 204, r
        await wait_mentions(api, alice, cid, 0)
        assert (await conv_get(api, alice, cid))["unread"] == 0
        e3 = (await ok(b1, edit(cid, rp, f"agreed, @{alice.username}")))["seq"]
        await ok(b1, react(cid, m1, HEART))
        await ok(b1, pin(cid, m2))
        await a1.wait_seq(cid, e3 + 2)
        one = await conv_get(api, alice, cid)
        assert one["unread"] == 0 and one["unread_mentions"] == 0, \
            f"an edit, a reaction and a pin are not unread messages: {one}"
        # an edit keeps the reply and adds the mention
        check_event(a1.conv_events(cid)[-3], cid, e3, "edit", bob.id,
                    body=f"agreed, @{alice.username}", data={"target": rp, "mentions": [alice.id]})
        hist = await history_map(api, alice, cid)
        assert hist[rp].get("data") == {"reply_to": m1, "mentions": [alice.id]}, hist[rp]
        await sendm(b1, cid, "a new message")
        assert (await conv_get(api, alice, cid))["unread"] == 1

        # sync replays a message in its current form too (edited, reacted,
        # pinned), `me` for the resuming user
        b3, frames, synced = await resume(h, bob, "bob-3", cid, 1)
        replay = events_between(frames, cid)
        assert seqs(replay) == list(range(2, synced["seq"] + 1)), seqs(replay)
        msg = replay[0]
        check_event(msg, cid, m1, "message", alice.id, body="hello edited", pinned=True)
        assert isinstance(msg.get("edited_ts"), int), msg
        assert msg.get("reactions") == [{"emoji": THUMBS, "count": 1, "me": False},
                                         {"emoji": PARTY, "count": 1, "me": True},
                                         {"emoji": HEART, "count": 1, "me": True}], \
            f"reactions in a sync replay to bob: {msg}"


# --------------------------------------------------------------------------
# 2. who may act, and errors that change nothing


@async_test(60)
async def test_action_permissions(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, dave, erin = await api.register_many(5, "perm")
        g = (await api.create_group(alice, [bob.id, carol.id], title="perm"))["id"]
        dm = (await api.open_dm(bob, carol.id))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")
        c = await connect(h, carol, "carol")
        d = await connect(h, dave, "dave")

        ma = (await sendm(a, g, "alice's"))["seq"]
        mb = (await sendm(b, g, "bob's"))["seq"]
        mc = (await sendm(c, g, "carol's"))["seq"]
        base = await last_seq(api, alice, g)

        # Only the author edits: not another member, not an admin.
        await err(b, edit(g, ma, "bob was here"), "forbidden")
        await err(a, edit(g, mb, "the admin was here"), "forbidden")
        # Only the author or an admin deletes.
        await err(c, delete(g, mb), "forbidden")
        await err(b, delete(g, ma), "forbidden")           # a member cannot delete the admin's
        # A non-member: not_found for every action (and the pins list, notify).
        for obj in (edit(g, ma, "x"), delete(g, ma), react(g, ma, THUMBS),
                    react(g, ma, THUMBS, remove=True), pin(g, ma), pin(g, ma, unpin=True),
                    send(g, "reply", reply_to=ma),
                    {"type": "pins", "conversation": g},
                    {"type": "notify", "conversation": g, "level": "none"}):
            await err(d, obj, "not_found")
        assert await last_seq(api, alice, g) == base, "refused actions appended something"

        # The author edits and deletes its own; an admin deletes anyone's.
        await ok(b, edit(g, mb, "bob's, edited"))
        await ok(a, delete(g, mb))
        await ok(c, delete(g, mc))
        hist = await history_map(api, alice, g)
        assert hist[mb].get("deleted") is True and hist[mc].get("deleted") is True, (hist[mb], hist[mc])
        check_event(hist[base + 2], g, base + 2, "delete", alice.id, data={"target": mb})

        # A member added later: messages from before it joined are not_found,
        # and mentions from before it joined do not count for it.
        await sendm(a, g, "@all before erin")
        r = await api.add_member(alice, g, erin.id)
        assert r.status == 200, r
        await wait_mentions(api, erin, g, 0)
        e = await connect(h, erin, "erin")
        for obj in (edit(g, ma, "x"), react(g, ma, THUMBS), pin(g, ma), send(g, "re", reply_to=ma)):
            await err(e, obj, "not_found")
        await ok(e, react(g, (await sendm(a, g, "welcome @all"))["seq"], THUMBS))
        await wait_mentions(api, erin, g, 1)

        # In a direct conversation the other member deletes nothing (nor edits).
        md = (await sendm(b, dm, "in the DM"))["seq"]
        dm_base = await last_seq(api, bob, dm)
        await err(c, delete(dm, md), "forbidden")
        await err(c, edit(dm, md, "carol was here"), "forbidden")
        assert await last_seq(api, bob, dm) == dm_base
        # ... but reacts and pins (any member); the author deletes.
        await ok(c, react(dm, md, HEART))
        await ok(c, pin(dm, md))
        await ok(b, delete(dm, md))
        hist = await history_map(api, carol, dm)
        check_event(hist[md], dm, md, "message", bob.id, deleted=True, body=ABSENT)
        assert not hist[md].get("pinned") and not hist[md].get("reactions"), hist[md]


@async_test(60)
async def test_action_errors_change_nothing(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "aerr")
        g = (await api.create_group(alice, [bob.id], title="errors"))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")

        m = (await sendm(a, g, "the message"))["seq"]
        gone = (await sendm(a, g, "to be deleted"))["seq"]
        await ok(b, react(g, gone, THUMBS))
        await ok(a, delete(g, gone))
        base = await last_seq(api, alice, g)
        unknown = base + 100

        async def no_change(what):
            assert await last_seq(api, alice, g) == base, f"{what} appended an event"

        # No such seq: not_found (also reply_to).
        for obj in (edit(g, unknown, "x"), delete(g, unknown), react(g, unknown, THUMBS),
                    react(g, unknown, THUMBS, remove=True), pin(g, unknown),
                    pin(g, unknown, unpin=True), send(g, "re", reply_to=unknown)):
            await err(a, obj, "not_found")
        # seq 0 (no event has it): not_found or bad_request, both fit the document
        r = await a.request(edit(g, 0, "x"))
        assert r.get("type") == "error" and r.get("code") in ("not_found", "bad_request"), r
        await no_change("unknown seqs")

        # The target was deleted: gone (edit, react, pin, reply_to, delete again).
        for obj in (edit(g, gone, "back"), react(g, gone, PARTY), react(g, gone, THUMBS, remove=True),
                    pin(g, gone), pin(g, gone, unpin=True), send(g, "re", reply_to=gone),
                    delete(g, gone)):
            await err(a, obj, "gone")
        await err(b, react(g, gone, PARTY), "gone")
        await no_change("actions on a deleted message")

        # The target is not a message (seq 1 is `created`): bad_request.
        for obj in (edit(g, 1, "x"), delete(g, 1), react(g, 1, THUMBS), pin(g, 1),
                    send(g, "re", reply_to=1)):
            await err(a, obj, "bad_request")
        await no_change("actions on `created`")

        # Bad emoji: more than 32 bytes, ASCII only, spaces or control
        # characters, empty, missing.
        for e in (THUMBS * 8 + "x",            # 33 bytes
                  "abc", ":+1:", "", THUMBS + " ", THUMBS + "\n" + THUMBS, "\t" + THUMBS):
            await err(b, react(g, m, e), "bad_request")
        await err(b, {"type": "react", "conversation": g, "seq": m}, "bad_request")
        # Bad or missing fields, bodies out of range.
        for obj in ({"type": "edit", "conversation": g, "seq": m},
                    edit(g, m, ""), edit(g, m, "x" * 16385), edit(g, m, "nul \u0000 inside"),
                    {"type": "edit", "conversation": g, "body": "no seq"},
                    {"type": "delete", "conversation": g},
                    {"type": "pin", "conversation": g},
                    dict(react(g, m, THUMBS), op="toggle"),
                    dict(pin(g, m), op="sticky"),
                    edit(g, "1", "seq as a string"),
                    {"type": "notify", "conversation": g, "level": "loud"},
                    {"type": "notify", "conversation": g},
                    # integers must be JSON-safe: 0 .. 2^53 - 1
                    edit(g, -1, "x"), edit(g, 2 ** 53, "x"), delete(g, 2 ** 53),
                    react(g, 2 ** 53, THUMBS), pin(g, -5), send(g, "re", reply_to=2 ** 53)):
            await err(a, obj, "bad_request")
        await no_change("malformed actions")
        assert (await conv_get(api, alice, g)).get("notify") == "all"

        # Nothing to change: changed:false, nothing appended.
        await ok(a, edit(g, m, "the message"), changed=False)
        await ok(b, react(g, m, THUMBS, remove=True), changed=False)
        await ok(b, pin(g, m, unpin=True), changed=False)
        await no_change("no-op actions")
        s = (await ok(b, react(g, m, THUMBS)))["seq"]
        assert s == base + 1, s
        await ok(b, react(g, m, THUMBS), changed=False)            # the same again
        await ok(a, react(g, m, PARTY, remove=True), changed=False)  # never added
        s = (await ok(a, pin(g, m)))["seq"]
        assert s == base + 2, s
        await ok(b, pin(g, m), changed=False)
        assert await last_seq(api, alice, g) == base + 2
        # A 32-byte emoji is fine.
        await ok(b, react(g, m, THUMBS * 8))
        assert await last_seq(api, alice, g) == base + 3

        # Errors never closed a connection, and every device saw the same log.
        for ws in (a, b):
            await ws.wait_seq(g, base + 3)
            assert not ws.closed.is_set()
            got = seqs(ws.conv_events(g))
            assert got == list(range(got[0], base + 4)), f"{ws.name}: {got}"


@async_test(60)
async def test_emoji_unicode_spaces_and_controls(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "emsp")
        g = (await api.create_group(alice, [bob.id], title="emoji spaces"))["id"]
        a = await connect(h, alice, "alice")
        m = (await sendm(a, g, "react to me"))["seq"]
        base = await last_seq(api, alice, g)
        # every Unicode White_Space code point and every control (C0, DEL, C1)
        bad_cps = ([*range(0x00, 0x21), 0x7F, *range(0x80, 0xA1), 0x1680, *range(0x2000, 0x200B),
                    0x2028, 0x2029, 0x202F, 0x205F, 0x3000])
        for cp in bad_cps:
            for e in (THUMBS + chr(cp), chr(cp) + THUMBS, THUMBS + chr(cp) + PARTY):
                await err(a, react(g, m, e), "bad_request")
        for cp in (0xA0, 0x3000, 0x2028, 0x85):   # the same over REST
            r = await api.req("POST", f"/api/v1/conversations/{g}/messages/{m}/reactions", token=bob.token,
                              json_body={"emoji": THUMBS + chr(cp)})
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (hex(cp), r)
        assert await last_seq(api, alice, g) == base, "a refused emoji appended an event"
        # ZWJ sequences and variation selectors are emoji
        family = "👨‍👩‍👧"     # 👨‍👩‍👧 (18 bytes)
        rainbow = "🏳️‍🌈"              # 🏳️‍🌈
        for e in (family, rainbow, HEART, "☺️", "©️"):
            await ok(a, react(g, m, e))
        hist = await history_map(api, alice, g)
        assert [x["emoji"] for x in hist[m]["reactions"]] == [family, rainbow, HEART, "☺️",
                                                              "©️"], hist[m]


@async_test(60)
async def test_reaction_and_pin_limits(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "emo")
        g = (await api.create_group(alice, [bob.id], title="emoji"))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")
        m = (await sendm(a, g, "react to me"))["seq"]
        emoji = [chr(0x1F600 + i) for i in range(21)]
        for i, e in enumerate(emoji[:20]):
            await ok(a if i % 2 else b, react(g, m, e))
        base = await last_seq(api, alice, g)
        # a 21st distinct emoji: bad_request, from anyone
        await err(a, react(g, m, emoji[20]), "bad_request")
        await err(b, react(g, m, emoji[20]), "bad_request")
        assert await last_seq(api, alice, g) == base
        # one of the 20 again, by the other user: fine (not a new one)
        r = await ok(a, react(g, m, emoji[0]))
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == r["seq"])
        assert ev["data"] == {"target": m, "emoji": emoji[0], "op": "add", "count": 2}, ev
        # once one is gone entirely there is room for another
        await ok(a, react(g, m, emoji[1], remove=True))
        await ok(b, react(g, m, emoji[20]))
        hist = await history_map(api, bob, g)
        got = [(x["emoji"], x["count"], x["me"]) for x in hist[m]["reactions"]]
        expected = [(emoji[0], 2, True)] + [(e, 1, i % 2 == 0) for i, e in enumerate(emoji[:20])
                                             if i not in (0, 1)] + [(emoji[20], 1, True)]
        assert got == expected, f"reactions in order of first use, `me` for bob:\n{got}\n{expected}"

        # at most 50 pinned messages in a conversation
        acks = await pipeline_send(a, g, [f"pin me {i}" for i in range(51)])
        ps = [x["seq"] for x in acks]
        for s_ in ps[:50]:
            await ok(b, pin(g, s_))
        base = await last_seq(api, alice, g)
        await err(a, pin(g, ps[50]), "bad_request")
        assert await last_seq(api, alice, g) == base
        await ok(a, pin(g, ps[0], unpin=True))
        await ok(a, pin(g, ps[50]))
        r = await a.request({"type": "pins", "conversation": g})
        assert [x["seq"] for x in r["events"]] == [ps[50]] + ps[49:0:-1], r


@async_test(60)
async def test_pins_replies_are_bounded_and_page_by_offset(server_factory):
    """The pins list is bounded in bytes like a history page (a quarter of
    --max-outbound, at least 16 KiB): it ends early with has_more, and
    `offset` pages through the rest (before: one reply of any size, which
    could get the asking reader closed 4008)."""
    server = server_factory(["--max-outbound", "65536"])
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "pgp")
        g = (await api.create_group(alice, [bob.id], title="pins"))["id"]
        a = await connect(h, alice, "alice")
        acks = await pipeline_send(a, g, [f"{i:02d}" + "p" * 4000 for i in range(10)])
        ps = [x["seq"] for x in acks]
        for s_ in ps:
            await ok(a, pin(g, s_))
        want = ps[::-1]                                   # most recently pinned first
        got, offset, pages = [], 0, 0
        while True:
            r = await a.request({"type": "pins", "conversation": g, "offset": offset})
            assert r["type"] == "pins" and r["events"], r
            got += [x["seq"] for x in r["events"]]
            pages += 1
            offset += len(r["events"])
            if not r["has_more"]:
                break
        assert got == want and pages > 1, (got, pages)
        got, offset = [], 0
        while True:                                       # REST pages the same way
            r = await api.expect(200, "GET", f"/api/v1/conversations/{g}/pins?offset={offset}", token=bob.token)
            got += [x["seq"] for x in r.body["events"]]
            offset += len(r.body["events"])
            if not r.body["has_more"]:
                break
        assert got == want, got
        r = await api.expect(200, "GET", f"/api/v1/conversations/{g}/pins?offset=99", token=bob.token)
        assert r.body["events"] == [] and r.body["has_more"] is False, r.body
        await api.expect(400, "GET", f"/api/v1/conversations/{g}/pins?offset=-1", token=bob.token)
        await err(a, {"type": "pins", "conversation": g, "offset": "x"}, "bad_request")


@async_test(30)
async def test_edit_window(server_factory):
    server = server_factory(["--edit-window", "1"])
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "win")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await connect(h, alice, "alice")
        ack = await sendm(a, cid, "typo")
        t0 = time.monotonic()
        await ok(a, edit(cid, ack["seq"], "no typo"))       # within the second
        await asyncio.sleep(max(0.0, 1.3 - (time.monotonic() - t0)))
        base = await last_seq(api, alice, cid)
        await err(a, edit(cid, ack["seq"], "too late"), "forbidden")
        r = await api.req("PATCH", f"/api/v1/conversations/{cid}/messages/{ack['seq']}",
                          token=alice.token, json_body={"body": "too late, REST"})
        assert r.status == 403 and r.code == "forbidden", r
        assert await last_seq(api, alice, cid) == base
        hist = await history_map(api, bob, cid)
        assert hist[ack["seq"]]["body"] == "no typo", hist[ack["seq"]]


# --------------------------------------------------------------------------
# 3. a delete erases the body


async def _delete_scenario(h, server, probe=None):
    """alice writes a message with unique text, edits it twice, bob reacts,
    pins and replies to it; alice deletes it. Returns what the checks need.
    probe(secrets), if given, runs just before the delete (the checks'
    positive control: the text must be found where it is looked for)."""
    api = h.api
    alice, bob = await api.register_many(2, "del")
    g = (await api.create_group(alice, [bob.id], title="erase"))["id"]
    a = await connect(h, alice, "alice", {g: 0})
    b = await connect(h, bob, "bob", {g: 0})
    secrets_ = [f"zq{i}{secrets.token_hex(12)}" for i in range(3)]
    cm = cmid()
    m = (await sendm(a, g, f"{secrets_[0]} for @{bob.username}", cm=cm))["seq"]
    e1 = (await ok(a, edit(g, m, f"{secrets_[1]} for @{bob.username}")))["seq"]
    e2 = (await ok(a, edit(g, m, f"{secrets_[2]} still for @{bob.username}")))["seq"]
    await ok(b, react(g, m, THUMBS))
    await ok(b, pin(g, m))
    rp = (await sendm(b, g, "a reply", reply_to=m))["seq"]
    ev = await b.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == rp)
    assert ev.get("reply_preview") == {"seq": m, "sender": alice.id,
                                       "body": f"{secrets_[2]} still for @{bob.username}"}, ev
    await wait_mentions(api, bob, g, 1)
    if probe is not None:
        await probe(secrets_)
    d = (await ok(a, delete(g, m)))["seq"]
    for ws in (a, b):
        await ws.wait_seq(g, d)
    return dict(api=api, alice=alice, bob=bob, g=g, a=a, b=b, m=m, e1=e1, e2=e2, rp=rp,
                d=d, cm=cm, secrets=secrets_)


@async_test(60)
async def test_delete_erases_everywhere(server, mode):
    def db_hits(needles):
        if mode == "cluster":
            return _pg_hits(server, needles)
        return _sqlite_hits(os.path.join(server.data_dir, "parley.db"), needles)

    async def probe(secrets_):
        hits = await asyncio.to_thread(db_hits, secrets_)
        # the current body (the message) and the versions its edit events
        # carry; the first version is replaced by the first edit
        for sec in secrets_[1:]:
            assert any(t == "events" and (sec in v or sec.encode().hex() in v) for t, _, v in hits), \
                f"positive control: {sec!r} not found in the events table before the delete: {hits}"

    async with Harness(server) as h:
        s = await _delete_scenario(h, server, probe)
        api, alice, bob, g, m = s["api"], s["alice"], s["bob"], s["g"], s["m"]
        live = s["b"].conv_events(g)[-1]
        check_event(live, g, s["d"], "delete", alice.id, data={"target": m})

        for u in (alice, bob):
            hist = await history_map(api, u, g)
            text = json.dumps(hist, ensure_ascii=False)
            for sec in s["secrets"]:
                assert sec not in text, f"history for {u} still holds {sec!r}"
            check_event(hist[m], g, m, "message", alice.id, deleted=True, body=ABSENT,
                        data=ABSENT, reactions=ABSENT, client_msg_id=s["cm"])
            assert not hist[m].get("pinned"), hist[m]
            for e in (s["e1"], s["e2"]):
                check_event(hist[e], g, e, "edit", alice.id, deleted=True, body=ABSENT)
                assert "mentions" not in (hist[e].get("data") or {}), hist[e]
            assert hist[s["rp"]].get("reply_preview") == {"seq": m, "deleted": True}, hist[s["rp"]]
            assert hist[s["rp"]].get("body") == "a reply", hist[s["rp"]]

        # the pins list no longer has it; bob's mention of it is gone
        r = await s["a"].request({"type": "pins", "conversation": g})
        assert r.get("type") == "pins" and r.get("events") == [], r
        await wait_mentions(api, bob, g, 0)

        # a resume from before it replays the tombstone and bodiless edits
        b2, frames, synced = await resume(h, bob, "bob-2", g, m - 1)
        replay = events_between(frames, g)
        assert seqs(replay) == list(range(m, s["d"] + 1)), seqs(replay)
        text = json.dumps(replay, ensure_ascii=False)
        assert not any(sec in text for sec in s["secrets"]), f"sync replays a deleted body: {replay}"
        assert replay[0].get("deleted") is True and "body" not in replay[0], replay[0]

        # a retried send of the deleted message: its original ack, nothing stored
        base = await last_seq(api, alice, g)
        r = await s["a"].request(send(g, "resent", cm=s["cm"]))
        assert r.get("type") == "sent" and r.get("duplicate") is True and r.get("seq") == m, r
        assert await last_seq(api, alice, g) == base

        # and the database holds none of it
        hits = await asyncio.to_thread(db_hits, s["secrets"])
        assert not hits, f"deleted text still stored: {hits}"


@pytest.mark.embedded_only("the raw bytes of the SQLite files")
@async_test(60)
async def test_delete_erases_sqlite_bytes(server):
    """secure_delete and a checkpoint: no byte of parley.db, the search
    index's search.db or their -wal files still holds the deleted text."""
    paths = [os.path.join(server.data_dir, f)
             for f in ("parley.db", "parley.db-wal", "search.db", "search.db-wal")]

    async def probe(secrets_):
        found = {n for _, n in _raw_hits(paths, secrets_)}
        assert found == set(secrets_), \
            f"positive control: before the delete only {found} of {secrets_} are in the files"

    async with Harness(server) as h:
        s = await _delete_scenario(h, server, probe)
        deadline = time.monotonic() + 5
        while True:
            hits = _raw_hits(paths, s["secrets"])
            if not hits or time.monotonic() > deadline:
                break
            await asyncio.sleep(0.1)
        assert not hits, f"deleted text still in the raw bytes: {hits}"


def _sqlite_hits(path, needles):
    """Every (table, column) of the SQLite file whose value contains a needle."""
    con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        hits = []
        tables = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        assert "events" in tables, tables
        for t in tables:
            cur = con.execute(f'SELECT * FROM "{t}"')
            cols = [c[0] for c in cur.description]
            for row in cur:
                for col, v in zip(cols, row):
                    if isinstance(v, bytes):
                        v = v.decode("utf-8", "replace")
                    if isinstance(v, str) and any(n in v for n in needles):
                        hits.append((t, col, v[:200]))
        return hits
    finally:
        con.close()


def _raw_hits(paths, needles):
    hits = []
    for p in paths:
        try:
            with open(p, "rb") as f:
                data = f.read()
        except FileNotFoundError:
            continue
        for n in needles:
            if n.encode() in data:
                hits.append((os.path.basename(p), n))
    return hits


def _pg_hits(server, needles):
    """Every table of the cluster's database with a row holding a needle (as
    text, or as the hex of a bytea)."""
    pg, db = server.pg, server.db.name
    tables = pg.psql("SELECT tablename FROM pg_tables WHERE schemaname = 'public'", db=db).split()
    assert "events" in tables, tables
    hits = []
    conds = " OR ".join(f"x::text LIKE '%{n}%' OR x::text LIKE '%{n.encode().hex()}%'"
                        for n in needles)
    for t in tables:
        for row in pg.psql(f'SELECT x::text FROM "{t}" x WHERE {conds}', db=db).splitlines():
            hits.append((t, "*", row[:2000]))
    return hits


# --------------------------------------------------------------------------
# 4. mentions


@async_test(60)
async def test_retry_with_a_mention_mentions_nothing(server):
    """A retry stores nothing, whatever its body now mentions or replies to:
    no mention is counted for it, nor for the message that takes the next
    seq (store_sqlite_write.c finds a retry before any mention row)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rtm")
        g = (await api.create_group(alice, [bob.id], title="retry mentions"))["id"]
        a = await connect(h, alice, "alice")
        key = cmid("rtm")
        first = await sendm(a, g, "plain words", cm=key)
        again = await sendm(a, g, f"now @{bob.username} and @all", cm=key)
        assert again.get("duplicate") is True and again["seq"] == first["seq"], (first, again)
        again = await sendm(a, g, "now a reply", reply_to=first["seq"], cm=key)
        assert again.get("duplicate") is True and again["seq"] == first["seq"], (first, again)
        nxt = await sendm(a, g, "the next one")
        assert nxt["seq"] == first["seq"] + 1, nxt
        real = await sendm(a, g, f"a real one, @{bob.username}")
        await wait_mentions(api, bob, g, 1)                 # the real one alone
        assert await mention_counts(api, bob, g) == (1, 1), real

@async_test(60)
async def test_an_edit_event_says_it_mentions_everyone(server):
    """An edit to a body with @all or @here carries data.mention_all as the
    message does, live and in history (audit S: only the message's stored
    data had it, so a live client could not tell)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "eall")
        g = (await api.create_group(alice, [bob.id], title="edit all"))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")
        m1 = (await sendm(a, g, "plain"))["seq"]
        m2 = (await sendm(a, g, "plain too"))["seq"]
        e1 = (await ok(a, edit(g, m1, "@all plain")))["seq"]
        e2 = (await ok(a, edit(g, m2, f"@here and @{bob.username}")))["seq"]
        await b.wait_seq(g, e2)
        live = {e["seq"]: e for e in b.conv_events(g)}
        assert live[e1].get("data") == {"target": m1, "mention_all": "all"}, live[e1]
        assert live[e2].get("data") == {"target": m2, "mentions": [bob.id], "mention_all": "here"}, live[e2]
        hist = await history_map(api, bob, g)
        assert hist[e1].get("data") == live[e1]["data"], hist[e1]
        assert hist[m1].get("data") == {"mention_all": "all"}, hist[m1]
        await wait_mentions(api, bob, g, 2)

@async_test(90)
async def test_mentions_and_unread_mentions(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, dave = await api.register_many(4, "men")
        g = (await api.create_group(alice, [bob.id, carol.id], title="mentions"))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")
        c = await connect(h, carol, "carol")

        mq = (await sendm(b, g, "a question"))["seq"]
        # (seq, body, sender ws, data expected on the live event, who it counts for)
        msgs = [
            (a, f"hi @{carol.username.upper()} and @{bob.username}, again @{carol.username}",
             None, {"mentions": [carol.id, bob.id]}, (bob, carol)),
            (a, f"ping @{dave.username}", None, ABSENT, ()),            # not a member
            (a, f"write to a@{bob.username}.com", None, ABSENT, ()),    # an address
            (a, "@all standup", None, "all", (bob, carol)),
            (a, f"thanks @{bob.username}.", None, {"mentions": [bob.id]}, (bob,)),
            (a, f"@{alice.username} note to self", None, ABSENT, ()),   # never the sender
            (c, "ok", mq, {"reply_to": mq}, (bob,)),                     # a reply to bob
            (c, f"@{bob.username} yes", mq, {"reply_to": mq, "mentions": [bob.id]}, (bob,)),
            (a, f"(cc @{carol.username}-)", None, {"mentions": [carol.id]}, (carol,)),
        ]
        sent = []
        for ws, body, reply_to, _, _ in msgs:
            sent.append((await sendm(ws, g, body, reply_to=reply_to))["seq"])
        for ws in (a, b, c):
            await ws.wait_seq(g, sent[-1])
        live = {e["seq"]: e for e in b.conv_events(g)}
        for s, (_, body, _, data, _) in zip(sent, msgs):
            ev = live[s]
            assert ev["body"] == body, ev
            if data is ABSENT:
                assert "data" not in ev, f"no reply and no mention: no data: {ev}"
            elif data == "all":
                assert ev.get("data", {}).get("mention_all") == "all", ev
                assert alice.id not in ev["data"].get("mentions", []), ev
            else:
                assert ev.get("data") == data, f"{body!r}: expected data {data}: {ev}"
        here = (await sendm(a, g, "anyone @here?"))["seq"]
        ev = await b.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == here)
        assert ev.get("data", {}).get("mention_all") == "here", ev
        counts = {u.id: sum(1 for m in msgs if u in m[4]) + 1 for u in (bob, carol)}
        counts[alice.id] = 0
        assert counts == {bob.id: 6, carol.id: 4, alice.id: 0}, counts
        for u in (alice, bob, carol):
            await wait_mentions(api, u, g, counts[u.id])

        # Edits re-parse mentions: the counts follow the new body.
        thanks, ping = sent[4], sent[1]
        e1 = (await ok(a, edit(g, thanks, "thanks everyone")))["seq"]
        e2 = (await ok(a, edit(g, ping, f"ping @{carol.username}")))["seq"]
        await b.wait_seq(g, e2)
        live = {e["seq"]: e for e in b.conv_events(g)}
        assert live[e1].get("data") == {"target": thanks}, live[e1]
        assert live[e2].get("data") == {"target": ping, "mentions": [carol.id]}, live[e2]
        await wait_mentions(api, bob, g, 5)
        await wait_mentions(api, carol, g, 5)
        hist = await history_map(api, carol, g)
        assert "data" not in hist[thanks], hist[thanks]
        assert hist[ping].get("data") == {"mentions": [carol.id]}, hist[ping]

        # Reading moves the counts down: bob by REST, carol by WebSocket.
        allmsg = sent[3]
        r = await api.req("POST", f"/api/v1/conversations/{g}/read", token=bob.token,
                          json_body={"seq": allmsg})
        assert r.status == 204, r
        # above @all for bob: the two replies and @here
        await wait_mentions(api, bob, g, 3)
        await c.send_json({"type": "read", "conversation": g, "seq": sent[2]})
        await wait_mentions(api, carol, g, 3)                    # @all, (cc @carol-), @here

        # Notification levels: counts are kept whatever the level.
        r = await c.request({"type": "notify", "conversation": g, "level": "none"})
        assert r.get("type") == "ok" and r.get("conversation") == g and r.get("changed") is True, r
        assert "seq" not in r, f"notify is not an event: {r}"
        r = await api.req("PUT", f"/api/v1/conversations/{g}/notify", token=bob.token,
                          json_body={"level": "mentions"})
        assert r.status == 200 and r.body.get("conversation") == g and r.body.get("changed") is True, r
        assert "type" not in r.body, r
        head = await last_seq(api, alice, g)
        assert head == here + 2, f"notify appended an event: {head}"
        await sendm(a, g, "@all again")
        await sendm(a, g, f"@{carol.username} muted but counted")
        await wait_mentions(api, bob, g, 4)
        await wait_mentions(api, carol, g, 5)
        for u, level in ((alice, "all"), (bob, "mentions"), (carol, "none")):
            assert (await conv_get(api, u, g)).get("notify") == level, u
            assert (await conv_listed(api, u, g)).get("notify") == level, u
        unread = {u.id: (await conv_get(api, u, g))["unread"] for u in (bob, carol)}

        # Everything survives a restart.
        await h.close_clients()
        await server.arestart()
        api = h.new_api()
        for u, n, level in ((alice, 0, "all"), (bob, 4, "mentions"), (carol, 5, "none")):
            assert await mention_counts(api, u, g) == (n, n), f"{u} after a restart"
            one = await conv_get(api, u, g)
            assert one.get("notify") == level, f"{u}: notify after a restart: {one}"
            if u is not alice:
                assert one["unread"] == unread[u.id], one
        hist = await history_map(api, carol, g)
        assert hist[ping].get("body") == f"ping @{carol.username}" and \
            hist[ping].get("data") == {"mentions": [carol.id]} and \
            isinstance(hist[ping].get("edited_ts"), int), f"the edit after a restart: {hist[ping]}"


@async_test(60)
async def test_mentions_at_most_50(server):
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(56, "m50")
        alice, others = users[0], users[1:]
        g = (await api.create_group(alice, [u.id for u in others], title="many"))["id"]
        a = await connect(h, alice, "alice")
        order = list(reversed(others))                 # appearance order, not id order
        body = " ".join(f"@{u.username}" for u in order[:3] + order) + f" @{alice.username}"
        ack = await sendm(a, g, body)
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == ack["seq"])
        assert ev.get("data") == {"mentions": [u.id for u in order[:50]]}, \
            f"the first 50 distinct members, in order: {ev.get('data')}"


@async_test(90)
async def test_mentions_cap_counts_members_only(server):
    """Names of non-members and unknown names are left out and do not use up
    the 50: 50 unknown @names, then a member, still mention the member (send
    and edit); with more than 50 members named after them, the first 50."""
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(55, "mcap")
        alice, bob, outsiders, rest = users[0], users[1], users[2:4], users[4:]
        g = (await api.create_group(alice, [u.id for u in [bob] + rest], title="cap"))["id"]
        a = await connect(h, alice, "alice")
        tag = secrets.token_hex(3)
        nobodies = " ".join(f"@nobody{i:02d}{tag}" for i in range(50))
        strangers = " ".join(f"@{u.username}" for u in outsiders)   # registered, not members
        body = f"{nobodies} {strangers} @@{alice.username} @{alice.username} hi @{bob.username}!"
        ack = await sendm(a, g, body)
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == ack["seq"])
        assert ev.get("data") == {"mentions": [bob.id]}, \
            f"non-members must not use up the 50: {ev.get('data')}"
        await wait_mentions(api, bob, g, 1)
        # an edit re-parses the same way
        plain = (await sendm(a, g, "nothing yet"))["seq"]
        e = (await ok(a, edit(g, plain, f"{nobodies} {strangers} then @{bob.username}")))["seq"]
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == e)
        assert ev.get("data") == {"target": plain, "mentions": [bob.id]}, ev
        hist = await history_map(api, alice, g)
        assert hist[plain].get("data") == {"mentions": [bob.id]}, hist[plain]
        await wait_mentions(api, bob, g, 2)
        # more than 50 members after the non-members: the first 50 of them
        order = list(reversed(rest)) + [bob]                         # 52 members
        body = f"{nobodies} {strangers} " + " ".join(f"@{u.username}" for u in order)
        ack = await sendm(a, g, body)
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == ack["seq"])
        assert ev.get("data") == {"mentions": [u.id for u in order[:50]]}, ev.get("data")


# --------------------------------------------------------------------------
# 5. large groups


@async_test(60)
async def test_large_group_online_only(server_factory):
    server = server_factory(["--large-group", "3"])
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, dave, erin = await api.register_many(5, "big")
        g = (await api.create_group(alice, [bob.id, carol.id, dave.id, erin.id], title="big"))["id"]
        # (created up front: in cluster mode, a new session's `sync` sent an
        # instant after a conversation was created can answer `synced` with
        # seq 0 before the node knows it, an older issue that is not this
        # test's subject)
        small = (await api.create_group(alice, [bob.id, carol.id], title="small"))["id"]
        a = await connect(h, alice, "alice")
        b = await connect(h, bob, "bob")
        c = await connect(h, carol, "carol")
        d = await connect(h, dave, "dave")
        first = await last_seq(api, alice, g)

        # @all and @here need an admin.
        await err(b, send(g, "@all listen"), "forbidden")
        await err(c, send(g, "hey @here"), "forbidden")
        assert await last_seq(api, alice, g) == first
        s_all = (await sendm(a, g, "@all welcome"))["seq"]
        dq = (await sendm(d, g, "dave asks"))["seq"]
        await d.wait_seq(g, dq)
        cursor = dq
        await d.close()

        # While dave is offline:
        o1 = (await sendm(b, g, "ordinary 1"))["seq"]
        mt = (await sendm(a, g, f"hey @{dave.username}"))["seq"]
        o2 = (await sendm(c, g, "ordinary 2"))["seq"]
        await ok(b, react(g, o1, THUMBS))
        ma = (await sendm(a, g, "@all meeting"))["seq"]
        rp = (await sendm(c, g, "answer", reply_to=dq))["seq"]
        await ok(a, edit(g, s_all, "@all welcome!"))        # an edit: not a message
        gone = (await sendm(a, g, f"@{dave.username} never mind"))["seq"]
        await ok(a, delete(g, gone))                         # its mention is erased with it
        await ok(c, edit(g, o2, f"ordinary 2, cc @{dave.username}"))   # mentions dave now
        here = (await sendm(a, g, "@here admins may"))["seq"]
        head = await last_seq(api, alice, g)

        # Online members got everything live, in order.
        for ws in (a, b, c):
            await ws.wait_seq(g, head)
            assert seqs(ws.conv_events(g)) == list(range(first + 1, head + 1)), \
                f"{ws.name}: {seqs(ws.conv_events(g))}"

        # dave resumes from its old cursor: no replay, but its mentions.
        d2, frames, synced = await resume(h, dave, "dave-2", g, cursor)
        assert synced.get("online_only") is True and synced.get("seq") == head, synced
        replayed = events_between(frames, g)
        assert replayed == [], f"a large group is not replayed: {seqs(replayed)}"
        mentions = [f for f in frames if f.get("type") == "mention"]
        assert all(f.get("conversation") == g for f in mentions), mentions
        got = [f["event"]["seq"] for f in mentions]
        assert got == [mt, o2, ma, rp, here], \
            f"mention frames: {got}, expected {[mt, o2, ma, rp, here]}: {mentions}"
        ev = {f["event"]["seq"]: f["event"] for f in mentions}
        check_event(ev[mt], g, mt, "message", alice.id, body=f"hey @{dave.username}",
                    data={"mentions": [dave.id]})
        assert ev[ma]["body"] == "@all meeting" and ev[ma]["data"].get("mention_all") == "all", ev[ma]
        check_event(ev[rp], g, rp, "message", carol.id, body="answer", data={"reply_to": dq})
        check_event(ev[o2], g, o2, "message", carol.id, body=f"ordinary 2, cc @{dave.username}",
                    data={"mentions": [dave.id]})
        assert not [f for f in frames if f.get("type") == "error"], frames

        # then live as usual
        nxt = (await sendm(b, g, "after the resume"))["seq"]
        await d2.wait_seq(g, nxt)
        assert seqs(d2.conv_events(g)) == [nxt], seqs(d2.conv_events(g))
        # and history has everything
        hist = await history_map(api, dave, g)
        assert sorted(hist) == list(range(1, nxt + 1)), sorted(hist)
        assert hist[o1]["body"] == "ordinary 1" and hist[s_all]["body"] == "@all welcome!", hist

        # At most the latest 50 mentions are sent to a resuming session.
        await d2.close()
        acks = await pipeline_send(a, g, [f"@{dave.username} n{i}" if i % 4 else f"plain {i}"
                                          for i in range(72)])
        mentioning = [x["seq"] for i, x in enumerate(acks) if i % 4]
        assert len(mentioning) == 54
        # (cursors in the `auth` message this time)
        d3 = await h.ws(dave, auth="first", cursors={g: nxt}, name="dave-3")
        synced = await d3.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == g)
        frames = d3.msgs[:d3.msgs.index(synced)]
        assert synced.get("online_only") is True and synced.get("seq") == acks[-1]["seq"], synced
        assert events_between(frames, g) == []
        got = [f["event"]["seq"] for f in frames if f.get("type") == "mention"]
        assert got == mentioning[-50:], f"the latest 50 mentions, ascending: {got}"

        # A group of exactly --large-group members is not large.
        s1 = (await sendm(b, small, "@all a member may"))["seq"]
        c2, frames, synced = await resume(h, carol, "carol-2", small, 0)
        assert synced.get("online_only") in (None, False) and synced.get("seq") == s1, synced
        assert seqs(events_between(frames, small)) == list(range(1, s1 + 1)), frames


# --------------------------------------------------------------------------
# 6. REST equivalents, and the pins list


@async_test(60)
async def test_rest_actions_and_pins(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "rest")
        g = (await api.create_group(alice, [bob.id], title="rest"))["id"]
        a = await connect(h, alice, "alice", {g: 0})
        base = await last_seq(api, alice, g)
        P = f"/api/v1/conversations/{g}"

        async def http_send(user, body, reply_to=None, status=201):
            j = {"client_msg_id": cmid(), "body": body}
            if reply_to is not None:
                j["reply_to"] = reply_to
            r = await api.expect(status, "POST", P + "/messages", token=user.token, json_body=j)
            return r.body

        async def http_ok(method, path, user, body=None, changed=True):
            kw = {} if body is None else {"json_body": body}
            r = await api.req(method, path, token=user.token, **kw)
            assert r.status == 200, f"{method} {path}: {r!r}"
            assert "type" not in r.body, r
            assert r.body.get("conversation") == g and r.body.get("changed") is changed, r
            if changed:
                assert isinstance(r.body.get("seq"), int), r
            else:
                assert "seq" not in r.body, r
            return r.body

        m1 = (await http_send(alice, "first"))["seq"]
        m2 = (await http_send(bob, "second"))["seq"]
        assert (m1, m2) == (base + 1, base + 2), (base, m1, m2)
        ack = await http_send(bob, "a reply", reply_to=m1)
        assert ack.get("seq") == m2 + 1 and ack.get("duplicate") is False, ack
        rp = ack["seq"]
        e = await http_ok("PATCH", f"{P}/messages/{m1}", alice, {"body": "first, edited"})
        x1 = await http_ok("POST", f"{P}/messages/{m1}/reactions", bob, {"emoji": THUMBS})
        await http_ok("POST", f"{P}/messages/{m1}/reactions", bob, {"emoji": THUMBS}, changed=False)
        x2 = await http_ok("POST", f"{P}/messages/{m1}/reactions", bob,
                           {"emoji": THUMBS, "op": "remove"})
        await http_ok("POST", f"{P}/messages/{m1}/reactions", bob,
                      {"emoji": THUMBS, "op": "remove"}, changed=False)
        p1 = await http_ok("PUT", f"{P}/pins/{m1}", bob)
        await http_ok("PUT", f"{P}/pins/{m1}", alice, changed=False)
        p2 = await http_ok("PUT", f"{P}/pins/{m2}", alice)
        r = await api.expect(200, "GET", f"{P}/pins", token=bob.token)
        assert r.body.get("conversation") == g, r
        assert [x["seq"] for x in r.body["events"]] == [m2, m1], f"most recently pinned first: {r!r}"
        assert r.body["events"][1].get("body") == "first, edited", "current form"
        assert all(x.get("pinned") is True for x in r.body["events"]), r
        u1 = await http_ok("DELETE", f"{P}/pins/{m2}", alice)
        await http_ok("DELETE", f"{P}/pins/{m2}", alice, changed=False)
        dl = await http_ok("DELETE", f"{P}/messages/{m2}", bob)
        r = await api.req("PUT", f"{P}/notify", token=bob.token, json_body={"level": "mentions"})
        assert r.status == 200 and r.body == {"conversation": g, "changed": True}, r
        oks = [e, x1, x2, p1, p2, u1, dl]
        assert [o["seq"] for o in oks] == list(range(rp + 1, rp + 1 + len(oks))), oks
        head = oks[-1]["seq"]
        assert await last_seq(api, alice, g) == head
        assert (await conv_get(api, bob, g)).get("notify") == "mentions"

        # REST errors: the same codes with their statuses.
        for method, path, user, body, status, code in (
                ("PATCH", f"{P}/messages/{m1}", bob, {"body": "not mine"}, 403, "forbidden"),
                ("PATCH", f"{P}/messages/{m2}", bob, {"body": "deleted"}, 410, "gone"),
                ("PATCH", f"{P}/messages/{m1}", carol, {"body": "outsider"}, 404, "not_found"),
                ("PATCH", f"{P}/messages/{head + 50}", alice, {"body": "nothing"}, 404, "not_found"),
                ("PATCH", f"{P}/messages/1", alice, {"body": "created"}, 400, "bad_request"),
                ("PATCH", f"{P}/messages/{m1}", alice, {}, 400, "bad_request"),
                ("PATCH", f"{P}/messages/{m1}", alice, {"body": ""}, 400, "bad_request"),
                ("POST", f"{P}/messages/{m1}/reactions", bob, {}, 400, "bad_request"),
                ("DELETE", f"{P}/messages/{m1}", bob, None, 403, "forbidden"),
                ("DELETE", f"{P}/messages/{m1}", carol, None, 404, "not_found"),
                ("POST", f"{P}/messages/{m1}/reactions", bob, {"emoji": "abc"}, 400, "bad_request"),
                ("POST", f"{P}/messages/{m2}/reactions", bob, {"emoji": THUMBS}, 410, "gone"),
                ("PUT", f"{P}/pins/{m2}", bob, None, 410, "gone"),
                ("GET", f"{P}/pins", carol, None, 404, "not_found"),
                ("PUT", f"{P}/notify", bob, {"level": "loud"}, 400, "bad_request"),
                ("PUT", f"{P}/notify", carol, {"level": "none"}, 404, "not_found")):
            kw = {} if body is None else {"json_body": body}
            r = await api.req(method, path, token=user.token, **kw)
            assert r.status == status and r.code == code, \
                f"{method} {path} as {user}: expected {status} {code}, got {r!r}"
        r = await api.req("POST", P + "/messages", token=bob.token,
                          json_body={"client_msg_id": cmid(), "body": "re", "reply_to": m2})
        assert r.status == 410 and r.code == "gone", r
        assert await last_seq(api, alice, g) == head

        # The WebSocket saw every REST action live, in order.
        await a.wait_seq(g, head)
        evs = a.conv_events(g)
        assert seqs(evs) == list(range(1, head + 1)), seqs(evs)
        live = {x["seq"]: x for x in evs}
        check_event(live[rp], g, rp, "message", bob.id, body="a reply", data={"reply_to": m1},
                    reply_preview={"seq": m1, "sender": alice.id, "body": "first"})
        check_event(live[e["seq"]], g, e["seq"], "edit", alice.id, body="first, edited",
                    data={"target": m1})
        check_event(live[x2["seq"]], g, x2["seq"], "reaction", bob.id,
                    data={"target": m1, "emoji": THUMBS, "op": "remove", "count": 0})
        check_event(live[u1["seq"]], g, u1["seq"], "pin", alice.id, data={"target": m2, "op": "unpin"})
        check_event(live[dl["seq"]], g, dl["seq"], "delete", bob.id, data={"target": m2})

        # history: the reply's preview follows its parent's current form
        hist = await history_map(api, bob, g)
        assert hist[rp].get("reply_preview") == {"seq": m1, "sender": alice.id,
                                                 "body": "first, edited"}, hist[rp]

        # WebSocket `pins`: most recently pinned first, current form.
        m3 = (await sendm(a, g, "third"))["seq"]
        m4 = (await sendm(a, g, "fourth"))["seq"]
        for s_ in (m3, m4):
            await ok(a, pin(g, s_))

        async def pins():
            r = await a.request({"type": "pins", "conversation": g})
            assert r.get("type") == "pins" and r.get("conversation") == g, r
            return [x["seq"] for x in r["events"]], r

        got, r = await pins()
        assert got == [m4, m3, m1], r
        await ok(a, pin(g, m1, unpin=True))
        await ok(a, pin(g, m1))                                  # pinned again: now the latest
        await ok(a, edit(g, m3, "third, edited"))
        got, r = await pins()
        assert got == [m1, m4, m3], r
        assert r["events"][2].get("body") == "third, edited" and r["events"][2].get("pinned") is True, r
        await ok(a, delete(g, m4))                               # a deleted message is unpinned
        got, r = await pins()
        assert got == [m1, m3], r

        # A reply preview is the parent's first 100 characters (not bytes).
        long = ("\u00e9\U0001F600abc" * 30)
        assert len(long) == 150
        lp = (await sendm(a, g, long))["seq"]
        ack = await http_send(alice, "re: long", reply_to=lp)
        ev = await a.wait_for(lambda x: x.get("type") == "event" and x.get("seq") == ack["seq"])
        assert ev.get("reply_preview") == {"seq": lp, "sender": alice.id, "body": long[:100]}, ev
