"""Smoke runs of parley-bench, one per workload, inside `make test`.

Each test runs build/release/parley-bench for a few seconds with a small N
against a parleyd it starts itself (the release build: $PARLEYD_RELEASE, by
default build/release/parleyd) and asserts, from the JSON result only, that
the run was correct: every connection made, every send acknowledged, every
delivery counted, nothing lost, duplicated or reordered, no error reply.
Timings are never asserted: benchmarks report, tests check behaviour.

The cluster tests run the bench against a 3-node cluster (PostgreSQL, Redis,
HAProxy: tests/cluster_proc.py), through the load balancer and straight to
the nodes, where a client's events reach the peers on other nodes only
through Redis; the same correctness is asserted.
"""

import json
import os
import resource
import socket
import subprocess
import sys
import tempfile
import threading

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BENCH = os.environ.get("PARLEY_BENCH", os.path.join(REPO, "build", "release", "parley-bench"))
PARLEYD = os.environ.get("PARLEYD_RELEASE", os.path.join(REPO, "build", "release", "parleyd"))
RUN_TIMEOUT = 150
# What the bench gives the parleyd it starts (bench/main.c start_server), for
# the cluster's nodes; cluster_proc adds cheap argon2 and no message limits.
NODE_ARGS = ["--max-outbound", "67108864", "--log-level", "warn"]


def run_bench(tmp_path, workload, *args, preexec=None):
    out = tmp_path / f"{workload}.json"
    cmd = [BENCH, workload, "--parleyd", PARLEYD, "--json", str(out), *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=RUN_TIMEOUT,
                          preexec_fn=preexec)
    assert out.exists(), f"no JSON written\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    with open(out) as f:
        res = json.load(f)
    return proc, res


def assert_clean(proc, res, clients, external=False):
    """The correctness every workload must show."""
    detail = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    v = res["verify"]
    assert v["problems"] == [], detail
    assert res["ok"] is True and proc.returncode == 0, detail
    assert res["connect"]["attempted"] == clients, detail
    assert res["connect"]["connected"] == clients and res["connect"]["failed"] == 0, detail
    for key in ("lost", "duplicated", "reordered", "errors", "unacked", "dup_acks",
                "ack_reordered", "sync_mismatch", "unexpected", "ready_missing",
                "failed_connections"):
        assert v[key] == 0, f"{key} = {v[key]}{detail}"
    assert v["sent"] == v["acked"], detail
    assert v["deliveries"] == v["expected_deliveries"], detail
    if external:
        assert res["server"]["exit"] == "external", detail
    else:
        assert res["server"]["exit"] == "clean exit after SIGTERM", detail
    return v


@pytest.fixture(autouse=True)
def binaries():
    if not os.access(BENCH, os.X_OK):
        pytest.fail(f"{BENCH} is not built (make build/release/parley-bench)")
    if not os.access(PARLEYD, os.X_OK):
        pytest.fail(f"{PARLEYD} is not built (make)")


def test_idle_holds_every_connection_across_workers(tmp_path):
    proc, res = run_bench(tmp_path, "idle", "-n", "200", "--workers", "2", "--hold", "0.5")
    assert_clean(proc, res, 200)
    assert res["params"]["workers"] == 2
    idle = res["idle"]
    assert idle["connections"] == 200
    assert idle["pinged"] == 200 and idle["pongs"] == 200
    assert idle["rss_before_kib"] > 0 and idle["rss_after_kib"] > 0
    # The server's descriptors (counted from /proc/PID/fd): one per held
    # connection plus its own few (listener, database, event loop).
    assert 200 <= res["server"]["fds_max"] < 200 + 64, res["server"]


def test_idle_and_dm_over_tls(tmp_path):
    """--tls: the set-up over https and the WebSockets over wss, to a parleyd
    serving TLS (a self-signed certificate made here)."""
    crt, key = str(tmp_path / "c.pem"), str(tmp_path / "k.pem")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
                    "-nodes", "-keyout", key, "-out", crt, "-days", "1", "-subj", "/CN=localhost"],
                   check=True, capture_output=True)
    tls = ["--tls", "--server-args", f"--tls-cert {crt} --tls-key {key}"]
    proc, res = run_bench(tmp_path, "idle", "-n", "40", "--hold", "0.5", *tls)
    assert_clean(proc, res, 40)
    assert res["params"]["tls"] is True
    assert res["idle"]["pongs"] == 40
    proc, res = run_bench(tmp_path, "dm", "-n", "10", "--rate", "max", "--window", "4",
                          "--warmup", "0.2", "--duration", "0.5", *tls)
    v = assert_clean(proc, res, 10)
    assert v["acked"] > 0 and v["deliveries"] == 2 * v["acked"]


def test_dm_at_max_delivers_every_message_to_both_members(tmp_path):
    proc, res = run_bench(tmp_path, "dm", "-n", "20", "--workers", "2", "--rate", "max",
                          "--window", "4", "--warmup", "0.2", "--duration", "1")
    v = assert_clean(proc, res, 20)
    assert v["acked"] > 0
    assert v["deliveries"] == 2 * v["acked"]     # the peer and the sender's own session
    assert res["latency_ms"]["count"] > 0


def test_dm_at_a_fraction_of_the_probed_peak(tmp_path):
    proc, res = run_bench(tmp_path, "dm", "-n", "10", "--rate", "50%", "--probe", "0.5",
                          "--warmup", "0.2", "--duration", "0.5")
    v = assert_clean(proc, res, 10)
    assert "probe" in res and res["run"]["rate_target"] > 0
    assert v["deliveries"] == 2 * v["acked"]



@pytest.mark.parametrize("args", [
    ["-n", "x"], ["-n", "4x"], ["-n", "0"], ["--duration", "1s"], ["--duration", "0"],
    ["--warmup", "-1"], ["--rate", "10k"], ["--rate", "fast"], ["--rate", "0"], ["--rate", "-5"],
    ["--rate", "150%"], ["--rate", "0%"], ["--rate", "%"], ["--window", "4 "], ["--body", "1e3"],
    ["--probe", "nan"], ["--timeout", "inf"], ["--server-pid", "12a"], ["--server", "127.0.0.1:8x"],
])
def test_a_malformed_number_is_refused_before_anything_runs(tmp_path, args):
    """Audit V2 #1: the whole argument must be a number in range (no atoi
    reading "10k" as 10 or "fast" as max): exit 2, a line naming the option,
    no server started, no JSON written."""
    out = tmp_path / "r.json"
    p = subprocess.run([BENCH, "dm", "--parleyd", PARLEYD, "--json", str(out), "--duration", "1",
                        "-n", "2", *args], capture_output=True, text=True, timeout=20)
    assert p.returncode == 2, (args, p.stdout, p.stderr)
    assert p.stderr.startswith(f"parley-bench: {args[0]} "), (args, p.stderr)
    assert p.stdout == "" and not out.exists(), (args, p.stdout)


def test_the_well_formed_numbers_still_run(tmp_path):
    proc, res = run_bench(tmp_path, "dm", "-n", "2", "--rate", "100.5", "--warmup", "0",
                          "--duration", ".5", "--window", "2")
    assert_clean(proc, res, 2)
    assert res["params"]["rate"] == 100.5 and res["params"]["duration"] == 0.5


def test_error_replies_are_named_by_code_and_a_host_name_is_a_server(tmp_path):
    """Audit V2 #9 and #11: against a server with its default message limits
    (given as `localhost:PORT`, a name), the problem line names the codes
    the server answered (`rate_limited x N`), as the README's explanation
    does."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from parleyd_proc import Server
    srv = Server(PARLEYD, str(tmp_path), ["--rate-user-msgs", "20", "--rate-conv-msgs", "200"])
    srv.start()                                # later flags win: the default limits again
    try:
        out = tmp_path / "r.json"
        p = subprocess.run([BENCH, "dm", "-n", "4", "--rate", "max", "--warmup", "0", "--duration", "1",
                            "--server", f"localhost:{srv.port}", "--server-pid", str(srv.proc.pid),
                            "--json", str(out)], capture_output=True, text=True, timeout=RUN_TIMEOUT)
        with open(out) as f:
            res = json.load(f)
    finally:
        srv.stop()
    detail = f"\nstdout:\n{p.stdout}\nstderr:\n{p.stderr}"
    codes = res["verify"]["error_codes"]
    assert p.returncode == 1 and codes.get("rate_limited", 0) > 0, detail
    n = res["verify"]["errors"]
    line = f"{n} error replies from the server: " + ", ".join(f"{k} x {v}" for k, v in codes.items())
    assert line in res["verify"]["problems"], res["verify"]["problems"]
    assert line in p.stdout, detail


def test_group_fans_out_every_message_to_every_member(tmp_path):
    proc, res = run_bench(tmp_path, "group", "-n", "60", "--workers", "2", "--senders", "4",
                          "--warmup", "0.2", "--duration", "1")
    v = assert_clean(proc, res, 60)
    assert v["acked"] > 0
    assert v["deliveries"] == 60 * v["acked"]


def test_group_at_max_under_flow_control(tmp_path):
    """The flow-control path (chat/flow.c): a low --flow-lag makes the
    server hold acks while the members authenticated at the handshake lag;
    every send is still acknowledged once and delivered to every member."""
    proc, res = run_bench(tmp_path, "group", "-n", "200", "--workers", "2", "--senders", "20",
                          "--window", "4", "--warmup", "0.2", "--duration", "1",
                          "--server-args", "--flow-lag 8 --flow-share 10")
    v = assert_clean(proc, res, 200)
    assert v["acked"] > 0
    assert v["deliveries"] == 200 * v["acked"]
    assert "--flow-lag 8" in res["server"]["command"]


def test_storm_resumes_every_client_without_loss(tmp_path):
    proc, res = run_bench(tmp_path, "storm", "-n", "100", "--group-size", "10", "--workers", "2",
                          "--rate", "300", "--warmup", "0.5", "--offline", "0.5")
    # 100 storm clients plus one feeder per worker
    v = assert_clean(proc, res, 102)
    st = res["storm"]
    assert st["clients"] == 100 and st["caught_up"] == 100 and st["failed"] == 0
    assert st["reconnected"] == 100
    assert st["replayed"] > 0          # the feeders kept sending while they were away
    # every group has 10 storm members and its feeder
    assert v["deliveries"] == 11 * v["acked"]


def test_ceiling_is_reported_when_the_server_runs_out_of_descriptors(tmp_path):
    """The server inherits a 300-descriptor limit: it cannot hold 400
    connections. The bench must say so, and the connections the server did
    take must all still work."""
    def low_fd_limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (300, 300))

    proc, res = run_bench(tmp_path, "idle", "-n", "400", "--workers", "2", "--hold", "0.3",
                          "--no-idle-convs", preexec=low_fd_limit)
    detail = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 1, detail
    ceiling = res["ceiling"]
    assert ceiling["hit"] is True, detail
    held = res["connect"]["connected"]
    assert 0 < held < 400 and ceiling["held"] == held
    assert ceiling["server_fd_limit"] == 300
    assert res["idle"]["pongs"] == held, detail          # the server kept serving them
    assert res["server"]["exit"] == "clean exit after SIGTERM", detail


def test_accept_queue_drops_during_a_run_are_reported(tmp_path):
    """The bench reports the handshake packets the kernel dropped at a full
    accept queue while it ran (a peer whose listen backlog overflows in a
    storm shows its clients' 1 s SYN retransmissions as steps in reconnect
    times). A listener here with a backlog of 1 that never accepts is sent
    connects, and retransmissions, throughout the run."""
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen(1)
    stop = threading.Event()
    socks = []

    def flood():
        while not stop.is_set() and len(socks) < 300:
            s = socket.socket()
            s.setblocking(False)
            s.connect_ex(lst.getsockname())
            socks.append(s)
            stop.wait(0.02)

    t = threading.Thread(target=flood)
    t.start()
    try:
        proc, res = run_bench(tmp_path, "idle", "-n", "20", "--hold", "1")
    finally:
        stop.set()
        t.join()
        for s in socks:
            s.close()
        lst.close()
    assert_clean(proc, res, 20)
    assert res["machine"]["listen_drops"] > 0, proc.stdout
    assert "dropped at a full accept queue" in proc.stdout


def test_storm_resuming_with_sync_after_handshake_auth_is_exact(tmp_path):
    """The reconnect path where the token is given at the handshake and the
    cursors in a `sync` after `ready`. Before the server held live delivery
    for that first `sync`, this run showed duplicates and reordering."""
    proc, res = run_bench(tmp_path, "storm", "-n", "200", "--group-size", "10", "--workers", "2",
                          "--rate", "2000", "--warmup", "0.5", "--offline", "0.5", "--resume", "sync")
    assert_clean(proc, res, 202)
    st = res["storm"]
    assert st["caught_up"] == 200 and st["failed"] == 0


# ---- against a cluster -------------------------------------------------------


@pytest.fixture(scope="module")
def cluster():
    """3 nodes on one PostgreSQL and Redis, HAProxy in front, shared by the
    cluster tests (each bench run registers its own users)."""
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from cluster_proc import Cluster, PgServer, finish
    if not os.access(PARLEYD, os.X_OK):
        pytest.fail(f"{PARLEYD} is not built (make)")
    pg = PgServer()
    c = None
    try:
        pg.start()
        c = Cluster(PARLEYD, tempfile.mkdtemp(prefix="parley-bench-cluster-"), NODE_ARGS, nodes=3, pg=pg)
        c.start()
        yield c
    finally:
        problems = finish([c], "bench-cluster", False) if c is not None else []
        pg.destroy()
    assert not problems, "\n".join(problems)


def run_cluster_bench(tmp_path, cluster, workload, *args, direct=False):
    server = (",".join(f"{n.host}:{n.port}" for n in cluster.nodes) if direct
              else f"{cluster.host}:{cluster.port}")
    pids = ",".join(str(n.proc.pid) for n in cluster.nodes)
    proc, res = run_bench(tmp_path, workload, "--server", server, "--server-pid", pids, *args)
    detail = f"\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}\n{cluster.log_tail(60)}"
    assert res["server"]["servers"] == 3, detail
    assert len(res["server"]["per_server"]) == 3, detail
    return proc, res, detail


def test_cluster_dm_through_the_balancer(tmp_path, cluster):
    proc, res, detail = run_cluster_bench(tmp_path, cluster, "dm", "-n", "20", "--workers", "2",
                                          "--rate", "max", "--window", "4", "--warmup", "0.2",
                                          "--duration", "1")
    v = assert_clean(proc, res, 20, external=True)
    assert v["acked"] > 0 and v["deliveries"] == 2 * v["acked"], detail
    # HAProxy spread the connections (leastconn): every node took some
    assert sorted(res["connect"]["nodes"]) == ["node0", "node1", "node2"], detail
    assert sum(res["connect"]["nodes"].values()) == 20, detail
    assert len(res["run"]["server_cpu"]["per_server"]) == 3, detail


def test_cluster_group_through_the_balancer(tmp_path, cluster):
    proc, res, detail = run_cluster_bench(tmp_path, cluster, "group", "-n", "60", "--workers", "2",
                                          "--senders", "4", "--warmup", "0.2", "--duration", "1")
    v = assert_clean(proc, res, 60, external=True)
    assert v["acked"] > 0 and v["deliveries"] == 60 * v["acked"], detail


def test_cluster_dm_across_nodes_straight_to_the_nodes(tmp_path, cluster):
    """--server with the node list: client i on node i % 3, so every DM pair
    (i, i + 1) is split over two nodes and each message reaches the peer
    through Redis."""
    proc, res, detail = run_cluster_bench(tmp_path, cluster, "dm", "-n", "12", "--rate", "max",
                                          "--window", "4", "--warmup", "0.2", "--duration", "1",
                                          direct=True)
    v = assert_clean(proc, res, 12, external=True)
    assert v["acked"] > 0 and v["deliveries"] == 2 * v["acked"], detail
    assert res["connect"]["per_server"] == [4, 4, 4], detail
    assert len(res["params"]["servers"]) == 3, detail


def test_cluster_storm_resumes_on_whichever_node_the_balancer_picks(tmp_path, cluster):
    """Every storm client drops and reconnects through HAProxy, which may
    put it on another node than before: its cursors must still resume it
    exactly."""
    proc, res, detail = run_cluster_bench(tmp_path, cluster, "storm", "-n", "60", "--group-size", "10",
                                          "--workers", "2", "--rate", "300", "--warmup", "0.5",
                                          "--offline", "0.5")
    v = assert_clean(proc, res, 62, external=True)
    st = res["storm"]
    assert st["caught_up"] == 60 and st["reconnected"] == 60 and st["failed"] == 0, detail
    assert v["deliveries"] == 11 * v["acked"], detail


def test_cluster_idle_reports_each_node(tmp_path, cluster):
    proc, res, detail = run_cluster_bench(tmp_path, cluster, "idle", "-n", "90", "--hold", "0.3",
                                          direct=True)
    assert_clean(proc, res, 90, external=True)
    idle = res["idle"]
    assert idle["pongs"] == 90, detail
    per = idle["per_server"]
    assert [p["pid"] for p in per] == [n.proc.pid for n in cluster.nodes], detail
    assert all(p["rss_after_kib"] > 0 for p in per), detail
    assert res["connect"]["per_server"] == [30, 30, 30], detail
