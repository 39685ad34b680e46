"""parleyd_proc.py — one parleyd process for a test, shared by every suite
(tests/integration, tests/browser, the conformance module).

A Server runs the binary on a free loopback port with its own data
directory and a log file; it can be killed (a crash), restarted on the same
port and data, and stopped with SIGTERM. finish() is the common teardown:
stop, look for sanitizer reports and unexpected exits, keep the log in
test-artifacts/ when something went wrong, remove the directory, and return
what went wrong (the caller fails the test with it).
"""

import asyncio
import collections
import os
import random
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.request
import warnings

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
ARTIFACTS = os.path.join(REPO, "test-artifacts")
SANITIZER_MARKERS = ("ERROR: AddressSanitizer", "runtime error:", "LeakSanitizer")
CHEAP_HASH = ["--argon2-ops", "1", "--argon2-mem", "64",
              # bulk senders in tests would trip the message limits; the
              # rate-limit tests pass their own (later flags win)
              "--rate-user-msgs", "0", "--rate-conv-msgs", "0", "--rate-workspace-msgs", "0"]
READY_TIMEOUT = 10.0
STOP_TIMEOUT = 15.0


_recent_ports = collections.deque(maxlen=1024)


def _worker_slot():
    """(index, count) of this pytest-xdist worker, (0, 1) without xdist."""
    name = os.environ.get("PYTEST_XDIST_WORKER", "")     # gw0, gw1, ...
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    if name.startswith("gw") and name[2:].isdigit() and count > 1:
        return int(name[2:]) % count, count
    return 0, 1


def _ephemeral_range():
    """The kernel's range for ports it picks itself (bind to port 0, and the
    source port of every connect)."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            lo, hi = (int(x) for x in f.read().split())
        return lo, hi
    except (OSError, ValueError):
        return 32768, 60999


def free_port():
    """A port nothing listens on now, that this process has not handed out
    recently, and that nothing else will take before the server binds it.

    The ports come from below the kernel's ephemeral range: anything that
    lets the kernel pick (a fake push endpoint or the bench's own parleyd
    binding port 0, any client's connect) never lands on one of ours
    between picking it and binding it. From inside that range, a cluster's
    HAProxy once found its port held by another worker's bench server,
    which even answered its /healthz, and could not bind. Under
    pytest-xdist each worker takes only the ports whose value modulo the
    worker count is its index, so two workers never hand out the same
    port; within a worker the recent ones are not handed out again (the
    kernel may offer a released port again at once, and a cluster picks
    its load balancer's port before its nodes bind theirs)."""
    index, count = _worker_slot()
    lo, hi = 20000, _ephemeral_range()[0] - 1
    if hi - lo < 1000 * count:                 # an unusual range: share it, as before
        lo, hi = 1024, 65535
    for _ in range(1000):
        port = random.randrange(lo, hi + 1)
        port -= (port - index) % count
        if port < lo or port in _recent_ports:
            continue
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            continue
        finally:
            s.close()
        _recent_ports.append(port)
        return port
    raise RuntimeError("no free port that was not handed out recently")


class Server:
    """One parleyd process (restartable on the same port and data dir)."""

    def __init__(self, binary, workdir, extra_args=()):
        self.binary = binary
        self.host = "127.0.0.1"
        self.port = free_port()
        self.workdir = workdir
        self.data_dir = os.path.join(workdir, "data")
        os.makedirs(self.data_dir, exist_ok=True)
        self.log_path = os.path.join(workdir, "parleyd.log")
        self.extra_args = list(extra_args)
        self.proc = None
        self.starts = 0
        self.problems = []          # reasons to fail the test at teardown
        self.killed_on_purpose = False

    # ---- addresses ----
    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.port}/ws"

    def cmd(self):
        return [self.binary, "--listen", f"{self.host}:{self.port}",
                "--data-dir", self.data_dir] + CHEAP_HASH + self.extra_args

    # ---- lifecycle ----
    def start(self):
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        env = dict(os.environ)
        env["ASAN_OPTIONS"] = "detect_leaks=1:abort_on_error=0"
        env.setdefault("UBSAN_OPTIONS", "print_stacktrace=1")
        with open(self.log_path, "ab") as log:
            log.write(f"=== test harness: start #{self.starts}: {' '.join(self.cmd())}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(self.cmd(), stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, env=env, cwd=self.workdir)
        self.killed_on_purpose = False
        self.wait_ready()

    def wait_ready(self, timeout=READY_TIMEOUT):
        deadline = time.monotonic() + timeout
        last = None
        while time.monotonic() < deadline:
            rc = self.proc.poll()
            if rc is not None:
                raise AssertionError(f"parleyd exited with {rc} during startup\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.base_url + "/healthz", timeout=1) as r:
                    if r.status == 200:
                        return
                    last = r.status
            except (urllib.error.URLError, ConnectionError, OSError) as e:
                last = e
            time.sleep(0.05)
        raise AssertionError(f"parleyd not ready within {timeout}s (last: {last})\n{self.log_tail()}")

    def kill(self):
        """SIGKILL (a crash) and reap."""
        if self.proc and self.proc.poll() is None:
            self.killed_on_purpose = True
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def restart(self):
        """SIGKILL, then start again on the same port and data dir."""
        self.kill()
        self.start()

    async def arestart(self):
        await asyncio.to_thread(self.restart)

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM and wait (graceful stop). Records problems; returns rc."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            if not self.killed_on_purpose:
                self.problems.append(f"parleyd died on its own (exit status {rc})")
            return rc
        self.proc.send_signal(signal.SIGTERM)
        try:
            rc = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.problems.append(f"parleyd did not exit within {timeout}s of SIGTERM")
            self.proc.kill()
            rc = self.proc.wait(timeout=10)
            return rc
        if rc == -signal.SIGTERM:
            warnings.warn("parleyd died of SIGTERM instead of exiting "
                          "(no graceful drain, no leak check)")
        elif rc != 0:
            self.problems.append(f"parleyd exited with status {rc} after SIGTERM")
        return rc

    async def astop(self):
        return await asyncio.to_thread(self.stop)

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    # ---- logs ----
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=80):
        lines = self.log_text().splitlines()
        return "---- parleyd log tail ----\n" + "\n".join(lines[-n:])

    def sanitizer_report(self):
        text = self.log_text()
        hits = [m for m in SANITIZER_MARKERS if m in text]
        if not hits:
            return None
        # Show the report from its first line.
        first = min(text.find(m) for m in hits)
        start = text.rfind("\n", 0, first) + 1
        return text[start:start + 6000]


def finish(servers, name, test_failed=False):
    """Stops and checks servers; returns problem lines (empty when clean)."""
    problems = []
    for i, s in enumerate(servers):
        s.stop()
        rep = s.sanitizer_report()
        if rep:
            s.problems.append("sanitizer report in the server log:\n" + rep)
        if s.problems or test_failed:
            os.makedirs(ARTIFACTS, exist_ok=True)
            dest = os.path.join(ARTIFACTS, f"{name}-{i}.log".replace("/", "_"))
            try:
                shutil.copyfile(s.log_path, dest)
            except OSError:
                pass
        for p in s.problems:
            problems.append(f"[server {i} port {s.port}] {p}")
        if s.problems:
            problems.append(s.log_tail(60))
        shutil.rmtree(s.workdir, ignore_errors=True)
    return problems
