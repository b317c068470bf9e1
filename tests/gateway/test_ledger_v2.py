"""The regulator's side takes the v2 schemas and ids (board instance in every id) and shows what
v2 added: events.lost, over-range alarms and readings a board sent that nobody can use."""

from __future__ import annotations

import sqlite3

from gasguard.protocol import cloudevents, messages
from gasguard.tools.ledger import Ledger, render
from gasguard.tools.regulator import Watcher

INST = "5f3a9c1e0b7d4a26"
T = 1764000000.0


def _ev(seq: int, kind: str, **kw) -> dict:
    body = messages.event(1, seq, kind, 60, **kw)
    return cloudevents.device_event("site-9", "kitchen-1", INST, body, T + seq)


def test_the_ledger_keeps_lost_events_and_flags_over_range_and_invalid_readings(tmp_path):
    lines: list[str] = []
    w = Watcher.__new__(Watcher)  # only its payload handling, no broker
    w.ledger, w.on_line, w.received, w.invalid, w.gateways = Ledger(), lines.append, 0, 0, {}
    topic = cloudevents.topic_events("site-9", "kitchen-1")
    import json

    for ev in (
        _ev(1, "alarm.high", det=0, lel=float("nan")),
        _ev(2, "alarm.high", det=0, lel=150.0, over=True),
        _ev(3, "events.lost", n=12),
        _ev(4, "events.lost", n=3),
    ):
        w.handle(topic, json.dumps(ev))
    assert w.invalid == 0, lines
    assert "READING INVALID (not a number)" in lines[0] and "OVER RANGE" in lines[1]
    assert "12 events lost on the board" in lines[2]
    (inc,) = w.ledger.incidents()
    assert inc["flags"] == "reading invalid: not a number, over range"
    assert inc["peak_lel"] == 150.0  # the NaN is flagged, never a peak
    table = render(w.ledger)
    assert "over range" in table
    (dev,) = w.ledger.devices()
    assert dev["lost"] == 15
    assert w.ledger.event_count() == 4
    ids = [r[0] for r in w.ledger.db.execute("SELECT id FROM events")]
    assert all(i.startswith("kitchen-1:%s:1:" % INST) for i in ids)


def test_a_ledger_from_before_v2_gets_the_new_columns(tmp_path):
    path = tmp_path / "old.sqlite"
    db = sqlite3.connect(path)
    db.executescript(
        "CREATE TABLE devices (site TEXT, device TEXT, online INTEGER, valve TEXT, alarm TEXT,"
        " last_seen TEXT, PRIMARY KEY (site, device));"
    )
    db.execute("INSERT INTO devices VALUES ('site-9','kitchen-1',1,'open','none','x')")
    db.commit()
    db.close()
    led = Ledger(path)
    assert led.devices()[0]["lost"] == 0
    led.add_event(_ev(1, "events.lost", n=2))
    assert led.devices()[0]["lost"] == 2
