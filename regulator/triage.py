"""Triage (研判): the person on duty says what an alarm was, with a reason, once (issue 25).

    real   a leak: its hazard is dispatched as a work order, and the on_confirmed hooks run
    fault  a device fault: a maintenance work order for its hazard
    false  a false alarm: its hazard closes with the reason
    test   a test: the same

Triage acknowledges the alarm (regulator/acks.py, via "triage"), so its escalation stops. A
false or test alarm's hazard is closed by whoever triaged it (hazards.dismiss): nothing was
rectified and no one was made responsible, so the sign-off rule (谁检查、谁签名、谁负责) has no
one to keep apart; the verdict, the reason and the name are in the audit log. Triage is for an
alarm whose hazard has not gone out yet: a dispatched one closes through its work order.

on_confirmed: callables hook(store, site, device, open_event, verdict, at), run for a real
alarm inside the triage's transaction (what they enqueue is decided with it, or not at all).
The notify core's forwarding goes here: `lambda store, *a: forward.forward_alarm(store, cfg,
*a)` (regulator/notify/forward.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from . import acks, audit, hazards, workorders
from .refusal import Refusal

TABLES = """
CREATE TABLE IF NOT EXISTS alarm_triage (
    site TEXT NOT NULL, device TEXT NOT NULL, open_event TEXT NOT NULL, verdict TEXT NOT NULL,
    reason TEXT NOT NULL, by_user TEXT NOT NULL, at TEXT NOT NULL, hazard INTEGER NOT NULL,
    work_order INTEGER, PRIMARY KEY (site, device, open_event),
    CHECK (verdict IN ('real', 'false', 'test', 'fault')));
CREATE INDEX IF NOT EXISTS alarm_triage_at ON alarm_triage (at);
"""
VERDICTS = ("real", "false", "test", "fault")
REASON_CHARS = 500
Confirmed = Callable[[Any, str, str, str, str, str], None]


class TriageError(Refusal):
    """A triage the alarm's state or the form does not allow."""


def get(store: Any, site: str, device: str, open_event: str) -> dict[str, Any] | None:
    rows = store.rows("SELECT * FROM alarm_triage WHERE site = ? AND device = ? AND "
                      "open_event = ?", (site, device, open_event))  # fmt: skip
    return rows[0] if rows else None


def triage(store: Any, site: str, device: str, open_event: str, verdict: str, reason: str,
           by: str, at: str, *, to: str | None = None, deadline: str | None = None,
           on_confirmed: Iterable[Confirmed] = ()) -> dict[str, Any]:  # fmt: skip
    """Record the verdict and act on it, all in one transaction. `to` and `deadline` (default:
    the hazard's, from its severity) are the work order's, for real and fault. Returns the
    triage row (with `work_order` for real and fault)."""
    if verdict not in VERDICTS:
        raise TriageError("verdict: one of real, false, test or device fault")
    reason = workorders.text("reason", reason, REASON_CHARS) or ""
    if verdict in ("real", "fault") and not to:
        raise TriageError("responsible: a real alarm or a device fault goes out as a work "
                          "order: name who takes it")  # fmt: skip
    with store.transaction():
        h = hazards.for_incident(store, site, device, open_event, at)
        if h is None:
            raise TriageError("no such alarm")
        cur = store.x(
            "INSERT INTO alarm_triage (site, device, open_event, verdict, reason, by_user, at, "
            "hazard) VALUES (?,?,?,?,?,?,?,?) ON CONFLICT (site, device, open_event) DO NOTHING",
            (site, device, open_event, verdict, reason, by, at, h["id"]),
        )
        if cur.rowcount != 1:  # triaged already, or by someone else a moment ago
            was = get(store, site, device, open_event) or {}
            raise TriageError("this alarm was triaged as %(verdict)s by %(by)s at "
                              "%(triaged_at)s", verdict=was.get("verdict"),
                              by=was.get("by_user"), triaged_at=was.get("at"))  # fmt: skip
        if h["status"] != "open":
            raise TriageError("hazard %(id)d is %(status)s: it has gone out already; triage "
                              "comes before dispatch", id=h["id"], status=h["status"])
        acks.acknowledge(store, site, device, open_event, by, at, "triage")
        if verdict in ("false", "test"):
            hazards.dismiss(store, h["id"], "%s: %s" % (verdict, reason), by, at)
        else:
            wo = workorders.dispatch(store, h["id"], to or "", deadline, by, at,
                                     kind="rectify" if verdict == "real" else "maintenance",
                                     note=reason)  # fmt: skip
            store.x("UPDATE alarm_triage SET work_order = ? WHERE site = ? AND device = ? "
                    "AND open_event = ?", (wo["id"], site, device, open_event))  # fmt: skip
            if verdict == "real":
                for hook in on_confirmed:
                    hook(store, site, device, open_event, verdict, at)
        row = get(store, site, device, open_event)
        audit.record(store, at, by, "alarm.triage", "incident:%s/%s" % (site, open_event),
                     None, row)  # fmt: skip
    return row  # type: ignore[return-value]


def of_sites(store: Any, keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], dict]:
    """The triage of each (site, device, open_event) listed that has one."""
    if not keys:
        return {}
    sites = sorted({k[0] for k in keys})
    sql, arg = store.in_list(sites)
    rows = store.rows("SELECT * FROM alarm_triage WHERE site IN " + sql, (arg,))
    wanted = set(keys)
    return {k: r for r in rows if (k := (r["site"], r["device"], r["open_event"])) in wanted}
