"""The store on real SQLite and PostgreSQL, without MQTT: whatever order and however often events
arrive, each is stored once and the incidents are those of the board's own order."""

from __future__ import annotations

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


def test_a_late_event_of_the_old_board_does_not_touch_the_new_incident(db_url):
    old = lifecycle(7, 40, inst=OLD, t0=1_760_000_000)
    new_alarm = board_event(SITE, DEV, "alarm.high", 1, 1, inst=NEW, lel=80.0, t=1_760_100_000)
    # the old board's whole life arrives after the new board's alarm
    store = store_in(db_url, [new_alarm] + old)
    assert incidents(store) == [(1, "high", "closed", True), (2, "high", "opened", False)]
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
