#!/bin/sh
# deps-cluster.sh — installs what cluster mode needs when any of it is missing:
# PostgreSQL (server and psql), Redis (server and redis-cli), HAProxy, and the
# client libraries parleyd links against (libpq, hiredis).
# Called by `make test` (TEST_PREREQS in mk/cluster.mk) and by
# scripts/cluster.sh; a no-op when everything is there.
#
# We never use the system-wide services these packages come with: the
# cluster scripts and the test harness start their own PostgreSQL, Redis and
# HAProxy on free loopback ports with their state in a scratch directory. So
# that the install leaves nothing running behind our back (a system
# PostgreSQL on 5432, a redis-server on 6379, haproxy on its default config),
# service starts are refused while apt runs (policy-rc.d, the Debian way),
# unless the machine already has a policy of its own. Whatever is there or
# not, nothing here depends on it.
set -e
PKGS="postgresql postgresql-client redis-server redis-tools haproxy libpq-dev libhiredis-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps-cluster: installing$missing"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive

POLICY=/usr/sbin/policy-rc.d
ours=""
if [ ! -e "$POLICY" ]; then
    # exit 101: "action forbidden by policy"; invoke-rc.d then starts nothing
    printf '#!/bin/sh\n# deps-cluster.sh: no service starts during the install\nexit 101\n' \
        | $SUDO tee "$POLICY" >/dev/null
    $SUDO chmod 755 "$POLICY"
    ours=1
fi
cleanup() { if [ -n "$ours" ]; then $SUDO rm -f "$POLICY"; fi; }
trap cleanup EXIT INT TERM

$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $missing >/dev/null

# The binaries the scripts use, wherever the packages put them.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { echo "deps-cluster: no initdb under /usr/lib/postgresql/*/bin" >&2; exit 1; }
for b in psql redis-server redis-cli haproxy; do
    command -v "$b" >/dev/null 2>&1 || { echo "deps-cluster: $b missing after install" >&2; exit 1; }
done
