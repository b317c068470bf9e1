"""What a HIL scenario may ask of a rig. Both rigs run the detector simulator on this machine; they
differ in how they reach the board's outputs, buttons and power."""

from __future__ import annotations

import threading
import time
from typing import Any, NoReturn

import pytest

from gasguard.tools.sim.detsim import DetectorBus, SimDetector


def unsupported(reason: str) -> NoReturn:
    """The rig cannot do this (no power relay, no fault injection): the scenario is skipped."""
    pytest.skip(reason)


class Rig:
    name = "rig"

    def __init__(self) -> None:
        self.bus: DetectorBus | None = None
        self._events: list[dict[str, Any]] = []
        self.boot_causes: list[str] = []  # reset cause of each firmware start seen, in order
        self._cv = threading.Condition()

    # --- detectors and the bus (the simulator is local for every rig) ---------------------------

    def detector(self, address: int) -> SimDetector:
        assert self.bus is not None
        return self.bus[address]

    def unplug(self, address: int, unplugged: bool = True) -> None:
        assert self.bus is not None
        self.bus.silence(address, unplugged)

    def corrupt(self, rate: float) -> None:
        assert self.bus is not None
        self.bus.pacer.corrupt_rate = rate

    # --- events: {"id": (boot, seq), "kind", "det", "lel", "detail"} -----------------------------

    def _add_event(self, e: dict[str, Any]) -> None:
        with self._cv:
            if all(x["id"] != e["id"] for x in self._events[-64:]):
                self._events.append(e)
            self._cv.notify_all()

    def events(self) -> list[dict[str, Any]]:
        with self._cv:
            return list(self._events)

    def mark(self) -> int:
        with self._cv:
            return len(self._events)

    def wait_event(
        self, kind: str, timeout: float = 5.0, since: int = 0, det: int | None = None
    ) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for e in self._events[since:]:
                    if e["kind"] == kind and (det is None or e.get("det") == det):
                        return e
                left = deadline - time.monotonic()
                if left <= 0:
                    seen = [(e["kind"], e.get("det")) for e in self._events[since:]]
                    raise TimeoutError("no %s event (det=%s); saw %s" % (kind, det, seen))
                self._cv.wait(left)

    # --- the board: each rig implements these ----------------------------------------------------

    def wait_valve(self, state: str, timeout: float = 5.0) -> float:
        """Wait until the valve is 'open' or 'closed'; returns the perf_counter time it was."""
        raise NotImplementedError

    def wait_output(self, pin: str, value: int, timeout: float = 5.0) -> None:
        raise NotImplementedError

    def output(self, pin: str) -> int | None:
        raise NotImplementedError

    def press(self, button: str, hold_s: float = 0.2) -> None:
        raise NotImplementedError

    def _booted(self, cause: str) -> None:
        with self._cv:
            self.boot_causes.append(cause)
            self._cv.notify_all()

    def wait_boot(self, n: int = 1, timeout: float = 15.0) -> str:
        """Wait until the firmware has started n times; returns the reset cause of start n."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while len(self.boot_causes) < n:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError("firmware start %d not seen (%s)" % (n, self.boot_causes))
                self._cv.wait(left)
            return self.boot_causes[n - 1]

    def reboot(self) -> None:
        """A reset from the console: the firmware starts again from boot."""
        unsupported("this rig cannot reboot the board")

    def power_cut(self) -> None:
        unsupported("this rig has no power relay: cut the supply by hand (README)")

    def hang_loop(self) -> None:
        unsupported("this rig cannot inject a hung loop into the firmware")

    def reset_valve(self, attempts: int = 6) -> None:
        """Staff reset on site once everything is healthy: the valve opens. Right after a boot
        the detectors may not have answered yet; the reset is refused and, as staff would, the
        rig waits a moment and presses again."""
        refusals = []
        for _ in range(attempts):
            mark = self.mark()
            self.press("reset", 0.6)
            try:
                self.wait_valve("open", 3)
                return
            except TimeoutError:
                refused = [e for e in self.events()[mark:] if e["kind"] == "reset.refused"]
                if not refused:
                    raise
                refusals.append(refused[0]["detail"])
            time.sleep(1.0)
        raise TimeoutError("reset refused %d times: %s" % (attempts, refusals))

    def close(self) -> None:
        if self.bus is not None:
            self.bus.stop()
