"""Alarms per day for the city overview's chart: incidents opened (each a low or high alarm on one
device, regulator/incidents.py) on each of the last 30 days, per district, on the days of the
console's time zone. Read-only and scoped like every view (regulator/views.py)."""

from __future__ import annotations

import datetime
import zoneinfo
from typing import Any

from . import views
from .audit import spell

DAYS = 30


def alarms_per_day(store: Any, scope: str | None, zone: zoneinfo.ZoneInfo, days: int = DAYS,
                   now: datetime.datetime | None = None) -> dict[str, Any]:  # fmt: skip
    """{days: [YYYY-MM-DD...], districts: [{district, name, counts}], total: [...]}: a district
    with no alarm in the window is left out; district None is the sites no unit names."""
    now = now or datetime.datetime.now(datetime.UTC)
    today = now.astimezone(zone).date()
    dates = [today - datetime.timedelta(days=n) for n in range(days - 1, -1, -1)]
    start = datetime.datetime.combine(dates[0], datetime.time(), zone)
    have = views.tables(store)
    registry = views.has_registry(store, have)
    where, params = views.Filters(state="all", scope=scope).where(registry)
    inner = "SELECT site, opened_at FROM incidents WHERE opened_at >= ?" + where
    params = [spell(start), *params]
    # counted per minute by the database, put on local days here: any zone, any offset
    if registry:
        sql = (
            views.UNIT_DISTRICT + "SELECT substr(t.opened_at, 1, 16), ud.district, count(*) "
            "FROM (%s) t LEFT JOIN unit_district ud ON ud.site = t.site GROUP BY 1, 2" % inner
        )
    else:
        sql = "SELECT substr(t.opened_at, 1, 16), NULL, count(*) FROM (%s) t GROUP BY 1" % inner
    with views.snapshot_of(store):
        got = store.x(sql, params).fetchall()
        names = dict(store.x("SELECT id, name FROM nodes WHERE level = 'district'").fetchall())
    index = {d: n for n, d in enumerate(dates)}
    per: dict[str | None, list[int]] = {}
    for minute, district, n in got:
        at = datetime.datetime.fromisoformat(minute + ":00+00:00").astimezone(zone).date()
        if at in index:  # an alarm dated ahead of this clock is not "today"
            per.setdefault(district, [0] * days)[index[at]] += n
    listed = sorted(per.items(), key=lambda kv: (kv[0] is None, kv[0] or ""))
    return {
        "days": [d.isoformat() for d in dates],
        "districts": [{"district": d, "name": names.get(d) if d else None, "counts": c}
                      for d, c in listed],
        "total": [sum(c[i] for c in per.values()) for i in range(days)],
    }  # fmt: skip
