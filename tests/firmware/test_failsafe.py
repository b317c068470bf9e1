"""The fail-safe matrix (docs/design.md §5) on the real firmware: MicroPython unix port, pymodbus
detectors on a paced virtual RS-485 line, outputs read from the board's panel. The scenarios a
tester also runs on a bench (leak, acknowledge, reset refused, no answer, exception replies,
warm-up, power cut, hung loop, two-detector confirmation) are written once, in
hil_tests/test_scenarios.py, and run there on the virtual board and on the bench rig; these are
the rows a bench cannot provoke or that need the board's own config."""

import time

from .conftest import open_valve


def test_boots_closed_and_opens_only_by_reset_on_site(make_board):
    b = make_board().start()
    b.wait_line("GASGUARD RUNNING", 10)
    time.sleep(1.0)
    assert b.outputs["valve"] == 0  # closed at power-up until a person resets it
    assert b.outputs["red"] == 1
    open_valve(b)
    assert b.outputs["red"] == 0


def test_from_a_romfs_image_a_leak_closes_the_valve_latched_with_alarm_outputs(
    make_board, detectors
):
    """The firmware booted from a ROMFS image, as on a board built with a ROMFS partition (the
    files layout runs every scenario of hil_tests/test_scenarios.py, on both rigs)."""
    b = make_board(layout="romfs").start()
    open_valve(b)
    t0 = detectors[2].set(lel=62.0)  # float32 detector reads 62 %LEL: high alarm
    t1 = b.wait_output("valve", 0, 3)
    assert t1 - t0 < 1.0
    b.wait_output("fan", 1, 2)
    b.wait_output("buzzer", 1, 2)
    b.wait_line("alarm.high det=1", 2)
    b.wait_line("valve.closed", 2)
    # gas clears: the valve stays closed (latched) until reset on site
    detectors[2].set(lel=0.0)
    b.wait_line("alarm.clear", 5)
    time.sleep(0.5)
    assert b.outputs["valve"] == 0
    open_valve(b)


def test_bad_config_keeps_valve_closed_and_names_the_field(make_board):
    from .conftest import BASE_CONFIG

    cfg = dict(BASE_CONFIG, alarm={"low_alarm_pct": 40})
    b = make_board(cfg)
    b.start(watchdog=False)
    line = b.wait_line("CONFIG ERROR", 10)
    assert "alarm.low_alarm_pct" in line and "1..25" in line
    b.wait_output("yellow", 1, 3)
    assert b.outputs["valve"] == 0
    b.press("reset", 0.5)
    time.sleep(0.5)
    assert b.outputs["valve"] == 0


def _wait_wdt_reset(b, n=1, timeout=15.0):
    deadline = time.monotonic() + timeout
    while b.wdt_resets < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert b.wdt_resets >= n


def test_firmware_exception_closes_valve_then_watchdog_reboots_closed(make_board):
    b = make_board().start()
    open_valve(b)
    b.inject_fault("crash")
    b.wait_output("valve", 0, 2)  # the exception handler drives the safe state at once
    b.wait_line("FATAL", 2)
    _wait_wdt_reset(b)
    b.wait_line("cause wdt", 10)
    b.wait_line("boot det=None lel=None reset cause wdt", 5)
    time.sleep(0.5)
    assert b.outputs["valve"] == 0
    open_valve(b)  # a person on site can reopen once healthy


def test_persistent_loop_overrun_trips_the_watchdog_and_boots_closed(make_board):
    b = make_board().start()
    open_valve(b)
    b.inject_fault("slow")  # every cycle now starts ~150 ms late (period 20 ms)
    _wait_wdt_reset(b)
    b.wait_line("cause wdt", 10)
    time.sleep(0.5)
    assert b.outputs["valve"] == 0


def test_end_of_life_detector_is_a_fault(make_board, detectors):
    b = make_board().start()
    open_valve(b)
    detectors[2].set(state="eol")
    b.wait_output("valve", 0, 3)
    b.wait_line("detector.fault det=1 lel=None detector state eol", 3)
    b.wait_output("yellow", 1, 2)


def test_valve_stuck_open_is_a_valve_fault(make_board, detectors):
    from .conftest import BASE_CONFIG

    cfg = dict(BASE_CONFIG, valve={"kind": "nc", "pin": 25, "position_pin": 26, "travel_ms": 300})
    b = make_board(cfg).start()
    b.wait_line("GASGUARD RUNNING", 10)
    b.press("reset", 0.5)
    b.wait_output("valve", 1, 5)
    b.set_input("valve_pos", 1)  # the valve reports open, as commanded
    time.sleep(0.5)
    detectors[1].set(lel=65.0)
    b.wait_output("valve", 0, 3)  # commanded closed ... but the position input stays open
    b.wait_line("valve.fault det=None lel=None commanded closed but position input says open", 3)
    b.wait_output("yellow", 1, 2)  # red and yellow together: valve fault
    assert b.outputs["red"] in (0, 1)
    detectors[1].set(lel=0.0)
    b.wait_line("alarm.clear", 5)
    b.press("reset", 0.5)
    b.wait_line("reset.refused det=None lel=None valve fault", 3)
    b.set_input("valve_pos", 0)  # it finally closes: the fault clears, reset works again
    time.sleep(0.5)
    b.press("reset", 0.5)
    b.wait_output("valve", 1, 3)


def test_reset_clears_a_detectors_latched_alarm_with_a_register_write(make_board, detectors):
    b = make_board().start()
    open_valve(b)
    # the float32-status-mode profile resets its own latched alarm with FC06 to register 19
    deadline = time.monotonic() + 3
    while not detectors[2].writes and time.monotonic() < deadline:
        time.sleep(0.05)
    assert detectors[2].writes[:1] == [(6, 19, [1])]
    assert detectors[1].writes == []  # the generic profile has no such register
    reads = detectors[2].reads
    time.sleep(0.5)
    assert detectors[2].reads > reads  # and polling goes on as before


def test_over_range_gas_is_a_high_alarm_even_where_faults_leave_the_valve_open(
    make_board, detectors
):
    """Above the detector's measuring range (generic-x10: 100 %LEL) is the most dangerous reading
    there is: a high alarm that closes the valve, not a detector fault that a site with
    fault_closes_valve off would ride out with the gas on."""
    from .conftest import BASE_CONFIG

    cfg = dict(
        BASE_CONFIG,
        detectors=[
            {"address": 1, "profile": "generic-x10", "gas": "methane",
             "fault_closes_valve": False},
            {"address": 2, "profile": "float32-status-mode", "gas": "methane",
             "fault_closes_valve": False},
        ],
    )  # fmt: skip
    b = make_board(cfg).start()
    open_valve(b)
    t0 = detectors[1].set(lel=120.0)
    t1 = b.wait_output("valve", 0, 3)
    assert t1 - t0 < 1.0
    line = b.wait_line("alarm.high det=0", 2)
    assert "over range" in line and "lel=120.0" in line
    b.wait_output("fan", 1, 2)
    b.wait_line("valve.closed", 2)
    assert not [x for x in b.lines if "detector.fault det=0" in x]
    # and over range on the float32 detector, 100.1 %LEL: the same
    detectors[1].set(lel=0.0)
    detectors[2].set(lel=100.1)
    b.wait_line("alarm.high det=1 lel=100.1 over range", 3)
