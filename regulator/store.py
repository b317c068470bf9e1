"""The ingest's store: one schema on PostgreSQL (psycopg 3) or SQLite, written a batch at a time.

Every batch is one transaction, so the worker acknowledges its messages to the broker only after
all of them are durable. Concurrency between workers (processes, possibly on several machines):
events are unique by CloudEvents id under a primary key (a duplicate is a no-op insert); a
device's incidents change only while its `devices` row is locked (PostgreSQL: the batch's upsert
of its device rows, in sorted order, so two batches do not deadlock; SQLite: BEGIN IMMEDIATE,
one writer).
In order, an event advances the device's latest incident; an event that sorts before what the
device already applied (a late or reordered delivery, another worker's batch) rebuilds that
device's incidents from all its events in the board's order (regulator/incidents.py).
"""

from __future__ import annotations

import datetime
import hashlib
import json
import re
import sqlite3
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from gasguard.protocol import cloudevents

from . import (
    acks,
    audit,
    boundary,
    compliance,
    hazards,
    incidents,
    installers,
    photos,
    records,
    registry,
    triage,
    views,
    workorders,
)
from .boundary import Message
from .notify import escalate, outbox
from .reports import made
from .web import accounts

SCHEMA_MARK = "gasguard-regulator 3"  # in regulator_meta: this database is ours
# 3: alarm to action (issue 25) and commissioning records (issue 26): tables added only; a
# schema-2 database gains them at its next start (ADDED_IN_3)
# 2: events, incidents and dead letters are unique per site and device (or gateway), not by id
# alone: one site's publisher could otherwise take an id another site's board will send

TABLES = """
CREATE TABLE IF NOT EXISTS regulator_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS events (
    id TEXT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL, kind TEXT NOT NULL,
    instance TEXT, boot BIGINT, seq BIGINT, detector INTEGER, lel DOUBLE PRECISION,
    time TEXT NOT NULL, ingested_at TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, device, id));
CREATE INDEX IF NOT EXISTS events_device ON events (site, device, instance);
CREATE TABLE IF NOT EXISTS devices (
    site TEXT NOT NULL, device TEXT NOT NULL,
    online INTEGER, online_time TEXT, last_seen TEXT, lost BIGINT NOT NULL DEFAULT 0,
    instance TEXT, boot BIGINT, fw TEXT, valve TEXT, alarm TEXT, state_time TEXT,
    cursor_first TEXT, cursor_instance TEXT, cursor_boot BIGINT, cursor_seq BIGINT,
    PRIMARY KEY (site, device));
CREATE TABLE IF NOT EXISTS incidents (
    open_event TEXT NOT NULL, site TEXT NOT NULL, device TEXT NOT NULL, instance TEXT NOT NULL,
    ordinal INTEGER NOT NULL, level TEXT NOT NULL, stage TEXT NOT NULL,
    detectors TEXT NOT NULL, alarming TEXT NOT NULL, peak_lel DOUBLE PRECISION,
    opened_at TEXT NOT NULL, valve_closed_at TEXT, acknowledged_at TEXT, cleared_at TEXT,
    reset_at TEXT, closed_at TEXT, last_event TEXT NOT NULL,
    PRIMARY KEY (site, device, open_event));
CREATE INDEX IF NOT EXISTS incidents_device ON incidents (site, device, ordinal);
CREATE TABLE IF NOT EXISTS gateways (
    site TEXT NOT NULL, gateway TEXT NOT NULL, online INTEGER NOT NULL, version TEXT,
    devices_online BIGINT, status_time TEXT NOT NULL, updated_at TEXT NOT NULL,
    outbox BIGINT, refused BIGINT, dead_letters BIGINT, last_seen TEXT,
    PRIMARY KEY (site, gateway));
CREATE TABLE IF NOT EXISTS dead_letters (
    id TEXT NOT NULL, site TEXT NOT NULL, gateway TEXT NOT NULL, device TEXT NOT NULL,
    reason TEXT NOT NULL, body_hex TEXT NOT NULL, received TEXT NOT NULL, payload TEXT NOT NULL,
    PRIMARY KEY (site, gateway, id));
CREATE TABLE IF NOT EXISTS rejected (
    topic TEXT NOT NULL, digest TEXT NOT NULL, reason TEXT NOT NULL, bytes INTEGER NOT NULL,
    excerpt TEXT NOT NULL, first_at TEXT NOT NULL, last_at TEXT NOT NULL,
    times BIGINT NOT NULL, worker INTEGER NOT NULL, site TEXT, PRIMARY KEY (topic, digest));
CREATE INDEX IF NOT EXISTS rejected_site ON rejected (site);
"""
TABLES += registry.TABLES + compliance.TABLES + hazards.TABLES + audit.TABLES
TABLES += views.TABLES  # the consoles' indexes
TABLES += accounts.TABLES  # the web console's logins
ADDED_IN_3 = acks.TABLES + outbox.TABLES  # alarm to action (issue 25)
ADDED_IN_3 += escalate.TABLES  # escalation steps fired (issue 25)
ADDED_IN_3 += installers.TABLES + records.TABLES  # commissioning records delivered (issue 26)
ADDED_IN_3 += triage.TABLES + workorders.TABLES + photos.TABLES  # triage and work orders
ADDED_IN_3 += made.TABLES  # the weekly reports made: their files, for the console and e-mail
TABLES += ADDED_IN_3
OUR_TABLES = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", TABLES))
NEW_IN_3 = frozenset(re.findall(r"CREATE TABLE IF NOT EXISTS (\w+)", ADDED_IN_3))
PREVIOUS_MARK = "gasguard-regulator 2"
DIALECT_DDL = [hazards.dialect_ddl, audit.dialect_ddl]  # sequences, triggers: each backend's own
ROWS_PER_INSERT = 200  # rows in one multi-row INSERT (SQLite allows 32,766 parameters)
EXCERPT_BYTES = 200  # what a rejected message keeps of itself: enough to recognise it
REJECTED_ROWS = 100_000  # distinct rejected messages kept (~50 MB); more are only counted
OVERFLOW_TOPIC = "(overflow)"  # not a topic any publisher can use: it has no "/"
EVENT_COLS = ("id", "site", "device", "kind", "instance", "boot", "seq", "detector", "lel",
              "time", "ingested_at", "payload")  # fmt: skip
# a device's lost-event count saturates here: a forged count of 2**62 twice must neither wrap
# nor turn the column into a float (SQLite) nor fail the batch (PostgreSQL's bigint)
LOST_MAX = 10**12
TOUCH_CONFLICT = (
    "ON CONFLICT (site, device) DO UPDATE SET lost = CASE WHEN d.lost + excluded.lost > %d "
    "THEN %d ELSE d.lost + excluded.lost END, " % (LOST_MAX, LOST_MAX) +
    "last_seen = CASE WHEN excluded.last_seen IS NOT NULL AND (d.last_seen IS NULL "
    "OR d.last_seen < excluded.last_seen) THEN excluded.last_seen ELSE d.last_seen END"
)
INCIDENT_COLS = (
    "open_event", "site", "device", "instance", "ordinal", "level", "stage", "detectors",
    "alarming", "peak_lel", "opened_at", "valve_closed_at", "acknowledged_at", "cleared_at",
    "reset_at", "closed_at", "last_event",
)  # fmt: skip


class StoreUnreachable(RuntimeError):
    """The database cannot be opened or reached (exit 3)."""


class NotOurDatabase(ValueError):
    """The database holds other tables and no regulator mark: refuse to write into it (exit 2)."""


@dataclass(frozen=True)
class Rejection:
    topic: str
    reason: str
    raw: bytes


@dataclass
class Written:
    events: int = 0
    duplicates: int = 0
    rejected: int = 0
    # the sites whose findings this batch may have changed (compliance evaluates those)
    sites: set[str] = field(default_factory=set)


def now() -> str:
    t = datetime.datetime.now(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


def _text(s: str) -> str:
    """JSON can carry what a database's text cannot: NUL (PostgreSQL) and lone surrogates
    ("\\ud800", not UTF-8 at all). A publisher may send either."""
    return s.replace("\x00", "\\0").encode("utf-8", "replace").decode("utf-8")


def transient(e: BaseException) -> bool:
    """A lost, busy or deadlocked database (retry the whole batch), not a row it refuses."""
    if isinstance(e, StoreUnreachable | sqlite3.OperationalError):
        return True
    import sys

    psycopg = sys.modules.get("psycopg")  # loaded if, and only if, a PostgresStore was made
    # OperationalError: a lost connection, a server shutting down, a deadlock, a serialization
    # failure; what a row itself breaks (DataError, IntegrityError) is not worth a retry
    return psycopg is not None and isinstance(e, psycopg.OperationalError)


def is_postgres(url: str) -> bool:
    return url.startswith(("postgresql://", "postgres://"))


def check_url(url: str) -> None:
    """ValueError (exit 2) unless url is postgresql://... or a file path for SQLite."""
    if not url:
        raise ValueError("--db: empty")
    if "://" in url and not is_postgres(url):
        raise ValueError(
            "--db: %r is neither postgresql://... nor a file path" % url.split(":")[0]
        )


def open_store(url: str, *, create: bool = False) -> Store:
    """create: make the tables (the ingest's parent does, once, before its workers start)."""
    check_url(url)
    store: Store = PostgresStore(url) if is_postgres(url) else SqliteStore(url)
    try:
        store.prepare(create)
    except BaseException:
        store.close()
        raise
    return store


class Store:
    placeholder = "?"

    def __init__(self) -> None:
        self._sql: dict[str, str] = {}
        # called inside the batch's transaction for an incident that opened (or became high)
        # and is not acknowledged: the first notifications are decided with it (issue 25,
        # regulator/notify/escalate.opened_hook, wired by `ingest --notify-config`)
        self.incident_hooks: list[Any] = []

    # --- the dialect seam: subclasses hold the connection ----------------------------------------

    def x(self, sql: str, params: Iterable[Any] = ()) -> Any:
        raise NotImplementedError

    def in_list(self, values: list[str]) -> tuple[str, Any]:
        """A parenthesised set for `x IN ...` taking the values as one parameter."""
        return "(SELECT value FROM json_each(?))", json.dumps(values)

    def xmany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        """One statement for many rows of parameters (PostgreSQL: pipelined, not a round trip
        a row)."""
        for r in rows:
            self.x(sql, r)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        raise NotImplementedError
        yield

    def table_names(self) -> set[str]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def _q(self, sql: str) -> str:
        q = self._sql.get(sql)
        if q is None:
            q = self._sql[sql] = sql.replace("?", self.placeholder)
        return q

    # --- schema ----------------------------------------------------------------------------------

    def prepare(self, create: bool) -> None:
        """Make the tables in an empty database (create), then check this is a regulator
        database of this schema with every table. Nothing is written to a database that is not
        empty unless it passes: another program's file, an older schema's, one half made."""
        tables = self.table_names()
        if not tables:
            if not create:
                raise NotOurDatabase("--db: no regulator tables (the ingest makes them)")
            self._create()
            tables = self.table_names()
        elif "regulator_meta" not in tables:
            raise NotOurDatabase(
                "--db: holds other tables (%s) and is not a regulator database: refusing to "
                "write into it" % ", ".join(sorted(tables)[:5])
            )
        mark = self._mark()
        if mark == PREVIOUS_MARK and not (OUR_TABLES - NEW_IN_3) - tables:
            self._add_tables()  # schema 3 only added tables: a whole schema-2 ledger gains them
            tables, mark = self.table_names(), self._mark()
        if mark != SCHEMA_MARK:
            raise NotOurDatabase(
                "--db: a regulator database of schema %r; this version reads and writes %r "
                "(ingest the stream into a new database)" % (mark, SCHEMA_MARK)
                if mark else "--db: has a regulator_meta table but no regulator schema mark: "
                "not a regulator database; refusing to write into it"
            )
        missing = OUR_TABLES - tables
        if missing:  # dropped by hand, or a copy cut short: queries would fail one by one
            raise NotOurDatabase("--db: regulator database without its tables %s (refusing to "
                                 "make them: the rest would not match)"
                                 % ", ".join(sorted(missing)))  # fmt: skip

    def _create(self) -> None:
        with self.transaction():
            for stmt in TABLES.split(";"):
                if stmt.strip():
                    self.x(stmt)
            for ddl in DIALECT_DDL:
                ddl(self, isinstance(self, PostgresStore))
            self.x(
                "INSERT INTO regulator_meta VALUES ('schema', ?) ON CONFLICT (key) DO NOTHING",
                (SCHEMA_MARK,),
            )

    def _add_tables(self) -> None:
        with self.transaction():
            for stmt in ADDED_IN_3.split(";"):
                if stmt.strip():
                    self.x(stmt)
            self.x("UPDATE regulator_meta SET value = ? WHERE key = 'schema' AND value = ?",
                   (SCHEMA_MARK, PREVIOUS_MARK))

    def _mark(self) -> str | None:
        try:
            row = self.x("SELECT value FROM regulator_meta WHERE key = 'schema'").fetchone()
        except Exception as e:  # noqa: BLE001 - a regulator_meta of other columns: not ours
            if transient(e) and not isinstance(e, sqlite3.OperationalError):
                raise
            return None
        return row[0] if row and isinstance(row[0], str) else None

    def meta(self, key: str) -> str | None:
        row = self.x("SELECT value FROM regulator_meta WHERE key = ?", (key,)).fetchone()
        return None if row is None else row[0]

    def set_meta(self, key: str, value: str) -> None:
        with self.transaction():
            self.x(
                "INSERT INTO regulator_meta VALUES (?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (key, value),
            )

    # --- a batch ---------------------------------------------------------------------------------

    def write(self, items: list[Message | Rejection], worker: int = 0) -> Written:
        """Store one batch, all or nothing. Messages are already checked (regulator/boundary)."""
        out = Written()
        at = now()
        with self.transaction():
            refused = [it for it in items if isinstance(it, Rejection)]
            if refused:
                room = REJECTED_ROWS - self.x("SELECT count(*) FROM rejected").fetchone()[0]
                for it in refused:
                    room -= self._reject(it, at, worker, room <= 0)
                out.rejected = len(refused)
            msgs = [it for it in items if isinstance(it, Message)]
            events = {_event_key(m): m for m in msgs if m.kind == "events"}
            inserted = self._insert_events(sorted(events.values(), key=_event_key), at)
            out.events = len(inserted)
            out.duplicates = sum(1 for m in msgs if m.kind == "events") - out.events
            devices: dict[tuple[str, str], list[Message]] = {}
            for m in sorted(inserted, key=_event_key):
                devices.setdefault((m.site, m.subject), []).append(m)
            out.sites = self._finding_sites(msgs, inserted)
            for m in sorted((m for m in msgs if m.kind == "rejected"), key=_by_id):
                self._dead_letter(m)
            states: dict[tuple[str, str], Message] = {}
            for m in msgs:  # retained state and status: the last one read wins (one reader)
                if m.kind == "state":
                    states[(m.site, m.subject)] = m
                elif m.kind == "status":
                    self._gateway(m, at)
                elif m.kind == "commissioning":  # judged and kept; the unit's findings follow
                    if records.ingest(self, m, at) == records.NOT_KEPT:
                        reason = ("commissioning: a refused record, not kept: site %s has %d "
                                  "refused records kept" % (m.site, records.REFUSED_PER_SITE))
                        full = self.x("SELECT count(*) FROM rejected").fetchone()[0]
                        self._reject(Rejection(m.topic, reason, m.text.encode()), at, worker,
                                     full >= REJECTED_ROWS)  # fmt: skip
                        out.rejected += 1
                    out.sites.add(m.site)
            self._touch_devices(devices, states)
            self._states([states[key] for key in sorted(states)])
            for (site, device), new in sorted(devices.items()):
                self._device_events(site, device, new)
        return out

    def _finding_sites(self, msgs: list[Message], inserted: list[Message]) -> set[str]:
        """The sites where this batch can change a finding, judged against the devices' rows
        before it: a finding's own kind of event; a device new, or not heard for half the
        silence threshold; retained state whose online, valve, instance or boot differ from
        the row's; an event from another instance or boot than the row's. Anything else is a
        device heard again, lately: only its last_seen moves, which can end no finding. At a
        city's heartbeat rate this spares evaluating every unit each minute (the sweep still
        catches whatever time changes)."""
        heard = [m for m in msgs if m.kind == "state"] + inserted
        sites = {m.site for m in msgs if m.kind not in ("events", "state")}
        if not heard:
            return sites
        in_sites, p_sites = self.in_list(sorted({m.site for m in heard}))
        in_devs, p_devs = self.in_list(sorted({m.subject for m in heard}))
        rows = self.x(
            "SELECT site, device, last_seen, online, valve, instance, boot FROM devices "
            "WHERE site IN %s AND device IN %s" % (in_sites, in_devs),
            (p_sites, p_devs),
        ).fetchall()
        prior = {(r[0], r[1]): r[2:] for r in rows}
        stale = compliance.spell(
            datetime.datetime.now(datetime.UTC)
            - datetime.timedelta(seconds=compliance.OFFLINE_AFTER_S / 2)
        )
        for m in heard:
            d = m.payload["data"]
            row = prior.get((m.site, m.subject))
            if row is None or row[0] is None or row[0] < stale:
                sites.add(m.site)
            elif m.kind == "state":
                if (int(d["online"]), d.get("valve"), d.get("instance"), d.get("boot")) != row[1:]:
                    sites.add(m.site)
            elif d["kind"] in compliance.FINDING_KINDS or (
                d.get("instance"), d.get("boot")) != row[3:]:  # fmt: skip
                sites.add(m.site)
        return sites

    def _reject(self, r: Rejection, at: str, worker: int, full: bool) -> int:
        """One row per topic and payload, counting how often it came: a rogue retained message
        comes again at every subscribe, and must not grow the table at every restart. Once the
        table holds REJECTED_ROWS, a message not seen before is only counted, in one row that
        says so: a publisher sending endless distinct junk must not fill the disk."""
        excerpt = r.raw[:EXCERPT_BYTES].decode("utf-8", "replace")
        digest = hashlib.sha256(r.raw).hexdigest()[:32]
        if full:
            seen = self.x(
                "UPDATE rejected SET times = times + 1, last_at = ?, worker = ? "
                "WHERE topic = ? AND digest = ?",
                (at, worker, _text(r.topic[:300]), digest),
            )
            if seen.rowcount:
                return 0
            r = Rejection(OVERFLOW_TOPIC, "more distinct rejected messages than the table "
                          "keeps (%d): counted here, not kept" % REJECTED_ROWS, b"")  # fmt: skip
            excerpt, digest = "", "overflow"
        self.x(
            "INSERT INTO rejected AS r (topic, digest, reason, bytes, excerpt, first_at, last_at, "
            "times, worker, site) VALUES (?,?,?,?,?,?,?,1,?,?) ON CONFLICT (topic, digest) "
            "DO UPDATE SET times = r.times + 1, last_at = excluded.last_at, "
            "reason = excluded.reason, worker = excluded.worker",
            (_text(r.topic[:300]), digest, _text(r.reason[:300]), len(r.raw), _text(excerpt),
             at, at, worker, boundary.topic_site(r.topic)),
        )  # fmt: skip
        return 1  # at most one row more (another worker's concurrent batch may add its own)

    def _insert_events(self, msgs: list[Message], at: str) -> list[Message]:
        """Insert many rows a statement (sorted by id: two batches holding the same ids take
        them in one order, so they cannot deadlock); returns those that were new."""
        new: list[Message] = []
        for n in range(0, len(msgs), ROWS_PER_INSERT):
            chunk = msgs[n : n + ROWS_PER_INSERT]
            keys = self._insert_event_rows([_event_row(m, at) for m in chunk])
            new += [m for m in chunk if _event_key(m) in keys]
        return new

    def _insert_event_rows(self, rows: list[tuple]) -> set[tuple[str, str, str]]:
        """Rows of EVENT_COLS in one multi-row INSERT; the (site, device, id) that were new."""
        got = self.x(
            "INSERT INTO events (%s) VALUES %s ON CONFLICT (site, device, id) DO NOTHING "
            "RETURNING site, device, id"
            % (", ".join(EVENT_COLS), ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?)"] * len(rows))),
            [v for r in rows for v in r],
        ).fetchall()
        return {(r[0], r[1], r[2]) for r in got}

    def _dead_letter(self, m: Message) -> None:
        p, d = m.payload, m.payload["data"]
        self.x(
            "INSERT INTO dead_letters VALUES (?,?,?,?,?,?,?,?) "
            "ON CONFLICT (site, gateway, id) DO NOTHING",
            (p["id"], m.site, m.subject, d["device"], _text(d["reason"]), d["body_hex"],
             d["received"], _text(m.text)),
        )  # fmt: skip

    def _gateway(self, m: Message, at: str) -> None:
        """In arrival order, not by time: a last will carries the time its gateway connected,
        older than the online status it published after; it must still win when it comes.
        An online status's counts replace the row's (absent: an older gateway, unknown); an
        offline one keeps those it does not carry (the will has none: the last ones known are
        what the gateway left behind). last_seen: the newest status time, never going back
        (a replayed retained status, a will's older time), unknown for a time in the future."""
        p, d = m.payload, m.payload["data"]
        online = int(d["status"] == "online")
        keep = ", ".join(
            "%s = CASE WHEN excluded.online = 1 THEN excluded.%s ELSE COALESCE(excluded.%s, g.%s) "
            "END" % (c, c, c, c) for c in cloudevents.STATUS_FIGURES
        )
        self.x(
            "INSERT INTO gateways AS g (site, gateway, online, version, devices_online, "
            "status_time, updated_at, outbox, refused, dead_letters, last_seen) "
            "VALUES (?,?,?,?,?,?,?,?,?,?,?) ON CONFLICT (site, gateway) DO UPDATE "
            "SET online = excluded.online, version = excluded.version, "
            "devices_online = excluded.devices_online, status_time = excluded.status_time, "
            "updated_at = excluded.updated_at, %s, last_seen = CASE WHEN g.last_seen IS NULL "
            "OR g.last_seen < excluded.last_seen THEN excluded.last_seen ELSE g.last_seen END"
            % keep,
            (m.site, m.subject, online, d["version"], d["devices_online"], p["time"] or at, at,
             *(d.get(c) for c in cloudevents.STATUS_FIGURES), p["time"]),
        )  # fmt: skip

    def _touch_devices(
        self, events: dict[tuple[str, str], list[Message]], states: dict[tuple[str, str], Message]
    ) -> None:
        """Make or update every device row this batch touches, in one statement and in sorted
        order: the upsert locks each row until commit (PostgreSQL), so the incidents below are
        advanced by one transaction at a time, and two batches lock rows in the same order."""
        rows: list[tuple] = []
        for key in sorted(set(events) | set(states)):
            new = events.get(key, [])
            last = max((m.payload["time"] for m in new), default=None)
            lost = sum(min(int(m.payload["data"].get("count", 0)), LOST_MAX) for m in new
                       if m.payload["data"]["kind"] == "events.lost")  # fmt: skip
            rows.append((*key, last, min(lost, LOST_MAX)))
        for n in range(0, len(rows), ROWS_PER_INSERT):
            self._touch_rows(rows[n : n + ROWS_PER_INSERT])

    def _touch_rows(self, rows: list[tuple]) -> None:
        self.x(
            "INSERT INTO devices AS d (site, device, last_seen, lost) VALUES %s %s"
            % (",".join(["(?,?,?,?)"] * len(rows)), TOUCH_CONFLICT),
            [v for r in rows for v in r],
        )

    def _states(self, states: list[Message]) -> None:
        """Retained state, one row a device (the last read of the batch)."""
        for r in map(_state_row, states):
            self.x(
                "UPDATE devices SET online = ?, online_time = ?, instance = ?, boot = ?, fw = ?, "
                "valve = ?, alarm = ?, state_time = ?, last_seen = CASE WHEN last_seen IS NULL "
                "OR last_seen < ? THEN ? ELSE last_seen END WHERE site = ? AND device = ?",
                (*r[2:], r[-1], *r[:2]),
            )

    def _device_events(self, site: str, device: str, new: list[Message]) -> None:
        for m in sorted(new, key=lambda m: m.payload["time"]):  # the gateway's view, by time
            kind = m.payload["data"]["kind"]
            if kind in ("device.online", "device.offline"):
                self.x(
                    "UPDATE devices SET online = ?, online_time = ? WHERE site = ? AND device = ? "
                    "AND (online_time IS NULL OR online_time <= ?)",
                    (int(kind == "device.online"), m.payload["time"], site, device,
                     m.payload["time"]),
                )  # fmt: skip
        moves = [m for m in new if m.payload["data"]["kind"] in incidents.KINDS]
        if moves:
            self._advance(site, device, moves)

    # --- incidents in the board's order ----------------------------------------------------------

    def _first_times(self, site: str, device: str) -> dict[str, str]:
        """Each of the device's lives (instances) by when the ledger first heard it, then by
        its earliest event time (lives first heard in one batch): never by the board's clock
        alone, which a re-flashed board without its time yet sets to 2000-01-01."""
        rows = self.x(
            "SELECT instance, MIN(ingested_at), MIN(time) FROM events WHERE site = ? "
            "AND device = ? AND instance IS NOT NULL GROUP BY instance",
            (site, device),
        ).fetchall()
        return {r[0]: r[1] + "|" + r[2] for r in rows}

    def _advance(self, site: str, device: str, moves: list[Message]) -> None:
        firsts = self._first_times(site, device)  # sees this batch's inserts: same transaction
        new = sorted((_event(m.payload, firsts) for m in moves), key=lambda t: t[0])
        cur = self.x(
            "SELECT cursor_first, cursor_instance, cursor_boot, cursor_seq FROM devices "
            "WHERE site = ? AND device = ?",
            (site, device),
        ).fetchone()
        cursor = None if cur[1] is None else incidents.OrderKey(cur[0], cur[1], cur[2], cur[3])
        in_order = cursor is None or (
            firsts.get(cursor.instance) == cursor.first_time and new[0][0] > cursor
        )
        if in_order:
            latest = self._latest_incident(site, device)
            events = [e for _, e in new]
        else:  # a late or reordered event: replay the device's whole history in order
            self.x("DELETE FROM incidents WHERE site = ? AND device = ?", (site, device))
            latest = None
            history = self._history(site, device, firsts)
            events = [e for _, e in sorted(history, key=lambda t: t[0])]
        fresh = {m.payload["id"] for m in moves}
        for inc in incidents.fold(latest, events, site, device):
            self._save_incident(inc)
            if self.incident_hooks and _needs_telling(inc, latest, fresh):
                for hook in self.incident_hooks:
                    hook(self, inc)
        top = events[-1].key  # in order, every new event sorts after the cursor
        self.x(
            "UPDATE devices SET cursor_first = ?, cursor_instance = ?, cursor_boot = ?, "
            "cursor_seq = ? WHERE site = ? AND device = ?",
            (top.first_time, top.instance, top.boot, top.seq, site, device),
        )

    def _history(self, site: str, device: str, firsts: dict[str, str]) -> list[tuple]:
        kinds = sorted(incidents.KINDS)
        rows = self.x(
            "SELECT id, kind, time, instance, boot, seq, detector, lel FROM events "
            "WHERE site = ? AND device = ? AND kind IN (%s)" % ",".join("?" * len(kinds)),
            (site, device, *kinds),
        ).fetchall()
        out = []
        for r in rows:
            key = incidents.OrderKey(firsts[r[3]], r[3], r[4], r[5])
            out.append((key, incidents.Event(r[0], r[1], r[2], key, r[6], r[7])))
        return out

    def _latest_incident(self, site: str, device: str) -> incidents.Incident | None:
        row = self.x(
            "SELECT %s FROM incidents WHERE site = ? AND device = ? ORDER BY ordinal DESC LIMIT 1"
            % ", ".join(INCIDENT_COLS),
            (site, device),
        ).fetchone()
        if row is None:
            return None
        r = dict(zip(INCIDENT_COLS, row, strict=True))
        r["detectors"] = json.loads(r["detectors"])
        r["alarming"] = json.loads(r["alarming"])
        return incidents.Incident(**r)

    def _save_incident(self, inc: incidents.Incident) -> None:
        r = inc.row()
        r["detectors"] = json.dumps(r["detectors"])
        r["alarming"] = json.dumps(r["alarming"])
        sets = ", ".join("%s = excluded.%s" % (c, c) for c in INCIDENT_COLS[4:])
        self.x(
            "INSERT INTO incidents (%s) VALUES (%s) ON CONFLICT (site, device, open_event) "
            "DO UPDATE SET %s"
            % (", ".join(INCIDENT_COLS), ",".join("?" * len(INCIDENT_COLS)), sets),
            [r[c] for c in INCIDENT_COLS],
        )

    # --- reading (tests, consoles) ---------------------------------------------------------------

    def rows(self, sql: str, params: Iterable[Any] = ()) -> list[dict[str, Any]]:
        cur = self.x(sql, params)
        names = [c[0] for c in cur.description]
        return [dict(zip(names, r, strict=True)) for r in cur.fetchall()]


def _needs_telling(inc: incidents.Incident, before: incidents.Incident | None,
                   fresh: set[str]) -> bool:  # fmt: skip
    """New since `before` (or raised to high) and nobody has acknowledged it; a rebuild's
    replayed incidents come here too: their notifications are keyed, so they are one. One
    opened and cleared in this batch (a gateway's backlog after an outage) is told too: nobody
    has heard of it, and its valve may be shut; a rebuild's old cleared ones are not."""
    if inc.acknowledged_at:
        return False
    new = before is None or before.open_event != inc.open_event or before.level != inc.level
    if inc.closed_at or inc.cleared_at:
        return new and inc.open_event in fresh
    return new


def _by_id(m: Message) -> str:
    return m.payload["id"]


def _event_key(m: Message) -> tuple[str, str, str]:
    """What makes an event one: an id is the board's (or gateway's) own, unique only under
    its site and device (the boundary checks it is made from that device's name)."""
    return (m.site, m.subject, m.payload["id"])


def _int(v: Any) -> int | None:
    return None if v is None else int(v)  # JSON Schema's integer admits 1.0


def _event_row(m: Message, at: str) -> tuple:
    p, d = m.payload, m.payload["data"]
    lel = d.get("lel")
    return (p["id"], m.site, m.subject, d["kind"], d.get("instance"), _int(d.get("boot")),
            _int(d.get("seq")), _int(d.get("detector")), None if lel is None else float(lel),
            p["time"], at, _text(m.text))  # fmt: skip


def _state_row(m: Message) -> tuple:
    """site, device, then the columns _states sets, last_seen last."""
    d = m.payload["data"]
    return (m.site, m.subject, int(d["online"]), m.payload["time"], d.get("instance"),
            _int(d.get("boot")), d.get("fw"), d.get("valve"), d.get("alarm"), m.payload["time"],
            d["last_seen"])  # fmt: skip


def _event(p: dict[str, Any], firsts: dict[str, str]) -> tuple[incidents.OrderKey, Any]:
    d = p["data"]
    key = incidents.OrderKey(firsts[d["instance"]], d["instance"], d["boot"], d["seq"])
    ev = incidents.Event(p["id"], d["kind"], p["time"], key, d.get("detector"), d.get("lel"))
    return key, ev


class SqliteStore(Store):
    def __init__(self, path: str) -> None:
        super().__init__()
        try:
            # autocommit: transactions are explicit, BEGIN IMMEDIATE takes the write lock first
            self.db = sqlite3.connect(path, isolation_level=None, timeout=30)
            self.db.execute("PRAGMA synchronous=FULL")  # a committed batch survives power loss
        except sqlite3.Error as e:
            raise StoreUnreachable("--db %s: %s" % (path, e)) from None

    def prepare(self, create: bool) -> None:
        super().prepare(create)
        # only once it is ours: WAL is a change to the file another program may not expect
        self.db.execute("PRAGMA journal_mode=WAL")

    def x(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.db.execute(sql, tuple(params))

    def xmany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        self.db.executemany(sql, [tuple(r) for r in rows])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.db.in_transaction:  # nested: a savepoint, as psycopg's nested transaction is
            self.db.execute("SAVEPOINT nested")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK TO nested")
                self.db.execute("RELEASE nested")
                raise
            self.db.execute("RELEASE nested")
            return
        self.db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.db.execute("ROLLBACK")
            raise
        self.db.execute("COMMIT")

    def table_names(self) -> set[str]:
        try:
            rows = self.db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            return {r[0] for r in rows if not r[0].startswith("sqlite_")}
        except sqlite3.DatabaseError as e:  # a file that is not SQLite at all
            raise NotOurDatabase("--db: %s" % e) from None

    def close(self) -> None:
        self.db.close()


class PostgresStore(Store):
    placeholder = "%s"

    def __init__(self, url: str) -> None:
        super().__init__()
        import psycopg

        self._psycopg = psycopg
        try:
            self.db = psycopg.connect(url, autocommit=True, connect_timeout=5)
        except psycopg.Error as e:
            raise StoreUnreachable("--db: %s" % str(e).strip().splitlines()[0]) from None

    def x(self, sql: str, params: Iterable[Any] = ()) -> Any:
        return self.db.execute(self._q(sql), tuple(params))  # prepared once used 5 times

    def in_list(self, values: list[str]) -> tuple[str, Any]:
        return "(SELECT unnest(?::text[]))", list(values)

    def xmany(self, sql: str, rows: Iterable[Iterable[Any]]) -> None:
        rows = [tuple(r) for r in rows]
        if rows:
            self.db.cursor().executemany(self._q(sql), rows)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.db.transaction():
            yield

    # the batch's rows as one array a column (unnest): a statement of a dozen parameters that
    # psycopg parses once and the server prepares once, where a multi-row VALUES of 2,400
    # parameters was parsed again by both at every batch (psycopg caches only short queries);
    # sent in binary: psycopg escapes each element of a text array with a regex (22 ms for a
    # batch's payloads, against 0.2 ms)

    def _columns(self, sql: str, rows: Iterable[tuple]) -> Any:
        cols = [list(c) for c in zip(*rows, strict=True)]
        return self.db.execute(sql.replace("?", "%b"), cols)  # %b: a parameter sent in binary

    def _insert_event_rows(self, rows: list[tuple]) -> set[str]:
        got = self._columns(
            "INSERT INTO events (%s) SELECT * FROM unnest(?::text[], ?::text[], ?::text[], "
            "?::text[], ?::text[], ?::bigint[], ?::bigint[], ?::integer[], ?::float8[], "
            "?::text[], ?::text[], ?::text[]) ON CONFLICT (site, device, id) DO NOTHING "
            "RETURNING site, device, id" % ", ".join(EVENT_COLS),
            rows,
        ).fetchall()
        return {(r[0], r[1], r[2]) for r in got}

    def _touch_rows(self, rows: list[tuple]) -> None:
        self._columns(
            "INSERT INTO devices AS d (site, device, last_seen, lost) SELECT * FROM "
            "unnest(?::text[], ?::text[], ?::text[], ?::bigint[]) " + TOUCH_CONFLICT,
            rows,
        )

    def _states(self, states: list[Message]) -> None:
        if not states:
            return
        self._columns(
            "UPDATE devices AS d SET online = s.online, online_time = s.online_time, "
            "instance = s.instance, boot = s.boot, fw = s.fw, valve = s.valve, alarm = s.alarm, "
            "state_time = s.state_time, last_seen = CASE WHEN d.last_seen IS NULL "
            "OR d.last_seen < s.last_seen THEN s.last_seen ELSE d.last_seen END "
            "FROM unnest(?::text[], ?::text[], ?::integer[], ?::text[], ?::text[], ?::bigint[], "
            "?::text[], ?::text[], ?::text[], ?::text[], ?::text[]) AS s(site, device, online, "
            "online_time, instance, boot, fw, valve, alarm, state_time, last_seen) "
            "WHERE d.site = s.site AND d.device = s.device",
            map(_state_row, states),
        )

    def table_names(self) -> set[str]:
        rows = self.db.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = current_schema()"
        ).fetchall()
        return {r[0] for r in rows}

    def close(self) -> None:
        self.db.close()
