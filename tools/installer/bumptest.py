"""The bump test, the host's half: proof that gas closes the valve (issue 26).

For each detector the board (firmware/lib/gasguard/bump.py `alarm`) runs the firmware's own
safety logic, valve driver, indicators and RESET button while test gas reaches the detector, and
prints each milestone as it happens. Here each milestone gets its time (UTC, on arrival: the
board has no clock of its own when it is stopped) and tells whoever applies the gas what to do
next: a Person at the site, guided step by step in Chinese and English, or, on a virtual board,
Virtual, which sets the detector simulator's gas and holds the panel's RESET button.

What the record gets for each detector (docs/design.md §2.6): low_at, high_at, valve_closed_at,
high_to_closed_ms (measured on the board: from the high set point to the position input showing
closed), reset_refused_at, reset_at, peak_tenths and a result, pass only when every milestone
was seen in order.
"""

from __future__ import annotations

import datetime
import json
import socket
import threading
import time
from pathlib import Path
from typing import Any

from gasguard.tools import exitcodes

# the board's "step" numbers (firmware bump.alarm) and what each one records
OPEN, LOW, HIGH, CLOSED, REFUSED, CLEARED, REOPENED, END = 1, 2, 3, 4, 5, 6, 7, 9
AT = {LOW: "low_at", HIGH: "high_at", CLOSED: "valve_closed_at", REFUSED: "reset_refused_at",
      REOPENED: "reset_at"}  # fmt: skip
WHY_GAS = 6  # firmware events.D_GAS: refused because of gas on a detector
# what the person is asked to do at each step (zh-CN, then English)
GUIDE = {
    OPEN: "阀门已开启。请对 {name} 施加标准试验气体。\n"
          "  The valve is open. Apply test gas to {name} now (waiting up to {wait} s).",
    CLOSED: "阀门已关闭（{ms} ms）。请在试验气体仍存在时按住复位键：应被拒绝。\n"
            "  The valve closed ({ms} ms after the high alarm). With the gas still on the "
            "detector, hold RESET now: the board must refuse.",
    REFUSED: "复位被拒绝，正确。请移走试验气体，等待读数回落。\n"
             "  Reset refused, as it must be. Take the test gas away and wait for the reading "
             "to fall.",
    CLEARED: "读数已回落。请按住复位键开启阀门（自锁阀：再拉起阀门手柄）。\n"
             "  The gas has cleared. Hold RESET now: the valve should open (a latching valve: "
             "then pull its knob).",
}
# a latching valve opens only by hand: said before each detector's test starts
KNOB = ("自锁阀：请拉起阀门手柄开启阀门。\n"
        "  Latching valve: pull its knob to open it when the board asks (green lamp flashing).")
NOTES = {
    LOW: "low set point passed ({lel} %LEL)",
    HIGH: "high set point: alarm ({lel} %LEL)",
    CLOSED: "valve closed, position input agrees ({ms} ms after the high alarm)",
    REFUSED: "reset refused while gas is present ({lel} %LEL)",
    CLEARED: "gas cleared ({lel} %LEL)",
    REOPENED: "reset accepted: valve open again",
}
GAS_WAIT_S = 300  # how long the board waits for a person to go through the steps
VIRTUAL_WAIT_S = 40


class VirtualError(ValueError):
    """--virtual names no usable virtual board (the message says why)."""


def utc_now() -> str:
    return datetime.datetime.now(datetime.UTC).isoformat(timespec="milliseconds").replace(
        "+00:00", "Z")  # fmt: skip


class Person:
    """A person at the site applies the gas and holds RESET: they are told each step."""

    wait_s = GAS_WAIT_S

    def __init__(self, echo) -> None:
        self.echo = echo

    def act(self, step: int, address: int, name: str, line: dict[str, Any]) -> None:
        if step in GUIDE:
            self.echo("  >> " + GUIDE[step].format(name=name, wait=self.wait_s,
                                                    ms=line.get("ms")))  # fmt: skip


def _hostport(value: Any, what: str) -> tuple[str, int]:
    if not isinstance(value, str) or value.count(":") != 1:
        raise VirtualError("its %s is not host:port" % what)
    host, _, port = value.partition(":")
    if host not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        raise VirtualError("its %s %r is not a port on this machine" % (what, value))
    n = int(port)
    if not 0 < n < 65536:
        raise VirtualError("its %s port %d is out of range" % (what, n))
    return host, n


class Virtual:
    """On a virtual board (`gasguard vboard`'s endpoints as --virtual FILE) the detector
    simulator supplies the gas and the panel holds RESET, at the steps a person would."""

    wait_s = VIRTUAL_WAIT_S

    def __init__(self, endpoints: dict[str, Any], cfg: dict[str, Any], echo) -> None:
        if not isinstance(endpoints, dict):
            raise VirtualError("not the JSON object gasguard vboard prints")
        self.control = _hostport(endpoints.get("control"), "control")
        self.panel = _hostport(endpoints.get("panel"), "panel")
        self.device = endpoints.get("device_id")
        if self.device != cfg.get("device_id"):
            raise VirtualError("it is the board of %r, not %r" % (self.device,
                                                                   cfg.get("device_id")))
        a = cfg.get("alarm") if isinstance(cfg.get("alarm"), dict) else {}
        self.low, self.high = a.get("low_alarm_pct", 20), a.get("high_alarm_pct", 50)
        p = cfg.get("pins") if isinstance(cfg.get("pins"), dict) else {}
        self.active = 1 if p.get("buttons_active_low") is False else 0
        self.hold_s = p.get("reset_hold_ms", 1000) / 1000 + 0.3
        self.echo = echo
        self.threads: list[threading.Thread] = []

    @classmethod
    def from_file(cls, path: Path, cfg: dict[str, Any], echo) -> Virtual:
        try:
            raw = path.read_bytes()[:65536]
            doc = json.loads(raw.decode("utf-8").strip().splitlines()[-1])
        except (OSError, UnicodeDecodeError, ValueError, IndexError) as e:
            why = getattr(e, "strerror", None) or e
            raise VirtualError("cannot read it (%s)" % why) from None
        return cls(doc, cfg, echo)

    def _send(self, where: tuple[str, int], lines: list[bytes], reply: bool) -> None:
        with socket.create_connection(where, timeout=5) as s:
            for line in lines:
                s.sendall(line + b"\n")
                if reply:
                    got = s.makefile("rb").readline()
                    if b'"ok"' not in got:
                        raise OSError("the simulator said %r" % got[:200])

    def gas(self, address: int, pct: float) -> None:
        self._send(self.control, [json.dumps({"det": address, "lel": pct}).encode()], True)

    def reset(self) -> None:
        with socket.create_connection(self.panel, timeout=5) as s:
            s.sendall(b"reset %d\n" % self.active)
            time.sleep(self.hold_s)
            s.sendall(b"reset %d\n" % (1 - self.active))
            time.sleep(0.2)

    def _later(self, fn, *args) -> None:
        # off the REPL reader's thread: the board's lines keep coming while the gas rises
        t = threading.Thread(target=fn, args=args, daemon=True)
        t.start()
        self.threads.append(t)

    def _ramp(self, address: int) -> None:
        self.gas(address, (self.low + self.high) / 2)  # past the low set point first
        time.sleep(1.5)
        self.gas(address, min(100, self.high + 20))

    def act(self, step: int, address: int, name: str, line: dict[str, Any]) -> None:
        if step == OPEN:
            self.echo("  >> virtual board: test gas on %s" % name)
            self._later(self._ramp, address)
        elif step == CLOSED:
            self.echo("  >> virtual board: RESET held with the gas present")
            self._later(self.reset)
        elif step == REFUSED:
            self.echo("  >> virtual board: test gas taken away")
            self._later(self.gas, address, 0.0)
        elif step == CLEARED:
            self.echo("  >> virtual board: RESET held")
            self._later(self.reset)

    def finish(self, address: int) -> None:
        for t in self.threads:
            t.join(10)
        self.threads = []
        try:
            self.gas(address, 0.0)  # whatever happened: clean air again
        except OSError:
            pass


def result(address: int, lines: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    """The record's bump test from the board's milestone lines (each with its arrival time):
    what was not seen is left out, never null."""
    out = _result(address, lines)
    return {k: v for k, v in out.items() if v is not None}


def _result(address: int, lines: list[tuple[str, dict[str, Any]]]) -> dict[str, Any]:
    out: dict[str, Any] = {"detector": address, "low_at": None, "high_at": None,
                           "valve_closed_at": None, "high_to_closed_ms": None,
                           "reset_refused_at": None, "reset_at": None, "peak_tenths": None,
                           "result": "fail", "detail": None}  # fmt: skip
    seen = []
    end = None
    for at, line in lines:
        step = line.get("step")
        if step in AT and out[AT[step]] is None:
            out[AT[step]] = at
            seen.append(step)
        if step == CLOSED:
            ms = line.get("ms")
            out["high_to_closed_ms"] = ms if isinstance(ms, int) and ms >= 0 else None
        if step == REFUSED and line.get("why") != WHY_GAS:
            out["detail"] = "reset refused, but not for gas (a detector was not healthy)"
        if step == END:
            out["peak_tenths"] = line.get("lel") if isinstance(line.get("lel"), int) else None
            end = line.get("end")
    last = seen[-1] if seen else OPEN
    if out["detail"]:
        return out
    if end == 8:
        out["detail"] = "RESET reopened the valve: the gas was gone before RESET was held"
    elif not seen and not any(ln.get("step") == OPEN for _, ln in lines):
        out["detail"] = "the valve never opened for the test (a detector not reading clean air?)"
    elif REOPENED in seen and out["high_to_closed_ms"] is None and out["valve_closed_at"]:
        out["result"] = "not confirmed"
        out["detail"] = "no position input: the valve's closing was commanded, not measured"
    elif REOPENED in seen:
        out["result"] = "pass"
    else:
        out["detail"] = {
            OPEN: "no gas reached the low set point in time",
            LOW: "the reading never reached the high set point",
            HIGH: "the valve did not report closed (position input) after the alarm",
            CLOSED: "RESET was not held while the gas was present",
            REFUSED: "the gas did not clear in time",
            CLEARED: "the valve did not open on RESET after the gas cleared",
        }.get(last, "the test stopped")
    return out


def run(board: Any, place: int, address: int, name: str, actor, echo,
        latching: bool = False) -> dict[str, Any]:  # fmt: skip
    """Run the bump test of the detector at `place` (from 0) and return its record entry."""
    from gasguard.tools.installer.flash import FlashError

    lines: list[tuple[str, dict[str, Any]]] = []
    partial = b""
    failure: list[BaseException] = []

    def consume(data: bytes) -> None:
        nonlocal partial
        partial += data
        *done, partial = partial.split(b"\n")
        for raw in done:
            text = raw.decode(errors="replace").strip()
            if not text.startswith("SELFTEST "):
                continue
            try:
                line = json.loads(text[9:])
            except ValueError:
                continue
            at = utc_now()
            lines.append((at, line))
            step = line.get("step")
            if step in NOTES:
                echo("  %-31s %s" % (name, NOTES[step].format(
                    lel="%.1f" % (line.get("lel", 0) / 10), ms=line.get("ms"))))  # fmt: skip
            try:
                actor.act(step, address, name, line)
            except OSError as e:  # the virtual board's simulator went away
                failure.append(e)

    if latching and isinstance(actor, Person):
        echo("  >> " + KNOB)
    wait_ms = int(actor.wait_s * 1000)
    try:
        _, err = board.t.exec_raw("bump.alarm(%d, %d)\n" % (place, wait_ms),
                                  timeout=actor.wait_s * 2 + 30,
                                  data_consumer=consume)  # fmt: skip
    finally:
        if hasattr(actor, "finish"):
            actor.finish(address)
    consume(b"\n")
    if err:
        raise FlashError("the bump test stopped on the board: %s" % err.decode().strip()[-400:])
    if failure:
        raise FlashError("the virtual board's simulator did not answer: %s" % failure[0],
                         exitcodes.UNREACHABLE)  # fmt: skip
    return result(address, lines)
