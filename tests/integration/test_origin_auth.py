"""Browser safety and account hardening (issue 10, docs/protocol.md "Origin
checks", "Refresh token reuse"): the Origin allow-list on WebSocket upgrades
and state-changing REST requests, X-Forwarded-* from trusted proxies only,
Referrer-Policy on every response, the web client's CSP, an empty bearer
closing with 4001 at once, common passwords refused at register, and
refresh-token reuse revoking the login session outside the grace period."""

import asyncio
import json
import time

import websockets
import websockets.exceptions

from pclient import PASSWORD, WS, Harness, async_test, raw_http, unique_name


def hdr(resp, name):
    """A response header, case-insensitively (HAProxy lower-cases names)."""
    for k, v in resp.headers.items():
        if k.lower() == name.lower():
            return v
    return None


def head_has(head, line):
    return line.lower() in head.lower()


def own_origin(server):
    return f"http://{server.host}:{server.port}"


def lookalikes(server):
    h, p = server.host, server.port
    return {
        "other site": "https://evil.example",
        "null": "null",
        "host as a subdomain": f"http://{h}.evil.example:{p}",
        "upper-case subdomain": f"http://{h.upper()}.EVIL.example:{p}",
        "host in the path": f"http://evil.example/{h}:{p}",
        "userinfo": f"http://{h}:{p}@evil.example",
        "different port": f"http://{h}:{p + 1}",
        "different scheme": f"https://{h}:{p}",
        "trailing slash": f"http://{h}:{p}/",
        "another name for the host": f"http://localhost:{p}",
        "empty": "",
    }


async def raw_upgrade(h, headers):
    return await h.raw(extra_headers=headers)


@async_test(90)
async def test_ws_upgrade_origin(server):
    async with Harness(server) as h:
        alice = await h.api.register("or")
        # refused before the upgrade: 403 forbidden, no 101
        for what, origin in lookalikes(server).items():
            r = await raw_upgrade(h, {"Origin": origin, "Authorization": f"Bearer {alice.token}"})
            assert r.status == 403, f"{what} ({origin!r}): upgrade answered {r.response_head!r}"
            assert head_has(r.response_head, "Referrer-Policy: no-referrer"), r.response_head
            n = int(next(l.split(":", 1)[1] for l in r.response_head.split("\r\n")
                         if l.lower().startswith("content-length:")))
            body = await asyncio.wait_for(r.reader.readexactly(n), 5)
            assert b'"forbidden"' in body, f"{what}: {body!r}"
        # the Origin decides first, also for a handshake that is malformed
        # in other ways (before: 405, 426 or 400 for these)
        for what, lines in (("POST", ["POST /ws HTTP/1.1", "Content-Length: 0"]),
                            ("version 8", ["GET /ws HTTP/1.1", "Sec-WebSocket-Version: 8"]),
                            ("bad key", ["GET /ws HTTP/1.1", "Sec-WebSocket-Version: 13",
                                         "Sec-WebSocket-Key: short"])):
            if what == "bad key" and hasattr(server, "node_urls"):
                continue                        # HAProxy answers a malformed key itself (400)
            head = "\r\n".join(lines + [f"Host: {server.host}:{server.port}", "Upgrade: websocket",
                                        "Connection: Upgrade", "Origin: https://evil.example"]
                                + ([] if what == "bad key" else ["Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ=="]))
            st, rh, body = await raw_http(server.host, server.port, head)
            assert st == 403 and b'"forbidden"' in body, f"{what}: {st} {rh!r} {body!r}"
        # two Origin headers (one good) are refused too
        r = await h.raw(extra_headers={"Origin": own_origin(server)})
        assert r.status == 101, r.response_head
        rr = await raw_upgrade(h, {"Origin": own_origin(server), "origin": "https://evil.example"})
        assert rr.status == 403, rr.response_head

        # python3-websockets as a browser would: its own origin is accepted
        ws = await websockets.connect(server.ws_url, origin=own_origin(server),
                                      extra_headers={"Authorization": f"Bearer {alice.token}"},
                                      open_timeout=10, close_timeout=2, ping_interval=None)
        try:
            first = await asyncio.wait_for(ws.recv(), 10)
            assert '"ready"' in first, first
        finally:
            await ws.close()
        try:
            await websockets.connect(server.ws_url, origin="https://evil.example",
                                     extra_headers={"Authorization": f"Bearer {alice.token}"},
                                     open_timeout=10, close_timeout=2)
            raise AssertionError("an upgrade from https://evil.example was accepted")
        except websockets.exceptions.InvalidStatusCode as e:
            assert e.status_code == 403, e
        # no Origin (not a browser): accepted, and the 101 carries the headers
        # every response carries
        c = await h.ws(alice)
        assert c.ready["user"]["id"] == alice.id
        r = await h.raw(token=alice.token)
        assert r.status == 101, r.response_head
        for line in ("Referrer-Policy: no-referrer", "X-Content-Type-Options: nosniff",
                     "Cache-Control: no-store"):
            assert head_has(r.response_head, line), r.response_head


@async_test(90)
async def test_rest_origin_and_referrer_policy(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "ro")
        # state-changing requests with a bad Origin: 403 forbidden, nothing done
        for what, origin in lookalikes(server).items():
            hd = {"Origin": origin}
            r = await api.req("POST", "/api/v1/conversations", token=alice.token, headers=hd,
                              json_body={"kind": "direct", "user": bob.id})
            assert r.status == 403 and r.code == "forbidden", f"{what}: {r!r}"
            assert hdr(r, "Referrer-Policy") == "no-referrer", r.headers
        r = await api.req("GET", "/api/v1/conversations", token=alice.token)
        assert r.status == 200 and r.body["conversations"] == [], r
        name = unique_name("ro")
        r = await api.req("POST", "/api/v1/auth/register", headers={"Origin": "https://evil.example"},
                          json_body={"username": name, "password": PASSWORD})
        assert r.status == 403 and r.code == "forbidden", r
        r = await api.req("POST", "/api/v1/auth/login", headers={"Origin": "null"},
                          json_body={"username": alice.username, "password": PASSWORD})
        assert r.status == 403, r
        for method in ("PUT", "PATCH", "DELETE"):
            r = await api.req(method, "/api/v1/conversations/1/messages/1", token=alice.token,
                              headers={"Origin": "https://evil.example"})
            assert r.status == 403 and r.code == "forbidden", f"{method}: {r!r}"
        # any path, before routing: the operations endpoints too (before: 405)
        for path in ("/healthz", "/readyz", "/metrics", "/no/such/route"):
            r = await api.req("POST", path, headers={"Origin": "https://evil.example"})
            assert r.status == 403 and r.code == "forbidden", f"{path}: {r!r}"
        # reads are not state-changing: a foreign Origin does not matter
        r = await api.req("GET", "/api/v1/me", token=alice.token, headers={"Origin": "https://evil.example"})
        assert r.status == 200, r
        # the own origin and no Origin work
        r = await api.req("POST", "/api/v1/conversations", token=alice.token,
                          headers={"Origin": own_origin(server)},
                          json_body={"kind": "direct", "user": bob.id})
        assert r.status in (200, 201), r
        conv = r.body["id"]
        r = await api.req("POST", f"/api/v1/conversations/{conv}/messages", token=alice.token,
                          json_body={"client_msg_id": "o-1", "body": "hi"})
        assert r.status in (200, 201), r

        # Referrer-Policy on every response: ok, errors, operations, the web client
        for method, path, tok in (("GET", "/healthz", None), ("GET", "/metrics", None),
                                  ("GET", "/api/v1/me", alice.token), ("GET", "/api/v1/me", None),
                                  ("GET", "/api/v1/nope", alice.token), ("GET", "/", None),
                                  ("GET", "/ws", None), ("POST", "/api/v1/auth/refresh", None)):
            r = await api.req(method, path, token=tok)
            assert hdr(r, "Referrer-Policy") == "no-referrer", f"{method} {path}: {r.status} {r.headers}"
            assert hdr(r, "X-Content-Type-Options") == "nosniff", f"{method} {path}: {r.status} {r.headers}"
            assert hdr(r, "Cache-Control"), f"{method} {path}: {r.status} {r.headers}"
        # the web client's CSP: connect-src is its own origin only
        r = await api.req("GET", "/")
        if r.status == 200:
            csp = hdr(r, "Content-Security-Policy") or ""
            assert "connect-src 'self';" in csp and "ws:" not in csp and "wss:" not in csp, csp


@async_test(120)
async def test_forwarded_headers_from_trusted_proxies_only(server_factory):
    # default: loopback is a trusted proxy (HAProxy in cluster mode is too)
    s = server_factory()
    async with Harness(s) as h:
        r = await h.raw(extra_headers={"X-Forwarded-Host": "chat.example", "X-Forwarded-Proto": "https",
                                       "Origin": "https://chat.example"})
        assert r.status == 101, f"a trusted proxy's X-Forwarded-*: {r.response_head!r}"
        r = await h.raw(extra_headers={"X-Forwarded-Host": "chat.example", "X-Forwarded-Proto": "https",
                                       "Origin": "http://chat.example"})
        assert r.status == 403, r.response_head          # the scheme is https behind the proxy
        r = await h.raw(extra_headers={"X-Forwarded-Host": "chat.example",
                                       "Origin": own_origin(s)})
        assert r.status == 403, r.response_head          # the proxy's host replaces Host
    # nobody trusted: X-Forwarded-* are ignored; --allowed-origins adds exact origins
    s2 = server_factory(["--trusted-proxies", "", "--allowed-origins",
                         "https://app.example, http://localhost:3000"])
    async with Harness(s2) as h:
        alice = await h.api.register("fw")
        r = await h.raw(extra_headers={"X-Forwarded-Host": "chat.example", "X-Forwarded-Proto": "https",
                                       "Origin": "https://chat.example"})
        assert r.status == 403, f"untrusted X-Forwarded-* were believed: {r.response_head!r}"
        r = await h.raw(extra_headers={"X-Forwarded-Host": "chat.example", "Origin": own_origin(s2)})
        assert r.status == 101, r.response_head
        for origin, status in (("https://app.example", 101), ("https://app.example:443", 101),
                               ("http://localhost:3000", 101), ("http://app.example", 403),
                               ("https://app.example.evil.example", 403), ("http://localhost:3001", 403)):
            r = await h.raw(extra_headers={"Origin": origin})
            assert r.status == status, f"{origin}: {r.response_head!r}"
        r = await h.api.req("POST", "/api/v1/conversations", token=alice.token,
                            headers={"Origin": "https://app.example"},
                            json_body={"kind": "group", "title": "t", "members": []})
        assert r.status == 201, r


@async_test(60)
async def test_empty_bearer_closes_at_once(server):
    # the auth timeout is 10 s by default: a close within 4 s is "at once"
    async with Harness(server) as h:
        for hd in ({"Authorization": "Bearer"}, {"Authorization": "Bearer     "},
                   {"Authorization": "bearer \t "}, {"Sec-WebSocket-Protocol": "parley.v1, bearer."}):
            r = await h.raw(extra_headers=hd)
            assert r.status == 101, f"{hd}: {r.response_head!r}"
            t0 = time.monotonic()
            code, reason, msgs = await r.read_until_close(timeout=4)
            assert code == 4001, f"{hd}: close {code} {reason!r} {msgs}"
            assert time.monotonic() - t0 < 4
            assert not [m for m in msgs if m.get("type") == "ready"], msgs


@async_test(60)
async def test_two_bearer_subprotocols_are_a_bad_token(server):
    """Which of two would count is not for the server to guess (audit N4:
    the first signed in); with the Authorization header, the header's."""
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "two")
        two = f"parley.v1, bearer.{alice.token}, bearer.{bob.token}"
        for hd in ({"Sec-WebSocket-Protocol": two},
                   {"Sec-WebSocket-Protocol": f"parley.v1, bearer.{alice.token}, bearer.{alice.token}"}):
            r = await h.raw(extra_headers=hd)
            assert r.status == 101, r.response_head
            code, reason, msgs = await r.read_until_close(timeout=4)
            assert code == 4001 and not [m for m in msgs if m.get("type") == "ready"], (code, reason, msgs)
        r = await h.raw(extra_headers={"Sec-WebSocket-Protocol": two, "Authorization": f"Bearer {bob.token}"})
        assert r.status == 101, r.response_head
        m = await r.read_json(timeout=5)
        assert m.get("type") == "ready" and m["user"]["id"] == bob.id, m


@async_test(60)
async def test_common_passwords_refused(server):
    async with Harness(server) as h:
        api = h.api
        for pw in ("password", "Password1", "P@SSW0RD", "iloveyou", "qwerty123", "12345678",
                   "trustno1", "Welcome1"):
            r = await api.req("POST", "/api/v1/auth/register",
                              json_body={"username": unique_name("cp"), "password": pw})
            assert r.status == 400 and r.code == "bad_request", f"{pw!r}: {r!r}"
            assert "common" in r.body["error"]["message"], r
        u = await api.register("cp")                    # an uncommon one is fine
        assert u.id
        # login is not affected by the list (only register checks it)
        r = await api.req("POST", "/api/v1/auth/login",
                          json_body={"username": u.username, "password": "password"})
        assert r.status == 401, r


GRACE = 2


@async_test(120)
async def test_refresh_reuse_revokes_session(server_factory):
    s = server_factory(["--refresh-reuse-grace", str(GRACE)])
    async with Harness(s) as h:
        api = h.api
        alice = await api.register("rr")
        other = await api.login(alice)                  # a second login session
        ws1 = await h.ws(alice, name="session1")
        ws2 = await h.ws(other["access_token"], name="session2")

        r = await api.refresh(alice.refresh_token)
        assert r.status == 200, r
        t1, rt1 = r.body["access_token"], r.body["refresh_token"]
        # within the grace period (another tab refreshing at once): 401, the
        # session stays
        r = await api.refresh(alice.refresh_token)
        assert r.status == 401 and r.code == "unauthorized", r
        assert (await api.req("GET", "/api/v1/me", token=t1)).status == 200
        assert not ws1.closed.is_set(), f"session 1 closed inside the grace period: {ws1.close_code}"

        await asyncio.sleep(GRACE + 0.5)
        # outside it: reuse revokes the whole login session
        r = await api.refresh(alice.refresh_token)
        assert r.status == 401 and r.code == "unauthorized", r
        assert "revoked" in r.body["error"]["message"], r
        code = await ws1.wait_closed(timeout=10)
        assert code == 4001, f"session 1's WebSocket: close {code} {ws1.close_reason!r}"
        r = await api.refresh(rt1)
        assert r.status == 401, f"the newest refresh token of a revoked session: {r!r}"
        for tok in (t1, alice.token):
            r = await api.req("GET", "/api/v1/me", token=tok)
            assert r.status == 401, f"an access token of the revoked session: {r!r}"
        c = WS(s.ws_url, t1, name="after")
        h.clients.append(c)
        await c.connect(expect_ready=False)
        assert await c.wait_closed(timeout=10) == 4001

        # the other login session is untouched
        assert not ws2.closed.is_set(), f"session 2 closed: {ws2.close_code}"
        assert (await api.req("GET", "/api/v1/me", token=other["access_token"])).status == 200
        r = await api.refresh(other["refresh_token"])
        assert r.status == 200, r

        # a token older than the previous one is just invalid: only the last
        # rotation is remembered, so nothing is revoked
        rt_a = r.body["refresh_token"]
        r = await api.refresh(rt_a)
        assert r.status == 200, r
        rt_b = r.body["refresh_token"]
        r = await api.refresh(rt_b)
        assert r.status == 200, r
        rt_c = r.body["refresh_token"]
        await asyncio.sleep(GRACE + 0.5)
        r = await api.refresh(rt_a)                     # two rotations ago
        assert r.status == 401, r
        r = await api.refresh(rt_c)
        assert r.status == 200, f"session 2 must still refresh: {r!r}"
        assert not ws2.closed.is_set(), f"session 2 closed: {ws2.close_code}"


@async_test(60)
async def test_two_authorization_headers_are_refused_as_two_origins_are(server):
    """protocol.md "Origin checks": a request with two Authorization headers
    is refused (403 forbidden, before anything else), whichever comes first
    and whatever the method; the WebSocket handshake before any upgrade."""
    async with Harness(server) as h:
        alice, bob = await h.api.register_many(2, "auth2")
        want = {"code": "forbidden", "message": "more than one Authorization header"}
        host = f"Host: {server.host}:{server.port}"
        for first, second in ((alice.token, bob.token), (alice.token, "bogus"), ("bogus", alice.token),
                              (alice.token, alice.token)):
            for lines in (["GET /api/v1/me HTTP/1.1"], ["GET /api/v1/conversations HTTP/1.1"],
                          ["GET /api/v1/events HTTP/1.1"],
                          ["POST /api/v1/conversations HTTP/1.1", "Content-Type: application/json",
                           "Content-Length: 2"]):
                head = "\r\n".join(lines + [host, "Connection: close", f"Authorization: Bearer {first}",
                                            f"authorization: Bearer {second}"])
                st, rh, body = await raw_http(server.host, server.port, head, b"{}")
                assert st == 403 and json.loads(body)["error"] == want, (lines[0], st, rh, body)
            r = await raw_upgrade(h, {"Authorization": f"Bearer {first}", "authorization": f"Bearer {second}"})
            assert r.status == 403, r.response_head
            n = int(next(l.split(":", 1)[1] for l in r.response_head.split("\r\n")
                         if l.lower().startswith("content-length:")))
            body = await asyncio.wait_for(r.reader.readexactly(n), 5)
            assert json.loads(body)["error"] == want, body
        # one is fine, as before
        r = await h.api.req("GET", "/api/v1/me", token=alice.token)
        assert r.status == 200 and r.body["id"] == alice.id, r
        c = await h.ws(alice)
        assert c.ready["user"]["id"] == alice.id


@async_test(60)
async def test_refreshes_at_the_same_moment_get_the_two_tabs_answer(server):
    """Audit C3: two refreshes with one token sent at once both found it
    valid, and the one whose rotation came second was told "refresh token
    is not valid", not the documented two-tabs answer. Each round: one 200,
    the other 401 "refresh token was just rotated: use the newer one"; the
    login stays."""
    async with Harness(server) as h:
        api = h.api
        alice = await api.register("tabs")
        rt = alice.refresh_token
        for round_ in range(6):
            a, b = await asyncio.gather(api.refresh(rt), api.refresh(rt))
            ok = [r for r in (a, b) if r.status == 200]
            refused = [r for r in (a, b) if r.status != 200]
            assert len(ok) == 1 and len(refused) == 1, (round_, a, b)
            r = refused[0]
            assert r.status == 401 and r.body["error"]["message"] == \
                "refresh token was just rotated: use the newer one", (round_, r)
            rt = ok[0].body["refresh_token"]
            assert (await api.req("GET", "/api/v1/me", token=ok[0].body["access_token"])).status == 200
