"""`gasguard flash` against a virtual board's REPL pty, through mpremote's serial transport: the
board then runs the flashed config, a second flash copies nothing, and a busy port, a silent port,
an old MicroPython and a bad config each get their own clear error."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
import tty
from pathlib import Path

import pytest
import serial

from gasguard.tools.device import read_device_config
from gasguard.tools.installer.flash import FlashError, check_supported
from gasguard.tools.sim.vboard_service import VboardService

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "hotpot-88" / "kitchen-main.json"


def flash(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "flash", "--no-progress", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def factory_board():
    """A board as it leaves the bench: firmware on it, a placeholder identity and key."""
    cfg, _ = read_device_config(EXAMPLE)
    cfg["device_id"] = "unprovisioned"
    cfg["link"] = {"kind": "none"}
    with VboardService(cfg, bytes(range(32))) as svc:
        svc.board.wait_line("GASGUARD RUNNING unprovisioned", 20)
        yield svc


def site_config(svc: VboardService, tmp_path: Path) -> Path:
    cfg = json.loads(EXAMPLE.read_text())  # the board's ptys come from its environment
    cfg["link"] = {"kind": "none"}
    p = tmp_path / "kitchen-main.json"
    p.write_text(json.dumps(cfg))
    return p


def test_flashed_board_runs_the_new_config(factory_board, tmp_path):
    svc = factory_board
    b = svc.board
    cfg_path = site_config(svc, tmp_path)
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(cfg_path), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    # the firmware on the bench board was this build: only identity, key and pin map go over
    # the wire; the firmware is copied on the board into the new install
    assert sorted(report["copied"]) == ["board.json", "config.json", "key.hex"]
    assert report["skipped"] > 20 and report["seeded"] > 20
    assert report["verified"] and report["restarted"]
    assert report["running"].startswith("GASGUARD RUNNING hotpot-88-main")

    # it reboots and runs as the kitchen's board, with the kitchen's key and config
    line = b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)
    assert "cause soft" in line
    key = json.loads(EXAMPLE.read_text())["key_hex"]
    inst = b.installed()
    assert inst == svc.flash / "gg" / report["install"].removeprefix("gg/")
    assert (inst / "key.hex").read_text() == key
    on_board = json.loads((inst / "config.json").read_text())
    assert on_board["device_id"] == "hotpot-88-main" and "key_hex" not in on_board
    pinmap = json.loads((inst / "board.json").read_text())
    assert pinmap["pin"] == on_board["valve"]["pin"] and pinmap["red"] == on_board["pins"]["red"]
    b.wait_output("valve", 0, 5)  # closed after the restart until a person resets
    b.reset_until_open(hold_s=1.3)  # and it works: reset on site opens the valve
    assert b.outputs.get("valve") == 1

    # flashing the same again copies nothing; --dry-run writes nothing
    again = flash("--port", b.repl_path, "--config", str(cfg_path), "--dry-run", "--json")
    assert again.returncode == 0, again.stdout + again.stderr
    rep = json.loads(again.stdout)
    assert rep["copied"] == [] and rep["dry_run"] and not rep["restarted"]
    assert "0 files differ" in again.stderr  # --json: the words go to stderr


def test_changed_firmware_file_is_copied_and_verified(factory_board, tmp_path):
    svc = factory_board
    target = svc.flash / "lib" / "gasguard" / "safety.mpy"
    target.write_bytes(target.read_bytes()[:-7])  # a damaged or stale file on the board
    r = flash("--port", svc.board.repl_path, "--config", str(site_config(svc, tmp_path)), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert "lib/gasguard/safety.mpy" in report["copied"]
    svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)


def test_busy_port_is_named(factory_board, tmp_path):
    svc = factory_board
    holder = serial.Serial(svc.board.repl_path, exclusive=True)  # a serial monitor left open
    try:
        r = flash("--port", svc.board.repl_path, "--config", str(site_config(svc, tmp_path)))
    finally:
        holder.close()
    assert r.returncode == 3  # unreachable: close the other program
    assert "in use by another program" in r.stderr


def test_a_port_without_micropython_is_named(tmp_path):
    master, slave = os.openpty()  # something on the line that is not a MicroPython REPL
    tty.setraw(slave)
    try:
        r = flash("--port", os.ttyname(slave), "--config", str(EXAMPLE))
    finally:
        os.close(master)
        os.close(slave)
    assert r.returncode == 3  # nothing answers: check the cable and the port
    assert "nothing answered on" in r.stderr and "USB port" in r.stderr
    assert "Traceback" not in r.stderr


def test_bad_config_is_refused_before_touching_the_board(tmp_path):
    cfg = copy.deepcopy(json.loads(EXAMPLE.read_text()))
    cfg["valve"]["kind"] = "ball"
    p = tmp_path / "bad.json"
    p.write_text(json.dumps(cfg))
    r = flash("--port", "/dev/nonexistent", "--config", str(p))
    assert r.returncode == 2
    assert "valve.kind" in r.stderr


@pytest.mark.parametrize(
    "info,words",
    [
        ({"platform": "esp32", "version": [1, 19, 1], "mpy": 6}, "needs 1.23 or later"),
        ({"platform": "esp32", "version": [1, 22, 2], "mpy": 0x206}, "bytecode v6.2"),
        ({"platform": "rp2", "version": [1, 29, 0], "mpy": 0xB06}, "GasGuard runs on ESP32"),
    ],
)
def test_unsupported_micropython_is_refused(info, words):
    with pytest.raises(FlashError) as e:
        check_supported(info)
    assert words in str(e.value)


def test_supported_micropython_passes():
    check_supported({"platform": "esp32", "version": [1, 24, 1], "mpy": 0x2B06})
    check_supported({"platform": "linux", "version": [1, 29, 0], "mpy": 0xB06})


def _write(tmp_path: Path, name: str, cfg: dict) -> Path:
    p = tmp_path / name
    p.write_text(json.dumps(cfg))
    return p


def _lpg_latching() -> dict:
    """The three configs the tester flashed with --dry-run (issue 19 item 7): a buzzer on a
    flash pin, a latching valve without backup power, an LPG detector at 2 m."""
    cfg = json.loads(EXAMPLE.read_text())
    cfg["gas"] = "lpg"
    for d in cfg["detectors"]:
        d["gas"] = "propane"
    for p in cfg["install"]["detectors"]:
        p["mount_height_m"], p["distance_m"] = 0.2, 3.0
    cfg["install"]["detectors"][0]["mount_height_m"] = 2.0
    cfg["valve"] = {"kind": "latching", "pin": 25, "position_pin": 26}
    cfg["pins"]["buzzer"] = 7
    return cfg


@pytest.mark.parametrize("extra", [[], ["--dry-run"]], ids=["flash", "dry-run"])
def test_flash_refuses_what_config_check_refuses(tmp_path, extra):
    p = _write(tmp_path, "lpg.json", _lpg_latching())
    check = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "config", "check", str(p), "--json"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    refused = {f["field"] for f in json.loads(check.stdout)["findings"] if f["level"] == "error"}
    assert refused == {
        "pins.buzzer", "install.backup_power", "install.detectors[0].mount_height_m",
    }  # fmt: skip
    # never reaches the board: the port does not even exist
    r = flash("--port", "/dev/nonexistent", "--config", str(p), *extra)
    assert r.returncode == 2, r.stdout + r.stderr
    for field in refused:  # every one at once, as config check names them
        assert field in r.stderr
    assert "the board is not flashed" in r.stderr and "Traceback" not in r.stderr


def test_override_never_covers_what_the_board_refuses(tmp_path):
    p = _write(tmp_path, "lpg.json", _lpg_latching())  # a buzzer on GPIO 7: no override
    r = flash("--port", "/dev/nonexistent", "--config", str(p), "--override", "UPS next week")
    assert r.returncode == 2 and "the ESP32 cannot do" in r.stderr
    cfg = json.loads(EXAMPLE.read_text())
    cfg["alarm"]["close_on_lo"] = True  # a typo the board refuses at boot
    p = _write(tmp_path, "typo.json", cfg)
    r = flash("--port", "/dev/nonexistent", "--config", str(p), "--override", "it is fine")
    assert r.returncode == 2 and "did you mean close_on_low?" in r.stderr
    r = flash("--port", "/dev/nonexistent", "--config", str(EXAMPLE), "--override", "  ")
    assert r.returncode == 2 and "needs the reason" in r.stderr


def test_an_override_is_kept_on_the_board_and_in_the_commissioning_record(factory_board, tmp_path):
    svc = factory_board
    b = svc.board
    cfg = json.loads(site_config(svc, tmp_path).read_text())
    cfg["install"]["detectors"][0]["mount_height_m"] = 2.6  # 0.6 m below the ceiling
    p = _write(tmp_path, "beam.json", cfg)
    r = flash("--port", b.repl_path, "--config", str(p))
    assert r.returncode == 2 and "--override REASON" in r.stderr
    mark = len(b.lines)
    why = "a steel beam 0.5 m deep under the ceiling; detector on its face, site engineer agreed"
    r = flash("--port", b.repl_path, "--config", str(p), "--json", "--override", why,
              "--installer", "Wang Wei (licence 44-0912)")  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    report = json.loads(r.stdout)
    assert [f["field"] for f in report["overridden"]] == ["install.detectors[0].mount_height_m"]
    assert "OVERRIDDEN by Wang Wei" in r.stderr
    on_board = json.loads((b.installed() / "override.json").read_text())
    assert on_board["by"] == "Wang Wei (licence 44-0912)" and on_board["reason"] == why
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)

    out = tmp_path / "record"
    r = subprocess.run(
        [sys.executable, "-m", "gasguard.tools.cli", "commission", "--port", b.repl_path,
         "--config", str(p), "--out", str(out), "--yes", "--installer", "Wang Wei"],
        capture_output=True, text=True, timeout=90, check=False,
    )  # fmt: skip
    assert r.returncode == 0, r.stdout + r.stderr
    rec = json.loads(next(out.glob("*.json")).read_text())
    ov = rec["install_rules_overridden"]
    assert ov["by"] == "Wang Wei (licence 44-0912)" and ov["reason"] == why and ov["current"]
    assert ov["overridden"][0]["field"] == "install.detectors[0].mount_height_m"
    md = next(out.glob("*.md")).read_text()
    assert "**OVERRIDDEN** by Wang Wei" in md and "install.detectors[0].mount_height_m" in md

    # the config fixed and flashed again: the override no longer applies and leaves the board
    mark = len(b.lines)
    r = flash("--port", b.repl_path, "--config", str(site_config(svc, tmp_path)), "--json")
    assert r.returncode == 0, r.stdout + r.stderr
    assert json.loads(r.stdout)["removed"] == ["override.json"]
    assert not (b.installed() / "override.json").exists()
    b.wait_line("GASGUARD RUNNING hotpot-88-main", 20, start=mark)


def test_flash_at_the_link_port_says_so_in_a_second_and_touches_nothing(tmp_path):
    """Issue 22: flash at the board's link UART dumped 2 kB of binary, waited 7 s and asked
    whether MicroPython was installed. It names the port in words, before compiling anything."""
    import time

    cfg, key = read_device_config(EXAMPLE)  # as installed: with its UART link to the gateway
    with VboardService(cfg, key) as svc:
        svc.board.wait_line("GASGUARD RUNNING hotpot-88-main", 20)
        time.sleep(1.5)  # no gateway on the link: the board sends a birth every second
        mark = len(svc.board.lines)
        t0 = time.monotonic()
        r = flash("--port", svc.link_endpoint, "--config", str(EXAMPLE), "--json")
        took = time.monotonic() - t0
        assert r.returncode == 2, r.stderr
        assert "the board's link UART, not its USB REPL" in r.stderr
        assert json.loads(r.stdout)["exit_code"] == 2  # --json: JSON alone, on failure too
        assert all(c.isprintable() or c in "\n" for c in r.stdout + r.stderr)
        assert "MicroPython installed" not in r.stderr and "image:" not in r.stderr
        assert took < 4.0, took  # the probe's second, plus Python starting the command
        # the board was left running as it was
        assert not any("Traceback" in x for x in svc.board.lines[mark:])
