#!/bin/bash
# bench-cluster.sh — one parley-bench run against a fresh cluster on this
# machine: PostgreSQL, Redis, N parleyd nodes and HAProxy (scripts/cluster.sh),
# then the bench, then everything down again, also when something failed.
#
#   scripts/bench-cluster.sh [--direct] [--keep] N WORKLOAD [parley-bench options...]
#
#   scripts/bench-cluster.sh 3 dm -n 20 --window 64 --rate max --duration 10 --json out.json
#   scripts/bench-cluster.sh --direct 6 idle -n 100000 --hold 10 --json idle-100k.json
#
# By default the bench connects through HAProxy (`--server LB`: one HAProxy
# process, so at most ~9,900 connections, deploy/README.md); --direct
# connects straight to the nodes (`--server node0,node1,...`: client i to
# node i mod N, the REST set-up spread the same way), which is how more
# connections than that are held. Either way `--server-pid` names every node,
# so the bench reads each node's RSS, descriptors and CPU and sums them.
#
# The nodes run the release build with the flags the bench gives the parleyd
# it starts itself (docs/benchmarks.md): cheap argon2, message rate limits
# off, a 64 MiB slow-consumer bound; PARLEYD_ARGS adds more (later flags win).
#
# Recorded with the result (added to the bench's JSON as "cluster", and
# printed): the nodes and their addresses, the mode, /proc/loadavg before and
# after, the CPU model (lscpu), and the CPU time and memory (RSS and PSS) of
# PostgreSQL (with its backends), Redis and HAProxy over the bench run, which
# the bench itself counts only as "other processes".
#
# Environment:
#   CLUSTER_DIR    state directory (default: a new /tmp/parley-bench-cluster.*,
#                  removed after a clean run unless --keep; kept, with every
#                  log, when the run failed)
#   PARLEYD        node binary (default build/release/parleyd)
#   PARLEY_BENCH   bench binary (default build/release/parley-bench)
#   PARLEYD_ARGS   extra node flags
#
# Exit status: the bench's (0 ok, 1 a failed or incorrect run, 2 usage), or 1
# when the cluster did not come up.
set -uo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3; [ -x "$PY" ] || PY=python3
say() { echo "bench-cluster: $*" >&2; }
usage() {
    sed -n '6,9p' "$0" >&2
    exit 2
}

DIRECT=0
KEEP=0
while [ $# -gt 0 ]; do
    case "$1" in
        --direct) DIRECT=1; shift ;;
        --keep) KEEP=1; shift ;;
        -h|--help) usage ;;
        *) break ;;
    esac
done
N=${1:-}
case "$N" in ''|*[!0-9]*) usage ;; esac
[ "$N" -ge 1 ] || usage
shift
[ $# -ge 1 ] || usage
WORKLOAD=$1
shift

PARLEYD=${PARLEYD:-$ROOT/build/release/parleyd}
BENCH=${PARLEY_BENCH:-$ROOT/build/release/parley-bench}
for b in "$PARLEYD" "$BENCH"; do
    [ -x "$b" ] || { say "no $b: make build/release/parleyd build/release/parley-bench"; exit 1; }
done

# The bench-friendly flags: those parley-bench gives its own parleyd (see
# start_server in bench/main.c), plus quieter logs.
BENCH_FLAGS="--argon2-ops 1 --argon2-mem 64 --log-level warn --rate-user-msgs 0 --rate-conv-msgs 0 --rate-workspace-msgs 0 --max-outbound 67108864"
export PARLEYD
export PARLEYD_ARGS="$BENCH_FLAGS ${PARLEYD_ARGS:-}"

OWN_DIR=0
if [ -z "${CLUSTER_DIR:-}" ]; then
    CLUSTER_DIR=$(mktemp -d /tmp/parley-bench-cluster.XXXXXX) || exit 1
    OWN_DIR=1
fi
mkdir -p "$CLUSTER_DIR"
chmod 755 "$CLUSTER_DIR"        # PostgreSQL runs as `postgres` when we are root
export CLUSTER_DIR

# The bench's --json, or one of ours (to add the cluster's record to).
JSON=""
prev=""
for a in "$@"; do
    case "$a" in --json=*) JSON=${a#--json=} ;; esac
    [ "$prev" = --json ] && JSON=$a
    prev=$a
done
EXTRA=()
if [ -z "$JSON" ]; then
    JSON=$CLUSTER_DIR/result.json
    EXTRA=(--json "$JSON")
fi
rm -f "$JSON"

RC=1
UP=0
cleanup() {
    trap - EXIT INT TERM
    if [ $UP -eq 1 ]; then
        say "bringing the cluster down"
        "$ROOT/scripts/cluster.sh" down >&2 || say "cluster.sh down failed"
    fi
    if [ $RC -eq 0 ] && [ $KEEP -eq 0 ] && [ $OWN_DIR -eq 1 ]; then
        [ "$JSON" = "$CLUSTER_DIR/result.json" ] && say "result (not kept): pass --json PATH to keep it"
        rm -rf "$CLUSTER_DIR"
    else
        say "state and logs kept in $CLUSTER_DIR"
    fi
    exit $RC
}
trap cleanup EXIT
trap 'say interrupted; RC=130; cleanup' INT TERM

LINES=$CLUSTER_DIR/up.lines
say "starting $N nodes in $CLUSTER_DIR"
UP=1                            # from here on, `down` cleans up whatever did start
if ! "$ROOT/scripts/cluster.sh" up "$N" >"$LINES"; then
    say "the cluster did not come up"
    RC=1
    exit 1
fi
cat "$LINES" >&2

LB=$(awk '$1 == "lb" {print $2}' "$LINES")
NODES=$(awk '$1 == "node" {printf "%s%s", sep, $3; sep=","}' "$LINES")
NODE_PIDS=$(awk '$1 == "node" {printf "%s%s", sep, $5; sep=","}' "$LINES")
PG_PID=$(awk '$1 == "postgres" {print $4}' "$LINES")
REDIS_PID=$(awk '$1 == "redis" {print $4}' "$LINES")
HAPROXY_PID=$(head -n1 "$CLUSTER_DIR/haproxy.pid" 2>/dev/null || true)
if [ $DIRECT -eq 1 ]; then SERVER=$NODES; MODE=direct; else SERVER=$LB; MODE=lb; fi
if [ $DIRECT -eq 0 ]; then
    # One HAProxy process carries ~9,900 connections (20,000 descriptors, two
    # per proxied connection): past that the connects queue and fail.
    clients=1000 prev=""
    for a in "$@"; do
        case "$prev" in -n|--clients) clients=$a ;; esac
        case "$a" in --clients=*) clients=${a#--clients=} ;; esac
        prev=$a
    done
    case "$clients" in *[!0-9]*|'') ;; *)
        [ "$clients" -gt 9500 ] && say "warning: $clients connections through one HAProxy process (~9,900 at most, deploy/README.md): use --direct"
    esac
fi
[ -n "$SERVER" ] && [ -n "$NODE_PIDS" ] || { say "cannot read the cluster's addresses from $LINES"; exit 1; }

# CPU ticks of a process and its live descendants (+ the children it reaped:
# PostgreSQL's backends), RSS and PSS summed over them, as a JSON object.
snapshot() {
    "$PY" - "$@" <<'EOF'
import json, os, sys
def stat(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            v = f.read().rsplit(")", 1)[1].split()
        return int(v[1]), int(v[11]) + int(v[12]), int(v[13]) + int(v[14])
    except (OSError, IndexError, ValueError):
        return None
def mem_kib(pid):
    """(RSS, PSS): PSS shares shared pages out among the processes mapping
    them, so PostgreSQL's backends do not each count shared_buffers."""
    rss = pss = 0
    for name, key in (("status", "VmRSS:"), ("smaps_rollup", "Pss:")):
        try:
            with open(f"/proc/{pid}/{name}") as f:
                for line in f:
                    if line.startswith(key):
                        v = int(line.split()[1])
                        if key == "Pss:":
                            pss = v
                        else:
                            rss = v
                        break
        except OSError:
            pass
    return rss, pss
kids = {}
for d in os.listdir("/proc"):
    if d.isdigit():
        s = stat(int(d))
        if s:
            kids.setdefault(s[0], []).append(int(d))
out = {}
for arg in sys.argv[1:]:
    name, _, pid = arg.partition("=")
    if not pid.isdigit() or stat(int(pid)) is None:
        continue
    ticks, rss, pss, todo, n = 0, 0, 0, [int(pid)], 0
    while todo:
        p = todo.pop()
        s = stat(p)
        if s is None:
            continue
        ticks += s[1] + (s[2] if p == int(pid) else 0)
        r, q = mem_kib(p)
        rss += r
        pss += q
        n += 1
        todo += kids.get(p, [])
    out[name] = {"pid": int(pid), "ticks": ticks, "rss_kib": rss, "pss_kib": pss, "processes": n}
print(json.dumps(out))
EOF
}
COMPONENTS=(postgres="$PG_PID" redis="$REDIS_PID" haproxy="$HAPROXY_PID")
i=0
for p in ${NODE_PIDS//,/ }; do COMPONENTS+=("node$i=$p"); i=$((i + 1)); done

MODEL=$(lscpu 2>/dev/null | sed -n 's/^Model name:[[:space:]]*//p' | head -n1)
LOAD_BEFORE=$(cat /proc/loadavg)
SNAP_BEFORE=$(snapshot "${COMPONENTS[@]}")
T0=$(date +%s.%N)
CMD=("$BENCH" "$WORKLOAD" --server "$SERVER" --server-pid "$NODE_PIDS" "$@" "${EXTRA[@]}")
say "${CMD[*]}"
"${CMD[@]}"
RC=$?
T1=$(date +%s.%N)
SNAP_AFTER=$(snapshot "${COMPONENTS[@]}")
LOAD_AFTER=$(cat /proc/loadavg)

# Node logs at --log-level warn: anything beyond the start line is a warning.
LOG_LINES=0
for f in "$CLUSTER_DIR"/node*.log; do
    [ -f "$f" ] || continue
    n=$(grep -vc '^=== cluster.sh' "$f" || true)
    LOG_LINES=$((LOG_LINES + n))
done

RECORD=$(MODE=$MODE N=$N LB=$LB NODES=$NODES NODE_PIDS=$NODE_PIDS MODEL=$MODEL \
    LOAD_BEFORE=$LOAD_BEFORE LOAD_AFTER=$LOAD_AFTER SNAP_BEFORE=$SNAP_BEFORE SNAP_AFTER=$SNAP_AFTER \
    T0=$T0 T1=$T1 LOG_LINES=$LOG_LINES JSON=$JSON RC=$RC "$PY" - <<'EOF'
import json, os
e = os.environ
hz = os.sysconf("SC_CLK_TCK")
secs = float(e["T1"]) - float(e["T0"])
a, b = json.loads(e["SNAP_BEFORE"]), json.loads(e["SNAP_AFTER"])
comp = {}
for name in b:
    if name in a:
        cpu_s = (b[name]["ticks"] - a[name]["ticks"]) / hz
        comp[name] = {"pid": b[name]["pid"], "cpu_s": round(cpu_s, 2),
                      "cpu_pct": round(100 * cpu_s / secs, 1) if secs > 0 else 0,
                      "rss_kib": b[name]["rss_kib"], "pss_kib": b[name]["pss_kib"],
                      "processes": b[name]["processes"]}
rec = {"nodes": int(e["N"]), "mode": e["MODE"], "lb": e["LB"], "node_addresses": e["NODES"].split(","),
       "node_pids": [int(p) for p in e["NODE_PIDS"].split(",")], "cpu_model": e["MODEL"],
       "loadavg_before": e["LOAD_BEFORE"], "loadavg_after": e["LOAD_AFTER"],
       "bench_wall_s": round(secs, 2), "bench_exit": int(e["RC"]), "components": comp,
       "node_log_lines": int(e["LOG_LINES"]),
       "parleyd_args": os.environ.get("PARLEYD_ARGS", "")}
path = e["JSON"]
if os.path.exists(path):
    with open(path) as f:
        res = json.load(f)
    res["cluster"] = rec
    with open(path, "w") as f:
        json.dump(res, f, indent=2)
lines = [f"cluster      {rec['nodes']} nodes, bench {'straight to the nodes' if rec['mode'] == 'direct' else 'through HAProxy ' + rec['lb']}; "
         f"CPU: {rec['cpu_model']}",
         f"             loadavg before: {rec['loadavg_before']}; after: {rec['loadavg_after']}",
         "             over the bench run ({:.1f} s): ".format(secs) + "; ".join(
             f"{k} {v['cpu_pct']:.0f}% CPU, PSS {v['pss_kib'] / 1024:.1f} MiB"
             for k, v in comp.items() if not k.startswith("node")),
         "             nodes: " + "; ".join(f"{k} {v['cpu_pct']:.0f}% CPU, RSS {v['rss_kib'] / 1024:.1f} MiB"
                                         for k, v in comp.items() if k.startswith("node"))]
if rec["node_log_lines"]:
    lines.append(f"             node logs: {rec['node_log_lines']} warning/error lines (kept in the state directory)")
print("\n".join(lines))
EOF
)
echo "$RECORD"
if [ "$LOG_LINES" -gt 0 ]; then
    for f in "$CLUSTER_DIR"/node*.log; do
        grep -v '^=== cluster.sh' "$f" | tail -n 5 | sed "s|^|$(basename "$f"): |" >&2
    done
    [ $RC -eq 0 ] && KEEP=1     # keep the logs to look at
fi
exit $RC
