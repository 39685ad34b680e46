#!/bin/bash
# pg-scratch.sh — a throwaway PostgreSQL for tests (the store's contract
# tests against PostgreSQL, mk/pgtest.mk's `make unit-pg`).
#
#   scripts/pg-scratch.sh start DIR    initdb into DIR/data if needed, start the
#                                      server on 127.0.0.1 (a free port, kept in
#                                      DIR/port and reused by the next start) with
#                                      its unix socket in DIR; print its URL
#                                      postgres://postgres@127.0.0.1:PORT/postgres
#   scripts/pg-scratch.sh stop DIR     stop it (fast shutdown); keep the data
#   scripts/pg-scratch.sh restart DIR  stop, then start on the same port
#   scripts/pg-scratch.sh url DIR      print the URL of the running server
#
# Idempotent: start on a running server prints its URL, stop on a stopped one
# does nothing. The server runs as the `postgres` user (PostgreSQL refuses to
# run as root), so DIR is made owned by it; loopback connections are trusted
# (a test server, never exposed). fsync stays on: the tests measure durable
# commits. Only stdout carries the URL; progress and errors go to stderr.
set -euo pipefail

PGBIN=${PGBIN:-/usr/lib/postgresql/15/bin}
HOST=127.0.0.1
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3

say() { echo "pg-scratch: $*" >&2; }
die() { say "$*"; exit 1; }
usage() { die "usage: $0 start|stop|restart|url DIR"; }

[ $# -eq 2 ] || usage
CMD=$1
case "$2" in /*) DIR=$2 ;; *) DIR=$PWD/$2 ;; esac
DATA=$DIR/data
LOG=$DIR/postgres.log

as_pg() { if [ "$(id -u)" -eq 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }

running() { [ -f "$DATA/postmaster.pid" ] && as_pg "$PGBIN/pg_ctl" -D "$DATA" status >/dev/null 2>&1; }

url() { echo "postgres://postgres@$HOST:$(cat "$DIR/port")/postgres"; }

free_port() {
    "$PY" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

init() {
    [ -x "$PGBIN/initdb" ] || die "no initdb in $PGBIN (install postgresql)"
    mkdir -p "$DIR"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$DIR"
    chmod 700 "$DIR"
    as_pg test -w "$DIR" || die "the postgres user cannot write $DIR (is a parent directory private?)"
    [ -f "$DATA/PG_VERSION" ] && return 0
    say "initdb $DATA"
    as_pg "$PGBIN/initdb" -D "$DATA" -U postgres --auth=trust -E UTF8 --locale=C --lc-ctype=C.UTF-8 \
        --no-instructions >"$DIR/initdb.log" 2>&1 \
        || { tail -n 20 "$DIR/initdb.log" >&2; die "initdb failed"; }
}

# start_on PORT: 0 when the server runs and accepts connections.
start_on() {
    touch "$LOG"
    [ "$(id -u)" -eq 0 ] && chown postgres:postgres "$LOG"
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -l "$LOG" -w -t 30 -s \
        -o "-c listen_addresses=$HOST -c port=$1 -c unix_socket_directories=$DIR -c fsync=on -c max_connections=200" \
        start >&2 || return 1
    local t=100
    until "$PGBIN/pg_isready" -q -h "$HOST" -p "$1"; do
        [ $t -le 0 ] && return 1
        t=$((t - 1)); sleep 0.1
    done
}

start() {
    init
    if running; then url; return 0; fi
    local port tries=0
    port=$(cat "$DIR/port" 2>/dev/null || true)
    [ -n "$port" ] || port=$(free_port)
    until echo "$port" > "$DIR/port" && start_on "$port"; do
        tries=$((tries + 1))
        [ $tries -ge 3 ] && { tail -n 20 "$LOG" >&2; die "PostgreSQL did not start (see $LOG)"; }
        running && as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w -s stop >&2 || true
        say "port $port unusable, trying another"
        port=$(free_port)
    done
    url
}

stop() {
    [ -f "$DATA/PG_VERSION" ] || return 0
    running || return 0
    as_pg "$PGBIN/pg_ctl" -D "$DATA" -m fast -w -t 30 -s stop >&2 \
        || as_pg "$PGBIN/pg_ctl" -D "$DATA" -m immediate -w -t 30 -s stop >&2
}

case "$CMD" in
    start) start ;;
    stop) stop ;;
    restart) stop; start ;;
    url) running || die "not running"; url ;;
    *) usage ;;
esac
