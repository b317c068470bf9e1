"""Confirmed alarms and hazards forwarded to upper platforms (119, the emergency bureau, the gas
company, the city's early-warning platform): one outbox row per configured forward channel.

The triage side calls these inside the transaction that confirms (a verdict recorded, a hazard
raised or closed); the payload is protocol/schemas/forward.schema.json
(`urn:gasguard:schema:forward:1`), documented in docs/regulator.md, "Forwarding"; the channel
signs it when it is sent (channels/webhook.py) or republishes it on MQTT (channels/mqtt.py).
A verdict or hazard change forwarded again is a new message (its key names the verdict or the
hazard's status); the same call twice is one.
"""

from __future__ import annotations

import datetime
from typing import Any

from .. import hazards
from . import messages, outbox
from .config import Config

SCHEMA = "urn:gasguard:schema:forward:1"


def _unit(store: Any, site: str) -> dict[str, Any] | None:
    rows = store.rows("SELECT name, address, node, responsible, phone, lat, lon FROM units "
                      "WHERE site = ?", (site,))  # fmt: skip
    if not rows:
        return None
    u = rows[0]
    return {k: v for k, v in u.items() if v is not None}


def _enqueue(store: Any, cfg: Config, key: str, site: str, target: str,
             payload: dict[str, Any], at: str) -> list[str]:  # fmt: skip
    keys = []
    for ch in cfg.forward_channels:
        k = "%s:%s" % (key, ch)
        body = {"title": "forward %s" % target, "text": "", "link": payload.get("link"),
                "payload": {**payload, "message_id": outbox.message_id(k)}}  # fmt: skip
        if outbox.enqueue(store, key=k, channel=ch, recipient=ch, kind="forward",
                          subject=target, site=site, body=body, at=at):  # fmt: skip
            keys.append(k)
    return keys


def _at(at: datetime.datetime | str) -> str:
    return outbox._at(at)


def forward_alarm(store: Any, cfg: Config, site: str, device: str, open_event: str,
                  verdict: str, at: datetime.datetime | str) -> list[str]:  # fmt: skip
    """Forward a triaged incident (inside the caller's transaction). verdict: the triage's word
    (e.g. "real"); the keys enqueued (none if already forwarded with this verdict)."""
    rows = store.rows(
        "SELECT site, device, open_event, level, stage, opened_at, valve_closed_at, "
        "acknowledged_at, cleared_at, closed_at, peak_lel, detectors FROM incidents "
        "WHERE site = ? AND device = ? AND open_event = ?",
        (site, device, open_event),
    )
    if not rows:
        raise KeyError("no incident %s/%s/%s" % (site, device, open_event))
    inc = rows[0]
    import json

    inc["detectors"] = json.loads(inc["detectors"])
    alarm = {k: v for k, v in inc.items() if v is not None and k != "site"}
    alarm["verdict"] = messages.plain(verdict, 40)
    payload = {"schema": SCHEMA, "type": "alarm", "at": _at(at), "site": site,
               "unit": _unit(store, site), "alarm": alarm,
               "link": messages.unit_link(cfg.base_url, site)}  # fmt: skip
    key = "forward:alarm:%s/%s/%s:%s" % (site, device, open_event, alarm["verdict"])
    return _enqueue(store, cfg, key, site, "incident:%s/%s" % (site, open_event), payload,
                    _at(at))  # fmt: skip


def forward_hazard(store: Any, cfg: Config, hazard_id: int,
                   at: datetime.datetime | str) -> list[str]:  # fmt: skip
    """Forward a hazard as it stands (inside the caller's transaction)."""
    h = hazards.get(store, hazard_id)
    hazard = {k: v for k, v in h.items() if v is not None and k != "site"}
    payload = {"schema": SCHEMA, "type": "hazard", "at": _at(at), "site": h["site"],
               "unit": _unit(store, h["site"]), "hazard": hazard,
               "link": messages.unit_link(cfg.base_url, h["site"])}  # fmt: skip
    key = "forward:hazard:%s:%s" % (hazard_id, h.get("status"))
    return _enqueue(store, cfg, key, h["site"], "hazard:%s" % hazard_id, payload, _at(at))
