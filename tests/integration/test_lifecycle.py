"""The data lifecycle (protocol.md "Data lifecycle"; P9): retention per
conversation, workspace and server, erased by the purge without an event;
legal holds (server admins) that stop it; a user's export; account
deletion. Every test runs embedded and as a cluster."""

import asyncio
import json
import secrets
import time
import urllib.parse


from pclient import PASSWORD, WS, Harness, User, async_test, every_node_barrier


async def register_as(api, name):
    r = await api.expect(201, "POST", "/api/v1/auth/register", json_body={"username": name, "password": PASSWORD})
    b = r.body
    return User(b["user"]["id"], b["user"]["username"], PASSWORD, b["access_token"], b["refresh_token"], b)


async def retention(api, user, path, seconds, status=200):
    return (await api.expect(status, "PUT", f"/api/v1/{path}/retention", token=user.token,
                             json_body={"seconds": seconds})).body


async def message_at(api, user, conv, seq):
    page = (await api.expect(200, "GET", f"/api/v1/conversations/{conv}/messages?after={seq - 1}&limit=1",
                             token=user.token)).body
    return page["events"][0]


async def wait_erased(api, user, conv, seqs, timeout=20):
    """Until every seq of seqs reads as deleted (the purge runs each second)."""
    deadline = time.monotonic() + timeout
    while True:
        evs = [await message_at(api, user, conv, s) for s in seqs]
        if all(e.get("deleted") is True for e in evs):
            return evs
        assert time.monotonic() < deadline, f"not erased in {timeout}s: {evs}"
        await asyncio.sleep(0.3)


async def search(api, user, q):
    r = await api.expect(200, "GET", "/api/v1/search?" + urllib.parse.urlencode({"q": q}), token=user.token)
    return r.body["results"]


@async_test(120)
async def test_retention_erases_without_an_event_and_holds_stop_it(server_factory):
    boss = "boss" + secrets.token_hex(4)
    s = server_factory(["--admins", boss, "--purge-interval", "1"])
    async with Harness(s) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "ret")
        admin = await register_as(api, boss)
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        mk = (await api.open_dm(alice, bob.id))["id"]      # the absence barrier's markers
        wb = await h.ws(bob, name="bob")
        m1 = await wb.send_msg(g, "zanzibar one")
        m2 = await wb.send_msg(g, "zanzibar two")

        # who may set it, and what a bad value gets
        await retention(api, bob, f"conversations/{g}", 60, status=403)        # a member
        await retention(api, carol, f"conversations/{g}", 60, status=404)      # not one
        for bad in ("60", -1, 3155760001, 1.5, None):
            await retention(api, alice, f"conversations/{g}", bad, status=400)
        before = (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=alice.token)).body
        assert before["retention_seconds"] == 0 and before["retention_source"] is None, before

        conv = await retention(api, alice, f"conversations/{g}", 2)
        assert conv["id"] == g and conv["retention_seconds"] == 2, conv
        assert conv["retention_source"] == "conversation", conv
        listed = (await api.expect(200, "GET", "/api/v1/conversations", token=alice.token)).body["conversations"]
        assert [(c["retention_seconds"], c["retention_source"]) for c in listed if c["id"] == g] == \
            [(2, "conversation")], listed
        ev = await wb.wait_for(lambda m: m.get("type") == "event" and m.get("conversation") == g
                               and m.get("kind") == "retention", what="retention event")
        assert ev["data"] == {"seconds": 2} and ev["sender"] == alice.id, ev
        head = conv["last_seq"]

        # the purge: tombstones in place, no event, the log as it was, not found
        evs = await wait_erased(api, alice, g, [m1["seq"], m2["seq"]])
        assert all("body" not in e or e["body"] is None for e in evs), evs
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=alice.token)).body["last_seq"] == head
        assert await search(api, bob, "zanzibar") == []
        # ... and nothing reached the sessions
        await wb.ping()
        # absence barrier (pclient.py): any node's purge may have erased them
        # (a store job; an event would be published in its done callback).
        # A marker from every node, sent after the erasure was seen, is a
        # later job of that node's writer, so published after it
        await every_node_barrier(h, alice, mk, [wb])
        assert [m for m in wb.conv_events(g) if m.get("seq", 0) > head] == [], wb.conv_events(g)

        # a legal hold (server admins only) stops the purge; a release lets it go on
        k = (await api.create_group(alice, [bob.id], title="kept"))["id"]
        await retention(api, alice, f"conversations/{k}", 1)
        await api.expect(403, "PUT", f"/api/v1/conversations/{k}/hold", token=alice.token)
        held = (await api.expect(200, "PUT", f"/api/v1/conversations/{k}/hold", token=admin.token)).body
        assert held == {"conversation": k, "legal_hold": True}, held
        await api.expect(404, "PUT", "/api/v1/conversations/99999999/hold", token=admin.token)
        kept = await wb.send_msg(k, "evidence")
        await asyncio.sleep(3.5)
        assert (await message_at(api, alice, k, kept["seq"]))["body"] == "evidence"
        gone = (await api.expect(200, "DELETE", f"/api/v1/conversations/{k}/hold", token=admin.token)).body
        assert gone == {"conversation": k, "legal_hold": False}, gone
        await wait_erased(api, alice, k, [kept["seq"]])

        # a server admin may set any conversation's, without being in it
        conv = await retention(api, admin, f"conversations/{k}", 0)
        assert conv == {"id": k, "retention_seconds": 0, "retention_source": None}, conv

        # a workspace's: its admins; its channels follow it unless they have their own
        w = (await api.expect(201, "POST", "/api/v1/workspaces", token=alice.token, json_body={"name": "acme"})).body
        await api.expect(200, "POST", f"/api/v1/workspaces/{w['id']}/members", token=alice.token,
                         json_body={"user": bob.id})
        # a server admin's account cannot go while --admins names it (the name would be free)
        r = await api.expect(403, "DELETE", "/api/v1/me", token=admin.token, json_body={"password": PASSWORD})
        assert "--admins" in r.body["error"]["message"], r
        await retention(api, bob, f"workspaces/{w['id']}", 60, status=403)
        await retention(api, carol, f"workspaces/{w['id']}", 60, status=404)
        ws = await retention(api, alice, f"workspaces/{w['id']}", 86400)
        assert ws["id"] == w["id"] and ws["retention_seconds"] == 86400, ws
        gen = (await api.expect(200, "GET", f"/api/v1/conversations/{w['general']}", token=bob.token)).body
        assert gen["retention_seconds"] == 86400 and gen["retention_source"] == "workspace", gen
        # the list says it too (it did not: clients had to GET each conversation)
        listed = (await api.expect(200, "GET", "/api/v1/conversations", token=bob.token)).body["conversations"]
        entry = next(c for c in listed if c["id"] == w["general"])
        assert entry["retention_seconds"] == 86400 and entry["retention_source"] == "workspace", entry
        await api.expect(403, "PUT", f"/api/v1/workspaces/{w['id']}/hold", token=alice.token)
        wh = (await api.expect(200, "PUT", f"/api/v1/workspaces/{w['id']}/hold", token=admin.token)).body
        assert wh == {"workspace": w["id"], "legal_hold": True}, wh
        wr = await retention(api, admin, f"workspaces/{w['id']}", 7)
        assert wr == {"id": w["id"], "retention_seconds": 7}, wr


@async_test(90)
async def test_the_servers_retention(server_factory):
    s = server_factory(["--retention", "2", "--purge-interval", "1"])
    async with Harness(s) as h:
        api = h.api
        alice, bob = await api.register_many(2, "sret")
        d = (await api.open_dm(alice, bob.id))["id"]
        conv = (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=bob.token)).body
        assert conv["retention_seconds"] == 2 and conv["retention_source"] == "server", conv
        listed = (await api.expect(200, "GET", "/api/v1/conversations", token=bob.token)).body["conversations"]
        assert [(c["retention_seconds"], c["retention_source"]) for c in listed if c["id"] == d] == [(2, "server")]
        wa = await h.ws(alice, name="alice")
        m = await wa.send_msg(d, "short lived")
        await retention(api, bob, f"conversations/{d}", 3600)            # either member of a DM
        keep = await wa.send_msg(d, "kept an hour")
        await asyncio.sleep(3.5)
        assert (await message_at(api, bob, d, keep["seq"]))["body"] == "kept an hour"
        # the first one was older than 2 s when the own retention came? Only if the
        # purge ran in between; either way, unset again and both go.
        await retention(api, bob, f"conversations/{d}", 0)
        await wait_erased(api, bob, d, [m["seq"], keep["seq"]])


@async_test(120)
async def test_export_and_account_deletion(server_factory):
    s = server_factory(["--purge-interval", "1"])
    async with Harness(s) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "del")
        d = (await api.open_dm(alice, bob.id))["id"]
        e = (await api.open_dm(carol, bob.id))["id"]                 # end-to-end encrypted
        await api.expect(200, "POST", f"/api/v1/conversations/{e}/e2ee", token=carol.token)
        wc = await h.ws(carol, name="carol")
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        w = (await api.expect(201, "POST", "/api/v1/workspaces", token=alice.token, json_body={"name": "acme"})).body
        await api.expect(200, "POST", f"/api/v1/workspaces/{w['id']}/members", token=alice.token,
                         json_body={"user": bob.id})
        wb = await h.ws(bob, name="bob")
        wa = await h.ws(alice, name="alice")
        sent = [await wb.send_msg(d, "bob in the dm"), await wb.send_msg(g, "bob in g"),
                await wb.send_msg(w["general"], "bob in general")]
        mine = await wa.send_msg(g, "alice in g")

        # the export: the account, its conversations and workspaces, its messages in pages
        ex = (await api.expect(200, "GET", "/api/v1/me/export", token=bob.token)).body
        assert ex["user"] == {"id": bob.id, "username": bob.username}, ex
        assert sorted(c["id"] for c in ex["conversations"]) == sorted([d, e, g, w["general"]]), ex
        assert [x["id"] for x in ex["workspaces"]] == [w["id"]] and ex["push_devices"] == [], ex
        assert ex["messages"] == "/api/v1/me/messages" and ex["exported"] > 0, ex
        got, after = [], None
        for _ in range(5):
            q = "limit=2" + (f"&after={after}" if after else "")
            page = (await api.expect(200, "GET", f"/api/v1/me/messages?{q}", token=bob.token)).body
            got += page["messages"]
            after = page["next"]
            if after is None:
                break
        assert [(m["conversation"], m["seq"], m["body"]) for m in got] == \
            [(m["conversation"], m["seq"], b) for m, b in zip(sent, ["bob in the dm", "bob in g", "bob in general"])], got
        assert all(m["sender"] == bob.id and m["kind"] == "message" for m in got), got
        for bad in ("after=x", "after=-1", "after=+5", "after=%205", "limit=0", "limit=201",
                    "after=99999999999999999999"):
            await api.expect(400, "GET", f"/api/v1/me/messages?{bad}", token=bob.token)
        await api.expect(401, "GET", "/api/v1/me/export")

        # deletion: the password again; a wrong one changes nothing
        await api.expect(400, "DELETE", "/api/v1/me", token=bob.token, json_body={})
        r = await api.expect(403, "DELETE", "/api/v1/me", token=bob.token, json_body={"password": "not it at all"})
        assert r.body["error"]["message"] == "wrong password", r
        still = (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=bob.token)).body
        assert still["role"] == "member", still
        await api.expect(204, "DELETE", "/api/v1/me", token=bob.token, json_body={"password": PASSWORD})
        await wb.wait_closed()
        assert wb.close_code == 4001, wb.close_code
        await api.expect(401, "GET", "/api/v1/me", token=bob.token)
        await api.expect(401, "POST", "/api/v1/auth/login", json_body={"username": bob.username,
                                                                        "password": PASSWORD})

        # the others see ordinary events: left the group, evicted from general
        await wa.wait_for(lambda m: m.get("type") == "event" and m.get("conversation") == g
                          and m.get("kind") == "member_left" and m["data"]["user"] == bob.id, what="left g")
        await wa.wait_for(lambda m: m.get("type") == "event" and m.get("conversation") == w["general"]
                          and m.get("kind") == "member_removed" and m["data"]["user"] == bob.id, what="left general")
        ws = (await api.expect(200, "GET", f"/api/v1/workspaces/{w['id']}", token=alice.token)).body
        assert [m["id"] for m in ws["members"]] == [alice.id], ws
        # its keys went: carol's encrypted conversation says its device list changed
        await wc.wait_for(lambda m: m.get("type") == "event" and m.get("conversation") == e
                          and m.get("kind") == "e2ee" and m["data"] == {"op": "devices", "user": bob.id},
                          what="devices event")
        dm = (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=alice.token)).body
        names = {m["id"]: m["username"] for m in dm["members"]}
        assert names[bob.id] == f"deleted#{bob.id}", dm

        # its messages go with the purge; the others' stay
        await wait_erased(api, alice, d, [sent[0]["seq"]])
        await wait_erased(api, alice, g, [sent[1]["seq"]])
        await wait_erased(api, alice, w["general"], [sent[2]["seq"]])
        assert (await message_at(api, alice, g, mine["seq"]))["body"] == "alice in g"

        # the name is free; the old id is no one to add
        again = await api.expect(201, "POST", "/api/v1/auth/register",
                                 json_body={"username": bob.username, "password": PASSWORD})
        assert again.body["user"]["id"] != bob.id
        await api.expect(404, "POST", "/api/v1/conversations", token=alice.token,
                         json_body={"kind": "direct", "user": bob.id})
        r = await api.add_member(alice, g, bob.id)
        assert r.status == 404, r


@async_test(60)
async def test_export_lists_conversations_with_last_as_the_list_does(server):
    """protocol.md "Export": conversations as GET /api/v1/conversations lists
    them (with last). The export's read was submitted before its "with
    last" flag was set, so last was null at random (audit K); and the
    embedded store left a reply's reply_preview out of last."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "exlast")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice, name="alice")
        b = await h.ws(bob, name="bob")
        first = await a.send_msg(cid, "first")
        rep = await b.request({"type": "send", "conversation": cid, "client_msg_id": "r1",
                               "body": "second", "reply_to": first["seq"]})
        assert rep["type"] == "sent", rep
        lst = (await api.expect(200, "GET", "/api/v1/conversations", token=alice.token)).body
        last = lst["conversations"][0]["last"]
        assert last and last["seq"] == rep["seq"] and last["body"] == "second", last
        assert last["reply_preview"] == {"seq": first["seq"], "sender": alice.id, "body": "first"}, last
        for _ in range(12):
            ex = (await api.expect(200, "GET", "/api/v1/me/export", token=alice.token)).body
            assert ex["conversations"] == lst["conversations"], (ex["conversations"], lst["conversations"])


@async_test(60)
async def test_two_devices_deleting_the_account_at_once_both_hear_it_is_done(server):
    """DELETE /api/v1/me from two sessions at once: the account goes once,
    and both answers say so (204); the second was a 503 "nothing was
    changed, try again" although the account was gone (audit P2 F2).
    A member of a group, so that each request has leaving to do first."""
    async with Harness(server) as h:
        api = h.api
        for _ in range(3):
            alice, carol = await api.register_many(2, "dd")
            await api.create_group(carol, [alice.id], title="g")
            second = (await api.login(alice))["access_token"]
            rs = await asyncio.gather(*[api.req("DELETE", "/api/v1/me", token=t,
                                                json_body={"password": alice.password})
                                        for t in (alice.token, second)])
            assert sorted(r.status for r in rs) == [204, 204], [(r.status, r.body) for r in rs]
            await api.expect(404, "GET", f"/api/v1/users/{alice.username}", token=carol.token)
            await api.expect(401, "GET", "/api/v1/me", token=second)


@async_test(60)
async def test_my_messages_in_a_conversation_i_left_show_nothing_done_after(server):
    """Audit L3 (high): /me/messages gave a member who had left (or was
    removed) its old reply with the parent's *current* text in
    reply_preview (an edit made after it left), and reactions and pins
    added after it was gone. Now such a message keeps only its own part;
    in a conversation it is still in, the current form as before."""
    async with Harness(server) as h:
        api = h.api
        alice, ivy, jon = await api.register_many(3, "left")
        g = (await api.create_group(alice, [ivy.id, jon.id], title="k"))["id"]
        still = (await api.create_group(alice, [ivy.id], title="still"))["id"]

        async def send(u, conv, body, **kw):
            r = await api.expect(201, "POST", f"/api/v1/conversations/{conv}/messages", token=u.token,
                                 json_body={"client_msg_id": body, "body": body, **kw})
            return r.body["seq"]

        parent = await send(alice, g, "plan v1")
        reply = await send(ivy, g, "ivy replies", reply_to=parent)
        mine = await send(ivy, g, "ivy plain")
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{mine}", token=ivy.token,
                         json_body={"body": "ivy plain, edited by ivy"})
        p2 = await send(alice, still, "still v1")
        r2 = await send(ivy, still, "ivy replies where she stays", reply_to=p2)
        await api.expect(204, "POST", f"/api/v1/conversations/{g}/leave", token=ivy.token)
        # after ivy is gone: an edit of the parent, a reaction and a pin on her reply
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{parent}", token=alice.token,
                         json_body={"body": "plan v2: the office code is 4711"})
        await api.expect(200, "POST", f"/api/v1/conversations/{g}/messages/{reply}/reactions",
                         token=jon.token, json_body={"emoji": "👎"})
        await api.expect(200, "PUT", f"/api/v1/conversations/{g}/pins/{reply}", token=alice.token)
        # the same in the conversation she is still in: she sees it, as history does
        await api.expect(200, "PATCH", f"/api/v1/conversations/{still}/messages/{p2}", token=alice.token,
                         json_body={"body": "still v2"})
        await api.expect(200, "POST", f"/api/v1/conversations/{still}/messages/{r2}/reactions",
                         token=alice.token, json_body={"emoji": "👍"})
        await api.expect(200, "POST", f"/api/v1/conversations/{still}/messages/{r2}/reactions",
                         token=ivy.token, json_body={"emoji": "🎉"})

        got = (await api.expect(200, "GET", "/api/v1/me/messages", token=ivy.token)).body["messages"]
        by = {(m["conversation"], m["seq"]): m for m in got}
        left_reply, left_plain = by[(g, reply)], by[(g, mine)]
        assert left_reply["body"] == "ivy replies" and left_reply["data"]["reply_to"] == parent, left_reply
        for key in ("reply_preview", "reactions", "pinned"):
            assert key not in left_reply, (key, left_reply)
        assert "4711" not in json.dumps(got), got
        assert left_plain["body"] == "ivy plain, edited by ivy" and left_plain["edited_ts"] > 0, left_plain
        # added back: its old reply still shows nothing of the gap (audit L4)
        await api.expect(200, "POST", f"/api/v1/conversations/{g}/members", token=alice.token,
                         json_body={"user": ivy.id})
        again = {(m["conversation"], m["seq"]): m
                 for m in (await api.expect(200, "GET", "/api/v1/me/messages", token=ivy.token)).body["messages"]}
        for key in ("reply_preview", "reactions", "pinned"):
            assert key not in again[(g, reply)], (key, again[(g, reply)])
        assert "4711" not in json.dumps(list(again.values())), again
        kept = by[(still, r2)]
        assert kept["reply_preview"]["body"] == "still v2", kept
        # "me" is the caller's, as in history (audit I3: always false here)
        assert [(x["emoji"], x["count"], x["me"]) for x in kept["reactions"]] == \
            [("👍", 1, False), ("🎉", 1, True)], kept


@async_test(90)
async def test_a_replay_after_the_purge_shows_erased_messages_erased(server_factory):
    """Audit L6: a member catching up in a group with recent frames (3 or
    more sessions online keep them) got the text of messages the purge had
    erased, while history showed them deleted. In cluster mode the purge
    may run on any node: the one that erased tells the others (the bus's
    `erased`)."""
    s = server_factory(["--purge-interval", "1"])
    async with Harness(s) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "era")
        g = (await api.create_group(alice, [bob.id, carol.id], title="g"))["id"]
        urls = getattr(s, "node_ws_urls", None)             # cluster: all on one node
        url = urls[0] if urls else s.ws_url

        async def connect(user, name):
            c = WS(url, user.token, name=name)
            h.clients.append(c)
            await c.connect()
            return c

        online = [await connect(u, u.username) for u in (alice, bob, carol)]
        before = await online[0].send_msg(g, "before")
        await online[0].wait_seq(g, before["seq"])
        later = await connect(bob, "bob-phone")             # catches up later from `before`
        secret = await online[0].send_msg(g, "erased soon")
        r = await api.expect(201, "POST", f"/api/v1/conversations/{g}/messages", token=carol.token,
                             json_body={"client_msg_id": "re", "body": "a reply", "reply_to": secret["seq"]})
        for c in online:
            await c.wait_seq(g, r.body["seq"])
        await retention(api, alice, f"conversations/{g}", 1)
        await wait_erased(api, bob, g, [secret["seq"], r.body["seq"]])
        start = len(later.msgs)
        await later.send_json({"type": "sync", "cursors": {str(g): before["seq"]}})
        synced = await later.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == g,
                                      start=start, what="synced")
        ev = {m["seq"]: m for m in later.msgs[start:later.msgs.index(synced)]
              if m.get("type") == "event" and m.get("conversation") == g}
        for seq in (secret["seq"], r.body["seq"]):
            assert ev[seq].get("deleted") is True and "body" not in ev[seq] and "reply_preview" not in ev[seq], ev[seq]
