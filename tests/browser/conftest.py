"""Fixtures for Parley's browser tests.

Each test gets its own real parleyd (from $PARLEYD, by default
build/asan/parleyd) on a free loopback port with a temporary data directory,
serving the web client from web/. At teardown the server is stopped with
SIGTERM and the test FAILS if the server's log holds a sanitizer report, if it
died on its own, or if it did not exit.

The browser side needs Debian's chromium and playwright-core (installed into
tests/browser/node_modules by scripts/deps-browser.sh, which `make test` runs).
When they cannot be had the tests FAIL with a message saying so: they never
skip silently.
"""

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
ARTIFACTS = os.path.join(REPO, "test-artifacts")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _free_port():
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
    finally:
        s.close()


def _deps_missing():
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium ({CHROMIUM})")
    if not os.path.isfile(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        missing.append("playwright-core (tests/browser/node_modules)")
    if not shutil.which("node"):
        missing.append("node")
    return missing


@pytest.fixture(scope="session")
def browser_deps():
    """Makes sure chromium, node and playwright-core are there (installing
    them with scripts/deps-browser.sh when not); fails the tests otherwise."""
    missing = _deps_missing()
    if missing:
        script = os.path.join(REPO, "scripts", "deps-browser.sh")
        r = subprocess.run([script], cwd=REPO, capture_output=True, text=True, timeout=900)
        missing = _deps_missing()
        if missing:
            pytest.fail("browser tests need " + ", ".join(missing) + " and installing them failed "
                        f"(scripts/deps-browser.sh exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}",
                        pytrace=False)
    return {"node": shutil.which("node"), "chromium": CHROMIUM}


@pytest.fixture(scope="session")
def parleyd_bin():
    b = os.environ.get("PARLEYD") or os.path.join(REPO, "build", "asan", "parleyd")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"parleyd binary not found at {b!r}: set $PARLEYD or run `make build/asan/parleyd`",
                    pytrace=False)
    return os.path.abspath(b)


class Parleyd:
    def __init__(self, binary, extra_args=()):
        self.workdir = tempfile.mkdtemp(prefix="parley-web-")
        self.port = _free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.log_path = os.path.join(self.workdir, "parleyd.log")
        data = os.path.join(self.workdir, "data")
        os.makedirs(data)
        self.cmd = [binary, "--listen", f"127.0.0.1:{self.port}", "--data-dir", data,
                    "--argon2-ops", "1", "--argon2-mem", "64", "--web-root", os.path.join(REPO, "web")]
        self.cmd += list(extra_args)
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
        self.problems = []

    def wait_ready(self, timeout=10.0):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"parleyd exited with {self.proc.returncode} during startup\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
                    last = r.status
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"parleyd not ready within {timeout}s (last: {last})\n{self.log_tail()}")

    def stop(self, timeout=15.0):
        rc = self.proc.poll()
        if rc is not None:
            self.problems.append(f"parleyd died on its own (exit status {rc})")
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"parleyd did not exit within {timeout}s of SIGTERM")
            self.proc.kill()
            self.proc.wait(timeout=10)
            return
        if rc not in (0, -signal.SIGTERM):
            self.problems.append(f"parleyd exited with status {rc} after SIGTERM")

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=60):
        return "---- parleyd log tail ----\n" + "\n".join(self.log_text().splitlines()[-n:])

    def sanitizer_report(self):
        text = self.log_text()
        hits = [text.find(m) for m in SANITIZER_MARKERS if m in text]
        if not hits:
            return None
        start = text.rfind("\n", 0, min(hits)) + 1
        return text[start:start + 6000]


@pytest.fixture
def parleyd_factory(parleyd_bin, request):
    """start(extra_args=()) -> a started, ready Parleyd; all are stopped and
    checked at teardown."""
    servers = []

    def start(extra_args=()):
        s = Parleyd(parleyd_bin, extra_args)
        servers.append(s)
        s.wait_ready()
        return s

    yield start
    problems = []
    for i, s in enumerate(servers):
        s.stop()
        rep = s.sanitizer_report()
        if rep:
            s.problems.append("sanitizer report in the server log:\n" + rep)
        if s.problems:
            os.makedirs(ARTIFACTS, exist_ok=True)
            try:
                shutil.copyfile(s.log_path, os.path.join(
                    ARTIFACTS, f"browser-{request.node.name}-{i}.log".replace("/", "_")))
            except OSError:
                pass
            problems.append("\n".join(s.problems) + "\n" + s.log_tail())
        shutil.rmtree(s.workdir, ignore_errors=True)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def parleyd(parleyd_factory):
    return parleyd_factory()
