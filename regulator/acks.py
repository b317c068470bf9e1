"""Alarms acknowledged from the console: a person on duty has seen it (issue 25).

An incident counts as acknowledged when staff pressed the board's acknowledge button (the
incident's `acknowledged_at`, from the stream) or someone acknowledged or triaged it here; either
stops its escalation. Nothing here touches the board: acknowledging in the console never
silences the buzzer or opens a valve (docs/design.md §6.4).
"""

from __future__ import annotations

from typing import Any

from . import audit

TABLES = """
CREATE TABLE IF NOT EXISTS alarm_acks (
    site TEXT NOT NULL, device TEXT NOT NULL, open_event TEXT NOT NULL, by_user TEXT NOT NULL,
    at TEXT NOT NULL, via TEXT NOT NULL, PRIMARY KEY (site, device, open_event));
"""


def acknowledge(store: Any, site: str, device: str, open_event: str, by: str, at: str,
                via: str) -> bool:
    """Record the first acknowledgement (inside the caller's transaction, audited). True if this
    one was the first; a later one changes nothing."""
    cur = store.x(
        "INSERT INTO alarm_acks VALUES (?,?,?,?,?,?) ON CONFLICT (site, device, open_event) "
        "DO NOTHING", (site, device, open_event, by, at, via),
    )
    if cur.rowcount != 1:
        return False
    audit.record(store, at, by, "alarm.acknowledge", "incident:%s/%s" % (site, open_event),
                 None, {"device": device, "via": via})
    return True


def acknowledged(store: Any, site: str, device: str, open_event: str) -> str | None:
    """When the incident was first acknowledged, on site or in the console (None: not yet)."""
    row = store.x(
        "SELECT MIN(t) FROM (SELECT acknowledged_at AS t FROM incidents WHERE site = ? AND "
        "device = ? AND open_event = ? UNION ALL SELECT at FROM alarm_acks WHERE site = ? "
        "AND device = ? AND open_event = ?) AS s",
        (site, device, open_event, site, device, open_event),
    ).fetchone()
    return row[0] if row else None
