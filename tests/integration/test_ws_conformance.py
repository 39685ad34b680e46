"""WebSocket conformance: the substance of the Autobahn TestSuite against a
real parleyd.

Each case names the Autobahn section it follows (1.x framing, 2.x ping/pong,
3.x reserved bits, 4.x opcodes, 5.x fragmentation, 6.x UTF-8, 7.x close,
9.x limits) and, in its docstring or table comment, the RFC 6455 section and
the behaviour it checks. Parley-specific cases (binary -> 1003, unmasked
client frames -> 1002, auth first -> 4001) come last.

Parley answers text messages at the application level, so the echo used by
Autobahn is replaced by a probe: after authenticating (`{"type":"auth"}` as
the first message), `{"type":"ping","req":N}` is answered with
`{"type":"pong","req":N}`. A message was delivered whole and intact exactly
when its pong comes back.

The client is raw: a `socket`, a masked-frame builder and a small frame
reader, so every bit on the wire is chosen here. Every read has a deadline;
a case may fail, it never hangs.

One parleyd serves the whole module (a fixture below, same arguments as
conftest.py's): starting and stopping one per case would cost more than the
cases. Each case still opens its own connection, and after every case the
server must still be running with no sanitizer report in its log.
"""

import base64
import hashlib
import json
import os
import socket
import struct
import tempfile
import time
import urllib.request

import pytest

from parleyd_proc import Server, finish  # the shared server process (conftest puts tests/ on the path)

OP_CONT, OP_TEXT, OP_BINARY = 0x0, 0x1, 0x2
OP_CLOSE, OP_PING, OP_PONG = 0x8, 0x9, 0xA
RSV1, RSV2, RSV3 = 4, 2, 1           # the rsv argument of frame(): bits 6..4 of byte 0

MAX_MSG = 1024 * 1024                # parleyd's default --max-ws-message
GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"

READ_TIMEOUT = 5.0                   # any single expected frame
FAST = 2.0                           # "fails fast": well before a client would give up
PROMPT_EOF = 1.5                     # below wsconn.c's 2 s close wait: a prompt close
QUIET = 0.3                          # how long "nothing more arrives" is watched


# --------------------------------------------------------------------------
# the server (one per module)


@pytest.fixture(scope="module")
def wsd(parleyd_bin):
    srv = Server(parleyd_bin, tempfile.mkdtemp(prefix="parley-wsc-"))
    srv.start()
    try:
        srv.token = _register(srv)
    except BaseException:
        finish([srv], "ws-conformance")
        raise
    yield srv
    problems = finish([srv], "ws-conformance")
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture(autouse=True)
def _server_still_healthy(wsd):
    """After each case: parleyd is alive and its log has no sanitizer report,
    so a crash or memory error is charged to the case that caused it."""
    yield
    time.sleep(0.02)         # let the server finish with the case's socket
    assert wsd.proc.poll() is None, "parleyd died during this case\n" + wsd.log_tail()
    rep = wsd.sanitizer_report()
    assert rep is None, "sanitizer report in the server log:\n" + rep


def _register(srv):
    name = "wsc_" + os.urandom(4).hex()
    body = json.dumps({"username": name, "password": "correct horse battery"}).encode()
    req = urllib.request.Request(srv.base_url + "/api/v1/auth/register", data=body,
                                 headers={"Content-Type": "application/json"}, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
        return json.loads(r.read())["access_token"]


# --------------------------------------------------------------------------
# frames


def frame(op, payload=b"", fin=True, rsv=0, mask=True, key=None, length=None, ext=None):
    """One frame, bit by bit. mask=False sends it unmasked (a client MUST
    mask, RFC 5.3). length overrides the announced payload length; ext forces
    the length encoding: 7, 16 or 64 bits (RFC 5.2 requires the minimal one)."""
    if isinstance(payload, str):
        payload = payload.encode()
    n = len(payload) if length is None else length
    b0 = (0x80 if fin else 0) | (rsv & 7) << 4 | (op & 0xF)
    mbit = 0x80 if mask else 0
    if ext is None:
        ext = 7 if n < 126 else 16 if n < 65536 else 64
    if ext == 7:
        head = struct.pack("!BB", b0, mbit | n)
    elif ext == 16:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if not mask:
        return head + payload
    key = os.urandom(4) if key is None else key
    return head + key + _xor(payload, key)


def _xor(data, key):
    if not data:
        return b""
    k = (key * (len(data) // 4 + 1))[:len(data)]
    return (int.from_bytes(data, "big") ^ int.from_bytes(k, "big")).to_bytes(len(data), "big")


def close_payload(code, reason=b""):
    return struct.pack("!H", code) + (reason.encode() if isinstance(reason, str) else reason)


def ping_json(req, size=None):
    """`{"type":"ping","req":req}`, padded with a "pad" string to exactly
    size bytes when size is given."""
    m = json.dumps({"type": "ping", "req": req}, separators=(",", ":")).encode()
    if size is None:
        return m
    base = m[:-1] + b',"pad":""}'
    assert size >= len(base), size
    return base[:-2] + b"x" * (size - len(base)) + b'"}'


class Frame:
    def __init__(self, fin, rsv, op, masked, payload):
        self.fin, self.rsv, self.op, self.masked, self.payload = fin, rsv, op, masked, payload

    def json(self):
        assert self.op == OP_TEXT, self
        return json.loads(self.payload.decode("utf-8"))

    def close_code(self):
        assert self.op == OP_CLOSE, self
        return struct.unpack("!H", self.payload[:2])[0] if len(self.payload) >= 2 else None

    def __repr__(self):
        p = self.payload if len(self.payload) <= 80 else self.payload[:80] + b"..."
        return f"Frame(op={self.op:#x}, fin={self.fin}, rsv={self.rsv}, {p!r})"


class Closed(Exception):
    """The server closed (or reset) the TCP connection."""


# --------------------------------------------------------------------------
# the raw client


class WS:
    def __init__(self, srv, auth=True):
        self.sock = socket.create_connection((srv.host, srv.port), timeout=READ_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.buf = bytearray()
        key = base64.b64encode(os.urandom(16))
        self.sock.sendall(b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\n"
                          b"Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                          b"Sec-WebSocket-Version: 13\r\n\r\n"
                          % (srv.host.encode(), srv.port, key))
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\r\n\r\n" not in self.buf:
            self._fill(deadline)
        end = self.buf.index(b"\r\n\r\n") + 4
        head = bytes(self.buf[:end]).decode("latin-1")
        del self.buf[:end]
        lines = head.split("\r\n")
        assert lines[0].startswith("HTTP/1.1 101 "), head
        fields = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                  for ln in lines[1:] if ":" in ln}
        # RFC 4.2.2 step 5: Sec-WebSocket-Accept = base64(SHA-1(key + GUID)).
        want = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        assert fields.get("sec-websocket-accept") == want, head
        assert fields.get("upgrade", "").lower() == "websocket", head
        if auth:
            self.send_msg(json.dumps({"type": "auth", "token": srv.token}))
            ready = self.read_frame()
            assert ready.op == OP_TEXT and ready.json()["type"] == "ready", ready

    # ---- writing ----
    def send(self, data):
        self.sock.sendall(data)

    def send_frame(self, op, payload=b"", **kw):
        self.send(frame(op, payload, **kw))

    def send_msg(self, text):
        self.send_frame(OP_TEXT, text)

    def send_chopped(self, data, step=1, pause=0.0005):
        """Writes data a few bytes at a time (TCP_NODELAY is on), so the
        server's reader sees frames split at every possible point."""
        for i in range(0, len(data), step):
            self.send(data[i:i + step])
            if pause:
                time.sleep(pause)

    def send_tolerant(self, data):
        """sendall that tolerates the server closing early (it may fail the
        connection before it has read everything)."""
        try:
            self.sock.sendall(data)
        except (BrokenPipeError, ConnectionResetError):
            pass

    # ---- reading ----
    def _fill(self, deadline):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError("no data from the server in time")
        self.sock.settimeout(left)
        try:
            d = self.sock.recv(1 << 16)
        except socket.timeout:
            raise TimeoutError("no data from the server in time") from None
        except ConnectionResetError:
            raise Closed("connection reset") from None
        if not d:
            raise Closed("EOF")
        self.buf += d

    def _need(self, n, deadline):
        while len(self.buf) < n:
            self._fill(deadline)

    def read_frame(self, timeout=READ_TIMEOUT):
        deadline = time.monotonic() + timeout
        self._need(2, deadline)
        b0, b1 = self.buf[0], self.buf[1]
        n, at = b1 & 0x7F, 2
        if n == 126:
            self._need(4, deadline)
            n, at = struct.unpack("!H", self.buf[2:4])[0], 4
        elif n == 127:
            self._need(10, deadline)
            n, at = struct.unpack("!Q", self.buf[2:10])[0], 10
        masked = bool(b1 & 0x80)
        if masked:
            at += 4
        self._need(at + n, deadline)
        payload = bytes(self.buf[at:at + n])
        if masked:
            payload = _xor(payload, bytes(self.buf[at - 4:at]))
        del self.buf[:at + n]
        f = Frame(bool(b0 & 0x80), (b0 >> 4) & 7, b0 & 0xF, masked, payload)
        # Server frames: never masked (RFC 5.1), no RSV without an extension
        # (5.2), never fragmented by parleyd (each reply is one frame).
        assert not f.masked and f.rsv == 0 and f.fin, f
        return f

    def read_frames(self, n, timeout=READ_TIMEOUT):
        return [self.read_frame(timeout) for _ in range(n)]

    def expect_pong_json(self, req, timeout=READ_TIMEOUT):
        f = self.read_frame(timeout)
        assert f.op == OP_TEXT, f"expected the pong reply to req {req}, got {f}"
        assert f.json() == {"type": "pong", "req": req}, f
        return f

    def probe(self, req=1000):
        """The echo: the connection is open and still delivers messages."""
        self.send_msg(ping_json(req))
        self.expect_pong_json(req)

    def expect_quiet(self, wait=QUIET):
        """Nothing arrives for `wait` seconds (the connection may stay open)."""
        try:
            f = self.read_frame(wait)
        except TimeoutError:
            return
        raise AssertionError(f"unexpected frame {f}")

    def read_until_close(self, timeout=READ_TIMEOUT):
        """Frames before the server's close frame, and the close frame."""
        deadline = time.monotonic() + timeout
        before = []
        while True:
            try:
                f = self.read_frame(max(0.0, deadline - time.monotonic()))
            except TimeoutError:
                raise AssertionError(f"no close frame within {timeout}s (got {before})") from None
            except Closed as e:
                raise AssertionError(
                    f"TCP closed without a close frame ({e}; got {before})") from None
            if f.op == OP_CLOSE:
                return before, f
            before.append(f)

    def expect_close(self, code, timeout=READ_TIMEOUT, before=()):
        """The server's next frames are `before` (ops or Frames checked by the
        caller) then a close with `code`. Returns (frames before, close)."""
        got, cf = self.read_until_close(timeout)
        assert [f.op for f in got] == [f if isinstance(f, int) else f.op for f in before], \
            f"frames before the close: {got}"
        assert cf.close_code() == code, f"expected close {code}, got {cf} (after {got})"
        if len(cf.payload) > 2:     # a reason, if any, is UTF-8 (RFC 5.5.1)
            cf.payload[2:].decode("utf-8")
        return got, cf

    def expect_eof(self, timeout=PROMPT_EOF):
        """The server closes TCP within timeout (RFC 7.1.1: after the close
        handshake the server closes the TCP connection first). Nothing but
        EOF may arrive after the close frame (RFC 5.5.1)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                self._fill(deadline)
            except Closed:
                assert not self.buf, f"bytes after the close frame: {bytes(self.buf[:60])!r}"
                return
            except TimeoutError:
                raise AssertionError(f"server did not close TCP within {timeout}s") from None

    def fail_expected(self, code, before=(), timeout=READ_TIMEOUT):
        """The server fails the connection (RFC 7.1.7): its close frame has
        `code`; we answer with a close and drop TCP (a client MAY, RFC 7.1.1).
        A failed connection lingers server side for at most the close wait;
        test_7_fail_then_close_reply_server_closes_tcp checks that part."""
        r = self.expect_close(code, timeout=timeout, before=before)
        self.send_tolerant(frame(OP_CLOSE, close_payload(code)))
        self.close()
        return r

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


@pytest.fixture
def ws(wsd):
    """An authenticated raw connection."""
    c = WS(wsd)
    yield c
    c.close()


def _probe_sequence(ws, frames_before_close):
    """Autobahn's pattern for a bad frame after good ones: the probe sent
    before is answered, the bad frame fails the connection, and a ping sent
    after it is not answered (nothing is processed after a failure, 7.1.7)."""
    ws.send(frame(OP_TEXT, ping_json(1)) + frames_before_close + frame(OP_PING, b"after"))
    ws.fail_expected(1002, before=[OP_TEXT])


# --------------------------------------------------------------------------
# the opening handshake (RFC 4.2; not an Autobahn section, but every case
# below depends on it). The refused handshakes are also a regression test:
# each one used to leak its request context and its connection, which the
# module's server reports (LeakSanitizer) when it stops.

SAMPLE_KEY = "dGhlIHNhbXBsZSBub25jZQ=="        # RFC 1.3's example


def _handshake(srv, method="GET", version="1.1", fields=None, omit=()):
    """Sends one upgrade request; returns (status, {lowercase name: value})."""
    f = {"Host": f"{srv.host}:{srv.port}", "Upgrade": "websocket", "Connection": "Upgrade",
         "Sec-WebSocket-Key": SAMPLE_KEY, "Sec-WebSocket-Version": "13"}
    f.update(fields or {})
    head = f"{method} /ws HTTP/{version}\r\n" + "".join(
        f"{k}: {v}\r\n" for k, v in f.items() if k not in omit) + "\r\n"
    with socket.create_connection((srv.host, srv.port), timeout=READ_TIMEOUT) as s:
        s.sendall(head.encode())
        buf = b""
        deadline = time.monotonic() + READ_TIMEOUT
        while b"\r\n\r\n" not in buf:
            s.settimeout(max(0.01, deadline - time.monotonic()))
            d = s.recv(4096)
            if not d:
                break
            buf += d
    lines = buf.split(b"\r\n\r\n")[0].decode("latin-1").split("\r\n")
    fields_out = {ln.split(":", 1)[0].strip().lower(): ln.split(":", 1)[1].strip()
                  for ln in lines[1:] if ":" in ln}
    return int(lines[0].split()[1]), fields_out


def test_handshake_accept_key(wsd):
    """RFC 4.2.2 step 5 with RFC 1.3's example: the key
    dGhlIHNhbXBsZSBub25jZQ== is answered with s3pPLMBiTxaQ9kYGzzhZRbK+xOo=,
    Upgrade: websocket and Connection: Upgrade in a 101."""
    status, f = _handshake(wsd)
    assert status == 101, f
    assert f["sec-websocket-accept"] == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=", f
    assert f["upgrade"].lower() == "websocket" and "upgrade" in f["connection"].lower(), f
    assert "sec-websocket-protocol" not in f, "a subprotocol the client did not offer"
    assert "sec-websocket-extensions" not in f, "no extension was offered"


def test_handshake_subprotocol(wsd):
    """RFC 4.2.2 step 5.4: the server selects at most one subprotocol, one
    the client offered: parley.v1 out of "chat, parley.v1"."""
    status, f = _handshake(wsd, fields={"Sec-WebSocket-Protocol": "chat, parley.v1"})
    assert status == 101 and f.get("sec-websocket-protocol") == "parley.v1", f


def test_handshake_wrong_version(wsd):
    """RFC 4.4: a version the server does not speak is answered with 426 and
    Sec-WebSocket-Version listing the versions it does (13)."""
    status, f = _handshake(wsd, fields={"Sec-WebSocket-Version": "8"})
    assert status == 426 and f.get("sec-websocket-version") == "13", (status, f)


@pytest.mark.parametrize("fields,omit", [
    ({}, ("Sec-WebSocket-Key",)),                        # no key
    ({"Sec-WebSocket-Key": "abc"}, ()),                   # not 16 bytes of base64
    ({"Sec-WebSocket-Key": "dGhlIHNhbXBsZSBub25jZQ"}, ()),  # 23 chars
    ({"sec-websocket-key": SAMPLE_KEY}, ()),              # the header twice (audit Z)
], ids=["no-key", "short-key", "unpadded-key", "two-keys"])
def test_handshake_bad_key(wsd, fields, omit):
    """RFC 4.2.1 item 5: Sec-WebSocket-Key is base64 of 16 bytes; a request
    without a valid one is not a handshake: 400, no upgrade (RFC 4.2.2).
    RFC 11.3.1: the header MUST NOT appear more than once."""
    status, _ = _handshake(wsd, fields=fields, omit=omit)
    assert status == 400


@pytest.mark.parametrize("method,version", [("POST", "1.1"), ("GET", "1.0")])
def test_handshake_not_get_11(wsd, method, version):
    """RFC 4.1/4.2.1 item 1: the handshake is an HTTP/1.1 (or later) GET;
    anything else is not upgraded."""
    status, _ = _handshake(wsd, method=method, version=version)
    assert 400 <= status < 500


# --------------------------------------------------------------------------
# 1.x framing


@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_1_text_payload_lengths(ws, size):
    """1.1.1-1.1.6: a text message of `size` bytes in one frame arrives whole.
    RFC 5.2: payload length in 7 bits (0-125), 16 bits (126 = 0x7E), or 64
    bits (127 = 0x7F). Size 0 is not JSON, so Parley answers a bad_json error
    (still proof that the empty message was delivered)."""
    if size == 0:
        ws.send_frame(OP_TEXT, b"")
        rep = ws.read_frame().json()
        assert rep["type"] == "error" and rep["code"] == "bad_json", rep
    else:
        ws.send_frame(OP_TEXT, ping_json(size, size=size))
        ws.expect_pong_json(size)
    ws.probe()


def test_1_1_8_text_65536_in_chunks(ws):
    """1.1.8: a 65536-byte text frame written in 997-byte pieces. RFC 5.2 and
    the reader's resumability: a frame split across reads is assembled."""
    ws.send_chopped(frame(OP_TEXT, ping_json(8, size=65536)), step=997, pause=0)
    ws.expect_pong_json(8)


def test_1_1_header_byte_by_byte(ws):
    """A frame with a 64-bit length whose header and masking key arrive one
    byte at a time, then its payload in one write (RFC 5.2 framing; the
    reader resumes at every byte of the header)."""
    f = frame(OP_TEXT, ping_json(9, size=70000))
    ws.send_chopped(f[:14], step=1)
    ws.send(f[14:])
    ws.expect_pong_json(9)


@pytest.mark.parametrize("size", [0, 125, 126, 127, 128, 65535, 65536])
def test_1_2_binary_payload_lengths(ws, size):
    """1.2.1-1.2.6: a binary message of `size` bytes. RFC 5.2 lengths as in
    1.1; RFC 5.6 binary data. Parley takes text only (docs/protocol.md): the
    whole message is read (no 1002: its framing is fine), then refused with
    1003 (RFC 7.4.1: data type it cannot accept). The client's close reply
    ends the handshake and the server closes TCP promptly (RFC 7.1.1)."""
    ws.send_frame(OP_BINARY, os.urandom(size))
    ws.expect_close(1003)
    ws.send_frame(OP_CLOSE, close_payload(1003))
    ws.expect_eof()


# --------------------------------------------------------------------------
# 2.x pings and pongs


@pytest.mark.parametrize("payload", [
    b"",                                   # 2.1: no payload
    b"Hello, world!",                      # 2.2: text payload
    bytes([0x00, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0x00, 0xff]),   # 2.3: binary payload
    b"*" * 125,                            # 2.4: the largest control payload
], ids=["2.1-empty", "2.2-text", "2.3-binary", "2.4-125-bytes"])
def test_2_ping_answered_with_same_payload(ws, payload):
    """RFC 5.5.2/5.5.3: a Pong answering a Ping carries the Ping's
    Application data unchanged."""
    ws.send_frame(OP_PING, payload)
    f = ws.read_frame()
    assert f.op == OP_PONG and f.payload == payload, f
    ws.probe()


def test_2_5_ping_126_bytes_fails(ws):
    """2.5: RFC 5.5: control frames MUST have a payload of 125 bytes or
    less; a 126-byte ping fails the connection with 1002 and is not answered."""
    ws.send_frame(OP_PING, b"*" * 126)
    ws.fail_expected(1002)


def test_2_6_ping_125_chopped(ws):
    """2.6: a 125-byte ping written one byte at a time is answered once
    whole (RFC 5.5.2; framing is independent of TCP segmentation, 5.4)."""
    p = bytes(range(125))
    ws.send_chopped(frame(OP_PING, p))
    f = ws.read_frame()
    assert f.op == OP_PONG and f.payload == p, f


@pytest.mark.parametrize("payload", [b"", b"unsolicited"], ids=["2.7-empty", "2.8-payload"])
def test_2_unsolicited_pong_ignored(ws, payload):
    """2.7/2.8: RFC 5.5.3: a Pong MAY be sent unsolicited (a heartbeat); no
    response is expected, and the connection goes on."""
    ws.send_frame(OP_PONG, payload)
    ws.probe()


def test_2_9_unsolicited_pong_then_ping(ws):
    """2.9: an unsolicited pong, then a ping: only the ping is answered."""
    ws.send(frame(OP_PONG, b"unsolicited") + frame(OP_PING, b"solicited"))
    f = ws.read_frame()
    assert f.op == OP_PONG and f.payload == b"solicited", f
    ws.probe()


@pytest.mark.parametrize("chopped", [False, True], ids=["2.10-one-write", "2.11-chopped"])
def test_2_ten_pings_ten_pongs_in_order(ws, chopped):
    """2.10/2.11: ten pings are answered by ten pongs, in order (RFC 5.5.2:
    each ping gets its pong; 5.4: frames are processed in order)."""
    data = b"".join(frame(OP_PING, b"ping %d" % i) for i in range(10))
    if chopped:
        ws.send_chopped(data, step=1, pause=0.0002)
    else:
        ws.send(data)
    got = [f.payload for f in ws.read_frames(10)]
    assert got == [b"ping %d" % i for i in range(10)]


# --------------------------------------------------------------------------
# 3.x reserved bits


@pytest.mark.parametrize("op,payload,rsv", [
    (OP_TEXT, ping_json(3), RSV1),                       # 3.1
    (OP_TEXT, ping_json(3), RSV2),                       # 3.2
    (OP_TEXT, ping_json(3), RSV1 | RSV2),                # 3.3
    (OP_TEXT, ping_json(3), RSV3),                       # 3.4
    (OP_BINARY, b"\x00\xff", RSV1 | RSV3),               # 3.5
    (OP_PING, b"ping", RSV2 | RSV3),                     # 3.6
    (OP_CLOSE, close_payload(1000), RSV1 | RSV2 | RSV3),  # 3.7
], ids=["3.1-text-rsv1", "3.2-text-rsv2", "3.3-text-rsv12", "3.4-text-rsv3",
        "3.5-binary-rsv13", "3.6-ping-rsv23", "3.7-close-rsv123"])
def test_3_reserved_bits_fail(ws, op, payload, rsv):
    """RFC 5.2: RSV1-3 MUST be 0 unless an extension defining them was
    negotiated (Parley negotiates none); otherwise the receiver MUST fail the
    connection: 1002. The frame itself is never acted on."""
    ws.send_frame(op, payload, rsv=rsv)
    ws.fail_expected(1002)


def test_3_2_reserved_bit_after_good_message(ws):
    """3.2: a good message, then a frame with RSV2, then a ping: the message
    is answered, the bad frame fails the connection (1002), and the ping after
    it is not answered (RFC 5.2, 7.1.7)."""
    _probe_sequence(ws, frame(OP_TEXT, ping_json(2), rsv=RSV2))


def test_3_4_reserved_bit_chopped(ws):
    """3.4: the same with every byte written on its own: the failure is
    decided from the first two bytes of the bad frame (RFC 5.2)."""
    ws.send_chopped(frame(OP_TEXT, ping_json(1)) + frame(OP_TEXT, ping_json(2), rsv=RSV3))
    ws.fail_expected(1002, before=[OP_TEXT])


# --------------------------------------------------------------------------
# 4.x opcodes


@pytest.mark.parametrize("op", [0x3, 0x4, 0x5, 0x6, 0x7, 0xB, 0xC, 0xD, 0xE, 0xF],
                         ids=lambda op: f"opcode-{op:#x}")
@pytest.mark.parametrize("payload", [b"", b"reserved"], ids=["empty", "payload"])
def test_4_reserved_opcode_fails(ws, op, payload):
    """4.1.x (0x3-0x7, reserved non-control) and 4.2.x (0xB-0xF, reserved
    control): RFC 5.2: an unknown opcode MUST fail the connection: 1002."""
    ws.send_frame(op, payload)
    ws.fail_expected(1002)


@pytest.mark.parametrize("op", [0x5, 0xD], ids=["4.1.3-nonctrl", "4.2.3-ctrl"])
def test_4_reserved_opcode_after_good_message(ws, op):
    """4.1.3/4.2.3: message, reserved opcode, ping: the message is answered,
    the connection fails with 1002, the ping after it is not answered."""
    _probe_sequence(ws, frame(op, b"x"))


# --------------------------------------------------------------------------
# 5.x fragmentation


@pytest.mark.parametrize("op", [OP_PING, OP_PONG], ids=["5.1-ping", "5.2-pong"])
def test_5_fragmented_control_frame_fails(ws, op):
    """5.1/5.2: RFC 5.5: control frames MUST NOT be fragmented; a ping or
    pong with FIN=0 fails the connection (1002) and is not answered."""
    ws.send(frame(op, b"frag", fin=False) + frame(OP_CONT, b"ment"))
    ws.fail_expected(1002)


def test_5_3_text_in_two_fragments(ws):
    """5.3: RFC 5.4: a message as a text frame with FIN=0 and a continuation
    with FIN=1 is delivered as one message."""
    m = ping_json(53)
    ws.send(frame(OP_TEXT, m[:10], fin=False) + frame(OP_CONT, m[10:]))
    ws.expect_pong_json(53)


def test_5_5_fragments_written_apart(ws):
    """5.4/5.5: the fragments arrive in separate writes, with pauses: the
    message is assembled across reads (RFC 5.4)."""
    m = ping_json(55)
    ws.send(frame(OP_TEXT, m[:7], fin=False))
    ws.expect_quiet(0.1)
    ws.send(frame(OP_CONT, m[7:20], fin=False))
    ws.expect_quiet(0.1)
    ws.send_chopped(frame(OP_CONT, m[20:]))
    ws.expect_pong_json(55)


def test_5_6_ping_between_fragments_answered_in_order(ws):
    """5.6-5.8: RFC 5.4: control frames MAY be injected in the middle of a
    fragmented message, and are answered at once: the pong for the ping sent
    between the fragments precedes the reply to the message, and the pong for
    a ping after the last fragment follows it."""
    m = ping_json(56)
    ws.send(frame(OP_TEXT, m[:9], fin=False) + frame(OP_PING, b"between") +
            frame(OP_CONT, m[9:]) + frame(OP_PING, b"after"))
    fs = ws.read_frames(3)
    assert [(f.op, f.payload if f.op == OP_PONG else f.json()) for f in fs] == [
        (OP_PONG, b"between"), (OP_TEXT, {"type": "pong", "req": 56}), (OP_PONG, b"after")], fs


def test_5_pong_between_fragments_ignored(ws):
    """RFC 5.4/5.5.3: an unsolicited pong between fragments changes nothing."""
    m = ping_json(57)
    ws.send(frame(OP_TEXT, m[:9], fin=False) + frame(OP_PONG, b"hb") + frame(OP_CONT, m[9:]))
    ws.expect_pong_json(57)
    ws.expect_quiet()


@pytest.mark.parametrize("fin", [True, False], ids=["5.9-fin1", "5.10-fin0"])
def test_5_continuation_without_start_fails(ws, fin):
    """5.9/5.10: RFC 5.4: a continuation frame with no message in progress
    fails the connection (1002)."""
    ws.send(frame(OP_CONT, b"orphan", fin=fin))
    ws.fail_expected(1002)


def test_5_11_continuation_without_start_chopped(ws):
    """5.11: the same, written one byte at a time."""
    ws.send_chopped(frame(OP_CONT, b"orphan", fin=False) + frame(OP_TEXT, ping_json(1)))
    ws.fail_expected(1002)


def test_5_13_continuation_after_complete_message(ws):
    """5.13-5.16: a continuation after a complete (FIN=1) message, behind a
    good message: the message is answered, then 1002 (RFC 5.4)."""
    m = ping_json(1)
    ws.send(frame(OP_TEXT, m[:4], fin=False) + frame(OP_CONT, m[4:]) +
            frame(OP_CONT, b"late", fin=False) + frame(OP_PING, b"after"))
    ws.fail_expected(1002, before=[OP_TEXT])


@pytest.mark.parametrize("op", [OP_TEXT, OP_BINARY], ids=["5.17-text", "5.18-binary"])
def test_5_new_message_while_fragmented_fails(ws, op):
    """5.17/5.18: RFC 5.4: the fragments of one message MUST NOT be
    interleaved with another message; a new text or binary frame while a
    message is in progress fails the connection (1002)."""
    m = ping_json(1)
    ws.send(frame(OP_TEXT, m[:5], fin=False) + frame(op, m, fin=True))
    ws.fail_expected(1002)


def test_5_19_many_fragments_pings_between_written_apart(ws):
    """5.19/5.20: five fragments with a ping after each of the first four,
    each written apart: four pongs, in order, then the message (RFC 5.4)."""
    m = ping_json(519, size=100)
    parts = [m[i * 20:(i + 1) * 20] for i in range(5)]
    for i, p in enumerate(parts):
        op = OP_TEXT if i == 0 else OP_CONT
        ws.send(frame(op, p, fin=(i == 4)))
        if i < 4:
            ws.send(frame(OP_PING, b"pong %d" % i))
            f = ws.read_frame()
            assert f.op == OP_PONG and f.payload == b"pong %d" % i, f
    ws.expect_pong_json(519)


def test_5_one_byte_fragments(ws):
    """RFC 5.4: a message MAY be fragmented into any number of frames: here
    one frame per byte (with a multi-byte code point split across three)."""
    m = json.dumps({"type": "ping", "req": 5, "x": "€uro"}, ensure_ascii=False).encode()
    data = b"".join(frame(OP_TEXT if i == 0 else OP_CONT, m[i:i + 1], fin=(i == len(m) - 1))
                    for i in range(len(m)))
    ws.send(data)
    ws.expect_pong_json(5)


def test_5_empty_fragments(ws):
    """6.1.2-like: empty first and last fragments (RFC 5.4 allows a
    zero-length frame anywhere in a message)."""
    ws.send(frame(OP_TEXT, b"", fin=False) + frame(OP_CONT, ping_json(6), fin=False) +
            frame(OP_CONT, b"", fin=False) + frame(OP_CONT, b""))
    ws.expect_pong_json(6)


def test_5_close_between_fragments(ws):
    """7.1.5-like: a close between fragments is answered (RFC 5.4: control
    frames between fragments; 5.5.1: close), the message in progress is
    dropped and nothing after the close is processed."""
    m = ping_json(7)
    ws.send(frame(OP_TEXT, m[:5], fin=False) + frame(OP_CLOSE, close_payload(1000)) +
            frame(OP_CONT, m[5:]))
    ws.expect_close(1000)
    ws.expect_eof()


def test_5_fragmented_binary_refused(ws):
    """RFC 5.4 + docs/protocol.md: a binary message in fragments is
    assembled (its framing is fine) and then refused with 1003."""
    ws.send(frame(OP_BINARY, b"\x01\x02", fin=False) + frame(OP_CONT, b"\x03"))
    ws.expect_close(1003)


# --------------------------------------------------------------------------
# 6.x UTF-8


VALID_TEXT = [
    "κόσμε",                    # 6.2.1: Greek, 2-byte sequences
    "\u0080\u07ff",            # 6.5.x: 2-byte boundaries
    "\u0800\uffff",            # 3-byte boundaries (U+FFFF: a noncharacter, still valid UTF-8)
    "\U00010000\U0010ffff",    # 4-byte boundaries, up to the last code point
    "\ud7ff\ue000\ufffd",      # around the surrogate range
    "🙂 ok",                    # emoji
]


@pytest.mark.parametrize("text", VALID_TEXT, ids=[f"valid{i}" for i in range(len(VALID_TEXT))])
@pytest.mark.parametrize("split", [False, True], ids=["whole", "1-byte-fragments"])
def test_6_valid_utf8_accepted(ws, text, split):
    """6.2/6.5: RFC 5.6 + 8.1: valid UTF-8 text is delivered, whole or with
    its code points split across fragments at every byte (validation is
    incremental across frames, not per frame)."""
    m = json.dumps({"type": "ping", "req": 6, "x": text}, ensure_ascii=False).encode()
    if split:
        ws.send(b"".join(frame(OP_TEXT if i == 0 else OP_CONT, m[i:i + 1], fin=(i == len(m) - 1))
                         for i in range(len(m))))
    else:
        ws.send_frame(OP_TEXT, m)
    ws.expect_pong_json(6)


INVALID_UTF8 = {
    "6.3.1-kosme-surrogate": b"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xed\xa0\x80edited",
    "6.6-lone-continuation-80": b"\x80",
    "6.6-lone-continuation-bf": b"\xbf",
    "6.6-continuations": b"\x80\xbf\x80\xbf",
    "6.8-start-c0-space": b"\xc0 ",
    "6.8-start-e0-space": b"\xe0 ",
    "6.8-start-f0-space": b"\xf0 ",
    "6.8-start-f8-space": b"\xf8 ",
    "6.8-start-fc-space": b"\xfc ",
    "6.9-truncated-2": b"\xdf",
    "6.9-truncated-3": b"\xef\xbf",
    "6.9-truncated-4": b"\xf7\xbf\xbf",
    "6.10-fe": b"\xfe",
    "6.10-ff": b"\xff",
    "6.10-fefeffff": b"\xfe\xfe\xff\xff",
    "6.11-overlong-slash-2": b"\xc0\xaf",
    "6.11-overlong-slash-3": b"\xe0\x80\xaf",
    "6.11-overlong-slash-4": b"\xf0\x80\x80\xaf",
    "6.11-overlong-slash-5": b"\xf8\x80\x80\x80\xaf",
    "6.12-overlong-max-2": b"\xc1\xbf",
    "6.12-overlong-max-3": b"\xe0\x9f\xbf",
    "6.12-overlong-max-4": b"\xf0\x8f\xbf\xbf",
    "6.13-surrogate-d800": b"\xed\xa0\x80",
    "6.13-surrogate-db7f": b"\xed\xad\xbf",
    "6.13-surrogate-dc00": b"\xed\xb0\x80",
    "6.13-surrogate-dfff": b"\xed\xbf\xbf",
    "6.14-surrogate-pair": b"\xed\xa0\x80\xed\xb0\x80",
    "6.15-above-10ffff-f4": b"\xf4\x90\x80\x80",
    "6.15-above-10ffff-f5": b"\xf5\x80\x80\x80",
    "6.15-above-10ffff-f7": b"\xf7\xbf\xbf\xbf",
}


def _one_byte_fragments(m):
    return b"".join(frame(OP_TEXT if i == 0 else OP_CONT, m[i:i + 1], fin=(i == len(m) - 1))
                    for i in range(len(m)))


def test_6_valid_utf8_split_at_every_byte(ws):
    """6.2.2: the same valid message cut in two fragments at every possible
    byte, so each multi-byte code point is split at each of its positions,
    and the first fragment often ends mid-sequence (RFC 5.4, 8.1)."""
    m = json.dumps({"type": "ping", "req": 62, "x": "κόσμε€🙂􏿿"},
                   ensure_ascii=False).encode()
    ws.send(b"".join(frame(OP_TEXT, m[:i], fin=False) + frame(OP_CONT, m[i:])
                     for i in range(1, len(m))))
    for _ in range(1, len(m)):
        ws.expect_pong_json(62)


@pytest.mark.parametrize("bad", list(INVALID_UTF8.values()), ids=list(INVALID_UTF8))
@pytest.mark.parametrize("split", [False, True], ids=["whole", "1-byte-fragments"])
def test_6_invalid_utf8_fails(ws, bad, split):
    """6.3-6.21: RFC 8.1: a text message that is not valid UTF-8 (RFC 3629:
    no overlongs, no surrogates, nothing above U+10FFFF) MUST fail the
    connection: 1007, and the message is not delivered. Split into 1-byte
    fragments, the bad bytes all travel in continuation frames (6.4-6.6
    "fragmented" variants)."""
    m = b'{"type":"ping","req":6,"x":"' + bad + b'"}'
    ws.send(_one_byte_fragments(m) if split else frame(OP_TEXT, m))
    ws.fail_expected(1007)


@pytest.mark.parametrize("where", ["middle", "last"])
def test_6_invalid_utf8_in_continuation(ws, where):
    """RFC 8.1 over RFC 5.4: a bad byte in a middle or last continuation
    frame, after a valid first fragment, fails the connection: 1007."""
    first, last = frame(OP_TEXT, b'{"type":"ping",', fin=False), frame(OP_CONT, b'"x":"ok"}')
    if where == "middle":
        ws.send(first + frame(OP_CONT, b'"y":"\xc3\x28",', fin=False) + last)
    else:
        ws.send(first + frame(OP_CONT, b'"x":"\xff"}'))
    ws.fail_expected(1007)


def test_6_invalid_utf8_at_end_of_message(ws):
    """6.9-like: a sequence cut off by the end of the message (FIN=1) is
    invalid even though each byte so far could start a valid one (RFC 8.1)."""
    ws.send(frame(OP_TEXT, b'{"type":"ping","req":6}\xe2\x82', fin=False) + frame(OP_CONT, b""))
    ws.fail_expected(1007)


@pytest.mark.parametrize("first,second", [
    (b'{"type":"ping","x":"\xf0\x90', b'\x80("}'),   # F0 90 80 then '(' (needs a continuation)
    (b'{"type":"ping","x":"\xed', b'\xa0\x80"}'),    # a surrogate split after its lead byte
    (b'{"type":"ping","x":"\xe0', b'\x80\xaf"}'),    # an overlong split after its lead byte
], ids=["bad-continuation", "surrogate", "overlong"])
def test_6_invalid_utf8_split_across_fragments(ws, first, second):
    """6.4-like: the invalid sequence starts in one fragment and is only
    known to be invalid in the next: UTF-8 state is carried across frames
    (RFC 8.1 applies to the message, RFC 5.4 fragments it)."""
    ws.send(frame(OP_TEXT, first, fin=False) + frame(OP_CONT, second))
    ws.fail_expected(1007)


def test_6_4_invalid_utf8_in_non_final_fragment_fails_fast(ws):
    """6.4.1/6.4.2: an invalid byte in a first fragment (FIN=0) fails the
    connection at once, without waiting for the rest of the message (RFC 8.1
    and the pitfalls note: fail at the first bad byte)."""
    ws.send_frame(OP_TEXT, b'{"type":"ping","x":"\xf4\x90\x80\x80', fin=False)
    ws.fail_expected(1007, timeout=FAST)


def test_6_4_3_invalid_utf8_mid_frame_fails_fast(ws):
    """6.4.3/6.4.4: a single text frame announced as 1000 bytes whose first
    bytes hold an invalid sequence fails with 1007 before the rest of the
    frame is sent."""
    payload = b'{"type":"ping","x":"\xce\xba\xe1\xbd\xb9\xcf\x83\xce\xbc\xce\xb5\xf4\x90\x80\x80'
    full = frame(OP_TEXT, payload + b"x" * (1000 - len(payload)), key=b"\x11\x22\x33\x44")
    ws.send(full[:6 + len(payload)])
    ws.fail_expected(1007, timeout=FAST)


# --------------------------------------------------------------------------
# 7.x close handling


def test_7_1_1_message_then_close(ws):
    """7.1.1: a message then a close: the message is answered, the close is
    echoed (RFC 5.5.1), then the server closes TCP (RFC 7.1.1)."""
    ws.send(frame(OP_TEXT, ping_json(71)) + frame(OP_CLOSE, close_payload(1000)))
    ws.expect_pong_json(71)
    ws.expect_close(1000)
    ws.expect_eof()


@pytest.mark.parametrize("after", [
    frame(OP_CLOSE, close_payload(1001)),      # 7.1.2: a second close
    frame(OP_PING, b"late"),                   # 7.1.3: a ping
    frame(OP_TEXT, ping_json(72)),             # 7.1.4: a message
    frame(OP_TEXT, ping_json(72)[:5], fin=False) + frame(OP_CONT, ping_json(72)[5:]),  # 7.1.5
], ids=["7.1.2-close", "7.1.3-ping", "7.1.4-text", "7.1.5-fragments"])
def test_7_data_after_close_ignored(ws, after):
    """7.1.2-7.1.5: RFC 5.5.1: after a close, nothing more is processed:
    only the close is answered, then TCP is closed. Sent in one write, and
    again with the tail written after the echo."""
    ws.send(frame(OP_CLOSE, close_payload(1000)) + after)
    ws.expect_close(1000)
    ws.expect_eof()


def test_7_1_6_data_after_close_separate_write(ws):
    """7.1.6-like: the tail comes in a later write, after the server has
    answered the close: it is ignored and TCP still closes."""
    ws.send_frame(OP_CLOSE, close_payload(1000))
    ws.expect_close(1000)
    ws.send_tolerant(frame(OP_TEXT, ping_json(73)) + frame(OP_PING, b"late"))
    ws.expect_eof()


def test_7_3_1_close_empty_payload(ws):
    """7.3.1: a close with no payload (RFC 5.5.1: the body is optional) is
    answered by a close with no status or 1000, never 1005 on the wire
    (RFC 7.4.1: 1005 MUST NOT be sent), then TCP closes."""
    ws.send_frame(OP_CLOSE, b"")
    got, cf = ws.read_until_close()
    assert not got, got
    assert cf.payload == b"" or cf.close_code() == 1000, cf
    ws.expect_eof()


def test_7_3_2_close_one_byte_payload_fails(ws):
    """7.3.2: RFC 5.5.1: if there is a body, its first two bytes are the
    status code; a 1-byte body is malformed: 1002."""
    ws.send_frame(OP_CLOSE, b"\x03")
    ws.fail_expected(1002)


@pytest.mark.parametrize("reason", [b"", b"Hello World!", b"*" * 123, "κόσμε".encode()],
                         ids=["7.3.3-no-reason", "7.3.4-reason", "7.3.5-123-byte-reason",
                              "utf8-reason"])
def test_7_3_close_with_code_and_reason_echoed(ws, reason):
    """7.3.3-7.3.5: RFC 5.5.1: the endpoint answers a close with a close,
    echoing the status code it received; the reason (any valid UTF-8, up to
    123 bytes) need not be echoed but must be valid UTF-8 if present."""
    ws.send_frame(OP_CLOSE, close_payload(1000, reason))
    _, cf = ws.expect_close(1000)
    assert cf.payload[2:] in (b"", reason), cf
    ws.expect_eof()


def test_7_3_6_close_124_byte_reason_fails(ws):
    """7.3.6: a close whose payload is 126 bytes is a control frame over 125
    bytes (RFC 5.5): 1002."""
    ws.send_frame(OP_CLOSE, close_payload(1000, b"*" * 124))
    ws.fail_expected(1002)


def test_7_5_1_close_reason_invalid_utf8(ws):
    """7.5.1: RFC 5.5.1 + 8.1: the close reason is UTF-8; an invalid one
    fails the connection with 1007."""
    ws.send_frame(OP_CLOSE, close_payload(1000, INVALID_UTF8["6.3.1-kosme-surrogate"]))
    ws.fail_expected(1007)


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011,
                                  3000, 3999, 4000, 4999])
def test_7_7_valid_close_codes_echoed(ws, code):
    """7.7.x: RFC 7.4.1/7.4.2: codes a peer may send (the 1000-1011 defined
    ones except 1004-1006, and 3000-4999) are accepted; the close is answered
    with the same code (RFC 5.5.1) and TCP closes."""
    ws.send_frame(OP_CLOSE, close_payload(code, b"bye"))
    ws.expect_close(code)
    ws.expect_eof()


@pytest.mark.parametrize("code", [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000, 65535])
def test_7_9_invalid_close_codes_fail(ws, code):
    """7.9.x: RFC 7.4.1/7.4.2: 0-999 are unused, 1004 is reserved, 1005,
    1006 and 1015 MUST NOT be set in a close frame, 1016-2999 are unassigned
    and >= 5000 undefined: the connection fails with 1002."""
    ws.send_frame(OP_CLOSE, close_payload(code))
    ws.fail_expected(1002)


def test_7_server_initiated_close_answered(ws):
    """RFC 5.5.1/7.1.1: after the server sends a close (here 1003 for a
    binary message), it processes no more data; the client's close completes
    the handshake and the server closes TCP promptly."""
    ws.send(frame(OP_BINARY, b"\x00") + frame(OP_TEXT, ping_json(74)) + frame(OP_PING, b"x"))
    ws.expect_close(1003)            # no pong JSON, no pong frame before the close
    ws.send_frame(OP_CLOSE, close_payload(1003))
    ws.expect_eof()


def test_7_server_close_unanswered_times_out(ws):
    """RFC 7.1.1 / pitfalls.md: a peer that never answers the server's
    close is cut off after a timeout (parleyd: 2 s)."""
    ws.send_frame(OP_BINARY, b"\x00")
    ws.expect_close(1003)
    t0 = time.monotonic()
    ws.expect_eof(timeout=5.0)
    assert time.monotonic() - t0 >= 1.0, "closed before giving the peer time to answer"


def test_7_fail_then_close_reply_server_closes_tcp(ws):
    """RFC 7.1.7: after failing the connection (here 1002) the server sends
    its close and then closes TCP without processing anything more, the
    client's close reply included; it does so within the close wait."""
    ws.send_frame(OP_TEXT, ping_json(1), rsv=RSV1)
    ws.expect_close(1002)
    ws.send_frame(OP_CLOSE, close_payload(1002))
    ws.expect_eof(timeout=5.0)


# --------------------------------------------------------------------------
# 9.x limits (parleyd's --max-ws-message, 1 MiB by default)


@pytest.mark.parametrize("size", [64 * 1024, 256 * 1024, MAX_MSG - 1, MAX_MSG],
                         ids=["64KiB", "256KiB", "limit-minus-1", "limit"])
def test_9_1_large_text_in_one_frame(ws, size):
    """9.1.x: text messages up to the limit in one frame are delivered (RFC
    5.2 64-bit lengths, 10.4: an implementation MAY limit frame and message
    sizes; at the limit itself the message is still accepted)."""
    ws.send_frame(OP_TEXT, ping_json(size, size=size))
    ws.expect_pong_json(size, timeout=15)


@pytest.mark.parametrize("chunk", [997, 65536], ids=["997-byte-fragments", "64KiB-fragments"])
def test_9_4_limit_message_fragmented(ws, chunk):
    """9.4.x: a message of exactly the limit in many fragments is assembled
    and delivered (RFC 5.4; the limit applies to the message, 10.4)."""
    m = ping_json(94, size=MAX_MSG)
    parts = [m[i:i + chunk] for i in range(0, len(m), chunk)]
    ws.send(b"".join(frame(OP_TEXT if i == 0 else OP_CONT, p, fin=(i == len(parts) - 1))
                     for i, p in enumerate(parts)))
    ws.expect_pong_json(94, timeout=15)


def test_9_over_limit_frame_fails_before_payload(ws):
    """RFC 10.4 + 7.4.1: a message over the limit fails with 1009 as soon as
    the frame header announces it: only the header is sent here, and the
    close comes without the payload."""
    ws.send(frame(OP_TEXT, b"", length=MAX_MSG + 1))
    ws.fail_expected(1009, timeout=FAST)


def test_9_over_limit_fragments_fail_before_payload(ws):
    """RFC 10.4: the limit counts the whole message: half the limit in a
    first fragment, then a continuation header taking it over: 1009 before
    that continuation's payload is sent."""
    ws.send(frame(OP_TEXT, b"x" * (MAX_MSG // 2), fin=False) +
            frame(OP_CONT, b"", length=MAX_MSG // 2 + 1))
    ws.fail_expected(1009, timeout=FAST)


def test_9_full_limit_then_one_more_byte_fails(ws):
    """The exact limit in a first fragment, then a 1-byte continuation
    header: 1009 (RFC 10.4), before the byte is sent."""
    ws.send_tolerant(frame(OP_TEXT, ping_json(1, size=MAX_MSG), fin=False) +
                     frame(OP_CONT, b"", length=1))
    ws.fail_expected(1009, timeout=10)


def test_9_huge_length_fails_fast(ws):
    """A header announcing 2^62 bytes: 1009 at once, nothing allocated."""
    ws.send(frame(OP_TEXT, b"", length=1 << 62))
    ws.fail_expected(1009, timeout=FAST)


def test_9_length_with_top_bit_fails(ws):
    """RFC 5.2: in the 64-bit length the most significant bit MUST be 0: 1002."""
    ws.send(frame(OP_TEXT, b"", length=1 << 63))
    ws.fail_expected(1002, timeout=FAST)


@pytest.mark.parametrize("n,ext", [(5, 16), (125, 16), (200, 64), (65535, 64)],
                         ids=["5-in-16", "125-in-16", "200-in-64", "65535-in-64"])
def test_9_non_minimal_length_fails(ws, n, ext):
    """RFC 5.2: "the minimal number of bytes MUST be used to encode the
    length": a longer encoding than needed fails the connection (1002)."""
    ws.send(frame(OP_TEXT, ping_json(1, size=max(n, 40))[:n], ext=ext))
    ws.fail_expected(1002)


# --------------------------------------------------------------------------
# Parley specifics


@pytest.mark.parametrize("op,payload", [
    (OP_TEXT, ping_json(1)), (OP_PING, b"p"), (OP_CLOSE, close_payload(1000)),
    (OP_BINARY, b"\x00"),
], ids=["text", "ping", "close", "binary"])
def test_unmasked_client_frame_fails(ws, op, payload):
    """RFC 5.1/5.3: a client MUST mask every frame; a server MUST close the
    connection on an unmasked frame (Parley: 1002, the frame not acted on)."""
    ws.send_frame(op, payload, mask=False)
    ws.fail_expected(1002)


def test_zero_masking_key_is_fine(ws):
    """RFC 5.3: the masking key is any 32-bit value, zero included."""
    ws.send_frame(OP_TEXT, ping_json(8), key=b"\x00\x00\x00\x00")
    ws.expect_pong_json(8)


def test_message_before_auth_closes_4001(wsd):
    """docs/protocol.md: anything but `auth` as the first message closes with
    4001 (a private-use code, RFC 7.4.2)."""
    c = WS(wsd, auth=False)
    try:
        c.send_msg(ping_json(1))
        c.expect_close(4001)
        c.send_frame(OP_CLOSE, close_payload(4001))
        c.expect_eof()
    finally:
        c.close()


def test_ping_frame_before_auth_answered(wsd):
    """RFC 5.5.2: ping/pong belongs to the WebSocket, not the application:
    a ping frame is answered before authentication too."""
    c = WS(wsd, auth=False)
    try:
        c.send_frame(OP_PING, b"early")
        f = c.read_frame()
        assert f.op == OP_PONG and f.payload == b"early", f
    finally:
        c.close()


def test_ping_flood_without_reading_is_a_slow_consumer(wsd):
    """Audit Z: pongs count against --max-outbound like every frame. A client
    that pinged and read nothing had 149 MB of pongs queued and was never
    closed; now, past the bound, it gets the slow consumer's 4008
    (protocol.md "Backpressure"), before authentication too."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)   # the kernel holds little for us
    s.connect((wsd.host, wsd.port))
    c = WS.__new__(WS)
    c.sock, c.buf = s, bytearray()
    c.send(b"GET /ws HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
           b"Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n"
           % (wsd.host.encode(), wsd.port, SAMPLE_KEY.encode()))
    deadline = time.monotonic() + READ_TIMEOUT
    while b"\r\n\r\n" not in c.buf:
        c._fill(deadline)
    assert c.buf.startswith(b"HTTP/1.1 101 "), bytes(c.buf[:80])
    del c.buf[:c.buf.index(b"\r\n\r\n") + 4]
    n = 60000                                   # 7.6 MB of pongs: past 1 MiB and the kernel's buffers
    batch = frame(OP_PING, b"p" * 125) * 1000
    for _ in range(n // 1000):
        c.send_tolerant(batch)
    try:
        got, cf = c.read_until_close(timeout=20)
        assert cf.close_code() == 4008, cf
        assert all(f.op == OP_PONG for f in got) and len(got) < n, len(got)
    finally:
        c.close()


# --------------------------------------------------------------------------
# two syncs in one read (audit R3)


def _rest(srv, method, path, body=None):
    req = urllib.request.Request(srv.base_url + path, method=method,
                                 data=json.dumps(body).encode() if body is not None else None,
                                 headers={"Authorization": "Bearer " + srv.token,
                                          "Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as r:
        return json.loads(r.read() or b"null")


def test_two_syncs_in_one_write_each_get_their_replay_and_synced(wsd):
    """Audit R3: `sync {G:0}` and `sync {G:15}` arriving in one TCP write:
    the second moved the replay the first had started past 1..15, and only
    one `synced` came, so a client counting them waited for ever. Now the
    replay goes on from where the first left it, and each sync gets its
    `synced` after every event it asked for."""
    conv = _rest(wsd, "POST", "/api/v1/conversations", {"kind": "group", "title": "two syncs", "members": []})["id"]
    for i in range(20):
        _rest(wsd, "POST", f"/api/v1/conversations/{conv}/messages", {"client_msg_id": f"ts{i}", "body": f"m{i}"})
    last = _rest(wsd, "GET", f"/api/v1/conversations/{conv}")["last_seq"]
    for _ in range(3):
        ws = WS(wsd)
        one = json.dumps({"type": "sync", "cursors": {str(conv): 0}}).encode()
        two = json.dumps({"type": "sync", "cursors": {str(conv): 15}}).encode()
        ws.send(frame(OP_TEXT, one) + frame(OP_TEXT, two))
        seqs, synced = [], []
        while len(synced) < 2:
            f = ws.read_frame()
            m = f.json()
            if m.get("type") == "event" and m.get("conversation") == conv:
                seqs.append(m["seq"])
            elif m.get("type") == "synced" and m.get("conversation") == conv:
                synced.append(m["seq"])
        assert synced == [last, last], synced
        assert set(range(1, last + 1)) <= set(seqs), f"the first sync's events are missing: {seqs}"
        ws.sock.close()
