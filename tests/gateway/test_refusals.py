"""The bookkeeping behind refused topics (the whole gateway against mosquitto is in
test_broker_refusals.py): a held topic's rows wait in order while the others, alarms first, go;
the backoff between probes doubles, is capped and outlives a connection."""

from __future__ import annotations

import logging

from gasguard.gateway.fairqueue import FairQueue
from gasguard.gateway.outbox import ALARM, Outbox
from gasguard.gateway.refusals import Refusals

from .test_gateway_parts import _item


def test_a_held_topic_waits_in_order_while_the_others_go_alarms_first(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=8)
    ob.add([_item(i, "refused") for i in range(1, 4)] + [_item(1, "b"), _item(1, "c")])
    q.known(ob.newest())
    q.filled(ob.fetch_devices(q.wanted(), 8))
    first = q.take(1)
    assert [r.ce_id for r in first] == ["refused:1:1"]
    q.requeue(first[0])  # the broker refused it
    q.hold(first[0].topic)
    ob.add([_item(2, "c", priority=ALARM)])
    q.known(ob.newest())
    q.filled(ob.fetch_devices(q.wanted(), 8))
    assert [r.ce_id for r in q.take(10)] == ["b:1:1", "c:1:1", "c:1:2"]
    assert q.take(10) == []  # only the held device's rows are left
    q.probe(first[0].topic)
    assert [r.ce_id for r in q.take(10)] == ["refused:1:1"]  # one row, the oldest
    assert q.take(10) == []
    q.restart()  # a reconnect: the topic stays held
    q.filled(ob.fetch_devices(q.wanted(), 8))
    assert [r.ce_id for r in q.take(10)] == ["b:1:1", "c:1:1", "c:1:2"]
    q.release(first[0].topic)  # the probe went through
    assert [r.ce_id for r in q.take(10)] == ["refused:1:%d" % i for i in range(1, 4)]


def test_refusals_back_off_are_capped_survive_a_reconnect_and_log_once(caplog):
    now = [100.0]
    r = Refusals(clock=lambda: now[0], retry_s=1.0, retry_max_s=4.0)
    caplog.set_level(logging.INFO, "gasguard.gateway.mqtt")
    assert r.refused("t/a", "Not authorized", state=False) == 1.0
    assert r.refused("t/a", "Not authorized", state=False) is None  # was in flight: no new try
    assert r.held("t/a") and r.due() == []
    delays = []
    for _ in range(4):
        now[0] += 10
        assert r.due() == ["t/a"] and not r.held("t/a")
        delays.append(r.refused("t/a", "Not authorized", state=False))
    assert delays == [2.0, 4.0, 4.0, 4.0]
    now[0] += 10
    assert r.due() == ["t/a"]
    r.lost()  # the probe got no answer: it goes again on the next connection
    assert r.due() == ["t/a"]
    r.refused("t/s", "Not authorized", state=True)
    assert (r.events, r.states, sorted(r.spells)) == (6, 1, ["t/a", "t/s"])
    assert r.accepted("t/a") and not r.accepted("t/a") and sorted(r.spells) == ["t/s"]
    lines = [(x.levelname, x.msg, x.topic) for x in caplog.records]
    assert [(lv, t) for lv, _, t in lines] == [("ERROR", "t/a"), ("ERROR", "t/s"), ("INFO", "t/a")]
