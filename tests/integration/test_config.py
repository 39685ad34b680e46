"""Configuration as the README documents it: the listen address, the data
directory, --help, and what `make run` passes. Each test starts parleyd
itself (no fixture server: these are about starting)."""

import json
import os
import queue
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.request

import pytest

from parleyd_proc import free_port

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def run(parleyd_bin, *args, env=None, timeout=20):
    return subprocess.run([parleyd_bin, *args], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


def stop(p, work, keep=False):
    """SIGTERM to a parleyd started here (kill after 20 s), its data
    directory removed (unless keep); returns what it wrote on its one
    captured stream."""
    p.send_signal(signal.SIGTERM)
    try:
        out, err = p.communicate(timeout=20)
    except subprocess.TimeoutExpired:
        p.kill()
        out, err = p.communicate()
    if not keep:
        shutil.rmtree(work, ignore_errors=True)
    return err if err is not None else out


def test_listen_takes_a_host_name(parleyd_bin):
    """`localhost:PORT` is served on 127.0.0.1 (before: "invalid argument")."""
    work = tempfile.mkdtemp(prefix="parley-it-")
    port = free_port()
    p = subprocess.Popen([parleyd_bin, "--listen", f"localhost:{port}", "--data-dir", work,
                          "--log-level", "warn"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline, status = time.monotonic() + 20, None
        while time.monotonic() < deadline and p.poll() is None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as r:
                    status = r.status
                    break
            except OSError:
                time.sleep(0.1)
        assert status == 200, (p.poll(), p.stderr.read() if p.poll() is not None else "")
    finally:
        err = stop(p, work)
    assert p.returncode == 0, err
    assert "ERROR: AddressSanitizer" not in err and "runtime error" not in err, err


@pytest.mark.parametrize("level", ["info", "error"])
def test_port_0_takes_a_free_port_and_the_log_names_it(parleyd_bin, level):
    """`--listen 127.0.0.1:0` serves on a port the kernel picks, and the
    `listening` line names that port (audit X: it said `127.0.0.1:0`), at
    every --log-level (audit N3: not at warn or error). The files it makes
    in a data directory made by someone else are its own user's alone
    (audit N3: 0644)."""
    work = tempfile.mkdtemp(prefix="parley-it-")
    os.chmod(work, 0o755)
    p = subprocess.Popen([parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", work, "--log-level", level],
                         stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        listen = None
        deadline = time.monotonic() + 20
        lines = queue.Queue()                          # a reader thread: fail in time, never hang
        threading.Thread(target=lambda: [lines.put(ln) for ln in iter(p.stdout.readline, "")] and None,
                         daemon=True).start()
        while time.monotonic() < deadline and listen is None:
            try:
                line = lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if not line:
                break
            if '"listening"' in line:
                listen = json.loads(line)["listen"]
        assert listen and listen.startswith("127.0.0.1:"), listen
        port = int(listen.rsplit(":", 1)[1])
        assert port > 0, listen
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5) as r:
            assert r.status == 200
        for f in ("parley.db", "search.db", "token.key"):
            mode = os.stat(os.path.join(work, f)).st_mode & 0o777
            assert mode & 0o077 == 0, (f, oct(mode))
    finally:
        out = stop(p, work)
    assert p.returncode == 0, out
    assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out, out


def test_bad_listen_and_data_dir_are_refused_clearly(parleyd_bin):
    """A malformed or unresolvable --listen, an unknown --store and a
    --web-root that is no directory are bad values: exit 2, before the data
    directory is touched (README "Configuration"); a data directory that
    cannot be made is exit 1."""
    work = tempfile.mkdtemp(prefix="parley-it-")
    try:
        data = os.path.join(work, "data")
        not_addr = "not host:port or [v6]:port (a port from 0 to 65535)"
        for listen, why in (("nosuchhost.invalid:8080", "no such host"), ("127.0.0.1:80x", not_addr),
                            (":8080", not_addr), ("127.0.0.1", not_addr), ("127.0.0.1:99999", not_addr),
                            # a sign, a blank, an IPv6 address without brackets (they were taken: audit K2 F4)
                            ("127.0.0.1:+8080", not_addr), ("127.0.0.1:-1", not_addr), ("127.0.0.1: 8080", not_addr),
                            ("::1:8080", not_addr)):
            p = run(parleyd_bin, "--listen", listen, "--data-dir", data)
            assert p.returncode == 2 and p.stderr == f"parleyd: --listen {listen}: {why}\n", (listen, p.stderr)
        port = f"127.0.0.1:{free_port()}"
        p = run(parleyd_bin, "--listen", port, "--data-dir", data, "--store", "mysql://x")
        assert p.returncode == 2 and p.stderr.startswith("parleyd: --store mysql://x: unknown store"), p.stderr
        # libpq's other spelling is a PostgreSQL store (README): not refused as a value
        p = run(parleyd_bin, "--listen", port, "--data-dir", os.path.join(work, "pgdata"), "--store",
                f"postgresql://x@127.0.0.1:{free_port()}/d")
        assert p.returncode == 1 and "cannot connect to PostgreSQL" in p.stderr, p.stderr
        for root, why in ((os.path.join(work, "nope"), "No such file or directory"), (REPO + "/README.md",
                                                                                      "not a directory")):
            p = run(parleyd_bin, "--listen", port, "--data-dir", data, "--web-root", root)
            assert p.returncode == 2 and p.stderr == f"parleyd: --web-root {root}: {why}\n", p.stderr
        assert not os.path.exists(data)
        missing = os.path.join(work, "no", "such", "dir")
        p = run(parleyd_bin, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", missing)
        assert p.returncode == 1, p.stderr
        assert f"cannot create the data directory {missing}: No such file or directory" in p.stderr, p.stderr
        afile = os.path.join(work, "afile")
        open(afile, "w").close()
        p = run(parleyd_bin, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", afile)
        assert p.returncode == 1 and "not a directory" in p.stderr, p.stderr
        # each such error is in the JSON log too (README: "also written first as
        # one plain line"; audit N4: these three were plain lines only)
        busy = socket.socket()
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        taken = f"127.0.0.1:{busy.getsockname()[1]}"
        badmedia = os.path.join(afile, "media")
        for args, why in ((["--listen", f"127.0.0.1:{free_port()}", "--data-dir", missing],
                           "cannot create the data directory"),
                          (["--listen", taken, "--data-dir", data], "cannot listen on"),
                          (["--listen", f"127.0.0.1:{free_port()}", "--data-dir", data, "--media-dir", badmedia],
                           badmedia)):
            p = run(parleyd_bin, *args)
            assert p.returncode == 1, p.stderr
            lines = [json.loads(ln) for ln in p.stderr.splitlines() if ln.startswith("{")]
            assert any(ln["level"] == "error" and why in ln.get("reason", "") for ln in lines), (args, p.stderr)
        busy.close()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_a_push_setting_without_the_one_it_belongs_to_is_refused(parleyd_bin):
    """README "Configuration": settings that need another are bad values
    (exit 2, before the data directory is touched), the push ones too
    (audit M1: README named only the TLS and Redis pairs)."""
    work = tempfile.mkdtemp(prefix="parley-it-")
    try:
        data = os.path.join(work, "data")
        for flag, needs in (("--push-webhook-secret", "--push-webhook"), ("--push-fcm-token", "--push-fcm-url"),
                            ("--push-apns-topic", "--push-apns-url"), ("--push-apns-token", "--push-apns-url"),
                            ("--push-apns-key-id", "--push-apns-key"), ("--push-apns-team-id", "--push-apns-key")):
            p = run(parleyd_bin, "--listen", f"127.0.0.1:{free_port()}", "--data-dir", data, flag, "x")
            assert p.returncode == 2 and p.stderr == f"parleyd: {flag} needs {needs}\n", (flag, p.returncode, p.stderr)
        assert not os.path.exists(data)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def test_help_wins_over_bad_settings(parleyd_bin):
    """--help prints the table whatever else the environment or the flags
    say (before: a bad PARLEY_ variable or flag stopped it)."""
    for env, args in (({"PARLEY_ACCESS_TTL": "abc"}, ["--help"]), ({}, ["--bogus", "--help"])):
        p = run(parleyd_bin, *args, env=env)
        assert p.returncode == 0 and p.stdout.startswith("usage: parleyd"), (env, args, p.stderr)


def test_version_and_help_ranges(parleyd_bin):
    """--version as parley's; --help gives each number's range and each
    default once."""
    p = run(parleyd_bin, "--version")
    assert p.returncode == 0 and p.stdout == "parleyd 1.0.0 (protocol 1)\n", p
    out = run(parleyd_bin, "--help").stdout
    lines = {ln.split()[0]: ln for ln in out.splitlines() if ln.startswith("  --")}
    assert lines["--access-ttl"].endswith("(default: 900; 1 to 86400)"), lines["--access-ttl"]
    assert lines["--node-id"].endswith("(default: -1; -1 to 1023)"), lines["--node-id"]
    assert lines["--push-previews"].endswith("(default: 0; 0 or 1)"), lines["--push-previews"]
    assert lines["--listen"].endswith("(default: 127.0.0.1:8080)"), lines["--listen"]
    assert all(ln.count("(default") == 1 for ln in lines.values()), [ln for ln in lines.values()
                                                                     if ln.count("(default") != 1]
    p = run(parleyd_bin, "--access-ttl", "172800")
    assert p.returncode == 2 and "access-ttl must be an integer in [1, 86400]" in p.stderr, p.stderr
    # a '-' only where the range goes below 0: "-0" too (audit K3)
    for args, env in ((["--retention", "-0"], None), ([], {"PARLEY_RATE_IP_LOOPBACK": "-0"})):
        p = run(parleyd_bin, *args, "--data-dir", "/nonexistent/never-created", env=env)
        assert p.returncode == 2 and "must be an integer in [0," in p.stderr, (args, env, p.stderr)


def test_make_run_passes_only_the_settings_given():
    """`make run` leaves the address and the data directory to parleyd's
    defaults, the environment and a config file unless LISTEN or DATA_DIR is
    given (before: it always passed its own, which won over both)."""
    def dry(*extra):
        p = subprocess.run(["make", "-n", "-s", "--no-print-directory", "-C", REPO, "run", *extra],
                           capture_output=True, text=True, timeout=120,
                           env={k: v for k, v in os.environ.items()
                                if k not in ("LISTEN", "DATA_DIR", "MAKEFLAGS", "MFLAGS", "MAKELEVEL")})
        lines = [ln for ln in p.stdout.splitlines() if ln.startswith("build/release/parleyd")]
        assert p.returncode == 0 and len(lines) == 1, (p.returncode, p.stdout, p.stderr)
        return lines[0]
    assert dry() == "build/release/parleyd"
    assert dry("LISTEN=127.0.0.1:9", "DATA_DIR=/tmp/d") == \
        "build/release/parleyd --listen 127.0.0.1:9 --data-dir /tmp/d"


def test_settings_that_name_files_are_checked_before_anything_is_opened(parleyd_bin, tmp_path):
    """README "Configuration": a bad value stops the start before anything
    is opened, exit 2 naming the setting. A bad content filter, TLS pair or
    push key file was read only after the data directory and the store were
    opened (a fresh parley.db left behind; exit 1 "in use" when the data
    directory was busy; the TLS error did not name the setting: audit H)."""
    bad_filter = tmp_path / "bad.filter"
    bad_filter.write_text("bogus x\n")
    bad_fcm = tmp_path / "fcm.json"
    bad_fcm.write_text("{}")
    cases = [
        (["--content-filter", str(bad_filter)], "--content-filter"),
        (["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"], "--tls-cert, --tls-key"),
        (["--push-fcm-credentials", str(bad_fcm)], "client_email"),
    ]
    for args, said in cases:
        data = tmp_path / "data"
        p = run(parleyd_bin, "--data-dir", str(data), "--listen", f"127.0.0.1:{free_port()}", *args)
        assert p.returncode == 2 and said in p.stderr, (args, p.returncode, p.stderr)
        assert not data.exists(), (args, sorted(os.listdir(data)))


def test_config_file_rules(parleyd_bin, tmp_path):
    """A config file cannot name another one (it was silently ignored, even
    `config /nonexistent`: audit H); flags are named --name in errors, as
    the environment and file lines are named by their source."""
    conf = tmp_path / "c.conf"
    conf.write_text("# nested\nconfig /nonexistent\n")
    p = run(parleyd_bin, "--config", str(conf), "--data-dir", str(tmp_path / "d"))
    assert p.returncode == 2 and "config line 2: config cannot name another file" in p.stderr, p.stderr
    # a directory opens as a file and reads nothing: it was taken as an empty config (audit K2 F2)
    for how in ("flag", "env"):
        args, env = (["--config", str(tmp_path)], None) if how == "flag" else ([], {"PARLEY_CONFIG": str(tmp_path)})
        p = run(parleyd_bin, *args, "--data-dir", str(tmp_path / "d"), env=env)
        assert p.returncode == 2 and p.stderr == f"parleyd: cannot read config file {tmp_path}: Is a directory\n", \
            (how, p.stderr)
    assert not (tmp_path / "d").exists()
    p = run(parleyd_bin, "--access-ttl", "0")
    assert p.returncode == 2 and p.stderr.startswith("parleyd: --access-ttl must be an integer"), p.stderr
    p = run(parleyd_bin, env={"PARLEY_ACCESS_TTL": "0"})
    assert p.returncode == 2 and "PARLEY_ACCESS_TTL: access-ttl must be an integer" in p.stderr, p.stderr
    # an integer is plain digits: " 5" and "+5" were taken, "5 " was not (audit X)
    for v in (" 5", "+5", "5 ", "5x", "", "-", "0x10", "99999999999999999999"):
        p = run(parleyd_bin, "--access-ttl", v)
        assert p.returncode == 2 and "--access-ttl must be an integer" in p.stderr, (v, p.stderr)
        p = run(parleyd_bin, env={"PARLEY_ACCESS_TTL": v})
        assert p.returncode == 2 and "access-ttl must be an integer" in p.stderr, (v, p.stderr)
    # a value not in a setting's list is refused wherever it is, as a bad
    # number is, even when a flag overrides it (audit C2: it was ignored then)
    p = run(parleyd_bin, "--log-level", "info", env={"PARLEY_LOG_LEVEL": "LOUD"})
    assert p.returncode == 2 and p.stderr == \
        "parleyd: PARLEY_LOG_LEVEL: log-level must be debug, info, warn or error, not LOUD\n", p.stderr
    conf.write_text("tls-min 1.1\n")
    p = run(parleyd_bin, "--config", str(conf), "--tls-min", "1.3")
    assert p.returncode == 2 and p.stderr == "parleyd: config line 1: tls-min must be 1.2 or 1.3, not 1.1\n", p.stderr
    p = run(parleyd_bin, "--tls-min", "1.1")
    assert p.returncode == 2 and p.stderr == "parleyd: --tls-min must be 1.2 or 1.3, not 1.1\n", p.stderr


def test_an_unreachable_redis_stops_the_start(parleyd_bin, tmp_path):
    """README "Configuration": a database or Redis that cannot be reached is
    exit 1. With Redis down a node started, retried for ever and answered
    /readyz 503 (audit H)."""
    dead = free_port()
    t0 = time.monotonic()
    p = run(parleyd_bin, "--data-dir", str(tmp_path / "d"), "--listen", f"127.0.0.1:{free_port()}",
            "--store", f"postgres://parley@127.0.0.1:{free_port()}/parley",
            "--redis", f"redis://127.0.0.1:{dead}", timeout=30)
    assert p.returncode == 1, (p.returncode, p.stderr)
    assert f"--redis: cannot connect to Redis at 127.0.0.1:{dead}" in p.stderr, p.stderr
    assert time.monotonic() - t0 < 15


def test_a_binary_without_its_web_client_says_so_at_start(parleyd_bin, tmp_path):
    """A parleyd copied out of its tree finds no web client: it started
    without a word and / answered 404 (audit C2). It warns now."""
    exe = tmp_path / "bin" / "parleyd"
    exe.parent.mkdir()
    shutil.copy(parleyd_bin, exe)
    port = free_port()
    p = subprocess.Popen([str(exe), "--listen", f"127.0.0.1:{port}", "--data-dir", str(tmp_path / "d")],
                         cwd=str(tmp_path), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        lines = []
        for line in p.stderr:
            lines.append(line)
            if '"listening"' in line:
                break
        assert any('"no web client: / answers 404' in ln for ln in lines), lines
    finally:
        p.send_signal(signal.SIGTERM)
        p.communicate(timeout=20)
    assert p.returncode == 0


def test_a_drain_takes_the_clients_close_reply(parleyd_bin):
    """Audit N3: at SIGTERM the server paused every reader, so a client's
    answer to the 1001 close was never read and the connection was reset
    ~2 s later instead of ending cleanly. Now the reply is read and the TCP
    connection ends with a FIN at once."""
    import base64
    import socket
    work = tempfile.mkdtemp(prefix="parley-it-")
    port = free_port()
    p = subprocess.Popen([parleyd_bin, "--listen", f"127.0.0.1:{port}", "--data-dir", work],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except OSError:
                assert time.monotonic() < deadline, "parleyd did not start"
                time.sleep(0.1)
        body = json.dumps({"username": "drain" + os.urandom(3).hex(), "password": "correct horse battery"})
        req = urllib.request.Request(f"http://127.0.0.1:{port}/api/v1/auth/register", method="POST",
                                     data=body.encode())
        tok = json.loads(urllib.request.urlopen(req, timeout=10).read())["access_token"]
        s = socket.create_connection(("127.0.0.1", port), timeout=10)
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
                   f"Authorization: Bearer {tok}\r\n\r\n").encode())
        buf = b""
        while b'"ready"' not in buf:
            d = s.recv(65536)
            assert d, buf
            buf += d
        p.send_signal(signal.SIGTERM)
        buf = b""
        while b"\x88" not in buf:                      # our close frame (1001)
            d = s.recv(65536)
            assert d, buf
            buf += d
        answered = time.monotonic()
        mask = os.urandom(4)
        s.sendall(bytes([0x88, 0x82]) + mask + bytes(a ^ b for a, b in zip(b"\x03\xe9", mask)))
        try:
            while s.recv(65536):
                pass
            ended = "FIN"
        except ConnectionResetError:
            ended = "RST"
        took = time.monotonic() - answered
        assert ended == "FIN" and took < 1.0, f"{ended} {took:.2f} s after the client's close reply"
        s.close()
        assert p.wait(timeout=20) == 0
    finally:
        if p.poll() is None:
            p.kill()
        shutil.rmtree(work, ignore_errors=True)


def test_data_files_an_older_parleyd_left_open_are_tightened(parleyd_bin, tmp_path):
    """A data directory from before umask 077 kept parley.db, search.db and
    token.key at 0644, and SQLite made the new -wal and -shm as open
    (audit V3): at start they become the server user's alone, and a
    directory others may enter is named in a warning (left as it is)."""
    work = str(tmp_path / "data")

    def start_and_stop():
        p = subprocess.Popen([parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", work],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        lines, deadline = [], time.monotonic() + 20
        while time.monotonic() < deadline:
            line = p.stderr.readline()
            if not line:
                break
            lines.append(line)
            if '"listening"' in line:
                break
        rest = stop(p, work, keep=True)
        assert p.returncode == 0, "".join(lines) + rest
        return "".join(lines) + rest

    first = start_and_stop()
    assert "open to other users" not in first, first
    os.chmod(work, 0o755)
    for f in ("parley.db", "search.db", "token.key"):
        os.chmod(os.path.join(work, f), 0o644)
    out = start_and_stop()
    for f in os.listdir(work):
        mode = os.stat(os.path.join(work, f)).st_mode & 0o777
        assert mode & 0o077 == 0, (f, oct(mode))
    warned = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{") and '"warn"' in ln]
    msgs = {w["msg"] for w in warned}
    assert "data files were readable by other users: now by the server's user only" in msgs, out
    assert "the data directory is open to other users (chmod 700 it)" in msgs, out
    assert os.stat(work).st_mode & 0o777 == 0o755
    assert "ERROR: AddressSanitizer" not in out and "runtime error" not in out, out


def test_list_settings_are_named_as_every_flag(parleyd_bin, tmp_path):
    """Audit K4: a bad --allowed-origins or --trusted-proxies was named
    `allowed-origins ...` where every other flag's line says `--name`."""
    data = str(tmp_path / "d")
    p = run(parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", data, "--allowed-origins", "notanorigin")
    assert p.returncode == 2 and p.stderr.startswith("parleyd: --allowed-origins "), p
    p = run(parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", data, "--trusted-proxies", "999.1.1.1")
    assert p.returncode == 2 and p.stderr.startswith("parleyd: --trusted-proxies "), p
    p = run(parleyd_bin, "--listen", "127.0.0.1:0", "--data-dir", data, env={"PARLEY_TRUSTED_PROXIES": "999.1.1.1"})
    assert p.returncode == 2 and p.stderr.startswith("parleyd: PARLEY_TRUSTED_PROXIES: trusted-proxies "), p
