"""One district's week from the ledger: alarms, response and handling times, overdue rate, online
and installation coverage, offline time. Read only; every value a bound parameter.

Each figure says what it counts (DEFINITIONS, printed in the report and in docs/regulator.md):
a ratio keeps its numerator and denominator, a time its sample size, and a figure without data
is None (shown "—", never 0). The registry keeps no history: the district's units are those
registered when the report is made. Incidents, acknowledgements, hazards and device signals are
the ledger's, as known at `as_of` (what happened after it is left out).
"""

from __future__ import annotations

import datetime
import statistics
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from .. import acks, audit, hazards
from .week import Week, check_over

SILENCE = datetime.timedelta(hours=1)  # compliance's default: a board heard every minute is gone
SIGNALS = ("device.online", "device.offline")  # the gateway's view of a board's link

# key: (Chinese name, English name, Chinese definition, English definition)
DEFINITIONS: dict[str, tuple[str, str, str, str]] = {
    "alarms": (
        "报警次数", "Alarms",
        "本周内（周一0:00至下周一0:00，北京时间）本区在册单位发生的报警事件数，按级别（低限报警升为高限"
        "报警的计为高限）。",
        "Incidents of the district's registered units opened in the week (Monday 00:00 to the "
        "next Monday 00:00, Asia/Shanghai), by level (a low alarm that turned high counts as "
        "high).",
    ),
    "response": (
        "响应时间", "Response time",
        "本周每次报警从发生到首次确认（现场按确认键，或在监管平台确认）的时长；取已确认报警的中位数与"
        "第90百分位（秩间线性插值）；截至报告生成时仍未确认的单独计数。",
        "For each alarm of the week, from its opening to its first acknowledgement (the board's "
        "acknowledge button on site, or the console); the median and 90th percentile (linear "
        "between ranks) of those acknowledged; those not acknowledged when the report was made "
        "are counted apart.",
    ),
    "handling": (
        "处置时间", "Handling time",
        "本周每次报警从发生到其隐患核查销号的时长；取已销号的中位数与第90百分位；截至报告生成时未销号"
        "（或尚未立为隐患）的单独计数。",
        "For each alarm of the week, from its opening to its hazard's verified closing in the "
        "ledger; the median and 90th percentile of those closed; those whose hazard was not "
        "closed (or not raised) when the report was made are counted apart.",
    ),
    "overdue_rate": (
        "隐患逾期率", "Overdue rate",
        "整改期限落在本周内的本区隐患（报警与合规检查项）中，未在期限前销号（截至报告生成时仍未销号，"
        "或销号晚于期限）的比例。期限以台账当前记录为准。",
        "Of the district's hazards (alarms and compliance findings) whose deadline fell in the "
        "week, the share not closed by it (still open when the report was made, or closed "
        "after it). The deadline is the ledger's current one.",
    ),
    "online_coverage": (
        "在线率", "Online coverage",
        "本周结束时，全部在册设备均在线的在册单位 ÷ 在册单位（未登记设备的单位计为不在线）。",
        "Registered units whose registered devices were all online at the week's end ÷ "
        "registered units (a unit with no device registered is not online).",
    ),
    "installation_coverage": (
        "安装覆盖率", "Installation coverage",
        "至少有一台在册设备在本周结束前被监管平台收到过数据的在册单位 ÷ 在册单位。",
        "Registered units with at least one registered device heard by the regulator before "
        "the week's end ÷ registered units.",
    ),
    "offline_rate": (
        "离线（含断电）时长占比", "Offline (incl. unpowered) time",
        "本区在册设备本周离线时长 ÷ 监测时长（自本周开始或设备首次收到数据起，至本周结束）。离线："
        "网关报告设备离线至其恢复在线，或超过1小时未收到任何数据。断电的设备即无数据，计入离线；"
        "平台无法区分断电与断线。",
        "Time the district's registered devices were offline in the week ÷ the time they were "
        "watched (from the week's start, or from when each was first heard, to its end). "
        "Offline: from the gateway's device.offline to the device being online again, or "
        "nothing heard from it for over an hour. A board without power falls silent, so "
        "unpowered time counts here; the ledger cannot tell it from a cut link.",
    ),
    "devices_offline": (
        "曾离线设备比例", "Devices offline at some time",
        "本周被监测的在册设备中，本周内曾离线（同上）的设备比例。",
        "Of the registered devices watched in the week, the share offline (as above) at some "
        "time in it.",
    ),
}  # fmt: skip


@dataclass(frozen=True)
class District:
    id: str  # the node's path: 上海市/徐汇区
    name: str

    @property
    def city(self) -> str:
        return self.id.split("/", 1)[0]


@dataclass
class Figure:
    key: str
    kind: str  # "count", "ratio" or "duration" (seconds)
    value: float | None  # None: no data ("—")
    num: int | None = None  # a ratio's numerator and denominator
    den: int | None = None
    p90: float | None = None  # a duration's 90th percentile (value: its median)
    n: int = 0  # a duration's sample size
    missing: int = 0  # a duration's alarms not acknowledged / not closed

    @property
    def names(self) -> tuple[str, str, str, str]:
        return DEFINITIONS[self.key]


@dataclass
class Report:
    district: District
    week: Week
    as_of: datetime.datetime
    units: list[dict[str, Any]] = field(default_factory=list)  # one row a registered unit
    streets: list[dict[str, Any]] = field(default_factory=list)
    alarms: list[dict[str, Any]] = field(default_factory=list)  # one row an incident
    levels: dict[str, int] = field(default_factory=dict)
    figures: dict[str, Figure] = field(default_factory=dict)


def districts(store: Any) -> list[District]:
    return [District(r[0], r[1]) for r in store.x(
        "SELECT id, name FROM nodes WHERE level = 'district' ORDER BY id").fetchall()]  # fmt: skip


def find_district(store: Any, text: str) -> District:
    """A district by its id (上海市/徐汇区) or its name (徐汇区; ValueError if two cities have
    it)."""
    rows = store.x("SELECT id, name FROM nodes WHERE level = 'district' AND (id = ? OR name = ?) "
                   "ORDER BY id", (text, text)).fetchall()  # fmt: skip
    if not rows:
        raise ValueError("--district %r: no such district in the registry" % text)
    exact = [r for r in rows if r[0] == text]
    if len(rows) > 1 and not exact:
        raise ValueError("--district %r: %d districts have that name: give the id (%s)"
                         % (text, len(rows), ", ".join(r[0] for r in rows)))  # fmt: skip
    r = (exact or rows)[0]
    return District(r[0], r[1])


# --- statistics --------------------------------------------------------------------------------


def median_p90(values: list[float]) -> tuple[float | None, float | None]:
    """None for no values; one value is both (statistics.quantiles wants two)."""
    if not values:
        return None, None
    if len(values) == 1:
        return values[0], values[0]
    return statistics.median(values), statistics.quantiles(values, n=10, method="inclusive")[8]


def _ratio(key: str, num: int, den: int) -> Figure:
    return Figure(key, "ratio", num / den if den else None, num, den)


def _duration(key: str, values: list[float], missing: int) -> Figure:
    med, p90 = median_p90(values)
    return Figure(key, "duration", med, p90=p90, n=len(values), missing=missing)


def _t(text: str | None) -> datetime.datetime | None:
    return None if not text else datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))


# --- a device's week ---------------------------------------------------------------------------


def offline_spans(first: datetime.datetime | None, signals: list[tuple[datetime.datetime, bool]],
                  last_seen: datetime.datetime | None, start: datetime.datetime,
                  end: datetime.datetime) -> tuple[float, float, bool] | None:  # fmt: skip
    """(seconds watched, seconds offline, offline at the end) of one device in [start, end), or
    None if it was first heard only after the end. signals: (time, online) from the gateway's
    device.online/offline events and the device's last retained state, any order. Silence:
    nothing heard after last_seen, so offline from last_seen + SILENCE."""
    if first is None or first >= end:
        return None
    lo = max(start, first)
    online, spans, since = True, [], None
    for t, on in sorted(signals, key=lambda s: (s[0], s[1])):
        if t >= end:
            break
        if t <= lo:
            online = on
            continue
        if online and not on:
            since = t
        elif not online and on:
            spans.append((since or lo, t))
            since = None
        online = on
    if not online:
        spans.append((since or lo, end))
    if last_seen is not None and last_seen + SILENCE < end:
        spans.append((max(lo, last_seen + SILENCE), end))
    spans.sort()
    total, reach = 0.0, lo
    for a, b in spans:  # the union of the spans, clipped to [lo, end)
        a = max(a, reach)
        if b > a:
            total += (b - a).total_seconds()
            reach = b
    return (end - lo).total_seconds(), total, reach >= end and total > 0


# --- the district's week -----------------------------------------------------------------------


@contextmanager
def _one_view(store: Any) -> Iterator[None]:
    """Every query of one report in one snapshot: figures that agree with each other while the
    ingest writes (SQLite: a deferred read transaction in WAL; PostgreSQL: repeatable read)."""
    from ..views import snapshot_of

    pg = store.placeholder == "%s"
    if pg:
        import psycopg

        old = store.db.isolation_level
        store.db.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
    try:
        with snapshot_of(store):
            yield
    finally:
        if pg:
            store.db.isolation_level = old


_UNDER = (
    "WITH RECURSIVE under_node(id) AS (SELECT id FROM nodes WHERE id = ? "
    "UNION SELECT n.id FROM nodes n JOIN under_node u ON n.parent = u.id) "
)


def compute(store: Any, district: District, week: Week, as_of: datetime.datetime) -> Report:
    """The district's figures for the week, as the ledger knows them at as_of (outside any
    transaction: it reads in one of its own). ValueError for a week not over at as_of."""
    check_over(week, as_of)
    with _one_view(store):
        return _compute(store, district, week, as_of)


def _compute(store: Any, district: District, week: Week, as_of: datetime.datetime) -> Report:
    rep = Report(district, week, as_of)
    nodes = {r["id"]: r for r in store.rows(
        _UNDER + "SELECT id, parent, level, name FROM nodes WHERE id IN (SELECT id FROM "
        "under_node)", (district.id,))}  # fmt: skip
    units = store.rows(
        _UNDER + "SELECT site, name, node FROM units WHERE node IN (SELECT id FROM under_node) "
        "ORDER BY site", (district.id,))  # fmt: skip
    sites = store.in_list([u["site"] for u in units])
    devices = _devices(store, sites, week)
    late, due = _overdue(store, sites, week, as_of)
    watched = offline = 0.0
    dev_watched = dev_offline = units_online = units_heard = 0
    for u in units:
        row = {"site": u["site"], "name": u["name"], "street": _street(nodes, u["node"]),
               "devices": 0, "heard": 0, "online_at_end": 0, "offline_s": 0.0,
               "watched_s": 0.0, "alarms": 0}  # fmt: skip
        for got in devices.get(u["site"], []):
            row["devices"] += 1
            if got is None:  # registered, not heard before the week's end
                continue
            row["heard"] += 1
            row["watched_s"] += got[0]
            row["offline_s"] += got[1]
            row["online_at_end"] += 0 if got[2] else 1
            dev_watched += 1
            dev_offline += 1 if got[1] > 0 else 0
        watched += row["watched_s"]
        offline += row["offline_s"]
        units_heard += 1 if row["heard"] else 0
        units_online += 1 if row["devices"] and row["online_at_end"] == row["devices"] else 0
        rep.units.append(row)
    responses, handlings = _alarms(store, sites, rep)
    rep.streets = _streets(rep)
    n, count = len(units), len(rep.alarms)
    f = rep.figures
    f["alarms"] = Figure("alarms", "count", count)
    f["response"] = _duration("response", responses, count - len(responses))
    f["handling"] = _duration("handling", handlings, count - len(handlings))
    f["overdue_rate"] = _ratio("overdue_rate", late, due)
    f["online_coverage"] = _ratio("online_coverage", units_online, n)
    f["installation_coverage"] = _ratio("installation_coverage", units_heard, n)
    f["offline_rate"] = Figure("offline_rate", "ratio", offline / watched if watched else None,
                               round(offline), round(watched))  # fmt: skip
    f["devices_offline"] = _ratio("devices_offline", dev_offline, dev_watched)
    return rep


def _devices(store: Any, sites: tuple[str, Any], week: Week) -> dict[str, list[Any]]:
    """site → offline_spans() of each registered device, from what the ledger heard of it:
    first heard, the gateway's signals (the week's and the last before it), last seen."""
    in_sites, param = sites
    s_start, s_end = audit.spell(week.start), audit.spell(week.end)
    first: dict[tuple[str, str], datetime.datetime] = {}
    for r in store.x("SELECT site, device, MIN(time) FROM events WHERE site IN %s AND time < ? "
                     "GROUP BY site, device" % in_sites, (param, s_end)).fetchall():  # fmt: skip
        first[(r[0], r[1])] = _t(r[2])
    signals: dict[tuple[str, str], list[tuple[datetime.datetime, bool]]] = {}
    last_seen: dict[tuple[str, str], datetime.datetime | None] = {}
    for r in store.x("SELECT site, device, online, online_time, last_seen FROM devices "
                     "WHERE site IN %s" % in_sites, (param,)).fetchall():  # fmt: skip
        key, seen = (r[0], r[1]), _t(r[4])
        last_seen[key] = seen
        if seen is not None and seen < week.end:
            first[key] = min(first.get(key, seen), seen)
        if r[2] is not None and r[3]:  # the last retained state (or signal) applied
            signals.setdefault(key, []).append((_t(r[3]), bool(r[2])))
    for r in store.x(  # the week's signals, and each device's last one before it
        "SELECT site, device, kind, time FROM events WHERE site IN %s AND kind IN (?, ?) "
        "AND time >= ? AND time < ? UNION ALL SELECT e.site, e.device, e.kind, e.time "
        "FROM events e JOIN (SELECT site, device, MAX(time) AS t FROM events WHERE site IN %s "
        "AND kind IN (?, ?) AND time < ? GROUP BY site, device) m ON e.site = m.site "
        "AND e.device = m.device AND e.time = m.t WHERE e.kind IN (?, ?)" % (in_sites, in_sites),
        (param, *SIGNALS, s_start, s_end, param, *SIGNALS, s_start, *SIGNALS),
    ).fetchall():  # fmt: skip
        signals.setdefault((r[0], r[1]), []).append((_t(r[3]), r[2] == "device.online"))
    out: dict[str, list[Any]] = {}
    for site, dev in store.x("SELECT site, device FROM unit_devices WHERE site IN %s "
                             "ORDER BY site, device" % in_sites, (param,)).fetchall():  # fmt: skip
        key = (site, dev)
        out.setdefault(site, []).append(offline_spans(
            first.get(key), signals.get(key, []), last_seen.get(key), week.start, week.end))
    return out


def _alarms(store: Any, sites: tuple[str, Any], rep: Report) -> tuple[list[float], list[float]]:
    """The week's alarms into rep (rows, levels, per unit); their response and handling times."""
    in_sites, param = sites
    s_as_of = audit.spell(rep.as_of)
    incs = store.rows(
        "SELECT site, device, open_event, level, opened_at FROM incidents WHERE site IN %s "
        "AND opened_at >= ? AND opened_at < ? ORDER BY opened_at, site, device, open_event"
        % in_sites, (param, audit.spell(rep.week.start), audit.spell(rep.week.end)))  # fmt: skip
    src_sql, src_param = store.in_list(
        [hazards.incident_source(i["site"], i["open_event"]) for i in incs])
    closed = {r[0]: r[1] for r in store.x(
        "SELECT source, closed_at FROM hazards WHERE source IN %s" % src_sql,
        (src_param,)).fetchall()}  # fmt: skip
    by_site = {u["site"]: u for u in rep.units}
    responses, handlings = [], []
    rep.levels = {"low": 0, "high": 0}
    for i in incs:
        level = "high" if i["level"] == "high" else "low"
        rep.levels[level] += 1
        opened = _t(i["opened_at"])
        ack = acks.acknowledged(store, i["site"], i["device"], i["open_event"])
        ack = ack if ack and ack <= s_as_of else None  # after the report was made: not yet
        done = closed.get(hazards.incident_source(i["site"], i["open_event"]))
        done = done if done and done <= s_as_of else None
        # opened_at is the board's clock (kept up to 5 min ahead), an ack or a closing the
        # console's: "before" the alarm is at once, never a negative time in the figures
        response = None if ack is None else max(0.0, (_t(ack) - opened).total_seconds())
        handling = None if done is None else max(0.0, (_t(done) - opened).total_seconds())
        responses += [] if response is None else [response]
        handlings += [] if handling is None else [handling]
        unit = by_site[i["site"]]
        unit["alarms"] += 1
        rep.alarms.append({"site": i["site"], "name": unit["name"], "street": unit["street"],
                           "device": i["device"], "level": level, "opened_at": opened,
                           "acknowledged_at": _t(ack), "response_s": response,
                           "closed_at": _t(done), "handling_s": handling})  # fmt: skip
    return responses, handlings


def _overdue(store: Any, sites: tuple[str, Any], week: Week,
             as_of: datetime.datetime) -> tuple[int, int]:  # fmt: skip
    """(hazards not closed by their deadline, hazards due) among those due in the week."""
    in_sites, param = sites
    due = store.x(
        "SELECT deadline, closed_at FROM hazards WHERE site IN %s AND deadline >= ? "
        "AND deadline < ?" % in_sites, (param, audit.spell(week.start), audit.spell(week.end)),
    ).fetchall()  # fmt: skip
    s_as_of = audit.spell(as_of)
    return sum(1 for d, c in due if not c or c > s_as_of or c > d), len(due)


def _streets(rep: Report) -> list[dict[str, Any]]:
    streets: dict[str, dict[str, Any]] = {}
    for row in rep.units:
        s = streets.setdefault(row["street"], {"street": row["street"], "units": 0, "low": 0,
                                               "high": 0, "total": 0})  # fmt: skip
        s["units"] += 1
    for a in rep.alarms:
        s = streets[a["street"]]
        s[a["level"]] += 1
        s["total"] += 1
    return sorted(streets.values(), key=lambda s: s["street"])


def _street(nodes: dict[str, dict[str, Any]], node: str) -> str:
    """The name of the street a unit's node is under ("" when it hangs off the district)."""
    seen = set()
    while node in nodes and node not in seen:  # a loop in the tree ends
        seen.add(node)
        if nodes[node]["level"] == "street":
            return nodes[node]["name"]
        node = nodes[node]["parent"]
    return ""
