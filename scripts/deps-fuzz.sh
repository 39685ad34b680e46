#!/bin/sh
# deps-fuzz.sh — installs what the libFuzzer drivers (tests/fuzz/) need when
# any of it is missing: clang and its fuzzer/sanitizer runtimes (Debian 12:
# clang 14 and libclang-rt-14-dev, which holds libclang_rt.fuzzer).
# Called by mk/fuzz.mk before building the fuzzers; a no-op when everything
# is there, so it runs no apt-get at all on a machine that has them.
set -e
PKGS="clang libclang-rt-14-dev"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
echo "deps-fuzz: installing$missing"
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq $missing >/dev/null
