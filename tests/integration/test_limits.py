"""Staying up under load, faults and bad input (issue 6): rate limits,
backpressure on readers that stop reading, liveness, per-IP caps, slow
headers, the SIGTERM drain, and /metrics."""

import asyncio
import json
import os
import re
import socket
import urllib.parse
import threading
import time
import urllib.request

import pytest

from pclient import Harness, RawWS, async_test, build_frame, close_info

PROM_LINE = re.compile(r'^[a-zA-Z_:][a-zA-Z0-9_:]*(\{[a-zA-Z_][a-zA-Z0-9_]*="[^"]*"'
                       r'(,[a-zA-Z_][a-zA-Z0-9_]*="[^"]*")*\})? -?[0-9.eE+-]+$|^[a-zA-Z_:][a-zA-Z0-9_:]*'
                       r'(\{.*\})? \+?Inf$')


def read_to_close_frame(s, timeout=10):
    """Reads a server's frames (unmasked) from blocking socket s, whose
    upgrade head was read, until a close frame; returns its code (None at
    EOF without one)."""
    s.settimeout(timeout)
    buf = b""

    def need(n):
        nonlocal buf
        while len(buf) < n:
            d = s.recv(65536)
            if not d:
                return False
            buf += d
        return True

    while need(2):
        op, ln, h = buf[0] & 0x0F, buf[1] & 0x7F, 2
        if ln == 126:
            if not need(4):
                return None
            ln, h = int.from_bytes(buf[2:4], "big"), 4
        elif ln == 127:
            if not need(10):
                return None
            ln, h = int.from_bytes(buf[2:10], "big"), 10
        if not need(h + ln):
            return None
        payload, buf = buf[h:h + ln], buf[h + ln:]
        if op == 0x8:
            return int.from_bytes(payload[:2], "big") if len(payload) >= 2 else None
    return None


def sleeping_reader(server, token):
    """A WebSocket client that authenticates and then never reads again (a
    blocking socket with a tiny receive buffer: asyncio would keep reading)."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.settimeout(10)
    s.connect((server.host, server.port))
    s.sendall(("GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
               "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
               f"Authorization: Bearer {token}\r\n\r\n").encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(1)
        assert chunk, "closed during the handshake"
        head += chunk
    assert head.startswith(b"HTTP/1.1 101"), head
    # a first message ends the server's wait for a `sync` (a session
    # authenticated at the handshake is held until then): delivery is live
    s.sendall(build_frame(0x1, b'{"type":"heartbeat"}'))
    return s


def metrics(server):
    """Parses /metrics strictly: every line a comment (# HELP/# TYPE) or a
    sample. In cluster mode each node's /metrics is read directly and the
    samples are summed: the cluster's totals."""
    out = {}
    for url in getattr(server, "node_urls", [server.base_url]):
        with urllib.request.urlopen(url + "/metrics", timeout=5) as r:
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/plain")
            text = r.read().decode()
        for line in text.splitlines():
            if line.startswith("# HELP ") or line.startswith("# TYPE "):
                continue
            assert PROM_LINE.match(line), f"not Prometheus text: {line!r}"
            name, value = line.rsplit(" ", 1)
            out[name] = out.get(name, 0.0) + float(value)
    return out


@async_test(90)
async def test_a_flood_is_limited_while_others_flow(server_factory):
    server = server_factory(["--rate-user-msgs", "20", "--rate-user-burst", "40"])
    async with Harness(server) as h:
        api = h.api
        flooder, alice, bob = await api.register_many(3, "fd")
        cid = (await api.create_group(flooder, [alice.id, bob.id]))["id"]
        f = await h.ws(flooder, name="flooder")
        a = await h.ws(alice, name="alice")
        b = await h.ws(bob, name="bob")
        before = metrics(server)

        async def flood():
            reqs = [await f.send_nowait(cid, f"spam {i}") for i in range(400)]
            for req, _ in reqs:
                await f.wait_reply(req, timeout=30)
            return reqs

        task = asyncio.ensure_future(flood())
        # alice and bob keep talking the whole time, unaffected
        acks = []
        for i in range(30):
            acks.append(await a.send_msg(cid, f"alice {i}"))
            acks.append(await b.send_msg(cid, f"bob {i}"))
        reqs = await task
        replies = [f.reply(r) for r, _ in reqs]
        limited = [r for r in replies if r["type"] == "error"]
        stored = [r for r in replies if r["type"] == "sent"]
        assert limited and all(r["code"] == "rate_limited" and r["retry_after"] > 0 for r in limited), limited[:3]
        assert 40 <= len(stored) < 200, len(stored)     # the burst and the refill, not the flood
        # nothing half-applied: exactly the acknowledged messages are in the log
        hist = await api.history_all(alice, cid)
        bodies = [e["body"] for e in hist if e["kind"] == "message"]
        assert sum(1 for x in bodies if x.startswith("spam")) == len(stored), len(bodies)
        assert sum(1 for x in bodies if not x.startswith("spam")) == 60
        after = metrics(server)
        assert after['parley_rate_limited_total{scope="user"}'] - before['parley_rate_limited_total{scope="user"}'] \
            == len(limited)
        # over REST: 429 with Retry-After
        for _ in range(60):
            r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=flooder.token,
                              json_body={"client_msg_id": f"r{time.monotonic_ns()}", "body": "rest spam"})
            if r.status == 429:
                break
        assert r.status == 429 and r.code == "rate_limited", r
        assert r.body["error"]["message"] == "too many messages (user)", r   # as over the WebSocket
        assert int(r.headers["Retry-After"]) >= 1, r.headers


@async_test(120)
async def test_a_reader_that_stops_reading_is_bounded_closed_and_resumes(server_factory):
    bound = 256 * 1024
    server = server_factory(["--max-outbound", str(bound)])
    async with Harness(server) as h:
        api = h.api
        sender, sleeper = await api.register_many(2, "bp")
        cid = (await api.open_dm(sender, sleeper.id))["id"]
        s = await h.ws(sender, name="sender")
        # the sleeper authenticates, then never reads again; a small receive
        # buffer keeps the kernel from absorbing much
        raw = sleeping_reader(server, sleeper.token)
        body = "z" * 16000
        last = 0
        max_q = 0
        # keep writing until the server gives up on the sleeper: the kernel's
        # loopback buffers absorb a few MB first, how much varies by run
        for i in range(0, 3000, 10):           # ten at a time (a batch a commit)
            reqs = [(await s.send_nowait(cid, f"{k:04d}" + body))[0] for k in range(i, i + 10)]
            for req in reqs:
                r = await s.wait_reply(req)
                assert r.get("type") == "sent", r
                last = max(last, r["seq"])
            if i % 50 == 40:
                m = metrics(server)
                max_q = max(max_q, m["parley_outbound_queue_max_bytes"])
                if m["parley_slow_consumer_closes_total"] >= 1:
                    break
        m = metrics(server)
        assert m["parley_slow_consumer_closes_total"] >= 1, m
        # the queue never grew past its bound (plus the one frame that did not fit)
        assert max_q <= bound + 17000, max_q
        # the connection is really gone within the close-wait timeout
        deadline = time.monotonic() + 10
        while metrics(server)["parley_sessions"] > 1 and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
        assert metrics(server)["parley_sessions"] == 1
        raw.close()
        # the sleeper reconnects and resumes from what it had applied (nothing): all arrive
        w = await h.ws(sleeper, name="sleeper-again", auth="first", cursors={cid: 0})
        await w.wait_seq(cid, last, timeout=30)
        got = [e["seq"] for e in w.conv_events(cid)]
        assert got == list(range(1, last + 1)), (got[:5], got[-5:], last)


@async_test(60)
async def test_silent_connections_are_pinged_then_closed(server_factory):
    server = server_factory(["--ping-interval", "1", "--idle-timeout", "3"])
    async with Harness(server) as h:
        api = h.api
        u, = await api.register_many(1, "lv")
        # python websockets answers pings by itself: it stays
        alive = await h.ws(u, name="alive")
        raw = RawWS(server.host, server.port, token=u.token)
        await raw.connect()
        assert (await raw.read_json())["type"] == "ready"
        op, _, _ = await raw.read_frame(timeout=5)
        assert op == 0x9, f"expected a ping, got opcode {op}"
        # raw never answers: closed with 4002 within the idle timeout
        code = None
        t0 = time.monotonic()
        while time.monotonic() - t0 < 8:
            op, _, payload = await raw.read_frame(timeout=8)
            if op == 0x8:
                code = close_info(payload)[0]
                break
        assert code == 4002, code
        await asyncio.sleep(1.5)
        await alive.ping()                       # still fine after > idle-timeout
        assert metrics(server)["parley_idle_closes_total"] == 1


@pytest.mark.embedded_only("a node's own listener: the test's clients are its loopback peers")
def test_loopback_clients_are_not_capped_per_ip_unless_asked(server_factory):
    """--max-conns-per-ip is an IP limit like the others: a local proxy
    (HAProxy in cluster mode) makes every client 127.0.0.1, so loopback
    peers are exempt unless --rate-ip-loopback 1 (audit H2: they were
    capped, which held a node behind HAProxy to 10,000 connections)."""
    server = server_factory(["--max-conns-per-ip", "2"])
    socks = []
    try:
        for _ in range(5):
            socks.append(socket.create_connection((server.host, server.port), timeout=5))
        for s in socks:                          # all five are served
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            s.settimeout(5)
            assert s.recv(64).startswith(b"HTTP/1.1 200"), "a loopback connection over the cap was closed"
    finally:
        for s in socks:
            s.close()


@pytest.mark.embedded_only("the process limit of one parleyd")
def test_out_of_descriptors_new_connections_are_counted_and_logged(server):
    """protocol.md "Rate limits": a server out of file descriptors closes new
    connections at once, keeps serving those it has, and counts them in
    parley_connections_refused_total (audit E4 F6: the metric stayed 0 and
    the log's count missed the refusals of the lines it held back)."""
    import resource
    pid = server.proc.pid
    kept = socket.create_connection((server.host, server.port), timeout=5)
    socks = []
    old = resource.prlimit(pid, resource.RLIMIT_NOFILE)
    try:
        used = len(os.listdir(f"/proc/{pid}/fd"))
        resource.prlimit(pid, resource.RLIMIT_NOFILE, (used + 4, old[1]))
        refused = 0
        for _ in range(20):
            s = socket.create_connection((server.host, server.port), timeout=5)
            socks.append(s)
        time.sleep(0.5)
        for s in socks:                          # accepted and closed unanswered, or still held
            s.settimeout(0.2)
            try:
                s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
                if s.recv(64) == b"":
                    refused += 1
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
            except socket.timeout:
                pass
        assert refused >= 10, refused
        kept.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
        kept.settimeout(5)
        body = b""
        while b"parley_connections_refused_total " not in body or not body.endswith(b"\n"):
            chunk = kept.recv(65536)
            assert chunk, body[-200:]
            body += chunk
        n = int(re.search(rb"\nparley_connections_refused_total (\d+)", body).group(1))
        assert n >= refused, (n, refused)
    finally:
        resource.prlimit(pid, resource.RLIMIT_NOFILE, old)
        for s in socks:
            s.close()
        kept.close()
    time.sleep(1.3)                              # the sweep says what the last line held back
    logged = [int(m) for m in re.findall(r'out of file descriptors: connections refused","refused":(\d+)',
                                         server.log_text())]
    assert logged and min(logged) > 0, logged    # a line a second, never "refused": 0
    assert sum(logged) == n, (logged, n)         # every refusal, once (audit O7)


@async_test(60)
@pytest.mark.embedded_only("behind HAProxy every client is 127.0.0.1 and HAProxy holds idle "
                            "TCP connections itself; per-IP limits belong in the proxy there")
async def test_per_ip_caps_and_request_limits(server_factory):
    server = server_factory(["--max-conns-per-ip", "5", "--rate-ip-loopback", "1",
                             "--rate-ip-requests", "1000", "--rate-ip-auth", "3"])
    socks = []
    try:
        for _ in range(5):
            s = socket.create_connection((server.host, server.port), timeout=5)
            socks.append(s)
        extra = socket.create_connection((server.host, server.port), timeout=5)
        extra.settimeout(5)
        assert extra.recv(1) == b"", "a sixth connection from one IP must be closed"
        extra.close()
    finally:
        for s in socks:
            s.close()
    await asyncio.sleep(0.3)
    # auth endpoints: 3 per minute per IP, then 429 with Retry-After
    async with Harness(server) as h:
        codes = []
        for i in range(5):
            r = await h.api.req("POST", "/api/v1/auth/login",
                                json_body={"username": "nobody", "password": "password1"})
            codes.append(r.status)
        assert codes[:3] == [401, 401, 401] and codes[3:] == [429, 429], codes
        assert r.body["error"]["message"] == "too many requests (ip)", r
        assert int(r.headers["Retry-After"]) >= 1
        m = metrics(server)
        assert m["parley_connections_refused_total"] >= 1
        assert m['parley_rate_limited_total{scope="ip"}'] >= 2


def test_slow_headers_are_cut_off(server):
    s = socket.create_connection((server.host, server.port), timeout=20)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
    t0 = time.monotonic()
    data = b""
    try:
        while time.monotonic() - t0 < 15:
            s.sendall(b"X-Drip: 1\r\n")          # a header line now and then, never the end
            s.settimeout(1.5)
            try:
                chunk = s.recv(4096)
            except socket.timeout:
                continue
            if not chunk:
                break
            data += chunk
            if b"\r\n\r\n" in data:
                break
    except (BrokenPipeError, ConnectionResetError):
        pass
    s.close()
    assert data.startswith(b"HTTP/1.1 408"), data[:100]
    assert time.monotonic() - t0 < 14


def test_a_connection_that_sends_nothing_is_closed_without_an_answer(server):
    """protocol.md section 6: after 10 s, no bytes back (cluster mode's
    HAProxy answers such a client its own 408: the node is asked directly)."""
    host, port = server.host, server.port
    if getattr(server, "haproxy", None):
        u = urllib.parse.urlsplit(server.node_urls[0])
        host, port = u.hostname, u.port
    s = socket.create_connection((host, port), timeout=20)
    t0 = time.monotonic()
    try:
        data = s.recv(4096)
    except ConnectionResetError:
        data = b""
    s.close()
    assert data == b"", data[:100]
    assert 8 < time.monotonic() - t0 < 16


@async_test(90)
async def test_sigterm_drains_without_losing_acknowledged_messages(server):
    async with Harness(server) as h:
        api = h.api
        a_user, b_user = await api.register_many(2, "dr")
        cid = (await api.open_dm(a_user, b_user.id))["id"]
        a = await h.ws(a_user, name="a")
        b = await h.ws(b_user, name="b")
        acks = {}
        stop = asyncio.Event()

        async def stream():
            i = 0
            inflight = []
            while not stop.is_set() and not a.closed.is_set():
                try:
                    inflight.append(await a.send_nowait(cid, f"d{i}"))
                except Exception:   # noqa: BLE001 - the socket closes under us
                    break
                i += 1
                if len(inflight) >= 20:
                    await asyncio.sleep(0.005)
                    inflight = [x for x in inflight if not a.reply(x[0])]
            return i

        task = asyncio.ensure_future(stream())
        await asyncio.sleep(1.0)
        rc = await server.astop()               # SIGTERM; waits for exit
        stop.set()
        await task
        assert rc == 0, rc
        for m in a.msgs:
            if m.get("type") == "sent":
                acks[m["seq"]] = m
        assert acks, "no message was acknowledged before the drain"
        # both clients were told to reconnect, then closed with 1001
        for c in (a, b):
            await c.wait_closed(timeout=10)
            assert any(m.get("type") == "reconnect" for m in c.msgs), c.msgs[-3:]
            assert c.close_code == 1001, c.close_code
        await asyncio.to_thread(server.start)
        hist = await api.history_all(a_user, cid)
        by_seq = {e["seq"]: e for e in hist}
        for seq, ack in acks.items():
            assert seq in by_seq and by_seq[seq]["id"] == ack["id"], (seq, ack)
        assert sorted(by_seq) == list(range(1, len(by_seq) + 1))


@async_test(60)
async def test_metrics_move_with_traffic_and_readyz(server):
    async with Harness(server) as h:
        m0 = metrics(server)
        for name in ("parley_connections", "parley_sessions", "parley_messages_sent_total",
                     "parley_frames_out_total", "parley_commit_batches_total",
                     "parley_commit_seconds_count", "parley_delivery_seconds_count",
                     'parley_commit_batch_size_bucket{le="+Inf"}', "parley_outbound_queue_bytes",
                     'parley_dropped_total{kind="ephemeral"}',
                     'parley_wal_checkpoints_total{by="background"}',
                     'parley_wal_checkpoints_total{by="writer"}'):
            assert name in m0, name
        api = h.api
        x, y = await api.register_many(2, "mt")
        cid = (await api.open_dm(x, y.id))["id"]
        wx = await h.ws(x)
        wy = await h.ws(y)
        for i in range(10):   # a body no temporary path or token can contain by chance
            await wx.send_msg(cid, f"body-never-logged-{i}")
        await wy.wait_seq(cid, 11)
        m1 = metrics(server)
        assert m1["parley_messages_sent_total"] - m0["parley_messages_sent_total"] == 10
        assert m1["parley_frames_out_total"] - m0["parley_frames_out_total"] >= 20
        assert m1["parley_commit_batches_total"] > m0["parley_commit_batches_total"]
        assert m1["parley_delivery_seconds_count"] - m0["parley_delivery_seconds_count"] == 10
        assert m1["parley_sessions"] == 2
        assert m1["parley_ws_messages_in_total"] >= 10
        # HTTP sends count in the delivery histogram too, and reads in the
        # store's read counter (before: neither moved)
        for i in range(3):
            await api.expect(201, "POST", f"/api/v1/conversations/{cid}/messages", token=x.token,
                             json_body={"client_msg_id": f"mt-http-{i}", "body": f"over http {i}"})
        await wy.wait_seq(cid, 14)
        await api.history(x, cid)
        m2 = metrics(server)
        assert m2["parley_messages_sent_total"] - m1["parley_messages_sent_total"] == 3
        assert m2["parley_delivery_seconds_count"] - m1["parley_delivery_seconds_count"] == 3
        assert m2["parley_store_reads_total"] > m1["parley_store_reads_total"]
        assert m2["parley_store_read_failures_total"] == m0["parley_store_read_failures_total"]
        with urllib.request.urlopen(server.base_url + "/readyz", timeout=5) as r:
            assert r.status == 200
        # logs are JSON lines and never carry message text or tokens
        log = server.log_text()
        for line in log.splitlines():
            if line.startswith("{"):
                json.loads(line)
        assert "body-never-logged-9" not in log and x.token not in log and x.refresh_token not in log


@async_test(90)
async def test_a_replay_to_a_reader_that_never_reads_is_closed_after_slow_timeout(server_factory):
    """Resume over a large backlog to a client that heartbeats but never
    reads: the replay pauses at the high-water mark (memory stays bounded),
    and after --slow-timeout the connection is closed with 4008."""
    bound = 256 * 1024
    server = server_factory(["--max-outbound", str(bound), "--slow-timeout", "2"])
    async with Harness(server) as h:
        api = h.api
        sender, sleeper = await api.register_many(2, "sr")
        cid = (await api.open_dm(sender, sleeper.id))["id"]
        body = "q" * 16000
        last = 0

        async def post(i):
            r = await api.req("POST", f"/api/v1/conversations/{cid}/messages", token=sender.token,
                              json_body={"client_msg_id": f"b{i}", "body": f"{i:04d}" + body})
            assert r.status == 201, r
            return r.body["seq"]
        for k in range(0, 450, 25):            # over HTTP (no socket of its own to fill); 7 MB > the kernel buffers
            last = max(last, *await asyncio.gather(*(post(i) for i in range(k, k + 25))))

        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        raw.settimeout(10)
        raw.connect((server.host, server.port))
        raw.sendall(b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n")
        head = b""
        while b"\r\n\r\n" not in head:
            head += raw.recv(1)
        auth = json.dumps({"type": "auth", "token": sleeper.token, "cursors": {str(cid): 0}})
        raw.sendall(build_frame(0x1, auth.encode()))
        closed = False
        t0 = time.monotonic()
        while time.monotonic() - t0 < 40:      # 20 s was too short on a loaded host (cluster mode)
            try:
                raw.sendall(build_frame(0x1, b'{"type":"heartbeat"}'))
            except OSError:
                closed = True
                break
            m = metrics(server)
            assert m["parley_outbound_queue_max_bytes"] <= bound + 17000, m["parley_outbound_queue_max_bytes"]
            if m["parley_slow_consumer_closes_total"] >= 1 and m["parley_sessions"] == 1:
                closed = True
                break
            await asyncio.sleep(0.5)
        assert closed, "the stuck replay was never closed"
        assert time.monotonic() - t0 >= 1.5, "closed before the slow timeout"
        # Reading only after the server gave up waiting for its close to be
        # answered (2 s), the client still gets whole frames and then the
        # close frame with 4008: the events still queued were dropped, so the
        # close frame was next, and it waited for the client to read.
        await asyncio.sleep(3)
        code = read_to_close_frame(raw)
        raw.close()
        assert code == 4008, code
        w = await h.ws(sleeper, name="sleeper-again", auth="first", cursors={cid: 0})
        await w.wait_seq(cid, last, timeout=30)
        assert [e["seq"] for e in w.conv_events(cid)] == list(range(1, last + 1))


@async_test(60)
async def test_group_size_at_creation_counts_distinct_members_and_the_creator(server_factory):
    """--max-group-members bounds the group a creation makes: the creator and
    the distinct others. A repeated id or the creator's own id in "members"
    does not count twice; one member too many is 413 too_large."""
    server = server_factory(["--max-group-members", "3"])
    async with Harness(server) as h:
        api = h.api
        a, b, c, d = await api.register_many(4, "gsz")

        async def create(ids):
            return await api.req("POST", "/api/v1/conversations", token=a.token,
                                 json_body={"kind": "group", "title": "g", "members": ids})

        r = await create([b.id, c.id])
        assert r.status == 201 and len(r.body["members"]) == 3, r
        r = await create([b.id, b.id, c.id, c.id, a.id])
        assert r.status == 201 and len(r.body["members"]) == 3, r
        r = await create([b.id, c.id, d.id])
        assert r.status == 413 and r.code == "too_large", r
        r = await create([d.id] * 5)
        assert r.status == 201 and len(r.body["members"]) == 2, r


@async_test(120)
async def test_a_burst_over_the_bound_does_not_close_clients_that_read(server_factory):
    """--max-outbound bounds what waits for a client that does not read. A
    burst of sends committed together queues more than that to every member
    within one loop turn, before the turn's writes: what the kernel takes is
    written first, so clients that read get everything and stay connected."""
    bound = 256 * 1024
    server = server_factory(["--max-outbound", str(bound)])
    async with Harness(server) as h:
        api = h.api
        a, b = await api.register_many(2, "burst")
        cid = (await api.open_dm(a, b.id))["id"]
        wa = await h.ws(a)
        wb = await h.ws(b)
        body = "q" * 16000
        for _round in range(3):
            reqs = await asyncio.gather(*[wa.send_nowait(cid, f"{i:03d}" + body) for i in range(40)])
            for req, _ in reqs:
                reply = await wa.wait_reply(req, timeout=30)
                assert reply.get("type") == "sent", reply
            last = max(wa.reply(req)["seq"] for req, _ in reqs)
            await wb.wait_seq(cid, last, timeout=30)
            await wa.wait_seq(cid, last, timeout=30)
        assert wa.close_code is None and wb.close_code is None, (wa.close_code, wb.close_code)
        m = metrics(server)
        assert m["parley_slow_consumer_closes_total"] == 0, m["parley_slow_consumer_closes_total"]


@async_test(60)
async def test_an_idle_timeout_shorter_than_the_ping_interval_is_kept(server_factory):
    """protocol.md: a connection silent for --idle-timeout seconds is closed
    with 4002, whatever --ping-interval says. With the idle timeout below the
    ping interval, the close waited for the first ping (10 s here; audit P)."""
    server = server_factory(["--ping-interval", "10", "--idle-timeout", "2"])
    async with Harness(server) as h:
        u, = await h.api.register_many(1, "lvs")
        raw = RawWS(server.host, server.port, token=u.token)
        await raw.connect()
        t0 = time.monotonic()
        code, _, _ = await raw.read_until_close(timeout=8)
        took = time.monotonic() - t0
        assert code == 4002 and took < 6, (code, took)


def test_pipelined_requests_wait_for_their_answers_to_be_read(server):
    """Audit Z: a client that pipelines requests and reads nothing had every
    answer queued (583 MB from 0.5 MB of `GET /`). Past the high-water mark
    (--max-outbound / 4) no further request is taken until the client reads;
    when it does, every answer comes, in order."""
    n = 3000
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect((server.host, server.port))
    req = b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    sender = threading.Thread(target=lambda: s.sendall(req * n), daemon=True)
    sender.start()                           # it blocks once the server stops reading
    time.sleep(2)
    queued = metrics(server)["parley_outbound_queue_bytes"]
    assert queued < 1024 * 1024, queued      # ~29 KB an answer (the web client): unbounded, ~87 MB
    s.settimeout(20)
    got, buf = 0, b""
    while got < n:
        d = s.recv(1 << 20)
        assert d, f"EOF after {got} answers"
        buf += d
        while True:                           # count whole answers
            h = buf.find(b"\r\n\r\n")
            if h < 0:
                break
            head = buf[:h].decode("latin-1")
            assert head.startswith("HTTP/1.1 200"), head[:80]
            ln = int(re.search(r"(?im)^content-length: *(\d+)", head).group(1))
            if len(buf) < h + 4 + ln:
                break
            buf = buf[h + 4 + ln:]
            got += 1
    sender.join(5)
    s.close()
    assert got == n


def test_expect_100_continue_is_answered_before_the_body(server):
    """Audit Z: RFC 9110 10.1.1: a client that sends `Expect: 100-continue`
    waits for `100 Continue` before its body (curl gives up after 1 s). Only
    media uploads answered it; every route with a body does now."""
    body = json.dumps({"username": "exp_" + str(time.monotonic_ns())[-9:],
                       "password": "correct horse battery"}).encode()
    s = socket.create_connection((server.host, server.port), timeout=5)
    s.sendall(b"POST /api/v1/auth/register HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Expect: 100-continue\r\nContent-Length: %d\r\n\r\n" % len(body))
    first = s.recv(4096)
    assert first.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), first[:80]
    s.sendall(body)
    rest = first[25:]
    while b"\r\n\r\n" not in rest:
        rest += s.recv(4096)
    assert rest.startswith(b"HTTP/1.1 201"), rest[:80]
    s.close()


@async_test(60)
async def test_one_event_larger_than_the_outbound_bound_reaches_every_member(server_factory):
    """Audit B3: with --max-body above --max-outbound, one big message closed
    every member with 4008, and every resume again at the same event."""
    from pclient import cmid
    server = server_factory(["--max-body", "100000", "--max-outbound", "65536"])
    async with Harness(server) as h:
        a, b = await h.api.register_many(2, "big")
        cid = (await h.api.open_dm(a, b.id))["id"]
        wb = await h.ws(b, name="b")
        body = "x" * 90000
        r = await h.api.expect(201, "POST", f"/api/v1/conversations/{cid}/messages", token=a.token,
                               json_body={"client_msg_id": cmid(), "body": body})
        ev = await wb.wait_for(lambda m: m.get("type") == "event" and m.get("seq") == r.body["seq"], timeout=10)
        assert ev.get("body", (ev.get("data") or {}).get("body")) == body, {k: v for k, v in ev.items() if k != "body"}
        await wb.ping()
        assert wb.close_code is None, wb.close_code
        # and a resume from before it gets past it
        w2 = await h.ws(b, name="b2", auth="first", cursors={str(cid): 0})
        await w2.wait_for(lambda m: m.get("type") == "synced" and m.get("conversation") == cid, timeout=10)
        assert w2.close_code is None, w2.close_code


@async_test(60)
async def test_logout_is_not_counted_as_a_login(server_factory):
    """Audit B3: logout was in --rate-ip-auth's bucket: a logout could be
    refused with 429, leaving the session live, and logouts used up logins."""
    server = server_factory(["--rate-ip-loopback", "1", "--rate-ip-auth", "2"])
    async with Harness(server) as h:
        u, = await h.api.register_many(1, "lgt")                  # one of the two
        for _ in range(3):
            r = await h.api.req("POST", "/api/v1/auth/logout", json_body={"refresh_token": "1.abc"})
            assert r.status == 401, r
        r = await h.api.req("POST", "/api/v1/auth/logout", token=u.token)
        assert r.status == 204, r
        r = await h.api.req("POST", "/api/v1/auth/login", json_body={"username": u.username, "password": u.password})
        assert r.status == 200, f"logouts used up the login budget: {r!r}"
