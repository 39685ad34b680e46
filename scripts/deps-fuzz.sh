#!/bin/sh
# deps-fuzz.sh — installs what the libFuzzer drivers (tests/fuzz/) need when
# any of it is missing: clang and its fuzzer/sanitizer runtimes (Debian 12:
# clang 14 and libclang-rt-14-dev, which holds libclang_rt.fuzzer).
# Called by mk/fuzz.mk before building the fuzzers; a no-op (no apt-get at
# all) when everything is there.
exec "$(dirname "$0")/deps.sh" clang libclang-rt-14-dev
