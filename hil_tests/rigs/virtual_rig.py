"""VirtualRig: the firmware in the MicroPython unix port (tools/sim/vboard.py) with the pymodbus
detector simulator behind the paced line, all in this process.

Wiring: detector bus = a LinePacer pty pair at the config's baud; outputs, buttons and the watchdog
= the virtual board's panel; power = SIGKILL and restart; events = the firmware's console lines.
"""

from __future__ import annotations

import copy
import threading
import time
from pathlib import Path
from typing import Any

from gasguard.tools.sim.detsim import DetectorBus, SimDetector
from gasguard.tools.sim.vboard import VirtualBoard

from .base import Rig


class VirtualRig(Rig):
    name = "virtual"

    def __init__(self, flash: Path, config: dict, key: bytes) -> None:
        super().__init__()
        cfg = copy.deepcopy(config)
        cfg.pop("key_hex", None)
        dets = [SimDetector(d["address"], d["profile"]) for d in cfg["detectors"]]
        self.bus = DetectorBus(dets, baud=cfg.get("bus", {}).get("baud", 9600)).start()
        cfg.setdefault("bus", {})["path"] = self.bus.board_path
        cfg["link"] = {"kind": "none"}  # events are read from the console here
        self.board = VirtualBoard(flash, cfg, key)
        self._seen = 0
        self._stop = False
        self.board.start()
        threading.Thread(target=self._follow, daemon=True).start()

    def _follow(self) -> None:
        b = self.board
        while not self._stop:
            with b._cv:
                b._cv.wait(0.05)
                new = b.lines[self._seen :]
                self._seen = len(b.lines)
            for line in new:
                if line.startswith("EVENT "):
                    self._add_event(parse_event_line(line))
                elif line.startswith("GASGUARD RUNNING"):
                    parts = line.split()
                    self._booted(parts[parts.index("cause") + 1])

    def wait_valve(self, state: str, timeout: float = 5.0) -> float:
        return self.board.wait_output("valve", 1 if state == "open" else 0, timeout)

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> None:
        self.board.wait_output(pin, value, timeout)

    def output(self, pin: str) -> int | None:
        return self.board.outputs.get(pin)

    def press(self, button: str, hold_s: float = 0.2) -> None:
        self.board.press(button, hold_s)

    def reboot(self) -> None:
        self.board.interrupt()  # Ctrl-C: the loop stops in the safe state, REPL up
        self.board.wait_line("STOPPED from the console", 5)
        time.sleep(0.3)
        self.board.console_write(b"\x04")  # Ctrl-D at the REPL: soft reset

    def power_cut(self) -> None:
        self.board.power_cycle()

    def hang_loop(self) -> None:
        self.board.inject_fault("hang")

    def close(self) -> None:
        self._stop = True
        self.board.stop()
        super().close()


def parse_event_line(line: str) -> dict[str, Any]:
    """'EVENT <boot> <seq> <kind> det=<i|None> lel=<x|None> [detail]' -> event dict."""
    parts = line.split(" ", 6)
    det = parts[4].partition("=")[2]
    lel = parts[5].partition("=")[2]
    return {
        "id": (int(parts[1]), int(parts[2])),
        "kind": parts[3],
        "det": None if det == "None" else int(det),
        "lel": None if lel == "None" else float(lel),
        "detail": parts[6] if len(parts) > 6 else "",
    }
