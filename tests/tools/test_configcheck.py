"""`gasguard config check`: every install rule, each shown to pass on a good config and to fail,
naming the field, on a config that breaks it."""

from __future__ import annotations

import copy
import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest

from gasguard.tools.configcheck import check

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"
TODAY = datetime.date(2026, 11, 23)


def good() -> dict:
    return json.loads(EXAMPLE.read_text())


def lpg_site() -> dict:
    cfg = good()
    cfg["gas"] = "lpg"
    for d in cfg["detectors"]:
        d["gas"] = "propane"
    for p in cfg["install"]["detectors"]:
        p["mount_height_m"] = 0.25
        p["distance_m"] = 3.5
    return cfg


def latching() -> dict:
    cfg = good()
    cfg["valve"] = {"kind": "latching", "pin": 25, "position_pin": 26, "pulse_ms": 200}
    cfg["install"]["backup_power"] = True
    return cfg


def errors(cfg: dict, today: datetime.date = TODAY) -> dict[str, str]:
    return {f.field: f.rule for f in check(cfg, today) if f.level == "error"}


def edit(base, fn):
    cfg = copy.deepcopy(base() if callable(base) else base)
    fn(cfg)
    return cfg


def _set(path: str, value):
    def fn(cfg):
        d = cfg
        keys = path.split(".")
        for k in keys[:-1]:
            d = d[int(k)] if isinstance(d, list) else d[k]
        last = keys[-1]
        if isinstance(d, list):
            d[int(last)] = value
        else:
            d[last] = value

    return fn


# (name, base config, change that breaks the rule, field that must be named, rule words)
CASES = [
    ("gas type", good, _set("detectors.0.gas", "propane"), "detectors[0].gas", "gas type"),
    ("gas type lpg", lpg_site, _set("detectors.1.gas", "methane"), "detectors[1].gas", "gas type"),
    (
        "ng height",
        good,
        _set("install.detectors.0.mount_height_m", 2.5),
        "install.detectors[0].mount_height_m",
        "natural gas",
    ),
    (
        "lpg height",
        lpg_site,
        _set("install.detectors.1.mount_height_m", 1.2),
        "install.detectors[1].mount_height_m",
        "LPG",
    ),
    (
        "ng distance",
        good,
        _set("install.detectors.0.distance_m", 9.0),
        "install.detectors[0].distance_m",
        "horizontal distance",
    ),
    (
        "lpg distance",
        lpg_site,
        _set("install.detectors.0.distance_m", 4.5),
        "install.detectors[0].distance_m",
        "horizontal distance",
    ),
    (
        "above appliance",
        good,
        _set("install.detectors.1.above_appliance", True),
        "install.detectors[1].above_appliance",
        "not above the appliance",
    ),
    ("low threshold", good, _set("alarm.low_alarm_pct", 30), "alarm.low_alarm_pct", "set points"),
    (
        "high threshold",
        good,
        _set("alarm.high_alarm_pct", 40),
        "alarm.high_alarm_pct",
        "set points",
    ),
    (
        "latching needs backup power",
        latching,
        _set("install.backup_power", False),
        "install.backup_power",
        "valve kind vs power",
    ),
    ("unique pins", good, _set("pins.fan", 27), "pins.fan", "unique pins"),
    ("flash pins", good, _set("pins.red", 7), "pins.red", "pin assignment"),
    ("input-only pins", good, _set("pins.buzzer", 36), "pins.buzzer", "pin assignment"),
    (
        "detector service life",
        good,
        _set("install.detectors.0.installed", "2023-06-01"),
        "install.detectors[0].installed",
        "service life (detector",
    ),
    (
        "valve service life",
        good,
        _set("install.valve_installed", "2016-01-10"),
        "install.valve_installed",
        "service life (valve",
    ),
    (
        "placement recorded",
        good,
        lambda c: c["install"]["detectors"].pop(),
        "install.detectors",
        "placement record",
    ),
    ("firmware validator", good, _set("loop_ms", 0), "loop_ms", "firmware validator"),
]


@pytest.mark.parametrize("name,base,breaks,field,rule", CASES, ids=[c[0] for c in CASES])
def test_rule_passes_then_fails(name, base, breaks, field, rule):
    ok = base()
    assert errors(ok) == {}, "the unbroken config already fails"
    bad = edit(base, breaks)
    found = errors(bad)
    assert field in found, "%s not named; got %s" % (field, found)
    assert rule in found[field]


def test_service_life_warns_before_it_expires():
    cfg = good()  # installed 2026-09-15: a detector lasts until 2029-09-15
    soon = [f for f in check(cfg, datetime.date(2029, 8, 1)) if f.level == "warning"]
    assert {f.field for f in soon} == {
        "install.detectors[0].installed",
        "install.detectors[1].installed",
    }
    assert check(cfg, datetime.date(2029, 5, 1)) == []


def test_cli_exit_codes_and_json(tmp_path):
    def run(path, *extra):
        return subprocess.run(
            [sys.executable, "-m", "gasguard.tools.cli", "config", "check", str(path), *extra],
            capture_output=True,
            text=True,
            check=False,
        )

    ok = run(EXAMPLE, "--today", "2026-11-23")
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "fit to install" in ok.stdout
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps(edit(good, _set("install.detectors.0.distance_m", 12))))
    r = run(bad, "--json", "--today", "2026-11-23")
    assert r.returncode == 1
    report = json.loads(r.stdout)
    assert report["errors"] == 1
    assert report["findings"][0]["field"] == "install.detectors[0].distance_m"
    broken = tmp_path / "broken.json"
    broken.write_text("{ not json")
    r = run(broken)
    assert r.returncode == 2 and "not valid JSON" in r.stderr
