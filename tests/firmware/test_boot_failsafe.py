"""Safe first at boot (docs/firmware.md, "Boot failures"): whatever stops a board from booting
(a config it refuses, a config too big for its heap, a profile of the wrong shape, a module
missing after a half-finished flash, an exception on the way) ends with the valve in its safe
state, both kinds of valve: NC de-energised, latching pulsed shut and confirmed by its position
input. The fault lamp is on and one console line names the cause."""

import copy
import json
import shutil
import time

import pytest

from .conftest import BASE_CONFIG

LATCHING = dict(
    BASE_CONFIG,
    valve={"kind": "latching", "pin": 25, "position_pin": 26, "pulse_ms": 300, "travel_ms": 500},
)
NC = dict(
    BASE_CONFIG, valve={"kind": "nc", "pin": 25, "position_pin": 26, "travel_ms": 500}
)
TRAVEL_S = 0.2  # the valve body answers on the position input this long after the coil


def _running_with_valve_open(make_board, cfg):
    """A board that booted into a good config and was opened by staff (latching: knob pulled)."""
    b = make_board(cfg, valve_travel_s=TRAVEL_S).start()
    b.wait_line("GASGUARD RUNNING", 10)
    b.wait_output("green", 1, 5)
    b.reset_until_open(hold_s=0.5, wait_s=1.0) if cfg["valve"]["kind"] == "nc" else _knob(b)
    time.sleep(TRAVEL_S + 0.3)
    assert b.valve_open
    return b


def _knob(b):
    for _ in range(5):
        mark = len(b.lines)
        b.press("reset", 0.5)
        try:
            b.wait_line("reset det=None", 1.5, start=mark)
            break
        except TimeoutError:
            time.sleep(0.3)
    b.set_input("valve_pos", 1)  # a person pulls the knob: open


def _reboot_into(b, config_bytes=None, remove=None):
    """Change what is on the board's flash, then let the watchdog reboot it (a hung loop)."""
    if config_bytes is not None:
        (b.flash / "config.json").write_bytes(config_bytes)
    for path in remove or ():
        (b.flash / path).unlink()
    mark = len(b.lines)
    resets = b.wdt_resets
    b.inject_fault("hang")
    deadline = time.monotonic() + 10
    while b.wdt_resets == resets and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.wdt_resets > resets
    return mark


def _ends_safe(b, mark, text):
    """The halt line (`text` in it) came after `mark`, and everything is safe."""
    deadline = time.monotonic() + 10
    while True:
        hits = [x for x in b.lines[mark:] if x.startswith(("CONFIG ERROR", "BOOT FAILED"))]
        if hits or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert hits, "no halt line:\n" + "\n".join(b.lines[mark:])
    line = hits[0]
    assert text in line, line
    b.wait_output("yellow", 1, 5)
    b.wait_output("valve", 0, 3)  # NC: de-energised; latching: coil off after the pulse
    time.sleep(TRAVEL_S + 1.0)
    assert not b.valve_open, "the valve body is still open:\n" + "\n".join(b.lines[mark:])
    # what it says of the valve is what it knows: closed, or (no pin map) its output off
    assert "valve closed" in line or "valve output off on the board's default GPIO" in line
    return line


BAD_CONFIGS = {
    # a rule the board refuses: a low alarm set point outside GB 15322.1's 1-25 %LEL
    "refused": lambda cfg: dict(cfg, alarm={"low_alarm_pct": 40}),
    # an inline profile with a number where an object is expected
    "profile-shape": lambda cfg: dict(
        cfg,
        detectors=[{"address": 1, "gas": "methane", "profile": {
            "name": "x", "function": 4, "start": 0, "count": 2, "reading": 7,
            "reset_alarm": 3}}],
    ),  # fmt: skip
    "not-json": lambda cfg: "valve: {kind: latching}\n",
}


@pytest.mark.parametrize("kind", ["latching", "nc"])
@pytest.mark.parametrize("bad", sorted(BAD_CONFIGS))
def test_a_reboot_into_a_bad_config_ends_with_the_valve_safe(make_board, kind, bad):
    cfg = copy.deepcopy(LATCHING if kind == "latching" else NC)
    b = _running_with_valve_open(make_board, cfg)
    broken = BAD_CONFIGS[bad](copy.deepcopy(cfg))
    raw = broken if isinstance(broken, str) else json.dumps(broken)
    mark = _reboot_into(b, raw.encode())
    _ends_safe(b, mark, "valve closed")
    if kind == "latching":
        # staff pull the knob to get gas back: the board is halted, but the latch is watched
        b.set_input("valve_pos", 1)
        deadline = time.monotonic() + 3
        while b.valve_open and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not b.valve_open, "reopened by hand during the halt, and left open"
    if kind == "latching":  # closed by the trip coil, not left as it was
        assert [v for t, p, v in b.history if p == "valve" and v == 1][-1:] == [1]


@pytest.mark.parametrize("kind", ["latching", "nc"])
def test_a_config_too_big_for_the_heap_ends_with_the_valve_safe(make_board, kind):
    cfg = copy.deepcopy(LATCHING if kind == "latching" else NC)
    b = _running_with_valve_open(make_board, cfg)
    big = dict(cfg, notes=["x" * 60] * 400)  # about 25 KB
    mark = _reboot_into(b, json.dumps(big).encode())
    _ends_safe(b, mark, "valve closed")


@pytest.mark.parametrize("kind", ["latching", "nc"])
def test_a_module_missing_after_a_broken_flash_ends_with_the_valve_safe(make_board, kind):
    cfg = copy.deepcopy(LATCHING if kind == "latching" else NC)
    b = _running_with_valve_open(make_board, cfg)
    mark = _reboot_into(b, remove=["lib/gasguard/persist.mpy"])
    line = _ends_safe(b, mark, "BOOT FAILED")
    assert "ImportError" in line and "persist" in line


def test_a_boot_failure_reboots_to_try_again_closed_throughout(make_board):
    cfg = copy.deepcopy(LATCHING)
    b = _running_with_valve_open(make_board, cfg)
    mark = _reboot_into(b, remove=["lib/gasguard/eventlog.mpy"])
    _ends_safe(b, mark, "BOOT FAILED")
    boots = b.boots
    deadline = time.monotonic() + 40  # it tries again after 30 s
    while b.boots == boots and time.monotonic() < deadline:
        assert not b.valve_open
        time.sleep(0.2)
    assert b.boots > boots
    b.wait_line("BOOT FAILED", 10, start=len(b.lines) - 5)


def test_without_a_readable_pin_map_the_board_defaults_are_driven_and_said(make_board):
    cfg = copy.deepcopy(NC)
    b = _running_with_valve_open(make_board, cfg)
    (b.flash / "board.json").write_bytes(b"\x00garbage")
    mark = _reboot_into(b, json.dumps(dict(cfg, alarm={"low_alarm_pct": 40})).encode())
    line = _ends_safe(b, mark, "CONFIG ERROR")
    assert "default GPIO 25" in line and "pin map: board.json" in line


def test_a_good_boot_writes_the_pin_map_the_safe_core_reads(make_board):
    b = make_board(copy.deepcopy(LATCHING)).start()
    b.wait_line("GASGUARD RUNNING", 10)
    pm = json.loads((b.flash / "board.json").read_text())
    assert pm["valve"] == "latching" and pm["pin"] == 25 and pm["pos"] == 26
    assert pm["pulse_ms"] == 300


def test_a_pin_map_that_would_drive_the_valve_with_a_lamp_is_refused(make_board):
    """A lamp on the valve's GPIO would energise an NC valve (open it) when the fault lamp
    lights: such a map is not believed, and the board defaults are driven instead."""
    cfg = copy.deepcopy(NC)
    b = _running_with_valve_open(make_board, cfg)
    pm = json.loads((b.flash / "board.json").read_text())
    (b.flash / "board.json").write_text(json.dumps(dict(pm, yellow=pm["pin"])))
    mark = _reboot_into(b, json.dumps(dict(cfg, alarm={"low_alarm_pct": 40})).encode())
    line = _ends_safe(b, mark, "CONFIG ERROR")
    assert "GPIO 25 cannot be that output" in line


def test_a_pin_map_with_a_pulse_too_short_to_trip_the_latch_is_refused(make_board):
    cfg = copy.deepcopy(LATCHING)
    b = _running_with_valve_open(make_board, cfg)
    pm = json.loads((b.flash / "board.json").read_text())
    (b.flash / "board.json").write_text(json.dumps(dict(pm, pulse_ms=0)))
    mark = _reboot_into(b, json.dumps(dict(cfg, alarm={"low_alarm_pct": 40})).encode())
    deadline = time.monotonic() + 10
    while not [x for x in b.lines[mark:] if x.startswith("CONFIG ERROR")]:
        assert time.monotonic() < deadline, "\n".join(b.lines[mark:])
        time.sleep(0.05)
    line = [x for x in b.lines[mark:] if x.startswith("CONFIG ERROR")][0]
    assert "board.json: bad pulse_ms" in line


def test_a_pin_map_that_cannot_be_written_does_not_stop_a_good_boot(make_board):
    """board.json is a directory: the safe core falls back to the board defaults (it cannot
    pulse a latching valve it does not know of), but the config is good, so the board boots
    and its own supervision pulses the valve shut."""
    cfg = copy.deepcopy(LATCHING)
    b = _running_with_valve_open(make_board, cfg)
    (b.flash / "board.json").unlink()
    (b.flash / "board.json").mkdir()
    mark = _reboot_into(b)
    b.wait_line("PIN MAP not written", 10, start=mark)
    b.wait_line("GASGUARD RUNNING", 10, start=mark)
    deadline = time.monotonic() + 5
    while b.valve_open and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not b.valve_open


def test_an_event_log_that_cannot_be_opened_keeps_the_valve_closed_reboot_after_reboot(make_board):
    """/data/log replaced by a file: the log cannot open, the firmware stops with the valve
    safe and the watchdog reboots it to try again; the valve stays shut throughout and the
    console says why (a full partition is not this: the board runs and counts losses)."""
    cfg = copy.deepcopy(LATCHING)
    b = _running_with_valve_open(make_board, cfg)
    log = b.flash / "data" / "log"
    assert log.is_dir()
    shutil.rmtree(log)
    log.write_text("not a directory")
    mark = _reboot_into(b)
    b.wait_line("FATAL: firmware exception; valve closed", 15, start=mark)
    resets = b.wdt_resets
    deadline = time.monotonic() + 15
    while b.wdt_resets == resets and time.monotonic() < deadline:
        assert not b.valve_open
        time.sleep(0.2)
    assert b.wdt_resets > resets, "it does not try again"
    b.wait_output("yellow", 1, 5)
    time.sleep(TRAVEL_S + 1.0)
    assert not b.valve_open
