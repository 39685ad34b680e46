#!/bin/bash
# test-suites.sh — the suites of `make test`, side by side (Makefile `test`).
#
#   scripts/test-suites.sh     run `make unit` and `make unit-pg` in the
#                              background (each output in build/<suite>.log,
#                              one line said when it ends, the whole log when
#                              it failed) while `make integration` runs in
#                              the foreground with its output live
#
# The unit suites wait more than they compute (a minute or so each), so
# beside the integration run they cost it little and the whole less than
# one after the other. Exit status: 0 when all three passed. The output
# ends with a test runner's summary line: pytest's, or, when a unit suite
# failed, that suite's `N passed, N failed`.
set -u
cd "$(dirname "$0")/.."
MAKE=${MAKE:-make}
mkdir -p build

bg_suite() {                      # bg_suite NAME: make NAME into build/NAME.log
    ( $MAKE --no-print-directory "$1" >"build/$1.log" 2>&1
      rc=$?
      echo "$rc" >"build/$1.rc"
      echo "[$1: $(tail -n 1 "build/$1.log") (exit $rc; build/$1.log)]" ) &
}

rm -f build/unit.rc build/unit-pg.rc
bg_suite unit
bg_suite unit-pg
$MAKE --no-print-directory integration
it=$?
wait
failed=0
for s in unit unit-pg; do
    rc=$(cat "build/$s.rc" 2>/dev/null || echo 1)
    if [ "$rc" != 0 ]; then
        failed=1
        echo "==== $s failed (exit $rc): build/$s.log ===="
        cat "build/$s.log"
    fi
done
[ "$it" = 0 ] && [ "$failed" = 0 ]
