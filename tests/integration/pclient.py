"""pclient — a small client library for Parley's integration tests.

Everything here speaks the documented protocol (docs/protocol.md) and nothing
else: REST through aiohttp, the WebSocket through `websockets` (10.4), and a
raw RFC 6455 client (RawWS) for the cases a well-behaved library refuses to
produce (bad UTF-8, binary frames, unmasked frames, reserved bits, ...).

Every wait is bounded: a test may fail, it may never hang.

Conventions:
  * `Harness(server)` is the per-test context (an async context manager): it
    owns the aiohttp session and closes every client it opened.
  * `User` carries id, username, password and the tokens of its first login.
  * `WS` files every incoming JSON message into `msgs` (all, in arrival
    order), `events[conv]` (events per conversation, in arrival order) and
    `replies[req]` (non-event messages that carry a `req`).
"""

import asyncio
import base64
import functools
import itertools
import json
import os
import secrets
import struct
import time

import aiohttp
import websockets
import websockets.exceptions

DEFAULT_TIMEOUT = 10.0
PASSWORD = "correct horse battery"


class ProtocolError(AssertionError):
    """An `error` reply where a success was expected."""

    def __init__(self, reply):
        super().__init__(f"server answered an error: {reply!r}")
        self.reply = reply


# --------------------------------------------------------------------------
# running async tests from plain pytest functions


def async_test(timeout=60):
    """Decorator: run an `async def test_...(fixtures...)` with asyncio.run,
    bounded by `timeout` seconds. Fixtures are passed through (functools.wraps
    keeps the signature pytest inspects)."""

    def deco(fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            async def bounded():
                return await asyncio.wait_for(fn(*args, **kwargs), timeout)

            return asyncio.run(bounded())

        return wrapper

    return deco


async def until_ok(attempt, seconds=DEFAULT_TIMEOUT):
    """Awaits attempt() again and again until it returns without an
    AssertionError (a client wait that timed out, say), for at most
    `seconds`; returns what it returned. For what reaches another node of a
    cluster moments later (a change travelling on the bus)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            return await attempt()
        except AssertionError:
            if time.monotonic() > deadline:
                raise


_name_counter = itertools.count(1)


def unique_name(prefix="u"):
    """A fresh username: 3-32 characters of [A-Za-z0-9_.-]."""
    n = next(_name_counter)
    return f"{prefix[:10]}{n}_{secrets.token_hex(4)}"


def cmid(prefix="c"):
    return f"{prefix}-{secrets.token_hex(8)}"


def msg_events(events):
    """Only the `message` events of a list of events."""
    return [e for e in events if e.get("kind") == "message"]


def seqs(events):
    return [e["seq"] for e in events]


def seq_ids(events):
    return [(e["seq"], e["id"]) for e in events]


def assert_contiguous(seq_list, start=None, what="seqs"):
    """seq_list is exactly start, start+1, ..., with no gap or duplicate."""
    if not seq_list:
        return
    first = seq_list[0] if start is None else start
    expected = list(range(first, first + len(seq_list)))
    if seq_list != expected:
        # Find the first discrepancy to make the failure readable.
        for i, (a, b) in enumerate(zip(seq_list, expected)):
            if a != b:
                ctx = seq_list[max(0, i - 3): i + 4]
                raise AssertionError(
                    f"{what} not contiguous from {first}: at index {i} got {a}, "
                    f"expected {b} (around: {ctx}); len={len(seq_list)}")
        raise AssertionError(f"{what} not contiguous: {seq_list[:20]}...")


# --------------------------------------------------------------------------
# REST


class Resp:
    def __init__(self, status, body, text, headers):
        self.status = status
        self.body = body          # parsed JSON, or None
        self.text = text
        self.headers = headers

    @property
    def code(self):
        """The error code of a `{"error": {"code": ...}}` answer, or None."""
        if isinstance(self.body, dict) and isinstance(self.body.get("error"), dict):
            return self.body["error"].get("code")
        return None

    def __repr__(self):
        return f"<Resp {self.status} {self.text[:300]!r}>"


class User:
    def __init__(self, uid, username, password, access_token, refresh_token, raw):
        self.id = uid
        self.username = username
        self.password = password
        self.token = access_token
        self.refresh_token = refresh_token
        self.raw = raw

    def __repr__(self):
        return f"<User {self.id} {self.username}>"


_MISSING = object()


class Api:
    def __init__(self, base_url, session):
        self.base = base_url.rstrip("/")
        self.session = session

    async def req(self, method, path, token=None, json_body=_MISSING, data=None,
                  headers=None, timeout=DEFAULT_TIMEOUT):
        h = dict(headers or {})
        if token is not None:
            h["Authorization"] = f"Bearer {token}"
        kw = {}
        if json_body is not _MISSING:
            kw["data"] = json.dumps(json_body).encode()
            h.setdefault("Content-Type", "application/json")
        elif data is not None:
            kw["data"] = data
            h.setdefault("Content-Type", "application/json")
        async with self.session.request(
                method, self.base + path, headers=h,
                timeout=aiohttp.ClientTimeout(total=timeout), **kw) as r:
            raw = await r.read()
            text = raw.decode("utf-8", "replace")
            body = None
            if raw:
                try:
                    body = json.loads(text)
                except ValueError:
                    body = None
            return Resp(r.status, body, text, dict(r.headers))

    async def expect(self, status, method, path, **kw):
        r = await self.req(method, path, **kw)
        ok = status if isinstance(status, (tuple, list, set)) else (status,)
        assert r.status in ok, f"{method} {path}: expected {status}, got {r!r}"
        return r

    # ---- accounts ----
    async def register(self, prefix="u", password=PASSWORD):
        name = unique_name(prefix)
        r = await self.expect(201, "POST", "/api/v1/auth/register",
                              json_body={"username": name, "password": password})
        b = r.body
        assert isinstance(b, dict), r
        assert b["user"]["username"] == name.lower(), r
        assert isinstance(b["user"]["id"], int), r
        assert isinstance(b["access_token"], str) and b["access_token"], r
        assert isinstance(b["refresh_token"], str) and b["refresh_token"], r
        return User(b["user"]["id"], b["user"]["username"], password,
                    b["access_token"], b["refresh_token"], b)

    async def register_many(self, n, prefix="u"):
        return list(await asyncio.gather(*[self.register(prefix) for _ in range(n)]))

    async def login(self, user, password=None):
        """A second login: a new session. Returns the raw body."""
        r = await self.expect(200, "POST", "/api/v1/auth/login",
                              json_body={"username": user.username,
                                         "password": password or user.password})
        return r.body

    async def refresh(self, refresh_token):
        return await self.req("POST", "/api/v1/auth/refresh",
                              json_body={"refresh_token": refresh_token})

    # ---- conversations ----
    async def open_dm(self, user, other_id, status=(200, 201)):
        r = await self.expect(status, "POST", "/api/v1/conversations", token=user.token,
                              json_body={"kind": "direct", "user": other_id})
        return r.body

    async def create_group(self, user, member_ids, title="group"):
        r = await self.expect(201, "POST", "/api/v1/conversations", token=user.token,
                              json_body={"kind": "group", "title": title,
                                         "members": list(member_ids)})
        return r.body

    async def add_member(self, admin, conv, uid):
        return await self.req("POST", f"/api/v1/conversations/{conv}/members",
                              token=admin.token, json_body={"user": uid})

    async def remove_member(self, admin, conv, uid):
        return await self.req("DELETE", f"/api/v1/conversations/{conv}/members/{uid}",
                              token=admin.token)

    async def history(self, user, conv, after=None, before=None, limit=None, token=None):
        q = []
        if after is not None:
            q.append(f"after={after}")
        if before is not None:
            q.append(f"before={before}")
        if limit is not None:
            q.append(f"limit={limit}")
        path = f"/api/v1/conversations/{conv}/messages" + ("?" + "&".join(q) if q else "")
        return await self.req("GET", path, token=token or user.token)

    async def history_all(self, user, conv, page=200):
        """Every event of the conversation, paged forward with `after`."""
        out = []
        after = 0
        for _ in range(100000):
            r = await self.history(user, conv, after=after, limit=page)
            assert r.status == 200, f"history after={after}: {r!r}"
            evs = r.body["events"]
            out.extend(evs)
            if not r.body.get("has_more"):
                return out
            assert evs, f"has_more=true but no events after={after}: {r!r}"
            after = evs[-1]["seq"]
        raise AssertionError("history paging did not end")


# --------------------------------------------------------------------------
# WebSocket (websockets library)


class WS:
    """A WebSocket client with a background reader task."""

    _reqs = itertools.count(1)

    def __init__(self, url, token=None, auth="header", name="ws", cursors=None):
        self.url = url
        self.token = token
        self.auth = auth            # "header" | "first" | "subprotocol" | None
        self.name = name
        self.cursors = cursors      # for auth="first": {"conv": seq}
        self.ws = None
        self.msgs = []
        self.events = {}
        self.replies = {}
        self.max_seq = {}
        self.binary = []
        self.ready = None
        self.close_code = None
        self.close_reason = None
        self.reader_error = None
        self.closed = asyncio.Event()
        self._changed = asyncio.Event()
        self._task = None

    def __repr__(self):
        return f"<WS {self.name}>"

    async def connect(self, expect_ready=True, timeout=DEFAULT_TIMEOUT):
        headers = {}
        subprotocols = None
        if self.auth == "header" and self.token is not None:
            headers["Authorization"] = f"Bearer {self.token}"
        elif self.auth == "subprotocol":
            subprotocols = ["parley.v1", f"bearer.{self.token}"]
        self.ws = await asyncio.wait_for(websockets.connect(
            self.url, extra_headers=headers, subprotocols=subprotocols,
            max_size=None, max_queue=None, ping_interval=None,
            open_timeout=timeout, close_timeout=2,
            # Sending big frames in one piece keeps the framing test simple.
            compression=None), timeout)
        self._task = asyncio.ensure_future(self._reader())
        if self.auth == "first":
            m = {"type": "auth", "token": self.token}
            if self.cursors is not None:
                m["cursors"] = {str(k): v for k, v in self.cursors.items()}
            await self.send_json(m)
        if expect_ready:
            self.ready = await self.wait_type("ready", timeout)
        return self

    async def _reader(self):
        try:
            async for raw in self.ws:
                if isinstance(raw, bytes):
                    self.binary.append(raw)
                    self._changed.set()
                    continue
                try:
                    m = json.loads(raw)
                except ValueError as e:
                    self.reader_error = AssertionError(f"{self.name}: non-JSON text frame {raw[:200]!r}: {e}")
                    m = {"type": "__non_json__", "raw": raw}
                self.msgs.append(m)
                if isinstance(m, dict):
                    if m.get("type") == "event":
                        c = m.get("conversation")
                        self.events.setdefault(c, []).append(m)
                        if isinstance(m.get("seq"), int):
                            self.max_seq[c] = max(self.max_seq.get(c, 0), m["seq"])
                    elif "req" in m:
                        self.replies.setdefault(_reqkey(m["req"]), m)
                self._changed.set()
        except websockets.exceptions.ConnectionClosed:
            pass
        except Exception as e:  # noqa: BLE001 - surfaced through reader_error
            self.reader_error = e
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason
            self.closed.set()
            self._changed.set()

    # ---- sending ----
    async def send_json(self, obj):
        await self.ws.send(json.dumps(obj))

    async def send_text(self, text):
        await self.ws.send(text)

    def next_req(self):
        return next(WS._reqs)

    async def request(self, obj, timeout=DEFAULT_TIMEOUT):
        """Send obj with a fresh `req`; return the reply (or error) carrying it."""
        req = self.next_req()
        obj = dict(obj, req=req)
        await self.send_json(obj)
        return await self.wait_reply(req, timeout)

    async def send_nowait(self, conv, body, cmid_=None):
        """Pipelined send: returns (req, client_msg_id) at once."""
        req = self.next_req()
        c = cmid_ or cmid()
        await self.send_json({"type": "send", "req": req, "conversation": conv,
                              "client_msg_id": c, "body": body})
        return req, c

    async def send_msg(self, conv, body, cmid_=None, timeout=DEFAULT_TIMEOUT):
        """Send a message and return its `sent` ack; raise on an error reply."""
        req, c = await self.send_nowait(conv, body, cmid_)
        reply = await self.wait_reply(req, timeout)
        if reply.get("type") != "sent":
            raise ProtocolError(reply)
        assert reply.get("client_msg_id") == c, reply
        assert reply.get("conversation") == conv, reply
        return reply

    async def ping(self, timeout=DEFAULT_TIMEOUT):
        r = await self.request({"type": "ping"}, timeout)
        assert r.get("type") == "pong", r
        return r

    # ---- waiting ----
    async def wait_for(self, pred, timeout=DEFAULT_TIMEOUT, start=0, what=None):
        """The first message in msgs[start:] satisfying pred; waits for it."""
        deadline = time.monotonic() + timeout
        i = start
        while True:
            while i < len(self.msgs):
                m = self.msgs[i]
                i += 1
                if pred(m):
                    return m
            if self.closed.is_set():
                raise AssertionError(
                    f"{self.name}: connection closed (code {self.close_code} "
                    f"{self.close_reason!r}) while waiting for {what or pred}; "
                    f"last msgs: {self.msgs[-5:]}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(
                    f"{self.name}: timed out after {timeout}s waiting for "
                    f"{what or pred}; last msgs: {self.msgs[-5:]}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_until(self, cond, timeout=DEFAULT_TIMEOUT, what=None):
        """Wait until cond() (a function of this client's state) is true."""
        deadline = time.monotonic() + timeout
        while True:
            if cond():
                return
            if self.closed.is_set():
                raise AssertionError(
                    f"{self.name}: connection closed (code {self.close_code}) "
                    f"while waiting for {what or cond}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{self.name}: timed out after {timeout}s "
                                     f"waiting for {what or cond}")
            self._changed.clear()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except asyncio.TimeoutError:
                pass

    async def wait_type(self, typ, timeout=DEFAULT_TIMEOUT, start=0):
        return await self.wait_for(lambda m: isinstance(m, dict) and m.get("type") == typ,
                                   timeout, start, what=f"type={typ}")

    async def wait_reply(self, req, timeout=DEFAULT_TIMEOUT):
        key = _reqkey(req)
        await self.wait_until(lambda: key in self.replies, timeout,
                              what=f"reply to req {req}")
        return self.replies[key]

    def reply(self, req):
        """The reply to req if it has arrived, else None."""
        return self.replies.get(_reqkey(req))

    async def wait_next_reply(self, start, timeout=DEFAULT_TIMEOUT):
        """The first reply at or after index `start` (for requests whose req
        the server cannot read, e.g. malformed JSON): an error, or anything
        carrying a req; pushes (events, presence, typing, receipts) skipped."""
        return await self.wait_for(is_reply, timeout, start, what="a reply")

    async def wait_seq(self, conv, seq, timeout=DEFAULT_TIMEOUT):
        """Wait until an event of conv with seq >= `seq` arrived."""
        await self.wait_until(lambda: self.max_seq.get(conv, 0) >= seq,
                              timeout, what=f"event conv={conv} seq>={seq}")

    async def wait_closed(self, timeout=DEFAULT_TIMEOUT):
        """Wait for the server to close the connection; returns the close code."""
        try:
            await asyncio.wait_for(self.closed.wait(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"{self.name}: the server did not close the "
                                 f"connection within {timeout}s; last msgs: {self.msgs[-5:]}")
        return self.close_code

    def conv_events(self, conv):
        return list(self.events.get(conv, []))

    def errors(self):
        return [m for m in self.msgs if isinstance(m, dict) and m.get("type") == "error"]

    async def close(self):
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 3)
            except Exception:  # noqa: BLE001 - best-effort cleanup
                pass
        if self._task is not None:
            try:
                await asyncio.wait_for(self._task, 3)
            except Exception:  # noqa: BLE001
                self._task.cancel()


PUSH_TYPES = ("event", "presence", "typing", "receipt")


def is_reply(m):
    """A message answering a request, as opposed to a push."""
    if not isinstance(m, dict):
        return True
    if "req" in m or m.get("type") == "error":
        return True
    return m.get("type") not in PUSH_TYPES


def _reqkey(req):
    return json.dumps(req)


async def pipeline_send(ws, conv, bodies, window=50, cmids=None, on_ack=None,
                        timeout=DEFAULT_TIMEOUT * 3):
    """Send every body keeping at most `window` unacknowledged; return the acks
    in send order. Raises on an error reply."""
    acks = [None] * len(bodies)
    cm = cmids or [cmid() for _ in bodies]
    pending = {}
    sem = asyncio.Semaphore(window)

    async def one(i):
        try:
            reply = await ws.wait_reply(pending[i], timeout)
            if reply.get("type") != "sent":
                raise ProtocolError(reply)
            acks[i] = reply
            if on_ack:
                on_ack(i, reply)
        finally:
            sem.release()

    tasks = []
    for i, b in enumerate(bodies):
        await asyncio.wait_for(sem.acquire(), timeout)
        req, _ = await ws.send_nowait(conv, b, cm[i])
        pending[i] = req
        tasks.append(asyncio.ensure_future(one(i)))
    await asyncio.gather(*tasks)
    return acks


# --------------------------------------------------------------------------
# per-test harness


class Harness:
    def __init__(self, server):
        self.server = server
        self.session = None
        self.api = None
        self.clients = []

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.api = Api(self.server.base_url, self.session)
        return self

    async def __aexit__(self, *exc):
        await self.close_clients()
        await self.session.close()
        return False

    async def close_clients(self):
        clients, self.clients = self.clients, []
        await asyncio.gather(*[c.close() for c in clients], return_exceptions=True)

    def new_api(self):
        """Rebind to the server's (possibly restarted) address."""
        self.api = Api(self.server.base_url, self.session)
        return self.api

    async def ws(self, user_or_token, auth="header", expect_ready=True, name=None, cursors=None):
        token = user_or_token.token if isinstance(user_or_token, User) else user_or_token
        nm = name or (user_or_token.username if isinstance(user_or_token, User) else "ws")
        c = WS(self.server.ws_url, token, auth=auth, name=nm, cursors=cursors)
        self.clients.append(c)
        await c.connect(expect_ready=expect_ready)
        return c

    async def raw(self, token=None, extra_headers=None):
        r = RawWS(self.server.host, self.server.port, token, extra_headers)
        await r.connect()
        self.clients.append(r)
        return r

    # ---- pinning to a node (see "absence barriers" below) ----
    def api_at(self, i):
        """An Api on node i of a cluster (i modulo the node count), or on the
        embedded server itself."""
        return Api(node_urls(self.server, i)[0], self.session)

    async def ws_at(self, i, user_or_token, name=None, expect_ready=True):
        """A WebSocket (header auth) on node i of a cluster (i modulo the node
        count), or on the embedded server itself; closed with the harness."""
        token = user_or_token.token if isinstance(user_or_token, User) else user_or_token
        nm = name or (user_or_token.username if isinstance(user_or_token, User) else "ws")
        c = WS(node_urls(self.server, i)[1], token, name=nm)
        self.clients.append(c)
        await c.connect(expect_ready=expect_ready)
        return c


# --------------------------------------------------------------------------
# absence barriers (audit P2 scenario 6)
#
# A test that asserts something does NOT reach a session needs a wait after
# which it would have arrived. One ping() on the receiver's own connection
# covers only what its own node has queued for it: in cluster mode an event
# another node published may still be on its way over Redis, and a leak
# arriving a moment later would pass. The barrier used instead is a MARKER:
# something the receiver IS entitled to, caused after the action under test
# by the node that performed it (the same WebSocket, or a REST request pinned
# to that node with Harness.api_at), and waited for on the receiver's own
# connection. Why the marker comes after anything the action published:
#   - a node PUBLISHes everything on one Redis connection (`cmd`,
#     bus_redis.c), in the order its handlers run: a commit's events, a
#     receipt and an erasure in their store job's done callback (one writer
#     thread, jobs handed back in submission order: store/pipeline.c), a
#     REST receipt before its 204, typing as the frame is read;
#   - Redis delivers one connection's publishes to a subscriber in that
#     order, whatever their channels;
#   - the receiving node reads its one `sub` connection in order, and hands
#     a receipt or typing frame to its sessions at once and an event in seq
#     order (seq N only after N-1), so whatever arrived before the marker
#     was written to the receiver's connection before the marker was.
# So once the marker is there, an earlier leak would be there too. A marker
# in a conversation the leak is not in is still ordered (one connection
# each way, across channels), provided the receiver's node has followed the
# marker's conversation since before the action (the receiver was connected
# and a member then: its stream's first head read is long done, so the
# marker reaches it from the bus, not from a read of the store).
# Where the acting node is unknown (a job any node may run), every node
# sends one (every_node_barrier).


def node_count(server):
    """The nodes of a cluster; 1 for an embedded server."""
    return len(getattr(server, "nodes", None) or ()) or 1


def node_urls(server, i):
    """(base_url, ws_url) of node i (modulo the node count) of a cluster, or
    of the embedded server."""
    nodes = getattr(server, "nodes", None)
    if not nodes:
        return server.base_url, server.ws_url
    n = nodes[i % len(nodes)]
    return n.base_url, n.ws_url


async def marker_barrier(conv, senders, receivers, what="barrier marker"):
    """Each sender (a WS connected to the node whose earlier actions could
    have published the unwanted frame) sends a marker message to conv, and
    every receiver (all members of conv) waits for it; returns the markers'
    seqs. One sender at a time, each marker awaited before the next: a
    later seq reaching a receiver's node first would make it fill the
    earlier marker from the store, not from the bus, and prove nothing
    about that marker's node."""
    out = []
    for s in senders:
        seq = (await s.send_msg(conv, f"{what} from {s.name}"))["seq"]
        for r in receivers:
            await r.wait_seq(conv, seq)
        out.append(seq)
    return out


async def every_node_barrier(h, user, conv, receivers, what="barrier marker"):
    """marker_barrier from every node (a WS of `user`, a member of conv, on
    each; closed afterwards): for an action whose node the test does not
    know, such as a job every node runs."""
    senders = [await h.ws_at(i, user, name=f"{what} node{i}") for i in range(node_count(h.server))]
    try:
        return await marker_barrier(conv, senders, receivers, what)
    finally:
        for s in senders:
            await s.close()
            if s in h.clients:
                h.clients.remove(s)


# --------------------------------------------------------------------------
# raw RFC 6455 client (for frames a library will not send)

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def build_frame(opcode, payload, fin=True, mask=True, rsv=0):
    """One WebSocket frame, masked like a client's unless mask=False."""
    if isinstance(payload, str):
        payload = payload.encode()
    b0 = (0x80 if fin else 0) | ((rsv & 7) << 4) | (opcode & 0xF)
    n = len(payload)
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def _mask(payload, key):
    if not payload:
        return b""
    # XOR through big integers: fast enough for a few MiB.
    k = (key * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(k, "big")).to_bytes(len(payload), "big")


class RawWS:
    """A hand-rolled WebSocket client over asyncio streams."""

    def __init__(self, host, port, token=None, extra_headers=None):
        self.host, self.port, self.token = host, port, token
        self.extra_headers = extra_headers or {}
        self.reader = self.writer = None
        self.status = None
        self.response_head = None

    async def connect(self, timeout=DEFAULT_TIMEOUT):
        self.reader, self.writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port, limit=1 << 24), timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        lines = ["GET /ws HTTP/1.1", f"Host: {self.host}:{self.port}",
                 "Upgrade: websocket", "Connection: Upgrade",
                 f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13"]
        if self.token:
            lines.append(f"Authorization: Bearer {self.token}")
        for k, v in self.extra_headers.items():
            lines.append(f"{k}: {v}")
        self.writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
        await self.writer.drain()
        head = await asyncio.wait_for(self.reader.readuntil(b"\r\n\r\n"), timeout)
        self.response_head = head.decode("latin-1")
        self.status = int(self.response_head.split(" ", 2)[1])
        return self

    async def send_raw(self, data):
        self.writer.write(data)
        await self.writer.drain()

    async def send_frame(self, opcode, payload, **kw):
        await self.send_raw(build_frame(opcode, payload, **kw))

    async def read_frame(self, timeout=DEFAULT_TIMEOUT):
        """(opcode, fin, payload); raises EOFError at end of stream."""
        async def rd():
            try:
                h = await self.reader.readexactly(2)
            except asyncio.IncompleteReadError:
                raise EOFError("connection closed")
            fin = bool(h[0] & 0x80)
            op = h[0] & 0xF
            n = h[1] & 0x7F
            if n == 126:
                n = struct.unpack("!H", await self.reader.readexactly(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", await self.reader.readexactly(8))[0]
            if h[1] & 0x80:
                raise AssertionError("server sent a masked frame")
            payload = await self.reader.readexactly(n) if n else b""
            return op, fin, payload
        return await asyncio.wait_for(rd(), timeout)

    async def read_json(self, timeout=DEFAULT_TIMEOUT, skip_events=True):
        """Next text message as JSON (control frames and, unless told
        otherwise, pushes such as events and presence skipped)."""
        deadline = time.monotonic() + timeout
        while True:
            op, fin, p = await self.read_frame(max(0.01, deadline - time.monotonic()))
            if op == OP_TEXT:
                assert fin, "server fragmented a message (allowed, but unexpected here)"
                m = json.loads(p.decode())
                if skip_events and not is_reply(m):
                    continue
                return m
            if op == OP_CLOSE:
                raise AssertionError(f"closed by server: {close_info(p)}")

    async def read_until_close(self, timeout=DEFAULT_TIMEOUT):
        """Read (collecting text messages) until the server's close frame.
        Returns (code, reason, msgs). code None means the TCP connection ended
        without a close frame."""
        msgs = []
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no close frame within {timeout}s; got {msgs[-5:]}")
            try:
                op, fin, p = await self.read_frame(remaining)
            except (EOFError, ConnectionResetError, BrokenPipeError):
                return None, None, msgs
            except asyncio.TimeoutError:
                raise AssertionError(f"no close frame within {timeout}s; got {msgs[-5:]}")
            if op == OP_CLOSE:
                code, reason = close_info(p)
                return code, reason, msgs
            if op == OP_TEXT:
                try:
                    m = json.loads(p.decode())
                except ValueError:
                    m = p
                if is_reply(m):
                    msgs.append(m)

    async def close(self):
        if self.writer is not None:
            try:
                self.writer.close()
                await asyncio.wait_for(self.writer.wait_closed(), 2)
            except Exception:  # noqa: BLE001
                pass


def close_info(payload):
    if len(payload) >= 2:
        return struct.unpack("!H", payload[:2])[0], payload[2:].decode("utf-8", "replace")
    return 1005, ""


async def raw_http(host, port, head, body=b"", timeout=DEFAULT_TIMEOUT):
    """Send a raw HTTP request (head without the final CRLF CRLF) and a body,
    writing the body concurrently with reading the answer (the server may
    answer and close before reading it all). Returns (status, head, body).
    Blocking sockets on threads: asyncio's transport would drop the answer
    the kernel already holds once a write fails with EPIPE."""
    return await asyncio.to_thread(_raw_http_blocking, host, port, head, body, timeout)


def _raw_http_blocking(host, port, head, body, timeout):
    import socket
    import threading
    sock = socket.create_connection((host, port), timeout=timeout)
    try:
        sock.sendall(head.encode() + b"\r\n\r\n")

        def write_body():
            try:
                sock.sendall(body)
            except OSError:
                pass

        t = threading.Thread(target=write_body, daemon=True)
        t.start()
        got = b""
        deadline = time.monotonic() + timeout
        resp_head, clen = None, None
        while time.monotonic() < deadline:
            if resp_head is None and b"\r\n\r\n" in got:
                resp_head, got = got.split(b"\r\n\r\n", 1)
                resp_head = resp_head.decode("latin-1")
                clen = 0
                for line in resp_head.split("\r\n")[1:]:
                    if line.lower().startswith("content-length:"):
                        clen = int(line.split(":", 1)[1])
            if resp_head is not None and len(got) >= clen:
                break
            try:
                d = sock.recv(65536)
            except OSError as e:
                if resp_head is None:
                    raise AssertionError(f"no HTTP answer ({e}); received {got[:200]!r}")
                break
            if not d:
                break
            got += d
        if resp_head is None:
            raise AssertionError(f"no complete HTTP answer within {timeout}s: {got[:200]!r}")
        status = int(resp_head.split(" ", 2)[1])
        return status, resp_head, got[:clen]
    finally:
        try:
            sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        sock.close()
