"""A city in a store, for the consoles' and the API's tests: thousands of devices written as
rows (the ingest's tests prove how rows get there), incidents and rejections through the store's
own write path (real events, checked by the boundary)."""

from __future__ import annotations

from gasguard.regulator import boundary
from gasguard.regulator.store import Rejection, open_store

from .conftest import board_event

PER_SITE = 10
DARK_SITES = 20  # every device offline
GATEWAYS_DOWN = 15
ROWS = 200


def site_name(n: int) -> str:
    return "site-%04d" % n


def inst(n: int) -> str:
    """Each site's board its own instance: event ids (device:instance:boot:seq) stay distinct."""
    return "%016x" % (0xA000 + n)


def build_city(db: str, sites: int = 500, alarms: int = 300, low: int = 0, closed: int = 0):
    """sites x PER_SITE devices; on site n device 0: `alarms` open high alarms (sites 0..),
    `low` open low alarms after them, `closed` handled ones after those. Returns the open store."""
    store = open_store(db, create=True)
    rows = []
    for n in range(sites):
        for d in range(PER_SITE):
            online = 0 if n < DARK_SITES or d == PER_SITE - 1 else 1  # dark sites; one per site
            rows.append((site_name(n), "dev-%02d" % d, online, "2026-11-30T08:00:00.000Z",
                         "2026-11-30T08:00:00.000Z", "2026-11-30T08:00:00.000Z"))  # fmt: skip
    gws = [(site_name(n), "gw-1", 0 if n < GATEWAYS_DOWN else 1, "0.9.0", PER_SITE,
            "2026-11-30T07:00:%02d.000Z" % (n % 60), "2026-11-30T08:00:00.000Z")
           for n in range(sites)]  # fmt: skip
    with store.transaction():
        for i in range(0, len(rows), ROWS):
            chunk = rows[i : i + ROWS]
            store.x(
                "INSERT INTO devices (site, device, online, online_time, last_seen, state_time) "
                "VALUES %s" % ",".join(["(?,?,?,?,?,?)"] * len(chunk)),
                [v for r in chunk for v in r],
            )
        for g in gws:
            store.x("INSERT INTO gateways (site, gateway, online, version, devices_online, "
                    "status_time, updated_at) VALUES (?,?,?,?,?,?,?)", g)  # fmt: skip
    events = []
    for n in range(alarms):
        events.append(board_event(site_name(n), "dev-00", "alarm.high", 1, 1, lel=60.0 + n % 30,
                                  t=1_764_000_000 + n, inst=inst(n)))  # fmt: skip
    for n in range(alarms, alarms + low):
        events.append(
            board_event(site_name(n), "dev-00", "alarm.low", 1, 1, lel=25.0, inst=inst(n))
        )
    for n in range(alarms + low, alarms + low + closed):
        for s, kind in enumerate(("alarm.high", "valve.closed", "ack", "alarm.clear", "reset")):
            events.append(board_event(site_name(n), "dev-00", kind, 1, s + 1,
                                      lel=70.0 if s == 0 else None, inst=inst(n)))  # fmt: skip
    msgs = [boundary.check(t, raw) for t, raw in events]
    for i in range(0, len(msgs), 500):
        store.write(msgs[i : i + 500])
    store.write([Rejection("gasguard/v1/site-0001/dev-00/events", "not JSON", b"\xff{")] * 3)
    return store
