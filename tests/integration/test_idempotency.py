"""Idempotent send: a retried client_msg_id stores nothing, returns the
original ack with duplicate=true, and delivers nothing again — on the same
connection, another connection, HTTP, after a reconnect, after a crash."""

import asyncio

from pclient import Harness, async_test, assert_contiguous, cmid, msg_events, seqs


def _key(ack):
    return (ack["id"], ack["seq"], ack["ts"])


def _count(events, sender, cm):
    return sum(1 for e in events if e.get("kind") == "message"
               and e.get("sender") == sender and e.get("client_msg_id") == cm)


@async_test(90)
async def test_idempotent_retry_everywhere(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "idem")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a1 = await h.ws(alice, name="a1")
        a2 = await h.ws(alice, name="a2")
        b = await h.ws(bob, name="b")
        X = cmid("idem")

        first = await a1.send_msg(cid, "exactly once", X)
        assert first["duplicate"] is False, first
        key = _key(first)

        def same(ack, where):
            assert ack.get("duplicate") is True, f"{where}: retry not flagged duplicate: {ack}"
            assert _key(ack) == key, f"{where}: retry got another ack {ack}, original {first}"
            assert ack["client_msg_id"] == X and ack["conversation"] == cid, ack

        same(await a1.send_msg(cid, "exactly once", X), "same connection")
        same(await a2.send_msg(cid, "exactly once", X), "other connection")

        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                          json_body={"client_msg_id": X, "body": "exactly once"})
        assert r.status == 200, f"HTTP retry of a stored client_msg_id answers 200: {r!r}"
        same(r.body, "HTTP send")

        await a1.close()
        a3 = await h.ws(alice, name="a3")
        same(await a3.send_msg(cid, "exactly once", X), "after reconnect")

        marker = await a3.send_msg(cid, "marker")
        assert marker["seq"] == first["seq"] + 1, f"a retry took a seq: {marker} after {first}"
        for c in (a2, a3, b):
            await c.wait_seq(cid, marker["seq"])
        for c in (a2, b):
            n = _count(c.conv_events(cid), alice.id, X)
            assert n == 1, f"{c.name} received the message {n} times"

        # Crash and restart: the retry still finds the original.
        await h.close_clients()
        await server.arestart()
        a4 = await h.ws(alice, name="a4")
        b2 = await h.ws(bob, auth="first", name="b2", cursors={cid: marker["seq"]})
        same(await a4.send_msg(cid, "exactly once", X), "after restart")
        marker2 = await a4.send_msg(cid, "marker2")
        assert marker2["seq"] == marker["seq"] + 1, marker2
        await b2.wait_seq(cid, marker2["seq"])
        assert [e["seq"] for e in b2.conv_events(cid)] == [marker2["seq"]], \
            f"after restart bob got: {b2.conv_events(cid)}"

        hist = await api.history_all(alice, cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        assert _count(hist, alice.id, X) == 1, f"stored more than once: {hist}"
        stored = [e for e in hist if e.get("client_msg_id") == X][0]
        assert _key(stored) == key and stored["body"] == "exactly once", stored
        assert [e["body"] for e in msg_events(hist)] == ["exactly once", "marker", "marker2"], hist

        # client_msg_id is unique per (conversation, sender): bob may reuse X,
        # and alice may reuse it in another conversation.
        bx = await b2.send_msg(cid, "bob's own", X)
        assert bx["duplicate"] is False and bx["seq"] == marker2["seq"] + 1, bx
        gid = (await api.create_group(alice, [bob.id], title="other"))["id"]
        gx = await a4.send_msg(gid, "other conversation", X)
        assert gx["duplicate"] is False and gx["conversation"] == gid, gx
        assert gx["id"] != first["id"]


@async_test(90)
async def test_idempotent_concurrent_retries(server):
    """The same client_msg_id raced on three connections (and pipelined twice
    on one): one message, one ack, exactly one duplicate=false."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "race")
        cid = (await api.open_dm(alice, bob.id))["id"]
        conns = [await h.ws(alice, name=f"a{i}") for i in range(3)]
        b = await h.ws(bob, name="b")
        cms = []
        for k in range(10):
            X = cmid(f"race{k}")
            cms.append(X)
            body = f"race {k}"
            # Two pipelined sends on conns[0] plus one each on the others.
            reqs = [await conns[0].send_nowait(cid, body, X)]
            reqs.append(await conns[0].send_nowait(cid, body, X))
            acks = await asyncio.gather(
                conns[0].wait_reply(reqs[0][0]), conns[0].wait_reply(reqs[1][0]),
                conns[1].send_msg(cid, body, X), conns[2].send_msg(cid, body, X))
            assert all(a["type"] == "sent" for a in acks), acks
            assert len({_key(a) for a in acks}) == 1, f"round {k}: different acks {acks}"
            fresh = [a for a in acks if a["duplicate"] is False]
            assert len(fresh) == 1, f"round {k}: expected exactly one original ack: {acks}"

        last = (await conns[1].send_msg(cid, "end"))["seq"]
        for c in conns + [b]:
            await c.wait_seq(cid, last)
            for X in cms:
                n = _count(c.conv_events(cid), alice.id, X)
                assert n == 1, f"{c.name} got {X} {n} times"
        hist = await api.history_all(bob, cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        for X in cms:
            assert _count(hist, alice.id, X) == 1, f"{X} stored {_count(hist, alice.id, X)} times"
        assert len(msg_events(hist)) == len(cms) + 1
