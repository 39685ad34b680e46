#!/bin/sh
# bench-side-by-side.sh — issue 11's comparison: parleyd and the uWS peer
# (../shared/peers, copied to build/peers) measured alternately with the same
# parley-bench binary, ROUNDS rounds, each run's load average recorded.
#
#   scripts/bench-side-by-side.sh [OUT_DIR] [ROUNDS]
#
# Writes OUT_DIR/<round>-<workload>-<server>.txt (the bench's report; .json
# beside it) and prints one summary line per run. Needs `make release` and
# `cp -r ../shared/peers build/peers && (cd build/peers && npm install)`.
# Takes ~15 minutes for 3 rounds. Run it on a quiet machine: every other
# process takes CPU from one of the two sides.
set -eu
OUT=${1:-/tmp/sbs}
ROUNDS=${2:-3}
B=build/release/parley-bench
mkdir -p "$OUT"
[ -x "$B" ] || { echo "build first: make release" >&2; exit 1; }
[ -d build/peers/node_modules ] || { echo "copy the peers first (see the header)" >&2; exit 1; }

# workload name and bench arguments; dm-half runs at half of this round's
# parleyd dm-max (parleyd only: the brief's latency target)
WORKLOADS=${WORKLOADS:-"group dm-max dm-20k idle storm"}
args() {
    case $1 in
    group)  echo "group -n 1000 --senders 100 --window 4 --workers 2 --duration 10" ;;
    dm-max) echo "dm -n 20 --window 64 --rate max --duration 10" ;;
    dm-20k) echo "dm -n 20 --window 64 --rate 20000 --duration 10" ;;
    idle)   echo "idle -n 19000 --hold 3" ;;
    storm)  echo "storm -n 19000 --group-size 10 --rate 2000 --offline 1" ;;
    esac
}

summary() {   # one line out of a report
    f=$1
    printf '%-28s load %-5s ' "$(basename "$f" .txt)" "$(sed -n 's/.*load average \([0-9.]*\) at start.*/\1/p' "$f")"
    grep -E '^  (run|cpu|latency|storm|result)' "$f" | sed 's/^  *//' | tr '\n' '|' | cut -c1-400
    echo
}

run() {   # round workload server
    r=$1 w=$2 s=$3
    f="$OUT/$r-$w-$s.txt"
    a=$(args "$w")
    if [ "$s" = parleyd ]; then
        $B $a --json "${f%.txt}.json" >"$f" 2>&1 || true
    else
        port=$((9100 + r))
        node build/peers/server-uws.js --port $port --scrypt-n 16 >/dev/null 2>&1 &
        pid=$!
        sleep 1
        $B $a --server 127.0.0.1:$port --server-pid $pid --json "${f%.txt}.json" >"$f" 2>&1 || true
        kill $pid 2>/dev/null || true
        wait $pid 2>/dev/null || true
    fi
    summary "$f"
}

for r in $(seq 1 "$ROUNDS"); do
    for w in $WORKLOADS; do
        run "$r" "$w" parleyd
        run "$r" "$w" uws
    done
    peak=$(sed -n 's/.*max: \([0-9,]*\) msg\/s acked.*/\1/p' "$OUT/$r-dm-max-parleyd.txt" 2>/dev/null | tr -d ,)
    if [ -n "$peak" ]; then
        f="$OUT/$r-dm-half-parleyd.txt"
        $B dm -n 20 --window 64 --rate $((peak / 2)) --duration 10 --json "${f%.txt}.json" >"$f" 2>&1 || true
        summary "$f"
    fi
done
