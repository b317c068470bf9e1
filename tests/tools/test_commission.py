"""`gasguard commission` on a virtual board: the on-device self-test drives every output in turn,
polls each detector, opens and closes the valve against its position input, writes the record and
restarts the board; a silent detector fails the record and the valve is then never opened."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from gasguard.tools.vboard_service import VboardService, read_device_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"
OUTPUTS = ["red", "yellow", "green", "buzzer", "fan"]


@pytest.fixture
def board():
    cfg, key = read_device_config(EXAMPLE)
    cfg["link"] = {"kind": "none"}
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        yield svc


def commission(svc: VboardService, out: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port", svc.board.repl_path]
        + ["--config", str(EXAMPLE), "--out", str(out), "--installer", "Wang Wei", "--yes"],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_self_test_passes_and_writes_the_record(board, tmp_path):
    b = board.board
    mark = len(b.history)
    lines = len(b.lines)
    r = commission(board, tmp_path)
    assert r.returncode == 0, r.stdout + r.stderr
    # every lamp, the buzzer and the fan were switched on and off again, one after another
    seen = [(pin, v) for _, pin, v in b.history[mark:] if pin in OUTPUTS and v == 1]
    assert [p for p, _ in seen][-5:] == OUTPUTS
    # the valve was opened once and closed again, the position input following it
    valve = [v for _, pin, v in b.history[mark:] if pin == "valve"]
    assert valve[-2:] == [1, 0]
    rec = json.loads(next(tmp_path.glob("commissioning-hotpot-88-main-*.json")).read_text())
    checks = {c["check"]: c for c in rec["checks"]}
    assert rec["site"] == "sh-xuhui-0042" and rec["installer"] == "Wang Wei"
    assert checks["detector.1"]["result"] == "pass" and checks["detector.2"]["result"] == "pass"
    assert checks["valve"]["result"] == "pass" and checks["valve"]["open_ms"] > 0
    assert all(checks[o]["result"] == "driven" and checks[o]["confirmed"] is None for o in OUTPUTS)
    assert rec["verdict"].startswith("PASS") and "pending" in rec["verdict"]
    assert len(rec["install"]["detectors"]) == 2
    md = next(tmp_path.glob("commissioning-hotpot-88-main-*.md")).read_text()
    assert "| valve | pass |" in md and "ceiling above the wok line" in md
    # back in service: restarted, valve closed until a person resets it
    assert "cause soft" in b.wait_line("GASGUARD RUNNING", 20, start=lines)
    b.wait_output("valve", 0, 5)


def test_silent_detector_fails_and_the_valve_stays_shut(board, tmp_path):
    b = board.board
    board.apply({"det": 2, "silent": True})  # unplugged at the junction box
    mark = len(b.history)
    r = commission(board, tmp_path)
    assert r.returncode == 1, r.stdout + r.stderr
    assert "verdict: FAIL" in r.stdout
    rec = json.loads(next(tmp_path.glob("*.json")).read_text())
    checks = {c["check"]: c for c in rec["checks"]}
    assert checks["detector.2"]["result"] == "fail"
    assert "no answer at Modbus address 2" in checks["detector.2"]["detail"]
    assert checks["detector.1"]["result"] == "pass"
    assert checks["valve"]["result"] == "skipped"
    assert [v for _, pin, v in b.history[mark:] if pin == "valve" and v == 1] == []
