"""Per-workspace rate limits (P10; docs/protocol.md "Rate limits"): sends
and message actions in the channels of one workspace share one bucket
(--rate-workspace-msgs, --rate-workspace-burst), over the WebSocket and
REST, on every node of a cluster; another workspace's channels, groups and
direct conversations do not take from it."""

import time

from pclient import WS, Harness, async_test, cmid
from test_limits import metrics
from test_workspaces import channel_create, ws_add, ws_create

RATE, BURST = 1, 6
ARGS = ["--rate-workspace-msgs", str(RATE), "--rate-workspace-burst", str(BURST),
        "--rate-user-msgs", "1000", "--rate-user-burst", "1000",
        "--rate-conv-msgs", "1000", "--rate-conv-burst", "1000"]
LIMITED = 'parley_rate_limited_total{scope="workspace"}'


async def flood(conns, convs, n, what):
    """n sends, round-robin over conns x convs, pipelined; their replies."""
    reqs = []
    for k in range(n):
        c = conns[k % len(conns)]
        conv = convs[k % len(convs)]
        req, _ = await c.send_nowait(conv, f"{what} {k}")
        reqs.append((c, req))
    return [await c.wait_reply(r, 30) for c, r in reqs]


def refused(replies):
    return [r for r in replies if r.get("type") == "error"]


@async_test(120)
async def test_channels_of_a_workspace_share_its_bucket(server_factory):
    server = server_factory(ARGS)
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "wsl")
        w1 = await ws_create(api, alice, "Busy")
        await ws_add(api, alice, w1["id"], {"user": bob.id})
        c1 = (await channel_create(api, alice, w1["id"], "one", members=[bob.id]))["id"]
        c2 = (await channel_create(api, alice, w1["id"], "two", members=[bob.id]))["id"]
        w2 = await ws_create(api, alice, "Quiet")
        d1 = (await channel_create(api, alice, w2["id"], "other"))["id"]
        grp = (await api.create_group(alice, [bob.id]))["id"]
        dm = (await api.open_dm(alice, bob.id))["id"]
        # two senders, on two nodes in a cluster: the bucket is shared by all
        urls = getattr(server, "node_ws_urls", [server.ws_url])
        conns = []
        for user, url in ((alice, urls[0]), (bob, urls[-1])):
            c = WS(url, user.token, name=user.username)
            h.clients.append(c)
            await c.connect()
            conns.append(c)
        before = metrics(server)

        # Two channels of one workspace: one burst between them, then refusals
        # that name the workspace, over the WebSocket.
        # The first sender takes the whole burst in one channel; the second,
        # in the other channel (on another node in a cluster), finds the
        # workspace's bucket empty: at most what refilled meanwhile passes.
        t0 = time.monotonic()
        first = await flood(conns[:1], [c1], BURST, "w1")
        assert not refused(first), refused(first)[:3]
        replies = await flood(conns[1:], [c2], 2 * BURST, "w1")
        elapsed = time.monotonic() - t0
        sent = [r for r in replies if r.get("type") == "sent"]
        no = refused(replies)
        assert len(sent) + len(no) == len(replies), replies
        print(f"workspace bucket: {len(sent)} of {len(replies)} admitted in {elapsed:.2f}s")
        assert len(sent) <= RATE * elapsed + 2, (len(sent), elapsed)
        assert no and all(r["code"] == "rate_limited" and r["message"] == "too many messages (workspace)"
                          and r["retry_after"] > 0 for r in no), no[:3]
        sent = first + sent

        # Another workspace's channel, a group and a DM are not limited by it
        # (each gets more than the workspace burst, still inside w1's wait).
        for conv, what in ((d1, "w2"), (grp, "group"), (dm, "dm")):
            more = await flood(conns[:1], [conv], BURST - 1 if conv == d1 else 2 * BURST, what)
            assert not refused(more), (what, refused(more)[:3])

        # A message action in w1 takes from the same bucket (WebSocket) ...
        seq = sent[0]["seq"]
        conv0 = sent[0]["conversation"]
        a = conns[0]
        for _ in range(BURST):                   # at most one token per second comes back
            r = await a.request({"type": "react", "conversation": conv0, "seq": seq, "emoji": "\U0001F44D",
                                 "op": "remove"})
            if r.get("type") == "error":
                break
        assert r.get("code") == "rate_limited" and r["message"] == "too many messages (workspace)", r
        # ... and REST: sends and actions answer 429 with Retry-After.
        for path, body in ((f"/api/v1/conversations/{c2}/messages", {"client_msg_id": cmid(), "body": "rest"}),
                           (f"/api/v1/conversations/{conv0}/messages/{seq}/reactions", {"emoji": "\U0001F44D"})):
            for _ in range(BURST):
                r = await api.req("POST", path, token=bob.token, json_body=body)
                if r.status == 429:
                    break
                body = dict(body, client_msg_id=cmid()) if "client_msg_id" in body else body
            assert r.status == 429 and r.code == "rate_limited", (path, r)
            assert r.body["error"]["message"] == "too many messages (workspace)", r
            assert int(r.headers["Retry-After"]) >= 1, r.headers

        after = metrics(server)
        assert after[LIMITED] - before.get(LIMITED, 0) >= len(no) + 3, (after[LIMITED], before.get(LIMITED))
        for scope in ("user", "conversation"):
            key = f'parley_rate_limited_total{{scope="{scope}"}}'
            assert after[key] == before[key], key


@async_test(120)
async def test_strangers_cannot_empty_a_conversations_or_workspaces_bucket(server_factory):
    """Only members take from a conversation's and a workspace's buckets:
    a user in neither is answered not_found (and limited by its own bucket
    alone), over the WebSocket and REST, and the members go on."""
    server = server_factory(["--rate-workspace-msgs", "1", "--rate-workspace-burst", "3",
                             "--rate-conv-msgs", "1", "--rate-conv-burst", "3",
                             "--rate-user-msgs", "1000", "--rate-user-burst", "1000"])
    async with Harness(server) as h:
        api = h.api
        alice, bob, eve = await api.register_many(3, "wss")
        w1 = await ws_create(api, alice, "Private")
        c1 = (await channel_create(api, alice, w1["id"], "secret", private=True))["id"]
        grp = (await api.create_group(alice, [bob.id]))["id"]
        we = await h.ws(eve, name="eve")
        for conv in (c1, grp):
            replies = await flood([we], [conv], 10, "intruder")
            assert all(r.get("type") == "error" and r["code"] == "not_found" for r in replies), replies[:3]
            for k in range(5):
                r = await api.req("POST", f"/api/v1/conversations/{conv}/messages", token=eve.token,
                                  json_body={"client_msg_id": cmid(), "body": "x"})
                assert r.status == 404, r
        wa = await h.ws(alice, name="alice")
        for conv in (c1, grp):                            # the members' buckets are whole
            ok = await flood([wa], [conv], 3, "member")
            assert not refused(ok), refused(ok)[:3]
