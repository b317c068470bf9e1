"""`gasguard config check`: every install rule, each shown to pass on a good config and to fail,
naming the field, on a config that breaks it."""

from __future__ import annotations

import copy
import datetime
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from gasguard.tools.installer.configcheck import check

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
    ("the board's own rules", good, _set("loop_ms", 0), "loop_ms", "the board refuses it"),
    (
        "firmware validator",
        good,
        _set("detectors.1.address", 1),
        "detectors[1].address",
        "firmware validator",
    ),
    (
        "mounted above the ceiling",
        good,
        _set("install.detectors.0.mount_height_m", 3.5),
        "install.detectors[0].mount_height_m",
        "placement record",
    ),
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
    assert "Traceback" not in r.stderr


def run_cli(path, *extra):
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", str(path), *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,  # a FIFO or a device read to its end would hang here
    )


def test_every_error_at_once_the_boards_own_too(tmp_path):
    """Issue 19 item 7: typos, schema and firmware-level errors in one run, not one per run."""
    cfg = good()
    cfg["alarm"]["close_on_lo"] = True  # the three typos the tester tried
    cfg["alarm"]["low_alarm"] = 15
    cfg["valve"]["posiiton_pin"] = cfg["valve"].pop("position_pin")
    cfg["detectors"][1]["address"] = 1  # firmware only: an address used twice
    cfg["pins"]["fan"] = 25  # firmware only: the valve's GPIO
    cfg["link"]["baud"] = 100000  # not a standard rate
    p = tmp_path / "typos.json"
    p.write_text(json.dumps(cfg))
    r = run_cli(p, "--json", "--today", "2026-11-23")
    assert r.returncode == 1
    found = {f["field"]: f for f in json.loads(r.stdout)["findings"]}
    assert set(found) == {
        "alarm.close_on_lo", "alarm.low_alarm", "valve.posiiton_pin", "detectors[1].address",
        "pins.fan", "link.baud",
    }  # fmt: skip
    assert "did you mean close_on_low?" in found["alarm.close_on_lo"]["message"]
    assert "did you mean low_alarm_pct?" in found["alarm.low_alarm"]["message"]
    assert "did you mean position_pin?" in found["valve.posiiton_pin"]["message"]
    assert "used twice" in found["detectors[1].address"]["message"]
    assert "firmware validator" in found["detectors[1].address"]["rule"]
    assert not any(f["overridable"] for f in found.values())


@pytest.mark.parametrize(
    "content,code,words",
    [
        (b"\xef\xbb\xbf" + EXAMPLE.read_bytes(), 0, "fit to install"),
        (b"device_id: kitchen-1\ngas: ng\n", 2, "configs are JSON (this looks like YAML)"),
        (
            b'device_id = "kitchen-1"\n[valve]\nkind = "nc"\n',
            2,
            "configs are JSON (this looks like TOML)",
        ),
        (b"<config/>", 2, "configs are JSON"),
        (b"", 2, "configs are JSON"),
        (b'{"device_id": "\xff"}', 2, "not UTF-8"),
        (b'{"loop_ms": NaN}', 2, "NaN is not a JSON number"),
        (b'{"gas": "ng", "gas": "lpg"}', 2, "'gas' appears twice"),
        (b"[" * 5000, 2, "nested too deep"),
        (b"[1, 2]", 1, "must be a JSON object"),
        (b"{" + b" " * 9000 + b"}", 2, "at most 8192 bytes"),
    ],
    ids=[
        "BOM",
        "YAML",
        "TOML",
        "XML",
        "empty",
        "not UTF-8",
        "NaN",
        "duplicate",
        "deep",
        "list",
        "size",
    ],  # fmt: skip
)
def test_hostile_files_get_a_clear_answer(tmp_path, content, code, words):
    p = tmp_path / "config.json"
    p.write_bytes(content)
    r = run_cli(p, "--today", "2026-11-23")
    assert r.returncode == code, r.stdout + r.stderr
    assert words in r.stdout + r.stderr
    assert "Traceback" not in r.stderr and "line 1 column" not in r.stderr


@pytest.mark.parametrize("kind", ["fifo", "zero", "loop", "directory"])
def test_a_config_that_is_not_a_regular_file_is_refused_unread(tmp_path, kind):
    """Issue 22 attack M2: a FIFO hung, /dev/zero ran out of memory, a symlink loop was a
    RuntimeError traceback. Each is exit 2 in words, at once, JSON with --json."""
    p = tmp_path / "config.json"
    if kind == "fifo":
        os.mkfifo(p)
    elif kind == "zero":
        p.symlink_to("/dev/zero")
    elif kind == "loop":
        p.symlink_to(tmp_path / "other.json")
        (tmp_path / "other.json").symlink_to(p)
    words = {"fifo": "a FIFO (named pipe), not a regular file",
             "zero": "a character device, not a regular file", "loop": "a symlink loop",
             "directory": "no device configs"}[kind]  # fmt: skip
    if kind == "directory":
        p.mkdir()  # an empty site directory: the directory case
    r = run_cli(p, "--today", "2026-11-23")
    assert r.returncode == 2 and words in r.stderr, r.stdout + r.stderr
    assert "Traceback" not in r.stderr
    r = run_cli(p, "--json", "--today", "2026-11-23")
    assert r.returncode == 2 and words in json.loads(r.stdout)["error"]


@pytest.mark.parametrize(
    "name, words",
    [("gateway.toml", "this looks like a gateway config (TOML); give a device config (JSON)"),
     ("keys.toml", "this looks like the gateway's keys file (TOML); give a device config (JSON)")],
)  # fmt: skip
def test_a_gateway_config_given_as_the_device_config_says_so(name, words):
    """Issue 22 attack L6: `--config gateway.toml` (flash, commission) said a bare "configs
    are JSON": the file opens with comments, which hid that it is TOML."""
    from gasguard.tools.installer.configcheck import ConfigFileError, read_file

    with pytest.raises(ConfigFileError, match=r"configs are JSON \(%s\)" % re.escape(words)):
        read_file(ROOT / "examples" / "hotpot-88" / name)


@pytest.mark.parametrize("today", ["23/11/2026", "2026-13-01", "tomorrow", ""])
def test_a_bad_today_is_a_usage_error(today):
    r = run_cli(EXAMPLE, "--today", today)
    assert r.returncode == 2 and "--today" in r.stderr and "YYYY-MM-DD" in r.stderr
    assert "Traceback" not in r.stderr


def test_install_rules_survive_any_json():
    """Whatever the types, the install rules report and never raise (the schema names the
    type errors)."""
    for value in (5, "x", None, True, [], {}, [5], [{"address": "1"}], 1e300):
        for path in ("install", "install.detectors", "install.detectors.0",
                     "install.detectors.0.mount_height_m", "install.ceiling_m", "detectors",
                     "detectors.0", "alarm", "valve", "pins", "link"):  # fmt: skip
            try:
                cfg = edit(good, _set(path, value))
            except (TypeError, IndexError, KeyError):
                continue
            found = check(cfg, TODAY)
            assert any(f.level == "error" for f in found) or value == {}, (path, value)


@pytest.mark.parametrize(
    "path, value, words",
    [
        ("install.detectors.0.installed", "9998-06-01", "after today"),  # was ValueError
        ("install.valve_installed", "9995-06-01", "after today"),
        ("install.detectors.0.installed", "2026-12-01", "after today"),
        ("install.ceiling_m", -(10**400), "below the minimum 1.8"),  # was OverflowError
        ("install.detectors.0.mount_height_m", 10**60, "above the maximum 10"),
        ("install.detectors.0.distance_m", 10**60, "above the maximum 50"),
        ("install.detectors.0.mount_height_m", 1e308, "above the maximum 10"),
        ("install.detectors.0.mount_height_m", -5, "below the minimum 0"),
    ],
    ids=["year-9998", "valve-year-9995", "tomorrow", "ceiling-400-digits", "height-60-digits",
         "distance-60-digits", "height-1e308", "height-negative"],  # fmt: skip
)
def test_impossible_install_values_are_refused_in_words(tmp_path, path, value, words):
    """Out-of-world dates and heights: one plain finding on the field, exit 1, no traceback (an
    install year 9998 or a 400-digit ceiling crashed config check and flash --dry-run)."""
    f = tmp_path / "cfg.json"
    f.write_text(json.dumps(edit(good, _set(path, value))))
    r = run_cli(f, "--today", TODAY.isoformat())
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr
    field = path.replace(".0.", "[0].")
    lines = [x for x in r.stdout.splitlines() if x.startswith("error")]
    assert len(lines) == 1 and field in lines[0] and words in lines[0], r.stdout
    assert "0" * 61 not in lines[0]  # a 1e308 height is not printed as 300 digits


def test_a_float_address_is_the_integer_the_board_reads():
    """JSON has one kind of number: the board reads address 1.0 as 1, and so does the placement
    rule (it said "no placement for the detector at address 1.0")."""
    cfg = edit(good, _set("detectors.0.address", 1.0))
    assert errors(cfg) == {}


@pytest.mark.parametrize("value", ["30/11/2026", "2026-11-31", "２０２６-０９-１５", 20260915])
def test_an_install_date_not_in_iso_form_is_named_with_the_form_to_use(value):
    """Dates in a config are ISO (YYYY-MM-DD) only: anything else is one finding that shows the
    value and the form, never a traceback or a guess at day and month."""
    found = [f for f in check(edit(good, _set("install.valve_installed", value)), TODAY)]
    (f,) = [f for f in found if f.field == "install.valve_installed"]
    assert json.dumps(value, ensure_ascii=False) in f.message and "YYYY-MM-DD" in f.message


@pytest.mark.parametrize(
    "path, value, words",
    [
        ("install.unit.name", "x" * 121, "at most 120 characters"),
        ("install.unit.responsible", 12345, "must be text"),
        ("install.unit.owner", "Eve", "unknown key"),
        ("install.valve.serial", "", "at least 1 characters"),
        ("install.valve.standard", ["CJ/T 394"], "must be text"),
        ("install.detectors.0.approval", "A" * 61, "at most 60 characters"),
        ("install.detectors.0.calibrated", "2026-13-01", "YYYY-MM-DD"),
        ("install.detectors.0.end_of_life", "soon", "not a real date"),
    ],
)  # fmt: skip
def test_what_the_commissioning_record_names_is_checked_at_the_config(path, value, words):
    """Issue 26: the unit, the valve and each detector's model, serial, approval, calibration
    and end of life live in the install block; what a record could not hold is refused here,
    field by field, before a board is ever flashed."""
    cfg = edit(good, _set(path, value)) if not path.endswith("owner") else edit(
        good, _set("install.unit", {"name": "n", "owner": value}))  # fmt: skip
    found = [f for f in check(cfg, TODAY) if f.field.startswith(path.rsplit(".", 1)[0]
                                                                .replace(".0", "[0]"))]
    assert found and any(words in f.message for f in found), [f.message for f in check(cfg,
                                                                                      TODAY)]
