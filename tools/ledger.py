"""The regulator's hazard ledger: every event once (dedup by CloudEvents id) and one incident per
alarm with its lifecycle, in SQLite.

An incident opens on a device's first low or high alarm and follows what happens on site:

    opened → acknowledged on site → valve reset → closed

It closes when the gas is gone and the site is back in service: at the staff reset that reopens
the valve after every alarming detector cleared, or at the clear itself when the valve never
closed (a low alarm that only sounds). Further alarms on the same device while it is open join it
and may raise its level. Durations are from the device's event times, so a late delivery (an
uplink outage) does not stretch them.
"""

from __future__ import annotations

import csv
import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any, TextIO

from gasguard.tools import human

SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    id TEXT PRIMARY KEY, site TEXT, device TEXT, kind TEXT, time TEXT, payload TEXT);
CREATE TABLE IF NOT EXISTS incidents (
    incident INTEGER PRIMARY KEY AUTOINCREMENT,
    site TEXT NOT NULL, device TEXT NOT NULL, level TEXT NOT NULL, detectors TEXT NOT NULL,
    peak_lel REAL, opened_at TEXT NOT NULL, valve_closed_at TEXT, acknowledged_at TEXT,
    cleared_at TEXT, reset_at TEXT, closed_at TEXT, stage TEXT NOT NULL, alarming TEXT NOT NULL,
    refusals INTEGER NOT NULL DEFAULT 0, open_event TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS incidents_open ON incidents (site, device, closed_at);
CREATE TABLE IF NOT EXISTS devices (
    site TEXT, device TEXT, online INTEGER, valve TEXT, alarm TEXT, last_seen TEXT,
    PRIMARY KEY (site, device));
"""
# columns added with event/state schema v2, for ledgers made before (ALTER TABLE if missing):
# events a board lost (its events.lost counts), and what an incident's readings said beyond %LEL
# (over range: above the detector's measuring range; reading invalid: a value nobody can use)
ADDED = (("devices", "lost", "INTEGER NOT NULL DEFAULT 0"),
         ("incidents", "flags", "TEXT NOT NULL DEFAULT ''"))  # fmt: skip

CSV_FIELDS = (
    "incident", "site", "device", "level", "detectors", "peak_lel", "stage", "opened_at",
    "valve_closed_at", "acknowledged_at", "cleared_at", "reset_at", "closed_at",
    "to_valve_closed_s", "to_acknowledged_s", "to_cleared_s", "to_reset_s", "duration_s",
    "refusals", "flags", "open_event",
)  # fmt: skip


def _ts(s: str | None) -> datetime.datetime | None:
    if not s:
        return None
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _secs(a: str | None, b: str | None) -> float | None:
    ta, tb = _ts(a), _ts(b)
    return None if ta is None or tb is None else round((tb - ta).total_seconds(), 3)


def _flags(d: dict[str, Any]) -> list[str]:
    """What an alarm's reading said beyond its %LEL (event schema v2)."""
    out = []
    if d.get("over_range"):
        out.append("over range")
    if "lel_invalid" in d:
        out.append("reading invalid: %s" % d["lel_invalid"])
    return out


class Ledger:
    def __init__(self, path: str | Path = ":memory:") -> None:
        self.db = sqlite3.connect(str(path))
        self.db.row_factory = sqlite3.Row
        if str(path) != ":memory:":
            self.db.execute("PRAGMA journal_mode=WAL")
        self.db.executescript(SCHEMA)
        for table, col, decl in ADDED:
            have = {r[1] for r in self.db.execute("PRAGMA table_info(%s)" % table)}
            if col not in have:
                self.db.execute("ALTER TABLE %s ADD COLUMN %s %s" % (table, col, decl))
        self.duplicates = 0

    def close(self) -> None:
        self.db.close()

    # --- input -----------------------------------------------------------------------------------

    def add_event(self, ev: dict[str, Any]) -> str | None:
        """Record one validated event payload. Returns what it did to the ledger ("opened #3",
        "acknowledged #3", ...), "" for an event that changes no incident, None for a duplicate."""
        d = ev["data"]
        with self.db:
            cur = self.db.execute(
                "INSERT OR IGNORE INTO events VALUES (?,?,?,?,?,?)",
                (ev["id"], d["site"], d["device"], d["kind"], ev["time"], json.dumps(ev)),
            )
            if cur.rowcount == 0:
                self.duplicates += 1
                return None
            self._device_from_event(d, ev["time"])
            return self._lifecycle(ev, d)

    def set_state(self, st: dict[str, Any]) -> None:
        d = st["data"]
        with self.db:
            self.db.execute(
                "INSERT INTO devices (site, device, online, valve, alarm, last_seen)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT (site, device) DO UPDATE "
                "SET online=excluded.online, valve=excluded.valve, alarm=excluded.alarm, "
                "last_seen=excluded.last_seen",
                (
                    d["site"],
                    d["device"],
                    int(d["online"]),
                    d.get("valve", "unknown"),
                    d.get("alarm", "none"),
                    d["last_seen"],
                ),
            )

    def _device_from_event(self, d: dict[str, Any], when: str) -> None:
        kind = d["kind"]
        sets = {"last_seen": when}
        if kind in ("alarm.low", "alarm.high"):
            sets["alarm"] = kind[6:]
        elif kind == "alarm.clear":
            sets["alarm"] = "none"
        elif kind == "valve.closed":
            sets["valve"] = "closed"
        elif kind == "reset":
            sets["valve"] = "open"
        elif kind == "device.online":
            sets["online"] = 1
        elif kind == "device.offline":
            sets["online"] = 0
        self.db.execute(
            "INSERT OR IGNORE INTO devices (site, device, online, valve, alarm, last_seen)"
            " VALUES (?,?,1,'unknown','none',?)",
            (d["site"], d["device"], when),
        )
        if kind == "events.lost":  # the board's flash log or queue dropped events: say so
            self.db.execute(
                "UPDATE devices SET lost = lost + ? WHERE site=? AND device=?",
                (d.get("count", 0), d["site"], d["device"]),
            )
        cols = ", ".join("%s=?" % k for k in sets)
        self.db.execute(
            "UPDATE devices SET %s WHERE site=? AND device=?" % cols,
            (*sets.values(), d["site"], d["device"]),
        )

    def _open_incident(self, site: str, device: str) -> sqlite3.Row | None:
        return self.db.execute(
            "SELECT * FROM incidents WHERE site=? AND device=? AND closed_at IS NULL "
            "ORDER BY incident DESC LIMIT 1",
            (site, device),
        ).fetchone()

    def _lifecycle(self, ev: dict[str, Any], d: dict[str, Any]) -> str:
        kind, when = d["kind"], ev["time"]
        inc = self._open_incident(d["site"], d["device"])
        det = d.get("detector")
        if kind in ("alarm.low", "alarm.high"):
            level = kind[6:]
            lel = d.get("lel")
            flags = _flags(d)
            if inc is None:
                cur = self.db.execute(
                    "INSERT INTO incidents (site, device, level, detectors, peak_lel, opened_at, "
                    "stage, alarming, open_event, flags) VALUES (?,?,?,?,?,?,?,?,?,?)",
                    (
                        d["site"],
                        d["device"],
                        level,
                        json.dumps([] if det is None else [det]),
                        lel,
                        when,
                        "opened",
                        json.dumps([] if det is None else [det]),
                        ev["id"],
                        ", ".join(flags),
                    ),
                )
                return "incident #%d opened" % cur.lastrowid
            dets = set(json.loads(inc["detectors"]))
            alarming = set(json.loads(inc["alarming"]))
            if det is not None:
                dets.add(det)
                alarming.add(det)
            peak = max((x for x in (inc["peak_lel"], lel) if x is not None), default=None)
            new_level = "high" if "high" in (inc["level"], level) else "low"
            old = [f for f in inc["flags"].split(", ") if f]
            self.db.execute(
                "UPDATE incidents SET level=?, detectors=?, alarming=?, peak_lel=?, "
                "cleared_at=NULL, flags=? WHERE incident=?",
                (
                    new_level,
                    json.dumps(sorted(dets)),
                    json.dumps(sorted(alarming)),
                    peak,
                    ", ".join(old + [f for f in flags if f not in old]),
                    inc["incident"],
                ),
            )
            up = new_level != inc["level"]
            return "incident #%d %s" % (inc["incident"], "escalated" if up else "continues")
        if inc is None:
            return ""
        n = inc["incident"]
        if kind == "valve.closed" and inc["valve_closed_at"] is None:
            self._set(n, valve_closed_at=when)
            return "incident #%d: valve closed" % n
        if kind == "ack" and inc["acknowledged_at"] is None:
            self._set(n, acknowledged_at=when, stage="acknowledged")
            return "incident #%d acknowledged on site" % n
        if kind == "reset.refused":
            self._set(n, refusals=inc["refusals"] + 1)
            return "incident #%d: reset refused on site" % n
        if kind == "alarm.clear":
            alarming = set(json.loads(inc["alarming"]))
            alarming.discard(det)
            if det is None:
                alarming.clear()
            if alarming:
                self._set(n, alarming=json.dumps(sorted(alarming)))
                return "incident #%d: %s clear" % (n, human.detector(det))
            if inc["valve_closed_at"] is None:  # nothing to reopen: the hazard is over
                self._set(n, alarming="[]", cleared_at=when, closed_at=when, stage="closed")
                return "incident #%d closed (gas cleared)" % n
            self._set(n, alarming="[]", cleared_at=when)
            return "incident #%d: gas cleared, valve still closed" % n
        if kind == "reset":
            if inc["cleared_at"] is not None or not json.loads(inc["alarming"]):
                cleared = inc["cleared_at"] or when
                self._set(n, reset_at=when, cleared_at=cleared, closed_at=when, stage="closed")
                return "incident #%d closed (valve reset on site)" % n
            self._set(n, reset_at=when, stage="valve reset")
            return "incident #%d: valve reset" % n
        return ""

    def _set(self, incident: int, **cols: Any) -> None:
        names = ", ".join("%s=?" % k for k in cols)
        self.db.execute(
            "UPDATE incidents SET %s WHERE incident=?" % names, (*cols.values(), incident)
        )

    # --- output ----------------------------------------------------------------------------------

    def incidents(self, open_only: bool = False) -> list[dict[str, Any]]:
        q = "SELECT * FROM incidents"
        if open_only:
            q += " WHERE closed_at IS NULL"
        out = []
        for r in self.db.execute(q + " ORDER BY incident"):
            row = dict(r)
            row["detectors"] = json.loads(row["detectors"])
            del row["alarming"]
            o = row["opened_at"]
            row["to_valve_closed_s"] = _secs(o, row["valve_closed_at"])
            row["to_acknowledged_s"] = _secs(o, row["acknowledged_at"])
            row["to_cleared_s"] = _secs(o, row["cleared_at"])
            row["to_reset_s"] = _secs(o, row["reset_at"])
            row["duration_s"] = _secs(o, row["closed_at"])
            out.append(row)
        return out

    def devices(self) -> list[dict[str, Any]]:
        rows = self.db.execute("SELECT * FROM devices ORDER BY site, device").fetchall()
        out = []
        for r in rows:
            d = dict(r)
            d["open_incidents"] = self.db.execute(
                "SELECT count(*) FROM incidents WHERE site=? AND device=? AND closed_at IS NULL",
                (d["site"], d["device"]),
            ).fetchone()[0]
            out.append(d)
        return out

    def event_count(self) -> int:
        return self.db.execute("SELECT count(*) FROM events").fetchone()[0]

    def export_csv(self, out: TextIO) -> int:
        w = csv.DictWriter(out, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        rows = self.incidents()
        for r in rows:
            r = dict(r)
            r["detectors"] = " ".join(str(x) for x in r["detectors"])
            w.writerow(r)
        return len(rows)


def render(ledger: Ledger) -> str:
    """The console's table: one row per device, then the open incidents (local times)."""
    devices = human.table(
        ("SITE", "DEVICE", "ONLINE", "VALVE", "ALARM", "OPEN", "LOST", "LAST SEEN"),
        (
            (d["site"], d["device"], "yes" if d["online"] else "NO", d["valve"], d["alarm"],
             d["open_incidents"], d["lost"], human.local_time(d["last_seen"]))
            for d in ledger.devices()
        ),
    )  # fmt: skip
    lines = [devices]
    for i in ledger.incidents(open_only=True):
        lines.append(
            "  incident #%d %s/%s %s alarm, %s since %s (peak %s)%s"
            % (
                i["incident"],
                i["site"],
                i["device"],
                i["level"],
                i["stage"],
                human.local_time(i["opened_at"]),
                human.figure(i["peak_lel"], "%s %%LEL", "no reading"),
                " [%s]" % i["flags"] if i["flags"] else "",
            )
        )
    return "\n".join(lines)
