"""The fuzz target over the gateway's receive path (tools/bench/fuzz_gateway.py): its seeds
(issue 20's hostile inputs) and mutations of them run through without an exception, and atheris
drives it."""

from __future__ import annotations

import pytest

from gasguard.tools.bench import fuzz, fuzz_gateway


def test_the_receive_path_survives_the_seeds_and_their_mutations():
    assert fuzz_gateway.smoke(3000) == 3000


def test_the_gateway_target_runs_under_atheris():
    pytest.importorskip("atheris")
    report = fuzz.fuzz("gateway", 3000)
    assert report["result"] == "ok", report.get("detail")
    assert report["runs"] >= 3000
