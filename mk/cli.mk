# cli.mk — `parley`, the command-line client (cli/), and its tests.
#
#   make build/release/parley    the -O2 build (also built by `make`)
#   make build/asan/parley       ASan + UBSan, what tests/integration/test_cli.py
#                                runs (built by `make test` before the suites)
#   make cli-test                only the CLI's integration tests (both modes;
#                                PARLEY_MODES=embedded for one)
#
# parley is a client of the REST API and the event stream: libcurl (HTTP/1.1,
# TLS), jansson, and three helpers of src/core (allocation that aborts on
# OOM, the string builder, UTF-8 validation), compiled once per build type
# with the server's objects. It links nothing else of the server's.

CLI_SRC       := $(sort $(wildcard cli/*.c))
CLI_HDR       := $(wildcard cli/*.h) src/core/alloc.h src/core/buf.h src/core/utf8.h src/core/codec.h src/core/version.h
CLI_CORE      := core/alloc.o core/buf.o core/utf8.o
CLI_CFLAGS    := -Isrc $(shell pkg-config --cflags libcurl jansson 2>/dev/null)
CLI_LDLIBS    := $(shell pkg-config --libs libcurl jansson 2>/dev/null)
CLI_REL_OBJ   := $(patsubst cli/%.c,build/release/cli/%.o,$(CLI_SRC))
CLI_ASAN_OBJ  := $(patsubst cli/%.c,build/asan/cli/%.o,$(CLI_SRC))

build/release/cli/%.o: cli/%.c $(CLI_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) $(CLI_CFLAGS) -c $< -o $@

build/asan/cli/%.o: cli/%.c $(CLI_HDR)
	@mkdir -p $(dir $@)
	$(CC) $(ASAN_CFLAGS) $(CLI_CFLAGS) -c $< -o $@

build/release/parley: $(CLI_REL_OBJ) $(addprefix build/release/obj/,$(CLI_CORE))
	$(CC) $(REL_CFLAGS) -o $@ $^ $(CLI_LDLIBS)

build/asan/parley: $(CLI_ASAN_OBJ) $(addprefix build/asan/obj/,$(CLI_CORE))
	$(CC) $(ASAN_CFLAGS) -o $@ $^ $(CLI_LDLIBS)

# `make` builds it too (adds to the top-level `all`); tests use the ASan one.
all: build/release/parley
TEST_PREREQS += build/asan/parley

.PHONY: cli-test
cli-test: build/asan/parleyd build/asan/parley
	PARLEYD=$(CURDIR)/build/asan/parleyd PARLEY_CLI=$(CURDIR)/build/asan/parley \
	  $(PY) -m pytest -q -p no:cacheprovider tests/integration/test_cli.py
