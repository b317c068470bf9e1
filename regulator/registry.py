"""The registry: the jurisdiction tree (city → district → street → grid), the gas-using units
(a restaurant is a site), each unit's devices and their detectors, imported from the table a
district already keeps (`gasguard regulator import`, docs/regulator.md "Registry").

One row per detector (or one per unit that has none yet); the unit's columns repeat on each of
its rows and must agree. A file is imported whole or not at all: every bad row is reported (row
number, column, reason) and nothing is written, so a unit is never half in the ledger; fix the
file and import it again. Importing again is idempotent: for every unit in the file, its row,
devices and detectors become what the file says; units the file does not name stay as they are
(a district's file does not remove another district's units).

What the ingest learns about a device (instance, fw, online, last_seen in `devices`) stays
there: the registry joins it (unit_view), it does not copy it.
"""

from __future__ import annotations

import datetime
import json
import re
import sys
import textwrap
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .sheet import Cell, Sheet, SheetError, blank

TABLES = """
CREATE TABLE IF NOT EXISTS nodes (
    id TEXT PRIMARY KEY, parent TEXT, level TEXT NOT NULL, name TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS units (
    site TEXT PRIMARY KEY, name TEXT NOT NULL, address TEXT NOT NULL, gas TEXT NOT NULL,
    responsible TEXT NOT NULL, phone TEXT NOT NULL, node TEXT NOT NULL,
    lat DOUBLE PRECISION, lon DOUBLE PRECISION);
CREATE TABLE IF NOT EXISTS unit_devices (
    site TEXT NOT NULL, device TEXT NOT NULL, PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS unit_detectors (
    site TEXT NOT NULL, device TEXT NOT NULL, address INTEGER NOT NULL, gas TEXT NOT NULL,
    location TEXT, mount_height_m DOUBLE PRECISION, ceiling_m DOUBLE PRECISION,
    distance_m DOUBLE PRECISION, above_appliance INTEGER, installed TEXT, life_end TEXT,
    calibration_due TEXT, standard TEXT, low_alarm_pct DOUBLE PRECISION,
    high_alarm_pct DOUBLE PRECISION, PRIMARY KEY (site, device, address));
"""
LEVELS = ("city", "district", "street", "grid")
IDENT = re.compile(r"^[A-Za-z0-9_.:-]{1,32}$")  # a site or device id, as the topics carry it
PHONE = re.compile(r"^\+?[0-9][0-9 ()-]{4,24}$")
TEXT_MAX = 200
MAX_REPORTED = 50  # bad rows listed; the count of the rest follows

# column key: (Chinese header, English header). Headers match after trimming, lower case, and
# dropping a unit in brackets: "安装高度(米)", "安装高度（m）" and "Mount_Height_m" all match.
COLUMNS: dict[str, tuple[str, str]] = {
    "site": ("站点编号", "site"),
    "name": ("单位名称", "name"),
    "address": ("地址", "address"),
    "gas": ("用气类型", "gas"),
    "responsible": ("负责人", "responsible"),
    "phone": ("联系电话", "phone"),
    "city": ("市", "city"),
    "district": ("区", "district"),
    "street": ("街道", "street"),
    "grid": ("网格", "grid"),
    "lat": ("纬度", "lat"),
    "lon": ("经度", "lon"),
    "device": ("设备编号", "device"),
    "address_modbus": ("探测器地址", "detector_address"),
    "detector_gas": ("探测气体", "detector_gas"),
    "location": ("安装位置", "location"),
    "mount_height_m": ("安装高度", "mount_height_m"),
    "ceiling_m": ("层高", "ceiling_m"),
    "distance_m": ("水平距离", "distance_m"),
    "above_appliance": ("是否在灶具上方", "above_appliance"),
    "installed": ("安装日期", "installed"),
    "life_end": ("报废日期", "life_end"),
    "calibration_due": ("标定到期", "calibration_due"),
    "standard": ("执行标准", "standard"),
    "low_alarm_pct": ("低报值", "low_alarm_pct"),
    "high_alarm_pct": ("高报值", "high_alarm_pct"),
}
REQUIRED = ("site", "name", "address", "gas", "responsible", "phone", "district", "street", "grid")
UNIT_FIELDS = (
    "name",
    "address",
    "gas",
    "responsible",
    "phone",
    "city",
    "district",
    "street",
    "grid",
    "lat",
    "lon",
)
DETECTOR_FIELDS = (
    "detector_gas",
    "location",
    "mount_height_m",
    "ceiling_m",
    "distance_m",
    "above_appliance",
    "installed",
    "life_end",
    "calibration_due",
    "standard",
    "low_alarm_pct",
    "high_alarm_pct",
)
# the site's gas as device configs name it (protocol/schemas/device-config.schema.json)
SITE_GASES = {
    "天然气": "ng",
    "管道天然气": "ng",
    "ng": "ng",
    "natural gas": "ng",
    "natural_gas": "ng",
    "液化石油气": "lpg",
    "液化气": "lpg",
    "lpg": "lpg",
}
DETECTOR_GASES = {
    "甲烷": "methane",
    "天然气": "methane",
    "methane": "methane",
    "ch4": "methane",
    "丙烷": "propane",
    "propane": "propane",
    "丁烷": "butane",
    "butane": "butane",
    "液化石油气": "lpg",
    "液化气": "lpg",
    "lpg": "lpg",
}
YES = {"是", "yes", "y", "true", "1"}
NO = {"否", "no", "n", "false", "0"}


class ImportRefused(ValueError):
    """The file cannot be imported (exit 2); problems holds one line per bad row or column."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems[:3]))
        self.problems = problems


@dataclass
class Plan:
    """What a valid file says, ready to write."""

    nodes: dict[str, tuple[str | None, str, str]] = field(default_factory=dict)  # id: parent...
    units: dict[str, dict[str, Any]] = field(default_factory=dict)
    devices: dict[str, set[str]] = field(default_factory=dict)  # site: its devices
    detectors: dict[tuple[str, str, int], dict[str, Any]] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)  # columns the import does not know


def _norm(h: str) -> str:
    h = re.sub(r"[(（].*?[)）]", "", str(h))
    return re.sub(r"\s+", "_", h.strip()).lower()


HEADERS = {_norm(alias): key for key, names in COLUMNS.items() for alias in names}


def _columns(header: list[str], city: str | None) -> tuple[dict[str, int], dict[str, str], list]:
    """column key → index, key → the header as the file spells it, and the ignored headers."""
    at: dict[str, int] = {}
    label: dict[str, str] = {}
    ignored: list[str] = []
    problems: list[str] = []
    for i, h in enumerate(header):
        key = HEADERS.get(_norm(h))
        if key is None:
            if str(h).strip():
                ignored.append(str(h).strip())
            continue
        if key in at:
            problems.append("columns %r and %r are both %s" % (label[key], h, _both(key)))
            continue
        at[key], label[key] = i, str(h).strip()
    need = list(REQUIRED) + ([] if city else ["city"])
    if "device" in at:
        need.append("address_modbus")
        need.append("detector_gas")
    for key in need:
        if key not in at:
            extra = " (or give --city)" if key == "city" else ""
            if key in ("address_modbus", "detector_gas"):
                extra = " (needed with the %s column)" % _both("device")
            problems.append("missing column %s%s" % (_both(key), extra))
    if problems:
        raise ImportRefused(problems)
    return at, label, ignored


def _both(key: str) -> str:
    zh, en = COLUMNS[key]
    return "%s (%s)" % (zh, en)


class _RowError(ValueError):
    pass


def _text(v: Cell, required: bool = False, limit: int = TEXT_MAX) -> str | None:
    if blank(v):
        if required:
            raise _RowError("empty")
        return None
    if isinstance(v, float) and v.is_integer():
        v = int(v)  # a phone number or id typed into a number cell
    if isinstance(v, datetime.date | datetime.time):
        v = v.isoformat()
    s = str(v).strip()
    if len(s) > limit:
        raise _RowError("%d characters, at most %d" % (len(s), limit))
    if any(ord(c) < 32 or ord(c) == 127 for c in s):
        raise _RowError("control characters in %s" % json.dumps(s[:40], ensure_ascii=False))
    return s


def _ident(v: Cell) -> str:
    s = _text(v, True)
    if not IDENT.match(s):  # type: ignore[arg-type]
        raise _RowError(
            "%s: 1-32 of A-Z a-z 0-9 _ . : - (as the device's topics carry it)"
            % json.dumps(s, ensure_ascii=False)[:60]
        )
    return s  # type: ignore[return-value]


def _name(v: Cell) -> str:
    s = _text(v, True)
    if "/" in s:  # type: ignore[operator]
        raise _RowError("no / in a place name (it separates the levels of the tree)")
    return s  # type: ignore[return-value]


def _choice(v: Cell, names: dict[str, str]) -> str:
    s = _text(v, True)
    got = names.get(s.lower())  # type: ignore[union-attr]
    if got is None:
        shown = sorted({"%s/%s" % (zh, names[zh]) for zh in names if not zh.isascii()})
        raise _RowError(
            "%s is not one of %s" % (json.dumps(s, ensure_ascii=False)[:60], ", ".join(shown))
        )
    return got


def _number(v: Cell, lo: float, hi: float, what: str) -> float | None:
    if blank(v):
        return None
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise _RowError("%s is not a number" % v)
    try:
        x = float(v.strip()) if isinstance(v, str) else float(v)
    except ValueError:
        raise _RowError(
            "%s is not a number (%s)" % (json.dumps(v, ensure_ascii=False)[:40], what)
        ) from None
    if not lo <= x <= hi:  # NaN fails too
        raise _RowError("%s is outside %g-%g (%s)" % (v, lo, hi, what))
    return x


def _address(v: Cell) -> int:
    x = _number(v, 1, 247, "a Modbus address")
    if x is None:
        raise _RowError("empty")
    if x != int(x):
        raise _RowError("%s is not a whole number (a Modbus address)" % v)
    return int(x)


def _bool(v: Cell) -> int | None:
    if blank(v):
        return None
    if isinstance(v, bool):
        return int(v)
    s = str(v).strip().lower()
    if s in YES:
        return 1
    if s in NO:
        return 0
    raise _RowError("%s: write 是 or 否 (yes or no)" % json.dumps(str(v), ensure_ascii=False)[:40])


_YEAR_FIRST = re.compile(r"^(\d{4})(?:[-/.]|年)(\d{1,2})(?:[-/.]|月)(\d{1,2})日?$")


def _date(v: Cell) -> str | None:
    """ISO, or another year-first form (2026/9/15, 2026年9月15日), or a date cell. 15/09/2026 is
    refused: day and month could be either way round."""
    if blank(v):
        return None
    if isinstance(v, datetime.datetime):
        return v.date().isoformat()
    if isinstance(v, datetime.date):
        return v.isoformat()
    s = str(v).strip()
    m = _YEAR_FIRST.match(s)
    if m:
        try:
            return datetime.date(int(m[1]), int(m[2]), int(m[3])).isoformat()
        except ValueError:
            pass
    raise _RowError(
        "%s is not a date: write it as YYYY-MM-DD" % json.dumps(s, ensure_ascii=False)[:40]
    )


PARSE = {
    "site": _ident,
    "name": lambda v: _text(v, True),
    "address": lambda v: _text(v, True),
    "gas": lambda v: _choice(v, SITE_GASES),
    "responsible": lambda v: _text(v, True),
    "phone": lambda v: _phone(v),
    "city": _name,
    "district": _name,
    "street": _name,
    "grid": _name,
    "lat": lambda v: _number(v, -90, 90, "degrees of latitude"),
    "lon": lambda v: _number(v, -180, 180, "degrees of longitude"),
    "device": _ident,
    "address_modbus": _address,
    "detector_gas": lambda v: _choice(v, DETECTOR_GASES),
    "location": _text,
    "mount_height_m": lambda v: _number(v, 0, 100, "metres above the floor"),
    "ceiling_m": lambda v: _number(v, 0, 100, "metres, floor to ceiling"),
    "distance_m": lambda v: _number(v, 0, 1000, "metres from the appliance"),
    "above_appliance": _bool,
    "installed": _date,
    "life_end": _date,
    "calibration_due": _date,
    "standard": _text,
    "low_alarm_pct": lambda v: _number(v, 0, 100, "%LEL"),
    "high_alarm_pct": lambda v: _number(v, 0, 100, "%LEL"),
}


def _phone(v: Cell) -> str:
    s = _text(v, True)
    if not PHONE.match(s):  # type: ignore[arg-type]
        raise _RowError("%s is not a phone number" % json.dumps(s, ensure_ascii=False)[:40])
    return s  # type: ignore[return-value]


def plan(sheet: Sheet, city: str | None = None) -> Plan:
    """Check every row; ImportRefused lists every problem (by row number), else the plan."""
    at, label, ignored = _columns(sheet.header, city)
    out = Plan(ignored=ignored)
    problems: list[str] = []
    first_row: dict[str, int] = {}  # site: the row that defined its unit
    detector_row: dict[tuple[str, str, int], int] = {}
    device_site: dict[str, tuple[str, int]] = {}
    for n, cells in sheet.rows:
        if all(blank(c) for c in cells):
            continue
        got: dict[str, Any] = {}
        bad = []
        for key, i in at.items():
            if key == "device" or (key in DETECTOR_FIELDS or key == "address_modbus"):
                continue  # read below, only on a row that names a device
            try:
                got[key] = PARSE[key](cells[i] if i < len(cells) else None)
            except _RowError as e:
                bad.append("%s: %s" % (label[key], e))
        if "city" not in at:
            got["city"] = city
        device = cells[at["device"]] if "device" in at and at["device"] < len(cells) else None
        if blank(device):
            given = [
                label[k]
                for k in ("address_modbus", *DETECTOR_FIELDS)
                if k in at and at[k] < len(cells) and not blank(cells[at[k]])
            ]
            if given:  # a detector the file would silently drop
                bad.append(
                    "%s: empty, but %s given: whose detector is it?"
                    % (label.get("device", _both("device")), ", ".join(given))
                )
        else:
            for key in ("device", "address_modbus", *DETECTOR_FIELDS):
                if key not in at:
                    continue
                i = at[key]
                try:
                    got[key] = PARSE[key](cells[i] if i < len(cells) else None)
                except _RowError as e:
                    bad.append("%s: %s" % (label[key], e))
        if bad:
            problems += ["row %d, %s" % (n, b) for b in bad]
            continue
        site = got["site"]
        unit = {k: got.get(k) for k in UNIT_FIELDS}
        if site in out.units:
            differ = [k for k in UNIT_FIELDS if out.units[site][k] != unit[k] and k in at]
            if differ:
                problems.append(
                    "row %d, %s: differs from row %d for the same %s %s (a unit's columns "
                    "must agree on each of its rows)"
                    % (
                        n,
                        ", ".join(label[k] for k in differ),
                        first_row[site],
                        label["site"],
                        site,
                    )
                )
                continue
        else:
            out.units[site], first_row[site] = unit, n
            out.devices.setdefault(site, set())
        if "device" not in got:
            continue
        dev = got["device"]
        key = (site, dev, got["address_modbus"])
        if dev in device_site and device_site[dev][0] != site:
            problems.append(
                "row %d, %s: %s is also under %s %s in row %d"
                % (
                    n,
                    label["device"],
                    dev,
                    label["site"],
                    device_site[dev][0],
                    device_site[dev][1],
                )
            )
            continue
        if key in detector_row:
            problems.append(
                "row %d: the same detector as row %d (%s %s, %s %s, %s %d)"
                % (
                    n,
                    detector_row[key],
                    label["site"],
                    site,
                    label["device"],
                    dev,
                    label["address_modbus"],
                    key[2],
                )
            )
            continue
        device_site.setdefault(dev, (site, n))
        detector_row[key] = n
        out.devices[site].add(dev)
        out.detectors[key] = {k: got.get(k) for k in DETECTOR_FIELDS}
    if problems:
        raise ImportRefused(problems)
    for unit in out.units.values():
        path: list[str] = []
        for level in LEVELS:
            path.append(unit[level])
            node = "/".join(path)
            out.nodes[node] = ("/".join(path[:-1]) or None, level, unit[level])
        unit["node"] = node
    return out


def apply(store: Any, p: Plan) -> dict[str, int]:
    """Write a plan in one transaction; what it changed, counted."""
    with store.transaction():
        known = {r[0] for r in store.x("SELECT site FROM units").fetchall()}
        for node, (parent, level, name) in sorted(p.nodes.items()):
            store.x(
                "INSERT INTO nodes VALUES (?,?,?,?) ON CONFLICT (id) DO UPDATE SET "
                "parent = excluded.parent, level = excluded.level, name = excluded.name",
                (node, parent, level, name),
            )
        cols = ("name", "address", "gas", "responsible", "phone", "node", "lat", "lon")
        for site, u in sorted(p.units.items()):
            store.x(
                "INSERT INTO units (site, %s) VALUES (?,%s) ON CONFLICT (site) DO UPDATE SET %s"
                % (
                    ", ".join(cols),
                    ",".join("?" * len(cols)),
                    ", ".join("%s = excluded.%s" % (c, c) for c in cols),
                ),
                (site, *(u[c] for c in cols)),
            )
            # the file is this unit's whole record: devices and detectors it no longer lists go
            store.x("DELETE FROM unit_detectors WHERE site = ?", (site,))
            store.x("DELETE FROM unit_devices WHERE site = ?", (site,))
            for dev in sorted(p.devices[site]):
                store.x("INSERT INTO unit_devices (site, device) VALUES (?, ?)", (site, dev))
        for (site, dev, addr), d in sorted(p.detectors.items()):
            store.x(
                "INSERT INTO unit_detectors (site, device, address, gas, %s) VALUES (?,?,?,?,%s)"
                % (", ".join(DETECTOR_FIELDS[1:]), ",".join("?" * (len(DETECTOR_FIELDS) - 1))),
                (site, dev, addr, d["detector_gas"], *(d[k] for k in DETECTOR_FIELDS[1:])),
            )
    return {
        "units": len(p.units),
        "new_units": len(set(p.units) - known),
        "devices": sum(len(d) for d in p.devices.values()),
        "detectors": len(p.detectors),
        "nodes": len(p.nodes),
    }


def import_file(store: Any, path: Path, city: str | None = None) -> tuple[dict[str, int], Plan]:
    """SheetError or ImportRefused (nothing written), else the counts and the plan written."""
    from . import sheet

    p = plan(sheet.read(path), city)
    return apply(store, p), p


# --- reading it back ---------------------------------------------------------------------------


def unit_view(store: Any, site: str) -> dict[str, Any] | None:
    """A unit with its place in the tree, its devices (the ingest's view of each joined: online,
    last_seen, instance, fw) and their detectors."""
    units = store.rows("SELECT * FROM units WHERE site = ?", (site,))
    if not units:
        return None
    unit = units[0]
    unit["path"] = unit["node"].split("/")
    heard = {
        r["device"]: r
        for r in store.rows(
            "SELECT device, online, online_time, last_seen, instance, fw, valve, lost "
            "FROM devices WHERE site = ?",
            (site,),
        )
    }
    dets = store.rows(
        "SELECT * FROM unit_detectors WHERE site = ? ORDER BY device, address", (site,)
    )
    unit["devices"] = []
    for r in store.rows("SELECT device FROM unit_devices WHERE site = ? ORDER BY device", (site,)):
        dev = r["device"]
        unit["devices"].append(
            {
                "device": dev,
                "heard": heard.get(dev),
                "detectors": [d for d in dets if d["device"] == dev],
            }
        )
    return unit


def csv_safe(value: Any) -> Any:
    """A cell for a CSV or XLSX anyone will open in a spreadsheet: text that a spreadsheet would
    run as a formula (=, +, -, @, or a tab or CR before one) gets a leading apostrophe.
    Imported names keep what the district typed (=HYPERLINK(...) included) as text; every
    export path writes them through this."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


# --- the command -------------------------------------------------------------------------------


def register_import(rs: Any) -> Any:
    """`gasguard regulator import --db URL FILE` under the regulator command's subparsers."""
    p = rs.add_parser(
        "import",
        help="import the units, devices and detectors a district keeps (CSV or XLSX)",
        epilog="here:\n  2  the file is refused (every bad row listed); nothing was imported\n"
        "  3  the database cannot be reached\n"
        + textwrap.fill(
            "columns (Chinese or English headers): "
            + ", ".join("%s/%s" % names for names in COLUMNS.values()),
            99,
        ),
    )
    p.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    p.add_argument("--city", help="the city, for a file without a 市 (city) column")
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    p.add_argument("file", help="a .csv (UTF-8 or GB 18030) or .xlsx file")
    p.set_defaults(run=main_import)
    return p


def main_import(args: Any) -> int:
    from .store import NotOurDatabase, StoreUnreachable, open_store

    prog = "gasguard regulator import"

    def refuse(problems: list[str], code: int = 2) -> int:
        if args.json:
            head = problems[0] if len(problems) == 1 else "%d problems" % len(problems)
            if code == 2:
                head += "; nothing imported"
            print(json.dumps({"error": head, "problems": problems}, ensure_ascii=False))
        else:
            for line in problems[:MAX_REPORTED]:
                print("%s: %s" % (prog, line), file=sys.stderr)
            if len(problems) > MAX_REPORTED:
                print(
                    "%s: ... and %d more" % (prog, len(problems) - MAX_REPORTED), file=sys.stderr
                )
            if code == 2:
                print("%s: nothing imported" % prog, file=sys.stderr)
        return code

    if args.city is not None:
        try:
            args.city = _name(args.city)
        except _RowError as e:
            return refuse(["--city: %s" % e])
    try:
        from .sheet import read

        p = plan(read(Path(args.file)), args.city)
    except SheetError as e:
        return refuse([str(e)])
    except ImportRefused as e:
        return refuse(["%s: %s" % (args.file, line) for line in e.problems])
    try:
        store = open_store(args.db, create=True)
    except NotOurDatabase as e:
        return refuse([str(e)])
    except StoreUnreachable as e:
        return refuse(["database unreachable: %s" % e], 3)
    try:
        counts = apply(store, p)
    finally:
        store.close()
    if args.json:
        print(json.dumps({"imported": counts, "ignored_columns": p.ignored}, ensure_ascii=False))
    else:
        print(
            "imported %d units (%d new), %d devices, %d detectors, %d places in the tree"
            % (
                counts["units"],
                counts["new_units"],
                counts["devices"],
                counts["detectors"],
                counts["nodes"],
            )
        )
        if p.ignored:
            print("ignored columns: %s" % ", ".join(p.ignored))
    return 0
