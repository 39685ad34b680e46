"""Fixtures for Parley's browser tests.

Each test gets its own real parleyd (from $PARLEYD, by default
build/asan/parleyd) on a free loopback port with a temporary data directory,
serving the web client from web/. At teardown the server is stopped with
SIGTERM and the test FAILS if the server's log holds a sanitizer report, if it
died on its own, or if it did not exit.

The browser side needs Debian's chromium and playwright-core (installed into
tests/browser/node_modules by scripts/deps-browser.sh, which `make test` runs).
When they cannot be had the tests FAIL with a message saying so: they never
skip silently.
"""

import os
import shutil
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from parleyd_proc import Server, finish  # noqa: E402  (the shared server process)

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.abspath(os.path.join(HERE, "..", ".."))
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")


def _deps_missing():
    missing = []
    if not (os.path.isfile(CHROMIUM) and os.access(CHROMIUM, os.X_OK)):
        missing.append(f"chromium ({CHROMIUM})")
    if not os.path.isfile(os.path.join(HERE, "node_modules", "playwright-core", "package.json")):
        missing.append("playwright-core (tests/browser/node_modules)")
    if not shutil.which("node"):
        missing.append("node")
    return missing


def pytest_collection_modifyitems(session, config, items):
    """Spreads the browser scenarios through the first three quarters of the
    run (`make test` runs every suite in one pytest): each waits on a page
    more than it computes, but two at once (chromium and a server each) kept
    both cores busy for the last four minutes when they all came last, on
    the two workers together. The order is the same in every xdist worker."""
    mine = [i for i in items if os.path.dirname(str(i.fspath)) == HERE]
    if not mine or len(mine) == len(items):
        return
    rest = [i for i in items if os.path.dirname(str(i.fspath)) != HERE]
    step = max(2, (len(rest) * 3 // 4) // len(mine) // 2 * 2)   # even: the first ones alternate workers
    out = []
    for k, item in enumerate(mine):
        out.extend(rest[k * step:(k + 1) * step])
        out.append(item)
    out.extend(rest[len(mine) * step:])
    items[:] = out


@pytest.fixture(scope="session")
def browser_deps():
    """Makes sure chromium, node and playwright-core are there (installing
    them with scripts/deps-browser.sh when not); fails the tests otherwise."""
    missing = _deps_missing()
    if missing:
        script = os.path.join(REPO, "scripts", "deps-browser.sh")
        r = subprocess.run([script], cwd=REPO, capture_output=True, text=True, timeout=900)
        missing = _deps_missing()
        if missing:
            pytest.fail("browser tests need " + ", ".join(missing) + " and installing them failed "
                        f"(scripts/deps-browser.sh exit {r.returncode}):\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}",
                        pytrace=False)
    return {"node": shutil.which("node"), "chromium": CHROMIUM}


@pytest.fixture(scope="session")
def parleyd_bin():
    b = os.environ.get("PARLEYD") or os.path.join(REPO, "build", "asan", "parleyd")
    if not (os.path.isfile(b) and os.access(b, os.X_OK)):
        pytest.fail(f"parleyd binary not found at {b!r}: set $PARLEYD or run `make build/asan/parleyd`",
                    pytrace=False)
    return os.path.abspath(b)


@pytest.fixture
def parleyd_factory(parleyd_bin, request):
    """start(extra_args=()) -> a started, ready Server (tests/parleyd_proc.py)
    serving web/; all are stopped and checked at teardown."""
    servers = []

    def start(extra_args=()):
        s = Server(parleyd_bin, tempfile.mkdtemp(prefix="parley-web-"),
                   ["--web-root", os.path.join(REPO, "web"), *extra_args])
        servers.append(s)
        s.start()
        return s

    yield start
    problems = finish(servers, "browser-" + request.node.name)
    if problems:
        pytest.fail("\n".join(problems), pytrace=False)


@pytest.fixture
def parleyd(parleyd_factory):
    return parleyd_factory()
