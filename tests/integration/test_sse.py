"""Server-Sent Events: GET /api/v1/events, the receiving half of the HTTP
fallback (M2; docs/protocol.md "Server-Sent Events").

The client here is a raw one over asyncio streams (it parses the response
head, de-chunks if a proxy chunked the stream, and splits events the way the
SSE spec does), so every byte the server writes is checked: event order,
`id:` lines, `: ping` comments, the final `close` event.
"""

import asyncio
import json
import socket
import time

from pclient import Harness, assert_contiguous, async_test, msg_events
from test_limits import metrics


class SSE:
    """One event stream. events: every SSE event as {"data": obj, "id": str or
    None}; last_id follows the spec (an event without id keeps it)."""

    def __init__(self, server, token, last_id=None, headers=None, name="sse"):
        self.server = server
        self.token = token
        self.last_id = last_id
        self.extra = headers or {}
        self.name = name
        self.status = None
        self.head = {}
        self.body = b""
        self.events = []
        self.comments = []
        self.eof = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = None
        self._w = None

    async def connect(self, timeout=10):
        r, w = await asyncio.wait_for(asyncio.open_connection(self.server.host, self.server.port), timeout)
        self._w = w
        h = {"Host": f"{self.server.host}:{self.server.port}", "Accept": "text/event-stream"}
        if self.token is not None:
            h["Authorization"] = f"Bearer {self.token}"
        if self.last_id is not None:
            h["Last-Event-ID"] = self.last_id
        h.update(self.extra)
        req = "GET /api/v1/events HTTP/1.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in h.items()) + "\r\n"
        w.write(req.encode())
        await w.drain()
        head = await asyncio.wait_for(r.readuntil(b"\r\n\r\n"), timeout)
        lines = head.decode("latin-1").split("\r\n")
        self.status = int(lines[0].split()[1])
        for ln in lines[1:]:
            if ":" in ln:
                k, v = ln.split(":", 1)
                self.head[k.strip().lower()] = v.strip()
        if self.status != 200:
            n = int(self.head.get("content-length", "0"))
            self.body = await asyncio.wait_for(r.readexactly(n), timeout) if n else b""
            w.close()
            return self
        self._task = asyncio.ensure_future(self._reader(r))
        return self

    def error(self):
        return json.loads(self.body)["error"]

    async def _raw_chunks(self, r):
        if self.head.get("transfer-encoding", "").lower() == "chunked":
            while True:
                size = int((await r.readuntil(b"\r\n")).split(b";")[0], 16)
                if size == 0:
                    return
                data = await r.readexactly(size + 2)
                yield data[:-2]
        else:
            while True:
                data = await r.read(65536)
                if not data:
                    return
                yield data

    async def _reader(self, r):
        buf = b""
        data_lines, ev_id = [], None
        try:
            async for chunk in self._raw_chunks(r):
                buf += chunk
                while b"\n" in buf:
                    line, buf = buf.split(b"\n", 1)
                    line = line.decode()
                    if line == "":                      # dispatch
                        if ev_id is not None:
                            self.last_id = ev_id
                        if data_lines:
                            self.events.append({"data": json.loads("\n".join(data_lines)), "id": ev_id})
                        data_lines, ev_id = [], None
                        self._changed.set()
                    elif line.startswith(":"):
                        self.comments.append(line)
                        self._changed.set()
                    elif line.startswith("data: "):
                        data_lines.append(line[6:])
                    elif line.startswith("id: "):
                        ev_id = line[4:]
                    else:
                        raise AssertionError(f"{self.name}: unexpected SSE line {line!r}")
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._w.close()                       # as a browser does at the end of a stream
            self.eof.set()
            self._changed.set()

    def datas(self, typ=None):
        return [e["data"] for e in self.events if typ is None or e["data"].get("type") == typ]

    def conv_events(self, conv):
        return [d for d in self.datas("event") if d["conversation"] == conv]

    async def wait_until(self, cond, timeout=10, what="condition"):
        deadline = time.monotonic() + timeout
        while not cond():
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{self.name}: timed out waiting for {what}; "
                                     f"last events {[e['data'] for e in self.events[-3:]]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def close(self):
        if self._w:
            self._w.close()
        if self._task:
            await asyncio.wait([self._task], timeout=5)


async def sse(server, token, **kw):
    s = SSE(server, token, **kw)
    await s.connect()
    return s


async def send(api, user, conv, body):
    r = await api.req("POST", f"/api/v1/conversations/{conv}/messages", token=user.token,
                      json_body={"client_msg_id": f"{body}-{time.monotonic_ns()}", "body": body})
    assert r.status == 201, r
    return r.body["seq"]


@async_test(90)
async def test_events_arrive_in_order_with_ids_like_the_websocket(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "se")
        dm = (await api.open_dm(alice, bob.id))["id"]
        grp = (await api.create_group(alice, [bob.id, carol.id]))["id"]
        s = await sse(server, bob.token, name="bob-sse")
        assert s.status == 200, (s.status, s.body)
        assert s.head["content-type"].startswith("text/event-stream"), s.head
        assert s.head["cache-control"] == "no-store" and "content-length" not in s.head, s.head
        await s.wait_until(lambda: s.datas("ready"), what="ready")
        ready = s.events[0]
        assert ready["data"]["type"] == "ready" and ready["id"], ready     # a new stream has an id at once
        heads = {c["id"]: c["last_seq"] for c in ready["data"]["conversations"]}
        ws = await h.ws(bob, name="bob-ws")                      # the same user over WebSocket

        for i in range(20):
            await send(api, alice, dm if i % 2 else grp, f"m{i}")
        await s.wait_until(lambda: len(msg_events(s.datas("event"))) >= 20, what="20 messages")
        await ws.wait_until(lambda: len(msg_events(ws.events.get(dm, []) + ws.events.get(grp, []))) >= 20)
        for conv in (dm, grp):
            got = s.conv_events(conv)
            assert_contiguous([e["seq"] for e in got], heads[conv] + 1)
            assert got == ws.events[conv], "SSE and WebSocket must carry the same event objects"
        ids = [e["id"] for e in s.events if e["data"]["type"] == "event"]
        assert all(ids) and len(set(ids)) == len(ids), "every event has its own id"
        await s.close()


@async_test(120)
async def test_last_event_id_resumes_exactly(server):
    async with Harness(server) as h:
        api = h.api
        alice, bob, carol = await api.register_many(3, "sr")
        dm = (await api.open_dm(alice, bob.id))["id"]
        grp = (await api.create_group(alice, [bob.id, carol.id]))["id"]
        got = {}                                         # conv -> events bob received, all streams

        def collect(stream):
            for d in stream.datas("event"):
                got.setdefault(d["conversation"], []).append(d)

        # a stream cut while messages flow: the client keeps the id of the
        # last complete event, whatever was in flight after it
        s1 = await sse(server, bob.token, name="s1")
        await s1.wait_until(lambda: s1.datas("ready"))
        heads = {c["id"]: c["last_seq"] for c in s1.datas("ready")[0]["conversations"]}

        async def flood(prefix, n):
            for i in range(n):
                conv = grp if i % 2 else dm
                await send(api, carol if conv == grp and i % 3 == 0 else alice, conv, f"{prefix}{i}")

        task = asyncio.ensure_future(flood("a", 60))
        await s1.wait_until(lambda: len(s1.datas("event")) >= 10, what="10 events")
        await s1.close()
        collect(s1)
        last = s1.last_id
        assert last, "events carry ids"
        await task
        # while bob is away: more messages, and a conversation he is added to
        await flood("b", 10)
        new = (await api.create_group(carol, [bob.id], title="while away"))["id"]
        await send(api, carol, new, "hello new")

        s2 = await sse(server, bob.token, last_id=last, name="s2")
        assert s2.status == 200, s2.body
        await s2.wait_until(lambda: sum(1 for d in s2.datas("synced")) >= 3, timeout=20, what="synced x3")
        # and one more round, resumed from s2's last id
        await s2.close()
        collect(s2)
        await flood("c", 6)
        s3 = await sse(server, bob.token, last_id=s2.last_id, name="s3")
        await s3.wait_until(lambda: len(s3.datas("synced")) >= 3, timeout=20, what="synced x3 (s3)")
        await s3.close()
        collect(s3)
        heads[new] = 0
        for conv in (dm, grp, new):
            hist = await api.history_all(bob, conv)
            mine = got.get(conv, [])
            # from the first stream's ready heads (or the joining) on:
            # everything, once, in order, as history has it
            want = [e for e in hist if e["seq"] > heads[conv]]
            assert [e["seq"] for e in mine] == [e["seq"] for e in want], \
                f"conversation {conv}: got {[e['seq'] for e in mine]}, history {[e['seq'] for e in want]}"
            assert [e.get("body") for e in mine] == [e.get("body") for e in want]
        assert got[new][0]["kind"] == "created", "a conversation joined while away comes from its start"
        bodies = [e["body"] for c in (dm, grp) for e in msg_events(got[c])]
        assert len(bodies) == len(set(bodies)) == 76, len(bodies)


@async_test(60)
async def test_heartbeats_are_comments_and_drain_says_reconnect(server_factory):
    server = server_factory(["--sse-heartbeat", "1"])
    async with Harness(server) as h:
        bob, = await h.api.register_many(1, "sh")
        s = await sse(server, bob.token)
        t0 = time.monotonic()
        await s.wait_until(lambda: len(s.comments) >= 2, timeout=6, what="two heartbeats")
        assert set(s.comments) == {": ping"}, s.comments
        assert time.monotonic() - t0 >= 1.0
        assert [d["type"] for d in s.datas()] == ["ready"], "heartbeats are not events"
        # the drain: a `reconnect` hint, then `close` 1001, then the end of the stream
        stop = asyncio.ensure_future(server.astop())
        await s.wait_until(lambda: s.eof.is_set(), timeout=15, what="end of stream at shutdown")
        await stop
        types = [d["type"] for d in s.datas()]
        assert types[-2:] == ["reconnect", "close"] and s.datas()[-1]["code"] == 1001, types
        await s.close()
        await asyncio.to_thread(server.start)      # the fixture checks a running server at teardown


@async_test(60)
async def test_refusals_are_clear(server):
    async with Harness(server) as h:
        api = h.api
        bob, = await api.register_many(1, "sx")
        s = await sse(server, None)
        assert s.status == 401 and s.error()["code"] == "unauthorized", (s.status, s.body)
        assert s.head.get("www-authenticate") == "Bearer"
        for bad in ("Bearer ", "Bearer nonsense", "Basic abc"):
            s = await sse(server, None, headers={"Authorization": bad})
            assert s.status == 401, (bad, s.status, s.body)
        s = await sse(server, bob.token + "x")
        assert s.status == 401, s.body
        good = await sse(server, bob.token)
        await good.wait_until(lambda: good.datas("ready"))
        await good.close()
        last = good.events[0]["id"]
        for bad in ("42", "c1.", "c1.!!!!", last[:-2], last[:5] + ("A" if last[5] != "A" else "B") + last[6:], "c1." + "A" * 15000):
            s = await sse(server, bob.token, last_id=bad)
            assert s.status == 400 and s.error()["code"] == "bad_request", (bad, s.status, s.body)
            assert "Last-Event-ID" in s.error()["message"], s.error()
        r = await api.req("POST", "/api/v1/events", token=bob.token, json_body={})
        assert r.status == 405 and r.headers.get("Allow") == "GET", r
        # the token first, as on every route behind one (audit E2 F8): any
        # method without a valid token is 401, with one a method not GET 405
        for method in ("POST", "DELETE", "OPTIONS", "HEAD"):
            r = await api.req(method, "/api/v1/events")
            assert r.status == 401, (method, r)
            r = await api.req(method, "/api/v1/events", token=bob.token + "x")
            assert r.status == 401, (method, r)
            r = await api.req(method, "/api/v1/events", token=bob.token)
            assert r.status == 405, (method, r)
        # logout ends the stream with a last `close` event (4001)
        s = await sse(server, bob.token)
        await s.wait_until(lambda: s.datas("ready"))
        await api.expect(204, "POST", "/api/v1/auth/logout", token=bob.token,
                         json_body={"refresh_token": bob.refresh_token})
        await s.wait_until(lambda: s.eof.is_set(), what="end of stream")
        closes = s.datas("close")
        assert closes and closes[-1]["code"] == 4001, s.datas()[-3:]


def sleeping_sse(server, token):
    """An SSE client that reads the response head, then never reads again (a
    tiny receive buffer: the kernel absorbs little)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((server.host, server.port))
    s.sendall(f"GET /api/v1/events HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "closed before the head"
        head += chunk
    assert head.startswith(b"HTTP/1.1 200"), head
    return s, b"transfer-encoding: chunked" in head.lower()


def dechunk(data):
    """The complete chunks of a chunked body (a proxy may chunk the stream)."""
    out, i = b"", 0
    while True:
        j = data.find(b"\r\n", i)
        if j < 0:
            return out
        size = int(data[i:j].split(b";")[0], 16)
        if size == 0 or j + 2 + size > len(data):
            return out
        out += data[j + 2: j + 2 + size]
        i = j + 2 + size + 2


@async_test(150)
async def test_a_slow_reader_is_closed_like_a_websocket_one_and_resumes(server_factory):
    bound = 256 * 1024
    server = server_factory(["--max-outbound", str(bound)])
    async with Harness(server) as h:
        api = h.api
        sender, sleeper = await api.register_many(2, "ss")
        cid = (await api.open_dm(sender, sleeper.id))["id"]
        base = (await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=sleeper.token)).body["last_seq"]
        ws = await h.ws(sender, name="sender")
        raw, chunked = await asyncio.to_thread(sleeping_sse, server, sleeper.token)
        body = "z" * 16000
        closed = False
        for i in range(3000):
            await ws.send_msg(cid, f"{i:04d}" + body)
            if i % 50 == 49 and metrics(server)["parley_slow_consumer_closes_total"] >= 1:
                closed = True
                break
        assert closed, "a reader that does not read must be closed"

        # what the sleeper gets when it reads again at once (within the
        # close's ~7 s): whole events, the last one `close` 4008; then a
        # resume from its last id: nothing lost, nothing twice
        def drain():
            data = b""
            raw.settimeout(2)
            try:
                while True:
                    d = raw.recv(65536)
                    if not d:
                        break
                    data += d
            except OSError:
                pass
            raw.close()
            return data
        data = await asyncio.to_thread(drain)
        data = (dechunk(data) if chunked else data).decode(errors="replace")
        assert data.endswith("\n\n"), data[-200:]
        assert data.rsplit("\n\n", 2)[-2].startswith('data: {"type":"close","code":4008'), data[-300:]
        deadline = time.monotonic() + 15
        while metrics(server)["parley_sessions"] > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert metrics(server)["parley_sessions"] == 1, "the stream is gone"
        seen, last_id, cur_id = [], None, None
        for block in data.split("\n\n")[:-1]:           # complete events only
            d, cur_id = None, None
            for ln in block.split("\n"):
                if ln.startswith("data: "):
                    d = json.loads(ln[6:])
                elif ln.startswith("id: "):
                    cur_id = ln[4:]
            if cur_id:
                last_id = cur_id
            if d and d.get("type") == "event" and d["conversation"] == cid:
                seen.append(d["seq"])
        assert last_id, "the sleeper got at least ready"
        s = await sse(server, sleeper.token, last_id=last_id)
        await s.wait_until(lambda: s.datas("synced"), timeout=30, what="synced")
        seen += [d["seq"] for d in s.conv_events(cid)]
        last = (await api.expect(200, "GET", f"/api/v1/conversations/{cid}", token=sleeper.token)).body["last_seq"]
        assert_contiguous(seen, base + 1)
        assert seen[-1] == last, (seen[-5:], last)
        await s.close()
