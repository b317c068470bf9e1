"""The heap runs out while the board is in service (a leak, fragmentation): the safety cycle,
which allocates nothing, still closes the valve on a leak and keeps the watchdog fed; the slack's
work (event log, link) fails with MemoryError, is retried, and once memory returns every event is
in the log exactly once, its chain intact."""

import re
import time

from gasguard.tools import micropython

from .conftest import open_valve


def test_leak_during_heap_exhaustion_closes_valve_and_loses_no_event(make_board, detectors):
    b = make_board().start()
    open_valve(b)
    mark = len(b.lines)
    b.inject_fault("heap")
    line = b.wait_line("heap fault: exhausting the heap at", 5, start=mark)
    t0 = int(re.search(r"at (\d+)", line).group(1))
    detectors[1].set(lel=70.0)  # a leak while nothing can be allocated
    over = b.wait_line("heap fault over at", 10, start=mark)
    t1 = int(re.search(r"at (\d+)", over).group(1))
    b.wait_output("valve", 0, 3)
    # the board closed the valve while its heap was still exhausted (its own timestamps)
    closes = [ms for ms, pin, v in b.board_history if pin == "valve" and v == 0]
    assert closes and t0 <= closes[-1] < t1, (t0, closes, t1)
    # the exhaustion bit: the slack's work failed and was retried ...
    assert any("slack: out of heap, retrying" in x for x in b.lines[mark:])
    # ... but the loop went on: no crash, no watchdog reset, and the buzzer sounded
    assert not any("FATAL" in x for x in b.lines)
    assert b.wdt_resets == 0
    b.wait_line("valve.closed", 5, start=mark)
    time.sleep(0.5)  # the changes the board held back are all through by now
    sounded = [ms for ms, pin, v in b.board_history if pin == "buzzer" and v == 1]
    assert any(t0 <= ms < t1 for ms in sounded), (t0, t1, b.board_history)
    b.stop()
    log = micropython.check_log(b.flash, b.flash / "data", listing=True)
    assert log["chain_ok"] and log["ids_contiguous"], log
    assert log["kinds"].count("alarm.high") == 1, log["kinds"]
    assert log["kinds"].count("valve.closed") == 1, log["kinds"]
    assert [i[1] for i in log["ids"]] == list(range(1, len(log["ids"]) + 1))
