# pgtest.mk — the store's contract tests against a throwaway PostgreSQL.
#
#   make unit-pg    build the unit tests, start PostgreSQL in $(PG_UNIT_DIR)
#                   (scripts/pg-scratch.sh: initdb on first use, a free
#                   loopback port), run the store_ tests against it
#                   (PARLEY_TEST_PG: each test gets a fresh database), then
#                   stop the server, also when a test fails or on Ctrl-C
#
# PARLEY_TEST_PG_DIR lets store_pg_server_restart stop and start the server
# mid-test. PARLEY_PG_BENCH=1 adds the send throughput measurement
# (store_pg_bench_sends). The server's data stays in $(PG_UNIT_DIR) between
# runs (old test databases are dropped by the next run); rm -rf it to start
# over.

PG_UNIT_DIR ?= build/pg-unit

.PHONY: unit-pg
unit-pg: build/asan/unit-tests
	@dir=$(abspath $(PG_UNIT_DIR)); \
	  trap 'scripts/pg-scratch.sh stop "$$dir" || true' EXIT INT TERM; \
	  url=$$(scripts/pg-scratch.sh start "$$dir") || exit 1; \
	  echo "unit-pg: PostgreSQL at $$url ($$dir)"; \
	  PARLEY_TEST_PG="$$url" PARLEY_TEST_PG_DIR="$$dir" \
	  PARLEY_TEST_PG_SCRIPT=$(CURDIR)/scripts/pg-scratch.sh \
	  ASAN_OPTIONS=detect_leaks=1 build/asan/unit-tests store_
