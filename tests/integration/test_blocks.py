"""Blocking a user (protocol.md "Blocking a user"; P12): either way, a
block stops the pair's direct messages, edits and reactions, and new
direct conversations; groups go on; the blocked user learns it only by
the answer. Both modes."""

import asyncio
import itertools

from pclient import PASSWORD, WS, Harness, async_test, until_ok


@async_test(90)
async def test_a_block_stops_the_direct_conversation_both_ways(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "blk")
        d = (await api.open_dm(alice, bob.id))["id"]
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        wb = await h.ws(bob, name="bob")
        wa = await h.ws(alice, name="alice")
        first = await wb.send_msg(d, "hello alice")

        await api.expect(400, "PUT", f"/api/v1/users/{alice.id}/block", token=alice.token)
        await api.expect(404, "PUT", "/api/v1/users/99999999/block", token=alice.token)
        r = (await api.expect(200, "DELETE", f"/api/v1/users/{bob.id}/block", token=alice.token)).body
        assert r == {"user": bob.id, "blocked": False, "changed": False}, r
        r = (await api.expect(200, "PUT", f"/api/v1/users/{bob.id}/block", token=alice.token)).body
        assert r == {"user": bob.id, "blocked": True, "changed": True}, r
        r = (await api.expect(200, "PUT", f"/api/v1/users/{bob.id}/block", token=alice.token)).body
        assert r["changed"] is False, r
        lst = (await api.expect(200, "GET", "/api/v1/blocks", token=alice.token)).body
        assert lst == {"blocked": [{"id": bob.id, "username": bob.username}]}, lst
        assert (await api.expect(200, "GET", "/api/v1/blocks", token=bob.token)).body == {"blocked": []}
        for who in (alice, bob):
            conv = (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=who.token)).body
            assert conv["blocked"] is True, conv
        assert "blocked" not in (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=bob.token)).body
        head = (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=alice.token)).body["last_seq"]

        # the blocked one, over the WebSocket and REST
        req = wb.next_req()
        await wb.send_json({"type": "send", "req": req, "conversation": d, "client_msg_id": "b-2",
                            "body": "are you there?"})
        err = await wb.wait_reply(req)
        assert err["type"] == "error" and err["code"] == "forbidden" and err["message"] == "blocked", err
        r = await api.req("POST", f"/api/v1/conversations/{d}/messages", token=bob.token,
                          json_body={"client_msg_id": "b-3", "body": "hello?"})
        assert r.status == 403 and r.body["error"]["message"] == "blocked", r
        r = await api.req("PATCH", f"/api/v1/conversations/{d}/messages/{first['seq']}", token=bob.token,
                          json_body={"body": "edited"})
        assert r.status == 403, r
        # ... and the blocker
        r = await api.req("POST", f"/api/v1/conversations/{d}/messages", token=alice.token,
                          json_body={"client_msg_id": "a-1", "body": "stop"})
        assert r.status == 403, r
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=alice.token)).body["last_seq"] == head
        # nor its retention, nor its encryption
        r = await api.req("PUT", f"/api/v1/conversations/{d}/retention", token=bob.token, json_body={"seconds": 1})
        assert r.status == 403 and r.body["error"]["message"] == "blocked", r
        r = await api.req("POST", f"/api/v1/conversations/{d}/e2ee", token=bob.token)
        assert r.status == 403 and r.body["error"]["message"] == "blocked", r
        # the existing conversation still opens (its history); groups go on
        again = await api.open_dm(bob, alice.id)
        assert again["id"] == d, again
        await wb.send_msg(g, "in the group")
        # a new direct conversation with a blocker: refused
        await api.expect(200, "PUT", f"/api/v1/users/{bob.id}/block", token=carol.token)
        r = await api.req("POST", "/api/v1/conversations", token=bob.token, json_body={"kind": "direct", "user": carol.id})
        assert r.status == 403 and r.body["error"]["message"] == "blocked", r

        # unblocked: it goes on
        await api.expect(200, "DELETE", f"/api/v1/users/{bob.id}/block", token=alice.token)
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=bob.token)).body["blocked"] is False
        m = await wb.send_msg(d, "thanks")
        await wa.wait_seq(d, m["seq"])


@async_test(90)
async def test_a_block_stops_typing_in_the_direct_conversation(server_factory):
    """Typing in the pair's direct conversation: an indicator in progress
    ends when the block comes, new ones are refused while it lasts (in a
    cluster the two are on different nodes), groups go on, and an unblock
    lets them through again."""
    server = server_factory(["--typing-ttl", "30000"])
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "bty")
        d = (await api.open_dm(alice, bob.id))["id"]
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        urls = getattr(server, "node_ws_urls", [server.ws_url])
        wa = WS(urls[0], alice.token, name="alice")
        wb = WS(urls[-1], bob.token, name="bob")
        for c in (wa, wb):
            h.clients.append(c)
            await c.connect()

        def typing(conv, state):
            return lambda m: m.get("type") == "typing" and m.get("conversation") == conv and m.get("state") == state

        await wb.send_json({"type": "typing", "conversation": d, "state": "start"})
        await wa.wait_for(typing(d, "start"))
        n = len(wa.msgs)
        await api.expect(200, "PUT", f"/api/v1/users/{bob.id}/block", token=alice.token)
        await wa.wait_for(typing(d, "stop"), start=n)          # long before the 30 s expiry

        # bob's node hears of the block on the bus, moments after alice's
        # (her stop comes from her own node): until then his start is taken
        # silently, and no node forwards it (the test below checks that)
        e = await until_ok(lambda: wb.request({"type": "typing", "conversation": d, "state": "start"},
                                              timeout=0.5))
        assert e["type"] == "error" and e["code"] == "forbidden" and e["message"] == "blocked", e
        e = await wa.request({"type": "typing", "conversation": d, "state": "start"})   # the blocker too
        assert e["type"] == "error" and e["code"] == "forbidden", e
        n = len(wa.msgs)
        await wb.send_json({"type": "typing", "conversation": g, "state": "start"})
        await wa.wait_for(typing(g, "start"), start=n)          # the group goes on
        assert not [m for m in wa.msgs[n:] if m.get("type") == "typing" and m.get("conversation") == d]

        await api.expect(200, "DELETE", f"/api/v1/users/{bob.id}/block", token=alice.token)

        async def start_reaches_alice():
            n = len(wa.msgs)
            await wb.send_json({"type": "typing", "conversation": d, "state": "start"})
            await wa.wait_for(typing(d, "start"), start=n, timeout=1)
        await until_ok(start_reaches_alice)                     # the flag travels on the bus


@async_test(90)
async def test_a_block_hides_presence_between_the_pair(server_factory):
    """Presence between two users who share only their direct conversation:
    no changes pushed and no query answer while a block exists, either way;
    an unblock brings it back. A third user sharing a group still sees."""
    server = server_factory(["--presence-coalesce", "100"])
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "bpr")
        await api.open_dm(alice, bob.id)
        await api.create_group(alice, [carol.id], title="g")
        urls = getattr(server, "node_ws_urls", [server.ws_url])
        wb = WS(urls[-1], bob.token, name="bob")
        wc = WS(urls[-1], carol.token, name="carol")
        for c in (wb, wc):
            h.clients.append(c)
            await c.connect()

        def status_of(w, uid, status):
            return lambda m: m.get("type") == "presence" and m.get("user") == uid and m.get("status") == status

        wa = WS(urls[0], alice.token, name="alice")
        h.clients.append(wa)
        await wa.connect()
        await wb.wait_for(status_of(wb, alice.id, "online"))
        r = await wb.request({"type": "presence_query", "users": [alice.id]})
        assert [u["user"] for u in r["users"]] == [alice.id], r

        await api.expect(200, "PUT", f"/api/v1/users/{alice.id}/block", token=bob.token)
        for who, other in ((wb, alice), (wa, bob)):
            deadline = asyncio.get_running_loop().time() + 10
            while True:                                     # the flag reaches every node
                r = await who.request({"type": "presence_query", "users": [other.id]})
                if r["users"] == [] or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.1)
            assert r["users"] == [], r
        nb, nc = len(wb.msgs), len(wc.msgs)
        await wa.send_json({"type": "presence", "status": "away"})
        await wc.wait_for(status_of(wc, alice.id, "away"), start=nc)    # carol, in the group, sees it
        await wb.ping()
        assert not [m for m in wb.msgs[nb:] if m.get("type") == "presence" and m.get("user") == alice.id], wb.msgs[nb:]
        r = await api.expect(200, "GET", f"/api/v1/presence?users={alice.id}", token=bob.token)
        assert r.body == {"users": []}, r.body

        await api.expect(200, "DELETE", f"/api/v1/users/{alice.id}/block", token=bob.token)
        deadline = asyncio.get_running_loop().time() + 10
        while True:
            r = await wb.request({"type": "presence_query", "users": [alice.id]})
            if r["users"] or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.1)
        assert [(u["user"], u["status"]) for u in r["users"]] == [(alice.id, "away")], r
        tries = itertools.count(1)

        async def change_reaches_bob():
            status = "online" if next(tries) % 2 else "away"   # a change each time (alice is away now)
            nb = len(wb.msgs)
            await wa.send_json({"type": "presence", "status": status})
            await wb.wait_for(status_of(wb, alice.id, status), start=nb, timeout=1.5)
        await until_ok(change_reaches_bob)                  # pushed changes flow again


@async_test(90)
async def test_an_account_deletion_lifts_the_blocks_it_made(server):
    """protocol.md "Account deletion": the blocks the account made are
    lifted (its direct conversation with someone it blocked takes that
    one's sends again); a block of it by someone else stays theirs. Audit
    G2 #4: the deleted account's block refused the other's sends for
    good, and no one could lift it."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "bdel")
        d = (await api.open_dm(alice, bob.id))["id"]
        await api.expect(200, "PUT", f"/api/v1/users/{alice.id}/block", token=bob.token)
        await api.expect(200, "PUT", f"/api/v1/users/{bob.id}/block", token=carol.token)
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=alice.token)).body["blocked"] is True
        await api.expect(204, "DELETE", "/api/v1/me", token=bob.token, json_body={"password": PASSWORD})

        conv = (await api.expect(200, "GET", f"/api/v1/conversations/{d}", token=alice.token)).body
        assert conv["blocked"] is False, conv
        r = await api.req("POST", f"/api/v1/conversations/{d}/messages", token=alice.token,
                          json_body={"client_msg_id": "after-1", "body": "are you gone?"})
        assert r.status in (200, 201), r
        wa = await h.ws(alice, name="alice")
        req = wa.next_req()
        await wa.send_json({"type": "send", "req": req, "conversation": d, "client_msg_id": "after-2",
                            "body": "still here"})
        ack = await wa.wait_reply(req)
        assert ack["type"] == "sent", ack
        lst = (await api.expect(200, "GET", "/api/v1/blocks", token=carol.token)).body
        assert lst == {"blocked": [{"id": bob.id, "username": f"deleted#{bob.id}"}]}, lst
