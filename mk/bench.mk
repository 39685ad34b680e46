# bench.mk — parley-bench, the load generator (bench/), and its smoke tests.
#
#   make build/release/parley-bench    build it (also built by `make test`)
#   make bench                         run the default suite against an
#                                      embedded parleyd; JSON in build/bench/
#   make bench BENCH_SERVER=127.0.0.1:8080 [BENCH_SERVER_PID=1234]
#                                      ... against a running parleyd instead
#   make bench BENCH_ARGS="--addrs 16"  extra options for every run
#   make bench-cluster [BENCH_CLUSTER_NODES=3] [BENCH_CLUSTER_DIRECT=1]
#                                      dm, group and storm against a fresh
#                                      cluster each (scripts/bench-cluster.sh):
#                                      N nodes on PostgreSQL and Redis, the
#                                      bench through HAProxy (or, DIRECT=1,
#                                      straight to the nodes)
#   make bench-cluster-100k            100,000 idle connections held by 6 nodes
#
# parley-bench reuses the server's WebSocket framing (src/ws/ws.c, client
# mode) and core helpers, compiled once for the release build.

BENCH_SRC  := $(sort $(wildcard bench/*.c))
BENCH_HDR  := $(wildcard bench/*.h)
BENCH_OBJ  := $(patsubst bench/%.c,build/release/bench/%.o,$(BENCH_SRC))
BENCH_DEPS := build/release/obj/ws/ws.o build/release/obj/core/utf8.o build/release/obj/core/alloc.o \
              build/release/obj/core/buf.o build/release/obj/core/map.o

build/release/bench/%.o: bench/%.c $(BENCH_HDR) src/ws/ws.h src/core/utf8.h src/core/buf.h src/core/map.h src/core/alloc.h
	@mkdir -p $(dir $@)
	$(CC) $(REL_CFLAGS) -Isrc -c $< -o $@

# Only what the bench uses (not the server's libvips and friends: each
# process start would load them).
BENCH_LDLIBS := $(shell pkg-config --libs jansson libssl libcrypto libsodium 2>/dev/null) -lpthread -lm

build/release/parley-bench: $(BENCH_OBJ) $(BENCH_DEPS)
	$(CC) $(REL_CFLAGS) -o $@ $^ $(BENCH_LDLIBS)

# `make` builds it too (adds to the top-level `all`).
all: build/release/parley-bench

TEST_PREREQS += build/release/parley-bench
PYTEST_PATHS += tests/bench

# The default suite: the figures docs/benchmarks.md records. Each run stays
# well under three minutes on the project's machine (2 cores).
BENCH_OUT  ?= build/bench
BENCH_ARGS ?=
ifdef BENCH_SERVER
BENCH_ARGS += --server $(BENCH_SERVER) $(if $(BENCH_SERVER_PID),--server-pid $(BENCH_SERVER_PID))
endif
BENCH      := build/release/parley-bench

.PHONY: bench
bench: build/release/parleyd build/release/parley-bench
	@mkdir -p $(BENCH_OUT)
	$(BENCH) idle  -n 19000 --hold 5 --json $(BENCH_OUT)/idle-19000.json $(BENCH_ARGS)
	$(BENCH) dm    -n 20 --window 64 --rate max --duration 10 --json $(BENCH_OUT)/dm-max.json $(BENCH_ARGS)
	$(BENCH) dm    -n 20 --window 64 --rate 50% --probe 5 --duration 10 --json $(BENCH_OUT)/dm-half.json $(BENCH_ARGS)
	$(BENCH) dm    -n 2000 --window 8 --rate 10000 --duration 10 --json $(BENCH_OUT)/dm-2000.json $(BENCH_ARGS)
	$(BENCH) group -n 1000 --senders 100 --window 4 --workers 2 --duration 10 --json $(BENCH_OUT)/group-max.json $(BENCH_ARGS)
	$(BENCH) group -n 1000 --senders 100 --rate 1000 --workers 2 --duration 10 --json $(BENCH_OUT)/group-1m.json $(BENCH_ARGS)
	$(BENCH) storm -n 10000 --group-size 10 --rate 2000 --offline 1 --json $(BENCH_OUT)/storm-10000.json $(BENCH_ARGS)
	@echo "parley-bench: JSON results in $(BENCH_OUT)/"

# The same dm, group and storm runs against a cluster; JSON (with the
# cluster's record: nodes, loadavg, CPU model, PostgreSQL/Redis/HAProxy CPU)
# in build/bench/clusterN[-direct]-*.json. Differences from `bench`, on
# purpose: group at max gets --timeout 120 (its delivery backlog, tens of
# seconds at max, outlasts the default 30 s of waiting whenever the machine
# is busy, embedded or not), a group run at a fixed 300 msg/s (300,000
# deliveries/s) gives latency, and the storm always connects straight to the
# nodes: its 10,000 clients and a feeder exceed what one HAProxy process
# carries (9,900: the 101 left over time out at the handshake).
BENCH_CLUSTER_NODES  ?= 3
BENCH_CLUSTER_ARGS   ?=
BENCH_CLUSTER_TAG    := cluster$(BENCH_CLUSTER_NODES)$(if $(BENCH_CLUSTER_DIRECT),-direct)
BENCH_CLUSTER        := scripts/bench-cluster.sh $(if $(BENCH_CLUSTER_DIRECT),--direct) $(BENCH_CLUSTER_NODES)

.PHONY: bench-cluster bench-cluster-100k
bench-cluster: build/release/parleyd build/release/parley-bench
	@mkdir -p $(BENCH_OUT)
	$(BENCH_CLUSTER) dm    -n 20 --window 64 --rate max --duration 10 --json $(BENCH_OUT)/$(BENCH_CLUSTER_TAG)-dm-max.json $(BENCH_CLUSTER_ARGS)
	$(BENCH_CLUSTER) group -n 1000 --senders 100 --window 4 --workers 2 --duration 10 --timeout 120 --json $(BENCH_OUT)/$(BENCH_CLUSTER_TAG)-group-max.json $(BENCH_CLUSTER_ARGS)
	$(BENCH_CLUSTER) group -n 1000 --senders 100 --rate 300 --workers 2 --duration 10 --json $(BENCH_OUT)/$(BENCH_CLUSTER_TAG)-group-300.json $(BENCH_CLUSTER_ARGS)
	scripts/bench-cluster.sh --direct $(BENCH_CLUSTER_NODES) storm -n 10000 --group-size 10 --rate 2000 --offline 1 --json $(BENCH_OUT)/cluster$(BENCH_CLUSTER_NODES)-direct-storm-10000.json $(BENCH_CLUSTER_ARGS)
	@echo "parley-bench: JSON results in $(BENCH_OUT)/$(BENCH_CLUSTER_TAG)-*.json"

# 100,000 authenticated idle WebSockets on 6 nodes, straight to the nodes
# (one HAProxy process carries ~9,900: deploy/README.md); ~4 minutes, most of
# it registering the users and opening the connections.
bench-cluster-100k: build/release/parleyd build/release/parley-bench
	@mkdir -p $(BENCH_OUT)
	scripts/bench-cluster.sh --direct 6 idle -n 100000 --hold 10 --connect-conc 128 --json $(BENCH_OUT)/cluster6-idle-100000.json $(BENCH_CLUSTER_ARGS)
