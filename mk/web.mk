# web.mk — the web client's browser tests (tests/browser).
# `make test` installs Debian's chromium and playwright-core (npm, into
# tests/browser/node_modules, never committed) before the suites run, then the
# one pytest run includes tests/browser.

.PHONY: browser-deps browser-test
TEST_PREREQS += browser-deps
PYTEST_PATHS += tests/browser

browser-deps:
	@scripts/deps-browser.sh

# Only the browser suite (against the ASan build).
browser-test: build/asan/parleyd browser-deps
	PARLEYD=$(CURDIR)/build/asan/parleyd $(PY) -m pytest -q -p no:cacheprovider tests/browser
