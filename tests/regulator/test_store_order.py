"""The store on real SQLite and PostgreSQL, without MQTT: whatever order and however often events
arrive, each is stored once and the incidents are those of the board's own order."""

from __future__ import annotations

import hashlib
import json
import random
import sqlite3

import pytest

from gasguard.regulator import boundary
from gasguard.regulator.store import NotOurDatabase, open_store

from .conftest import board_event

SITE, DEV = "site-1", "kitchen-1"
OLD, NEW = "00000000000000a1", "00000000000000b2"


def lifecycle(boot: int, first: int, inst: str = OLD, t0: int | None = None) -> list:
    """An alarm the site handled: high alarm, valve closed, acknowledged, clear, valve reset."""
    kinds = ["alarm.high", "valve.closed", "ack", "alarm.clear", "reset"]
    return [
        board_event(SITE, DEV, k, boot, first + i, inst=inst, lel=62.5 if i == 0 else None,
                    t=None if t0 is None else t0 + i)
        for i, k in enumerate(kinds)
    ]  # fmt: skip


def store_in(db: str, events: list, batch: int = 1):
    store = open_store(db, create=True)
    msgs = [boundary.check(t, raw) for t, raw in events]
    for i in range(0, len(msgs), batch):
        store.write(msgs[i : i + batch])
    return store


def incidents(store) -> list[tuple]:
    return [
        (r["ordinal"], r["level"], r["stage"], r["valve_closed_at"] is not None)
        for r in store.rows("SELECT * FROM incidents ORDER BY ordinal")
    ]


def test_in_order_an_alarm_goes_from_opened_to_closed(db_url):
    store = store_in(db_url, lifecycle(1, 1))
    assert incidents(store) == [(1, "high", "closed", True)]
    store.close()


@pytest.mark.parametrize("seed", range(4))
def test_any_arrival_order_twice_over_gives_the_boards_order(db_url, seed):
    """Two alarms one after the other; every event sent twice, shuffled, in batches of 3."""
    events = lifecycle(1, 1) + lifecycle(1, 10)
    shuffled = events * 2
    random.Random(seed).shuffle(shuffled)
    store = store_in(db_url, shuffled, batch=3)
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == len(events)
    assert incidents(store) == [(1, "high", "closed", True), (2, "high", "closed", True)]
    store.close()


def test_a_late_earlier_alarm_does_not_reopen_a_closed_incident(db_url):
    events = lifecycle(1, 1)
    # the alarm arrives last (a gateway's outbox drained late): in arrival order it would open
    # a second incident that nobody will ever close
    store = store_in(db_url, events[1:] + events[:1])
    assert incidents(store) == [(1, "high", "closed", True)]
    store.close()


def test_a_late_valve_closed_is_not_lost(db_url):
    alarm, valve, ack, clear, reset = lifecycle(1, 1)
    store = store_in(db_url, [alarm, ack, clear, reset, valve])
    # in arrival order the clear would have closed it with no valve closure on record
    rows = store.rows("SELECT stage, valve_closed_at, reset_at FROM incidents")
    assert [(r["stage"], r["valve_closed_at"] is not None, r["reset_at"] is not None)
            for r in rows] == [("closed", True, True)]  # fmt: skip
    store.close()


def test_a_board_reflashed_under_the_same_id_starts_a_new_life(db_url):
    """The old board reached boot 7; the re-flashed one starts again at boot 1 with a new
    instance id. Its alarm must open an incident, not sort before the old board's reset."""
    old = lifecycle(7, 40, inst=OLD, t0=1_760_000_000)
    new_alarm = board_event(SITE, DEV, "alarm.high", 1, 1, inst=NEW, lel=80.0, t=1_760_100_000)
    late_old = old[-1:]  # and the old board's reset arrives again, late, after the new alarm
    store = store_in(db_url, old + [new_alarm] + late_old)
    assert incidents(store) == [(1, "high", "closed", True), (2, "high", "opened", False)]
    # boot 1, seq 1 of the new board is a different event from boot 1, seq 1 of the old one
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == 6
    store.close()


def test_the_old_boards_history_arriving_late_never_touches_the_new_boards_alarm(db_url):
    """A replaced board's whole life arrives after the new board's alarm (its gateway's outbox
    drained late), the old board's reset included: the new alarm stays open."""
    old = lifecycle(7, 40, inst=OLD, t0=1_760_000_000)
    new_alarm = board_event(SITE, DEV, "alarm.high", 1, 1, inst=NEW, lel=80.0, t=1_760_100_000)
    store = store_in(db_url, [new_alarm] + old)
    got = {r["instance"]: (r["stage"], r["valve_closed_at"] is not None)
           for r in store.rows("SELECT * FROM incidents")}  # fmt: skip
    assert got == {NEW: ("opened", False), OLD: ("closed", True)}
    store.close()


@pytest.mark.parametrize("batch", [1, 3])
def test_a_reflashed_board_whose_clock_says_2000_keeps_its_new_alarm_open(db_url, batch):
    """The old board's alarm was handled; it is re-flashed (a new instance) and alarms before
    it has the time (its clock at 2000-01-01): by the clock its alarm would sort before the old
    board's reset, which would close it. Lives go in the order the ledger first heard them."""
    old = lifecycle(7, 40, inst=OLD, t0=1_760_000_000)
    y2000 = 946_684_800
    new = [board_event(SITE, DEV, "alarm.high", 1, 1, inst=NEW, lel=80.0, t=y2000),
           board_event(SITE, DEV, "valve.closed", 1, 2, inst=NEW, t=y2000 + 1)]  # fmt: skip
    store = store_in(db_url, old, batch=batch)
    for event in new:
        store.write([boundary.check(*event)])
    got = [(r["instance"], r["ordinal"], r["stage"], r["valve_closed_at"] is not None)
           for r in store.rows("SELECT * FROM incidents ORDER BY ordinal")]  # fmt: skip
    assert got == [(OLD, 1, "closed", True), (NEW, 2, "opened", True)]
    # and the old board's events again (a gateway's retry) change nothing
    store.write([boundary.check(*e) for e in old])
    assert [r["stage"] for r in store.rows("SELECT * FROM incidents ORDER BY ordinal")] == [
        "closed", "opened"]  # fmt: skip
    store.close()


def test_ingest_refuses_a_database_that_is_not_a_regulator_one(tmp_path):
    path = tmp_path / "other.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE invoices (n INTEGER)")
    db.commit()
    db.close()
    with pytest.raises(NotOurDatabase, match="invoices"):
        open_store(str(path), create=True)
    db = sqlite3.connect(path)
    tables = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"invoices"}  # nothing created in it


def test_a_nul_in_a_string_the_schema_admits_is_stored(db_url):
    """PostgreSQL text cannot hold NUL, neither database a lone surrogate; JSON can carry both
    ("\\u0000", "\\ud800"), so a publisher can send them."""
    import json

    from gasguard.protocol import cloudevents

    topic, raw = board_event(SITE, DEV, "selftest", 1, 1)
    ce = json.loads(raw)
    ce["data"]["detail"] = "bad\u0000detail"
    dl = cloudevents.rejected(
        SITE, "gw-1", DEV, "why\u0000not\ud800", b"\x00", 1_760_000_000, "gw-1:1"
    )
    store = store_in(
        db_url,
        [(topic, json.dumps(ce).encode()),
         (cloudevents.topic_rejected(SITE, "gw-1"), json.dumps(dl).encode())],
    )  # fmt: skip
    assert store.rows("SELECT count(*) AS n FROM events")[0]["n"] == 1
    assert store.rows("SELECT reason FROM dead_letters")[0]["reason"] == "why\\0not?"
    store.close()


def test_another_sites_event_with_the_same_id_does_not_shadow_the_real_alarm(db_url):
    """Ids are the board's own (device:instance:boot:seq) and a device name is only unique
    within its site: a publisher on another site (a board named alike, or a forger who read the
    id off a screen) sends that id first; the real board's alarm must still open its incident,
    and its hazard be its own."""
    from gasguard.regulator import hazards

    forged = board_event("site-9", DEV, "selftest", 1, 1, inst=OLD)
    real = board_event(SITE, DEV, "alarm.high", 1, 1, inst=OLD, lel=70.0)
    other = board_event("site-9", DEV, "alarm.high", 1, 2, inst=OLD, lel=30.0)
    store = store_in(db_url, [forged, real, other, real])
    got = {(r["site"], r["kind"]) for r in store.rows("SELECT site, kind FROM events")}
    assert got == {("site-9", "selftest"), (SITE, "alarm.high"), ("site-9", "alarm.high")}
    opened = {r["site"]: r["peak_lel"] for r in store.rows("SELECT * FROM incidents")}
    assert opened == {SITE: 70.0, "site-9": 30.0}
    hazards.sync(store, "2026-11-30T00:00:00.000Z")
    assert sorted(r["site"] for r in store.rows("SELECT site FROM hazards")) == [SITE, "site-9"]
    store.close()


def test_endless_distinct_junk_is_counted_once_the_rejected_table_is_full(db_url, monkeypatch):
    """A publisher sending ever-new junk must not fill the disk: past the cap, a message not
    seen before only counts in one overflow row; one seen before still counts in its own."""
    from gasguard.regulator import store as store_mod

    monkeypatch.setattr(store_mod, "REJECTED_ROWS", 5)
    store = open_store(db_url, create=True)
    junk = [store_mod.Rejection("gasguard/v1/s/d/events", "json: junk", b"junk %d" % i)
            for i in range(12)]  # fmt: skip
    store.write(junk[:8])  # one batch past the cap: the cap holds within it too
    assert store.rows("SELECT count(*) AS n FROM rejected")[0]["n"] == 6
    store.write(junk[8:] + junk[:1])
    got = {r["topic"]: r for r in store.rows("SELECT * FROM rejected WHERE topic = '(overflow)'")}
    assert store.rows("SELECT count(*) AS n FROM rejected")[0]["n"] == 6
    assert got["(overflow)"]["times"] == 7 and "counted here" in got["(overflow)"]["reason"]
    first = hashlib.sha256(b"junk 0").hexdigest()[:32]
    assert store.rows("SELECT times FROM rejected WHERE digest = ?", (first,))[0]["times"] == 2
    store.close()


def test_a_forged_huge_lost_count_saturates_and_stays_an_integer(db_url):
    from gasguard.regulator.store import LOST_MAX

    events = []
    for seq, n in enumerate([2**62, 2**62, 10**30, 3], start=1):
        topic, raw = board_event(SITE, DEV, "events.lost", 1, seq)
        ce = json.loads(raw)
        ce["data"]["count"] = n
        events.append((topic, json.dumps(ce).encode()))
    store = store_in(db_url, events, batch=2)
    (row,) = store.rows("SELECT lost, typeof(lost) AS t FROM devices"
                        if "sqlite" in type(store).__name__.lower()
                        else "SELECT lost, 'integer' AS t FROM devices")  # fmt: skip
    assert (row["lost"], row["t"]) == (LOST_MAX, "integer")
    assert store.rows("SELECT count(*) AS n FROM events WHERE kind = 'events.lost'")[0]["n"] == 4
    store.close()


def test_every_reader_leaves_a_foreign_sqlite_file_byte_for_byte_as_it_was(tmp_path):
    """The console, the web console and the ledger commands open a --db a person typed: a
    wrong path to another program's SQLite file must not be switched to WAL or touched."""
    from gasguard.regulator import views
    from gasguard.regulator.opening import open_ledger

    path = tmp_path / "shop.db"
    db = sqlite3.connect(path)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    db.commit()
    db.close()
    before = path.read_bytes()
    for opener in (views.open_reader, open_ledger, open_store):
        with pytest.raises(NotOurDatabase):
            opener(str(path))
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no -wal, no -shm


def _made(path, *statements: str) -> bytes:
    db = sqlite3.connect(path)
    for sql in statements:
        db.execute(sql)
    db.commit()
    db.close()
    return path.read_bytes()


META = "CREATE TABLE regulator_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)"


@pytest.mark.parametrize("statements, says", [
    ([META, "INSERT INTO regulator_meta VALUES ('schema', 'gasguard-regulator 1')",
      "CREATE TABLE events (id TEXT PRIMARY KEY)"], "schema 'gasguard-regulator 1'"),
    ([META, "INSERT INTO regulator_meta VALUES ('schema', 'gasguard-regulator 2')",
      "CREATE TABLE events (id TEXT PRIMARY KEY)"], "schema 'gasguard-regulator 2'"),
    ([META, "CREATE TABLE payroll (name TEXT, pay INTEGER)"], "no regulator schema mark"),
    (["CREATE TABLE regulator_meta (key TEXT, value TEXT)", "CREATE TABLE payroll (n TEXT)"],
     "no regulator schema mark"),
    (["CREATE TABLE regulator_meta (k INTEGER)"], "no regulator schema mark"),
])  # fmt: skip
def test_the_ingest_and_import_refuse_an_older_half_made_or_foreign_database_untouched(
    tmp_path, statements, says
):
    """Opening to create (the ingest, the registry import) makes tables only in an empty
    database: an older schema's, one missing tables or one that merely has a table named
    regulator_meta is refused before anything is written, and stays byte for byte."""
    import subprocess
    import sys

    path = tmp_path / "x.db"
    before = _made(path, *statements)
    with pytest.raises(NotOurDatabase, match=says):
        open_store(str(path), create=True)
    from .test_registry import GOOD, ZH, write_csv

    units = write_csv(tmp_path / "units.csv", ZH, GOOD)
    for argv in (["ingest", "--broker", "mqtt://127.0.0.1:1", "--db", str(path)],
                 ["import", "--db", str(path), str(units)]):  # fmt: skip
        got = subprocess.run([sys.executable, "-m", "gasguard.regulator", *argv],
                             capture_output=True, text=True, timeout=60)  # fmt: skip
        assert got.returncode == 2 and says in got.stderr and "Traceback" not in got.stderr
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["units.csv", "x.db"]


def test_a_late_event_that_merges_two_incidents_flags_the_hazard_left_without_one(db_url):
    """alarm (low) → clear: closed, no valve; alarm (high): a second incident, and hazards for
    both. Then the valve.closed between them arrives late: the valve had closed, so the first
    incident never closed and the second alarm joined it. The second hazard's incident is gone:
    sync says so in its summary (once, audited), for whoever closes it as a duplicate."""
    from gasguard.regulator import audit, hazards

    ev = [board_event(SITE, DEV, k, 1, seq, lel=lel) for k, seq, lel in
          [("alarm.low", 10, 20.0), ("alarm.clear", 20, None), ("alarm.high", 30, 60.0)]]
    store = store_in(db_url, ev)
    assert [r["stage"] for r in store.rows("SELECT * FROM incidents ORDER BY ordinal")] == [
        "closed", "opened"]  # fmt: skip
    first, second = hazards.sync(store, "2026-11-30T00:00:00.000Z")
    store.write([boundary.check(*board_event(SITE, DEV, "valve.closed", 1, 15))])
    (merged,) = store.rows("SELECT * FROM incidents")
    assert (merged["level"], merged["stage"]) == ("high", "opened")
    for _ in range(2):
        hazards.sync(store, "2026-11-30T00:01:00.000Z")
    assert hazards.get(store, second)["summary"].endswith(hazards.ORPHAN_NOTE)
    assert not hazards.get(store, first)["summary"].endswith(hazards.ORPHAN_NOTE)
    assert hazards.get(store, first)["severity"] == "high"  # its incident turned high
    flagged = [e for e in audit.entries(store) if e["action"] == "hazard.orphaned"]
    assert [e["target"] for e in flagged] == ["hazard:%d" % second]
    store.close()


def test_a_whole_schema_2_ledger_gains_the_tables_of_schema_3_and_keeps_its_events(tmp_path):
    """Schema 3 only added tables (alarm to action, commissioning records): a schema-2 ledger
    with every table of its own opens, gains them, is marked 3 and keeps what it held."""
    from gasguard.regulator import store as store_mod

    path = str(tmp_path / "two.db")
    s = store_in(path, [board_event(SITE, DEV, "alarm.high", 1, 10, lel=60.0)])
    s.close()
    db = sqlite3.connect(path)
    for name in sorted(store_mod.NEW_IN_3):
        db.execute("DROP TABLE %s" % name)
    db.execute("UPDATE regulator_meta SET value = 'gasguard-regulator 2'")
    db.commit()
    db.close()
    s = open_store(path)
    try:
        assert s.meta("schema") == store_mod.SCHEMA_MARK == "gasguard-regulator 3"
        assert store_mod.NEW_IN_3 <= s.table_names()
        assert s.x("SELECT COUNT(*) FROM events").fetchone()[0] == 1
    finally:
        s.close()
