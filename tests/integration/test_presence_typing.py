"""Presence (M11) merged over devices with heartbeats and last seen, typing
(M12) that expires by itself, and rate limits on both that leave message
delivery alone."""

import asyncio
import os
import signal
import time

import pytest

from pclient import WS, Api, Harness, async_test

FAST = ["--presence-timeout", "2", "--presence-coalesce", "100", "--typing-ttl", "1500"]


def presence_of(ws, uid):
    return [m for m in ws.msgs if isinstance(m, dict) and m.get("type") == "presence"
            and m.get("user") == uid]


async def wait_status(ws, uid, status, timeout=10):
    """The next presence update about uid with that status."""
    return await ws.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == uid
                             and m.get("status") == status, timeout=timeout, what=f"{uid} {status}")


async def watched(h, prefix, name="b1"):
    """A watcher and bob sharing a DM, both connected, bob seen online by
    the watcher: (watcher, bob, watcher's ws, bob's ws)."""
    watcher, bob = await h.api.register_many(2, prefix)
    await h.api.open_dm(watcher, bob.id)
    w = await h.ws(watcher, name="watcher")
    b = await h.ws(bob, name=name)
    await wait_status(w, bob.id, "online")
    return watcher, bob, w, b


@async_test(60)
async def test_presence_merged_over_devices_then_offline_with_last_seen(server_factory):
    server = server_factory(FAST)
    async with Harness(server) as h:
        api = h.api
        watcher, bob, w, b1 = await watched(h, "pr")
        b2 = await h.ws(bob, name="b2")

        # b1 goes away and disconnects; b2 keeps heartbeating: still online
        await b1.close()
        t_end = time.monotonic() + 3.0
        while time.monotonic() < t_end:
            await b2.send_json({"type": "heartbeat"})
            await asyncio.sleep(0.3)
        assert all(m["status"] == "online" for m in presence_of(w, bob.id)), presence_of(w, bob.id)
        r = await w.request({"type": "presence_query", "users": [bob.id]})
        assert r["users"][0]["status"] == "online", r

        # b2 stays connected but stops heartbeating: offline after the timeout
        silent_since = int(time.time() * 1000)
        m = await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                             and m.get("status") == "offline", timeout=10, what="bob offline")
        assert m["last_seen"] >= silent_since - 1000, m
        assert m["last_seen"] <= int(time.time() * 1000), m
        r = await w.request({"type": "presence_query", "users": [bob.id, 999999]})
        assert [x["user"] for x in r["users"]] == [bob.id], r          # unknown ids left out
        assert r["users"][0]["status"] == "offline", r

        # away is merged too
        await b2.send_json({"type": "presence", "status": "away"})
        m = await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                             and m.get("status") == "away", timeout=10, what="bob away")
        # strangers cannot see bob's presence
        stranger, = await api.register_many(1, "st")
        r = await api.expect(200, "GET", f"/api/v1/presence?users={bob.id}", token=stranger.token)
        assert r.body["users"] == [], r.body
        r = await api.expect(200, "GET", f"/api/v1/presence?users={bob.id}", token=watcher.token)
        assert r.body["users"][0]["status"] == "away", r.body


@pytest.mark.embedded_only("another node's sessions count once its view arrives (a tick later)")
@async_test(60)
async def test_presence_query_sees_a_session_that_has_just_authenticated(server):
    """presence_query answered `offline` for up to a second after the user
    connected (its view was published at the next tick, after a coalesce
    window; audit B). The server's own sessions now count as they are."""
    async with Harness(server) as h:
        watcher, bob = await h.api.register_many(2, "pq")
        await h.api.open_dm(watcher, bob.id)
        w = await h.ws(watcher, name="watcher")
        await h.ws(bob, name="bob")
        r = await w.request({"type": "presence_query", "users": [bob.id]})
        assert r["users"][0]["status"] == "online", r
        r = await h.api.expect(200, "GET", f"/api/v1/presence?users={bob.id}", token=watcher.token)
        assert r.body["users"][0]["status"] == "online", r.body


@async_test(60)
async def test_offline_is_pushed_when_the_last_device_disconnects(server_factory):
    """A user whose last session closes is announced offline, with its last
    seen, to the people it shares a conversation with (the timeout case
    above is not the only way to go offline). Failed before the fix: only
    presence_query said offline; no push came (the announcement looked for
    the user's conversations among its sessions, which were gone)."""
    server = server_factory(FAST)
    async with Harness(server) as h:
        watcher, bob = await h.api.register_many(2, "po")
        await h.api.open_dm(watcher, bob.id)
        w = await h.ws(watcher, name="watcher")
        b = await h.ws(bob, name="bob")
        await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                         and m.get("status") == "online", what="bob online")
        t0 = int(time.time() * 1000)
        await b.close()
        m = await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                             and m.get("status") == "offline", timeout=10, what="bob offline")
        assert t0 - 1000 <= m["last_seen"] <= int(time.time() * 1000) + 1000, m


@async_test(60)
async def test_flapping_connection_is_coalesced(server_factory):
    server = server_factory(["--presence-coalesce", "1500"])
    async with Harness(server) as h:
        api = h.api
        watcher, bob = await api.register_many(2, "fl")
        await api.open_dm(watcher, bob.id)
        w = await h.ws(watcher, name="watcher")
        b = await h.ws(bob, name="bob")
        await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id)
        await b.close()
        # reconnect and drop 10 times within the coalescing window
        for i in range(10):
            x = await h.ws(bob, name=f"flap{i}")
            await x.close()
        last = await h.ws(bob, name="final")
        await asyncio.sleep(2.0)
        await w.ping()
        updates = presence_of(w, bob.id)
        assert len(updates) <= 3, updates
        assert updates[-1]["status"] == "online", updates
        await last.ping()


@async_test(60)
async def test_a_change_undone_within_the_window_is_never_announced(server_factory):
    """protocol.md "Presence": none when the state ends where it started.
    Audit Y: `away` and back within 0.2 s was announced twice (`away` at
    once, `online` a window later), and so was an away user's second device
    connecting and closing (`online`, then `away`)."""
    server = server_factory(["--presence-coalesce", "1000"])
    async with Harness(server) as h:
        watcher, bob, w, b = await watched(h, "un")
        await asyncio.sleep(1.2)                      # past the window of that announcement
        for _ in range(3):
            await b.send_json({"type": "presence", "status": "away"})
            await asyncio.sleep(0.2)
            await b.send_json({"type": "presence", "status": "online"})
            await asyncio.sleep(1.5)
        await w.ping()
        assert [m["status"] for m in presence_of(w, bob.id)] == ["online"], presence_of(w, bob.id)
        # a change that lasts is announced, once
        await b.send_json({"type": "presence", "status": "away"})
        await wait_status(w, bob.id, "away")
        await asyncio.sleep(1.2)
        for i in range(3):                             # a second device, there and gone
            x = await h.ws(bob, name=f"blip{i}")
            await asyncio.sleep(0.1)
            await x.close()
            await asyncio.sleep(1.5)
        await w.ping()
        assert [m["status"] for m in presence_of(w, bob.id)] == ["online", "away"], presence_of(w, bob.id)
        await b.ping()


@async_test(60)
async def test_a_small_window_announces_what_lasts_it(server_factory, mode):
    """protocol.md "Presence": a change is announced once it has lasted one
    coalesce window. Audit O9: at --presence-coalesce 300 an `away` of
    0.6 s was mostly never announced (the window was counted from a 250 ms
    tick that saw the change, so it was 500-750 ms). A flap shorter than
    the window still sends nothing. Cluster mode, watcher and user on
    different nodes maybe, lasts a little longer for the bus's jitter."""
    server = server_factory(["--presence-coalesce", "300"])
    lasting = 0.6 if mode == "embedded" else 0.8
    async with Harness(server) as h:
        watcher, bob, w, b = await watched(h, "sw")
        await asyncio.sleep(0.5)
        for _ in range(3):
            await b.send_json({"type": "presence", "status": "away"})
            await asyncio.sleep(lasting)
            await b.send_json({"type": "presence", "status": "online"})
            await asyncio.sleep(1.0)
        await b.send_json({"type": "presence", "status": "away"})     # a flap: nothing
        await asyncio.sleep(0.1)
        await b.send_json({"type": "presence", "status": "online"})
        await asyncio.sleep(1.0)
        await w.ping()
        assert [m["status"] for m in presence_of(w, bob.id)] == ["online"] + ["away", "online"] * 3, \
            presence_of(w, bob.id)


@async_test(60)
async def test_frames_and_presence_query_agree_on_last_seen(server_factory):
    """protocol.md "Presence": every update and presence_query answer carries
    last_seen, the latest activity the server knows of. Audit O9: an
    `away`/`online` frame's was often 1 ms below what presence_query and
    GET /presence answered for the same moment (the monotonic heartbeat
    converted to wall time at two instants)."""
    server = server_factory(["--presence-coalesce", "200"])
    async with Harness(server) as h:
        watcher, bob, w, b = await watched(h, "ls1")
        for status in ("away", "online", "away"):
            await asyncio.sleep(0.5)
            before = len(presence_of(w, bob.id))
            await b.send_json({"type": "presence", "status": status})
            for _ in range(100):
                if len(presence_of(w, bob.id)) > before:
                    break
                await asyncio.sleep(0.05)
            frame = presence_of(w, bob.id)[-1]
            assert frame["status"] == status, presence_of(w, bob.id)
            r = await w.request({"type": "presence_query", "users": [bob.id]})
            q = r["users"][0]
            rest = await h.api.expect(200, "GET", f"/api/v1/presence?users={bob.id}", token=watcher.token)
            assert q["status"] == status and q["last_seen"] == frame["last_seen"], (frame, q)
            assert rest.body["users"][0]["last_seen"] == frame["last_seen"], (frame, rest.body)


@pytest.mark.embedded_only("a cluster node's crash leaves its views in Redis until they expire "
                            "(test_cluster.py covers the push that does not wait for them)")
@async_test(90)
async def test_last_seen_survives_a_crash(server):
    """Audit Y: after kill -9, presence_query and GET /presence said
    `"last_seen": 0` (1970) for a user who was online at the crash; last
    seen is now stored when a user comes online (and every 5 minutes while
    online), so it is at worst when they connected."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "ls")
        await api.open_dm(alice, bob.id)
        before = int(time.time() * 1000)
        a = await h.ws(alice, name="alice")
        await a.send_json({"type": "heartbeat"})
        await asyncio.sleep(1.5)                   # a presence tick, and its write committed
        await server.arestart()                    # SIGKILL while alice is online, then start again
        r = await api.expect(200, "GET", f"/api/v1/presence?users={alice.id}", token=bob.token)
        u = r.body["users"][0]
        assert u["status"] == "offline", u
        assert before - 1000 <= u["last_seen"] <= int(time.time() * 1000), (before, u)


async def dm_across_two_nodes(h, srv, prefix):
    """Users a and b sharing a DM, a connected to node 0 and b to node 1:
    (a, b, a's ws, b's ws)."""
    a, b = await h.api.register_many(2, prefix)
    await h.api.open_dm(a, b.id)
    w = WS(srv.node_urls[0].replace("http://", "ws://") + "/ws", a.token, name="a@node0")
    h.clients.append(w)
    await w.connect()
    x = WS(srv.node_urls[1].replace("http://", "ws://") + "/ws", b.token, name="b@node1")
    h.clients.append(x)
    await x.connect()
    return a, b, w, x


@pytest.mark.cluster_only("a node killed without closing")
@async_test(90)
async def test_last_seen_of_a_user_whose_node_was_killed(server_factory):
    """Audit Y: when a user's only node was killed, the other nodes announced
    `offline` with the right `last_seen` once its views expired, but
    presence_query and GET /presence said 0 for ever after (nobody wrote
    it). The node that announces it now stores it."""
    srv = server_factory(["--presence-timeout", "2", "--presence-coalesce", "200"])
    async with Harness(srv) as h:
        a, b, w, x = await dm_across_two_nodes(h, srv, "lsk")
        for _ in range(6):                          # heartbeats for 3 s: the view's last active moves
            await x.send_json({"type": "heartbeat"})
            await asyncio.sleep(0.5)
        last_beat = int(time.time() * 1000)
        srv.nodes[1].kill()
        m = await wait_status(w, b.id, "offline", timeout=20)
        api0 = Api(srv.node_urls[0], h.session)
        await asyncio.sleep(0.5)                    # the write after the announcement
        r = await api0.expect(200, "GET", f"/api/v1/presence?users={b.id}", token=a.token)
        u = r.body["users"][0]
        assert u["status"] == "offline" and u["last_seen"] == m["last_seen"], (u, m)
        assert u["last_seen"] >= last_beat - 1500, (u, last_beat)


@pytest.mark.cluster_only("a node drained while its user stays away")
@async_test(90)
async def test_a_drained_nodes_user_who_does_not_return_goes_offline_with_the_drains_time(server_factory):
    """Audit X2: after a SIGTERM, a user who did not reconnect was announced
    offline with the view's old last activity (its connect time), earlier
    than what presence_query then said (the drain's start)."""
    srv = server_factory(["--presence-coalesce", "200"])
    async with Harness(srv) as h:
        a, b, w, x = await dm_across_two_nodes(h, srv, "drn")
        await wait_status(w, b.id, "online")
        await asyncio.sleep(1.5)                    # the view's last activity is older than the drain
        drained = int(time.time() * 1000)
        node = srv.nodes[1]
        node.killed_on_purpose = True               # it exits by itself: not a problem at teardown
        node.proc.send_signal(signal.SIGTERM)
        m = await wait_status(w, b.id, "offline", timeout=30)
        assert await asyncio.to_thread(node.proc.wait, 20) == 0, "the drain did not end cleanly"
        assert m["last_seen"] >= drained - 300, (m, drained)
        api0 = Api(srv.node_urls[0], h.session)
        r = await api0.expect(200, "GET", f"/api/v1/presence?users={b.id}", token=a.token)
        u = r.body["users"][0]
        assert u["status"] == "offline" and abs(u["last_seen"] - m["last_seen"]) <= 300, (u, m)


@pytest.mark.cluster_only("a node killed without closing")
@async_test(90)
async def test_users_of_a_killed_node_go_offline_without_waiting_for_the_timeout(server_factory):
    """The other nodes took a killed node's users for online until their
    views expired (--presence-timeout, 60 s by default). A node whose
    liveness beats stopped (3 s) is gone: its views no longer count, and
    its users are announced offline within seconds, as presence queries
    and GET /presence say."""
    srv = server_factory(["--presence-coalesce", "200"])     # the default 60 s timeout
    async with Harness(srv) as h:
        a, b, w, x = await dm_across_two_nodes(h, srv, "kgo")
        await wait_status(w, b.id, "online")
        srv.nodes[1].kill()
        await wait_status(w, b.id, "offline", timeout=20)
        r = await w.request({"type": "presence_query", "users": [b.id]})
        assert r["users"][0]["status"] == "offline", r
        api0 = Api(srv.node_urls[0], h.session)
        r = await api0.expect(200, "GET", f"/api/v1/presence?users={b.id}", token=a.token)
        assert r.body["users"][0]["status"] == "offline", r.body


async def pause_node1_until_offline(srv, w, b, longer=0.0):
    """Pauses node 1 (SIGSTOP) until w (on node 0) hears b go offline, and
    `longer` seconds more; resumes it, and waits until w hears b online
    again."""
    await wait_status(w, b.id, "online")
    pid = srv.nodes[1].proc.pid
    os.kill(pid, signal.SIGSTOP)
    try:
        await wait_status(w, b.id, "offline", timeout=20)
        n = len(w.msgs)
        await asyncio.sleep(longer)
    finally:
        os.kill(pid, signal.SIGCONT)
    await w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == b.id
                     and m.get("status") == "online", timeout=15, start=n, what="online again")


@pytest.mark.cluster_only("a node paused without closing")
@async_test(90)
async def test_users_of_a_paused_node_come_back_online(server_factory):
    """Audit A2: a node paused (SIGSTOP) for longer than it takes to be taken
    for gone had its users announced offline, and when it resumed they were
    never announced online again (the other nodes had forgotten them, and
    took its next refresh for known state)."""
    srv = server_factory(["--presence-coalesce", "200"])
    async with Harness(srv) as h:
        a, b, w, x = await dm_across_two_nodes(h, srv, "pau")
        await pause_node1_until_offline(srv, w, b)


@pytest.mark.cluster_only("a node paused without closing")
@async_test(90)
async def test_users_of_a_node_paused_past_the_presence_timeout_come_back_online(server_factory):
    """Audit A2, the part left: a pause longer than the views' life
    (--presence-timeout) ended with the node's users offline for everyone.
    The other nodes had forgotten them, and the resumed node's views were
    refreshes, taken for state already known. A node whose loop stalled
    now publishes its views again as changes. (The old code can pass here:
    after SIGCONT the paused node may tick before it reads the buffered
    heartbeats, take its sessions for timed out, and publish offline, then
    online, as changes. The unit test presence_views_are_published_as_
    changes_after_a_stall is the one that fails without the fix.)"""
    srv = server_factory(["--presence-timeout", "3", "--presence-coalesce", "200"])
    async with Harness(srv) as h:
        a, b, w, x = await dm_across_two_nodes(h, srv, "pap")
        stop = asyncio.Event()

        async def heartbeats():                     # b's device keeps beating: buffered while paused
            while not stop.is_set():
                await x.send_json({"type": "heartbeat"})
                await asyncio.sleep(1)
        beat = asyncio.create_task(heartbeats())
        try:
            await pause_node1_until_offline(srv, w, b, longer=3.5)   # past the views' life: node 0 forgets b
        finally:
            stop.set()
            await beat


@async_test(60)
async def test_typing_reaches_others_not_typist_and_expires(server_factory):
    server = server_factory(FAST)
    async with Harness(server) as h:
        api = h.api
        u = await api.register_many(3, "ty")
        cid = (await api.create_group(u[0], [u[1].id, u[2].id]))["id"]
        typist = await h.ws(u[0], name="typist")
        typist2 = await h.ws(u[0], name="typist-2nd-device")
        o1 = await h.ws(u[1], name="o1")
        o2 = await h.ws(u[2], name="o2")

        await typist.send_json({"type": "typing", "conversation": cid, "state": "start"})
        for o in (o1, o2):
            m = await o.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start")
            assert m["user"] == u[0].id and m["conversation"] == cid, m
        # expires by itself (ttl 1.5 s) with a stop from the server
        t0 = time.monotonic()
        m = await o1.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop", timeout=5)
        assert time.monotonic() - t0 >= 0.8, "stopped too early"
        await typist.ping()
        await typist2.ping()
        for t in (typist, typist2):
            assert not [m for m in t.msgs if m.get("type") == "typing"], t.msgs
        # an explicit stop, and a message, end typing too
        await typist.send_json({"type": "typing", "conversation": cid, "state": "start"})
        n = len(o2.msgs)
        await typist.send_msg(cid, "done typing")
        await o2.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop", start=n)
        # non-members cannot type into it
        outsider, = await api.register_many(1, "tyo")
        wo = await h.ws(outsider)
        e = await wo.request({"type": "typing", "conversation": cid, "state": "start"})
        assert e["type"] == "error" and e["code"] == "not_found", e


@async_test(60)
async def test_typing_stops_when_the_typist_disconnects(server_factory):
    """Audit Y: "typing..." stayed until --typing-ttl ran out after the
    typist's connection closed; it now stops at the close, unless another
    of the typist's sessions on that node follows the conversation."""
    server = server_factory(["--typing-ttl", "20000"])
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "tgone")
        cid = (await api.open_dm(a, b.id))["id"]
        wb = await h.ws(b, name="bob")

        def typing(state):
            return lambda m: (m.get("type") == "typing" and m.get("conversation") == cid
                              and m.get("user") == a.id and m.get("state") == state)

        a1 = await h.ws(a, name="a1")
        a2 = await h.ws(a, name="a2")
        await a1.send_json({"type": "typing", "conversation": cid, "state": "start"})
        await wb.wait_for(typing("start"), what="alice typing")
        await a1.close()                               # a2 still follows the DM
        await asyncio.sleep(1.0)
        await wb.ping()
        if len(getattr(server, "node_urls", None) or [0]) == 1:
            # one node: it knows a2 is there (across nodes a close stops the
            # indicator, and a typist elsewhere starts it again within 3 s)
            assert not [m for m in wb.msgs if typing("stop")(m)], wb.msgs
        t0 = time.monotonic()
        await a2.close()                               # the last one
        await wb.wait_for(typing("stop"), timeout=10, what="alice stopped typing")
        assert time.monotonic() - t0 < 5, "the stop came from the close, not the 20 s expiry"


@async_test(90)
async def test_signal_spam_is_limited_without_hurting_messages(server):
    async with Harness(server) as h:
        api = h.api
        spammer, friend = await api.register_many(2, "sp")
        cid = (await api.open_dm(spammer, friend.id))["id"]
        s = await h.ws(spammer, name="spammer")
        f = await h.ws(friend, name="friend")
        for i in range(300):
            await s.send_json({"type": "typing", "conversation": cid, "req": f"t{i}",
                               "state": "start" if i % 2 == 0 else "stop"})
            await s.send_json({"type": "presence", "req": f"p{i}", "status": "away" if i % 2 else "online"})
        # messages still flow both ways while the spam is being processed
        acks = []
        for i in range(20):
            acks.append(await s.send_msg(cid, f"real {i}"))
            acks.append(await f.send_msg(cid, f"reply {i}"))
        seqs = [a["seq"] for a in acks]
        assert seqs == list(range(seqs[0], seqs[0] + 40)), seqs
        await f.wait_seq(cid, seqs[-1])
        await s.ping()
        # the spammer was told, with a retry_after
        limited = [m for m in s.errors() if m.get("code") == "rate_limited"]
        assert limited and limited[0]["retry_after"] > 0, s.errors()
        # ... with the req of the signal that was refused
        assert all(str(m.get("req", ""))[:1] in ("t", "p") for m in limited), limited
        # far fewer typing frames reached the friend than were sent. In a
        # cluster they come on the bus from the spammer's node, moments
        # later: the friend's node may have read the last messages from the
        # store (a gap fill) before it hears them, so wait for one
        await f.wait_for(lambda m: m.get("type") == "typing", timeout=10, what="the spammer's typing")
        typing = [m for m in f.msgs if m.get("type") == "typing"]
        assert 0 < len(typing) < 100, len(typing)
        got = [m["seq"] for m in f.conv_events(cid) if m["kind"] == "message"]
        assert got == seqs, (got, seqs)


@async_test(60)
async def test_last_seen_never_goes_back_and_a_query_says_the_same(server_factory):
    """Audit X3. (1) bob goes away on b1; b2 connects (online) and is
    active, then closes: the `away` pushed then carried b1's older time,
    earlier than the `online` before it. (2) presence_query answered the
    query's own time as an online user's last_seen, where the pushed frames
    say the latest activity the server knows of."""
    server = server_factory(["--presence-timeout", "20", "--presence-coalesce", "100"])
    async with Harness(server) as h:
        watcher, bob, w, b1 = await watched(h, "lsb")
        def next_status(status):
            n = len(w.msgs)
            return w.wait_for(lambda m: m.get("type") == "presence" and m.get("user") == bob.id
                              and m.get("status") == status, start=n, what=f"bob {status}")
        pending = next_status("away")
        await b1.send_json({"type": "presence", "status": "away"})
        away1 = await pending
        await asyncio.sleep(1.0)
        pending = next_status("online")
        b2 = await h.ws(bob, name="b2")
        online = await pending
        assert online["last_seen"] >= away1["last_seen"], (away1, online)
        await asyncio.sleep(0.5)
        await b2.send_json({"type": "heartbeat"})
        active_at = int(time.time() * 1000)
        await asyncio.sleep(0.3)
        pending = next_status("away")
        await b2.close()
        away2 = await pending
        assert away2["last_seen"] >= online["last_seen"], (online, away2)
        assert away2["last_seen"] >= active_at - 500, (active_at, away2)
        # the query agrees with the pushed frame; it is not the query's time
        await asyncio.sleep(1.5)
        r = await w.request({"type": "presence_query", "users": [bob.id]})
        u = r["users"][0]
        assert u["status"] == "away" and u["last_seen"] == away2["last_seen"], (u, away2)
        assert u["last_seen"] <= int(time.time() * 1000) - 1000, u


@async_test(60)
async def test_typing_stops_at_once_when_the_typist_closes_beside_an_event_stream(server_factory):
    """Audit X3: alice types on a WebSocket and closes it while her event
    stream (SSE, which cannot type) stays open: the `stop` waited for the
    typing TTL, the stream counting as a session that still follows the
    conversation. Now it comes at once, as without the stream."""
    from test_sse import sse
    server = server_factory(["--typing-ttl", "10000"])
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "tsse")
        cid = (await h.api.open_dm(alice, bob.id))["id"]
        s = await sse(server, alice.token)
        await s.wait_until(lambda: s.datas("ready"), what="the stream's ready")
        b = await h.ws(bob, name="bob")
        a = await h.ws(alice, name="alice")
        await a.ping()
        n = len(b.msgs)
        await a.send_json({"type": "typing", "conversation": cid, "state": "start"})
        await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "start", start=n,
                         what="alice typing")
        t0 = time.monotonic()
        await a.close()
        await b.wait_for(lambda m: m.get("type") == "typing" and m.get("state") == "stop", start=n,
                         timeout=15, what="alice's typing stop")
        took = time.monotonic() - t0
        assert took < 3.0, f"the stop came {took:.1f} s after her WebSocket closed (ttl 10 s)"
        await s.close()
