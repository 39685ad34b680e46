"""Receipts (M6) and read state across devices (M7): delivered/read cursors
are monotonic, idempotent, durable, reach the sender, aggregate for groups,
and clear unread counts on the reader's other devices."""

import asyncio

from pclient import Harness, async_test


def receipts_of(ws, conv, user):
    return [m for m in ws.msgs if isinstance(m, dict) and m.get("type") == "receipt"
            and m.get("conversation") == conv and m.get("user") == user]


@async_test(60)
async def test_dm_delivered_then_read_and_no_regress(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rc")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        b = await h.ws(bob)
        ack = await a.send_msg(cid, "are you there?")
        seq = ack["seq"]
        await b.wait_seq(cid, seq)

        # bob's device acknowledges delivery: alice sees delivered, not read
        await b.send_json({"type": "delivered", "conversation": cid, "seq": seq})
        r = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                             and m.get("delivered_seq", 0) >= seq, what="delivered receipt")
        assert r["conversation"] == cid and r["read_seq"] < seq, r

        # bob reads: alice sees read
        await b.send_json({"type": "read", "conversation": cid, "seq": seq})
        r = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                             and m.get("read_seq", 0) >= seq, what="read receipt")
        assert r["delivered_seq"] >= seq, r
        # bob's own session gets his unread count with it
        own = await b.wait_for(lambda m: m.get("type") == "receipt" and m.get("read_seq", 0) >= seq)
        assert own["unread"] == 0, own

        # backwards and repeated receipts change nothing and announce nothing
        n_before = len(receipts_of(a, cid, bob.id))
        for t, s in (("read", seq), ("delivered", seq), ("read", 1), ("delivered", 1)):
            await b.send_json({"type": t, "conversation": cid, "seq": s})
        # a second device of bob repeating the same values: also nothing
        b2 = await h.ws(bob, name="bob2")
        await b2.send_json({"type": "read", "conversation": cid, "seq": seq})
        await b2.send_json({"type": "delivered", "conversation": cid, "seq": 1})
        await b.ping()
        await b2.ping()
        await a.ping()
        await asyncio.sleep(0.3)
        assert len(receipts_of(a, cid, bob.id)) == n_before, receipts_of(a, cid, bob.id)

        # the cursors are durable and visible through the API
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/receipts?seq={seq}", token=alice.token)
        cur = {m["user"]: m for m in r.body["members"]}
        assert cur[bob.id]["read_seq"] == seq and cur[bob.id]["delivered_seq"] == seq, r.body
        assert r.body["message"]["read"]["users"] == [bob.id], r.body
        await server.arestart()
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/receipts", token=alice.token)
        cur = {m["user"]: m for m in r.body["members"]}
        assert cur[bob.id]["read_seq"] == seq, r.body


@async_test(60)
async def test_group_aggregate_shows_exactly_who(server):
    async with Harness(server) as h:
        api = h.api
        u = await api.register_many(4, "ag")
        cid = (await api.create_group(u[0], [x.id for x in u[1:]]))["id"]
        ws = [await h.ws(x, name=x.username) for x in u]
        ack = await ws[0].send_msg(cid, "status check")
        seq = ack["seq"]
        for w in ws[1:]:
            await w.wait_seq(cid, seq)
        # u1 and u2 got it on a device; u1 also read it; u3 did nothing
        await ws[1].send_json({"type": "read", "conversation": cid, "seq": seq})
        await ws[2].send_json({"type": "delivered", "conversation": cid, "seq": seq})
        await ws[0].wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == u[2].id)
        await ws[0].wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == u[1].id)

        r = await ws[0].request({"type": "receipts", "conversation": cid, "seq": seq})
        assert r["type"] == "receipts", r
        msg = r["message"]
        assert msg["sender"] == u[0].id and msg["seq"] == seq, r
        assert sorted(msg["delivered"]["users"]) == sorted([u[1].id, u[2].id]), r
        assert msg["delivered"]["count"] == 2, r
        assert msg["read"]["users"] == [u[1].id] and msg["read"]["count"] == 1, r
        # the same over REST, and refused to a non-member
        rr = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/receipts?seq={seq}", token=u[3].token)
        assert rr.body["message"] == msg, rr.body
        outsider, = await api.register_many(1, "out")
        await api.expect(404, "GET", f"/api/v1/conversations/{cid}/receipts?seq={seq}", token=outsider.token)
        wo = await h.ws(outsider, name="outsider")
        e = await wo.request({"type": "read", "conversation": cid, "seq": seq})
        assert e["type"] == "error" and e["code"] == "not_found", e
        # a receipt without a subscription is the store's to refuse: an
        # outsider's and one for no conversation at all move nothing
        for conv in (cid, 999999, 2**53 - 1):
            e = await wo.request({"type": "delivered", "conversation": conv, "seq": 1})
            assert e["type"] == "error" and e["code"] == "not_found", e
            assert e["receipt"] == "delivered" and e["conversation"] == conv, e
        r = await ws[0].request({"type": "receipts", "conversation": cid, "seq": seq})
        assert r["message"] == msg, r


@async_test(60)
async def test_read_on_one_device_clears_unread_on_the_other(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "ud")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        phone = await h.ws(bob, name="phone")
        laptop = await h.ws(bob, name="laptop")
        last = None
        for i in range(3):
            last = (await a.send_msg(cid, f"ping {i}"))["seq"]
        await laptop.wait_seq(cid, last)
        await phone.wait_seq(cid, last)
        r = await api.expect(200, "GET", "/api/v1/conversations", token=bob.token)
        conv = next(c for c in r.body["conversations"] if c["id"] == cid)
        assert conv["unread"] == 3, conv

        await phone.send_json({"type": "read", "conversation": cid, "seq": last})
        m = await laptop.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                                  and m.get("read_seq") == last, what="read sync on the laptop")
        assert m["unread"] == 0, m
        r = await api.expect(200, "GET", "/api/v1/conversations", token=bob.token)
        conv = next(c for c in r.body["conversations"] if c["id"] == cid)
        assert conv["unread"] == 0 and conv["read_seq"] == last, conv
        # a fresh device sees it too
        tablet = await h.ws(bob, name="tablet")
        listed = {c["id"]: c for c in tablet.ready["conversations"]}
        assert listed[cid]["unread"] == 0, tablet.ready


@async_test(60)
async def test_own_receipt_carries_unread_mentions(server):
    """A read on one device tells the user's other devices its unread
    mentions too (protocol.md "Receipts"); other members' frames carry
    neither count. Over REST's read mark as well."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "um")
        cid = (await api.create_group(alice, [bob.id, carol.id]))["id"]
        a = await h.ws(alice)
        phone = await h.ws(bob, name="phone")
        laptop = await h.ws(bob, name="laptop")
        seqs = [(await a.send_msg(cid, body))["seq"]
                for body in (f"hi @{bob.username}", "plain", f"again @{bob.username}", "more")]
        await phone.wait_seq(cid, seqs[-1])
        await laptop.wait_seq(cid, seqs[-1])
        await phone.send_json({"type": "read", "conversation": cid, "seq": seqs[1]})
        m = await laptop.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                                  and m.get("read_seq") == seqs[1], what="read sync on the laptop")
        assert m["unread"] == 2 and m["unread_mentions"] == 1, m
        r = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                             and m.get("read_seq") == seqs[1], what="bob's read at alice")
        assert "unread" not in r and "unread_mentions" not in r, r
        await api.expect(204, "POST", f"/api/v1/conversations/{cid}/read", token=bob.token,
                         json_body={"seq": seqs[-1]})
        m = await laptop.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                                  and m.get("read_seq") == seqs[-1], what="REST read on the laptop")
        assert m["unread"] == 0 and m["unread_mentions"] == 0, m


@async_test(60)
async def test_rest_read_marks(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rr")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        seq = (await a.send_msg(cid, "hello"))["seq"]
        await api.expect(204, "POST", f"/api/v1/conversations/{cid}/read", token=bob.token,
                         json_body={"seq": seq})
        r = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id)
        assert r["read_seq"] == seq, r
        await api.expect(400, "POST", f"/api/v1/conversations/{cid}/read", token=bob.token,
                         json_body={"seq": "x"})


@async_test(30)
async def test_a_receipt_at_seq_0_is_a_no_op(server):
    """protocol.md "Receipts": a value at or below the stored cursor changes
    nothing and sends nothing; 0 is such a value, over REST and WebSocket
    (audit I: it was bad_request). A non-member still gets not_found."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, eve = await api.register_many(3, "rz")
        cid = (await api.open_dm(alice, bob.id))["id"]
        # in a cluster alice on node 1, bob's device and every receipt on
        # node 0: the receipts cross the bus, and the marker at the end is
        # ordered after them (one node publishes them all)
        a = await h.ws_at(1, alice, name="alice")
        b = await h.ws_at(0, bob, name="bob")
        api0 = h.api_at(0)
        hello = (await a.send_msg(cid, "hello"))["seq"]
        for kind in ("read", "delivered"):
            await api0.expect(204, "POST", f"/api/v1/conversations/{cid}/{kind}", token=bob.token,
                              json_body={"seq": 0})
            await api0.expect(404, "POST", f"/api/v1/conversations/{cid}/{kind}", token=eve.token,
                              json_body={"seq": 0})
            await api0.expect(400, "POST", f"/api/v1/conversations/{cid}/{kind}", token=bob.token,
                              json_body={"seq": -1})
            start = len(b.msgs)
            await b.send_json({"type": kind, "req": 77, "conversation": cid, "seq": 0})
            await b.ping()
            assert [m for m in b.msgs[start:] if m.get("req") == 77] == [], b.msgs[start:]
        await a.ping()
        assert [m for m in a.msgs if m.get("type") == "receipt"] == [], a.msgs
        r = await api.req("GET", f"/api/v1/conversations/{cid}/receipts", token=alice.token)
        assert r.status == 200, r
        mine = [m for m in r.body.get("members", []) if m.get("user") == bob.id]
        assert mine and (mine[0]["delivered_seq"], mine[0]["read_seq"]) == (0, 0), r.body
        # Absence barrier (pclient.py): a receipt alice is entitled to, by the
        # same path. Each REST receipt above published anything before its
        # 204, and a WS one on b would have been a store job ahead of this
        # one in node 0's writer (done callbacks, hence publishes, in order):
        # a receipt from the seq-0 ones would reach alice before this one.
        await b.send_json({"type": "read", "conversation": cid, "seq": hello})
        marker = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == bob.id
                                  and m.get("read_seq") == hello, what="bob's read receipt (marker)")
        assert [m for m in a.msgs if m.get("type") == "receipt"] == [marker], a.msgs


@async_test(30)
async def test_a_receipt_below_the_members_joining_moves_nothing(server):
    """Audit E3: a member added at seq 5 that marked seq 2 read had read_seq
    2 sent to everyone and listed, a message it cannot see."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "rj")
        g = await api.create_group(alice, [bob.id])
        cid = g["id"]
        # in a cluster alice on node 1, carol's receipts on node 0: they cross
        # the bus, and the last one (the marker) is ordered after the others
        a = await h.ws_at(1, alice, name="alice")
        api0 = h.api_at(0)
        for i in range(4):
            await a.send_msg(cid, f"before carol {i}")
        r = await api.add_member(alice, cid, carol.id)
        assert r.status in (200, 201), r
        joined = (await a.send_msg(cid, "after carol"))["seq"] - 1      # carol's member_added
        # far below, and one below (audit M3: joined - 1 moved both cursors
        # there and sent a receipt showing seq joined - 1, alice's message, read)
        for seq in (2, joined - 1):
            for kind in ("read", "delivered"):
                await api0.expect(204, "POST", f"/api/v1/conversations/{cid}/{kind}", token=carol.token,
                                  json_body={"seq": seq})
        await a.ping()
        assert receipts_of(a, cid, carol.id) == [], receipts_of(a, cid, carol.id)
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/receipts", token=alice.token)
        mine = [m for m in r.body["members"] if m["user"] == carol.id]
        assert not mine or (mine[0]["read_seq"] == 0 and mine[0]["delivered_seq"] == 0), r.body
        # a read at or above its joining still works; it is also the absence
        # barrier (pclient.py): node 0 published anything of the reads below
        # before their 204s, so before this receipt, which alice does get
        await api0.expect(204, "POST", f"/api/v1/conversations/{cid}/read", token=carol.token,
                          json_body={"seq": joined + 1})
        got = await a.wait_for(lambda m: m.get("type") == "receipt" and m.get("user") == carol.id)
        assert got["read_seq"] == joined + 1, got
        assert receipts_of(a, cid, carol.id) == [got], receipts_of(a, cid, carol.id)
