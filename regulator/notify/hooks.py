"""What the web console's workflow hands to forwarding (issue 25): the hooks
`gasguard regulator serve --notify-config FILE` passes to create_console.

A real alarm (triage's verdict) is forwarded with its hazard as dispatched; when a re-inspection
closes a hazard whose alarm was triaged real, the hazard is forwarded again, closed
("动态销号": the upper platform sees it cleared). False alarms, tests and device faults are not
forwarded: 119 and the emergency bureau want leaks, not maintenance. Each hook runs inside the
transaction that decided it, so the forward is enqueued with the change or not at all.
"""

from __future__ import annotations

from typing import Any

from .. import hazards
from . import forward
from .config import Config

REAL = "real"


def console_hooks(cfg: Config) -> tuple[list[Any], list[Any]]:
    """(on_confirmed, on_closed) for create_console; empty when no forward channel is set."""
    if not cfg.forward_channels:
        return [], []

    def confirmed(store: Any, site: str, device: str, open_event: str, verdict: str,
                  at: str) -> None:  # fmt: skip
        forward.forward_alarm(store, cfg, site, device, open_event, verdict, at)
        h = hazards.for_incident(store, site, device, open_event, at)
        if h is not None:
            forward.forward_hazard(store, cfg, h["id"], at)

    def closed(store: Any, hazard_id: int, at: str) -> None:
        verdicts = store.rows("SELECT verdict FROM alarm_triage WHERE hazard = ?", (hazard_id,))
        if any(v["verdict"] == REAL for v in verdicts):
            forward.forward_hazard(store, cfg, hazard_id, at)

    return [confirmed], [closed]

