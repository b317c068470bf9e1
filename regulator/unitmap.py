"""Each registered unit on the map (一张图): its place (the registry's lat/lon) and one state, the
first of these that holds:

    alarm         an open incident
    offline       it has devices and every one of them is offline (a dark site)
    fault         a valve fault in a device's retained state, or an open `not_working` finding
                  (a detector in fault, past its calibration or life, a device silent)
    noncompliant  any other open compliance finding
    normal        none of these

A dark site comes before its faults: its own silence raises `not_working` an hour later, and
"offline" says more. Read-only, scoped like every view (regulator/views.py)."""

from __future__ import annotations

from typing import Any

from . import views

STATES = ("alarm", "offline", "fault", "noncompliant", "normal")


def _columns() -> dict[str, list]:
    return {"site": [], "name": [], "lat": [], "lon": []}


def unit_states(store: Any, scope: str | None) -> dict[str, Any]:
    """{states: {state: {site, name, lat, lon: lists}}, counts, unplaced}: the units under scope
    (None: all); unplaced counts those without coordinates (not on the map)."""
    out: dict[str, Any] = {"states": {s: _columns() for s in STATES},
                           "counts": dict.fromkeys(STATES, 0), "unplaced": 0}  # fmt: skip
    have = views.tables(store)
    if not views.has_registry(store, have):
        return out
    where, params = views.Filters(state="all", scope=scope).where(True)

    def read(sql: str) -> list:
        return store.x(sql % where, params).fetchall()

    with views.snapshot_of(store):
        units = read("SELECT site, name, lat, lon FROM units WHERE 1=1%s")
        alarmed = {r[0] for r in read("SELECT DISTINCT site FROM incidents "
                                      "WHERE closed_at IS NULL%s")}  # fmt: skip
        devices = {r[0]: r[1:] for r in read(
            "SELECT site, count(*), sum(CASE WHEN online = 0 THEN 1 ELSE 0 END), "
            "sum(CASE WHEN valve = 'fault' THEN 1 ELSE 0 END) FROM devices WHERE 1=1%s "
            "GROUP BY site")}  # fmt: skip
        kinds: dict[str, set[str]] = {}
        if "findings" in have:
            for site, kind in read("SELECT DISTINCT site, kind FROM findings "
                                   "WHERE cleared_at IS NULL%s"):  # fmt: skip
                kinds.setdefault(site, set()).add(kind)
    for site, name, lat, lon in units:
        n, offline, valve_faults = devices.get(site, (0, 0, 0))
        found = kinds.get(site, set())
        if site in alarmed:
            state = "alarm"
        elif n and offline == n:
            state = "offline"
        elif valve_faults or "not_working" in found:
            state = "fault"
        elif found:
            state = "noncompliant"
        else:
            state = "normal"
        out["counts"][state] += 1
        # the registry checks degrees at import; a hand-edited row (NaN) must not break JSON
        if lat is None or lon is None or not (-90 <= lat <= 90 and -180 <= lon <= 180):
            out["unplaced"] += 1
            continue
        col = out["states"][state]
        col["site"].append(site)
        col["name"].append(name)
        col["lat"].append(lat)
        col["lon"].append(lon)
    return out


def nodes_seen(store: Any, scope: str | None) -> set[str] | None:
    """The tree's nodes an account at scope sees outlined: its own, those above it (where it
    is) and those under it. None: the whole city's account, every outline."""
    if scope is None:
        return None
    parents = dict(store.x("SELECT id, parent FROM nodes").fetchall())
    seen, at = set(), scope
    while at in parents and at not in seen:  # up to the city (a loop in the tree ends)
        seen.add(at)
        at = parents[at]
    under = {r[0] for r in store.x(
        "WITH RECURSIVE under_node(id) AS (SELECT id FROM nodes WHERE id = ? "
        "UNION SELECT n.id FROM nodes n JOIN under_node u ON n.parent = u.id) "
        "SELECT id FROM under_node", (scope,))}  # fmt: skip
    return seen | under
