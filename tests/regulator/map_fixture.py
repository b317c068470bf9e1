"""The console's test city (web_fixture) with what the chart, the map and the compliance board
show: units with places and each state, open findings, alarms in the last 30 days, and district
outlines as GeoJSON.

    site       node                 state         findings
    site-0000  xuhui                alarm         -
    site-0001  xuhui-tianping-g3    alarm         wrong_position (dev-00)       tom's
    site-0002  minhang              alarm         -
    site-0003  minhang              alarm         -
    site-0004  xuhui-tianping       offline       -                             tom's
    site-0005  minhang              normal        -             markup in its name
    site-0006  xuhui                noncompliant  wrong_gas, below_standard
    site-0007  xuhui-tianping-g3    fault         not_working (valve fault)     tom's
    site-0008  xuhui-tianping       noncompliant  no_detector (no devices)      tom's
    site-0009  minhang              noncompliant  no_detector; no coordinates

Alarms opened in the last 30 days (RECENT): site-0000, site-0001 twice (two days ago),
site-0003 (two days ago), site-0002 (five days ago).
"""

from __future__ import annotations

import datetime
import json
import time

from gasguard.regulator import boundary
from gasguard.regulator.store import open_store

from .conftest import board_event
from .web_fixture import build_console_db

# spread wide (1.2 x 0.4 degrees): at the map's first view no two units of one state are close
# enough to cluster; zoomed out they do
PLACES = {  # site: (lat, lon)
    "site-0000": (31.00, 121.40), "site-0001": (31.25, 121.70),
    "site-0002": (31.00, 120.90), "site-0003": (31.20, 121.20),
    "site-0004": (31.00, 121.75), "site-0005": (31.10, 121.05),
    "site-0006": (31.25, 121.45), "site-0007": (31.15, 121.90),
    "site-0008": (30.95, 121.85),
}  # fmt: skip
STATES = {"site-0000": "alarm", "site-0001": "alarm", "site-0002": "alarm",
          "site-0003": "alarm", "site-0004": "offline", "site-0005": "normal",
          "site-0006": "noncompliant", "site-0007": "fault", "site-0008": "noncompliant",
          "site-0009": "noncompliant"}  # fmt: skip
TOM = {"site-0001", "site-0004", "site-0007", "site-0008"}  # under xuhui-tianping
NEW_UNITS = {"site-0004": "xuhui-tianping", "site-0005": "minhang", "site-0006": "xuhui",
             "site-0007": "xuhui-tianping-g3", "site-0008": "xuhui-tianping",
             "site-0009": "minhang"}  # fmt: skip
# a name is the registry's text: markup in it is shown as written, never followed
MARKUP_NAME = '<b>Bold</b> <a href="https://example.invalid/">食堂</a> & Co'
FINDINGS = [  # site, subject, kind
    ("site-0001", "dev-00", "wrong_position"),
    ("site-0006", "dev-01", "wrong_gas"),
    ("site-0006", "dev-01", "below_standard"),
    ("site-0006", "dev-02", "below_standard"),
    ("site-0007", "dev-03", "not_working"),
    ("site-0008", "", "no_detector"),
    ("site-0009", "", "no_detector"),
]
RECENT = [("site-0000", 2), ("site-0001", 2), ("site-0001", 2), ("site-0003", 2),
          ("site-0002", 5)]  # fmt: skip (site, days ago)


def _box(w: float, s: float, e: float, n: float) -> list[list[float]]:
    return [[w, s], [e, s], [e, n], [w, n], [w, s]]


GEOJSON = {
    "type": "FeatureCollection",
    "features": [
        {"type": "Feature", "properties": {"node": node, "name": name},
         "geometry": {"type": "Polygon", "coordinates": [_box(*box)]}}
        for node, name, box in (
            ("minhang", "闵行区", (120.8, 30.9, 121.3, 31.3)),
            ("xuhui", "徐汇区", (121.3, 30.9, 122.0, 31.3)),
            ("xuhui-tianping", "天平路街道", (121.6, 30.9, 122.0, 31.3)),
        )
    ],
}  # fmt: skip


def recent_times(now: float) -> list[tuple[str, int]]:
    """(site, epoch seconds) of each recent alarm, RECENT's days before now."""
    return [(site, int(now - days * 86400)) for site, days in RECENT]


def build_map_db(db: str) -> float:
    """The console's city with the map's and the board's states; returns the time the recent
    alarms were counted back from."""
    build_console_db(db, sites=9)
    now = time.time()
    store = open_store(db)
    try:
        with store.transaction():
            for site, node in NEW_UNITS.items():
                store.x(
                    "INSERT INTO units (site, name, address, gas, responsible, phone, node) "
                    "VALUES (?, ?, '1 Road', 'ng', 'Manager', '021-0000', ?)",
                    (site, "Restaurant %s" % site, node),
                )
            store.x("UPDATE units SET name = ? WHERE site = 'site-0005'", (MARKUP_NAME,))
            for site, (lat, lon) in PLACES.items():
                store.x("UPDATE units SET lat = ?, lon = ? WHERE site = ?", (lat, lon, site))
            # build_city's first 20 sites are dark: light the ones whose state is not offline
            store.x("UPDATE devices SET online = 1 WHERE site IN ('site-0005', 'site-0006', "
                    "'site-0007') AND device <> 'dev-09'")  # fmt: skip
            store.x("UPDATE devices SET valve = 'fault' WHERE site = 'site-0007' "
                    "AND device = 'dev-03'")  # fmt: skip
            store.x("DELETE FROM devices WHERE site = 'site-0008'")
            for n, (site, subject, kind) in enumerate(FINDINGS):
                since = "2026-11-%02dT00:00:00.000Z" % (20 - n)
                store.x("INSERT INTO findings (site, subject, kind, detail, since) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (site, subject, kind, "%s found [test rule]" % kind, since))  # fmt: skip
        events = [
            board_event(site, "dev-%02d" % (5 + n), "alarm.high", 1, 1, lel=55.0, t=t,
                        inst="%016x" % (0xB000 + n))
            for n, (site, t) in enumerate(recent_times(now))
        ]  # fmt: skip
        store.write([boundary.check(topic, raw) for topic, raw in events])
    finally:
        store.close()
    return now


def local_day(epoch: float, zone: str = "Asia/Shanghai") -> str:
    import zoneinfo

    return datetime.datetime.fromtimestamp(epoch, zoneinfo.ZoneInfo(zone)).date().isoformat()


def geojson_bytes(doc: dict | None = None) -> bytes:
    return json.dumps(GEOJSON if doc is None else doc, ensure_ascii=False).encode()
