"""Flow control (docs/protocol.md "Flow control", chat/flow.c): when a
conversation's fan-out lags, the acks of its senders wait; nothing is lost,
every send is acknowledged exactly once, and every member gets everything.

Correctness only, never timing: the overload is bounded (a few hundred
messages) and the bound is low (--flow-lag 1) so that it engages at once:
readers authenticated at the handshake are held (up to a second, waiting
for a `sync` that never comes) and so lag from the first message on."""

import asyncio

from pclient import Harness, assert_contiguous, async_test, pipeline_send, seqs
from test_limits import metrics

MEMBERS = 50          # the group
READERS = 20          # members online that only read
SENDERS = 4           # members online that send at full speed
PER_SENDER = 150
WINDOW = 16           # sends in flight per sender (a closed loop, like every client)


@async_test(150)
async def test_overloaded_group_loses_nothing_and_acks_everything(server_factory):
    server = server_factory(["--flow-lag", "1", "--flow-share", "10",
                             "--rate-user-msgs", "0", "--rate-conv-msgs", "0"])
    async with Harness(server) as h:
        api = h.api
        users = await api.register_many(MEMBERS, "fl")
        owner = users[0]
        cid = (await api.create_group(owner, [u.id for u in users[1:]]))["id"]
        senders = [await h.ws(u, auth="first", name=f"s{i}") for i, u in enumerate(users[:SENDERS])]
        readers = await asyncio.gather(*[h.ws(u, name=f"r{i}")            # held at the handshake
                                         for i, u in enumerate(users[SENDERS:SENDERS + READERS])])
        before = metrics(server)

        acks = await asyncio.gather(*[
            pipeline_send(s, cid, [f"s{k} m{i}" for i in range(PER_SENDER)], window=WINDOW, timeout=90)
            for k, s in enumerate(senders)])

        # every send acknowledged once, as new, in order per sender
        for k, a in enumerate(acks):
            assert all(x["type"] == "sent" and x["duplicate"] is False for x in a), a[:3]
            assert [x["seq"] for x in a] == sorted(x["seq"] for x in a), f"sender {k}: acks out of order"
        all_seqs = sorted(x["seq"] for a in acks for x in a)
        assert len(set(all_seqs)) == SENDERS * PER_SENDER, "two sends got one seq"
        first, last = all_seqs[0], all_seqs[-1]
        assert_contiguous(all_seqs, what="acked seqs")
        for s in senders:                                 # exactly one reply per send
            sent = [m for m in s.msgs if m.get("type") == "sent"]
            assert len(sent) == PER_SENDER, (s, len(sent))

        # every online member gets every message, in order, once
        for c in senders + list(readers):
            await c.wait_seq(cid, last, timeout=90)
            got = [q for q in seqs(c.conv_events(cid)) if q >= first]
            assert got == list(range(first, last + 1)), \
                f"{c}: gap, duplicate or reordering: {len(got)} events, first {got[:3]}"
            assert not c.errors(), (c, c.errors()[:3])
        # and the log holds exactly what was acknowledged
        hist = await api.history_all(users[-1], cid)        # an offline member
        bodies = sorted(e["body"] for e in hist if e["kind"] == "message")
        assert bodies == sorted(f"s{k} m{i}" for k in range(SENDERS) for i in range(PER_SENDER))

        # the pushback path was taken: some acks waited for the readers
        after = metrics(server)
        held = after["parley_flow_held_acks_total"] - before["parley_flow_held_acks_total"]
        assert held > 0, "flow control never held an ack: the test did not exercise it"
