# Parley — build, run and test.
#   make run    install missing packages, build parleyd and parley, start parleyd (embedded)
#               on 127.0.0.1:8080
#   make test   install missing packages, build with ASan+UBSan, run every test suite:
#               unit tests (SQLite), the store contract tests against PostgreSQL,
#               then one pytest run (integration suite in embedded and cluster
#               mode, browser, bench smoke, fuzz smoke)
#   make        release build only (build/release/: parleyd, parley, parley-bench)
#   make release  the release parleyd and parley-bench (the benchmarks' build)

ifeq ($(origin CC),default)
CC := gcc
endif
PKGS    := libuv jansson libsodium sqlite3 libssl libcrypto libpq hiredis libmagic vips libcurl libpcre2-8 icu-uc icu-i18n
CFLAGS_COMMON := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow \
                 -Wno-unused-parameter -g -pthread \
                 $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LDLIBS  := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

REL_CFLAGS  := $(CFLAGS_COMMON) -O2
ASAN_CFLAGS := $(CFLAGS_COMMON) -O1 -fno-omit-frame-pointer \
               -fsanitize=address,undefined -fno-sanitize-recover=undefined

SRC      := $(sort $(wildcard src/*/*.c))
LIB_SRC  := $(filter-out src/app/main.c,$(SRC))
HDR      := $(wildcard src/*/*.h)
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))

REL_OBJ  := $(patsubst src/%.c,build/release/obj/%.o,$(SRC))
ASAN_OBJ := $(patsubst src/%.c,build/asan/obj/%.o,$(SRC))
ASAN_LIB_OBJ := $(patsubst src/%.c,build/asan/obj/%.o,$(LIB_SRC))

# `make run LISTEN=host:port DATA_DIR=dir`: given, they become flags; not
# given, parleyd's own defaults (127.0.0.1:8080, ./parley-data) apply, and
# with them PARLEY_LISTEN, PARLEY_DATA_DIR or a --config file's lines.
LISTEN   ?=
DATA_DIR ?=
PY       := /usr/bin/python3

.PHONY: all run test unit integration deps clean asan release
all: build/release/parleyd

# what the benchmarks use (docs/benchmarks.md): parleyd and parley-bench, -O2
release: build/release/parleyd build/release/parley-bench

# Fragments in mk/ add tools and suites (bench, fuzz, browser tests). Each may
# append to TEST_PREREQS (built before the suites run) and PYTEST_PATHS (run
# by the one pytest invocation that ends `make test`).
TEST_PREREQS :=
PYTEST_PATHS := tests/integration
include $(wildcard mk/*.mk)

deps:
	@scripts/deps.sh

build/release/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -c $< -o $@

build/asan/obj/%.o: src/%.c $(HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) -c $< -o $@

# The release server allocates with mimalloc (docs/design.md "Dependencies"):
# linked first, it takes malloc and free for every library in the process.
# The ASan build keeps the sanitizer's allocator.
build/release/parleyd: $(REL_OBJ)
	$(CC) $(REL_CFLAGS) -o $@ $^ -lmimalloc $(LDLIBS)

build/asan/parleyd: $(ASAN_OBJ)
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(LDLIBS)

# The unit test list is generated from the TEST(name) definitions.
build/asan/list.h: $(UNIT_SRC)
	@mkdir -p $(dir $@)
	@grep -ho '^TEST([a-z0-9_]*)' $(UNIT_SRC) /dev/null | sed 's/^TEST(\(.*\))/TEST_ENTRY(\1)/' > $@.tmp
	@mv $@.tmp $@

build/asan/unit-tests: tests/unit/main.c $(UNIT_SRC) build/asan/list.h $(ASAN_LIB_OBJ) tests/unit/test.h
	$(CC) $(ASAN_CFLAGS) -Ibuild/asan -Isrc -o $@ tests/unit/main.c $(UNIT_SRC) $(ASAN_LIB_OBJ) $(LDLIBS)

asan: build/asan/parleyd build/asan/unit-tests

# builds the command line too: the README's examples use it beside the server
run: deps
	@$(MAKE) --no-print-directory build/release/parleyd build/release/parley
	build/release/parleyd$(if $(LISTEN), --listen $(LISTEN))$(if $(DATA_DIR), --data-dir $(DATA_DIR))

unit: build/asan/unit-tests
	ASAN_OPTIONS=detect_leaks=1 build/asan/unit-tests

# The suites run on three pytest-xdist workers on two cores (the tests wait
# on servers more than they compute: on a slow 2-core machine 1,133 s on
# two workers, 1,081 s on three, the browser scenarios spread through the
# run: tests/browser/conftest.py); each worker starts its own PostgreSQL
# and takes its own third of the free ports (tests/parleyd_proc.py
# free_port). PYTEST_WORKERS=0 runs them in one process.
PYTEST_WORKERS ?= 3
integration: build/asan/parleyd $(TEST_PREREQS)
	PARLEYD=$(CURDIR)/build/asan/parleyd PARLEYD_RELEASE=$(CURDIR)/build/release/parleyd \
	  $(PY) -m pytest -q -p no:cacheprovider --durations=15 \
	  $(if $(filter-out 0,$(PYTEST_WORKERS)),-n $(PYTEST_WORKERS)) $(PYTEST_PATHS)

# `make test` builds on both cores (the packages first, one apt-get at a
# time), then runs the three suites side by side (scripts/test-suites.sh):
# the unit suites (a minute or so each, waiting more than they compute) in
# the background beside the first of the integration run, whose output is
# live and whose summary line ends it.
test: deps
	@$(MAKE) --no-print-directory $(filter %-deps,$(TEST_PREREQS)) fuzz-deps
	@$(MAKE) --no-print-directory -j2 asan build/release/parleyd $(TEST_PREREQS)
	@MAKE="$(MAKE)" scripts/test-suites.sh

clean:
	rm -rf build
