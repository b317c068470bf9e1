"""Which ingest machines (nodes) of a group have run against this database, and when last.

A node's workers hold MQTT sessions in the group's shared subscriptions, and the broker goes on
sharing events out to them while they are away (a week, the session expiry). A node that is
renamed (the default node is the host name), moved or retired strands its share there, and a
start elsewhere cannot ask the broker about sessions whose names it does not know. So each
running ingest says here that it is alive, once a minute; a start that finds a node of its group
silent for longer than STALE_S names it, and `--drain-node NAME` takes its sessions over, stores
what they hold and ends them. Never automatic: a node silent to the database may still be
connected to the broker, and taking its sessions would knock it off.
"""

from __future__ import annotations

import datetime
import json
from typing import Any

BEAT_S = 60.0  # how often a running ingest says it is alive
STALE_S = 600.0  # a node not heard for this long is not running (or cannot reach the database)


def _key(group: str, node: str) -> str:
    return "ingest:%s:%s" % (group, node)


def beat(store: Any, group: str, node: str, workers: int, now: datetime.datetime) -> None:
    store.set_meta(_key(group, node), json.dumps({"workers": workers, "seen": now.isoformat()}))


def forget(store: Any, group: str, node: str) -> None:
    with store.transaction():
        store.x("DELETE FROM regulator_meta WHERE key = ?", (_key(group, node),))


def nodes(store: Any, group: str) -> dict[str, dict[str, Any]]:
    """node -> {"workers": int, "seen": datetime} for every node of the group on record."""
    out = {}
    head = _key(group, "")
    for key, value in store.x("SELECT key, value FROM regulator_meta").fetchall():
        if not key.startswith(head):
            continue
        try:
            d = json.loads(value)
            seen = datetime.datetime.fromisoformat(d["seen"])
            out[key[len(head) :]] = {"workers": int(d["workers"]), "seen": seen}
        except (ValueError, KeyError, TypeError):
            continue  # written by hand, or by something else: not a node's record
    return out


def silent(store: Any, group: str, node: str, now: datetime.datetime) -> dict[str, dict]:
    """The group's other nodes not heard for STALE_S."""
    return {n: r for n, r in nodes(store, group).items()
            if n != node and (now - r["seen"]).total_seconds() > STALE_S}  # fmt: skip
