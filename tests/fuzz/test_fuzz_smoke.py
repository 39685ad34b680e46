"""Smoke run of the libFuzzer drivers (tests/fuzz/fuzz_*.c), part of `make test`.

Each driver (built by mk/fuzz.mk into build/fuzz/, or $FUZZ_BIN_DIR) fuzzes
for FUZZ_SMOKE_SECONDS (default 8) on a copy of its committed corpus in a
temporary directory, so the committed corpus never changes. The run must end
with exit status 0 and leave no crash, leak, timeout or out-of-memory file.
Longer runs: `make fuzz` (FUZZ_SECONDS per driver).
"""

import os
import shutil
import subprocess
import tempfile

import pytest

REPO = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
BIN_DIR = os.environ.get("FUZZ_BIN_DIR") or os.path.join(REPO, "build", "fuzz")
CORPUS = os.path.join(REPO, "tests", "fuzz", "corpus")
SECONDS = int(os.environ.get("FUZZ_SMOKE_SECONDS", "8"))
ARTIFACT_PREFIXES = ("crash-", "leak-", "timeout-", "oom-", "slow-unit-")


@pytest.mark.parametrize("target", ["http", "ws", "proto", "bus", "cursor_id", "tls_rec", "filter"])
def test_fuzzer_smoke(target):
    binary = os.path.join(BIN_DIR, "fuzz_" + target)
    if not os.access(binary, os.X_OK):
        pytest.fail(f"{binary} not found: run `make build/fuzz/fuzz_{target}` "
                    f"(make test builds it)", pytrace=False)
    seeds = os.path.join(CORPUS, target)
    assert os.listdir(seeds), f"empty seed corpus {seeds}"
    work = tempfile.mkdtemp(prefix=f"parley-fuzz-{target}-")
    try:
        corpus = os.path.join(work, "corpus")
        shutil.copytree(seeds, corpus)
        artifacts = os.path.join(work, "artifacts") + os.sep
        os.mkdir(artifacts)
        env = dict(os.environ)
        # A small quarantine keeps ASan's memory near 100 MB (the default
        # 256 MB one makes a short run look like it is growing).
        env.setdefault("ASAN_OPTIONS", "quarantine_size_mb=32")
        cmd = [binary, f"-max_total_time={SECONDS}", "-timeout=10", "-rss_limit_mb=2048",
               "-print_final_stats=1", f"-artifact_prefix={artifacts}", corpus]
        try:
            p = subprocess.run(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                               stderr=subprocess.STDOUT, timeout=SECONDS + 120, env=env)
        except subprocess.TimeoutExpired:
            pytest.fail(f"fuzz_{target} did not stop within {SECONDS + 120} s", pytrace=False)
        out = p.stdout.decode("utf-8", "replace")
        found = sorted(f for f in os.listdir(artifacts) if f.startswith(ARTIFACT_PREFIXES))
        if p.returncode != 0 or found:
            keep = os.path.join(REPO, "test-artifacts", f"fuzz-{target}")
            os.makedirs(keep, exist_ok=True)
            for f in found:
                shutil.copy(os.path.join(artifacts, f), keep)
            pytest.fail(f"fuzz_{target} exited with {p.returncode}; artifacts {found} "
                        f"(copied to {keep})\n---- output tail ----\n"
                        + "\n".join(out.splitlines()[-60:]), pytrace=False)
        assert "Done" in out, out[-2000:]
    finally:
        shutil.rmtree(work, ignore_errors=True)
