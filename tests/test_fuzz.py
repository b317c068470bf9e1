"""The short fuzzing pass CI runs: each target for a few seconds of coverage-guided inputs (the
long pass of 1,000,000 inputs per target is recorded in docs/bench/fuzz-*.json). A planted crash
shows the set-up finds and reports one."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from gasguard.tools.bench.fuzz import TARGETS

SHORT = 30_000


def run(target: str, tmp_path, n: int = SHORT) -> tuple[int, dict]:
    out = tmp_path / ("%s.json" % target)
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "fuzz", target, "--iterations", str(n)]
        + ["--json", str(out), "--keep", str(tmp_path / "crashes")],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    return r.returncode, json.loads(out.read_text())


@pytest.mark.parametrize("target", TARGETS)
def test_short_pass_finds_nothing(target, tmp_path):
    rc, report = run(target, tmp_path)
    assert report["result"] == "ok", report.get("detail")
    assert rc == 0
    assert report["runs"] >= SHORT
    assert report["coverage_edges"] > 10  # coverage-guided: our code is instrumented
    if target in ("config", "profile"):  # mutating valid documents, not random bytes
        assert report["mutator"].startswith("structure-aware")
        assert report["coverage_edges"] > 150  # random bytes reached 126 on these targets


def test_a_planted_crash_is_found_and_kept(tmp_path):
    rc, report = run("_canary", tmp_path, 200_000)
    assert rc == 1 and report["result"] == "crash"
    assert "planted crash reached" in report["detail"]
    (kept,) = report["inputs"]
    assert open(kept, "rb").read().startswith(b"GGX!")
