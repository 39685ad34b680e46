"""Direct conversations: open, exchange both ways, echo, history, reopen."""

from pclient import (Harness, async_test, assert_contiguous, msg_events, seqs)


def _check_ack(ack):
    assert ack["type"] == "sent", ack
    assert ack["duplicate"] is False, ack
    assert isinstance(ack["seq"], int) and ack["seq"] >= 1, ack
    assert isinstance(ack["id"], str) and ack["id"].isdigit(), ack
    assert isinstance(ack["ts"], int) and ack["ts"] > 1_700_000_000_000, ack


@async_test(60)
async def test_dm_exchange_both_ways(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "dm")

        # Look the peer up by name (case-insensitively), then open the DM.
        r = await api.expect(200, "GET", f"/api/v1/users/{bob.username.upper()}", token=alice.token)
        assert r.body["id"] == bob.id and r.body["username"] == bob.username, r

        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": bob.id})
        assert r.status == 201, r
        conv = r.body
        cid = conv["id"]
        assert isinstance(cid, int), r
        assert conv["kind"] == "direct", r
        assert sorted(m["id"] for m in conv["members"]) == sorted([alice.id, bob.id]), r
        # members carry names, so clients can show who is who without a lookup
        assert {m["id"]: m["username"] for m in conv["members"]} == \
            {alice.id: alice.username, bob.id: bob.username}, r
        base = conv["last_seq"]
        assert isinstance(base, int) and base >= 0, r

        # Opening it again, from either side, gives the same conversation (200).
        for who, other in ((alice, bob), (bob, alice)):
            r = await api.req("POST", "/api/v1/conversations", token=who.token,
                              json_body={"kind": "direct", "user": other.id})
            assert r.status == 200, f"re-open by {who}: {r!r}"
            assert r.body["id"] == cid, f"re-open by {who} gave another conversation: {r!r}"

        a = await h.ws(alice)
        b = await h.ws(bob)
        for c, u in ((a, alice), (b, bob)):
            assert c.ready["protocol"] == 1, c.ready
            assert c.ready["user"]["id"] == u.id, c.ready
            listed = {x["id"]: x["last_seq"] for x in c.ready["conversations"]}
            assert listed.get(cid) == base, f"ready does not list the DM with last_seq {base}: {c.ready}"

        # Alternate senders; every send waits for its ack.
        sent = []       # (sender user, body, ack)
        for i in range(6):
            for c, u in ((a, alice), (b, bob)):
                body = f"{u.username} says {i}: héllo ✓"
                ack = await c.send_msg(cid, body)
                _check_ack(ack)
                sent.append((u, body, ack))

        ack_seqs = [s[2]["seq"] for s in sent]
        assert ack_seqs == list(range(base + 1, base + 1 + len(sent))), \
            f"ack seqs are not contiguous from {base + 1}: {ack_seqs}"
        ids = [int(s[2]["id"]) for s in sent]
        assert len(set(ids)) == len(ids), f"duplicate message ids: {ids}"
        # Snowflake ids sort by creation time to the millisecond (protocol.md
        # "message id"); two ids of one millisecond from different nodes
        # (cluster mode: alice and bob may be on different nodes) sort by
        # node. Each node's own ids strictly increase.
        ms = [i >> 22 for i in ids]
        assert ms == sorted(ms), f"ids of successive sends do not sort by time: {ids}"
        for node in {(i >> 12) & 0x3FF for i in ids}:
            mine = [i for i in ids if (i >> 12) & 0x3FF == node]
            assert mine == sorted(mine), f"one node's ids do not increase: {ids}"

        last = ack_seqs[-1]
        expected = [(ack["seq"], ack["id"], u.id, body, ack["client_msg_id"], ack["ts"])
                    for u, body, ack in sent]
        for c in (a, b):
            await c.wait_seq(cid, last)
            evs = c.conv_events(cid)
            assert_contiguous(seqs(evs), base + 1, f"{c.name} event seqs")
            got = [(e["seq"], e["id"], e["sender"], e["body"], e["client_msg_id"], e["ts"])
                   for e in msg_events(evs)]
            assert got == expected, f"{c.name} saw {got}\nexpected {expected}"
            assert all(e["conversation"] == cid for e in evs)

        # History, from both sides, is the same log in order.
        for u in (alice, bob):
            hist = await api.history_all(u, cid)
            assert_contiguous(seqs(hist), 1, f"history seqs for {u}")
            assert hist[-1]["seq"] == last, hist[-3:]
            got = [(e["seq"], e["id"], e["sender"], e["body"], e["client_msg_id"], e["ts"])
                   for e in msg_events(hist)]
            assert got == expected, f"history for {u}: {got}"

        # Paging: before / after / window, always ascending.
        r = await api.history(alice, cid, before=last + 1, limit=5)
        assert r.status == 200, r
        assert seqs(r.body["events"]) == list(range(last - 4, last + 1)), r
        assert r.body["has_more"] is True, r
        assert r.body["conversation"] == cid, r
        r = await api.history(alice, cid, after=last)
        assert r.status == 200 and r.body["events"] == [] and r.body["has_more"] is False, r
        r = await api.history(alice, cid, after=base + 2, before=base + 6)
        assert r.status == 200, r
        assert seqs(r.body["events"]) == [base + 3, base + 4, base + 5], r
        r = await api.history(alice, cid, after=base, limit=3)
        assert seqs(r.body["events"]) == [base + 1, base + 2, base + 3] and r.body["has_more"] is True, r

        # WebSocket history answers the same.
        rep = await a.request({"type": "history", "conversation": cid, "before": last + 1, "limit": 4})
        assert rep["type"] == "history" and rep["conversation"] == cid, rep
        assert seqs(rep["events"]) == list(range(last - 3, last + 1)), rep
        assert rep["has_more"] is True, rep


@async_test(30)
async def test_dm_refusals(server):
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "dm")
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": alice.id})
        assert r.status == 400, f"a DM with yourself must be refused: {r!r}"
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": 987654321})
        assert r.status == 404 and r.code == "not_found", r
        r = await api.req("GET", "/api/v1/users/nosuchuser_zz", token=alice.token)
        assert r.status == 404 and r.code == "not_found", r
        r = await api.expect(200, "GET", "/api/v1/me", token=alice.token)
        assert r.body == {"id": alice.id, "username": alice.username}, r


@async_test(30)
async def test_dm_conversation_list_and_unread(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "dm")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice)
        acks = [await a.send_msg(cid, f"m{i}") for i in range(3)]
        r = await api.expect(200, "GET", "/api/v1/conversations", token=bob.token)
        convs = {c["id"]: c for c in r.body["conversations"]}
        assert cid in convs, r
        c = convs[cid]
        assert c["last_seq"] == acks[-1]["seq"], c
        assert c["unread"] == 3, f"bob has 3 unread messages from alice: {c}"
        assert c["last"]["seq"] == acks[-1]["seq"] and c["last"]["id"] == acks[-1]["id"], c
        r = await api.expect(200, "GET", "/api/v1/conversations", token=alice.token)
        mine = {c["id"]: c for c in r.body["conversations"]}[cid]
        assert mine["unread"] == 0, f"own messages are never unread: {mine}"
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=bob.token)
        assert r.body["id"] == cid and r.body["kind"] == "direct", r
