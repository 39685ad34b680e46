"""Bad input gets a clear error and costs nothing else: while one client
throws garbage (JSON, schema, frames, HTTP), two others keep chatting in the
same conversation, and every one of their messages arrives and is stored."""

import asyncio
import json

from pclient import (OP_BINARY, OP_CLOSE, OP_CONT, OP_PING, OP_PONG, OP_TEXT, Harness, RawWS,
                     async_test, assert_contiguous, build_frame, is_reply, msg_events, raw_http, seqs)

MAX_BODY = 16384
MAX_WS = 1 << 20


class Chatter:
    """Two members exchanging messages until stopped."""

    def __init__(self, a, b, cid):
        self.a, self.b, self.cid = a, b, cid
        self.acks = []
        self.stop = asyncio.Event()
        self.task = None

    def start(self):
        self.task = asyncio.ensure_future(self._run())
        return self

    async def _run(self):
        i = 0
        while not self.stop.is_set():
            for c in (self.a, self.b):
                self.acks.append(await c.send_msg(self.cid, f"{c.name} chat {i}"))
            i += 1
            await asyncio.sleep(0.005)

    async def finish(self, api, user):
        """Stop, then check that both saw everything and history holds it."""
        assert not self.task.done() or self.task.exception() is None, self.task.exception()
        # Let it exchange a few more after the abuse, then stop.
        n = len(self.acks) + 10
        await self.a.wait_until(lambda: len(self.acks) >= n or self.task.done(), timeout=30,
                                what="the chatter to go on")
        self.stop.set()
        await asyncio.wait_for(self.task, 30)
        last = self.acks[-1]["seq"]
        want = sorted((x["seq"], x["id"]) for x in self.acks)
        for c in (self.a, self.b):
            await c.wait_seq(self.cid, last)
            evs = c.conv_events(self.cid)
            assert_contiguous(seqs(evs), None, f"{c.name} event seqs")
            senders = {self.a.ready["user"]["id"], self.b.ready["user"]["id"]}
            got = [(e["seq"], e["id"]) for e in msg_events(evs)
                   if e["seq"] >= want[0][0] and e["sender"] in senders]
            assert got == want, f"{c.name}: delivered messages differ from acks"
            assert not c.closed.is_set(), f"{c.name} was disconnected"
        hist = await api.history_all(user, self.cid)
        assert_contiguous(seqs(hist), 1, "history seqs")
        hs = {e["seq"]: e["id"] for e in hist}
        for s, i in want:
            assert hs.get(s) == i, f"acked seq {s} id {i} not in history ({hs.get(s)})"
        return hist


async def _setup(h):
    api = h.api
    a_u, b_u, x_u = await api.register_many(3, "bad")
    cid = (await api.create_group(a_u, [b_u.id, x_u.id], title="noisy"))["id"]
    a = await h.ws(a_u, name="a")
    b = await h.ws(b_u, name="b")
    x = await h.ws(x_u, name="x")
    return api, (a_u, b_u, x_u), cid, a, b, x


def _send(cid, req, **over):
    m = {"type": "send", "req": req, "conversation": cid, "client_msg_id": f"bad-{req}", "body": "ok"}
    for k, v in over.items():
        if v is _DROP:
            m.pop(k)
        else:
            m[k] = v
    return json.dumps(m)


_DROP = object()


@async_test(120)
async def test_bad_messages_get_errors_and_cost_nothing(server):
    async with Harness(server) as h:
        api, (a_u, b_u, x_u), cid, a, b, x = await _setup(h)
        chat = Chatter(a, b, cid).start()

        # reqs come from the client's own counter, so no later request of
        # the run reuses one and matches these errors' replies.
        R = iter(x.next_req, None)
        nested_arrays = "[" * 200000 + "]" * 200000
        nested_objects = '{"a":' * 100000 + "1" + "}" * 100000
        cases = [
            # (text, acceptable codes, req carried or None)
            ("{not json", {"bad_json"}, None),
            ('{"type": "send", ', {"bad_json"}, None),
            ("[1, 2, 3]", {"bad_json"}, None),
            ('"just a string"', {"bad_json"}, None),
            ("42", {"bad_json"}, None),
            ("null", {"bad_json"}, None),
            ("", {"bad_json"}, None),
            ("   ", {"bad_json"}, None),
            ('{"type": "ping"} trailing', {"bad_json"}, None),
            (nested_arrays, {"bad_json"}, None),
            (nested_objects, {"bad_json", "bad_request"}, None),
        ]
        r = next(R)
        cases.append((json.dumps({"type": "frobnicate", "req": r}), {"unknown_type"}, r))
        r = next(R)
        cases.append((json.dumps({"req": r, "conversation": cid}), {"bad_request", "unknown_type"}, r))
        r = next(R)
        cases.append((json.dumps({"type": 5, "req": r}), {"bad_request", "unknown_type"}, r))
        for field in ("conversation", "client_msg_id", "body"):
            r = next(R)
            cases.append((_send(cid, r, **{field: _DROP}), {"bad_request"}, r))
        for field, val in (("conversation", str(cid)), ("conversation", 1.5), ("conversation", None),
                           ("body", 123), ("body", None), ("body", ["x"]), ("body", ""),
                           ("client_msg_id", 123), ("client_msg_id", ""),
                           ("client_msg_id", "c" * 65), ("client_msg_id", None)):
            r = next(R)
            cases.append((_send(cid, r, **{field: val}), {"bad_request"}, r))
        r = next(R)
        cases.append((_send(cid, r, body="x" * (MAX_BODY + 1)), {"too_large"}, r))
        r = next(R)
        cases.append((_send(cid, r, body="é" * (MAX_BODY // 2 + 1)), {"too_large"}, r))
        r = next(R)
        cases.append((_send(cid, r, body="x" * 200000), {"too_large"}, r))
        r = next(R)
        cases.append(('{"type":"send","req":%d,"conversation":%d,"client_msg_id":"sur","body":"\\ud800"}'
                      % (r, cid), {"bad_json", "bad_request"}, r))
        r = next(R)
        cases.append((json.dumps({"type": "history", "req": r, "conversation": cid, "limit": "ten"}),
                      {"bad_request"}, r))
        r = next(R)
        cases.append((json.dumps({"type": "history", "req": r, "conversation": "x"}), {"bad_request"}, r))
        # valid JSON with an integer beyond 64 bits: out of range, not bad JSON
        # (the message cannot be read, so no req comes back)
        r = next(R)
        cases.append((json.dumps({"type": "send", "req": r, "conversation": 10 ** 30, "client_msg_id": "big",
                                  "body": "x"}), {"bad_request"}, None))
        cases.append(('{"type": "history", "conversation": %d, "limit": 184467440737095516150}' % cid,
                      {"bad_request"}, None))
        r = next(R)
        cases.append((json.dumps({"type": "sync", "req": r, "cursors": "all"}), {"bad_request"}, r))
        r = next(R)
        cases.append((json.dumps({"type": "sync", "req": r, "cursors": {str(cid): "x"}}), {"bad_request"}, r))

        for text, codes, req in cases:
            start = len(x.msgs)
            await x.send_text(text)
            rep = await x.wait_next_reply(start, timeout=15)
            assert rep.get("type") == "error", f"sent {text[:120]!r}: expected an error, got {rep}"
            assert rep.get("code") in codes, f"sent {text[:120]!r}: expected {codes}, got {rep}"
            assert isinstance(rep.get("message"), str), rep
            if req is not None and rep.get("code") != "bad_json":   # unparsable: no req to copy
                assert rep.get("req") == req, f"sent {text[:120]!r}: error lacks req {req}: {rep}"
            assert not x.closed.is_set(), f"connection closed after {text[:120]!r}"

        # Boundaries that must be accepted: exactly 16 KiB, in ASCII and in 2-byte UTF-8.
        for body in ("x" * MAX_BODY, "é" * (MAX_BODY // 2)):
            ack = await x.send_msg(cid, body)
            assert ack["duplicate"] is False
        # A body with an escaped NUL is either stored exactly or refused, never truncated.
        r = next(R)
        start = len(x.msgs)
        await x.send_text(_send(cid, r, body="a\u0000b", client_msg_id="nul-body"))
        rep = await x.wait_next_reply(start)
        if rep["type"] == "sent":
            hist = await api.history(x_u, cid, after=rep["seq"] - 1, limit=1)
            assert hist.body["events"][0]["body"] == "a\u0000b", hist
        else:
            assert rep["code"] in ("bad_json", "bad_request"), rep

        # The same over REST: 400 bad_request, not bad_json.
        for path, body in (("/api/v1/conversations", {"kind": "direct", "user": 10 ** 30}),
                           (f"/api/v1/conversations/{cid}/messages", {"client_msg_id": "big", "body": "x",
                                                                       "reply_to": -(10 ** 25)})):
            rr = await api.req("POST", path, token=x_u.token, json_body=body)
            assert rr.status == 400 and rr.body["error"]["code"] == "bad_request", (path, rr)
            assert rr.body["error"]["message"] == "a number is out of range", rr

        # The bad client is still fine.
        ack = await x.send_msg(cid, "x is still here")
        await a.wait_seq(cid, ack["seq"])
        await x.ping()
        assert not [e for e in a.conv_events(cid) if e.get("client_msg_id", "").startswith("bad-")], \
            "a refused send was delivered"

        hist = await chat.finish(api, a_u)
        bodies = [e["body"] for e in msg_events(hist) if e["sender"] == x_u.id]
        assert bodies[:2] == ["x" * MAX_BODY, "é" * (MAX_BODY // 2)], [len(b) for b in bodies]
        assert bodies[-1] == "x is still here"


async def _raw_authed(h, user):
    rw = await h.raw(user.token)
    assert rw.status == 101, rw.response_head
    ready = await rw.read_json()
    assert ready["type"] == "ready", ready
    return rw


async def _expect_close(rw, code, what):
    try:
        got, reason, msgs = await rw.read_until_close(timeout=8)
    except AssertionError as e:
        raise AssertionError(f"{what}: {e}") from None
    assert got == code, f"{what}: expected close {code}, got {got} {reason!r} (msgs {msgs[-3:]})"


@async_test(240)
async def test_bad_frames_close_with_the_right_code(server):
    async with Harness(server) as h:
        api, (a_u, b_u, x_u), cid, a, b, x = await _setup(h)
        chat = Chatter(a, b, cid).start()
        ping = json.dumps({"type": "ping", "req": 1}).encode()

        # A message of exactly 1 MiB is still a message (its body is too large).
        rw = await _raw_authed(h, x_u)
        head = '{"type":"send","req":77,"conversation":%d,"client_msg_id":"big","body":"' % cid
        msg = head + "x" * (MAX_WS - len(head) - 2) + '"}'
        assert len(msg) == MAX_WS
        await rw.send_frame(OP_TEXT, msg.encode())
        rep = await rw.read_json(timeout=15)
        assert rep["type"] == "error" and rep["code"] == "too_large" and rep.get("req") == 77, rep
        await rw.send_frame(OP_TEXT, ping)
        assert (await rw.read_json())["type"] == "pong"

        # Frame-level violations, each on a fresh connection.
        big = b'{"type":"ping","pad":"' + b"x" * MAX_WS + b'"}'
        third = len(big) // 3
        violations = [
            ("text frame over 1 MiB", [build_frame(OP_TEXT, big)], 1009),
            ("fragmented message over 1 MiB",
             [build_frame(OP_TEXT, big[:third], fin=False),
              build_frame(OP_CONT, big[third:2 * third], fin=False),
              build_frame(OP_CONT, big[2 * third:])], 1009),
            ("invalid UTF-8", [build_frame(OP_TEXT, b'{"type":"ping","x":"\xff\xfe"}')], 1007),
            ("overlong UTF-8", [build_frame(OP_TEXT, b'{"type":"ping","x":"\xc0\xaf"}')], 1007),
            ("UTF-16 surrogate in UTF-8", [build_frame(OP_TEXT, b'{"type":"ping","x":"\xed\xa0\x80"}')], 1007),
            ("invalid UTF-8 in a first fragment",
             [build_frame(OP_TEXT, b'{"type":"ping","x":"\xff', fin=False),
              build_frame(OP_CONT, b'"}')], 1007),
            ("truncated UTF-8 at the end", [build_frame(OP_TEXT, b'{"type":"ping"}\xc3')], 1007),
            ("binary frame", [build_frame(OP_BINARY, ping)], 1003),
            ("unmasked frame", [build_frame(OP_TEXT, ping, mask=False)], 1002),
            ("reserved bits", [build_frame(OP_TEXT, ping, rsv=4)], 1002),
            ("reserved opcode", [build_frame(0x3, ping)], 1002),
            ("continuation without a start", [build_frame(OP_CONT, ping)], 1002),
            ("fragmented ping", [build_frame(OP_PING, b"a", fin=False), build_frame(OP_CONT, b"b")], 1002),
            ("oversized ping", [build_frame(OP_PING, b"p" * 126)], 1002),
            ("new message inside a fragmented one",
             [build_frame(OP_TEXT, ping[:5], fin=False), build_frame(OP_TEXT, ping)], 1002),
            ("invalid UTF-8 in a close reason", [build_frame(OP_CLOSE, b"\x03\xe8\xff\xfe")], 1007),
        ]
        wrong = []      # check them all, report every miss at once
        for what, frames, code in violations:
            rw = await _raw_authed(h, x_u)
            writer = asyncio.ensure_future(_send_all(rw, frames))
            try:
                await _expect_close(rw, code, what)
            except AssertionError as e:
                wrong.append(str(e)[:300])
            writer.cancel()
            await rw.close()
        assert not wrong, "frame violations answered wrongly:\n" + "\n".join(wrong)

        # Things that are fine: split UTF-8 across fragments, control frames
        # between fragments, ping frames, and a clean close.
        rw = await _raw_authed(h, x_u)
        m = json.dumps({"type": "ping", "req": "é-split"}, ensure_ascii=False).encode()
        cut = m.index("é".encode()) + 1          # in the middle of the 2-byte é
        await rw.send_frame(OP_TEXT, m[:cut], fin=False)
        await rw.send_frame(OP_PING, b"between")
        await rw.send_frame(OP_CONT, m[cut:])
        pong_frame = None
        reply = None
        while pong_frame is None or reply is None:
            op, fin, p = await rw.read_frame()
            if op == OP_PONG:
                pong_frame = p
            elif op == OP_TEXT:
                m = json.loads(p)
                if is_reply(m):
                    reply = m
        assert pong_frame == b"between", f"ping frame answered with {pong_frame!r}"
        assert reply == {"type": "pong", "req": "é-split"}, reply
        await rw.send_frame(OP_CLOSE, b"\x03\xe8bye")
        await _expect_close(rw, 1000, "client close")

        # The library connection of x is still fine after all of this.
        await x.ping()
        ack = await x.send_msg(cid, "x survived")
        await a.wait_seq(cid, ack["seq"])
        await chat.finish(api, a_u)


async def _send_all(rw, frames):
    try:
        for f in frames:
            await rw.send_raw(f)
    except (ConnectionResetError, BrokenPipeError):
        pass


@async_test(120)
async def test_bad_http_requests(server):
    async with Harness(server) as h:
        api, (a_u, b_u, x_u), cid, a, b, x = await _setup(h)
        chat = Chatter(a, b, cid).start()
        tok = x_u.token

        r = await api.req("POST", "/api/v1/auth/register", data=b'{"username": ')
        assert r.status == 400 and r.code == "bad_json", r
        r = await api.req("POST", "/api/v1/auth/register", data=b"[1, 2]")
        assert r.status == 400 and r.code == "bad_json", r
        r = await api.req("POST", "/api/v1/auth/register", data=b"")
        assert r.status == 400 and r.code in ("bad_json", "bad_request"), r
        r = await api.req("POST", "/api/v1/auth/register", json_body={"username": "onlyname"})
        assert r.status == 400 and r.code == "bad_request", r
        r = await api.req("POST", "/api/v1/auth/register", json_body={"username": 5, "password": "longpassword"})
        assert r.status == 400 and r.code == "bad_request", r
        r = await api.req("POST", "/api/v1/conversations", token=tok, data=b"{]")
        assert r.status == 400 and r.code == "bad_json", r
        for body in ({"kind": "group"}, {"kind": "weird", "user": a_u.id}, {"kind": "direct"},
                     {"kind": "direct", "user": "a"}, {"kind": "group", "title": "", "members": []},
                     {"kind": "group", "title": "t" * 129, "members": []},
                     {"kind": "group", "title": "t", "members": "all"},
                     {"kind": "group", "title": "t", "members": [], "e2ee": "yes"},
                     {"kind": "direct", "user": a_u.id + 1, "e2ee": 1}):
            r = await api.req("POST", "/api/v1/conversations", token=tok, json_body=body)
            assert r.status == 400 and r.code == "bad_request", f"{body}: {r!r}"
        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=tok,
                          json_body={"client_msg_id": "no-body"})
        assert r.status == 400 and r.code == "bad_request", r
        r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=tok,
                          json_body={"client_msg_id": "big", "body": "x" * (MAX_BODY + 1)})
        assert r.status == 413 and r.code == "too_large", r
        r = await api.req("GET", f"/api/v1/conversations/{cid}/messages?limit=abc", token=tok)
        assert r.status == 400 and r.code == "bad_request", r

        for path in ("/api/v1/nope", "/api/v2/conversations", "/api/v1/auth/registerx",
                     f"/api/v1/conversations/{cid}/nope"):
            r = await api.req("GET", path, token=tok)
            assert r.status == 404 and r.code == "not_found", f"GET {path}: {r!r}"
        # Ids in a path follow the integer rule: above 2^53 - 1 is a bad request.
        big = 2 ** 53
        for method, path in (("GET", f"/api/v1/conversations/{big}"),
                             ("PATCH", f"/api/v1/conversations/{cid}/messages/{big}"),
                             ("DELETE", f"/api/v1/conversations/{cid}/pins/{big}"),
                             ("DELETE", f"/api/v1/conversations/{cid}/members/{big}")):
            kw = {"json_body": {"body": "x"}} if method == "PATCH" else {}
            r = await api.req(method, path, token=tok, **kw)
            assert r.status == 400 and r.code == "bad_request", f"{method} {path}: {r!r}"
        r = await api.req("GET", f"/api/v1/conversations/{big - 1}", token=tok)
        assert r.status == 404 and r.code == "not_found", r
        # an id is digits without a leading zero: "0{cid}" names nothing
        r = await api.req("GET", f"/api/v1/conversations/0{cid}", token=tok)
        assert r.status == 404 and r.code == "not_found", r
        r = await api.req("GET", "/nothing/here/at-all")
        assert r.status == 404, r
        r = await api.req("GET", "/api/v1/auth/register")
        assert r.status == 405 and r.code == "method_not_allowed", r
        r = await api.req("PATCH", "/api/v1/me", token=tok)   # DELETE is account deletion
        assert r.status == 405 and r.code == "method_not_allowed", r

        host, port = server.host, server.port
        body = b'{"username":"' + b"u" * (MAX_WS + 10) + b'","password":"longpassword"}'
        st, head, rb = await raw_http(host, port,
                                      "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
                                      f"Content-Type: application/json\r\nContent-Length: {len(body)}",
                                      body)
        assert st == 413, f"body over 1 MiB: {st} {head!r} {rb[:200]!r}"
        assert json.loads(rb)["error"]["code"] == "too_large", rb
        st, head, rb = await raw_http(host, port,
                                      "POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
                                      "Content-Type: application/json\r\nTransfer-Encoding: chunked",
                                      b"5\r\nhello\r\n0\r\n\r\n")
        assert st == 411, f"chunked body: {st} {head!r}"
        assert json.loads(rb)["error"]["code"] == "length_required", rb
        st, head, rb = await raw_http(host, port,
                                      "GET /api/v1/me HTTP/1.1\r\nHost: x\r\nX-Big: " + "b" * 17000)
        assert st == 431, f"head over 16 KiB: {st} {head!r}"
        assert json.loads(rb)["error"]["code"] == "too_large", rb
        st, head, rb = await raw_http(host, port, "GET /api/v1/me HTTP/1.1\r\nHost: x\r\n"
                                      + "\r\n".join(f"X-H{i}: v" for i in range(64)))
        assert st == 431, f"65 headers: {st} {head!r}"
        assert json.loads(rb)["error"]["code"] == "too_large", rb
        st, head, rb = await raw_http(host, port, "GARBAGE\r\n\r\n")
        assert 400 <= st < 500, st

        # The server still serves, and the chatter lost nothing.
        r = await api.expect(200, "GET", "/api/v1/me", token=tok)
        await chat.finish(api, a_u)


def test_plain_get_of_the_websocket_url_is_told_to_upgrade(server):
    """RFC 6455 4.2.2: a request to /ws that is not an upgrade gets an error
    saying an upgrade is required, not a 404."""
    import urllib.error
    import urllib.request
    try:
        urllib.request.urlopen(server.base_url + "/ws", timeout=5)
        raise AssertionError("GET /ws without an upgrade succeeded")
    except urllib.error.HTTPError as e:
        assert e.code == 426, e.code
        assert e.headers["Upgrade"] == "websocket"


def _raw_answer(server, req):
    """One raw request on a new connection; the answer's status line and
    header lines (names lower-cased), read until the connection closes or
    the head is complete."""
    import socket
    import urllib.parse
    u = urllib.parse.urlparse(server.base_url)
    with socket.create_connection((u.hostname, u.port), timeout=5) as sock:
        sock.sendall(req.encode())
        got = b""
        while b"\r\n\r\n" not in got:
            d = sock.recv(65536)
            if not d:
                break
            got += d
    lines = got.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    return lines[0], [(ln.split(":", 1)[0].lower(), ln.split(":", 1)[1].strip()) for ln in lines[1:] if ":" in ln]


def test_the_websocket_url_without_an_upgrade_by_method(server, mode):
    """/ws without Upgrade: GET and HEAD are 426 with one Connection header
    (it had both "Connection: close" and "Connection: Upgrade" when the
    client closed); another method is 405 with Allow, as for any route
    (it was 426: audit K2 F3)."""
    for method in ("POST", "PUT", "DELETE"):
        status, hdrs = _raw_answer(server, f"{method} /ws HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
        assert status.startswith("HTTP/1.1 405"), (method, status)
        assert ("allow", "GET, HEAD") in hdrs, hdrs
    for extra, conn in (("", "Upgrade"), ("Connection: close\r\n", "Upgrade, close")):
        status, hdrs = _raw_answer(server, f"GET /ws HTTP/1.1\r\nHost: x\r\n{extra}\r\n")
        assert status.startswith("HTTP/1.1 426"), status
        got = [v for k, v in hdrs if k == "connection"]
        # through the cluster's HAProxy the Connection header is its own
        assert got == [conn] if mode == "embedded" else len(got) == 1 and "Upgrade" in got[0], hdrs
        assert ("upgrade", "websocket") in hdrs, hdrs


def test_a_refused_origin_is_answered_before_the_body_is_asked_for(server):
    """Expect: 100-continue from an Origin that is not allowed gets its 403
    at once, not a 100 Continue first (audit K2 F7)."""
    status, hdrs = _raw_answer(server, "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                                       "Origin: http://evil.example\r\nContent-Type: application/json\r\n"
                                       "Content-Length: 2\r\nExpect: 100-continue\r\n\r\n")
    assert status.startswith("HTTP/1.1 403"), status
    # an allowed request is still invited to send its body
    status, _ = _raw_answer(server, "POST /api/v1/auth/login HTTP/1.1\r\nHost: x\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 2\r\n"
                                    "Expect: 100-continue\r\n\r\n")
    assert status.startswith("HTTP/1.1 100"), status


def test_an_answer_before_the_body_survives_the_rest_of_the_body(server):
    """A request refused before its body was read (413 here) is answered, and
    the client may go on sending the body it had started: the server reads
    and discards it, half-closes, and never resets the connection, which
    would destroy the answer in flight (RFC 9112 9.6). Through HAProxy a
    reset while it forwarded the body made it drop the 413 and close the
    client's connection with nothing (seen as an intermittent failure of
    test_bad_http_requests[cluster])."""
    import socket
    import time
    body_len = 4 << 20
    s = socket.create_connection((server.host, server.port), timeout=10)
    try:
        s.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\n"
                  b"Content-Type: application/json\r\n"
                  b"Content-Length: %d\r\n\r\n" % body_len)
        got = b""
        while b"\r\n\r\n" not in got:
            d = s.recv(65536)
            assert d, f"closed before an answer: {got!r}"
            got += d
        head, rest = got.split(b"\r\n\r\n", 1)
        assert head.startswith(b"HTTP/1.1 413 "), head
        clen = int([ln.split(b":", 1)[1] for ln in head.split(b"\r\n")
                    if ln.lower().startswith(b"content-length:")][0])
        while len(rest) < clen:
            d = s.recv(65536)
            assert d, "closed inside the answer"
            rest += d
        assert json.loads(rest[:clen])["error"]["code"] == "too_large"
        # The server had the head only; give it time to close, then send the
        # body it refused. Before the fix, the socket was closed by now and the
        # body ran into a reset.
        time.sleep(0.3)
        chunk = b"x" * 65536
        for _ in range(body_len // len(chunk)):
            s.sendall(chunk)
        s.shutdown(socket.SHUT_WR)
        # Then an orderly end: EOF, not a reset.
        while True:
            d = s.recv(65536)
            if not d:
                break
    finally:
        s.close()


def _raw_exchange(server, request):
    """Sends one raw request with Connection: close; returns (head, all that
    follows it until the close: pclient.raw_http stops at Content-Length, and
    a HEAD test must see that nothing follows)."""
    import socket
    s = socket.create_connection((server.host, server.port), timeout=10)
    try:
        s.sendall(request)
        got = b""
        while True:
            d = s.recv(65536)
            if not d:
                break
            got += d
    finally:
        s.close()
    head, _, rest = got.partition(b"\r\n\r\n")
    return head, rest


def _content_length(head):
    return int([ln.split(b":", 1)[1] for ln in head.split(b"\r\n")
                if ln.lower().startswith(b"content-length:")][0])


def test_head_gets_the_length_of_get_and_no_body(server):
    """RFC 9110 9.3.2: HEAD answers what GET would, without the body: the
    same status and Content-Length."""
    for path in (b"/", b"/healthz", b"/api/v1/nope"):
        ghead, gbody = _raw_exchange(server, b"GET %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        hhead, hbody = _raw_exchange(server, b"HEAD %s HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n" % path)
        assert ghead.split(b"\r\n")[0] == hhead.split(b"\r\n")[0], (ghead, hhead)
        assert _content_length(ghead) == len(gbody) > 0, ghead
        assert _content_length(hhead) == len(gbody), hhead
        assert hbody == b"", hbody


@async_test(30)
async def test_operations_endpoints_take_get_and_head_only(server):
    """/healthz, /readyz and /metrics are GET routes (protocol.md section 7):
    another method is 405 method_not_allowed, like any route's."""
    for path in ("/healthz", "/readyz", "/metrics"):
        for method in ("POST", "PUT", "DELETE"):
            st, head, body = await raw_http(server.host, server.port,
                                            f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0")
            assert st == 405, (method, path, head)
            assert json.loads(body)["error"]["code"] == "method_not_allowed", body


@async_test(30)
async def test_head_works_wherever_get_does(server):
    """protocol.md "Origin checks" counts GET and HEAD as reads: HEAD on a
    REST read answers GET's status and Content-Length with no body; a route
    without GET still answers 405 (audit I)."""
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "headr")
        cid = (await api.open_dm(a, b.id))["id"]
        for path in ("/api/v1/me", "/api/v1/conversations", f"/api/v1/conversations/{cid}",
                     f"/api/v1/conversations/{cid}/messages?limit=2", "/api/v1/blocks"):
            g = await api.req("GET", path, token=a.token)
            hd = await api.req("HEAD", path, token=a.token)
            assert g.status == 200 and hd.status == 200, (path, g, hd)
            assert hd.text == "", (path, hd.text)
            assert int(hd.headers["Content-Length"]) == len(g.text.encode()), (path, hd.headers)
        r = await api.req("HEAD", "/api/v1/me")
        assert r.status == 401, r
        r = await api.req("HEAD", f"/api/v1/conversations/{cid}/read", token=a.token)
        assert r.status == 405, r


@async_test(30)
async def test_query_integers_are_plain_digits(server):
    """Query integers are read like path ids: decimal digits without a sign,
    a space or a leading zero; anything else is 400 (audit I)."""
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "qint")
        cid = (await api.open_dm(a, b.id))["id"]
        base = f"/api/v1/conversations/{cid}/messages"
        for q in ("limit=5", "limit=0", "after=0", "after=1&limit=200"):
            r = await api.req("GET", f"{base}?{q}", token=a.token)
            assert r.status == 200, (q, r)
        for q in ("limit=+5", "limit=%205", "limit=5%20", "limit=05", "after=-0", "limit=-0",
                  "after=00", "limit=5x", "after=0x5", "after=", "limit=1e1", "after=99999999999999999"):
            r = await api.req("GET", f"{base}?{q}", token=a.token)
            assert r.status == 400 and r.body["error"]["code"] == "bad_request", (q, r)


@async_test(60)
async def test_an_auth_message_counts_among_the_64_messages_before_ready(server):
    """protocol.md section 5, 1008: more than 64 messages sent before
    `ready`. With an `auth` message, that message was not counted: auth and
    64 more (65) were taken (audit L). Everything is written in one go, so
    it is all in the server's buffer before the token is checked. (With the
    token at the handshake the frames would have to share the upgrade's
    write to come before `ready`.)"""
    async with Harness(server) as h:
        (u,) = await h.api.register_many(1, "preready")
        pings = lambda n: b"".join(build_frame(OP_TEXT, json.dumps({"type": "ping", "req": i}).encode())
                                   for i in range(n))
        auth = build_frame(OP_TEXT, json.dumps({"type": "auth", "token": u.token}).encode())
        for token, first, extra, closed in ((None, auth, 63, False), (None, auth, 64, True)):
            ws = RawWS(server.host, server.port, token=token)
            await ws.connect()
            await ws.send_raw(first + pings(extra))
            if closed:
                code, reason, _ = await ws.read_until_close(10)
                assert code == 1008 and "before authentication" in reason, (token is None, extra, code, reason)
            else:
                got = []
                while len(got) < extra:
                    m = await ws.read_json(10)
                    if m.get("type") != "ready":
                        got.append(m)
                assert [m["type"] for m in got] == ["pong"] * extra, (token is None, extra, got[-3:])
            await ws.close()


@async_test(30)
async def test_paths_are_exact(server):
    """protocol.md "Identifiers": a path is exact. A doubled or trailing
    slash reached the route (`DELETE /api/v1/me/` deleted the account), and
    /api/v1/me/anything answered "no such conversation" (audit P)."""
    async with Harness(server) as h:
        api = h.api
        (u,) = await api.register_many(1, "paths")
        r = await api.req("GET", "/api/v1/me", token=u.token)
        assert r.status == 200, r
        for path in ("/api/v1/me/", "/api/v1//me", "/api/v1/conversations//", "//api/v1/me",
                     "/api/v1/me/foo", "/api/v1/conversations/"):
            r = await api.req("GET", path, token=u.token)
            assert r.status == 404 and r.body["error"]["message"] == "no such route", (path, r)
        r = await api.req("GET", "/api/v1/me/foo")
        assert r.status == 404, r                      # unknown before the token, as every route
        r = await api.req("DELETE", "/api/v1/me/", token=u.token, json_body={"password": u.password})
        assert r.status == 404, r
        r = await api.req("GET", "/api/v1/me", token=u.token)
        assert r.status == 200, r


# Every route and the methods it answers (protocol.md section 4,
# `method_not_allowed`): a route that answers GET answers HEAD; no route
# answers OPTIONS. Ids are of nothing that exists, so that a method the
# route takes is answered by the handler (400, 401, 403, 404, ...) and
# changes nothing. {none} is such an id. The signed media URL and the web
# client's files are routes too (GET and HEAD).
_GET = ("GET", "HEAD")
_ROUTES = [
    ("/healthz", _GET), ("/readyz", _GET), ("/metrics", _GET),
    ("/api/v1/auth/register", ("POST",)), ("/api/v1/auth/login", ("POST",)),
    ("/api/v1/auth/refresh", ("POST",)), ("/api/v1/auth/logout", ("POST",)),
    ("/api/v1/events", ("GET",)),
    ("/api/v1/me", _GET + ("DELETE",)), ("/api/v1/me/export", _GET), ("/api/v1/me/messages", _GET),
    ("/api/v1/users", _GET), ("/api/v1/users/nobody-here", _GET),
    ("/api/v1/users/{none}/devices", _GET), ("/api/v1/users/{none}/bundle", ("POST",)),
    ("/api/v1/users/{none}/block", ("PUT", "DELETE")), ("/api/v1/blocks", _GET),
    ("/api/v1/presence", _GET), ("/api/v1/search", _GET),
    ("/api/v1/keys", _GET + ("PUT", "DELETE")),
    ("/api/v1/push/devices", _GET + ("POST",)), ("/api/v1/push/devices/{none}", ("DELETE",)),
    ("/api/v1/conversations", _GET + ("POST",)), ("/api/v1/conversations/{none}", _GET),
    ("/api/v1/conversations/{none}/messages", _GET + ("POST",)),
    ("/api/v1/conversations/{none}/members", ("POST",)),
    ("/api/v1/conversations/{none}/members/{none}", ("PATCH", "DELETE")),
    ("/api/v1/conversations/{none}/read", ("POST",)),
    ("/api/v1/conversations/{none}/delivered", ("POST",)),
    ("/api/v1/conversations/{none}/receipts", _GET),
    ("/api/v1/conversations/{none}/reports", _GET),
    ("/api/v1/conversations/{none}/join", ("POST",)),
    ("/api/v1/conversations/{none}/leave", ("POST",)),
    ("/api/v1/conversations/{none}/e2ee", ("POST",)),
    ("/api/v1/conversations/{none}/pins", _GET),
    ("/api/v1/conversations/{none}/retention", ("PUT",)),
    ("/api/v1/conversations/{none}/hold", ("PUT", "DELETE")),
    ("/api/v1/conversations/{none}/notify", ("PUT",)),
    ("/api/v1/conversations/{none}/messages/1", ("PATCH", "DELETE")),
    ("/api/v1/conversations/{none}/messages/1/reactions", ("POST",)),
    ("/api/v1/conversations/{none}/messages/1/report", ("POST",)),
    ("/api/v1/conversations/{none}/pins/1", ("PUT", "DELETE")),
    ("/api/v1/workspaces", _GET + ("POST",)), ("/api/v1/workspaces/{none}", _GET),
    ("/api/v1/workspaces/{none}/members", ("POST",)),
    ("/api/v1/workspaces/{none}/members/{none}", ("PATCH", "DELETE")),
    ("/api/v1/workspaces/{none}/leave", ("POST",)),
    ("/api/v1/workspaces/{none}/retention", ("PUT",)),
    ("/api/v1/workspaces/{none}/hold", ("PUT", "DELETE")),
    ("/api/v1/workspaces/{none}/channels", _GET + ("POST",)),
    ("/api/v1/reports", _GET), ("/api/v1/reports/{none}/resolve", ("POST",)),
    ("/api/v1/media", ("POST",)), ("/api/v1/media/uploads", ("POST",)),
    ("/api/v1/media/uploads/0123456789abcdef0123456789abcdef", _GET + ("DELETE", "PATCH")),
    ("/api/v1/media/{none}", _GET),
    ("/media/{none}", _GET), ("/media/{none}?exp=1&sig=x", _GET),
    ("/", _GET), ("/index.html", _GET), ("/app.js", _GET), ("/style.css", _GET), ("/favicon.svg", _GET),
]
_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


async def _ask(h, method, path, token, read=True):
    """(status, headers, body) of one request; read=False leaves the body
    unread (GET /api/v1/events never ends)."""
    import aiohttp
    hd = {"Authorization": f"Bearer {token}"} if token else {}
    async with h.session.request(method, h.server.base_url + path, headers=hd,
                                 timeout=aiohttp.ClientTimeout(total=10)) as r:
        return r.status, r.headers, (await r.read() if read else b"")


@async_test(120)
async def test_a_405_says_which_methods_the_route_allows(server):
    """RFC 9110 15.5.6: a 405 carries Allow with the target's methods. Every
    route's 405, for every method it does not take, lists exactly its
    methods (HEAD with GET, never OPTIONS); and each method listed is
    answered by the route, not with 405. Before, no 405 carried Allow."""
    async with Harness(server) as h:
        (u,) = await h.api.register_many(1, "allow")
        none = 2 ** 53 - 1
        for tmpl, allowed in _ROUTES:
            path = tmpl.replace("{none}", str(none))
            token = None if "/auth/" in path else u.token      # logout with a token would end it
            for method in _METHODS:
                st, hd, body = await _ask(h, method, path, token, read=method != "GET" or "events" not in path)
                if method in allowed:
                    assert st != 405, (method, path, st, body)
                    continue
                assert st == 405, (method, path, st, body)
                got = [m.strip() for m in hd.get("Allow", "").split(",") if m.strip()]
                assert sorted(got) == sorted(allowed) and len(set(got)) == len(got), \
                    (method, path, hd.get("Allow"), allowed)
                if method != "HEAD":
                    assert json.loads(body)["error"]["code"] == "method_not_allowed", (method, path, body)
        # the token still works: nothing above ended the session
        st, _, _ = await _ask(h, "GET", "/api/v1/me", u.token)
        assert st == 200, st
        # A WebSocket handshake is GET only (its 405 comes before any route).
        st, head, body = await raw_http(server.host, server.port,
                                        "POST /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                                        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                                        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nContent-Length: 0")
        allow = [ln.split(":", 1)[1].strip() for ln in head.split("\r\n") if ln.lower().startswith("allow:")]
        assert st == 405 and allow == ["GET"], (st, head)


@async_test(60)
async def test_a_path_that_names_nothing_is_404_whatever_the_method(server):
    """A 405 is for a path that exists (above); one that names no route
    and no file of the web client is 404 for every method, also beside
    /media/{id} and the web client's files."""
    async with Harness(server) as h:
        for path in ("/nope.js", "/no/such/file.css", "/.hidden", "/app.js/", "/media", "/media/1/x",
                     "/media/1/", "/api/v1/nope", "/api"):
            for method in _METHODS:
                st, hd, body = await _ask(h, method, path, None)
                assert st == 404, (method, path, st, body)
                assert "Allow" not in hd, (method, path, hd)


@async_test(60)
async def test_a_repeated_key_and_a_zero_led_cursor_key_are_refused_as_such(server):
    """Audit V: a REST body that repeats a key is told so (it was told "not
    valid JSON (UTF-8 text; an escaped character must be whole)"), as the
    WebSocket tells it, and stores nothing; a cursor key with a leading
    zero is bad_request like a path id (`"02"` was conversation 2)."""
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "rkey")
        cid = (await api.open_dm(a, b.id))["id"]
        base = f"/api/v1/conversations/{cid}/messages"
        raw = b'{"client_msg_id": "rk1", "body": "x", "client_msg_id": "rk2"}'
        r = await api.req("POST", base, token=a.token, data=raw)
        assert r.status == 400 and r.body["error"]["code"] == "bad_json", r
        assert "repeats a key" in r.body["error"]["message"], r
        nested = b'{"client_msg_id": "rk3", "body": "x", "data": {"k": 1, "k": 2}}'
        r = await api.req("POST", base, token=a.token, data=nested)
        assert r.status == 400 and "repeats a key" in r.body["error"]["message"], r
        r = await api.req("GET", base, token=a.token)
        assert r.status == 200 and not [e for e in r.body["events"] if e["kind"] == "message"], r
        ws = await h.ws(a)
        for key in ("0" + str(cid), "00" + str(cid)):
            reply = await ws.request({"type": "sync", "cursors": {key: 0}})
            assert reply["type"] == "error" and reply["code"] == "bad_request", (key, reply)
        mark = len(ws.msgs)
        await ws.send_json({"type": "sync", "cursors": {str(cid): 0}})
        synced = await ws.wait_for(lambda m: m.get("type") in ("synced", "error"), start=mark)
        assert synced["type"] == "synced" and synced["conversation"] == cid, synced


@async_test(60)
async def test_user_id_0_in_a_path_is_any_unknown_user(server):
    """protocol.md: no user has the id 0, and it is answered as any id no
    user has, with the same status and message; so are a conversation 0
    and a workspace 0 in a path. Audit S3: in member paths it was taken
    for a malformed id ("no such member"), and unblocking 0 was 404 where
    unblocking any other unknown id is 200. Also the words of two
    refusals: a send's NUL, a search without `q`."""
    async with Harness(server) as h:
        api = h.api
        alice, bob = await api.register_many(2, "uid0")
        g = (await api.create_group(alice, [bob.id], title="g"))["id"]
        ws = (await api.expect(201, "POST", "/api/v1/workspaces", token=alice.token,
                               json_body={"name": "uid0 ws " + alice.username[-6:]})).body["id"]
        unknown = 999999
        for method, path, body in (("PATCH", f"/api/v1/conversations/{g}/members/{{}}", {"role": "admin"}),
                                   ("DELETE", f"/api/v1/conversations/{g}/members/{{}}", None),
                                   ("PATCH", f"/api/v1/workspaces/{ws}/members/{{}}", {"role": "admin"}),
                                   ("DELETE", f"/api/v1/workspaces/{ws}/members/{{}}", None),
                                   ("PUT", "/api/v1/users/{}/block", None)):
            zero = await api.req(method, path.format(0), token=alice.token, json_body=body)
            other = await api.req(method, path.format(unknown), token=alice.token, json_body=body)
            assert (zero.status, zero.body) == (other.status, other.body), (method, path, zero, other)
        for path, body in ((f"/api/v1/conversations/{{}}/members", {"user": bob.id}),
                           (f"/api/v1/workspaces/{{}}/members", {"user": bob.id}),
                           (f"/api/v1/conversations/{{}}/messages", {"client_msg_id": "z", "body": "z"})):
            zero = await api.req("POST", path.format(0), token=alice.token, json_body=body)
            other = await api.req("POST", path.format(unknown), token=alice.token, json_body=body)
            assert (zero.status, zero.body) == (other.status, other.body), (path, zero, other)
        r = (await api.expect(200, "DELETE", "/api/v1/users/0/block", token=alice.token)).body
        assert r == {"user": 0, "blocked": False, "changed": False}, r
        # a direct conversation with an unknown user, by id or by name: one answer (audit E5)
        by_id = await api.req("POST", "/api/v1/conversations", token=alice.token,
                              json_body={"kind": "direct", "user": unknown})
        by_name = await api.req("POST", "/api/v1/conversations", token=alice.token,
                                json_body={"kind": "direct", "username": "nobody-here-at-all"})
        assert (by_id.status, by_id.body) == (by_name.status, by_name.body) == \
            (404, {"error": {"code": "not_found", "message": "no such user"}}), (by_id, by_name)
        top = (1 << 53) - 1                      # a valid id, echoed as given (audit O11)
        r = (await api.expect(200, "DELETE", f"/api/v1/users/{top}/block", token=alice.token)).body
        assert r == {"user": top, "blocked": False, "changed": False}, r
        # alice is still in her workspace and group: nothing was changed
        assert (await api.expect(200, "GET", f"/api/v1/workspaces/{ws}", token=alice.token)).body["id"] == ws
        assert (await api.expect(200, "GET", f"/api/v1/conversations/{g}", token=alice.token)).body["id"] == g
        r = await api.req("POST", f"/api/v1/conversations/{g}/messages", token=alice.token,
                          json_body={"client_msg_id": "nul", "body": "a\u0000b"})
        assert r.status == 400 and r.body["error"]["message"] == "\"body\" must not contain NUL", r
        r = await api.req("GET", "/api/v1/search", token=alice.token)
        assert r.status == 400 and "required" in r.body["error"]["message"], r
        w = await h.ws(alice)
        await w.send_json({"type": "search", "req": 7})
        err = await w.wait_reply(7)
        assert err["type"] == "error" and err["message"] == r.body["error"]["message"], (err, r)
