"""A sample city for the web console's screenshots and for `gasguard demo --web`, written the
way a city's ledger is: the registry imported from the district's table (registry.import_file),
devices, gateways and alarms as real CloudEvents through the ingest's boundary and store,
compliance evaluated, hazards raised by hazards.sync and moved through the ledger's workflow.

The Hotpot 88 unit is examples/hotpot-88/units.csv (what its district keeps; the demo imports
it into its own ledger); the screenshots' city adds a dozen units around it.
"""

from __future__ import annotations

import csv
import datetime
import json
import secrets
import tempfile
from pathlib import Path
from typing import Any

from gasguard.protocol import cloudevents

from . import boundary, compliance, hazards, registry
from .audit import spell
from .web import accounts

HOTPOT_UNITS = Path(__file__).resolve().parents[1] / "examples" / "hotpot-88" / "units.csv"
CITY = "上海市"
DEMO_ACCOUNT = ("demo", "admin", CITY)  # name, role, node: the city's whole ledger
HEADER = ["site", "name", "address", "gas", "responsible", "phone", "city", "district", "street",
          "grid", "lat", "lon", "device", "detector_address", "detector_gas", "location",
          "mount_height_m", "ceiling_m", "distance_m", "above_appliance", "installed",
          "standard", "low_alarm_pct", "high_alarm_pct"]  # fmt: skip
# site, name, district, street, grid, responsible, devices, what the screenshots show of it
UNITS = [
    ("sh-xuhui-0043", "蜀香川菜馆", "徐汇区", "天平路街道", "第3网格", "李红", 2, "alarm.high"),
    ("sh-xuhui-0051", "老弄堂本帮菜", "徐汇区", "天平路街道", "第4网格", "陈国华", 1, "ack"),
    ("sh-xuhui-0107", "粤港茶餐厅", "徐汇区", "湖南路街道", "第1网格", "黄志强", 1, "closed"),
    ("sh-xuhui-0118", "兰州拉面", "徐汇区", "湖南路街道", "第2网格", "马世明", 1, "low_height"),
    ("sh-jingan-0009", "静安小笼包", "静安区", "南京西路街道", "第1网格", "周敏", 2, "alarm.low"),
    ("sh-jingan-0021", "湘味轩", "静安区", "南京西路街道", "第2网格", "刘洋", 1, "offline"),
    ("sh-jingan-0033", "东北饺子馆", "静安区", "江宁路街道", "第1网格", "赵磊", 1, "closed"),
    ("sh-pudong-0201", "海鲜大排档", "浦东新区", "陆家嘴街道", "第5网格", "孙丽", 2, "fine"),
    ("sh-pudong-0214", "云南过桥米线", "浦东新区", "陆家嘴街道", "第5网格", "杨帆", 1, "fine"),
    ("sh-pudong-0230", "潮汕牛肉火锅", "浦东新区", "花木街道", "第2网格", "吴迪", 1, "no_device"),
    ("sh-pudong-0245", "西北菜馆", "浦东新区", "花木街道", "第3网格", "郑华", 1, "fine"),
]


def _registry_rows() -> list[list[Any]]:
    rows = []
    for n, (site, name, district, street, grid, who, devices, what) in enumerate(UNITS):
        base = [site, name, "上海市%s%s路%d号" % (district, street[:2], 10 + n * 7), "天然气",
                who, "021-6%03d-%04d" % (n * 37 % 1000, 1000 + n * 113), CITY, district, street,
                grid, "%.4f" % (31.19 + n * 0.004), "%.4f" % (121.43 + n * 0.006)]  # fmt: skip
        if what == "no_device":
            rows.append(base + [""] * 12)
            continue
        for d in range(devices):
            height = 1.2 if what == "low_height" else 2.9
            rows.append(base + ["%s-d%d" % (site, d + 1), 1, "甲烷", "灶台上方吊顶", height, 3.1,
                                2.0, "否", "2026-06-01", "GB 15322.1-2019", 20, 50])  # fmt: skip
    return rows


def import_units(store: Any, path: Path = HOTPOT_UNITS) -> None:
    registry.import_file(store, path)


def add_demo_account(store: Any, by: str) -> tuple[str, str]:
    """The demo's login: (name, a password made for this ledger). A kept ledger run again has
    one already (no password can be read back): demo-2, demo-3..."""
    base, role, node = DEMO_ACCOUNT
    password = secrets.token_urlsafe(12)
    taken = {r["name"] for r in store.rows("SELECT name FROM users")}
    name = next(n for n in [base] + ["%s-%d" % (base, k) for k in range(2, 10_000)]
                if n not in taken)  # fmt: skip
    accounts.add(store, name, role, node, password, by, spell(_now()))
    return name, password


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


def _event(site: str, device: str, inst: str, seq: int, kind: str, t: float,
           lel: float | None = None) -> tuple[str, bytes]:  # fmt: skip
    body: dict[str, Any] = {"id": [1, seq], "kind": kind, "up": seq * 10, "time": int(t)}
    if kind.startswith("alarm"):
        body["det"] = 0
    if lel is not None:
        body["lel"] = lel
    ce = cloudevents.device_event(site, device, inst, body, int(t) + 1)
    return cloudevents.topic_events(site, device), json.dumps(ce).encode()


def _state(site: str, device: str, inst: str, online: bool, t: float,
           valve: str = "open") -> tuple[str, bytes]:  # fmt: skip
    state = {"online": online, "last_seen": int(t), "instance": inst, "boot": 1, "fw": "1.4.0",
             "valve": valve, "alarm": "none", "uptime_s": 86400}  # fmt: skip
    return (cloudevents.topic_state(site, device),
            json.dumps(cloudevents.device_state(site, device, state, int(t))).encode())


def _status(site: str, online: bool, t: float, devices: int,
            counts: dict[str, int] | None = None) -> tuple[str, bytes]:  # fmt: skip
    doc = cloudevents.gateway_status(site, "gw-1", online, int(t), "0.9.0", devices, counts)
    return cloudevents.topic_gateway_status(site, "gw-1"), json.dumps(doc).encode()


AGO = {"alarm.high": 12, "ack": 50, "alarm.low": 80 * 60, "closed": 5 * 60}  # minutes ago
ALARM_STEPS = {  # what happened on a unit's first device, from its alarm on
    "alarm.high": [("alarm.high", 68.5), ("valve.closed", None)],
    "ack": [("alarm.high", 55.0), ("valve.closed", None), ("ack", None)],
    "alarm.low": [("alarm.low", 22.0)],
    "closed": [("alarm.high", 61.0), ("valve.closed", None), ("ack", None),
               ("alarm.clear", None), ("reset", None)],
}  # fmt: skip


def seed_city(store: Any) -> tuple[str, str]:
    """The screenshots' city into an empty store; returns the demo account's login."""
    now = _now()
    t0 = now.timestamp()
    with tempfile.TemporaryDirectory(prefix="gasguard-sample-") as tmp:
        table = Path(tmp) / "units.csv"
        with open(table, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(HEADER)
            w.writerows(_registry_rows())
        import_units(store)
        import_units(store, table)
    msgs = []
    hotpot = ("sh-xuhui-0042", "", "", "", "", "", 2, "closed")  # the demo's story, as a day
    for n, (site, _, _, _, _, _, devices, what) in enumerate([hotpot, *UNITS]):
        if what == "no_device":
            continue
        names = (["hotpot-88-main", "hotpot-88-back"] if site == "sh-xuhui-0042" else
                 ["%s-d%d" % (site, d + 1) for d in range(devices)])  # fmt: skip
        online = what != "offline"
        seen = t0 - (7200 if not online else 30)
        for d, device in enumerate(names):
            inst = "%016x" % (0x5A000 + n * 8 + d)
            steps = ALARM_STEPS.get(what, []) if d == 0 else []
            start = t0 - 60 * AGO.get(what, 0)
            for seq, (kind, lel) in enumerate(steps, 1):
                msgs.append(_event(site, device, inst, seq, kind, start + 40 * seq, lel))
            valve = "closed" if steps and steps[-1][0] != "reset" else "open"
            msgs.append(_state(site, device, inst, online, seen, valve))
        # an online gateway's counts (one with a backlog, some with a refused frame or two);
        # an offline one's last will carries none
        counts = {"outbox": 1842 if n == 3 else 0, "refused": 2 if n % 4 == 1 else 0,
                  "dead_letters": 0} if online else None  # fmt: skip
        msgs.append(_status(site, online, seen, len(names) if online else 0, counts))
    store.write([boundary.check(topic, raw) for topic, raw in msgs])
    compliance.evaluate(store, now)
    at = spell(now)
    hazards.sync(store, at)
    _work_the_ledger(store, now)
    return add_demo_account(store, "gasguard sample")


def _work_the_ledger(store: Any, now: datetime.datetime) -> None:
    """Some hazards moved on, as a week of a district's work leaves them."""
    at = spell(now)
    later = spell(now + datetime.timedelta(days=3))
    by_site = {r["site"]: r["id"] for r in store.rows("SELECT site, id FROM hazards ORDER BY id")}
    for site, who in (("sh-xuhui-0051", "陈国华"), ("sh-jingan-0033", "赵磊"),
                      ("sh-xuhui-0107", "黄志强")):  # fmt: skip
        if site in by_site:
            hazards.dispatch(store, by_site[site], who, later, "街道安监 张科", at)
    for site, note in (("sh-jingan-0033", "已更换电磁阀并复位"),
                       ("sh-xuhui-0107", "排查软管接口，已紧固")):
        if site in by_site:
            hazards.rectify(store, by_site[site], note, "街道安监 张科", at)
    if "sh-xuhui-0107" in by_site:
        hazards.close(store, by_site["sh-xuhui-0107"], "区燃气办 钱工", at, "现场核查合格")
