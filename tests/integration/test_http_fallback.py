"""The HTTP fallback for networks that block WebSocket (M2): send with POST,
receive by long-polling history with `wait`."""

import asyncio

from pclient import Harness, async_test


async def dm_with_a_parked_poll(api, prefix):
    """alice and bob in a DM; bob's long-poll (wait 20 s) parked above the
    head: (alice, bob, cid, base, the poll's future)."""
    alice, bob = await api.register_many(2, prefix)
    cid = (await api.open_dm(alice, bob.id))["id"]
    base = (await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=bob.token)).body["last_seq"]
    poll = asyncio.ensure_future(api.req(
        "GET", f"/api/v1/conversations/{cid}/messages?after={base}&wait=20", token=bob.token))
    await asyncio.sleep(0.5)
    assert not poll.done(), "a poll with nothing new must wait"
    return alice, bob, cid, base, poll


@async_test(60)
async def test_long_poll_receives_what_is_sent(server):
    async with Harness(server) as h:
        api = h.api
        # bob parks a poll; alice sends over HTTP; the poll answers with it
        alice, bob, cid, base, poll = await dm_with_a_parked_poll(api, "lp")
        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                          json_body={"client_msg_id": "lp-1", "body": "over plain HTTP"})
        assert r.status == 201, r
        got = await asyncio.wait_for(poll, 10)
        assert got.status == 200, got
        evs = got.body["events"]
        assert [e["body"] for e in evs] == ["over plain HTTP"] and evs[0]["seq"] == base + 1, got.body

        # something already there: answered at once
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/messages?after={base}&wait=20",
                             token=bob.token)
        assert len(r.body["events"]) == 1

        # nothing comes: an empty page after the wait
        r = await api.expect(200, "GET", f"/api/v1/conversations/{cid}/messages?after={base + 1}&wait=1",
                             token=bob.token)
        assert r.body["events"] == [] and r.body["has_more"] is False, r.body

        # a stranger is refused at once; a silly wait is refused
        eve, = await api.register_many(1, "lpx")
        await api.expect(404, "GET", f"/api/v1/conversations/{cid}/messages?after=0&wait=20", token=eve.token)
        await api.expect(400, "GET", f"/api/v1/conversations/{cid}/messages?after=0&wait=31", token=bob.token)

        # a poll parked at shutdown is answered, not dropped
        poll = asyncio.ensure_future(api.req(
            "GET", f"/api/v1/conversations/{cid}/messages?after={base + 1}&wait=20", token=bob.token))
        await asyncio.sleep(0.5)
        await server.astop()
        got = await asyncio.wait_for(poll, 10)
        # as after a timeout (protocol.md, long-poll): the client loops
        assert got.status == 200 and got.body["events"] == [] and got.body["has_more"] is False, got
        await asyncio.to_thread(server.start)      # the fixture checks a running server at teardown


@async_test(60)
async def test_a_parked_poll_ends_with_its_login(server):
    """Audit L4 (high): a long-poll parked before a logout (or an account
    deletion) went on, and answered the message sent after it with 200.
    Now the login is read again before the answer: 401."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, cid, base, poll = await dm_with_a_parked_poll(api, "lpo")
        r = await api.req("POST", "/api/v1/auth/logout", token=bob.token)
        assert r.status == 204, r
        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                          json_body={"client_msg_id": "after-logout", "body": "not for a logged-out poll"})
        assert r.status == 201, r
        got = await asyncio.wait_for(poll, 10)
        assert got.status == 401 and "not for a logged-out poll" not in str(got.body), got


@async_test(60)
async def test_a_parked_poll_is_answered_at_its_logout(server):
    """Audit W3: a long-poll parked before a logout was answered 401 only at
    the end of its wait (20 s here); now at once, as the login's event
    stream is closed at once. The same for an account deletion."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, cid, base, poll = await dm_with_a_parked_poll(api, "lpl")
        r = await api.req("POST", "/api/v1/auth/logout", token=bob.token)
        assert r.status == 204, r
        got = await asyncio.wait_for(poll, 5)
        assert got.status == 401, got
        # the other user's poll on the same conversation waits on
        other = asyncio.ensure_future(api.req(
            "GET", f"/api/v1/conversations/{cid}/messages?after={base}&wait=20", token=alice.token))
        carol, dave, cid2, base2, gone = await dm_with_a_parked_poll(api, "lpd")
        r = await api.req("DELETE", "/api/v1/me", token=dave.token,
                          json_body={"password": dave.password})
        assert r.status in (200, 202, 204), r
        got = await asyncio.wait_for(gone, 5)
        assert got.status == 401, got
        assert not other.done(), "a poll of another login is not ended"
        other.cancel()


@async_test(60)
async def test_a_poll_past_the_head_keeps_no_other_poll_waiting(server):
    """protocol.md, long-poll: a held poll is answered when the conversation
    gets an event, with an empty page when that event is at or below an
    `after` given past the newest seq. Audit M6: the first poll's `after`
    (50, past the head) became the watch's head, so an event below it woke
    no poll on the conversation, the other members' included."""
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "pp")
        cid = (await api.create_group(alice, [bob.id, carol.id]))["id"]
        base = (await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=bob.token)).body["last_seq"]
        far = asyncio.ensure_future(api.req(
            "GET", f"/api/v1/conversations/{cid}/messages?after={base + 50}&wait=20", token=carol.token))
        await asyncio.sleep(0.3)
        near = asyncio.ensure_future(api.req(
            "GET", f"/api/v1/conversations/{cid}/messages?after={base}&wait=20", token=bob.token))
        await asyncio.sleep(0.5)
        assert not far.done() and not near.done(), "polls with nothing new must wait"
        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=alice.token,
                          json_body={"client_msg_id": "pp-1", "body": "wakes both"})
        assert r.status == 201, r
        got = await asyncio.wait_for(near, 10)       # not its whole 20 s
        assert got.status == 200 and [e["seq"] for e in got.body["events"]] == [base + 1], got.body
        got = await asyncio.wait_for(far, 10)
        assert got.status == 200 and got.body["events"] == [], got.body
