"""Concurrent senders in one group: seqs are contiguous and unique, and every
receiver sees the one same order."""

import asyncio

from pclient import (Harness, async_test, assert_contiguous, msg_events, pipeline_send,
                     seq_ids, seqs)

CLIENTS = 8
PER_CLIENT = 50


@async_test(120)
async def test_concurrent_senders_one_order(server):
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(CLIENTS, "cc")
        cid = (await api.create_group(users[0], [u.id for u in users[1:]], title="busy"))["id"]
        conns = [await h.ws(u, name=f"c{i}") for i, u in enumerate(users)]
        base = {x["id"]: x["last_seq"] for x in conns[0].ready["conversations"]}[cid]

        async def sender(i, c):
            bodies = [f"c{i}-m{k}" for k in range(PER_CLIENT)]
            return await pipeline_send(c, cid, bodies, window=10)

        results = await asyncio.gather(*[sender(i, c) for i, c in enumerate(conns)])
        acks = [a for r in results for a in r]
        total = CLIENTS * PER_CLIENT
        assert len(acks) == total

        # Acks: a permutation of base+1 .. base+total; ids unique.
        assert sorted(a["seq"] for a in acks) == list(range(base + 1, base + 1 + total)), \
            "ack seqs are not a permutation of a contiguous range"
        assert len({a["id"] for a in acks}) == total, "duplicate message ids"
        assert all(a["duplicate"] is False for a in acks)
        # One sender's acks follow its send order (one connection, one conversation).
        for r in results:
            s = [a["seq"] for a in r]
            assert s == sorted(s), f"one connection's sends were reordered: {s}"

        last = base + total
        for c in conns:
            await c.wait_seq(cid, last, timeout=30)
        ref = seq_ids(conns[0].conv_events(cid))
        assert_contiguous([s for s, _ in ref], base + 1, "c0 event seqs")
        assert sorted(ref) == sorted((a["seq"], a["id"]) for a in acks), \
            "delivered events differ from the acknowledged messages"
        for c in conns[1:]:
            assert seq_ids(c.conv_events(cid)) == ref, f"{c.name} saw another order"

        by_seq = {a["seq"]: a for a in acks}
        for e in msg_events(conns[3].conv_events(cid)):
            a = by_seq[e["seq"]]
            assert (e["id"], e["ts"], e["client_msg_id"]) == (a["id"], a["ts"], a["client_msg_id"]), (e, a)
            assert e["body"].startswith(f"c{users.index(next(u for u in users if u.id == e['sender']))}-"), e

        # The stored log is the same: contiguous from 1, same ids.
        hist = await api.history_all(users[5], cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        assert seq_ids(hist)[base:] == ref, "history differs from the delivered order"
