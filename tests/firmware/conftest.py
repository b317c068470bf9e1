"""Fixtures for firmware tests: a paced RS-485 line with pymodbus detectors and a virtual board
running the real firmware in the MicroPython unix port."""

from __future__ import annotations

import copy
import warnings

import pytest

from gasguard.tools.sim.detsim import DetectorBus, SimDetector
from gasguard.tools.sim.vboard import VirtualBoard

KEY = bytes(range(16))
SLACK_OOM_TOLERATED = 3  # per board and test; see make_board

BASE_CONFIG = {
    "device_id": "kitchen-1",
    "site": "site-9",
    "gas": "ng",
    "loop_ms": 20,
    "link": {"kind": "none"},
    "detectors": [
        {"address": 1, "profile": "generic-x10", "gas": "methane"},
        {"address": 2, "profile": "float32-status-mode", "gas": "methane"},
    ],
    "valve": {"kind": "nc", "pin": 25},
    "pins": {"reset_hold_ms": 300},
    "alarm": {"silence_s": 10},
}


@pytest.fixture
def detectors():
    bus = DetectorBus([SimDetector(1, "generic-x10"), SimDetector(2, "float32-status-mode")])
    bus.start()
    yield bus
    bus.stop()


@pytest.fixture
def make_board(tmp_path, detectors):
    boards: list[VirtualBoard] = []

    def make(config: dict | None = None, **kw) -> VirtualBoard:
        cfg = copy.deepcopy(BASE_CONFIG if config is None else config)
        cfg.setdefault("bus", {})["path"] = detectors.board_path
        b = VirtualBoard(tmp_path / ("flash%d" % len(boards)), cfg, KEY, **kw)
        boards.append(b)
        return b

    yield make
    for b in boards:
        b.stop()
    # An uncaught MemoryError is always a defect. A slack step put off for want of heap is the
    # firmware's designed, counted degradation (the safety cycle allocates nothing, and a
    # retried step loses and repeats nothing): an isolated one in a fragmented 110k heap is
    # reported as a warning, a run of them fails the test.
    for b in boards:
        fatal = [line for line in b.lines if "MemoryError" in line]
        assert not fatal, "the firmware ran out of heap:\n" + "\n".join(b.lines[-30:])
        retries = [line for line in b.lines if "slack: out of heap" in line]
        assert len(retries) <= SLACK_OOM_TOLERATED, (
            "the firmware ran short of heap %d times:\n" % len(retries)
            + "\n".join(b.lines[:12] + ["..."] + b.lines[-12:])
        )
        for line in retries:
            warnings.warn("virtual board: " + line, stacklevel=1)


def open_valve(board: VirtualBoard) -> None:
    """Staff reset on site once everything is healthy: the valve opens."""
    board.wait_line("GASGUARD RUNNING", 10)
    board.wait_output("green", 1, 5)
    board.reset_until_open(hold_s=0.5, wait_s=1.0)
