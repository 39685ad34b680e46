"""cluster_proc.py — a Parley cluster for a test: PostgreSQL, Redis, N parleyd
nodes and HAProxy in front, all real processes on free loopback ports.

The pieces, by lifetime:

  PgServer     one PostgreSQL for a whole pytest session (initdb into a temp
               dir, run as the `postgres` user when we are root, fsync on);
               new_database() gives each test a fresh, empty database.
  RedisServer  one redis-server per test (no persistence); stop, kill
               (SIGKILL) and restart on the same port.
  HAProxy      one per test, its config generated from deploy/haproxy.cfg
               (the shipped config) with the node list; its log and its admin
               socket (server states, drain, maint). The config has two
               backends over the same nodes: `parleyd` (the ready nodes,
               /readyz checks) and `parleyd_fallback` (the running ones, used
               only while no node is ready); the state readers are about
               `parleyd` unless told otherwise.
  Cluster      the per-test object. It has the attributes tests use on
               parleyd_proc.Server (host, port, base_url, ws_url: HAProxy's
               frontend; start, stop, kill, restart, log_text, log_tail,
               sanitizer_report, problems, data_dir, extra_args), plus nodes
               (parleyd_proc.Server objects, one per node, each with its own
               port, data dir and log, all on the same database and Redis),
               node_urls, pg, db, redis, haproxy.

finish(clusters, name, test_failed) is parleyd_proc.finish for clusters: stop,
look for sanitizer reports and unexpected exits in every node's log, keep the
logs in test-artifacts/ when something went wrong, drop the database, remove
the directories, and return what went wrong.

How a node joins the cluster is said in one place: node_cluster_args(). The
server does not take the cluster flags yet; PARLEY_CLUSTER_NODE_MODE=embedded
(or Cluster(mode="embedded")) starts the nodes without --store/--redis, each
on its own SQLite, so the infrastructure can be tested before it does.

Differences from parleyd_proc.Server, on purpose:
  - stop() stops the nodes (SIGTERM, exit status checked like Server.stop),
    then HAProxy and Redis, but KEEPS the database, so that start() brings
    the same cluster back (tests stop and start `server` and expect their
    data, as Server keeps its data dir). finish()/destroy() drop it.
  - kill()/restart() act on every node (the "server" crashed); HAProxy,
    Redis and PostgreSQL keep running. One node: cluster.nodes[i].kill() etc.
"""

import asyncio
import collections
import concurrent.futures
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request

import parleyd_proc
from parleyd_proc import ARTIFACTS, REPO, Server, free_port

HOST = "127.0.0.1"
TEMPLATE = os.path.join(REPO, "deploy", "haproxy.cfg")
BACKEND = "parleyd"                    # the backend of ready nodes in deploy/haproxy.cfg
FALLBACK = "parleyd_fallback"          # the same nodes while none is ready (fail open)
FRONTENDS = ("parley", "parley_tls")   # haproxy.cfg's and haproxy-tls.cfg's
# Two nodes by default: every cross-node path (a send on one node, delivery
# and resume on the other, the bus, the shared store) with a third less of
# the suite's CPU (each node is an ASan process with five PostgreSQL
# connections). The cluster's own tests (test_cluster.py) ask for three.
NODES = int(os.environ.get("PARLEY_CLUSTER_NODES", "2"))
NODE_MODE = os.environ.get("PARLEY_CLUSTER_NODE_MODE", "cluster")   # or "embedded"
DB_USER = "parley"
START_TIMEOUT = 15.0
STOP_TIMEOUT = 15.0


def node_cluster_args(node_id, db_url, redis_url, mode=None):
    """The flags that make a parleyd a node of the cluster: THE one place
    that says it. mode "embedded" leaves out --store/--redis (the nodes then
    share nothing: only for testing this harness)."""
    mode = mode or NODE_MODE
    if mode == "embedded":
        return ["--node-id", str(node_id)]
    if mode != "cluster":
        raise ValueError(f"unknown node mode {mode!r} (cluster or embedded)")
    # two PostgreSQL readers per node, not the default four: each is a
    # backend PostgreSQL starts per node start, and the suites start
    # hundreds of nodes (a cluster subset took 10 % less time, 14 % less
    # CPU); the code they run is the same at any count. A connect timeout
    # of 10 s, not parleyd's 2: on a loaded machine (make test's three
    # workers) PostgreSQL once took longer to take a connection, and a
    # node that cannot connect at start exits
    db_url += ("&" if "?" in db_url else "?") + "connect_timeout=10"
    return ["--store", db_url, "--redis", redis_url, "--node-id", "-1", "--store-readers", "2"]


# --------------------------------------------------------------------------
# helpers


def _wait(pred, timeout, what, on_fail=None, interval=0.02):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            if pred():
                return
        except Exception as e:  # noqa: BLE001 - keep polling, report the last
            last = e
        time.sleep(interval)
    extra = on_fail() if on_fail else ""
    raise AssertionError(f"{what} within {timeout}s (last error: {last!r})\n{extra}")


def http_status(url, timeout=2.0):
    """The status of GET url, or None when nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def _tail(path, n=40, title=None):
    try:
        with open(path, "rb") as f:
            lines = f.read().decode("utf-8", "replace").splitlines()
    except FileNotFoundError:
        return ""
    return f"---- {title or os.path.basename(path)} tail ----\n" + "\n".join(lines[-n:])


def _stop_proc(proc, sig, timeout):
    """Signal and reap; SIGKILL if it will not go. Returns the exit status."""
    if proc is None:
        return None
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            return proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            return proc.wait(timeout=10)
    return proc.returncode


def _is_root():
    return os.geteuid() == 0


def pg_bindir():
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                  key=lambda d: [int(x) for x in d.split("/")[-2].split(".") if x.isdigit()])
    for d in reversed(dirs):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    raise AssertionError("no initdb under /usr/lib/postgresql/*/bin: run scripts/deps-cluster.sh")


# --------------------------------------------------------------------------
# PostgreSQL


Database = collections.namedtuple("Database", "name url")


class PgServer:
    """One PostgreSQL server (a session's), on a free loopback port, its data
    and unix socket in a scratch directory. As root it runs as `postgres`
    (PostgreSQL refuses root); this process is its parent, so stop/kill reap
    it. fsync and synchronous_commit stay on: the tests check durability."""

    user = DB_USER                      # the role the nodes connect as

    def __init__(self, workdir=None, port=None):
        self.workdir = workdir or tempfile.mkdtemp(prefix="parley-pg-")
        self.host = HOST
        self.port = port or free_port()
        self.data_dir = os.path.join(self.workdir, "data")
        self.sock_dir = os.path.join(self.workdir, "run")
        self.log_path = os.path.join(self.workdir, "postgres.log")
        self.bindir = pg_bindir()
        self.proc = None
        self.starts = 0
        self._n = 0
        self._lock = threading.Lock()
        self.timings = {}               # what took how long (s), for reports
        os.makedirs(self.sock_dir, exist_ok=True)
        if _is_root():
            pw = pwd.getpwnam("postgres")
            for d in (self.workdir, self.sock_dir):
                os.chown(d, pw.pw_uid, pw.pw_gid)
        os.chmod(self.workdir, 0o700)

    def _popen_kw(self):
        if _is_root():
            return {"user": "postgres", "group": "postgres", "extra_groups": []}
        return {}

    def url(self, dbname="postgres", user=None):
        return f"postgres://{user or self.user}@{self.host}:{self.port}/{dbname}"

    # ---- lifecycle ----
    def initdb(self):
        if os.path.exists(os.path.join(self.data_dir, "PG_VERSION")):
            return
        t0 = time.monotonic()
        # --no-sync: initdb's own fsyncs only (a scratch cluster); the server
        # itself runs with fsync on.
        r = subprocess.run([os.path.join(self.bindir, "initdb"), "-D", self.data_dir, "-U", "postgres",
                            "--auth-local=trust", "--auth-host=trust", "-E", "UTF8", "--locale=C", "--lc-ctype=C.UTF-8",
                            "--no-sync", "--no-instructions"],
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd="/",
                           **self._popen_kw())
        if r.returncode != 0:
            raise AssertionError(f"initdb failed ({r.returncode}):\n{r.stdout.decode(errors='replace')}")
        self.timings["initdb"] = time.monotonic() - t0

    def start(self):
        assert not self.running(), "PostgreSQL already running"
        self.initdb()
        t0 = time.monotonic()
        self.starts += 1
        cmd = [os.path.join(self.bindir, "postgres"), "-D", self.data_dir,
               "-c", f"listen_addresses={self.host}", "-c", f"port={self.port}",
               "-c", f"unix_socket_directories={self.sock_dir}",
               "-c", "fsync=on", "-c", "synchronous_commit=on",
               "-c", "max_connections=300"]
        with open(self.log_path, "ab") as log:
            log.write(f"=== test harness: start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd="/",
                                         start_new_session=True, **self._popen_kw())
        ready = os.path.join(self.bindir, "pg_isready")

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"postgres exited with {self.proc.returncode}\n{self.log_tail()}")
            return subprocess.run([ready, "-q", "-h", self.host, "-p", str(self.port),
                                   "-U", "postgres"]).returncode == 0

        _wait(up, START_TIMEOUT, "PostgreSQL did not accept connections", self.log_tail, 0.02)
        if self.starts == 1:
            self.psql(f"DO $$BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = '{self.user}') "
                      f"THEN CREATE ROLE {self.user} LOGIN; END IF; END$$")
        self.timings.setdefault("start", time.monotonic() - t0)
        return self

    def stop(self, timeout=STOP_TIMEOUT):
        """Fast shutdown (SIGINT: roll back open transactions, checkpoint)."""
        rc = _stop_proc(self.proc, signal.SIGINT, timeout)
        return rc

    def kill(self):
        """SIGKILL the postmaster and every backend at once (a crash of the
        database machine as PostgreSQL sees it); restart with start()."""
        if not self.running():
            return
        pids = [self.proc.pid] + self._children(self.proc.pid)
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait(timeout=10)
        # orphaned backends are reparented: wait until none is left alive
        _wait(lambda: not [p for p in pids[1:] if _alive(p)], 10, "PostgreSQL backends did not die")

    def restart(self):
        """Stop (fast) and start again on the same port and data."""
        self.stop()
        self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    @staticmethod
    def _children(ppid):
        out = []
        for st in glob.glob("/proc/[0-9]*/stat"):
            try:
                with open(st) as f:
                    fields = f.read().rsplit(")", 1)[1].split()
                if int(fields[1]) == ppid:
                    out.append(int(st.split("/")[2]))
            except (OSError, IndexError, ValueError):
                pass
        return out

    # ---- SQL ----
    def psql(self, sql, db="postgres", user="postgres", check=True):
        """Runs sql with psql over the unix socket; returns stdout (tuples
        only, unaligned: one row a line, columns separated by |)."""
        # bindir's psql: /usr/bin/psql is Debian's perl wrapper (+50 ms a call)
        r = subprocess.run([os.path.join(self.bindir, "psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-tA", "-h", self.sock_dir,
                            "-p", str(self.port), "-U", user, "-d", db, "-c", sql],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        if check and r.returncode != 0:
            raise AssertionError(f"psql failed ({r.returncode}) on {sql!r}: {r.stderr.decode(errors='replace')}")
        return r.stdout.decode()

    def new_database(self, prefix="t", template="template0"):
        """A fresh database owned by the nodes' role: empty (template0), or a
        copy of `template` (e.g. one already migrated, to spare each test's
        nodes the migrations; it must have no open connection)."""
        with self._lock:
            self._n += 1
            name = f"{prefix}_{os.getpid()}_{self._n}"
        t0 = time.monotonic()
        self.psql(f'CREATE DATABASE "{name}" OWNER {self.user} TEMPLATE "{template}"')
        self.timings.setdefault("create_database", time.monotonic() - t0)
        return Database(name, self.url(name))

    def drop_database(self, name):
        """Drops it, closing any connection still open to it."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def databases(self):
        return self.psql("SELECT datname FROM pg_database WHERE NOT datistemplate").split()

    # ---- logs and teardown ----
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return _tail(self.log_path, n, "postgres log")

    def destroy(self):
        self.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _alive(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


# --------------------------------------------------------------------------
# Redis


class RedisError(Exception):
    pass


class RedisServer:
    """One redis-server on a free loopback port, no persistence."""

    def __init__(self, workdir, port=None):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.log_path = os.path.join(workdir, "redis.log")
        self.proc = None
        self.starts = 0
        self.killed_on_purpose = False
        self.stopped_on_purpose = False
        self.problems = []

    @property
    def url(self):
        return f"redis://{self.host}:{self.port}"

    def start(self):
        assert not self.running(), "redis already running"
        self.starts += 1
        cmd = ["redis-server", "--bind", self.host, "--port", str(self.port), "--save", "",
               "--appendonly", "no", "--protected-mode", "yes", "--daemonize", "no",
               "--dir", self.workdir, "--logfile", ""]
        with open(self.log_path, "ab") as log:
            log.write(f"=== test harness: start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        self.killed_on_purpose = False
        self.stopped_on_purpose = False

        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"redis-server exited with {self.proc.returncode}\n"
                                     + _tail(self.log_path))
            return self.ping()

        _wait(up, START_TIMEOUT, "Redis did not answer PING", lambda: _tail(self.log_path))
        return self

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM (redis exits 0). Records a death we did not cause."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            if not (self.killed_on_purpose or self.stopped_on_purpose):
                self.problems.append(f"redis-server died on its own (exit status {rc})")
            return rc
        self.stopped_on_purpose = True
        return _stop_proc(self.proc, signal.SIGTERM, timeout)

    def kill(self):
        """SIGKILL (a crash) and reap."""
        if self.running():
            self.killed_on_purpose = True
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self, kill=False):
        """Stop (or SIGKILL) and start again on the same port, empty."""
        if kill:
            self.kill()
        else:
            self.stop()
        self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    def command(self, *args, timeout=5.0):
        """One command in RESP; returns the decoded reply (str, int, None,
        list), raises RedisError on an error reply."""
        out = b"*%d\r\n" % len(args)
        for a in args:
            a = a if isinstance(a, bytes) else str(a).encode()
            out += b"$%d\r\n%s\r\n" % (len(a), a)
        with socket.create_connection((self.host, self.port), timeout=timeout) as s:
            s.sendall(out)
            return _resp_read(s.makefile("rb"))

    def ping(self):
        try:
            return self.command("PING", timeout=1.0) == "PONG"
        except (OSError, RedisError):
            return False

    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""


def _resp_read(f):
    line = f.readline()
    if not line:
        raise RedisError("connection closed")
    kind, rest = line[:1], line[1:-2]
    if kind == b"+":
        return rest.decode()
    if kind == b"-":
        raise RedisError(rest.decode())
    if kind == b":":
        return int(rest)
    if kind == b"$":
        n = int(rest)
        if n < 0:
            return None
        data = f.read(n + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(rest)
        return None if n < 0 else [_resp_read(f) for _ in range(n)]
    raise RedisError(f"bad reply {line!r}")


# --------------------------------------------------------------------------
# HAProxy


class HAProxy:
    """HAProxy in front of the nodes, from the shipped template. servers is a
    list of (name, host, port); the names are those of the admin socket
    (node0, node1, ...)."""

    def __init__(self, workdir, servers, port=None, template=TEMPLATE):
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.host = HOST
        self.port = port or free_port()
        self.servers = list(servers)
        self.template = template
        self.cfg_path = os.path.join(workdir, "haproxy.cfg")
        self.sock_path = os.path.join(workdir, "admin.sock")
        self.log_path = os.path.join(workdir, "haproxy.log")
        self.proc = None
        self.starts = 0
        self.killed_on_purpose = False
        self.stopped_on_purpose = False
        self.problems = []

    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    PLACEHOLDERS = ("__LB_PORT__", "__STATS_SOCKET__", "__SERVERS__", "__ERRORS_DIR__")

    def render(self):
        with open(self.template) as f:
            text = f.read()
        found = {m for ln in text.splitlines() if not ln.lstrip().startswith("#")
                 for m in re.findall(r"__[A-Z][A-Z_]*__", ln)}
        unknown = found - set(self.PLACEHOLDERS)
        assert not unknown, f"placeholders this harness does not fill in {self.template}: {sorted(unknown)}"
        servers = "".join(f"    server {n} {h}:{p}\n" for n, h, p in self.servers)
        out = []
        for line in text.splitlines(keepends=True):
            if line.strip() == "__SERVERS__":
                out.append(servers)
            elif line.lstrip().startswith("#"):
                out.append(line)
            else:
                out.append(line.replace("__LB_PORT__", str(self.port))
                           .replace("__STATS_SOCKET__", self.sock_path)
                           .replace("__ERRORS_DIR__", os.path.join(REPO, "deploy", "errors")))
        return "".join(out)

    def start(self, wait_routing=True):
        assert not self.running(), "haproxy already running"
        self.starts += 1
        with open(self.cfg_path, "w") as f:
            f.write(self.render())
        cmd = ["haproxy", "-db", "-f", self.cfg_path]
        with open(self.log_path, "ab") as log:
            log.write(f"=== test harness: start #{self.starts}: {' '.join(cmd)}\n".encode())
            log.flush()
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True)
        self.killed_on_purpose = False
        self.stopped_on_purpose = False
        if wait_routing:
            self.wait_routing()
        return self

    def wait_routing(self, timeout=START_TIMEOUT):
        """Until GET /healthz through the frontend answers 200 and every
        server is UP ("UP 1/2" counts: HAProxy starts servers UP and checks
        them within `inter`; our callers saw /readyz 200 on each node)."""
        def up():
            if self.proc.poll() is not None:
                raise AssertionError(f"haproxy exited with {self.proc.returncode}\n{self.log_tail()}")
            return http_status(self.base_url + "/healthz", 1.0) == 200
        _wait(up, timeout, "no 200 for /healthz through HAProxy", self.log_tail)
        self.wait_all_up(timeout)

    def wait_all_up(self, timeout=START_TIMEOUT):
        _wait(lambda: all(s.startswith("UP") for s in self.server_states().values()),
              timeout, "not every server UP in HAProxy",
              lambda: f"states: {self.server_states()}\n{self.log_tail()}")

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM: a hard stop (closes every proxied connection)."""
        if self.proc is None:
            return None
        rc = self.proc.poll()
        if rc is not None:
            if not (self.killed_on_purpose or self.stopped_on_purpose):
                self.problems.append(f"haproxy died on its own (exit status {rc})")
            return rc
        self.stopped_on_purpose = True
        return _stop_proc(self.proc, signal.SIGTERM, timeout)

    def kill(self):
        if self.running():
            self.killed_on_purpose = True
            self.proc.kill()
            self.proc.wait(timeout=10)

    def restart(self):
        self.stop()
        self.start()

    def running(self):
        return self.proc is not None and self.proc.poll() is None

    @property
    def pid(self):
        return self.proc.pid if self.proc else None

    # ---- the admin socket ----
    def admin(self, command, timeout=5.0):
        """One command on the admin socket; returns its answer."""
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(self.sock_path)
            s.sendall(command.encode() + b"\n")
            data = b""
            while True:
                c = s.recv(65536)
                if not c:
                    break
                data += c
        return data.decode()

    def stats(self, backend=BACKEND):
        """`show stat` rows of the nodes in backend (the ready nodes' by
        default): {name: {column: value}} (status, scur: current sessions,
        stot: total sessions, check_status, ...)."""
        text = self.admin("show stat")
        lines = text.splitlines()
        if not lines or not lines[0].startswith("#"):
            raise AssertionError(f"unexpected `show stat` answer: {text[:200]!r}")
        cols = lines[0].lstrip("# ").split(",")
        out = {}
        for ln in lines[1:]:
            row = dict(zip(cols, ln.split(",")))
            if row.get("pxname") == backend and row.get("svname") not in ("BACKEND", None):
                out[row["svname"]] = row
        return out

    def server_states(self, backend=BACKEND):
        """{name: status}: "UP", "UP 1/2" (up, checks pending or failing),
        "DOWN", "DOWN 1/2", "NOLB" (drain), "MAINT", ..."""
        return {n: r["status"] for n, r in self.stats(backend).items()}

    def sessions(self, backend=BACKEND):
        """{name: current sessions} (open proxied connections per node)."""
        return {n: int(r["scur"] or 0) for n, r in self.stats(backend).items()}

    def wait_state(self, name, prefix, timeout=10.0, backend=BACKEND):
        _wait(lambda: self.server_states(backend).get(name, "").startswith(prefix), timeout,
              f"{name} not {prefix} in HAProxy's {backend}",
              lambda: f"states: {self.server_states(backend)}")

    def set_state(self, name, state):
        """ready, drain or maint (the runtime API's `set server ... state`),
        in both backends: the node is in or out, ready or not."""
        for be in (BACKEND, FALLBACK):
            ans = self.admin(f"set server {be}/{name} state {state}")
            assert not ans.strip(), ans

    def set_health_up(self, name):
        """Mark a server UP now in both backends, without waiting for its
        next check (for a node the caller just saw ready)."""
        for be in (BACKEND, FALLBACK):
            ans = self.admin(f"set server {be}/{name} health up")
            assert not ans.strip(), ans

    # ---- logs ----
    def log_text(self):
        try:
            with open(self.log_path, "rb") as f:
                return f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, n=40):
        return _tail(self.log_path, n, "haproxy log")

    def routes(self):
        """Per request logged so far, (backend, node) in order, from the
        httplog lines: `... parley parleyd/node1 ...`, or
        `parleyd_fallback/node1` for one sent while no node was ready."""
        out = []
        for line in self.log_text().splitlines():
            words = line.split()
            # an httplog line: client [date] frontend backend/server ...;
            # health-check lines name servers too, never after a frontend
            for prev, w in zip(words, words[1:]):
                if prev in FRONTENDS and w.startswith((BACKEND + "/", FALLBACK + "/")):
                    out.append(tuple(w.split("/", 1)))
                    break
        return out

    def served_by(self):
        """Per request logged so far, the node that served it, in order
        (whichever backend sent it there)."""
        return [node for _, node in self.routes()]


# --------------------------------------------------------------------------
# the cluster


class Node(Server):
    """A parleyd node: parleyd_proc.Server (same start, kill, restart, stop,
    logs and checks) that remembers it was stopped on purpose, so stopping
    it again (a test stopped it, then teardown stops the cluster) is not
    taken for a death on its own."""

    def __init__(self, binary, workdir, node_id, extra_args=()):
        super().__init__(binary, workdir, extra_args)
        self.node_id = node_id
        self.stopped_on_purpose = False

    def start(self):
        self.stopped_on_purpose = False
        super().start()

    def stop(self, timeout=STOP_TIMEOUT):
        if self.stopped_on_purpose and self.proc is not None and self.proc.poll() is not None:
            return self.proc.returncode
        was_running = self.running()
        rc = super().stop(timeout)
        if was_running:
            self.stopped_on_purpose = True
        return rc



class Cluster:
    """A test's cluster: Redis, N nodes, HAProxy, a database of pg (the
    session's PgServer). Mirrors parleyd_proc.Server: host/port/base_url/
    ws_url are HAProxy's frontend."""

    def __init__(self, binary, workdir, extra_args=(), nodes=None, pg=None, mode=None):
        self.binary = binary
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.extra_args = list(extra_args)
        self.mode = mode or NODE_MODE
        self.own_pg = pg is None
        self.pg = pg
        self.db = None
        n = NODES if nodes is None else nodes
        assert 1 <= n <= 1024, n
        self.redis = RedisServer(os.path.join(workdir, "redis"))
        self.nodes = [Node(binary, os.path.join(workdir, f"node{i}"), i) for i in range(n)]
        self.haproxy = HAProxy(os.path.join(workdir, "haproxy"),
                               [(f"node{i}", s.host, s.port) for i, s in enumerate(self.nodes)])
        self.host = HOST
        self.port = self.haproxy.port
        self.problems = []              # cluster-level; each node has its own
        self.starts = 0
        self.timings = {}               # last start/stop, s, by phase
        self.destroyed = False

    # ---- addresses ----
    @property
    def base_url(self):
        return f"http://{self.host}:{self.port}"

    @property
    def ws_url(self):
        return f"ws://{self.host}:{self.port}/ws"

    @property
    def node_urls(self):
        return [s.base_url for s in self.nodes]

    @property
    def node_ws_urls(self):
        return [s.ws_url for s in self.nodes]

    @property
    def data_dir(self):
        return self.nodes[0].data_dir

    @property
    def log_path(self):
        return self.nodes[0].log_path

    def node_args(self, i):
        """Every flag of node i after CHEAP_HASH: the cluster's, then the
        test's (later flags win)."""
        db_url = self.db.url if self.db else ""
        return node_cluster_args(i, db_url, self.redis.url, self.mode) + self.extra_args

    # ---- lifecycle ----
    def start(self):
        """Start whatever is not running: database (once), Redis, the nodes
        (in parallel, each until /healthz then /readyz answer 200), HAProxy
        (until it routes and every node is UP in it)."""
        t = {}
        t0 = time.monotonic()
        self.starts += 1
        if self.pg is None:
            # its own scratch dir: the postgres user cannot enter our 0700 workdir
            self.pg = PgServer()
        if not self.pg.running():
            self.pg.start()
        if self.db is None:
            self.db = self.pg.new_database()
        t["database"] = time.monotonic() - t0
        t1 = time.monotonic()
        if not self.redis.running():
            self.redis.start()
        t["redis"] = time.monotonic() - t1
        t1 = time.monotonic()
        todo = [i for i, s in enumerate(self.nodes) if not s.running()]
        for i in todo:
            self.nodes[i].extra_args = self.node_args(i)
        self._parallel(lambda i: self.nodes[i].start(), todo)
        self._parallel(self._wait_node_ready, todo)
        t["nodes"] = time.monotonic() - t1
        t1 = time.monotonic()
        if not self.haproxy.running():
            self.haproxy.start()
        else:
            # restarted nodes: back in rotation now, not at the next check
            for i in todo:
                self.haproxy.set_health_up(f"node{i}")
            self.haproxy.wait_all_up()
        t["haproxy"] = time.monotonic() - t1
        t["total"] = time.monotonic() - t0
        self.timings["start"] = t
        return self

    def _wait_node_ready(self, i):
        s = self.nodes[i]
        _wait(lambda: http_status(s.base_url + "/readyz", 1.0) == 200, START_TIMEOUT,
              f"node {i}: /readyz not 200",
              lambda: f"/readyz now: {http_status(s.base_url + '/readyz', 1.0)}\n{s.log_tail(40)}")

    @staticmethod
    def _parallel(fn, items):
        items = list(items)
        if len(items) <= 1:
            for i in items:
                fn(i)
            return
        with concurrent.futures.ThreadPoolExecutor(len(items)) as ex:
            for f in [ex.submit(fn, i) for i in items]:
                f.result()

    def stop(self, timeout=STOP_TIMEOUT):
        """SIGTERM every node at once and wait (each drains; exit statuses
        checked as by Server.stop), then stop HAProxy and Redis. The database
        stays (start() brings the same cluster back); finish() drops it.
        Returns 0 when every node exited 0, else the first other status."""
        t0 = time.monotonic()
        anything = any(x.running() for x in self.nodes + [self.haproxy, self.redis])
        rcs = [None] * len(self.nodes)

        def one(i):
            rcs[i] = self.nodes[i].stop(timeout)
        self._parallel(one, range(len(self.nodes)))
        t1 = time.monotonic()
        self.haproxy.stop()
        self.redis.stop()
        if anything:
            self.timings["stop"] = {"nodes": t1 - t0, "haproxy+redis": time.monotonic() - t1,
                                    "total": time.monotonic() - t0}
        bad = [rc for rc in rcs if rc not in (0, None)]
        return bad[0] if bad else (0 if any(rc == 0 for rc in rcs) else None)

    async def astop(self):
        return await asyncio.to_thread(self.stop)

    def kill(self):
        """SIGKILL every node (the service crashed); the rest keeps running."""
        self._parallel(lambda i: self.nodes[i].kill(), range(len(self.nodes)))

    def restart(self):
        """SIGKILL every node, then start them on the same ports and database."""
        self.kill()
        self.start()

    async def arestart(self):
        await asyncio.to_thread(self.restart)

    def running(self):
        return all(s.running() for s in self.nodes)

    def destroy(self):
        """Stop everything, drop the database, remove the directories."""
        if self.destroyed:
            return
        self.stop()
        if self.db is not None and self.pg is not None and self.pg.running():
            t0 = time.monotonic()
            try:
                self.pg.drop_database(self.db.name)
            except AssertionError as e:
                self.problems.append(f"could not drop database {self.db.name}: {e}")
            self.timings["drop_database"] = time.monotonic() - t0
        if self.own_pg and self.pg is not None:
            self.pg.destroy()
        shutil.rmtree(self.workdir, ignore_errors=True)
        self.destroyed = True

    # ---- logs ----
    def log_text(self):
        """Every node's log, one after the other, each under a header line."""
        return "".join(f"=== node {i} ({s.log_path}) ===\n{s.log_text()}\n"
                       for i, s in enumerate(self.nodes))

    def log_tail(self, n=80):
        per = max(10, n // max(1, len(self.nodes)))
        parts = [f"---- node {i} (port {s.port}) log tail ----\n"
                 + "\n".join(s.log_text().splitlines()[-per:]) for i, s in enumerate(self.nodes)]
        parts.append(self.haproxy.log_tail(min(per, 30)))
        return "\n".join(parts)

    def sanitizer_report(self):
        for i, s in enumerate(self.nodes):
            rep = s.sanitizer_report()
            if rep:
                return f"[node {i}] " + rep
        return None

    def all_problems(self):
        out = [f"[cluster] {p}" for p in self.problems + self.haproxy.problems + self.redis.problems]
        for i, s in enumerate(self.nodes):
            out += [f"[node {i} port {s.port}] {p}" for p in s.problems]
        return out


def finish(clusters, name, test_failed=False):
    """parleyd_proc.finish for clusters (plain Servers in the list are handed
    to it): stops and checks each, keeps logs in test-artifacts/ when
    something went wrong, drops the database, removes the directories, and
    returns problem lines (empty when clean)."""
    if isinstance(clusters, (Cluster, Server)):
        clusters = [clusters]
    problems = []
    for ci, c in enumerate(clusters):
        if not isinstance(c, Cluster):
            problems += parleyd_proc.finish([c], f"{name}-{ci}", test_failed)
            continue
        c.stop()
        for s in c.nodes:
            rep = s.sanitizer_report()
            if rep:
                s.problems.append("sanitizer report in the server log:\n" + rep)
        mine = c.all_problems()
        if mine or test_failed:
            os.makedirs(ARTIFACTS, exist_ok=True)
            logs = [(f"node{i}", s.log_path) for i, s in enumerate(c.nodes)]
            logs += [("haproxy", c.haproxy.log_path), ("redis", c.redis.log_path)]
            for what, path in logs:
                dest = os.path.join(ARTIFACTS, f"{name}-{ci}-{what}.log".replace("/", "_"))
                try:
                    shutil.copyfile(path, dest)
                except OSError:
                    pass
            if c.pg is not None:
                dest = os.path.join(ARTIFACTS, f"{name}-{ci}-postgres-tail.log".replace("/", "_"))
                with open(dest, "w") as f:
                    f.write(c.pg.log_tail(200))
        problems += [f"[cluster {ci} lb port {c.port}] {p}" for p in mine]
        for s in c.nodes:
            if s.problems:
                problems.append(s.log_tail(60))
        before = len(c.problems)
        c.destroy()
        problems += [f"[cluster {ci}] {p}" for p in c.problems[before:]]
    return problems


# --------------------------------------------------------------------------
# the unchanged suite against clusters (a stopgap until conftest has a mode)


def use_clusters_for_servers(nodes=None, mode=None):
    """From now on parleyd_proc.Server(binary, workdir, extra_args) builds a
    Cluster (nodes behind HAProxy, one PostgreSQL for the process, a database
    per cluster) and parleyd_proc.finish is finish() above, so every suite
    that starts its servers through parleyd_proc runs against clusters
    unchanged. It must run before the suites import parleyd_proc's names
    (conftest.py does at import): load this module as a pytest plugin with
    PARLEY_CLUSTER_SUITE=1 set, which calls it on import:

      PARLEY_CLUSTER_SUITE=1 PYTHONPATH=tests PARLEYD=build/asan/parleyd \\
        /usr/bin/python3 -m pytest -p cluster_proc tests/integration

    (PARLEY_CLUSTER_NODES and PARLEY_CLUSTER_NODE_MODE apply as usual.)"""
    import atexit
    shared = {}

    def session_pg():
        if "pg" not in shared:
            pg = PgServer()
            pg.start()
            shared["pg"] = pg
            atexit.register(pg.destroy)
        return shared["pg"]

    class ClusterServer(Cluster):
        def __init__(self, binary, workdir, extra_args=()):
            super().__init__(binary, workdir, extra_args, nodes=nodes, pg=session_pg(), mode=mode)

        @property
        def proc(self):
            # test_ws_conformance checks wsd.proc.poll(): node 0's process
            return self.nodes[0].proc

    parleyd_proc.Server = ClusterServer
    parleyd_proc.finish = finish
    return ClusterServer


if os.environ.get("PARLEY_CLUSTER_SUITE") == "1":
    use_clusters_for_servers()
