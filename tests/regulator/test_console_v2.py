"""The regulator's side takes the v2 schemas and ids (board instance in every id) and shows what
v2 added: events.lost, over-range alarms and readings a board sent that nobody can use."""

from __future__ import annotations

import json

from gasguard.protocol import cloudevents, messages
from gasguard.regulator import boundary, console, views
from gasguard.regulator.store import open_store

INST = "5f3a9c1e0b7d4a26"
T = 1764000000.0


def _ev(seq: int, kind: str, **kw) -> tuple[str, bytes]:
    body = messages.event(1, seq, kind, 60, **kw)
    ev = cloudevents.device_event("site-9", "kitchen-1", INST, body, T + seq)
    return cloudevents.topic_events("site-9", "kitchen-1"), json.dumps(ev).encode()


def test_lost_events_over_range_and_invalid_readings_reach_the_store_and_are_said(db_url):
    store = open_store(db_url, create=True)
    store.write([boundary.check(*_ev(1, "alarm.high", det=0, lel=float("nan"))),
                 boundary.check(*_ev(2, "alarm.high", det=0, lel=150.0, over=True)),
                 boundary.check(*_ev(3, "events.lost", n=12)),
                 boundary.check(*_ev(4, "events.lost", n=3))])  # fmt: skip
    rows = store.rows("SELECT * FROM events ORDER BY seq")
    assert all(r["id"].startswith("kitchen-1:%s:1:" % INST) for r in rows) and len(rows) == 4
    lines = [console.event_line(r) for r in rows]
    assert "detector 1 READING INVALID (not a number)" in lines[0], lines
    assert "detector 1 150.0 %LEL OVER RANGE" in lines[1], lines
    assert "12 events lost on the board" in lines[2], lines
    snap = views.snapshot(store, views.Filters())
    assert snap["totals"]["lost_events"] == 15
    (inc,) = snap["incidents"]
    assert inc["peak_lel"] == 150.0  # the unusable reading is said, never a peak
    assert "None" not in console.render(snap)
    store.close()
