#!/bin/bash
# cluster.sh — a Parley cluster on this machine, on loopback, in the background.
#
#   scripts/cluster.sh up N     start PostgreSQL, Redis, N parleyd nodes and
#                               HAProxy in front; print one line per component.
#                               On a running cluster of N: start again the
#                               nodes that died or are draining (SIGTERM)
#   scripts/cluster.sh status   print the same lines for what is running
#   scripts/cluster.sh down     stop everything `up` started (parleyd first,
#                               with SIGTERM, so it drains); keep data and logs
#
# `up` prints, on stdout, exactly (everything else goes to stderr):
#   postgres 127.0.0.1:PORT pid PID
#   redis 127.0.0.1:PORT pid PID
#   node I 127.0.0.1:PORT pid PID        (one per node, I = 0..N-1 = --node-id)
#   lb 127.0.0.1:PORT                    (HAProxy: point clients here)
#
# Environment:
#   CLUSTER_DIR    state directory (default build/cluster): PostgreSQL's data
#                  (pg/), node data dirs (nodeI/), logs (postgres.log,
#                  redis.log, nodeI.log, haproxy.log), pid files, the
#                  generated haproxy.cfg and cluster.env (ports)
#   PARLEYD        the binary (default build/release/parleyd)
#   PARLEYD_ARGS   extra flags for every node (split on blanks)
#   CLUSTER_TRACE=1 trace each command with a timestamp
#   CLUSTER_NODE_MODE=embedded
#                  start the nodes without --store/--redis (each on its own
#                  SQLite): to try the infrastructure with a server that has
#                  no cluster flags yet. PostgreSQL and Redis still start.
#
# Every service listens on 127.0.0.1 on a free port chosen at `up`.
# PostgreSQL refuses to run as root: as root, it runs as the `postgres` user
# (its data dir and socket dir are chowned to it). The database is `parley`,
# owned by the role `parley`; loopback connections are trusted (a local dev
# cluster, never exposed). Data persists across down/up; rm -rf $CLUSTER_DIR
# starts from scratch.
set -euo pipefail
# CLUSTER_TRACE=1: trace every command with a timestamp (on stderr).
if [ -n "${CLUSTER_TRACE:-}" ]; then PS4='+ $EPOCHREALTIME '; set -x; fi

ROOT=$(cd "$(dirname "$0")/.." && pwd)
abspath() { case "$1" in /*) printf '%s\n' "$1" ;; *) printf '%s\n' "$PWD/$1" ;; esac; }
CLUSTER_DIR=$(abspath "${CLUSTER_DIR:-$ROOT/build/cluster}")
PARLEYD=$(abspath "${PARLEYD:-$ROOT/build/release/parleyd}")
PARLEYD_ARGS=${PARLEYD_ARGS:-}
CLUSTER_NODE_MODE=${CLUSTER_NODE_MODE:-cluster}
HOST=127.0.0.1
DB_NAME=parley
DB_USER=parley
STATE=$CLUSTER_DIR/cluster.env
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
START_TIMEOUT=${CLUSTER_START_TIMEOUT:-30}   # s, per component
STOP_TIMEOUT=${CLUSTER_STOP_TIMEOUT:-30}     # s, parleyd's drain (shutdown-grace 10 s) and the rest

say() { echo "cluster: $*" >&2; }
die() { say "$*"; exit 1; }

# ---- processes -------------------------------------------------------------

# alive PID NAME: the process exists, is not a zombie, and its command line
# mentions NAME (so a recycled pid is never mistaken for ours).
alive() {
    local pid=$1 name=$2 st
    [ -n "$pid" ] && [ -r "/proc/$pid/stat" ] || return 1
    st=$(sed 's/^.*) //' "/proc/$pid/stat" 2>/dev/null | cut -d' ' -f1) || return 1
    [ "$st" != Z ] || return 1
    { tr '\0' ' ' < "/proc/$pid/cmdline"; } 2>/dev/null | grep -q -- "$name"   # it may exit meanwhile
}

pidof_file() { [ -f "$1" ] && head -n1 "$1" || true; }

# starting PID NAME: alive, or still this script's own fork before its exec
# (the same command line as ours): a check made that early read a launch
# that had not yet become NAME as one that exited (CI: "redis-server exited",
# with no log yet, on a loaded machine).
starting() {
    alive "$1" "$2" && return 0
    [ -n "$1" ] && cmp -s "/proc/$1/cmdline" "/proc/$$/cmdline" 2>/dev/null
}

# wait_gone PID NAME SECONDS: 0 when it exited in time.
wait_gone() {
    local pid=$1 name=$2 t=$(( $3 * 10 ))
    while alive "$pid" "$name"; do
        [ $t -le 0 ] && return 1
        t=$((t - 1)); sleep 0.1
    done
    return 0
}

# stop_pid FILE NAME SIGNAL WHAT: signal, wait, SIGKILL if it will not go.
stop_pid() {
    local file=$1 name=$2 sig=$3 what=$4 pid
    pid=$(pidof_file "$file")
    if alive "$pid" "$name"; then
        kill "-$sig" "$pid" 2>/dev/null || true
        if ! wait_gone "$pid" "$name" "$STOP_TIMEOUT"; then
            say "$what (pid $pid) still running ${STOP_TIMEOUT}s after SIG$sig: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" "$name" 5 || say "$what (pid $pid) survives SIGKILL"
        fi
    fi
    rm -f "$file"
}

# ---- probes ----------------------------------------------------------------

# free_ports N: N distinct free loopback ports (all bound at once, then freed).
free_ports() {
    "$PY" - "$1" <<'EOF'
import socket, sys
socks = []
for _ in range(int(sys.argv[1])):
    s = socket.socket(); s.bind(("127.0.0.1", 0)); socks.append(s)
print(" ".join(str(s.getsockname()[1]) for s in socks))
EOF
}

# http_status PORT PATH: the status code of GET PATH on 127.0.0.1:PORT, 000 if none.
http_status() {
    local line="" code
    { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || { echo 000; return 0; }
    printf 'GET %s HTTP/1.0\r\nHost: %s:%s\r\n\r\n' "$2" "$HOST" "$1" >&3 2>/dev/null || true
    IFS= read -r -t 3 line <&3 || true
    exec 3<&- 3>&-
    code=$(printf '%s' "$line" | cut -d' ' -f2)
    case "$code" in [0-9][0-9][0-9]) echo "$code" ;; *) echo 000 ;; esac
}

port_open() { { exec 3<>"/dev/tcp/$HOST/$1"; } 2>/dev/null || return 1; exec 3<&- 3>&-; }

# haproxy_states SOCKET: "name status" per server of backend parleyd (the
# ready nodes), from `show stat`; backend parleyd_fallback, the same nodes
# used only while none is ready, is left out.
haproxy_states() {
    "$PY" - "$1" <<'EOF'
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(3)
s.connect(sys.argv[1])
s.sendall(b"show stat\n")
data = b""
while True:
    c = s.recv(65536)
    if not c:
        break
    data += c
lines = data.decode().splitlines()
cols = lines[0].lstrip("# ").split(",")
for ln in lines[1:]:
    f = dict(zip(cols, ln.split(",")))
    if f.get("pxname") == "parleyd" and f.get("svname") not in ("BACKEND", None):
        print(f["svname"], f["status"].replace(" ", "_"))
EOF
}

tail_log() { [ -f "$1" ] && { echo "---- tail of $1 ----"; tail -n "${2:-20}" "$1"; } >&2 || true; }

# ---- PostgreSQL ------------------------------------------------------------

PGBIN=$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1 || true)
as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
psql_pg() { "$PGBIN/psql" -X -q -v ON_ERROR_STOP=1 -tA -h "$HOST" -p "$PG_PORT" -U postgres -d postgres "$@"; }

start_postgres() {
    local pgdata=$CLUSTER_DIR/pg log=$CLUSTER_DIR/postgres.log pid
    [ -n "$PGBIN" ] && [ -x "$PGBIN/initdb" ] || die "no initdb under /usr/lib/postgresql/*/bin"
    if [ ! -f "$pgdata/PG_VERSION" ]; then
        mkdir -p "$pgdata"
        [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$pgdata"
        chmod 700 "$pgdata"
        as_pg test -w "$pgdata" || die "the postgres user cannot write $pgdata (is a parent directory private?): set CLUSTER_DIR to a directory it can reach, e.g. /tmp/parley-cluster"
        say "initdb $pgdata"
        as_pg "$PGBIN/initdb" -D "$pgdata" -U postgres --auth-local=trust --auth-host=trust \
            -E UTF8 --locale=C --lc-ctype=C.UTF-8 --no-instructions >"$CLUSTER_DIR/initdb.log" 2>&1 \
            || { tail_log "$CLUSTER_DIR/initdb.log"; die "initdb failed"; }
    fi
    touch "$log"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$log"
    as_pg "$PGBIN/pg_ctl" -D "$pgdata" -l "$log" -w -t "$START_TIMEOUT" -s \
        -o "-c listen_addresses=$HOST -c port=$PG_PORT -c unix_socket_directories=$SOCK_DIR -c fsync=on -c max_connections=300" \
        start >&2 || { tail_log "$log"; fail "PostgreSQL did not start"; }
    pid=$(head -n1 "$pgdata/postmaster.pid")
    echo "$pid" > "$CLUSTER_DIR/postgres.pid"
    local t=$((START_TIMEOUT * 10))
    until "$PGBIN/pg_isready" -q -h "$HOST" -p "$PG_PORT"; do
        [ $t -le 0 ] && { tail_log "$log"; fail "PostgreSQL does not accept connections"; }
        t=$((t - 1)); sleep 0.1
    done
    [ -n "$(psql_pg -c "SELECT 1 FROM pg_roles WHERE rolname = '$DB_USER'")" ] \
        || psql_pg -c "CREATE ROLE $DB_USER LOGIN" || fail "cannot create role $DB_USER"
    [ -n "$(psql_pg -c "SELECT 1 FROM pg_database WHERE datname = '$DB_NAME'")" ] \
        || psql_pg -c "CREATE DATABASE $DB_NAME OWNER $DB_USER" || fail "cannot create database $DB_NAME"
}

stop_postgres() {
    local pgdata=$CLUSTER_DIR/pg pid
    pid=$(pidof_file "$CLUSTER_DIR/postgres.pid")
    if alive "$pid" postgres; then
        as_pg "$PGBIN/pg_ctl" -D "$pgdata" -m fast -w -t "$STOP_TIMEOUT" -s stop >&2 || true
        if alive "$pid" postgres; then
            say "PostgreSQL (pid $pid) still running after pg_ctl stop: SIGQUIT"
            kill -QUIT "$pid" 2>/dev/null || true
            wait_gone "$pid" postgres 10 || kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$CLUSTER_DIR/postgres.pid"
}

# ---- Redis, parleyd, HAProxy -------------------------------------------------

start_redis() {
    local log=$CLUSTER_DIR/redis.log
    mkdir -p "$CLUSTER_DIR/redis"
    setsid redis-server --bind "$HOST" --port "$REDIS_PORT" --save '' --appendonly no \
        --daemonize no --protected-mode yes --dir "$CLUSTER_DIR/redis" --logfile '' \
        >>"$log" 2>&1 </dev/null &
    echo $! > "$CLUSTER_DIR/redis.pid"
    local t=$((START_TIMEOUT * 10))
    until [ "$(redis-cli -h "$HOST" -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; do
        starting "$(pidof_file "$CLUSTER_DIR/redis.pid")" redis-server || { tail_log "$log"; fail "redis-server exited"; }
        [ $t -le 0 ] && { tail_log "$log"; fail "Redis does not answer PING"; }
        t=$((t - 1)); sleep 0.1
    done
}

# The cluster flags of node I: the one place that says how a node joins.
node_args() {
    if [ "$CLUSTER_NODE_MODE" = embedded ]; then
        echo "--node-id $1"
    else
        # one blob store for every node (a shared mount in production):
        # any node serves any upload
        echo "--store postgres://$DB_USER@$HOST:$PG_PORT/$DB_NAME --redis redis://$HOST:$REDIS_PORT --node-id $1 --media-dir $CLUSTER_DIR/media"
    fi
}

launch_node() {
    local i=$1 port log cmd
    port=$(node_port "$i")
    log=$CLUSTER_DIR/node$i.log
    mkdir -p "$CLUSTER_DIR/node$i" "$CLUSTER_DIR/media"
    chmod 700 "$CLUSTER_DIR/node$i" "$CLUSTER_DIR/media"    # parleyd warns of an open data directory
    # shellcheck disable=SC2206  # PARLEYD_ARGS is split on blanks on purpose
    cmd=("$PARLEYD" --listen "$HOST:$port" --data-dir "$CLUSTER_DIR/node$i" $(node_args "$i") $PARLEYD_ARGS)
    echo "=== cluster.sh $(date -u +%FT%TZ): ${cmd[*]}" >>"$log"
    (cd "$CLUSTER_DIR/node$i" && exec setsid "${cmd[@]}" >>"$log" 2>&1 </dev/null) &
    echo $! > "$CLUSTER_DIR/node$i.pid"
}

# Node i exited during startup. A node killed before this `up` (SIGKILL, a
# crash) keeps its --node-id leased for up to 10 s: then start it again
# once a second until the lease has expired (within the deadline).
relaunch_if_leased() {
    local i=$1 deadline=$2 log=$CLUSTER_DIR/node$1.log
    if [ $SECONDS -lt "$deadline" ] && tail -n 3 "$log" | grep -q "is in use by another live parleyd"; then
        [ -n "${LEASE_NOTE[$i]:-}" ] || echo "cluster: node $i: its id is still leased by a node that died; waiting for the lease to expire (up to 10 s)" >&2
        LEASE_NOTE[$i]=1
        sleep 1
        launch_node "$i"
        return 0
    fi
    tail_log "$log"
    fail "node $i exited during startup"
}

# start_nodes [I...]: starts nodes I... (all N without arguments) and waits
# until each is healthy and ready.
start_nodes() {
    local i port ids=("$@")
    [ ${#ids[@]} -gt 0 ] || for ((i = 0; i < N; i++)); do ids+=("$i"); done
    LEASE_NOTE=()
    for i in "${ids[@]}"; do launch_node "$i"; done
    local deadline=$((SECONDS + START_TIMEOUT))
    for i in "${ids[@]}"; do
        port=$(node_port "$i")
        until [ "$(http_status "$port" /healthz)" = 200 ]; do
            starting "$(pidof_file "$CLUSTER_DIR/node$i.pid")" parleyd || { relaunch_if_leased "$i" "$deadline"; continue; }
            [ $SECONDS -ge $deadline ] && { tail_log "$CLUSTER_DIR/node$i.log"; fail "node $i: /healthz not 200 within ${START_TIMEOUT}s"; }
            sleep 0.05
        done
    done
    # Ready: /readyz 200 (in cluster mode: its database and Redis reachable).
    for i in "${ids[@]}"; do
        port=$(node_port "$i")
        until [ "$(http_status "$port" /readyz)" = 200 ]; do
            starting "$(pidof_file "$CLUSTER_DIR/node$i.pid")" parleyd || { tail_log "$CLUSTER_DIR/node$i.log"; fail "node $i exited during startup"; }
            [ $SECONDS -ge $deadline ] && { tail_log "$CLUSTER_DIR/node$i.log"; fail "node $i: /readyz $(http_status "$port" /readyz), not 200, within ${START_TIMEOUT}s"; }
            sleep 0.05
        done
    done
}

# The config from deploy/haproxy.cfg: every __SERVERS__ line (one per
# backend) becomes the same server lines, as in tests/cluster_proc.py.
start_haproxy() {
    local cfg=$CLUSTER_DIR/haproxy.cfg log=$CLUSTER_DIR/haproxy.log servers="" i
    for ((i = 0; i < N; i++)); do
        servers+="    server node$i $HOST:$(node_port "$i")"$'\n'
    done
    SERVERS="$servers" awk -v port="$LB_PORT" -v sock="$SOCK_DIR/haproxy.sock" -v errs="$ROOT/deploy/errors" '
        $0 == "__SERVERS__" { printf "%s", ENVIRON["SERVERS"]; next }
        /^[ \t]*#/ { print; next }
        { gsub(/__LB_PORT__/, port); gsub(/__STATS_SOCKET__/, sock); gsub(/__ERRORS_DIR__/, errs); print }
    ' "$ROOT/deploy/haproxy.cfg" > "$cfg"
    local unknown
    unknown=$(grep -v '^[[:space:]]*#' "$ROOT/deploy/haproxy.cfg" | grep -o '__[A-Z][A-Z_]*__' \
              | grep -vx -e __LB_PORT__ -e __STATS_SOCKET__ -e __SERVERS__ -e __ERRORS_DIR__ || true)
    [ -z "$unknown" ] || fail "deploy/haproxy.cfg has placeholders this script does not fill in: $(echo $unknown)"
    haproxy -c -q -f "$cfg" >&2 || fail "HAProxy refuses $cfg"
    setsid haproxy -db -f "$cfg" >>"$log" 2>&1 </dev/null &
    echo $! > "$CLUSTER_DIR/haproxy.pid"
    local deadline=$((SECONDS + START_TIMEOUT))
    until [ "$(http_status "$LB_PORT" /healthz)" = 200 ]; do
        starting "$(pidof_file "$CLUSTER_DIR/haproxy.pid")" haproxy || { tail_log "$log"; fail "haproxy exited"; }
        [ $SECONDS -ge $deadline ] && { tail_log "$log"; fail "no 200 for /healthz through HAProxy within ${START_TIMEOUT}s"; }
        sleep 0.05
    done
    # Every node in rotation. HAProxy starts with every server UP ("UP 1/2"
    # until its first check, within `inter`); the nodes answered /readyz 200
    # just before, so UP in any form will do.
    local states
    while :; do
        states=$(haproxy_states "$SOCK_DIR/haproxy.sock" 2>/dev/null || true)
        [ -n "$states" ] && ! printf '%s\n' "$states" | grep -qv ' UP' && break
        if [ $SECONDS -ge $deadline ]; then
            for ((i = 0; i < N; i++)); do
                say "node $i: /readyz $(http_status "$(node_port "$i")" /readyz)"
            done
            say "HAProxy server states: $(echo $states)"
            fail "not every node is UP in HAProxy within ${START_TIMEOUT}s"
        fi
        sleep 0.1
    done
}

# ---- state -----------------------------------------------------------------

node_port() { local v="NODE$1_PORT"; echo "${!v}"; }

load_state() {
    [ -f "$STATE" ] || return 1
    # shellcheck disable=SC1090
    . "$STATE"
}

# print_lines: the component lines for what is alive; 1 if anything is not.
print_lines() {
    local rc=0 pid i
    pid=$(pidof_file "$CLUSTER_DIR/postgres.pid")
    if alive "$pid" postgres; then echo "postgres $HOST:$PG_PORT pid $pid"; else say "postgres is not running"; rc=1; fi
    pid=$(pidof_file "$CLUSTER_DIR/redis.pid")
    if alive "$pid" redis-server; then echo "redis $HOST:$REDIS_PORT pid $pid"; else say "redis is not running"; rc=1; fi
    for ((i = 0; i < N; i++)); do
        pid=$(pidof_file "$CLUSTER_DIR/node$i.pid")
        if alive "$pid" parleyd; then echo "node $i $HOST:$(node_port "$i") pid $pid"; else say "node $i is not running"; rc=1; fi
    done
    pid=$(pidof_file "$CLUSTER_DIR/haproxy.pid")
    if alive "$pid" haproxy; then echo "lb $HOST:$LB_PORT"; else say "haproxy (lb) is not running"; rc=1; fi
    return $rc
}

# count_alive: how many of our pid files name a live process of ours.
# PostgreSQL, Redis and HAProxy all running.
services_alive() {
    alive "$(pidof_file "$CLUSTER_DIR/postgres.pid")" postgres &&
        alive "$(pidof_file "$CLUSTER_DIR/redis.pid")" redis-server &&
        alive "$(pidof_file "$CLUSTER_DIR/haproxy.pid")" haproxy
}

# `up N` on a cluster of N whose only missing processes are nodes (killed,
# crashed): starts those again, on their ports, the rest serving on.
restart_dead_nodes() {
    local i dead=()
    for ((i = 0; i < N; i++)); do
        alive "$(pidof_file "$CLUSTER_DIR/node$i.pid")" parleyd || dead+=("$i")
    done
    say "restarting node${dead[1]:+s} ${dead[*]} (the others keep serving)"
    start_nodes "${dead[@]}"
    print_lines
}

# `up N` right after a node's SIGTERM: the node drains (up to its
# --shutdown-grace, ~2 s with clients that answer the close) before it
# exits, so it is still alive, yet it will be gone in a moment. A node whose
# process is alive but whose port refuses connections is such a node: parleyd
# closes its listener only when it stops. Wait for it to exit, so that
# restart_dead_nodes starts it again; if it does not exit within
# STOP_TIMEOUT, say so and stop (it is not killed: it is finishing its work).
wait_draining_nodes() {
    local i pid
    for ((i = 0; i < N; i++)); do
        pid=$(pidof_file "$CLUSTER_DIR/node$i.pid")
        alive "$pid" parleyd || continue
        port_open "$(node_port "$i")" && continue
        say "node $i (pid $pid) is draining (its port $(node_port "$i") is closed): waiting for it to exit (up to ${STOP_TIMEOUT}s), then starting it again"
        wait_gone "$pid" parleyd "$STOP_TIMEOUT" \
            || die "node $i (pid $pid) is still draining after ${STOP_TIMEOUT}s: run \`$0 up $N\` again once it has exited"
    done
}

count_alive() {
    local n=0 f
    alive "$(pidof_file "$CLUSTER_DIR/postgres.pid")" postgres && n=$((n + 1))
    alive "$(pidof_file "$CLUSTER_DIR/redis.pid")" redis-server && n=$((n + 1))
    alive "$(pidof_file "$CLUSTER_DIR/haproxy.pid")" haproxy && n=$((n + 1))
    for f in "$CLUSTER_DIR"/node*.pid; do
        [ -f "$f" ] && alive "$(pidof_file "$f")" parleyd && n=$((n + 1))
    done
    echo $n
}

do_down() {
    local f pid pids=()
    load_state || true
    # parleyd first, all at once: SIGTERM drains (readyz 503, reconnect hints).
    for f in "$CLUSTER_DIR"/node*.pid; do
        [ -f "$f" ] || continue
        pid=$(pidof_file "$f")
        if alive "$pid" parleyd; then kill -TERM "$pid" 2>/dev/null || true; pids+=("$pid"); fi
    done
    for pid in "${pids[@]}"; do
        if ! wait_gone "$pid" parleyd "$STOP_TIMEOUT"; then
            say "parleyd (pid $pid) still running ${STOP_TIMEOUT}s after SIGTERM: SIGKILL"
            kill -KILL "$pid" 2>/dev/null || true
            wait_gone "$pid" parleyd 5 || true
        fi
    done
    rm -f "$CLUSTER_DIR"/node*.pid
    stop_pid "$CLUSTER_DIR/haproxy.pid" haproxy TERM haproxy
    stop_pid "$CLUSTER_DIR/redis.pid" redis-server TERM redis
    [ -n "$PGBIN" ] && stop_postgres
    if [ -n "${SOCK_DIR:-}" ] && [ "$SOCK_DIR" != "$CLUSTER_DIR/run" ]; then rm -rf "$SOCK_DIR"; fi
    rm -f "$STATE"
}

# fail MSG: a component did not come up: stop what did, and exit 1.
fail() {
    say "$1"
    say "stopping what was started (logs stay in $CLUSTER_DIR)"
    do_down
    exit 1
}

# ---- commands --------------------------------------------------------------

cmd_up() {
    N=${1:-}
    case "$N" in ''|*[!0-9]*) { say "usage: $0 up N   (N nodes, 1..1024)"; exit 2; } ;; esac
    [ "$N" -ge 1 ] && [ "$N" -le 1024 ] || die "N must be 1..1024 (node ids 0..1023)"
    if [ -f "$STATE" ] || ls "$CLUSTER_DIR"/*.pid >/dev/null 2>&1; then
        local live want
        live=$(count_alive)
        if [ "$live" -gt 0 ]; then
            load_state || die "processes of a cluster are running but $STATE is missing: run $0 down"
            local running=${N_RUNNING:-0} asked=$N
            want=$((running + 3))
            N=$running
            if [ "$running" -eq "$asked" ]; then
                wait_draining_nodes
                live=$(count_alive)
            fi
            if [ "$live" -eq "$want" ] && [ "$running" -eq "$asked" ]; then
                say "already up ($CLUSTER_DIR); \`$0 down\` first to restart"
                print_lines
                return 0
            fi
            if [ "$running" -eq "$asked" ] && services_alive; then
                restart_dead_nodes
                return 0
            fi
            print_lines || true
            die "already up with $running nodes ($live of $want processes alive), asked for $asked: run $0 down first"
        fi
        say "cleaning up the state of a cluster that is no longer running"
        do_down
    fi

    "$ROOT/scripts/deps-cluster.sh" >&2
    [ -x "$PARLEYD" ] || die "no parleyd at $PARLEYD: run \`make\` (or set PARLEYD)"
    for b in redis-server redis-cli haproxy psql; do command -v "$b" >/dev/null || die "$b not found"; done

    mkdir -p "$CLUSTER_DIR"
    # Unix socket paths are limited to 107 bytes: keep the sockets nearby when
    # the state directory's path is short enough, else in /tmp.
    SOCK_DIR=$CLUSTER_DIR/run
    if [ ${#SOCK_DIR} -gt 80 ]; then SOCK_DIR=$(mktemp -d /tmp/parley-cluster.XXXXXX); fi
    mkdir -p "$SOCK_DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$SOCK_DIR"
    chmod 755 "$SOCK_DIR"

    local ports i
    read -r -a ports <<<"$(free_ports $((N + 3)))"
    PG_PORT=${ports[0]}; REDIS_PORT=${ports[1]}; LB_PORT=${ports[2]}
    {
        echo "N_RUNNING=$N"
        echo "PG_PORT=$PG_PORT"
        echo "REDIS_PORT=$REDIS_PORT"
        echo "LB_PORT=$LB_PORT"
        echo "SOCK_DIR=$SOCK_DIR"
        for ((i = 0; i < N; i++)); do echo "NODE${i}_PORT=${ports[$((i + 3))]}"; done
    } > "$STATE"
    load_state

    start_postgres
    start_redis
    start_nodes
    start_haproxy
    print_lines
}

cmd_status() {
    load_state || { say "not up ($CLUSTER_DIR)"; return 1; }
    N=$N_RUNNING
    print_lines
}

cmd_down() {
    if [ ! -f "$STATE" ] && ! ls "$CLUSTER_DIR"/*.pid >/dev/null 2>&1; then
        say "not up ($CLUSTER_DIR)"
        return 0
    fi
    do_down
    say "down (data and logs kept in $CLUSTER_DIR)"
}

case "${1:-}" in
    up) shift; cmd_up "$@" ;;
    down) cmd_down ;;
    status) cmd_status ;;
    *) echo "usage: $0 up N | status | down" >&2; exit 2 ;;
esac
