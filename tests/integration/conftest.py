"""Fixtures for Parley's integration tests: one suite, two modes (S3).

Each test runs twice: against an embedded parleyd (SQLite, one process) and
against a cluster: 2 nodes on PostgreSQL and Redis behind HAProxy, clients
spread over the nodes by HAProxy (tests/cluster_proc.py); a module that
needs more says so (CLUSTER_NODES = 3 in test_cluster.py). Test ids say
which: test_dm[embedded], test_dm[cluster]. PARLEY_MODES=embedded (or
cluster) runs one mode only.

`server` / `server_factory(extra_args)` give an object with host, port,
base_url, ws_url (the load balancer in cluster mode), start/stop/kill/
restart, log_text(); in cluster mode also .nodes (each a parleyd_proc.Server
with its own base_url), .node_urls, .pg, .redis, .haproxy. Every process
logs to a file; at teardown everything is stopped with SIGTERM and the test
FAILS if a log holds a sanitizer report (ASan, UBSan, LSan), if a server
died on its own, or if it did not exit after SIGTERM. Logs of a failing test
are kept in test-artifacts/ (git-ignored).

A test that cannot apply to one mode says why:
  @pytest.mark.embedded_only("why")   skipped in cluster mode
  @pytest.mark.cluster_only("why")    skipped in embedded mode
"""

import inspect
import os
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))

from parleyd_proc import Server, finish  # noqa: E402  (the shared server process)

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
MODES = [m for m in os.environ.get("PARLEY_MODES", "embedded,cluster").split(",") if m]


def pytest_configure(config):
    config.addinivalue_line("markers", "embedded_only(reason): the test cannot apply to a cluster")
    config.addinivalue_line("markers", "cluster_only(reason): the test is about cluster mode")


@pytest.fixture(scope="session")
def parleyd_bin():
    b = os.environ.get("PARLEYD") or os.path.join(REPO, "build", "asan", "parleyd")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"parleyd binary not found at {b!r}: set $PARLEYD "
                    f"(make integration does it) or run `make build/asan/parleyd`",
                    pytrace=False)
    return os.path.abspath(b)


_pg = {}


def session_pg():
    """One PostgreSQL for the whole run (each cluster gets its own database)."""
    if "pg" not in _pg:
        from cluster_proc import PgServer
        pg = PgServer()
        pg.start()
        _pg["pg"] = pg
    return _pg["pg"]


def pytest_collection_modifyitems(session, config, items):
    """A test written `async def` without @async_test is skipped by pytest
    with only a warning, so it could never fail: refuse to run such a suite."""
    bare = [i.nodeid for i in items if inspect.iscoroutinefunction(getattr(i, "function", None))]
    if bare:
        raise pytest.UsageError("async tests without @async_test (pytest would skip them): "
                                + ", ".join(bare))


def pytest_sessionfinish(session, exitstatus):
    pg = _pg.pop("pg", None)
    if pg is not None:
        pg.destroy()


@pytest.fixture(params=MODES)
def mode(request):
    """embedded or cluster; skips what a test's marker excludes."""
    if request.param == "cluster":
        m = request.node.get_closest_marker("embedded_only")
        if m:
            pytest.skip(f"embedded mode only: {m.args[0] if m.args else ''}")
    else:
        m = request.node.get_closest_marker("cluster_only")
        if m:
            pytest.skip(f"cluster mode only: {m.args[0] if m.args else ''}")
    return request.param


@pytest.fixture
def server_factory(parleyd_bin, request, mode):
    """make(extra_args=()) -> a started, ready server (a Server, or a Cluster
    in cluster mode). All are stopped and checked at teardown."""
    servers = []
    request.node._parley_servers = servers

    def make(extra_args=(), nodes=None):
        workdir = tempfile.mkdtemp(prefix="parley-it-")
        if mode == "cluster":
            from cluster_proc import Cluster
            n = nodes if nodes is not None else getattr(request.module, "CLUSTER_NODES", None)
            s = Cluster(parleyd_bin, workdir, extra_args, nodes=n, pg=session_pg())
        else:
            s = Server(parleyd_bin, workdir, extra_args)
        servers.append(s)
        s.start()
        return s

    yield make

    if mode == "cluster":
        from cluster_proc import finish as cluster_finish
        problems = cluster_finish(servers, request.node.name, _test_failed(request.node))
    else:
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
