"""Incidents from a device's events, in the board's own order: pure, no I/O.

An incident opens at a low or high alarm and follows the site:

    opened → acknowledged → cleared (every alarming detector clear) → closed

It closes at the valve reset after the gas cleared, or at the clear itself when the valve never
closed (a low alarm that only sounds). An alarm while one is open joins it (and may raise it to
high). The store folds events in order_key order, never arrival order, so an earlier event that
arrives late cannot reopen a closed incident or hide a later one. An incident belongs to one
life of the board (its instance): a re-flashed or replaced board's events never close, join or
reset an incident of the board before it, whatever their order.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

# the event kinds that move an incident; the rest (faults, self-tests, boots) do not
KINDS = frozenset(("alarm.low", "alarm.high", "alarm.clear", "valve.closed", "ack", "reset"))


@dataclass(frozen=True, order=True)
class OrderKey:
    """A board's order: its lives (instance ids, made at first boot) in the order the ledger
    first heard them, then boot counter, then sequence. A board re-flashed under the same
    device id is a new instance whose boot counter starts again at 1: (boot, seq) alone would
    sort all of its events before the old board's, and its first alarm would look older than
    the last reset; its clock may not be set yet either (2000-01-01)."""

    first_time: str  # "first arrival|earliest event time" of this instance (both canonical)
    instance: str
    boot: int
    seq: int


@dataclass(frozen=True)
class Event:
    id: str
    kind: str
    time: str
    key: OrderKey
    detector: int | None = None
    lel: float | None = None


@dataclass
class Incident:
    open_event: str  # the id of the alarm that opened it: its stable name
    site: str
    device: str
    level: str
    opened_at: str
    instance: str = ""  # the board's life whose alarm opened it
    ordinal: int = 1  # 1, 2, ... per device, in the board's order
    detectors: list[int] = field(default_factory=list)
    alarming: list[int] = field(default_factory=list)
    peak_lel: float | None = None
    valve_closed_at: str | None = None
    acknowledged_at: str | None = None
    cleared_at: str | None = None
    reset_at: str | None = None
    closed_at: str | None = None
    stage: str = "opened"
    last_event: str = ""

    def row(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _alarm(inc: Incident | None, ev: Event, site: str, device: str) -> Incident:
    level = ev.kind[len("alarm.") :]
    dets = [] if ev.detector is None else [ev.detector]
    if inc is None or inc.closed_at is not None or inc.instance != ev.key.instance:
        n = 1 if inc is None else inc.ordinal + 1
        return Incident(ev.id, site, device, level, ev.time, ev.key.instance, n, dets,
                        list(dets), ev.lel)  # fmt: skip
    inc.level = "high" if "high" in (inc.level, level) else "low"
    inc.detectors = sorted(set(inc.detectors) | set(dets))
    inc.alarming = sorted(set(inc.alarming) | set(dets))
    if ev.lel is not None:
        inc.peak_lel = ev.lel if inc.peak_lel is None else max(inc.peak_lel, ev.lel)
    if inc.cleared_at is not None:  # gas again before the reset: not cleared any more
        inc.cleared_at = None
        inc.stage = "acknowledged" if inc.acknowledged_at else "opened"
    return inc


def _close(inc: Incident, when: str) -> None:
    inc.closed_at = when
    inc.stage = "closed"


def _step(inc: Incident, ev: Event) -> None:
    if ev.kind == "valve.closed" and inc.valve_closed_at is None:
        inc.valve_closed_at = ev.time
    elif ev.kind == "ack" and inc.acknowledged_at is None:
        inc.acknowledged_at = ev.time
        if inc.stage == "opened":
            inc.stage = "acknowledged"
    elif ev.kind == "alarm.clear":
        inc.alarming = [] if ev.detector is None else [d for d in inc.alarming if d != ev.detector]
        if not inc.alarming:
            inc.cleared_at = ev.time
            inc.stage = "cleared"
            if inc.valve_closed_at is None:  # nothing to reopen on site: the hazard is over
                _close(inc, ev.time)
    elif ev.kind == "reset":
        inc.reset_at = ev.time
        if not inc.alarming:
            inc.cleared_at = inc.cleared_at or ev.time
            _close(inc, ev.time)


def fold(current: Incident | None, events: list[Event], site: str, device: str) -> list[Incident]:
    """Apply events (already in OrderKey order) to the device's latest incident (None for a
    device without one, or to rebuild from its first event). Returns every incident touched,
    oldest first; only the last can still be open."""
    out: list[Incident] = []
    inc = None if current is None else replace(current)
    if inc is not None:
        out.append(inc)
    for ev in events:
        if ev.kind not in KINDS:
            continue
        if ev.kind in ("alarm.low", "alarm.high"):
            new = _alarm(inc, ev, site, device)
            if new is not inc:
                out.append(new)
            inc = new
        elif inc is not None and inc.closed_at is None and inc.instance == ev.key.instance:
            _step(inc, ev)
        else:
            continue
        inc.last_event = ev.id
    return out
