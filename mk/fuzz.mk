# fuzz.mk — libFuzzer drivers for the parsers (tests/fuzz/) and their smoke run.
#
#   make build/fuzz/fuzz_ws     build one driver (also fuzz_http, fuzz_proto)
#   make fuzz                   run each driver FUZZ_SECONDS (default 300) on a
#                               working copy of its corpus in build/fuzz/;
#                               crashes land in build/fuzz/artifacts/
#   make test                   builds the drivers and runs tests/fuzz, which
#                               fuzzes each one for ~15 s (a smoke run)
#
# The drivers need clang with its fuzzer runtime: scripts/deps-fuzz.sh
# installs it when missing, before the first driver is built. Each driver is
# linked with only the sources it exercises, compiled here with clang and
# -fsanitize=fuzzer,address,undefined (not the gcc objects of build/asan).

FUZZ_CC      ?= clang
FUZZ_SECONDS ?= 300
FUZZ_TARGETS := http ws proto bus cursor_id tls_rec filter
FUZZ_BINS    := $(addprefix build/fuzz/fuzz_,$(FUZZ_TARGETS))
FUZZ_PKGS    := jansson libsodium libcrypto libssl libpcre2-8
FUZZ_CFLAGS  := -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -Wno-unused-parameter \
                -g -O1 -fno-omit-frame-pointer -fsanitize=fuzzer,address,undefined \
                -fno-sanitize-recover=undefined -Isrc -Itests/fuzz \
                $(shell pkg-config --cflags $(FUZZ_PKGS) 2>/dev/null)
FUZZ_LDLIBS  := $(shell pkg-config --libs $(FUZZ_PKGS) 2>/dev/null)

FUZZ_SRC_http  := src/http/http_parser.c
FUZZ_SRC_ws    := src/ws/ws.c src/core/utf8.c src/core/alloc.c
FUZZ_SRC_proto := src/proto/proto.c src/proto/proto_actions.c src/proto/proto_search.c src/core/utf8.c src/core/buf.c src/core/alloc.c
FUZZ_SRC_bus   := src/bus/bus_codec.c src/core/buf.c src/core/alloc.c
FUZZ_SRC_cursor_id := src/proto/cursor_id.c src/core/buf.c src/core/alloc.c
FUZZ_SRC_tls_rec := src/net/tls_rec.c src/net/tls.c src/core/alloc.c
FUZZ_SRC_filter := src/chat/filter.c src/core/utf8.c src/core/alloc.c

TEST_PREREQS += $(FUZZ_BINS)
PYTEST_PATHS += tests/fuzz

.PHONY: fuzz fuzz-deps
fuzz-deps:
	@scripts/deps-fuzz.sh

# One rule per driver; fuzz-deps is order-only: it runs first, but never
# forces a rebuild.
define FUZZ_RULE
build/fuzz/fuzz_$(1): tests/fuzz/fuzz_$(1).c tests/fuzz/fuzz.h $(FUZZ_SRC_$(1)) $(HDR) | fuzz-deps
	@mkdir -p build/fuzz
	$(FUZZ_CC) $(FUZZ_CFLAGS) -o $$@ $$< $(FUZZ_SRC_$(1)) $(FUZZ_LDLIBS)
endef
$(foreach t,$(FUZZ_TARGETS),$(eval $(call FUZZ_RULE,$(t))))

# The committed corpus (tests/fuzz/corpus/<target>) seeds a working corpus in
# build/fuzz/corpus/<target>, which keeps what the runs find; copy inputs
# worth keeping back by hand (small ones, with a name that says why).
fuzz: $(FUZZ_BINS)
	@for t in $(FUZZ_TARGETS); do \
	    mkdir -p build/fuzz/corpus/$$t build/fuzz/artifacts && \
	    cp -n tests/fuzz/corpus/$$t/* build/fuzz/corpus/$$t/ && \
	    echo "fuzz: $$t for $(FUZZ_SECONDS) s" && \
	    build/fuzz/fuzz_$$t -max_total_time=$(FUZZ_SECONDS) -timeout=10 -rss_limit_mb=2048 \
	        -print_final_stats=1 -artifact_prefix=build/fuzz/artifacts/$$t- \
	        build/fuzz/corpus/$$t || exit 1; \
	done
