"""The cluster harness's own smoke tests (tests/cluster_proc.py): real
PostgreSQL, Redis and HAProxy processes, and parleyd nodes behind HAProxy.

Until parleyd takes the cluster flags (--store, --redis), the nodes start in
embedded mode (each on its own SQLite, sharing nothing), which is enough to
prove the plumbing: PostgreSQL runs as `postgres` and serves fresh databases,
Redis restarts on its port, HAProxy (from deploy/haproxy.cfg) routes HTTP and
WebSocket upgrades, spreads connections over the nodes, and takes a node that
got SIGTERM out of rotation while its clients are told to reconnect and land
on another node. PARLEY_CLUSTER_NODE_MODE=cluster runs the same tests with the
cluster flags once the server has them.

Skipped unless PARLEY_CLUSTER_INFRA_TESTS=1 (so `make test` does not run
them before the server supports cluster mode):
  PARLEYD=build/asan/parleyd PARLEY_CLUSTER_INFRA_TESTS=1 \\
    /usr/bin/python3 -m pytest -q -p no:cacheprovider tests/integration/test_cluster_infra.py
"""

import asyncio
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

import pytest

pytestmark = pytest.mark.skipif(
    os.environ.get("PARLEY_CLUSTER_INFRA_TESTS") != "1",
    reason="cluster harness smoke tests: set PARLEY_CLUSTER_INFRA_TESTS=1 to run them "
           "(they need PostgreSQL, Redis and HAProxy: scripts/deps-cluster.sh)")

import cluster_proc  # noqa: E402  (conftest puts tests/ on the path)
from cluster_proc import Cluster, HAProxy, PgServer, RedisServer, finish, http_status  # noqa: E402

MODE = os.environ.get("PARLEY_CLUSTER_NODE_MODE", "embedded")
TIMINGS = {}        # collected over the module, printed at its end (pytest -s)


@pytest.fixture(scope="module")
def pg():
    t0 = time.monotonic()
    srv = PgServer()
    srv.start()
    TIMINGS["pg session start (initdb + start)"] = time.monotonic() - t0
    yield srv
    t0 = time.monotonic()
    srv.destroy()
    TIMINGS["pg session stop"] = time.monotonic() - t0
    if TIMINGS:
        print("\ncluster harness timings (s):")
        for k, v in TIMINGS.items():
            print(f"  {k}: {v:.3f}" if isinstance(v, float) else f"  {k}: {v}")


@pytest.fixture
def cluster_factory(parleyd_bin, pg, request):
    made = []
    request.node._parley_servers = made      # conftest attaches log tails on failure

    def make(extra_args=(), nodes=3):
        c = Cluster(parleyd_bin, tempfile.mkdtemp(prefix="parley-cl-"), extra_args,
                    nodes=nodes, pg=pg, mode=MODE)
        made.append(c)
        c.start()
        return c

    yield make
    failed = getattr(request.node, "_parley_rep_call", None)
    problems = finish(made, request.node.name, bool(failed and failed.failed))
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def cluster(cluster_factory):
    return cluster_factory()


def _get(url, timeout=5):
    """(status, headers, body) of GET url."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def _post_json(url, obj, timeout=10):
    req = urllib.request.Request(url, data=json.dumps(obj).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.status, json.loads(r.read())


def _proc_uid(pid):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("Uid:"):
                return int(line.split()[1])
    raise AssertionError(f"no Uid for {pid}")


# --------------------------------------------------------------------------
# PostgreSQL


def test_postgres_runs_as_postgres_and_serves_fresh_databases(pg):
    import pwd
    if os.geteuid() == 0:
        assert _proc_uid(pg.pid) == pwd.getpwnam("postgres").pw_uid, "postmaster is not the postgres user"
    assert pg.psql("SHOW listen_addresses").strip() == "127.0.0.1"
    assert pg.psql("SHOW fsync").strip() == "on"
    assert pg.psql("SHOW synchronous_commit").strip() == "on"

    t0 = time.monotonic()
    a = pg.new_database()
    TIMINGS["create database"] = time.monotonic() - t0
    b = pg.new_database()
    assert a.name != b.name and a.url != b.url
    assert a.url == f"postgres://parley@127.0.0.1:{pg.port}/{a.name}"
    assert {a.name, b.name} <= set(pg.databases())

    # psql (postgresql-client) over TCP loopback, as the nodes' role, the
    # way a node connects: it owns its database and can create tables there.
    psql = os.path.join(pg.bindir, "psql")
    out = subprocess.run([psql, "-X", "-q", "-tA", "-v", "ON_ERROR_STOP=1", a.url, "-c",
                          "CREATE TABLE t (x int); INSERT INTO t VALUES (42); "
                          "SELECT current_user, current_database(), sum(x) FROM t"],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=20)
    assert out.returncode == 0, out.stderr
    assert out.stdout.decode().split() == [f"parley|{a.name}|42"], out.stdout
    # each database is empty and separate
    assert pg.psql("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'", db=b.name).strip() == "0"

    t0 = time.monotonic()
    pg.drop_database(a.name)
    TIMINGS["drop database"] = time.monotonic() - t0
    pg.drop_database(b.name)
    assert not {a.name, b.name} & set(pg.databases())


def test_postgres_kill_and_restart_keep_committed_data(pg):
    db = pg.new_database("durable")
    pg.psql("CREATE TABLE t (x int); INSERT INTO t VALUES (1), (2), (3)", db=db.name)
    port = pg.port
    t0 = time.monotonic()
    pg.kill()                                   # SIGKILL postmaster and backends
    assert not pg.running()
    assert subprocess.run([os.path.join(pg.bindir, "pg_isready"), "-q", "-h", "127.0.0.1",
                           "-p", str(port)]).returncode != 0, "still accepting after kill"
    pg.start()                                  # crash recovery
    TIMINGS["pg kill + start (recovery)"] = time.monotonic() - t0
    assert pg.port == port
    assert pg.psql("SELECT sum(x) FROM t", db=db.name).strip() == "6"
    t0 = time.monotonic()
    pg.restart()
    TIMINGS["pg restart (fast stop + start)"] = time.monotonic() - t0
    assert pg.psql("SELECT count(*) FROM t", db=db.name).strip() == "3"
    pg.drop_database(db.name)


# --------------------------------------------------------------------------
# Redis


def test_redis_answers_and_restarts_on_the_same_port():
    work = tempfile.mkdtemp(prefix="parley-redis-")
    r = RedisServer(work)
    try:
        t0 = time.monotonic()
        r.start()
        TIMINGS["redis start"] = time.monotonic() - t0
        assert r.ping()
        assert r.command("CONFIG", "GET", "bind") == ["bind", "127.0.0.1"]
        assert r.command("CONFIG", "GET", "save") == ["save", ""]
        assert r.command("CONFIG", "GET", "appendonly") == ["appendonly", "no"]
        assert r.command("SET", "k", "v") == "OK" and r.command("GET", "k") == "v"
        port = r.port

        r.restart()                             # SIGTERM, start
        assert r.port == port and r.ping()
        assert r.command("GET", "k") is None, "no persistence: a restart starts empty"

        r.command("SET", "k", "again")
        t0 = time.monotonic()
        r.restart(kill=True)                    # SIGKILL, start
        TIMINGS["redis kill + start"] = time.monotonic() - t0
        assert r.port == port and r.ping() and r.command("GET", "k") is None
        r.kill()
        assert not r.ping()
        r.start()
        assert r.ping()
    finally:
        r.stop()
        assert not r.problems, r.problems
        shutil.rmtree(work, ignore_errors=True)


# --------------------------------------------------------------------------
# HAProxy and the cluster


def _ws_connect(url):
    import websockets
    return websockets.connect(url, open_timeout=10, close_timeout=5)


def test_lb_routes_http_and_websocket_and_spreads_connections(cluster):
    import websockets
    c = cluster
    assert len(c.nodes) == 3 and len(set(c.node_urls)) == 3
    assert c.base_url == f"http://127.0.0.1:{c.haproxy.port}" and c.ws_url.endswith("/ws")
    assert all(http_status(u + "/readyz") == 200 for u in c.node_urls)
    assert set(c.haproxy.server_states()) == {"node0", "node1", "node2"}

    # plain HTTP, each request balanced on its own
    served = []
    for _ in range(9):
        st, headers, body = _get(c.base_url + "/healthz")
        assert st == 200, (st, body)
        served.append(headers["X-Parley-Node"])
    assert len(set(served)) >= 2, f"HTTP requests all went to {served}"
    # HAProxy logs a request when its session ends, a moment after the answer
    deadline = time.monotonic() + 5
    while len(c.haproxy.served_by()) < 9 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert c.haproxy.served_by()[-9:] == served, "the HAProxy log names the node of each request"
    # a REST call through the LB reaches a node and gets its answer
    st, body = _post_json(c.base_url + "/api/v1/auth/register",
                          {"username": "lbuser_" + os.urandom(3).hex(), "password": "long enough pw"})
    assert st == 201 and body["access_token"], body

    async def websockets_through_lb():
        conns = []
        try:
            for _ in range(6):
                ws = await _ws_connect(c.ws_url)     # 101 through HAProxy, or it raises
                conns.append(ws)
            nodes = [w.response_headers["X-Parley-Node"] for w in conns]
            live = c.haproxy.sessions()
            # leastconn: 6 long-lived connections over 3 nodes, 2 each
            assert sorted(nodes.count(n) for n in set(nodes)) == [2, 2, 2], nodes
            assert live == {"node0": 2, "node1": 2, "node2": 2}, live
            # the upgraded connection is a WebSocket end to end: a message
            # before auth is answered by the node with close 4001
            t0 = time.monotonic()
            await conns[0].send(json.dumps({"type": "ping", "req": 1}))
            with pytest.raises(websockets.exceptions.ConnectionClosed) as ei:
                await asyncio.wait_for(conns[0].recv(), 10)
            assert ei.value.rcvd is not None and ei.value.rcvd.code == 4001, ei.value
            assert time.monotonic() - t0 < 5
        finally:
            for w in conns:
                await w.close()
    asyncio.run(websockets_through_lb())


def test_sigterm_node_leaves_rotation_and_its_clients_land_elsewhere(cluster):
    """The graceful drain through HAProxy: a node that gets SIGTERM tells its
    WebSocket clients to reconnect and closes them (1001); HAProxy takes it
    out of rotation; the clients' reconnects land on the other nodes."""
    c = cluster
    # one user per node (embedded nodes share nothing: a token is only good
    # on the node that issued it; in cluster mode any node would do)
    tokens = {}
    for i, url in enumerate(c.node_urls):
        st, body = _post_json(url + "/api/v1/auth/register",
                              {"username": f"dr{i}_" + os.urandom(3).hex(), "password": "long enough pw"})
        tokens[f"node{i}"] = body["access_token"]

    async def drain():
        conns = []
        try:
            for _ in range(3):
                ws = await _ws_connect(c.ws_url)
                node = ws.response_headers["X-Parley-Node"]
                await ws.send(json.dumps({"type": "auth", "token": tokens[node]}))
                ready = json.loads(await asyncio.wait_for(ws.recv(), 10))
                assert ready["type"] == "ready", ready
                conns.append((node, ws))
            assert sorted(n for n, _ in conns) == ["node0", "node1", "node2"]
            victim_name, victim_ws = [x for x in conns if x[0] == "node1"][0]

            t0 = time.monotonic()
            rc = await asyncio.to_thread(c.nodes[1].stop)        # SIGTERM, waits for the exit
            TIMINGS["node SIGTERM drain with 1 client"] = time.monotonic() - t0
            assert rc == 0, rc
            msgs = []
            try:
                while True:
                    msgs.append(json.loads(await asyncio.wait_for(victim_ws.recv(), 10)))
            except Exception as e:  # noqa: BLE001 - the close ends the loop
                closed = e
            assert any(m.get("type") == "reconnect" for m in msgs), msgs
            assert getattr(closed, "rcvd", None) is not None and closed.rcvd.code == 1001, closed

            t0 = time.monotonic()
            await asyncio.to_thread(c.haproxy.wait_state, "node1", "DOWN", 10)
            TIMINGS["node out of rotation after its exit"] = time.monotonic() - t0
            # the client reconnects through the LB: another node, and it works
            again = await _ws_connect(c.ws_url)
            node = again.response_headers["X-Parley-Node"]
            assert node != "node1", node
            await again.send(json.dumps({"type": "auth", "token": tokens[node]}))
            assert json.loads(await asyncio.wait_for(again.recv(), 10))["type"] == "ready"
            await again.close()
            # the other clients were not disturbed
            for n, ws in conns:
                if n != "node1":
                    pong = await ws.ping()
                    await asyncio.wait_for(pong, 5)
        finally:
            for _, ws in conns:
                await ws.close()
    asyncio.run(drain())

    # no request reaches the stopped node; all are answered
    served = []
    for _ in range(12):
        st, headers, _ = _get(c.base_url + "/healthz")
        assert st == 200
        served.append(headers["X-Parley-Node"])
    assert "node1" not in served and set(served) == {"node0", "node2"}, served
    assert "parleyd/node1 is DOWN" in c.haproxy.log_text()

    # start() brings the node back on its port and into rotation at once
    t0 = time.monotonic()
    c.start()
    TIMINGS["restart one node into rotation"] = time.monotonic() - t0
    assert c.haproxy.server_states()["node1"].startswith("UP")
    served = {_get(c.base_url + "/healthz")[1]["X-Parley-Node"] for _ in range(9)}
    assert "node1" in served, served


def test_requests_survive_a_node_killed_with_sigkill(cluster):
    """kill -9 of a node: connects to it are refused, retried on another node
    (retries + redispatch), and observe layer4 takes it out at once. The
    other nodes are ready, so the fail-open backend (parleyd_fallback) is
    not used: every request goes to a ready, live node."""
    c = cluster
    logged = len(c.haproxy.routes())
    c.nodes[2].kill()
    served = []
    for _ in range(20):
        st, headers, _ = _get(c.base_url + "/healthz")
        assert st == 200 and headers["X-Parley-Node"] != "node2"
        served.append(headers["X-Parley-Node"])
    c.haproxy.wait_state("node2", "DOWN", 5)
    for _ in range(10):
        st, headers, _ = _get(c.base_url + "/healthz")
        assert st == 200 and headers["X-Parley-Node"] != "node2"
        served.append(headers["X-Parley-Node"])
    assert set(served) == {"node0", "node1"}, served
    deadline = time.monotonic() + 5            # logged when each session ends
    while len(c.haproxy.routes()) < logged + 30 and time.monotonic() < deadline:
        time.sleep(0.02)
    routes = c.haproxy.routes()[logged:]
    assert len(routes) == 30 and {be for be, _ in routes} == {"parleyd"}, routes
    c.start()                                   # starts node 2 again, back into rotation
    assert c.haproxy.server_states()["node2"].startswith("UP")


def test_cluster_lifecycle_like_a_server(cluster):
    """The calls tests make on `server`: stop/start (data kept), restart
    (every node SIGKILLed, started again), kill; and the timings."""
    c = cluster
    TIMINGS["cluster start (db, redis, 3 nodes, haproxy)"] = c.timings["start"]["total"]
    TIMINGS["cluster start phases"] = {k: round(v, 3) for k, v in c.timings["start"].items()}
    st, body = _post_json(c.node_urls[0] + "/api/v1/auth/register",
                          {"username": "lc_" + os.urandom(3).hex(), "password": "long enough pw"})
    token = body["access_token"]
    ports = (c.port, [s.port for s in c.nodes], c.redis.port)

    rc = c.stop()
    assert rc == 0, rc
    TIMINGS["cluster stop (nodes SIGTERM, haproxy, redis)"] = c.timings["stop"]["total"]
    assert not c.running() and not c.haproxy.running() and not c.redis.running()
    assert http_status(c.base_url + "/healthz", 0.5) is None
    c.start()
    assert (c.port, [s.port for s in c.nodes], c.redis.port) == ports
    assert http_status(c.base_url + "/healthz") == 200
    # node 0 kept its data across the stop (embedded: in its data dir)
    req = urllib.request.Request(c.node_urls[0] + "/api/v1/me", headers={"Authorization": f"Bearer {token}"})
    with urllib.request.urlopen(req, timeout=5) as r:
        assert r.status == 200

    t0 = time.monotonic()
    c.restart()                                 # SIGKILL every node, start again
    TIMINGS["cluster restart (kill all nodes + start)"] = time.monotonic() - t0
    assert all(s.startswith("UP") for s in c.haproxy.server_states().values())
    assert http_status(c.base_url + "/healthz") == 200
    assert c.sanitizer_report() is None
    assert "=== node 2" in c.log_text() and "listening" in c.log_text()


def test_finish_reports_a_node_that_died_and_keeps_the_logs(parleyd_bin, pg):
    c = Cluster(parleyd_bin, tempfile.mkdtemp(prefix="parley-cl-"), nodes=2, pg=pg, mode=MODE)
    c.start()
    db = c.db.name
    os.kill(c.nodes[1].proc.pid, signal.SIGKILL)      # not through kill(): a crash
    c.nodes[1].proc.wait(timeout=10)
    name = "cluster-infra-selftest-" + os.urandom(3).hex()
    t0 = time.monotonic()
    problems = finish([c], name)
    TIMINGS["finish (stop + checks + drop + rm)"] = time.monotonic() - t0
    try:
        assert any("node 1" in p and "died on its own" in p for p in problems), problems
        assert not any("node 0" in p and "died" in p for p in problems), problems
        kept = sorted(f for f in os.listdir(cluster_proc.ARTIFACTS) if f.startswith(name))
        assert f"{name}-0-node1.log" in kept and f"{name}-0-haproxy.log" in kept, kept
        assert db not in pg.databases(), "finish drops the database"
        assert not os.path.exists(c.workdir)
    finally:
        for f in os.listdir(cluster_proc.ARTIFACTS):
            if f.startswith(name):
                os.remove(os.path.join(cluster_proc.ARTIFACTS, f))


def test_haproxy_config_is_the_shipped_one_and_valid(tmp_path):
    h = HAProxy(str(tmp_path), [("node0", "127.0.0.1", 1), ("node1", "127.0.0.1", 2)])
    cfg = h.render()
    for must in ("balance leastconn", "option httpchk GET /readyz", "http-check expect status 200",
                 "timeout tunnel 1h", "timeout http-request 10s", "option redispatch", "retries",
                 "option forwardfor", "inter 1s fall 2 rise 1", f"bind 127.0.0.1:{h.port}",
                 "server node0 127.0.0.1:1", "server node1 127.0.0.1:2", "maxconn 9900",
                 "use_backend parleyd_fallback if { nbsrv(parleyd) eq 0 }"):
        assert must in cfg, must
    # fail open: the same nodes in both backends; only `parleyd` checks /readyz
    sections = {}
    for line in cfg.splitlines():
        if line and not line[0].isspace() and not line.startswith("#"):
            cur = sections.setdefault(line.strip(), [])
        elif line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    servers = ["server node0 127.0.0.1:1", "server node1 127.0.0.1:2"]
    for be in ("backend parleyd", "backend parleyd_fallback"):
        assert [ln for ln in sections[be] if ln.startswith("server ")] == servers, sections[be]
    assert not any("httpchk" in ln or "http-check" in ln for ln in sections["backend parleyd_fallback"])
    with open(h.cfg_path, "w") as f:
        f.write(cfg)
    r = subprocess.run(["haproxy", "-c", "-f", h.cfg_path], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
