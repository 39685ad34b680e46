"""Authentication and authorization: membership on every read and write,
tokens (missing, forged, expired, revoked), WebSocket close 4001, refresh
rotation and logout."""

import asyncio
import secrets

import websockets.exceptions

from pclient import WS, Harness, async_test, marker_barrier


def _tamper_char(s, i):
    c = s[i]
    return s[:i] + ("B" if c == "A" else "A") + s[i + 1:]


def forged_variants(token, other_uid):
    """Tokens that must all be refused: a changed signature, every payload
    field changed (user id, expiry...) with the signature kept, no signature."""
    out = {}
    parts = token.split(".")
    sig = parts[-1]
    if len(sig) >= 2:
        out["signature char"] = ".".join(parts[:-1] + [_tamper_char(sig, len(sig) // 2)])
        out["signature first char"] = ".".join(parts[:-1] + [_tamper_char(sig, 0)])
    for i in range(len(parts) - 1):
        p = parts[i]
        if p.isdigit():
            alt = str(other_uid) if str(other_uid) != p else str(int(p) + 1)
            if i >= 3 or len(p) >= 9:     # looks like a timestamp: push it far out
                alt = str(int(p) + 10 ** 6)
        else:
            alt = _tamper_char(p, len(p) // 2) if p else "x"
        out[f"payload field {i}"] = ".".join(parts[:i] + [alt] + parts[i + 1:])
    if len(parts) > 1:
        out["no signature"] = ".".join(parts[:-1])
        out["empty signature"] = ".".join(parts[:-1]) + "."
    out["middle char"] = _tamper_char(token, len(token) // 2)
    return {k: v for k, v in out.items() if v != token}


async def _ws_refused(h, token, auth, what):
    """Connect with a bad token: the upgrade happens, then close 4001, no ready."""
    c = WS(h.server.ws_url, token, auth=auth, name=f"refused-{auth}")
    h.clients.append(c)
    try:
        await c.connect(expect_ready=False)
    except websockets.exceptions.InvalidStatusCode as e:
        raise AssertionError(f"{what} ({auth} auth): the handshake was refused with HTTP "
                             f"{e.status_code}; it must be upgraded, then closed with 4001")
    code = await c.wait_closed(timeout=15)
    assert code == 4001, f"{what} ({auth} auth): close code {code} {c.close_reason!r}, msgs {c.msgs}"
    assert not [m for m in c.msgs if m.get("type") == "ready"], f"{what}: got ready: {c.msgs}"


@async_test(60)
async def test_non_member_sees_nothing(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "az")
        cid = (await api.open_dm(alice, bob.id))["id"]
        gid = (await api.create_group(alice, [bob.id], title="private"))["id"]
        # carol's one conversation with them: the absence barrier's markers
        mk = (await api.create_group(alice, [bob.id, carol.id], title="markers"))["id"]
        cc = await h.ws(carol, name="carol")
        assert not {cid, gid} & {x["id"] for x in cc.ready["conversations"]}, cc.ready
        a = await h.ws(alice, name="a")
        b = await h.ws(bob, name="b")

        for conv in (cid, gid):
            for method, path, body in (
                    ("GET", f"/api/v1/conversations/{conv}", None),
                    ("GET", f"/api/v1/conversations/{conv}/messages", None),
                    ("GET", f"/api/v1/conversations/{conv}/messages?before=5&limit=2", None),
                    ("POST", f"/api/v1/conversations/{conv}/messages",
                     {"client_msg_id": "sneak", "body": "hi"})):
                kw = {"json_body": body} if body is not None else {}
                r = await api.req(method, path, token=carol.token, **kw)
                assert r.status == 404 and r.code == "not_found", f"carol {method} {path}: {r!r}"
            # The same answer as for a conversation that does not exist.
            rep = await cc.request({"type": "send", "conversation": conv,
                                    "client_msg_id": "sneak", "body": "hi"})
            assert rep["type"] == "error" and rep["code"] == "not_found", rep
            rep = await cc.request({"type": "history", "conversation": conv, "limit": 10})
            assert rep["type"] == "error" and rep["code"] == "not_found", rep
        r = await api.req("GET", "/api/v1/conversations/987654321/messages", token=carol.token)
        assert r.status == 404 and r.code == "not_found", r
        rep = await cc.request({"type": "send", "conversation": 987654321,
                                "client_msg_id": "x", "body": "hi"})
        assert rep["type"] == "error" and rep["code"] == "not_found", rep

        # Members chat while carol is connected.
        last = {}
        for i in range(10):
            last[cid] = (await a.send_msg(cid, f"dm {i}"))["seq"]
            last[gid] = (await b.send_msg(gid, f"grp {i}"))["seq"]
        for conv in (cid, gid):
            await a.wait_seq(conv, last[conv])
            await b.wait_seq(conv, last[conv])
        await cc.ping()
        # Absence barrier (pclient.py): a ping covers carol's node only. a
        # then b send a marker to mk once their last message was acked: each
        # marker is committed, so published, after that connection's dm/grp
        # events by the same node, and carol's node gets a node's publishes
        # in order; so any of those events leaking to carol would be on her
        # connection before the marker.
        await marker_barrier(mk, [a, b], [cc])
        assert not ({cid, gid} & set(cc.events)), f"carol received events: {cc.events}"
        r = await api.expect(200, "GET", "/api/v1/conversations", token=carol.token)
        assert not {cid, gid} & {c["id"] for c in r.body["conversations"]}, r
        # Nothing carol tried was stored.
        hist = await api.history_all(alice, cid)
        assert not [e for e in hist if e.get("client_msg_id") == "sneak"], hist


@async_test(60)
async def test_missing_and_forged_tokens(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "tok")
        for method, path in (("GET", "/api/v1/me"), ("GET", "/api/v1/conversations"),
                             ("GET", f"/api/v1/users/{bob.username}")):
            r = await api.req(method, path)
            assert r.status == 401 and r.code == "unauthorized", f"{method} {path} without token: {r!r}"
        r = await api.req("POST", "/api/v1/conversations", json_body={"kind": "direct", "user": bob.id})
        assert r.status == 401, r
        for hv in ("Basic YWxpY2U6cHc=", "Bearer", "Bearer ", f"Token {alice.token}", "bearer-ish"):
            r = await api.req("GET", "/api/v1/me", headers={"Authorization": hv})
            assert r.status == 401, f"Authorization: {hv!r} -> {r!r}"

        variants = forged_variants(alice.token, bob.id)
        assert len(variants) >= 4, variants
        for what, tok in variants.items():
            r = await api.req("GET", "/api/v1/me", token=tok)
            assert r.status == 401 and r.code == "unauthorized", f"forged ({what}) {tok!r}: {r!r}"
        # The genuine token still works.
        r = await api.expect(200, "GET", "/api/v1/me", token=alice.token)
        assert r.body["id"] == alice.id

        for what in ("signature char", "payload field 1"):
            tok = variants.get(what) or variants["middle char"]
            for auth in ("header", "first", "subprotocol"):
                await _ws_refused(h, tok, auth, f"forged token ({what})")

        # The subprotocol form works with a good token and selects parley.v1.
        c = await h.ws(alice, auth="subprotocol", name="subproto")
        assert c.ws.subprotocol == "parley.v1", c.ws.subprotocol
        assert c.ready["user"]["id"] == alice.id
        c = await h.ws(alice, auth="first", name="first-frame")
        assert c.ready["user"]["id"] == alice.id
        # the subprotocols on two header lines mean the same as on one (RFC
        # 6455 11.3.4; audit C3: the token on the second line was not read and
        # the socket waited for the auth timeout)
        first = await asyncio.to_thread(_split_subprotocol_first_frame, server.ws_url, alice.token)
        assert first.get("type") == "ready" and first["user"]["id"] == alice.id, first


def _split_subprotocol_first_frame(ws_url, token):
    import base64, json as _json, os, socket, urllib.parse
    u = urllib.parse.urlsplit(ws_url)
    key = base64.b64encode(os.urandom(16)).decode()
    head = (f"GET {u.path} HTTP/1.1\r\nHost: {u.netloc}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            f"Sec-WebSocket-Protocol: parley.v1\r\nSec-WebSocket-Protocol: bearer.{token}\r\n\r\n")
    with socket.create_connection((u.hostname, u.port), timeout=5) as s:
        s.sendall(head.encode())
        buf = b""
        while b"\r\n\r\n" not in buf:
            d = s.recv(65536)
            assert d, buf
            buf += d
        head_in, buf = buf.split(b"\r\n\r\n", 1)
        assert head_in.startswith(b"HTTP/1.1 101"), head_in
        assert b"parley.v1" in head_in.lower(), head_in
        s.settimeout(3)                      # well under the 10 s auth timeout
        while True:
            if len(buf) >= 2:
                n, off = buf[1] & 0x7F, 2
                if n == 126:
                    n, off = int.from_bytes(buf[2:4], "big"), 4
                elif n == 127:
                    n, off = int.from_bytes(buf[2:10], "big"), 10
                if len(buf) >= off + n:
                    assert buf[0] & 0x0F == 1, buf[:2]     # a text frame
                    return _json.loads(buf[off:off + n])
            d = s.recv(65536)
            assert d, "closed before the first frame"
            buf += d


@async_test(60)
async def test_anything_before_auth_is_refused(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "pre")
        cid = (await api.open_dm(alice, bob.id))["id"]
        b = await h.ws(bob)
        for first in ({"type": "send", "conversation": cid, "client_msg_id": "pre-auth", "body": "x"},
                      {"type": "ping", "req": 1},
                      {"type": "sync", "cursors": {str(cid): 0}}):
            c = WS(server.ws_url, None, auth=None, name="unauth")
            h.clients.append(c)
            await c.connect(expect_ready=False)
            if isinstance(first, str):
                await c.send_text(first)
            else:
                await c.send_json(first)
            code = await c.wait_closed(timeout=15)
            assert code == 4001, f"first message {first!r}: close {code}, msgs {c.msgs}"
            assert c.close_reason == "authenticate first", c.close_reason
            assert not [m for m in c.msgs if m.get("type") in ("ready", "sent", "pong", "event")], c.msgs
        # an `auth` that is not a valid one is told why (audit W: it was
        # "authenticate first" though the client did authenticate first)
        for first, why in (({"type": "auth", "token": bob.token, "cursors": {str(cid): -1}}, "cursor values"),
                           ({"type": "auth", "token": bob.token, "cursors": {"0" + str(cid): 0}}, "cursor keys"),
                           ({"type": "auth", "token": bob.token, "cursors": [1]}, "\"cursors\""),
                           ({"type": "auth", "token": 5}, "\"token\""),
                           # a bad req is refused before the type is read (audit B2)
                           ({"type": "auth", "req": [1], "token": bob.token}, "\"req\""),
                           ({"type": "auth", "req": -1, "token": bob.token}, "\"req\""),
                           # a first message that is not JSON, or repeats a key, is no
                           # valid `auth` either (it was "authenticate first": audit R2 F2)
                           ("not json at all", "JSON"),
                           ('{"type":"auth","token":"%s","req":"A","req":"B"}' % bob.token, "repeats a key"),
                           # a number past 64 bits (audit R3: "authenticate first")
                           ('{"type":"auth","token":"%s","n":1e400}' % bob.token, "out of range"),
                           # JSON, but not an object (audit M2: "authenticate first")
                           ("[1]", "JSON object"), ("null", "JSON object"), ('"auth"', "JSON object")):
            c = WS(server.ws_url, None, auth=None, name="badauth")
            h.clients.append(c)
            await c.connect(expect_ready=False)
            if isinstance(first, str):
                await c.send_text(first)
            else:
                await c.send_json(first)
            code = await c.wait_closed(timeout=15)
            assert code == 4001, f"first message {first!r}: close {code}, msgs {c.msgs}"
            assert c.close_reason.startswith("bad auth message: ") and why in c.close_reason, (first, c.close_reason)
            assert not [m for m in c.msgs if m.get("type") == "ready"], c.msgs
        # a req given null is no req: not echoed in `ready` (audit M2: `"req": null`)
        c = WS(server.ws_url, None, auth=None, name="nullreq")
        h.clients.append(c)
        await c.connect(expect_ready=False)
        await c.send_json({"type": "auth", "req": None, "token": bob.token, "cursors": None})
        ready = await c.wait_for(lambda m: m.get("type") == "ready", what="ready after an auth with req null")
        assert "req" not in ready, ready
        await b.ping()
        assert not b.conv_events(cid), f"a pre-auth send was delivered: {b.conv_events(cid)}"
        hist = await api.history_all(bob, cid)
        assert not [e for e in hist if e.get("kind") == "message"], hist


@async_test(60)
async def test_auth_timeout(server_factory):
    server = server_factory(["--auth-timeout", "1"])
    async with Harness(server) as h:
        c = WS(server.ws_url, None, auth=None, name="silent")
        h.clients.append(c)
        await c.connect(expect_ready=False)
        code = await c.wait_closed(timeout=15)
        assert code == 4001, f"no auth in time: close {code} {c.close_reason!r}"


@async_test(60)
async def test_expired_token(server_factory):
    server = server_factory(["--access-ttl", "1"])
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "exp")
        assert alice.raw["expires_in"] == 1, alice.raw
        await asyncio.sleep(2.5)
        r = await api.req("GET", "/api/v1/me", token=alice.token)
        assert r.status == 401 and r.code == "unauthorized", f"expired token: {r!r}"
        for auth in ("header", "first"):
            await _ws_refused(h, alice.token, auth, "expired token")
        # The refresh token outlives the access token.
        r = await api.refresh(alice.refresh_token)
        assert r.status == 200 and r.body["access_token"] != alice.token, r


@async_test(60)
async def test_refresh_rotation_and_logout(server):
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "rot")

        r = await api.refresh(alice.refresh_token)
        assert r.status == 200, r
        t1, rt1 = r.body["access_token"], r.body["refresh_token"]
        assert rt1 != alice.refresh_token, r
        assert (await api.req("GET", "/api/v1/me", token=t1)).status == 200
        r = await api.refresh(alice.refresh_token)
        assert r.status == 401 and r.code == "unauthorized", f"a rotated refresh token still works: {r!r}"
        r = await api.refresh(rt1)
        assert r.status == 200, f"the new refresh token must work: {r!r}"
        t2, rt2 = r.body["access_token"], r.body["refresh_token"]
        r = await api.refresh("3.bm90LWEtdG9rZW4")
        assert r.status == 401, r

        # A second, independent session.
        other = await api.login(alice)
        ws1 = await h.ws(t2, name="session1")
        ws2 = await h.ws(other["access_token"], name="session2")
        assert ws1.ready["session"] != ws2.ready["session"]

        # Logout with the refresh token revokes session 1 only.
        r = await api.req("POST", "/api/v1/auth/logout", json_body={"refresh_token": rt2})
        assert r.status == 204, r
        r = await api.refresh(rt2)
        assert r.status == 401, f"refresh after logout: {r!r}"
        for tok in (t2, t1, alice.token):
            r = await api.req("GET", "/api/v1/me", token=tok)
            assert r.status == 401, f"an access token of a logged-out session still works: {r!r}"
        code = await ws1.wait_closed(timeout=10)
        assert code == 4001, f"live WebSocket of the revoked session: close {code}"
        assert ws1.close_reason == "session revoked", ws1.close_reason   # also for a reused refresh token
        await _ws_refused(h, t2, "header", "revoked session")
        await ws2.ping()
        assert (await api.req("GET", "/api/v1/me", token=other["access_token"])).status == 200

        # Logout with the access token (header form) revokes session 2.
        r = await api.req("POST", "/api/v1/auth/logout", token=other["access_token"])
        assert r.status == 204, r
        assert (await api.refresh(other["refresh_token"])).status == 401
        assert (await api.req("GET", "/api/v1/me", token=other["access_token"])).status == 401
        code = await ws2.wait_closed(timeout=10)
        assert code == 4001, f"live WebSocket of the revoked session: close {code}"
        # A fresh login still works.
        again = await api.login(alice)
        assert (await api.req("GET", "/api/v1/me", token=again["access_token"])).status == 200


@async_test(60)
async def test_account_errors(server):
    async with Harness(server) as h:
        api = h.api
        alice, = await api.register_many(1, "acct")
        r = await api.req("POST", "/api/v1/auth/register",
                          json_body={"username": alice.username.upper(), "password": "another password"})
        assert r.status == 409 and r.code == "conflict", f"name taken (case-insensitive): {r!r}"
        for name, pw in (("ab", "long enough pw"), ("has space", "long enough pw"),
                         ("x" * 33, "long enough pw"), ("bad/name", "long enough pw"),
                         ("fine_name_1", "short")):
            r = await api.req("POST", "/api/v1/auth/register", json_body={"username": name, "password": pw})
            assert r.status == 400 and r.code == "bad_request", f"register {name!r}/{pw!r}: {r!r}"
        r = await api.req("POST", "/api/v1/auth/login",
                          json_body={"username": alice.username, "password": "wrong password"})
        assert r.status == 401 and r.code == "unauthorized", r
        r = await api.req("POST", "/api/v1/auth/login",
                          json_body={"username": "nobody_here_zz", "password": "wrong password"})
        assert r.status == 401 and r.code == "unauthorized", r
        # credentials no account can have are wrong ones too, not a bad request
        for name, pw in ((alice.username, "x"), (alice.username, "p" * 257), ("zz", "wrong password"),
                         ("has space", "wrong password")):
            r = await api.req("POST", "/api/v1/auth/login", json_body={"username": name, "password": pw})
            assert r.status == 401 and r.code == "unauthorized", f"login {name!r}/{pw[:10]!r}: {r!r}"
        r = await api.req("POST", "/api/v1/auth/login", json_body={"username": alice.username, "password": 5})
        assert r.status == 400 and r.code == "bad_request", r
        r = await api.req("POST", "/api/v1/auth/login",
                          json_body={"username": alice.username.upper(), "password": alice.password})
        assert r.status == 200 and r.body["user"]["id"] == alice.id, r


@async_test(60)
async def test_register_refuses_a_username_ending_in_dot_or_dash(server):
    """`@alice.` mentions `alice`: a name ending in `.` or `-` could never be
    mentioned, and would pass for its stem. New registrations are refused;
    login keeps its rule (accounts registered before keep working)."""
    async with Harness(server) as h:
        api = h.api
        for name in ("alice.", "alice-", "bob.-", "a.b-", "ab-"):
            r = await api.req("POST", "/api/v1/auth/register",
                              json_body={"username": name, "password": "long enough pw"})
            assert r.status == 400 and r.body["error"] == {
                "code": "bad_request", "message": "username must not end in '.' or '-'"}, (name, r)
            r = await api.req("POST", "/api/v1/auth/login",
                              json_body={"username": name, "password": "long enough pw"})
            assert r.status == 401 and r.code == "unauthorized", (name, r)
        for name in ("a.b_c-d", "x-y.z", "end_"):
            r = await api.req("POST", "/api/v1/auth/register",
                              json_body={"username": secrets.token_hex(3) + name, "password": "long enough pw"})
            assert r.status == 201, (name, r)


@async_test(60)
async def test_a_second_auth_is_refused_as_one_whatever_its_form(server):
    """protocol.md "auth": a second `auth` on an authenticated connection
    gets `bad_request` "already authenticated" and the connection stays.
    Audit O10: one without a token, or with a token that is not a string,
    was told `"token" must be a string`."""
    async with Harness(server) as h:
        alice, = await h.api.register_many(1, "auth2")
        w = await h.ws(alice)
        for i, again in enumerate(({"token": alice.token}, {}, {"token": 5}, {"token": None},
                                   {"token": alice.token, "cursors": [1]})):
            req = 100 + i
            await w.send_json({"type": "auth", "req": req, **again})
            err = await w.wait_reply(req)
            assert err["type"] == "error" and err["code"] == "bad_request" \
                and err["message"] == "already authenticated", (again, err)
        await w.ping()
