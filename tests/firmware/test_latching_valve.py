"""The pulse-to-close latching valve: the firmware pulses the trip coil to close, only a person
pulling the knob reopens it, and the position input supervises both."""

import time

from .conftest import BASE_CONFIG

LATCHING = dict(
    BASE_CONFIG,
    valve={
        "kind": "latching",
        "pin": 25,
        "position_pin": 26,
        "pulse_ms": 300,
        "travel_ms": 500,
        "knob_timeout_s": 5,
    },
)


def _pulses(b, since):
    return [(t, v) for t, p, v in b.history if p == "valve" and t >= since]


def test_reset_asks_for_the_knob_and_a_leak_pulses_the_coil(make_board, detectors):
    b = make_board(LATCHING).start()
    b.wait_line("GASGUARD RUNNING", 10)
    time.sleep(0.8)
    b.press("reset", 0.5)
    b.wait_line("reset det=None", 3)
    # the firmware cannot open it: the coil stays off, green flashes fast for the knob
    b.wait_output("green", 0, 2)
    assert b.outputs["valve"] == 0
    b.set_input("valve_pos", 1)  # a person pulls the knob: the valve is open
    time.sleep(0.4)
    assert b.outputs["green"] == 1
    t0 = time.perf_counter()
    detectors[1].set(lel=60.0)
    b.wait_output("valve", 1, 3)  # trip-coil pulse ...
    b.set_input("valve_pos", 0)  # ... the latch drops, the valve is closed
    b.wait_output("valve", 0, 2)
    on, off = [t for t, v in _pulses(b, t0)][:2]
    assert 0.25 <= off - on <= 0.45  # the configured 300 ms pulse
    time.sleep(1.0)
    assert not [line for line in b.lines if "valve.fault" in line]


def test_knob_not_pulled_in_time_is_reported(make_board, detectors):
    b = make_board(LATCHING).start()
    b.wait_line("GASGUARD RUNNING", 10)
    time.sleep(0.8)
    b.press("reset", 0.5)
    b.wait_line("valve knob not pulled in time", 8)
    b.wait_output("green", 1, 1)  # no longer asking for the knob
    time.sleep(0.5)
    assert b.outputs["green"] == 1 and b.outputs["valve"] == 0


def test_latch_that_does_not_catch_is_repulsed_then_a_valve_fault(make_board, detectors):
    b = make_board(LATCHING).start()
    b.wait_line("GASGUARD RUNNING", 10)
    time.sleep(0.8)
    b.press("reset", 0.5)
    b.set_input("valve_pos", 1)
    time.sleep(0.4)
    t0 = time.perf_counter()
    detectors[1].set(lel=60.0)
    b.wait_line("valve.fault", 6)  # position never drops: first pulse and two retries, then fault
    rises = [t for t, v in _pulses(b, t0) if v == 1]
    assert len(rises) == 3
    b.wait_output("yellow", 1, 2)
