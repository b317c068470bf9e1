"""A ledger with a known week (2026-W48: 2026-11-23 00:00 to 2026-11-30 00:00, Asia/Shanghai =
2026-11-22T16:00Z to 2026-11-29T16:00Z) for the weekly report's tests: units, devices going
offline and online, incidents acknowledged on site and in the console, hazards closed on time
and late. Every row written straight into its table (the ingest and the ledger make them)."""

from __future__ import annotations

import datetime
import itertools

from gasguard.regulator.reports.week import Week

WEEK = Week(2026, 48)
AS_OF = datetime.datetime(2026, 11, 30, 4, 0, tzinfo=datetime.UTC)  # Monday 12:00 in Shanghai
A = "上海市/徐汇区"  # the district under test
B = "上海市/静安区"  # another district: never in A's report
QUIET = "上海市/长宁区"  # units, no alarms
EMPTY = "上海市/空区"  # a district node without units
_n = itertools.count(1)


def node(store, id_: str, level: str) -> None:
    parent, _, name = id_.rpartition("/")
    store.x("INSERT INTO nodes VALUES (?,?,?,?) ON CONFLICT (id) DO NOTHING",
            (id_, parent or None, level, name))  # fmt: skip


def unit(store, site: str, grid: str, devices: tuple[str, ...] = (), name: str | None = None):
    parts = grid.split("/")
    for depth, level in enumerate(("city", "district", "street", "grid"), 1):
        node(store, "/".join(parts[:depth]), level)
    store.x("INSERT INTO units (site, name, address, gas, responsible, phone, node) "
            "VALUES (?,?,?,?,?,?,?)", (site, name or "饭店 " + site, "路 1 号", "ng", "王五",
                                       "13800000000", grid))  # fmt: skip
    for d in devices:
        store.x("INSERT INTO unit_devices VALUES (?, ?)", (site, d))


def event(store, site: str, device: str, kind: str, time: str) -> None:
    store.x("INSERT INTO events (id, site, device, kind, time, ingested_at, payload) "
            "VALUES (?,?,?,?,?,?,'{}')", ("e%d" % next(_n), site, device, kind, time, time))


def device(store, site: str, device: str, online: int | None, online_time: str | None,
           last_seen: str | None) -> None:  # fmt: skip
    store.x("INSERT INTO devices (site, device, online, online_time, last_seen) "
            "VALUES (?,?,?,?,?)", (site, device, online, online_time, last_seen))  # fmt: skip


def incident(store, site: str, device: str, open_event: str, level: str, opened_at: str,
             acknowledged_at: str | None = None) -> None:  # fmt: skip
    store.x("INSERT INTO incidents (open_event, site, device, instance, ordinal, level, stage, "
            "detectors, alarming, opened_at, acknowledged_at, last_event) "
            "VALUES (?,?,?,'i',1,?,'opened','[0]','[0]',?,?,?)",
            (open_event, site, device, level, opened_at, acknowledged_at, open_event))


def hazard(store, source: str, site: str, deadline: str, closed_at: str | None = None,
           opened_at: str = "2026-11-20T00:00:00.000Z") -> None:  # fmt: skip
    store.x("INSERT INTO hazards (source, site, kind, severity, summary, status, responsible, "
            "deadline, opened_at, rectified_by, closed_at, closed_by) "
            "VALUES (?,?,'alarm','high','s',?,'负责人',?,?,?,?,?)",
            (source, site, "closed" if closed_at else "open", deadline, opened_at,
             "整改人" if closed_at else None, closed_at, "核查人" if closed_at else None))


def build(store) -> None:
    """The week (expected figures in test_reports.py)."""
    before = "2026-11-01T00:00:00.000Z"
    with store.transaction():
        hunan, tianping = A + "/湖南路街道/第1网格", A + "/天平路街道/第2网格"
        unit(store, "s1", hunan, ("d1", "d2"))
        unit(store, "s2", hunan, ("d3",))
        unit(store, "s3", tianping, ("d4",))  # registered, never heard
        unit(store, "s4", tianping)  # no device registered
        unit(store, "s5", tianping, ("d5",))  # first heard mid-week
        unit(store, "s9", B + "/南京西路街道/第1网格", ("d9",), name="别区饭店")
        unit(store, "s8", B + "/南京西路街道/第1网格", ("d8",))
        unit(store, "q1", QUIET + "/新华路街道/第1网格", ("dq",))
        node(store, "上海市", "city")
        node(store, EMPTY, "district")
        for site, dev in (("s1", "d1"), ("s1", "d2"), ("s2", "d3"), ("s9", "d9"), ("q1", "dq")):
            event(store, site, dev, "boot", before)
        # d2: offline 12 h mid-week; d3: offline for the last 24 h (and silent since 15:59)
        event(store, "s1", "d2", "device.offline", "2026-11-25T00:00:00.000Z")
        event(store, "s1", "d2", "device.online", "2026-11-25T12:00:00.000Z")
        event(store, "s2", "d3", "device.online", "2026-11-10T00:00:00.000Z")  # before: online
        event(store, "s2", "d3", "device.offline", "2026-11-28T16:00:00.000Z")
        event(store, "s5", "d5", "boot", "2026-11-26T16:00:00.000Z")
        event(store, "s1", "d1", "device.offline", "2026-11-29T16:30:00.000Z")  # after the week
        # d8 (district B): offline since before the week, online again 48 h into it
        event(store, "s8", "d8", "boot", before)
        event(store, "s8", "d8", "device.online", "2026-11-19T00:00:00.000Z")
        event(store, "s8", "d8", "device.offline", "2026-11-20T00:00:00.000Z")
        event(store, "s8", "d8", "device.online", "2026-11-24T16:00:00.000Z")
        device(store, "s8", "d8", 1, "2026-11-24T16:00:00.000Z", "2026-11-30T03:00:00.000Z")
        device(store, "s1", "d1", 1, "2026-11-29T15:00:00.000Z", "2026-11-30T03:59:00.000Z")
        device(store, "s1", "d2", 1, "2026-11-25T12:00:00.000Z", "2026-11-30T03:59:00.000Z")
        device(store, "s2", "d3", 0, "2026-11-28T16:00:00.000Z", "2026-11-28T15:59:00.000Z")
        device(store, "s5", "d5", 1, "2026-11-26T16:00:00.000Z", "2026-11-30T03:00:00.000Z")
        device(store, "s9", "d9", 0, "2026-11-23T00:00:00.000Z", "2026-11-23T00:00:00.000Z")
        device(store, "q1", "dq", 1, "2026-11-29T00:00:00.000Z", "2026-11-30T03:00:00.000Z")
        # the week's alarms: its first and last millisecond are in, the ones either side out
        incident(store, "s1", "d1", "i1", "high", "2026-11-22T16:00:00.000Z",
                 acknowledged_at="2026-11-22T16:02:00.000Z")  # on site: 120 s
        incident(store, "s1", "d2", "i2", "low", "2026-11-25T04:00:00.000Z",
                 acknowledged_at="2026-11-25T04:20:00.000Z")  # the console's was first: 600 s
        store.x("INSERT INTO alarm_acks VALUES (?,?,?,?,?,?)",
                ("s1", "d2", "i2", "值班员", "2026-11-25T04:10:00.000Z", "console"))
        incident(store, "s2", "d3", "i3", "high", "2026-11-29T15:59:59.999Z")
        store.x("INSERT INTO alarm_acks VALUES (?,?,?,?,?,?)",  # after the report: not counted
                ("s2", "d3", "i3", "值班员", "2026-11-30T05:00:00.000Z", "console"))
        incident(store, "s1", "d1", "i0", "high", "2026-11-22T15:59:59.999Z")  # the week before
        incident(store, "s1", "d1", "i4", "high", "2026-11-29T16:00:00.000Z")  # the week after
        incident(store, "s9", "d9", "i9", "high", "2026-11-24T00:00:00.000Z")  # district B
        # hazards: i1 closed at its deadline (on time), i2 early, i3 open (deadline after the
        # week), i0 closed late; two findings due in the week, open and closed after as_of
        hazard(store, "incident:s1/i1", "s1", "2026-11-23T16:00:00.000Z",
               "2026-11-23T16:00:00.000Z")  # 86,400 s
        hazard(store, "incident:s1/i2", "s1", "2026-11-28T04:00:00.000Z",
               "2026-11-27T04:00:00.000Z")  # 172,800 s
        hazard(store, "incident:s2/i3", "s2", "2026-11-30T15:59:59.999Z")
        hazard(store, "incident:s1/i0", "s1", "2026-11-23T15:59:59.999Z",
               "2026-11-24T00:00:00.000Z")
        hazard(store, "finding:s4//no_detector", "s4", "2026-11-27T00:00:00.000Z")
        hazard(store, "finding:s5/d5/not_working", "s5", "2026-11-28T00:00:00.000Z",
               "2026-11-30T05:00:00.000Z")
        hazard(store, "incident:s9/i9", "s9", "2026-11-25T00:00:00.000Z")
