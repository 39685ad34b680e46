"""One rule for each kind of input, on every route (audits S2 and T2):

  * a field given as null in a REST body is the field left out, as in
    WebSocket messages (`"username": null` beside `"user"` is not "both");
    `"req": null` in a WebSocket message is no `req`, not bad_request;
  * a query parameter given twice is bad_request (which one would count is
    not for the server to guess), never silently the first;
  * logout with a refresh token in the body ends that login, checked,
    whatever Authorization header comes with it;
  * `Authorization: Bearer` takes one or more spaces before the token;
  * user id 0 is an id no user has (404), not a malformed one;
  * every flag in a query takes 1, 0, true or false (reports' `resolved`);
  * `after` of /me/messages is written as every query integer;
  * a reaction is an emoji: no invisible character but an emoji's own.
"""

from pclient import Harness, async_test


def _msg(r):
    return (r.body or {}).get("error", {}).get("message", "") if isinstance(r.body, dict) else ""


@async_test(60)
async def test_null_is_left_out_in_rest_bodies(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "nul")
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": bob.id, "username": None})
        assert r.status in (200, 201), f"username null beside user is not 'both': {r!r}"
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "group", "title": "n", "members": None, "e2ee": None})
        assert r.status == 201 and [m["id"] for m in r.body["members"]] == [alice.id], r
        gid = r.body["id"]
        r = await api.req("POST", f"/api/v1/conversations/{gid}/members", token=alice.token,
                          json_body={"user": carol.id, "username": None})
        assert r.status in (200, 201), r
        # a required field given null is missing: bad_request naming it
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": None, "user": bob.id})
        assert r.status == 400 and r.code == "bad_request", r
        r = await api.req("POST", f"/api/v1/conversations/{gid}/members", token=alice.token,
                          json_body={"user": None, "username": None})
        assert r.status == 400 and "not both" not in _msg(r), r


@async_test(60)
async def test_req_null_in_a_websocket_message_is_no_req(server):
    async with Harness(server) as h:
        alice, = await h.api.register_many(1, "rqn")
        ws = await h.ws(alice)
        start = len(ws.msgs)
        await ws.send_json({"type": "ping", "req": None})
        m = await ws.wait_for(lambda m: isinstance(m, dict) and m.get("type") in ("pong", "error"),
                              start=start, what="the ping's answer")
        assert m.get("type") == "pong" and "req" not in m, m
        start = len(ws.msgs)
        await ws.send_json({"type": "ping", "req": [1]})          # still refused: not a string or integer
        m = await ws.wait_for(lambda m: isinstance(m, dict) and m.get("type") in ("pong", "error"),
                              start=start, what="the ping's answer")
        assert m.get("type") == "error" and m.get("code") == "bad_request", m


@async_test(60)
async def test_a_repeated_query_parameter_is_bad_request(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rep")
        dm = await api.open_dm(alice, bob.id)
        cid = dm["id"]
        for q in ("limit=1&limit=2", "limit=1&limit=abc", "limit=1&lim%69t=2"):
            r = await api.req("GET", f"/api/v1/conversations/{cid}/messages?{q}", token=alice.token)
            assert r.status == 400 and r.code == "bad_request" and '"limit"' in _msg(r), (q, r)
        r = await api.req("GET", f"/api/v1/presence?users={bob.id}&users={alice.id}", token=alice.token)
        assert r.status == 400 and '"users"' in _msg(r), r
        r = await api.req("GET", "/api/v1/search?q=hi&q=there", token=alice.token)
        assert r.status == 400, r
        many = "&".join(f"p{i}=1" for i in range(65))
        r = await api.req("GET", f"/api/v1/conversations/{cid}/messages?{many}", token=alice.token)
        assert r.status == 400, r
        r = await api.req("GET", f"/api/v1/conversations/{cid}/messages?limit=2&after=0", token=alice.token)
        assert r.status == 200, r


@async_test(60)
async def test_logout_with_a_body_ends_the_login_it_names(server):
    async with Harness(server) as h:
        api = h.api
        carol, = await api.register_many(1, "lgo")
        s2 = await api.login(carol)
        # Bearer of session 1, body naming session 2: session 2 ends (checked), 1 stays
        r = await api.req("POST", "/api/v1/auth/logout", token=carol.token,
                          json_body={"refresh_token": s2["refresh_token"]})
        assert r.status == 204, r
        assert (await api.refresh(s2["refresh_token"])).status == 401, "the named login is still live"
        assert (await api.req("GET", "/api/v1/me", token=s2["access_token"])).status == 401
        assert (await api.req("GET", "/api/v1/me", token=carol.token)).status == 200
        # a bad one in the body is not hidden by a good header
        r = await api.req("POST", "/api/v1/auth/logout", token=carol.token,
                          json_body={"refresh_token": "99.bogus"})
        assert r.status == 401, r
        r = await api.req("POST", "/api/v1/auth/logout", token=carol.token,
                          json_body={"refresh_token": 123})
        assert r.status == 400 and r.code == "bad_request", r
        assert (await api.req("GET", "/api/v1/me", token=carol.token)).status == 200
        # no token at all, or a bad header, with a body naming none: 401 (audit C3: 400)
        for body in ({}, {"refresh_token": None}, {"x": 1}):
            r = await api.req("POST", "/api/v1/auth/logout", json_body=body)
            assert r.status == 401 and r.code == "unauthorized", (body, r)
            r = await api.req("POST", "/api/v1/auth/logout", json_body=body,
                              headers={"Authorization": "Bearer not-a-token"})
            assert r.status == 401 and r.code == "unauthorized", (body, r)
        # no refresh token in the body: the header's login ends
        r = await api.req("POST", "/api/v1/auth/logout", token=carol.token, json_body={})
        assert r.status == 204, r
        assert (await api.req("GET", "/api/v1/me", token=carol.token)).status == 401


@async_test(60)
async def test_bearer_takes_more_than_one_space(server):
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "spc")
        for hdr in (f"Bearer  {alice.token}", f"bearer \t {alice.token}", f"BEARER {alice.token}"):
            r = await api.req("GET", "/api/v1/me", headers={"Authorization": hdr})
            assert r.status == 200, (hdr, r)
        for hdr in ("Bearer", "Bearer   ", f"Bearer{alice.token}"):
            r = await api.req("GET", "/api/v1/me", headers={"Authorization": hdr})
            assert r.status == 401, (hdr, r)


@async_test(60)
async def test_user_id_zero_is_an_id_no_user_has(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "zro")
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": 0})
        r999 = await api.req("POST", "/api/v1/conversations", token=alice.token,
                             json_body={"kind": "direct", "user": 2 ** 53 - 1})
        assert r.status == 404 == r999.status, (r, r999)
        g = await api.create_group(alice, [bob.id])
        r = await api.add_member(alice, g["id"], 0)
        r999 = await api.add_member(alice, g["id"], 2 ** 53 - 1)
        assert r.status == r999.status == 404, (r, r999)
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "group", "title": "z", "members": [bob.id, 0]})
        r999 = await api.req("POST", "/api/v1/conversations", token=alice.token,
                             json_body={"kind": "group", "title": "z", "members": [bob.id, 2 ** 53 - 1]})
        assert r.status == r999.status and r.code == r999.code, (r, r999)
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "group", "title": "z", "members": [-1]})
        assert r.status == 400, r


@async_test(60)
async def test_query_flags_and_messages_name_the_parameter(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "flg")
        g = await api.create_group(alice, [bob.id])
        base = f"/api/v1/conversations/{g['id']}/reports"
        for v in ("1", "true", "0", "false"):
            r = await api.req("GET", f"{base}?resolved={v}", token=alice.token)
            assert r.status == 200, (v, r)
        for q, name in (("resolved=2", '"resolved"'), ("limit=0", '"limit"'), ("before=abc", '"before"')):
            r = await api.req("GET", f"{base}?{q}", token=alice.token)
            assert r.status == 400 and name in _msg(r), (q, r)
        for q in ("after=01", "after=00000000000000000000001"):
            r = await api.req("GET", f"/api/v1/me/messages?{q}", token=alice.token)
            assert r.status == 400 and '"after"' in _msg(r), (q, r)
        for q, word in (("wait=abc", "integer"), ("after=-1", "integer"), ("wait=31", "out of range")):
            r = await api.req("GET", f"/api/v1/conversations/{g['id']}/messages?{q}", token=alice.token)
            assert r.status == 400 and word in _msg(r), (q, r)       # audit W2: "out of range" for "abc"
        r = await api.req("GET", "/api/v1/me/messages?limit=0", token=alice.token)
        assert r.status == 400 and '"limit"' in _msg(r), r
        r = await api.req("POST", "/api/v1/media/uploads?length=0&name=a.txt&type=text/plain",
                          token=alice.token)
        assert r.status == 400 and "required" not in _msg(r), r
        r = await api.req("POST", f"/api/v1/conversations/{g['id']}/messages", token=alice.token,
                          json_body={"client_msg_id": "a\u0000b", "body": "x"})
        assert r.status == 400 and "NUL" in _msg(r), r


@async_test(60)
async def test_a_reaction_is_an_emoji_not_an_invisible_character(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "rct")
        g = await api.create_group(alice, [bob.id])
        ws = await h.ws(alice)
        ack = await ws.send_msg(g["id"], "react to me")
        for emoji in ("\u200b", "\u200d", "\ufe0f", "\u00ad", "\u2060", "\u202e", "\u202eabc",
                      "\u200b\U0001f44d"):
            r = await ws.request({"type": "react", "conversation": g["id"], "seq": ack["seq"], "emoji": emoji})
            assert r.get("type") == "error" and r.get("code") == "bad_request", (emoji, r)
        for emoji in ("\U0001f44d", "\u2764\ufe0f", "1\ufe0f\u20e3", "\U0001f468\u200d\U0001f469\u200d\U0001f467",
                      "\U0001f3f4\U000e0067\U000e0062\U000e0065\U000e006e\U000e0067\U000e007f"):
            r = await ws.request({"type": "react", "conversation": g["id"], "seq": ack["seq"], "emoji": emoji})
            assert r.get("type") != "error", (emoji, r)


@async_test(60)
async def test_presence_of_user_id_zero_is_left_out_as_any_unknown_id(server):
    """Audit X2: [47, 0] was bad_request for the whole query."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "pz")
        await api.open_dm(alice, bob.id)
        ws = await h.ws(alice)
        r = await ws.request({"type": "presence_query", "users": [bob.id, 0]})
        assert r.get("type") == "presence" or "users" in r, r
        assert [u["user"] for u in r["users"]] == [bob.id], r
        r = await ws.request({"type": "presence_query", "users": [0]})
        assert r.get("users") == [], r
        r = await api.req("GET", f"/api/v1/presence?users={bob.id},0", token=alice.token)
        assert r.status == 200 and [u["user"] for u in r.body["users"]] == [bob.id], r
        r = await api.req("GET", "/api/v1/presence?users=0", token=alice.token)
        assert r.status == 200 and r.body["users"] == [], r
        r = await api.req("GET", "/api/v1/presence?users=00", token=alice.token)
        assert r.status == 400, r


@async_test(60)
async def test_the_event_stream_checks_its_query_and_takes_an_empty_last_event_id(server):
    """Audit W2: /api/v1/events skipped the repeated-parameter check, and an
    empty Last-Event-ID (some SSE libraries' first connect) was 400."""
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "sse")
        r = await api.req("GET", "/api/v1/events?x=1&x=2", token=alice.token)
        assert r.status == 400 and '"x"' in _msg(r), r
        async with api.session.get(api.base + "/api/v1/events",
                                   headers={"Authorization": f"Bearer {alice.token}",
                                            "Last-Event-ID": ""}) as resp:
            assert resp.status == 200, resp.status
            line = await resp.content.readline()
            while line in (b"\n", b"\r\n") or line.startswith(b":"):
                line = await resp.content.readline()
            assert line.startswith(b"id:") or line.startswith(b"data:"), line


@async_test(60)
async def test_a_field_of_the_other_kind_of_conversation_is_bad_request(server):
    """Audit E3: {"kind": "group", "user": 56} made a group of the creator
    alone; a direct conversation's title and members were dropped."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "okd")
        for body in ({"kind": "group", "title": "Ops", "user": bob.id},
                     {"kind": "group", "title": "Ops", "username": bob.username},
                     {"kind": "direct", "user": bob.id, "title": "us"},
                     {"kind": "direct", "user": bob.id, "members": [bob.id]}):
            r = await api.req("POST", "/api/v1/conversations", token=alice.token, json_body=body)
            assert r.status == 400 and r.code == "bad_request", (body, r)
        r = await api.req("GET", "/api/v1/conversations", token=alice.token)
        assert r.body["conversations"] == [], r.body
        # null is left out, so these are fine
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          json_body={"kind": "direct", "user": bob.id, "title": None, "members": None})
        assert r.status == 201, r
