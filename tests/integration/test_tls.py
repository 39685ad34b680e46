"""test_tls.py — parleyd serving https and wss itself (--tls-cert/--tls-key).

parleyd's own TLS is tested in embedded mode (PARLEY_MODES without
"embedded" skips those tests); a cluster terminates TLS at HAProxy
(deploy/haproxy-tls.cfg), tested by test_cluster_wss_through_haproxy_tls.
Certificates are self-signed, made here with the openssl CLI; clients trust
exactly those certificates (python ssl, curl --cacert).
"""

import asyncio
import os
import shutil
import signal
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request

import aiohttp
import pytest
import websockets

from parleyd_proc import Server, finish, free_port
from pclient import WS, Api, async_test, msg_events

EMBEDDED = "embedded" in os.environ.get("PARLEY_MODES", "embedded,cluster").split(",")


def make_cert(d, name, cn, serial):
    crt, key = os.path.join(d, name + ".crt"), os.path.join(d, name + ".key")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "2", "-subj", f"/CN={cn}",
                    "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost",
                    "-set_serial", str(serial)], check=True, capture_output=True)
    return crt, key


class TlsServer(Server):
    """A Server on https/wss; clients trust the certificates in `trust`."""

    def __init__(self, binary, workdir, crt, key, trust, extra_args=()):
        super().__init__(binary, workdir, ["--tls-cert", crt, "--tls-key", key, *extra_args])
        self.trust = list(trust)

    @property
    def base_url(self):
        return f"https://{self.host}:{self.port}"

    @property
    def ws_url(self):
        return f"wss://{self.host}:{self.port}/ws"

    def ctx(self, **kw):
        c = ssl.create_default_context()
        for t in self.trust:
            c.load_verify_locations(cafile=t)
        for k, v in kw.items():
            setattr(c, k, v)
        return c

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"parleyd exited during startup\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1, context=self.ctx()) as r:
                    if r.status == 200:
                        return
            except OSError as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"parleyd (TLS) not ready: {last}\n{self.log_tail()}")


class TlsWS(WS):
    """pclient's WS over wss with a given ssl context."""

    def __init__(self, url, token, sslctx, origin=None, **kw):
        super().__init__(url, token, **kw)
        self.sslctx = sslctx
        self.origin = origin

    async def connect(self, expect_ready=True, timeout=10.0):
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        self.ws = await asyncio.wait_for(websockets.connect(
            self.url, ssl=self.sslctx, extra_headers=headers, origin=self.origin,
            max_size=None, ping_interval=None, open_timeout=timeout, close_timeout=2,
            compression=None), timeout)
        self._task = asyncio.ensure_future(self._reader())
        if expect_ready:
            self.ready = await self.wait_type("ready", timeout)
        return self


@pytest.fixture
def certs():
    d = tempfile.mkdtemp(prefix="parley-tls-")
    a = make_cert(d, "a", "parley-test-a", 1001)
    b = make_cert(d, "b", "parley-test-b", 2002)
    yield d, a, b
    shutil.rmtree(d, ignore_errors=True)


@pytest.fixture
def tls_factory(parleyd_bin, certs, request):
    if not EMBEDDED:
        pytest.skip("parleyd's own TLS is tested in embedded mode")
    servers = []
    d, a, b = certs

    def make(extra_args=(), pair=None):
        crt, key = pair or a
        s = TlsServer(parleyd_bin, tempfile.mkdtemp(prefix="parley-it-"), crt, key, [a[0], b[0]], extra_args)
        servers.append(s)
        s.start()
        return s

    yield make
    problems = finish(servers, request.node.name, False)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


def curl(server, *args):
    return subprocess.run(["curl", "-sS", "-v", "--max-time", "10", "--cacert", server.trust[0], *args,
                           server.base_url + "/healthz"], capture_output=True, text=True)


async def two_users(server, session):
    api = Api(server.base_url, session)
    a = await api.register("ta")
    b = await api.register("tb")
    conv = (await api.open_dm(a, b.id))["id"]
    return api, a, b, conv


@async_test(timeout=60)
async def test_https_rest_and_wss_chat(tls_factory):
    s = tls_factory()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=s.ctx())) as session:
        api, a, b, conv = await two_users(s, session)
        r = await api.req("GET", "/api/v1/conversations", token=a.token)
        assert r.status == 200
        assert r.headers.get("Strict-Transport-Security") == "max-age=31536000", r.headers
        assert r.headers.get("Referrer-Policy") == "no-referrer"
        wa = await TlsWS(s.ws_url, a.token, s.ctx(), name="a").connect()
        wb = await TlsWS(s.ws_url, b.token, s.ctx(), name="b").connect()
        try:
            # enough to span several TLS records each way
            body = "hello over wss " + "x" * 3000
            for i in range(20):
                await wa.send_msg(conv, f"{i} {body}")
            await wb.wait_for(lambda m: m.get("type") == "event" and str(m.get("body", "")).startswith("19 "),
                              what="the 20th message at b")
            got = [e["body"] for e in msg_events(wb.conv_events(conv))]
            assert got == [f"{i} {body}" for i in range(20)]
        finally:
            await wa.close()
            await wb.close()


def test_curl_tls13_alpn_hsts(tls_factory):
    s = tls_factory()
    r = curl(s)
    assert r.returncode == 0, r.stderr
    assert "SSL connection using TLSv1.3" in r.stderr, r.stderr
    assert "ALPN: server accepted http/1.1" in r.stderr, r.stderr
    assert "strict-transport-security: max-age=31536000" in r.stderr.lower(), r.stderr
    with socket.create_connection((s.host, s.port), timeout=5) as raw:
        with s.ctx().wrap_socket(raw, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.3"
            assert t.getpeercert()["serialNumber"] == "03E9"


def test_tls12_refused_by_default(tls_factory):
    s = tls_factory()
    r = curl(s, "--tlsv1.2", "--tls-max", "1.2")
    assert r.returncode != 0, r.stderr
    with socket.create_connection((s.host, s.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLError):
            s.ctx(maximum_version=ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="127.0.0.1")
    assert curl(s).returncode == 0            # still serving
    assert "tls error" in s.log_text()


def test_tls12_allowed_with_flag_and_hsts_flag(tls_factory):
    s = tls_factory(["--tls-min", "1.2", "--hsts-max-age", "600"])
    r = curl(s, "--tlsv1.2", "--tls-max", "1.2")
    assert r.returncode == 0, r.stderr
    assert "SSL connection using TLSv1.2" in r.stderr, r.stderr
    assert "strict-transport-security: max-age=600" in r.stderr.lower(), r.stderr
    with socket.create_connection((s.host, s.port), timeout=5) as raw:
        with s.ctx(maximum_version=ssl.TLSVersion.TLSv1_2).wrap_socket(raw, server_hostname="127.0.0.1") as t:
            assert t.version() == "TLSv1.2"


def test_bad_tls_flags_refused(parleyd_bin, certs):
    d, a, b = certs
    for args, why in ((["--tls-cert", a[0]], "go together"),
                      (["--tls-cert", a[0], "--tls-key", b[1]], "does not match"),
                      (["--tls-cert", a[0], "--tls-key", a[1], "--tls-min", "1.1"], "1.2 or 1.3"),
                      (["--tls-min", "1.1"], "1.2 or 1.3"),     # refused without TLS too
                      (["--tls-cert", os.path.join(d, "none.crt"), "--tls-key", a[1]], "certificate")):
        work = tempfile.mkdtemp(prefix="parley-it-")
        try:
            p = subprocess.run([parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", work, *args],
                               capture_output=True, text=True, timeout=20)
            assert p.returncode == 2, (args, p.returncode, p.stderr)
            assert why in p.stderr, (args, p.stderr)
        finally:
            shutil.rmtree(work, ignore_errors=True)


def peer_serial(s):
    with socket.create_connection((s.host, s.port), timeout=5) as raw:
        with s.ctx().wrap_socket(raw, server_hostname="127.0.0.1") as t:
            return t.getpeercert()["serialNumber"]


def wait_log(s, text, timeout=5.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in s.log_text():
            return
        time.sleep(0.05)
    raise AssertionError(f"{text!r} not logged\n{s.log_tail()}")


@async_test(timeout=60)
async def test_sighup_swaps_certificate(tls_factory, certs):
    d, a, b = certs
    live = (os.path.join(d, "live.crt"), os.path.join(d, "live.key"))
    shutil.copy(a[0], live[0])
    shutil.copy(a[1], live[1])
    s = tls_factory(pair=live)
    assert peer_serial(s) == "03E9"
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=s.ctx())) as session:
        api, ua, ub, conv = await two_users(s, session)
        old = await TlsWS(s.ws_url, ua.token, s.ctx(), name="old").connect()
        try:
            # a bad pair (b's certificate, a's key) is refused; a stays
            shutil.copy(b[0], live[0])
            s.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_log, s, "tls reload failed")
            assert await asyncio.to_thread(peer_serial, s) == "03E9"
            # the whole of b: new connections get it
            shutil.copy(b[1], live[1])
            s.proc.send_signal(signal.SIGHUP)
            await asyncio.to_thread(wait_log, s, "tls reloaded")
            assert await asyncio.to_thread(peer_serial, s) == "07D2"
            # the connection opened before the swap is up and still chats
            await old.ping()
            wb = await TlsWS(s.ws_url, ub.token, s.ctx(), name="new").connect()
            try:
                await old.send_msg(conv, "after the swap")
                await wb.wait_for(lambda m: m.get("type") == "event" and m.get("body") == "after the swap",
                                  what="the message sent after the swap")
            finally:
                await wb.close()
        finally:
            await old.close()


def read_until_eof(sock, timeout):
    """Bytes read until EOF (or a reset); None if the server kept it open."""
    sock.settimeout(0.5)
    deadline = time.monotonic() + timeout
    data = b""
    while time.monotonic() < deadline:
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            continue
        except ConnectionResetError:
            return data
        if not chunk:
            return data
        data += chunk
    return None


def test_plain_http_and_garbage_closed(tls_factory):
    s = tls_factory()
    for junk in (b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
                 b"\x16\x03\x01\x00\x05hello",               # a record that is no ClientHello
                 os.urandom(3000)):
        with socket.create_connection((s.host, s.port), timeout=5) as raw:
            raw.sendall(junk)
            got = read_until_eof(raw, 5)
            assert got is not None, f"still open after {junk[:20]!r}"
            assert b"HTTP/1.1" not in got             # no plaintext answer
    assert curl(s).returncode == 0


def test_slow_handshake_times_out(tls_factory):
    s = tls_factory()
    t0 = time.monotonic()
    with socket.create_connection((s.host, s.port), timeout=5) as raw:
        raw.sendall(b"\x16\x03\x01\x02\x00\x01")         # the start of a ClientHello, then nothing
        got = read_until_eof(raw, 16)
    assert got is not None, "a stalled handshake was never cut off"
    assert time.monotonic() - t0 < 15
    assert curl(s).returncode == 0


def test_session_resumption(tls_factory):
    s = tls_factory()
    ctx = s.ctx()

    def get(session=None):
        with socket.create_connection((s.host, s.port), timeout=5) as raw:
            with ctx.wrap_socket(raw, server_hostname="127.0.0.1", session=session) as t:
                t.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
                data = b""
                while True:
                    c = t.recv(4096)
                    if not c:
                        break
                    data += c
                assert data.startswith(b"HTTP/1.1 200"), data
                return t.session, t.session_reused

    sess, reused = get()
    assert not reused
    _, reused = get(sess)
    assert reused, "the ticket from the first connection did not resume"


@async_test(timeout=90)
async def test_wss_bulk_both_ways(tls_factory):
    """Parley's TLS 1.3 record layer (net/tls_rec.c) under load: two users
    pipeline large messages at each other over wss for a few seconds, every
    one arrives intact and in order on both sides."""
    s = tls_factory(["--rate-user-msgs", "0", "--rate-conv-msgs", "0"])
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=s.ctx())) as session:
        api, a, b, conv = await two_users(s, session)
        wa = await TlsWS(s.ws_url, a.token, s.ctx(), name="a").connect()
        wb = await TlsWS(s.ws_url, b.token, s.ctx(), name="b").connect()
        pad = "".join(chr(0x61 + (i * 7) % 26) for i in range(12000))
        sent = {"a": 0, "b": 0}

        async def pump(ws, tag):
            t_end = time.monotonic() + 3.0
            while time.monotonic() < t_end:
                reqs = [await ws.send_nowait(conv, f"{tag}{sent[tag] + i} {pad}") for i in range(16)]
                sent[tag] += 16
                for req, _ in reqs:
                    r = await ws.wait_reply(req, 20)
                    assert r.get("type") == "sent", r

        try:
            await asyncio.gather(pump(wa, "a"), pump(wb, "b"))
            assert sent["a"] >= 16 and sent["b"] >= 16
            for ws in (wa, wb):
                for tag in ("a", "b"):
                    last = f"{tag}{sent[tag] - 1} "
                    await ws.wait_for(lambda m: m.get("type") == "event" and
                                      str(m.get("body", "")).startswith(last), timeout=30,
                                      what=f"{last} at {ws.name}")
                bodies = [e["body"] for e in msg_events(ws.conv_events(conv))]
                for tag in ("a", "b"):
                    mine = [x for x in bodies if x.startswith(tag)]
                    assert mine == [f"{tag}{i} {pad}" for i in range(sent[tag])], f"{tag} at {ws.name}"
        finally:
            await wa.close()
            await wb.close()
    assert "tls error" not in s.log_text()


@pytest.mark.parametrize("openssl_records", ["0", "1"])
def test_key_update_with_openssl_s_client(tls_factory, openssl_records):
    """KeyUpdate over a real socket (Python's ssl cannot send one): openssl
    s_client's "K" (update_requested: we must answer with ours) and "k"
    between keep-alive requests; every response arrives. With Parley's
    record layer (the default) and with --tls-openssl-records 1."""
    s = tls_factory(["--tls-openssl-records", openssl_records])
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"{s.host}:{s.port}", "-CAfile", s.trust[0],
                          "-tls1_3", "-servername", "localhost"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    req = b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"
    try:
        for chunk in (req, b"K\n", req, b"k\n", b"K\n", req[:-2] + b"Connection: close\r\n\r\n"):
            time.sleep(0.4)
            p.stdin.write(chunk)
            p.stdin.flush()
        p.wait(timeout=10)            # the server closes after the last response (stdin's EOF would
        out, _ = p.communicate()      # make s_client quit before reading it)
    finally:
        if p.poll() is None:
            p.kill()
            p.wait()
    text = out.decode(errors="replace")
    assert text.count("HTTP/1.1 200") == 3, text
    assert text.count("KEYUPDATE") == 3, text
    assert "tls error" not in s.log_text()


@async_test(timeout=30)
async def test_origin_is_https_over_tls(tls_factory):
    s = tls_factory()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=s.ctx())) as session:
        api = Api(s.base_url, session)
        u = await api.register("to")
        ok = await TlsWS(s.ws_url, u.token, s.ctx(), origin=f"https://127.0.0.1:{s.port}").connect()
        await ok.close()
        with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
            await TlsWS(s.ws_url, u.token, s.ctx(), origin=f"http://127.0.0.1:{s.port}").connect()
        assert e.value.status_code == 403


@pytest.mark.cluster_only("HAProxy terminates TLS in front of the nodes")
@async_test(timeout=120)
async def test_cluster_wss_through_haproxy_tls(server_factory, certs):
    """deploy/haproxy.cfg + deploy/haproxy-tls.cfg in front of a cluster: wss
    chat through the TLS frontend, HSTS from HAProxy, and the nodes' Origin
    check expecting https (X-Forwarded-Proto)."""
    from cluster_proc import HAProxy, _wait, REPO as CREPO
    cl = server_factory()
    d, a, b = certs
    pem = os.path.join(d, "a.pem")
    with open(pem, "w") as f:
        f.write(open(a[0]).read() + open(a[1]).read())
    work = tempfile.mkdtemp(prefix="parley-hatls-")
    hp = HAProxy(work, cl.haproxy.servers)           # its own ports and admin socket
    main_cfg = os.path.join(work, "main.cfg")
    with open(main_cfg, "w") as f:
        f.write(hp.render())
    tls_port = free_port()
    tls_cfg = os.path.join(work, "tls.cfg")
    with open(os.path.join(CREPO, "deploy", "haproxy-tls.cfg")) as f:
        text = f.read()
    with open(tls_cfg, "w") as f:
        f.write(text.replace("__TLS_PORT__", str(tls_port)).replace("__TLS_PEM__", pem))
    chk = subprocess.run(["haproxy", "-c", "-f", main_cfg, "-f", tls_cfg], capture_output=True, text=True)
    assert chk.returncode == 0, chk.stdout + chk.stderr
    log = open(os.path.join(work, "haproxy.log"), "wb")
    proc = subprocess.Popen(["haproxy", "-db", "-f", main_cfg, "-f", tls_cfg], stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    ctx = ssl.create_default_context(cafile=a[0])
    base = f"https://127.0.0.1:{tls_port}"
    try:
        def up():
            assert proc.poll() is None, "haproxy exited"
            try:
                with urllib.request.urlopen(base + "/healthz", timeout=1, context=ctx) as r:
                    return r.status == 200
            except OSError:
                return False
        await asyncio.to_thread(_wait, up, 30, "no 200 for /healthz through HAProxy's TLS frontend")
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=ctx)) as session:
            api = Api(base, session)
            ua = await api.register("ha")
            ub = await api.register("hb")
            conv = (await api.open_dm(ua, ub.id))["id"]
            r = await api.req("GET", "/api/v1/conversations", token=ua.token)
            assert r.status == 200
            hdrs = {k.lower(): v for k, v in r.headers.items()}   # HAProxy lower-cases names
            assert hdrs.get("strict-transport-security") == "max-age=31536000", r.headers
            wss = f"wss://127.0.0.1:{tls_port}/ws"
            # generous waits: a cluster under a loaded machine (ASan, 3 nodes, HAProxy x2)
            wa = await TlsWS(wss, ua.token, ctx, origin=base, name="a").connect(timeout=30)
            wb = await TlsWS(wss, ub.token, ctx, name="b").connect(timeout=30)
            try:
                await wa.send_msg(conv, "through haproxy over tls", timeout=30)
                await wb.wait_for(lambda m: m.get("type") == "event" and m.get("body") == "through haproxy over tls",
                                  timeout=30, what="the message at b")
            finally:
                await wa.close()
                await wb.close()
            # the nodes see https: an http origin for the same host is foreign
            with pytest.raises(websockets.exceptions.InvalidStatusCode) as e:
                await TlsWS(wss, ua.token, ctx, origin=f"http://127.0.0.1:{tls_port}").connect(timeout=30)
            assert e.value.status_code == 403
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(work, ignore_errors=True)


def test_help_gives_each_default_once(parleyd_bin):
    p = subprocess.run([parleyd_bin, "--help"], capture_output=True, text=True, timeout=20)
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("  --")]
    assert len(lines) > 20, p.stdout
    for ln in lines:
        assert ln.count("(default:") == 1, ln
