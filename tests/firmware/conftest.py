"""Fixtures for firmware tests: a paced RS-485 line with pymodbus detectors and a virtual board
running the real firmware in the MicroPython unix port."""

from __future__ import annotations

import copy

import pytest

from gasguard.tools.detsim import DetectorBus, SimDetector
from gasguard.tools.vboard import VirtualBoard

KEY = bytes(range(16))

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
    # running out of heap is never an expected outcome, even where a test passed regardless
    for b in boards:
        short = [line for line in b.lines if "MemoryError" in line or "out of heap" in line]
        assert not short, "the firmware ran short of heap:\n" + "\n".join(b.lines[-30:])


def open_valve(board: VirtualBoard) -> None:
    """Staff reset on site once everything is healthy: the valve opens."""
    board.wait_line("GASGUARD RUNNING", 10)
    board.wait_output("green", 1, 5)
    board.reset_until_open(hold_s=0.5, wait_s=1.0)
