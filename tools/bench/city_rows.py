"""A city of N units written straight into the regulator's tables, fast (PostgreSQL's COPY,
SQLite's executemany in one transaction): what `gasguard bench web` and the console's scale
tests read. The ingest's and the registry's own tests prove how such rows get there; this
only makes many.

    city 上海市 → 16 districts → 8 streets each → 8 grids each; unit u in grid u % 1024
    2 devices a unit (one in 50 offline), 1 gateway (one in 100 offline)
    1 unit in 100 has an open alarm (a third of them high); 1 in 25 a closed one
    a hazard for each alarm and for 1 unit in 20 a compliance finding; 1 in 3 overdue
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable
from typing import Any

from gasguard.regulator.audit import spell

CITY = "上海市"
DISTRICTS, STREETS, GRIDS = 16, 8, 8
PASSWORD = "correct horse battery"
CITY_ACCOUNT, STREET_ACCOUNT = "city", "street"


def site_of(u: int) -> str:
    return "s%05d" % u


def grid_of(u: int) -> tuple[int, int, int]:
    g = u % (DISTRICTS * STREETS * GRIDS)
    return g // (STREETS * GRIDS), (g // GRIDS) % STREETS, g % GRIDS


def node_path(d: int, s: int | None = None, g: int | None = None) -> str:
    parts = [CITY, "区%02d" % d]
    if s is not None:
        parts.append("街道%d" % s)
    if g is not None:
        parts.append("网格%d" % g)
    return "/".join(parts)


def bulk(store: Any, table: str, cols: tuple[str, ...], rows: Iterable[tuple]) -> None:
    """Rows into table in the store's fastest way (inside the caller's transaction)."""
    if store.placeholder == "%s":  # PostgreSQL
        with store.db.cursor().copy("COPY %s (%s) FROM STDIN" % (table, ", ".join(cols))) as cp:
            for r in rows:
                cp.write_row(r)
    else:
        marks = ",".join("?" * len(cols))
        store.db.executemany("INSERT INTO %s (%s) VALUES (%s)" % (table, ", ".join(cols), marks),
                             rows)  # fmt: skip


def place_of(u: int) -> tuple[float, float]:
    """A unit's latitude and longitude: spread over central Shanghai (about 40 × 40 km), so the
    map draws and clusters the whole city."""
    lat = 31.05 + (u * 7919 % 10007) / 10007 * 0.36
    return lat, 121.25 + (u * 104729 % 10009) / 10009 * 0.42


def seed(store: Any, units: int, now: datetime.datetime | None = None) -> dict[str, int]:
    """The city into an empty regulator store (its tables made); returns what it wrote."""
    from gasguard.regulator.web import accounts

    now = now or datetime.datetime.now(datetime.UTC)
    at = spell(now)

    def ago(minutes: float) -> str:
        return spell(now - datetime.timedelta(minutes=minutes))

    nodes = [(CITY, None, "city", CITY)]
    for d in range(DISTRICTS):
        nodes.append((node_path(d), CITY, "district", "区%02d" % d))
        for s in range(STREETS):
            nodes.append((node_path(d, s), node_path(d), "street", "街道%d" % s))
            for g in range(GRIDS):
                nodes.append((node_path(d, s, g), node_path(d, s), "grid", "网格%d" % g))
    alarmed = [u for u in range(units) if u % 100 == 7]
    closed = [u for u in range(units) if u % 25 == 3]
    findings = [u for u in range(units) if u % 20 == 11]
    incidents = []
    for u in alarmed:
        level = "high" if u % 3 == 0 else "low"
        incidents.append(("%s-d1:alarm" % site_of(u), site_of(u), "%s-d1" % site_of(u), "i1", 1,
                          level, "opened", "[0]", "[0]", 62.0 if level == "high" else 24.0,
                          ago(u % 600), None, None, "%s-d1:alarm" % site_of(u)))  # fmt: skip
    for u in closed:
        t = ago(60 * 24 * (1 + u % 20))
        incidents.append(("%s-d2:done" % site_of(u), site_of(u), "%s-d2" % site_of(u), "i1", 1,
                          "high", "closed", "[0]", "[]", 58.0, t, t, t, "%s-d2:done" % site_of(u)))
    hazards = []
    for n, (ev, site, device, _, _, level, stage, _, _, peak, opened, *_rest) in enumerate(
            incidents, 1):  # fmt: skip
        due = spell(datetime.datetime.fromisoformat(opened.replace("Z", "+00:00"))
                    + datetime.timedelta(hours=24 if level == "high" else 72))  # fmt: skip
        status = "closed" if stage == "closed" else ("dispatched" if n % 4 == 0 else "open")
        hazards.append((n, "incident:%s/%s" % (site, ev), site, device, "alarm", level,
                        "%s gas alarm, peak %.1f %%LEL" % (level, peak), status, due, opened,
                        "张师傅" if status != "open" else None,
                        "李工" if status == "closed" else None))  # fmt: skip
    for u in findings:
        n = len(hazards) + 1
        since = ago(60 * 24 * (u % 12))
        due = spell(datetime.datetime.fromisoformat(since.replace("Z", "+00:00"))
                    + datetime.timedelta(days=7))  # fmt: skip
        hazards.append((n, "finding:%s//not_working" % site_of(u), site_of(u), "", "not_working",
                        "normal", "offline since %s" % since, "open", due, since, None, None))
    with store.transaction():
        bulk(store, "nodes", ("id", "parent", "level", "name"), nodes)
        bulk(store, "units", ("site", "name", "address", "gas", "responsible", "phone", "node",
                              "lat", "lon"),
             ((site_of(u), "饭店%d" % u, "路%d号" % u, "ng", "张%d" % u,
               "021-5555%04d" % (u % 9999), node_path(*grid_of(u)), *place_of(u))
              for u in range(units)))  # fmt: skip
        bulk(store, "findings", ("site", "subject", "kind", "detail", "since", "cleared_at"),
             ((site_of(u), "", "not_working", "offline", ago(60 * 24 * (u % 12)), None)
              for u in findings))  # fmt: skip
        bulk(store, "devices", ("site", "device", "online", "online_time", "last_seen", "fw",
                                "valve", "alarm", "state_time"),
             ((site_of(u), "%s-d%d" % (site_of(u), k), 0 if (2 * u + k) % 50 == 0 else 1,
               ago(30), ago(1), "1.4.0", "open", "none", ago(1))
              for u in range(units) for k in (1, 2)))  # fmt: skip
        bulk(store, "gateways", ("site", "gateway", "online", "version", "devices_online",
                                 "status_time", "updated_at"),
             ((site_of(u), "gw-1", 0 if u % 100 == 42 else 1, "0.9.0", 2, ago(u % 1440), at)
              for u in range(units)))  # fmt: skip
        bulk(store, "incidents", ("open_event", "site", "device", "instance", "ordinal", "level",
                                  "stage", "detectors", "alarming", "peak_lel", "opened_at",
                                  "valve_closed_at", "closed_at", "last_event"), incidents)
        bulk(store, "hazards", ("id", "source", "site", "subject", "kind", "severity", "summary",
                                "status", "deadline", "opened_at", "responsible", "closed_by"),
             hazards)
        if store.placeholder == "%s":  # the next id the ledger's sequence hands out
            store.x("SELECT setval('hazards_id_seq', %d)" % max(len(hazards), 1))
    accounts.add(store, CITY_ACCOUNT, "admin", CITY, PASSWORD, "bench", at)
    accounts.add(store, STREET_ACCOUNT, "dispatcher", node_path(0, 0), PASSWORD, "bench", at)
    store.x("ANALYZE")  # what autovacuum does on a running city
    return {"units": units, "devices": 2 * units, "gateways": units, "nodes": len(nodes),
            "open_alarms": len(alarmed), "incidents": len(incidents), "hazards": len(hazards)}
