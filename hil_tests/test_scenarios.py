"""HIL scenarios: what a tester checks on the bench, written once for every rig.

The board runs hil_tests/board-config.json: two methane detectors (address 1: generic-x10,
address 2: float32-status-mode), low alarm 20 %LEL confirmed by both detectors and closing the
valve, high alarm 50 %LEL, normally-closed valve. Event "det" is the detector's index (0, 1).
"""

from __future__ import annotations

import time

import pytest

from .rigs.base import Rig

CLOSE_BUDGET_S = 3.0  # leak step to valve closed, including the debounce (generous for a bench)


def ready(rig: Rig) -> None:
    """Booted, healthy, and the valve opened by a staff reset, as at the start of a shift."""
    rig.wait_boot(1, 20)
    rig.wait_output("green", 1, 10)
    rig.reset_valve()


def stays(rig: Rig, pin: str, value: int, seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        assert rig.output(pin) == value, "%s changed to %s" % (pin, rig.output(pin))
        time.sleep(0.05)


def test_leak_closes_the_valve(rig: Rig):
    ready(rig)
    mark = rig.mark()
    t0 = rig.detector(1).set(lel=60.0)
    t_closed = rig.wait_valve("closed", CLOSE_BUDGET_S)
    assert t_closed - t0 < CLOSE_BUDGET_S
    e = rig.wait_event("alarm.high", 3, since=mark, det=0)
    assert e["lel"] == pytest.approx(60.0, abs=0.1)
    rig.wait_event("valve.closed", 3, since=mark)
    rig.wait_output("red", 1, 2)
    rig.wait_output("fan", 1, 2)
    rig.wait_output("buzzer", 1, 2)


def test_acknowledge_silences_and_escalation_sounds_again(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.detector(1).set(lel=30.0)
    rig.detector(2).set(lel=30.0)
    rig.wait_event("alarm.low", 5, since=mark)
    rig.wait_valve("closed", CLOSE_BUDGET_S)
    rig.wait_output("buzzer", 1, 2)
    rig.press("ack", 0.2)
    rig.wait_event("ack", 3, since=mark)
    rig.wait_output("buzzer", 0, 2)
    stays(rig, "buzzer", 0, 1.5)  # silenced, while the gas is still there
    rig.wait_output("red", 1, 1)  # silencing is not clearing: the lamp stays on
    rig.detector(1).set(lel=65.0)
    rig.wait_event("alarm.high", 3, since=mark, det=0)
    rig.wait_output("buzzer", 1, 2)


def test_reset_is_refused_while_gas_is_present(rig: Rig):
    ready(rig)
    rig.detector(1).set(lel=60.0)
    rig.wait_valve("closed", CLOSE_BUDGET_S)
    rig.detector(1).set(lel=25.0)  # fell below high, still above the low set point
    time.sleep(0.5)
    mark = rig.mark()
    rig.press("reset", 0.6)
    e = rig.wait_event("reset.refused", 3, since=mark)
    assert "gas" in e["detail"]
    time.sleep(0.5)
    assert rig.wait_valve("closed", 0.1)
    assert not [x for x in rig.events()[mark:] if x["kind"] == "reset"]


def test_reset_after_the_gas_clears_reopens(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.detector(1).set(lel=60.0)
    rig.wait_valve("closed", CLOSE_BUDGET_S)
    rig.detector(1).set(lel=0.0)
    rig.wait_event("alarm.clear", 5, since=mark)
    time.sleep(1.0)
    assert rig.wait_valve("closed", 0.1)  # gas gone, but nothing reopens it by itself
    rig.reset_valve()  # only a person on site reopens it
    rig.wait_event("reset", 3, since=mark)


def test_detector_not_answering_is_a_fault_that_closes_the_valve(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.unplug(2)
    e = rig.wait_event("detector.fault", 5, since=mark, det=1)
    assert "noanswer" in e["detail"]
    rig.wait_valve("closed", 5)
    rig.wait_output("yellow", 1, 2)
    # the other detector is still polled: its alarm still registers
    rig.detector(1).set(lel=30.0)
    rig.wait_event("alarm.low", 5, since=mark, det=0)
    rig.detector(1).set(lel=0.0)
    rig.wait_event("alarm.clear", 5, since=mark, det=0)
    mark = rig.mark()
    rig.press("reset", 0.6)
    assert "not healthy" in rig.wait_event("reset.refused", 3, since=mark)["detail"]
    rig.unplug(2, False)
    rig.wait_event("detector.restored", 8, since=mark, det=1)
    rig.reset_valve()


def test_exception_responses_are_a_fault(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.detector(2).exception = 4  # slave device failure on every request
    rig.wait_event("detector.fault", 5, since=mark, det=1)
    rig.wait_valve("closed", 5)
    rig.detector(2).exception = None
    rig.wait_event("detector.restored", 8, since=mark, det=1)


def test_warm_up_is_never_taken_as_safe(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.detector(2).set(lel=0.0, state="warmup")  # reads 0 %LEL, but cannot vouch for the air
    e = rig.wait_event("detector.fault", 5, since=mark, det=1)
    assert "warmup" in e["detail"]
    rig.wait_valve("closed", 5)
    mark = rig.mark()
    rig.press("reset", 0.6)
    rig.wait_event("reset.refused", 3, since=mark)
    rig.detector(2).set(state="ok")
    rig.wait_event("detector.restored", 5, since=mark, det=1)
    rig.reset_valve()


def test_one_percent_byte_corruption_on_the_bus(rig: Rig):
    ready(rig)
    rig.corrupt(0.01)
    mark = rig.mark()
    time.sleep(8)  # noisy but working: no false trip
    faults = [e for e in rig.events()[mark:] if e["kind"] == "detector.fault"]
    assert not faults, faults
    assert rig.wait_valve("open", 0.1)
    t0 = rig.detector(1).set(lel=60.0)  # and a real leak still closes the valve in time
    assert rig.wait_valve("closed", CLOSE_BUDGET_S) - t0 < CLOSE_BUDGET_S
    rig.wait_event("alarm.high", 3, since=mark, det=0)


def test_power_cut_during_an_alarm_boots_with_the_valve_closed(rig: Rig):
    ready(rig)
    rig.detector(1).set(lel=60.0)
    rig.wait_valve("closed", CLOSE_BUDGET_S)
    rig.power_cut()
    assert rig.wait_boot(2, 20) == "power"
    rig.wait_output("green", 1, 10)
    assert rig.wait_valve("closed", 0.5)
    rig.detector(1).set(lel=0.0)
    time.sleep(0.5)
    rig.reset_valve()


def test_a_hung_loop_trips_the_watchdog(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.hang_loop()
    assert rig.wait_boot(2, 20) == "wdt"
    e = rig.wait_event("boot", 5, since=mark)
    assert "wdt" in e["detail"] and "valve closed until reset" in e["detail"], e
    assert rig.wait_valve("closed", 0.5)


def test_low_alarm_needs_a_second_detector_to_confirm(rig: Rig):
    ready(rig)
    mark = rig.mark()
    rig.detector(1).set(lel=30.0)
    rig.wait_event("alarm.low", 5, since=mark, det=0)
    time.sleep(1.5)
    assert rig.wait_valve("open", 0.1)  # one detector alone does not close it
    assert rig.output("fan") == 1  # but the fan runs at any alarm
    assert not [x for x in rig.events()[mark:] if x["kind"] == "valve.closed"]
    rig.detector(2).set(lel=28.0)
    rig.wait_valve("closed", CLOSE_BUDGET_S)
    time.sleep(0.5)
    confirmed = [x for x in rig.events()[mark:] if "confirmed by a second" in x["detail"]]
    assert [(x["kind"], x["det"]) for x in confirmed] == [("alarm.low", None)], rig.events()


def test_event_log_is_continuous_across_reboots(rig: Rig):
    ready(rig)
    for n in (2, 3):
        mark = rig.mark()
        rig.detector(1).set(lel=60.0)
        rig.wait_event("alarm.high", 5, since=mark, det=0)
        rig.detector(1).set(lel=0.0)
        rig.wait_event("alarm.clear", 5, since=mark)
        rig.reboot()
        rig.wait_boot(n, 20)
        rig.wait_output("green", 1, 10)
        rig.reset_valve()
    time.sleep(1.5)  # the last events reach the rig
    ids = [e["id"] for e in rig.events()]
    boots = sorted({b for b, _ in ids})
    assert len(boots) == 3 and boots == list(range(boots[0], boots[0] + 3)), ids
    for b in boots:
        seqs = sorted(s for bb, s in ids if bb == b)
        assert seqs == list(range(seqs[0], seqs[0] + len(seqs))), "gap in boot %d: %s" % (b, seqs)
        assert seqs[0] == 1, "boot %d lost its first events: %s" % (b, seqs)
