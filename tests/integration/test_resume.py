"""Reconnect and resume: a sync replays exactly the gap, in order, then goes
live with no gap and no duplicate at the seam."""

import asyncio
import base64
import json
import os
import select
import socket
import struct

from pclient import OP_TEXT, WS, Harness, async_test, build_frame, msg_events, pipeline_send, seq_ids, seqs

GAP = 500


@async_test(120)
async def test_resume_replays_the_gap_then_live(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "res")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice, name="a")
        b = await h.ws(bob, name="b")
        for i in range(5):
            await b.send_msg(cid, f"before {i}")
        await a.wait_seq(cid, (await b.send_msg(cid, "before last"))["seq"])
        S = a.conv_events(cid)[-1]["seq"]
        await a.close()

        acks = await pipeline_send(b, cid, [f"gap {i}" for i in range(GAP)], window=50)
        assert [x["seq"] for x in acks] == list(range(S + 1, S + GAP + 1)), "ack seqs"
        end = S + GAP

        a2 = await h.ws(alice, name="a2")
        listed = {x["id"]: x["last_seq"] for x in a2.ready["conversations"]}
        assert listed.get(cid) == end, a2.ready
        start = len(a2.msgs)
        await a2.send_json({"type": "sync", "cursors": {str(cid): S}})
        synced = await a2.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == cid,
                                   timeout=60, start=start, what="synced")
        assert synced["seq"] == end, synced
        upto = a2.msgs.index(synced)
        replay = [m for m in a2.msgs[start:upto] if m.get("type") == "event"]
        assert all(m["conversation"] == cid for m in replay), replay[:3]
        assert seqs(replay) == list(range(S + 1, end + 1)), \
            f"replay is not exactly {S + 1}..{end}: first {seqs(replay)[:5]}, len {len(replay)}"
        assert seq_ids(replay) == [(x["seq"], x["id"]) for x in acks]
        assert [e["body"] for e in replay] == [f"gap {i}" for i in range(GAP)]
        assert not [m for m in a2.msgs[start:] if m.get("type") == "error"], a2.errors()

        # Live traffic after the sync continues at the next seq.
        live = [await b.send_msg(cid, f"live {i}") for i in range(20)]
        await a2.wait_seq(cid, live[-1]["seq"])
        got = seqs(a2.conv_events(cid))
        assert got == list(range(S + 1, live[-1]["seq"] + 1)), \
            f"gap or duplicate at the seam: {got[GAP - 3:GAP + 5]}"
        assert seq_ids(a2.conv_events(cid)[GAP:]) == [(x["seq"], x["id"]) for x in live]


@async_test(120)
async def test_resume_while_messages_stream(server):
    """A sender streams while the client resumes (auth with cursors): the
    client's sequence is exactly S+1..end, whatever the interleaving."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "res")
        cid = (await api.open_dm(alice, bob.id))["id"]
        a = await h.ws(alice, name="a")
        b = await h.ws(bob, name="b")
        b2 = await h.ws(bob, name="b2")
        ack = await b.send_msg(cid, "first")
        await a.wait_seq(cid, ack["seq"])
        S = ack["seq"]
        await a.close()

        await pipeline_send(b, cid, [f"gap {i}" for i in range(300)], window=50)

        stream_acks = []
        started = asyncio.Event()

        def on_ack(i, x):
            stream_acks.append(x)
            if len(stream_acks) >= 20:
                started.set()

        stream = asyncio.ensure_future(pipeline_send(
            b2, cid, [f"stream {i}" for i in range(400)], window=4, on_ack=on_ack, timeout=60))
        await asyncio.wait_for(started.wait(), 30)
        a2 = await h.ws(alice, auth="first", cursors={cid: S}, name="a2")
        await asyncio.wait_for(stream, 60)
        end = max(x["seq"] for x in stream_acks)   # pipelined acks may wake out of order
        assert end == S + 700, end
        await a2.wait_seq(cid, end, timeout=60)
        got = seqs(a2.conv_events(cid))
        assert got == list(range(S + 1, end + 1)), \
            f"resume under traffic: len {len(got)}, expected {end - S}; " \
            f"dups {sorted({s for s in got if got.count(s) > 1})[:10]}, " \
            f"missing {sorted(set(range(S + 1, end + 1)) - set(got))[:10]}"
        synced = await a2.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == cid,
                                   what="synced")
        assert S + 300 <= synced["seq"] <= end, synced
        upto = a2.msgs.index(synced)
        before = [m["seq"] for m in a2.msgs[:upto] if m.get("type") == "event"]
        assert set(range(S + 1, synced["seq"] + 1)) <= set(before), \
            "synced came before the replay up to its seq was delivered"
        hist = await api.history_all(bob, cid)
        assert seq_ids(hist)[S:] == seq_ids(a2.conv_events(cid))


@async_test(60)
async def test_sync_edge_cases(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "res")
        dm = (await api.open_dm(alice, bob.id))["id"]
        grp = (await api.create_group(alice, [bob.id], title="g"))["id"]
        secret = (await api.open_dm(bob, carol.id))["id"]
        a = await h.ws(alice)
        m = [await a.send_msg(dm, f"dm {i}") for i in range(3)]
        g = [await a.send_msg(grp, f"g {i}") for i in range(3)]
        glast = g[-1]["seq"]
        await a.wait_seq(grp, glast)
        await a.wait_seq(dm, m[-1]["seq"])

        b = await h.ws(bob, name="b")
        start = len(b.msgs)
        # dm: cursor far above the end (treated as the end); grp: from 0
        # (everything, created included); secret: bob is a member, fine;
        # a conversation alice is not in is answered with not_found.
        await b.send_json({"type": "sync", "cursors": {str(dm): 10 ** 6, str(grp): 0}})
        s_dm = await b.wait_for(lambda x: x.get("type") == "synced" and x.get("conversation") == dm,
                                start=start, what="synced dm")
        s_g = await b.wait_for(lambda x: x.get("type") == "synced" and x.get("conversation") == grp,
                               start=start, what="synced grp")
        assert s_dm["seq"] == m[-1]["seq"], s_dm
        assert s_g["seq"] == glast, s_g
        assert b.conv_events(dm) == [], f"a cursor past the end replays nothing: {b.conv_events(dm)}"
        ge = b.conv_events(grp)
        assert seqs(ge) == list(range(1, glast + 1)), seqs(ge)
        assert ge[0]["kind"] == "created"
        assert [e["body"] for e in msg_events(ge)] == ["g 0", "g 1", "g 2"]

        start = len(a.msgs)
        await a.send_json({"type": "sync", "cursors": {str(secret): 0, str(dm): m[0]["seq"]}})
        err = await a.wait_for(lambda x: x.get("type") == "error", start=start, what="error")
        assert err["code"] == "not_found" and err.get("conversation") == secret, err
        s = await a.wait_for(lambda x: x.get("type") == "synced" and x.get("conversation") == dm,
                             start=start, what="synced dm")
        assert s["seq"] == m[-1]["seq"], s
        assert secret not in a.events, "a non-member got events through sync"
        replay = [x for x in a.msgs[start:] if x.get("type") == "event" and x["conversation"] == dm]
        assert seqs(replay) == [m[1]["seq"], m[2]["seq"]], replay


@async_test(120)
async def test_sync_on_a_live_connection_while_messages_stream(server):
    """Header auth (no cursors possible at the handshake), then `sync` as the
    first message while a sender streams: the server holds live delivery for
    that first message, so the connection sees exactly S+1..end, in order,
    with no duplicate and no gap at the seam (found by parley-bench's storm
    with --resume sync, which saw duplicates and reordering before)."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "res")
        cid = (await api.open_dm(alice, bob.id))["id"]
        b = await h.ws(bob, name="b")
        S = (await b.send_msg(cid, "first"))["seq"]
        await pipeline_send(b, cid, [f"gap {i}" for i in range(200)], window=50)

        stream_acks = []
        started = asyncio.Event()

        def on_ack(i, x):
            stream_acks.append(x)
            if len(stream_acks) >= 20:
                started.set()

        stream = asyncio.ensure_future(pipeline_send(
            b, cid, [f"stream {i}" for i in range(300)], window=4, on_ack=on_ack, timeout=60))
        await asyncio.wait_for(started.wait(), 30)
        a = await h.ws(alice, name="a")
        start = len(a.msgs)
        await a.send_json({"type": "sync", "cursors": {str(cid): S}})
        await asyncio.wait_for(stream, 60)
        end = max(x["seq"] for x in stream_acks)   # pipelined acks may wake out of order
        await a.wait_seq(cid, end, timeout=60)
        synced = await a.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == cid,
                                  start=start, what="synced")
        got = seqs(a.conv_events(cid))
        assert got == list(range(S + 1, end + 1)), \
            f"not exactly S+1..end: first {got[:8]}, around dups/gaps " \
            f"{[x for i, x in enumerate(got[1:]) if x != got[i] + 1][:8]}"
        upto = a.msgs.index(synced)
        after_sync_request = [m["seq"] for m in a.msgs[start:upto] if m.get("type") == "event"]
        assert S + 1 in after_sync_request, f"the replay never sent seq {S + 1}"
        replay = after_sync_request[after_sync_request.index(S + 1):]
        assert replay == list(range(S + 1, synced["seq"] + 1)), \
            f"replay not in order: {replay[:10]}..., synced at {synced['seq']}"
        tail = [m["seq"] for m in a.msgs[upto + 1:] if m.get("type") == "event"]
        assert tail == list(range(synced["seq"] + 1, end + 1)), \
            f"after synced: gap or duplicate: {tail[:10]}..., synced at {synced['seq']}"


@async_test(60)
async def test_handshake_session_without_sync_goes_live_losing_nothing(server):
    """A session authenticated at the handshake that never sends `sync` is
    held for at most a second, then receives everything since `ready`."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "hold")
        cid = (await api.open_dm(alice, bob.id))["id"]
        b = await h.ws(bob, name="b")
        a = await h.ws(alice, name="a")          # header auth, then silence
        base = {c["id"]: c["last_seq"] for c in a.ready["conversations"]}[cid]
        acks = [await b.send_msg(cid, f"during hold {i}") for i in range(5)]
        await a.wait_seq(cid, acks[-1]["seq"], timeout=10)
        acks += [await b.send_msg(cid, f"after hold {i}") for i in range(5)]
        await a.wait_seq(cid, acks[-1]["seq"], timeout=10)
        assert seqs(a.conv_events(cid)) == list(range(base + 1, acks[-1]["seq"] + 1))


def _first_read_after_auth(host, port, token, cursors):
    """Upgrades, sends a first-frame `auth` with cursors, and returns the
    text messages in the first bytes that arrive after it (one recv as soon
    as the socket is readable), then everything up to `synced`."""
    sk = socket.create_connection((host, port), timeout=10)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        sk.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
                    f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                    "Sec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += sk.recv(4096)
        assert head.startswith(b"HTTP/1.1 101"), head
        rest = head.split(b"\r\n\r\n", 1)[1]
        assert rest == b"", rest
        auth = {"type": "auth", "token": token, "cursors": {str(c): s for c, s in cursors.items()}}
        sk.sendall(build_frame(OP_TEXT, json.dumps(auth)))
        assert select.select([sk], [], [], 10)[0], "nothing after auth"
        first = sk.recv(1 << 20)

        def frames(buf):
            out, i = [], 0
            while i + 2 <= len(buf):
                n, o = buf[i + 1] & 0x7F, 2
                if n == 126:
                    if i + 4 > len(buf):
                        break
                    n, o = struct.unpack("!H", buf[i + 2:i + 4])[0], 4
                elif n == 127:
                    if i + 10 > len(buf):
                        break
                    n, o = struct.unpack("!Q", buf[i + 2:i + 10])[0], 10
                if i + o + n > len(buf):
                    break
                out.append(json.loads(buf[i + o:i + o + n]))
                i += o + n
            return out, buf[i:]

        got, left = frames(first)
        in_first = list(got)
        while not any(m.get("type") == "synced" for m in got):
            assert select.select([sk], [], [], 10)[0], f"no synced; got {got}"
            more, left = frames(left + sk.recv(1 << 20))
            got += more
        return in_first, got
    finally:
        sk.close()


@async_test(60)
async def test_resume_ready_arrives_with_the_first_replayed_page(server):
    """A client that resumes with cursors in its first frame gets `ready`,
    the replayed events and `synced` in one write (docs/design.md: the
    cork): the first bytes it can read hold all of them, in that order."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "res")
        cid = (await api.open_dm(alice, bob.id))["id"]
        b = await h.ws(bob, name="b")
        S = (await b.send_msg(cid, "seen"))["seq"]
        last = S
        for i in range(5):
            last = (await b.send_msg(cid, f"missed {i}"))["seq"]
        in_first, got = await asyncio.to_thread(
            _first_read_after_auth, server.host, server.port, alice.token, {cid: S})
        kinds = [m["type"] for m in got]
        assert kinds[0] == "ready", kinds
        events = [m for m in got if m["type"] == "event" and m["conversation"] == cid]
        assert [m["seq"] for m in events] == list(range(S + 1, last + 1)), kinds
        assert got[-1]["type"] == "synced" and got[-1]["seq"] == last, got[-1]
        # the point: nothing of it waited for a second write
        assert [m["type"] for m in in_first][:7] == ["ready"] + ["event"] * 5 + ["synced"], \
            [m["type"] for m in in_first]


@async_test(60)
async def test_auth_req_is_copied_into_ready_and_its_errors(server):
    """An `auth` with a req and cursors: `ready` and the errors about its
    cursors (a conversation the user left) carry that req; the replay of
    the others follows as usual."""
    import websockets
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "areq")
        cid = (await api.open_dm(a, b.id))["id"]
        g = (await api.create_group(a, [b.id]))["id"]
        await api.expect(204, "POST", f"/api/v1/conversations/{g}/leave", token=b.token)
        ws = await websockets.connect(server.ws_url, open_timeout=10, close_timeout=2)
        try:
            await ws.send(json.dumps({"type": "auth", "token": b.token, "req": "au",
                                      "cursors": {str(cid): 0, str(g): 0}}))
            got = []
            while not any(m.get("type") == "synced" for m in got):
                got.append(json.loads(await asyncio.wait_for(ws.recv(), 10)))
        finally:
            await ws.close()
        assert got[0]["type"] == "ready" and got[0]["req"] == "au", got[0]
        errs = [m for m in got if m.get("type") == "error"]
        assert [(e["code"], e["conversation"], e.get("req")) for e in errs] == [("not_found", g, "au")], errs
        synced = [m for m in got if m.get("type") == "synced"]
        assert synced[0]["conversation"] == cid and "req" not in synced[0], synced


@async_test(120)
async def test_a_group_everyone_left_resumes_exactly(server):
    """When every member of a busy group on a node has gone (its stream and
    recent frames go with them: design.md "Recent frames"; a stream kept a
    while longer was tried, benchmarks.md "streams that linger"), what is
    committed meanwhile (an edit and a removal included) reaches each
    member coming back exactly once, in order, in its current form, and a
    member removed meanwhile gets nothing of it. In cluster mode the members are all on one node and the
    writes go through the load balancer."""
    urls = getattr(server, "node_ws_urls", None)
    url = urls[0] if urls else server.ws_url
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol, dave = await api.register_many(4, "lg")
        g = (await api.create_group(alice, [bob.id, carol.id, dave.id]))["id"]

        async def connect(user, name):
            c = WS(url, user.token, name=name)
            h.clients.append(c)
            await c.connect()
            return c

        async def send(body):
            r = await api.expect(201, "POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                                 json_body={"client_msg_id": body, "body": body})
            return r.body["seq"]

        first = [await connect(u, u.username) for u in (bob, carol, dave)]
        for i in range(3):
            S = await send(f"before {i}")
        for c in first:
            await c.wait_seq(g, S)
            await c.close()
        await asyncio.sleep(0.3)                   # the node has seen them go

        m1 = await send("while away 1")
        m2 = await send("while away 2")
        await api.expect(200, "PATCH", f"/api/v1/conversations/{g}/messages/{m2}", token=alice.token,
                         json_body={"body": "while away 2, edited"})
        await api.remove_member(alice, g, dave.id)
        end = await send("after dave left")

        b = await connect(bob, "bob2")
        d = await connect(dave, "dave2")
        for c in (b, d):
            await c.send_json({"type": "sync", "cursors": {str(g): S}})
        sb = await b.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == g, what="bob synced")
        assert sb["seq"] == end, sb
        ev = [m for m in b.msgs[:b.msgs.index(sb)] if m.get("type") == "event" and m.get("conversation") == g]
        assert seqs(ev) == list(range(S + 1, end + 1)), seqs(ev)
        assert [e["kind"] for e in ev] == ["message", "message", "edit", "member_removed", "message"], ev
        assert ev[0]["seq"] == m1 and ev[0]["body"] == "while away 1"
        assert ev[1]["seq"] == m2 and ev[1]["body"] == "while away 2, edited" and "edited_ts" in ev[1], ev[1]
        assert ev[4]["body"] == "after dave left"

        # dave was removed while no session of his was connected: the
        # conversation is gone from his `ready` and his cursor is not_found
        # (protocol.md "What a member sees"), nothing of it is sent
        sd = await d.wait_for(lambda m: m.get("type") in ("synced", "error") and m.get("conversation") == g,
                              what="dave's sync answer")
        assert sd["type"] == "error" and sd["code"] == "not_found", sd
        assert g not in [c["id"] for c in d.ready["conversations"]], d.ready
        late = await send("later")
        await b.wait_seq(g, late)
        assert not [m for m in d.msgs if m.get("type") == "event" and m.get("conversation") == g], d.msgs[-3:]
        assert not b.errors(), b.errors()
