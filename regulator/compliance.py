"""Compliance per unit: the checklist's five findings (the hundred-day action, item 13), computed
from the registry and the stream, one row per unit or device and kind in `findings`.

    no_detector     no leak alarm: no detector registered, or none of the unit's devices ever heard
    below_standard  a detector not certified to GB 15322.1, or alarm set points outside it
    wrong_gas       a detector for another gas than the unit's
    wrong_position  placement outside the install rules (or not recorded)
    not_working     offline, a detector in fault/inhibit/calibration, a valve fault, past its
                    service life or calibration date, its event log's chain broken, events lost

evaluate() is the one entry: it computes what holds now and brings `findings` in line, in one
transaction. A finding that no longer holds gets cleared_at; one that comes back is reopened
with a new `since`; one that still holds keeps its `since` (its detail may change). Running it
again on the same data changes nothing. The ingest's workers drive it (Driver): the sites a
batch touched, a second later at most, and worker 0 sweeps every unit each minute for what time
alone changes (a device silent past the threshold, a date passing).

Positions are judged by the installer's own rules (tools/installer/configcheck.install_rules) on
the registry's imported geometry, or, for a device with a commissioning record that counts
(regulator/records.py: the newest accepted one), on what the record says: the installer measured
and signed it on site, so its geometry, detector gas, approval and end of service life take the
place of the registry's for that device's detectors (a value the record leaves out keeps the
registry's). A counting record whose verdict is not PASS, or without a passed bump test for
each detector it tested, is a not_working finding: gas was not shown to close the valve.
"""

from __future__ import annotations

import datetime
import functools
import json
import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from . import records

TABLES = """
CREATE TABLE IF NOT EXISTS findings (
    site TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL,
    detail TEXT NOT NULL, since TEXT NOT NULL, cleared_at TEXT,
    PRIMARY KEY (site, subject, kind));
"""
KINDS = ("no_detector", "below_standard", "wrong_gas", "wrong_position", "not_working")
SOURCES = {
    "no_detector": "GB 50028 §10.8; hundred-day action checklist item 13",
    "below_standard": "GB 15322.1-2019",
    "wrong_gas": "GB 50028 §10.8.2",
    "wrong_position": "GB 50028 §10.8.2; CJJ/T 146-2011; docs/install.md §2",
    "not_working": "GB 15322.1-2019; GB 16808-2025 (record storage); docs/install.md §2",
}
OFFLINE_AFTER_S = 3600.0  # the gateway re-publishes every online device's state each minute
# a detector reports warm-up as a fault at every boot, restored a minute or two later: a fault
# is a finding once it has lasted this long (the sweep finds it then)
FAULT_AFTER_S = 900.0
LOSS_WINDOW_DAYS = 30  # lost events and a broken log chain count for this long
SWEEP_EVERY_S = 60.0
SETTLE_S = 1.0  # a worker evaluates the sites its batches touched at most this often
STANDARD = re.compile(r"GB\s*/?\s*T?\s*15322\.1\b", re.IGNORECASE)  # commercial point detectors
LOSS_KINDS = ("events.lost", "outbox.dropped", "gateway.data_lost")
# event kinds that can change a finding by themselves (the store's write marks their sites)
FINDING_KINDS = frozenset(
    ("detector.fault", "detector.restored", "tamper", "valve.fault", "device.online",
     "device.offline", *LOSS_KINDS)
)  # fmt: skip


@dataclass(frozen=True)
class Rules:
    offline_after_s: float = OFFLINE_AFTER_S
    fault_after_s: float = FAULT_AFTER_S
    loss_window_days: int = LOSS_WINDOW_DAYS


@dataclass
class Outcome:
    raised: list[tuple[str, str, str]] = field(default_factory=list)  # new or reopened
    cleared: list[tuple[str, str, str]] = field(default_factory=list)
    changed: int = 0  # still open, detail changed
    open: int = 0  # open after this evaluation, in the sites evaluated


def spell(t: datetime.datetime) -> str:
    """The store's one spelling of a time (store.now())."""
    t = t.astimezone(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def _when(s: str | None) -> datetime.datetime | None:
    if not s:
        return None
    return datetime.datetime.fromisoformat(s.replace("Z", "+00:00"))


def _years_later(d: datetime.date, years: int) -> datetime.date:
    try:
        return d.replace(year=d.year + years)
    except ValueError:  # 29 February
        return d.replace(year=d.year + years, day=28)


# --- what holds for one unit (no I/O) ----------------------------------------------------------


@dataclass
class Heard:
    """What the ingest knows of one device: its `devices` row and facts from its events."""

    row: dict[str, Any]
    faults: dict[int, tuple[str, str]] = field(default_factory=dict)  # index: (state, since)
    chain_breaks: list[str] = field(default_factory=list)  # tamper details, in the window
    losses: dict[str, int] = field(default_factory=dict)  # kind: events lost, in the window


def judge(
    unit: dict[str, Any],
    devices: list[str],
    detectors: list[dict[str, Any]],
    heard: dict[str, Heard],
    now: datetime.datetime,
    rules: Rules = Rules(),
    commissioned: dict[str, dict[str, Any]] | None = None,
) -> dict[tuple[str, str], str]:
    """(subject, kind): detail for everything that holds for this unit now. commissioned:
    device -> its counting commissioning record's row (its detectors already in detectors)."""
    from gasguard.tools import human
    from gasguard.tools.installer.configcheck import DETECTOR_LIFE_Y

    out: dict[tuple[str, str], str] = {}
    per_device: dict[tuple[str, str], list[str]] = {}

    def note(device: str, kind: str, what: str) -> None:
        per_device.setdefault((device, kind), []).append(what)

    with_detectors = [d for d in devices if any(x["device"] == d for x in detectors)]
    ever_heard = [d for d in devices if d in heard and heard[d].row.get("last_seen")]
    unregistered = sorted(set(heard) - set(devices))
    if not with_detectors or not ever_heard:
        why = (
            "no detector registered for this unit"
            if not with_detectors
            else "no device of this unit has ever been heard (%s)" % ", ".join(devices)
        )
        if unregistered:
            why += "; heard but not registered: %s" % ", ".join(unregistered)
        out[("", "no_detector")] = "%s [%s]" % (why, SOURCES["no_detector"])

    for det in detectors:
        name = human.detector(None, det["address"])
        for kind, what in _install_findings(unit["gas"], det, now.date()):
            note(det["device"], kind, "%s: %s" % (name, what))
        std = det.get("standard")
        if std and not STANDARD.search(std):
            note(
                det["device"],
                "below_standard",
                "%s: certified to %s, not GB 15322.1 (commercial point detectors) [%s]"
                % (name, std, SOURCES["below_standard"]),
            )
        life_end = _date(det.get("life_end"))
        if life_end is None and _date(det.get("installed")):
            life_end = _years_later(_date(det["installed"]), DETECTOR_LIFE_Y)  # type: ignore
        if life_end is not None and life_end < now.date():
            note(
                det["device"],
                "not_working",
                "%s: past its service life (ended %s) [docs/install.md §2: detectors are "
                "replaced after %d years]" % (name, life_end, DETECTOR_LIFE_Y),
            )
        due = _date(det.get("calibration_due"))
        if due is not None and due < now.date():
            note(
                det["device"],
                "not_working",
                "%s: calibration was due %s [GB 15322.1-2019]" % (name, due),
            )

    for dev, c in sorted((commissioned or {}).items()):
        failed = _commissioning_failures(c)
        if failed:
            note(dev, "not_working", "commissioning record %s (finished %s): %s [GB 50028 "
                 "§10.8.4: the valve closes on gas; issue 26]"
                 % (c["record_id"], c["finished_at"], "; ".join(failed)))  # fmt: skip

    threshold = datetime.timedelta(seconds=rules.offline_after_s)
    for dev in devices:
        h = heard.get(dev)
        if h is None or not h.row.get("last_seen"):
            if ever_heard:  # else the unit's no_detector says it
                note(dev, "not_working", "never heard by the regulator")
            continue
        row = h.row
        off_since = _when(row.get("online_time"))
        last = _when(row["last_seen"])
        if row.get("online") == 0 and off_since and now - off_since >= threshold:
            note(
                dev,
                "not_working",
                "offline since %s (over %s) [the gateway's stream]"
                % (row["online_time"], _span(rules.offline_after_s)),
            )
        elif last and now - last >= threshold:
            note(
                dev,
                "not_working",
                "not heard since %s (over %s) [the gateway's stream]"
                % (row["last_seen"], _span(rules.offline_after_s)),
            )
        if row.get("valve") == "fault":
            note(dev, "not_working", "valve fault (its retained state) [GB 50028 §10.8.4]")
        for index, (state, since) in sorted(h.faults.items()):
            if now - _when(since) < datetime.timedelta(seconds=rules.fault_after_s):
                continue
            note(
                dev,
                "not_working",
                "%s: %s since %s [GB 15322.1-2019]" % (human.detector(index), state, since),
            )
        for detail in h.chain_breaks:
            note(dev, "not_working", "%s [GB 16808-2025: record storage]" % detail)
        if h.losses:
            note(
                dev,
                "not_working",
                "events lost in the last %d days: %s "
                "[GB 16808-2025: record storage]"
                % (
                    rules.loss_window_days,
                    ", ".join("%s %d" % (k, n) for k, n in sorted(h.losses.items())),
                ),
            )

    for (dev, kind), whats in per_device.items():
        out[(dev, kind)] = "; ".join(dict.fromkeys(whats))  # once each, in order
    return out


def _commissioning_failures(c: dict[str, Any]) -> list[str]:
    out = []
    if c.get("verdict") != "PASS":
        out.append("verdict %s" % c.get("verdict"))
    bumps = json.loads(c.get("bump_tests") or "[]")
    if not bumps:
        out.append("no bump test")
    for b in bumps:
        if b.get("result") != "pass":
            out.append("bump test of detector %s: %s" % (b.get("detector"), b.get("result")))
    return out


def _metres(v: Any) -> float | None:
    """A length from a record (no floats there: a decimal string, or whole metres)."""
    if type(v) is int:  # bounded as a string is: float(10**400) raises, and stops the sweep
        return float(v) if abs(v) < 1000 else None
    if isinstance(v, str) and len(v) < 16:
        try:
            x = float(v)
        except ValueError:
            return None
        return x if x == x and abs(x) < 1000 else None
    return None


def record_detectors(device: str, payload: dict[str, Any],
                     registered: list[dict[str, Any]]) -> list[dict[str, Any]]:  # fmt: skip
    """A device's detectors as its commissioning record has them, in the registry's columns;
    what the record leaves out keeps the registered detector's value (same address)."""
    equipment = payload.get("equipment") if isinstance(payload.get("equipment"), dict) else {}
    install = payload.get("install") if isinstance(payload.get("install"), dict) else {}

    def by_address(items: Any) -> dict[int, dict[str, Any]]:
        return {d["address"]: d for d in items if isinstance(d, dict)
                and type(d.get("address")) is int} if isinstance(items, list) else {}  # fmt: skip

    eq, place = by_address(equipment.get("detectors")), by_address(install.get("detectors"))
    mine = {d["address"]: d for d in registered if d["device"] == device}
    ceiling = _metres(install.get("ceiling_m"))
    out = []
    for addr in sorted(set(eq) | set(place)):
        e, p = eq.get(addr, {}), place.get(addr, {})
        d = dict(mine.get(addr) or {"device": device, "address": addr})
        said = {
            "gas": e.get("gas") if isinstance(e.get("gas"), str) else None,
            "standard": e.get("approval") if isinstance(e.get("approval"), str) else None,
            "life_end": e.get("end_of_life") if isinstance(e.get("end_of_life"), str) else None,
            "mount_height_m": _metres(p.get("mount_height_m")),
            "distance_m": _metres(p.get("distance_m")),
            "above_appliance": p.get("above_appliance")
            if isinstance(p.get("above_appliance"), bool) else None,
            "ceiling_m": ceiling,
            "location": p.get("location") if isinstance(p.get("location"), str) else None,
        }  # fmt: skip
        d.update({k: v for k, v in said.items() if v is not None})
        d.setdefault("gas", None)
        out.append(d)
    return out


def _span(seconds: float) -> str:
    return "%g h" % (seconds / 3600) if seconds >= 3600 else "%g min" % (seconds / 60)


def _date(v: Any) -> datetime.date | None:
    try:
        return datetime.date.fromisoformat(v) if v else None
    except (TypeError, ValueError):
        return None


# configcheck's findings by the field they name: which checklist item each one is
def _kind_of(f: str) -> str | None:
    if f == "detectors[0].gas":
        return "wrong_gas"
    if f.startswith("alarm."):
        return "below_standard"
    if (
        f == "install.ceiling_m"
        or f.endswith((".mount_height_m", ".distance_m", ".above_appliance"))
        or f == "install.detectors"
    ):
        return "wrong_position"
    return None  # service life (judged above from the registry's dates), pins, valve: not here


PLACEMENT = (
    "address",
    "gas",
    "mount_height_m",
    "distance_m",
    "above_appliance",
    "ceiling_m",
    "low_alarm_pct",
    "high_alarm_pct",
)


def _install_findings(gas: str, det: dict[str, Any], today: datetime.date) -> tuple:
    return _install_rules(gas, tuple(det.get(k) for k in PLACEMENT), today)


@functools.lru_cache(maxsize=100_000)  # a sweep judges the same registry rows every minute
def _install_rules(gas: str, values: tuple, today: datetime.date) -> tuple:
    """The installer's rules (tools/installer/configcheck.py) on one registered detector, as a
    one-detector config: the same wording and the same standard cited as `config check`."""
    from gasguard.tools.installer.configcheck import install_rules

    det = dict(zip(PLACEMENT, values, strict=True))
    place: dict[str, Any] = {"address": det["address"]}
    for k in ("mount_height_m", "distance_m"):
        if det.get(k) is not None:
            place[k] = det[k]
    if det.get("above_appliance") is not None:
        place["above_appliance"] = bool(det["above_appliance"])
    install: dict[str, Any] = {"detectors": [place]}
    if det.get("ceiling_m") is not None:
        install["ceiling_m"] = det["ceiling_m"]
    cfg: dict[str, Any] = {
        "gas": gas,
        "detectors": [{"address": det["address"], "gas": det["gas"]}],
        "install": install,
    }
    alarm = {
        k: det[c]
        for k, c in (("low_alarm_pct", "low_alarm_pct"), ("high_alarm_pct", "high_alarm_pct"))
        if det.get(c) is not None
    }
    if alarm:
        cfg["alarm"] = alarm
    out = []
    for f in install_rules(cfg, today):
        kind = _kind_of(f.field)
        if kind is None or f.level != "error":
            continue
        what = f.message
        if f.rule == "placement record" and what.startswith("missing: "):
            what = "placement not recorded: %s" % (
                "the ceiling height, needed for natural gas"
                if f.field == "install.ceiling_m"
                else what.removeprefix("missing: ")
            )
        out.append((kind, "%s [%s]" % (what, f.rule)))
    return tuple(out)


# --- reading what it needs, writing what it found ----------------------------------------------


CHUNK = 500  # sites a statement: a sweep of a city's units takes a few statements per 500


def _in(store: Any, sites: list[str]) -> tuple[str, Any]:
    """`IN` this fragment, with this one parameter: one statement text whatever the chunk's size
    (PostgreSQL prepares it once; 500 placeholders were parsed again at every evaluation)."""
    return store.in_list(sites)


def _load(store: Any, sites: list[str], now: datetime.datetime, rules: Rules) -> dict:
    """For a chunk of sites, everything judge() needs, in a few set-based statements:
    site → (unit, devices, detectors, heard)."""
    among, chunk = _in(store, sites)
    units = {
        r["site"]: r for r in store.rows("SELECT * FROM units WHERE site IN " + among, [chunk])
    }
    out: dict[str, tuple] = {site: (u, [], [], {}) for site, u in units.items()}
    sites = sorted(units)
    if not sites:
        return {site: (*v, {}) for site, v in out.items()}
    counting = records.current(store, sites)
    among, chunk = _in(store, sites)
    for r in store.rows(
        "SELECT site, device FROM unit_devices WHERE site IN %s ORDER BY site, device" % among,
        [chunk],
    ):
        out[r["site"]][1].append(r["device"])
    for r in store.rows(
        "SELECT * FROM unit_detectors WHERE site IN %s ORDER BY site, device, address" % among,
        [chunk],
    ):
        out[r["site"]][2].append(r)
    for r in store.rows(
        "SELECT site, device, online, online_time, last_seen, valve FROM devices "
        "WHERE site IN " + among,
        [chunk],
    ):
        out[r["site"]][3][r["device"]] = Heard(r)
    # the board reports a fault once per change, and again after a boot while it lasts: the
    # current boot's fault and restored events, in the board's order, say what holds now
    for r in store.rows(
        "SELECT e.site, e.device, e.detector, e.kind, e.time, e.payload FROM devices d "
        "JOIN events e ON e.site = d.site AND e.device = d.device "
        "AND e.instance = COALESCE(d.instance, d.cursor_instance) "
        "AND e.boot = COALESCE(d.boot, (SELECT MAX(x.boot) FROM events x WHERE x.site = d.site "
        "AND x.device = d.device AND x.instance = COALESCE(d.instance, d.cursor_instance))) "
        "WHERE d.site IN %s AND e.kind IN ('detector.fault', 'detector.restored') "
        "AND e.detector IS NOT NULL ORDER BY e.site, e.device, e.seq" % among,
        [chunk],
    ):
        h = out[r["site"]][3][r["device"]]
        if r["kind"] == "detector.restored":
            h.faults.pop(r["detector"], None)
        else:
            detail = json.loads(r["payload"])["data"].get("detail") or "fault"
            h.faults[r["detector"]] = (detail.removeprefix("detector state "), r["time"])
    cutoff = spell(now - datetime.timedelta(days=rules.loss_window_days))
    for r in store.rows(
        "SELECT site, device, kind, payload FROM events WHERE site IN %s AND time >= ? AND "
        "kind IN ('tamper', 'events.lost', 'outbox.dropped', 'gateway.data_lost') "
        "ORDER BY site, time, id" % among,
        [chunk, cutoff],
    ):
        h = out[r["site"]][3].get(r["device"])
        if h is None:
            continue
        data = json.loads(r["payload"])["data"]
        if r["kind"] == "tamper":
            if "chain broken" in (data.get("detail") or ""):
                h.chain_breaks.append("event log %s" % data["detail"].removeprefix("event log "))
        else:
            h.losses[r["kind"]] = h.losses.get(r["kind"], 0) + int(data.get("count") or 1)
    for _, _, _, heard in out.values():
        for h in heard.values():
            h.chain_breaks = list(dict.fromkeys(h.chain_breaks))  # reported at each boot: once
    return {site: (*v, _commissioned(store, site, v[1], v[2], counting))
            for site, v in out.items()}  # fmt: skip


def _commissioned(store: Any, site: str, devices: list[str], detectors: list[dict[str, Any]],
                  counting: dict) -> dict[str, dict[str, Any]]:  # fmt: skip
    """The site's devices with a counting record; their detectors replaced in place by the
    record's (registered devices only: a record for another device is shown, not judged)."""
    got = {}
    for dev in devices:
        c = counting.get((site, dev))
        if c is None:
            continue
        got[dev] = c
        from_record = record_detectors(dev, json.loads(c["payload"]), detectors)
        if from_record:
            detectors[:] = [d for d in detectors if d["device"] != dev] + from_record
    return got


def evaluate(
    store: Any,
    now: datetime.datetime | None = None,
    sites: Iterable[str] | None = None,
    rules: Rules = Rules(),
) -> Outcome:
    """Bring `findings` in line with what holds now, for the given sites (every unit if None)."""
    now = now or datetime.datetime.now(datetime.UTC)
    at = spell(now)
    wanted = None if sites is None else sorted(set(sites))
    scope = (
        wanted
        if wanted is not None
        else [r[0] for r in store.x("SELECT site FROM units ORDER BY site").fetchall()]
    )
    computed: dict[tuple[str, str, str], str] = {}
    for n in range(0, len(scope), CHUNK):
        for site, (unit, devices, detectors, heard, commissioned) in _load(
            store, scope[n : n + CHUNK], now, rules
        ).items():
            for (subject, kind), detail in judge(
                unit, devices, detectors, heard, now, rules, commissioned
            ).items():
                computed[(site, subject, kind)] = detail
    out = Outcome()
    with store.transaction():
        existing = _findings(store, wanted)
        upserts, clears = [], []
        for key, detail in sorted(computed.items()):
            old = existing.get(key)
            if old is not None and old["cleared_at"] is None and old["detail"] == detail:
                continue
            if old is None or old["cleared_at"] is not None:
                out.raised.append(key)
            else:
                out.changed += 1
            upserts.append((*key, detail, at))
        for key, old in sorted(existing.items()):
            if old["cleared_at"] is None and key not in computed:
                clears.append((at, *key))
                out.cleared.append(key)
        # many rows a statement: a city's first evaluation writes a finding or two a unit
        store.xmany(
            "INSERT INTO findings AS f (site, subject, kind, detail, since) "
            "VALUES (?,?,?,?,?) ON CONFLICT (site, subject, kind) DO UPDATE SET "
            "detail = excluded.detail, since = CASE WHEN f.cleared_at IS NULL THEN f.since "
            "ELSE excluded.since END, cleared_at = NULL",
            upserts,
        )
        store.xmany(
            "UPDATE findings SET cleared_at = ? WHERE site = ? AND subject = ? "
            "AND kind = ? AND cleared_at IS NULL",
            clears,
        )
    out.open = len(computed)
    return out


def _findings(store: Any, sites: list[str] | None) -> dict[tuple[str, str, str], dict]:
    """Every finding of the sites evaluated; of all sites in a sweep (a unit no longer
    registered has nothing that holds: its open findings clear)."""
    q = "SELECT site, subject, kind, detail, cleared_at FROM findings"
    if sites is None:
        got = store.rows(q)
    else:
        got = []
        for n in range(0, len(sites), CHUNK):
            chunk = sites[n : n + CHUNK]
            among, param = _in(store, chunk)
            got += store.rows(q + " WHERE site IN " + among, [param])
    return {(r["site"], r["subject"], r["kind"]): r for r in got}


# --- driven by the ingest ----------------------------------------------------------------------


class Driver:
    """In an ingest worker: evaluate the sites its batches touched (at most once a SETTLE_S),
    and, in the worker that sweeps, every unit each SWEEP_EVERY_S. A failure is logged, never
    raised: the events are stored and acknowledged already, and the next run catches up.

    opener: a connection of its own for the sweep, run in a thread: a city's sweep takes
    seconds (~10 s at 50,000 units on 2 cores), and inside the worker's loop the worker's share
    of the events, alarms too, waited for it. Without one the sweep runs in run_due."""

    def __init__(
        self,
        sweep: bool,
        log: Callable[[str], None],
        rules: Rules = Rules(),
        clock: Callable[[], float] = time.monotonic,
        opener: Callable[[], Any] | None = None,
    ) -> None:
        self.sweep, self.log, self.rules, self.clock = sweep, log, rules, clock
        self.opener = opener
        self.sweeper: threading.Thread | None = None
        self.dirty: set[str] = set()
        self.last_touch = self.last_sweep = float("-inf")

    def _sweep_apart(self) -> None:
        try:
            store = self.opener()  # type: ignore[misc]
            try:
                evaluate(store, rules=self.rules)
            finally:
                store.close()
        except Exception as e:  # noqa: BLE001
            self.log("compliance sweep: %s: %s (the next one catches up)"
                     % (type(e).__name__, str(e)[:200]))  # fmt: skip

    def touched(self, sites: Iterable[str]) -> None:
        self.dirty.update(sites)

    def run_due(self, store: Any) -> Outcome | None:
        t = self.clock()
        try:
            if self.sweep and self.opener and t - self.last_sweep >= SWEEP_EVERY_S:
                if self.sweeper is None or not self.sweeper.is_alive():
                    self.last_sweep = t
                    self.sweeper = threading.Thread(target=self._sweep_apart, daemon=True)
                    self.sweeper.start()
            elif self.sweep and t - self.last_sweep >= SWEEP_EVERY_S:
                self.last_sweep = self.last_touch = t
                self.dirty.clear()
                return evaluate(store, rules=self.rules)
            if self.dirty and t - self.last_touch >= SETTLE_S:
                self.last_touch = t
                sites, self.dirty = self.dirty, set()
                return evaluate(store, sites=sites, rules=self.rules)
        except Exception as e:  # noqa: BLE001
            self.log(
                "compliance: %s: %s (the next run catches up)" % (type(e).__name__, str(e)[:200])
            )
        return None


# --- the command -------------------------------------------------------------------------------


def register_compliance(rs: Any) -> Any:
    """`gasguard regulator compliance --db URL [--site SITE]` under the regulator's subparsers."""
    p = rs.add_parser(
        "compliance",
        help="the checklist's findings per unit (evaluated now with --evaluate)",
        epilog="here:\n  1  an open finding is listed\n  2  bad arguments, or --site is not "
        "a registered unit\n  3  the database cannot be reached",
    )
    p.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    p.add_argument("--site", help="one unit (default: every unit)")
    p.add_argument(
        "--evaluate",
        action="store_true",
        help="evaluate now before listing (the ingest does it continuously)",
    )
    p.add_argument(
        "--offline-after",
        type=float,
        default=OFFLINE_AFTER_S,
        help="seconds silent before a device is not working (default %g, one hour)"
        % OFFLINE_AFTER_S,
    )
    p.add_argument("--cleared", action="store_true", help="list cleared findings too")
    p.add_argument("--json", action="store_true", help="print one JSON document only")
    p.set_defaults(run=main_compliance)
    return p


def main_compliance(args: Any) -> int:
    from gasguard.tools import human

    from .opening import open_ledger
    from .store import NotOurDatabase, StoreUnreachable

    prog = "gasguard regulator compliance"

    def refuse(message: str, code: int) -> int:
        if args.json:
            print(json.dumps({"error": message}, ensure_ascii=False))
        else:
            print("%s: %s" % (prog, message), file=sys.stderr)
        return code

    if not args.offline_after > 0:
        return refuse("--offline-after: a number of seconds above 0", 2)
    try:
        store = open_ledger(args.db)
    except NotOurDatabase as e:
        return refuse(str(e), 2)
    except StoreUnreachable as e:
        return refuse("database unreachable: %s" % e, 3)
    try:
        if args.site is not None and not store.rows(
            "SELECT site FROM units WHERE site = ?", (args.site,)
        ):
            return refuse("--site %s: not a registered unit" % args.site, 2)
        if args.evaluate:
            evaluate(
                store,
                sites=None if args.site is None else [args.site],
                rules=Rules(offline_after_s=args.offline_after),
            )
        q = (
            "SELECT f.site, u.name, f.subject, f.kind, f.detail, f.since, f.cleared_at "
            "FROM findings f LEFT JOIN units u ON u.site = f.site WHERE 1 = 1"
        )
        params: list[Any] = []
        if args.site is not None:
            q += " AND f.site = ?"
            params.append(args.site)
        if not args.cleared:
            q += " AND f.cleared_at IS NULL"
        rows = store.rows(q + " ORDER BY f.site, f.subject, f.kind", params)
    finally:
        store.close()
    open_ = sum(1 for r in rows if r["cleared_at"] is None)
    if args.json:
        print(json.dumps({"findings": rows, "open": open_}, ensure_ascii=False))
    elif rows:
        print(
            human.table(
                ("site", "unit", "device", "finding", "detail", "since", "cleared"),
                [
                    (
                        r["site"],
                        r["name"],
                        r["subject"] or "(unit)",
                        r["kind"],
                        r["detail"],
                        human.local_time(r["since"]),
                        human.local_time(r["cleared_at"]),
                    )
                    for r in rows
                ],
            )
        )
    else:
        print("no open findings" if not args.cleared else "no findings")
    return 1 if open_ else 0
