# cluster.mk — what cluster mode needs on the machine, and a local cluster.
#
#   make cluster-deps                  install PostgreSQL, Redis, HAProxy,
#                                      libpq-dev and libhiredis-dev when
#                                      missing (also run by `make test`)
#   make cluster-up [CLUSTER_NODES=3]  build the release parleyd, then
#                                      scripts/cluster.sh up: PostgreSQL,
#                                      Redis, the nodes and HAProxy on
#                                      loopback, state in build/cluster
#   make cluster-status | cluster-down
#
# scripts/cluster.sh documents its environment (CLUSTER_DIR, PARLEYD,
# PARLEYD_ARGS); deploy/README.md explains the HAProxy config. The pytest
# harness for clusters is tests/cluster_proc.py.

CLUSTER_NODES ?= 3

.PHONY: cluster-deps cluster-up cluster-down cluster-status
TEST_PREREQS += cluster-deps

cluster-deps:
	@scripts/deps-cluster.sh

cluster-up: build/release/parleyd
	@scripts/cluster.sh up $(CLUSTER_NODES)

cluster-status:
	@scripts/cluster.sh status

cluster-down:
	@scripts/cluster.sh down
