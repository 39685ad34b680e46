"""Fixtures for Parley's integration tests.

Each test gets its own parleyd (from $PARLEYD, by default build/asan/parleyd)
on a free loopback port with its own temporary data directory. The server's
stdout and stderr go to a log file; at teardown the server is stopped with
SIGTERM and the test FAILS if the log holds a sanitizer report (ASan, UBSan,
LSan), if the server died on its own, or if it did not exit after SIGTERM.
The log tail is attached to the report of a failing test, and the whole log is
kept in test-artifacts/ (git-ignored).
"""

import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from parleyd_proc import Server, finish  # noqa: E402  (the shared server process)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


@pytest.fixture(scope="session")
def parleyd_bin():
    b = os.environ.get("PARLEYD") or os.path.join(REPO, "build", "asan", "parleyd")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"parleyd binary not found at {b!r}: set $PARLEYD "
                    f"(make integration does it) or run `make build/asan/parleyd`",
                    pytrace=False)
    return os.path.abspath(b)


@pytest.fixture
def server_factory(parleyd_bin, request):
    """make(extra_args=()) -> a started, ready Server. All are stopped and
    checked at teardown."""
    servers = []
    request.node._parley_servers = servers

    def make(extra_args=()):
        workdir = tempfile.mkdtemp(prefix="parley-it-")
        s = Server(parleyd_bin, workdir, extra_args)
        servers.append(s)
        s.start()
        return s

    yield make

    problems = finish(servers, request.node.name, _test_failed(request.node))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def server(server_factory):
    return server_factory()


def _test_failed(item):
    rep = getattr(item, "_parley_rep_call", None)
    return rep is not None and rep.failed


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call":
        item._parley_rep_call = rep
        if rep.failed:
            for i, s in enumerate(getattr(item, "_parley_servers", [])):
                rep.sections.append((f"parleyd[{i}] port {s.port}", s.log_tail(60)))
