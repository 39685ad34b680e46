#!/bin/sh
# deps.sh — installs the Debian packages Parley needs when any is missing.
# Called by `make run` and `make test`; a no-op when everything is there.
# With arguments, installs those packages instead (scripts/deps-fuzz.sh).
set -e
PKGS="gcc make pkg-config libuv1-dev libjansson-dev libsodium-dev libsqlite3-dev
libssl-dev libpq-dev libhiredis-dev libmagic-dev libvips-dev libcurl4-openssl-dev libpcre2-dev libicu-dev
libmimalloc-dev
python3-pytest python3-pytest-xdist python3-websockets python3-aiohttp openssl curl
python3-nacl"
[ $# -gt 0 ] && PKGS="$*"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps: installing$missing"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $missing >/dev/null
