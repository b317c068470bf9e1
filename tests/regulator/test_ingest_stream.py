"""`gasguard regulator ingest` against a real mosquitto and a real PostgreSQL or SQLite: what a
regulator would see in the ledger, whatever the stream throws at it."""

from __future__ import annotations

import json
import random
import re
import subprocess
import time

import pytest

from gasguard.protocol import cloudevents

from .conftest import INSTANCE, PostgresServer, Publisher, board_event, rows, wait_rows

KINDS = ["alarm.high", "valve.closed", "ack", "alarm.clear", "reset"]
NEW_INSTANCE = "00000000000000b2"


def site_events(devices: int) -> list[tuple[str, bytes]]:
    """Per device: one alarm handled to the end, then a second one still open (acknowledged)."""
    out = []
    for d in range(devices):
        dev = "kitchen-%d" % d
        for i, k in enumerate(KINDS + ["alarm.low", "ack"]):
            out.append(board_event("site-%d" % (d % 3), dev, k, 2, 10 + i, lel=30.0 + i))
    return out


def test_workers_share_the_stream_each_event_once_incidents_in_board_order(
    broker, db_url, ingests, publisher
):
    """3 workers; every event published twice, shuffled across the whole stream (so a device's
    events land on different workers, late ones after later ones)."""
    events = site_events(12)
    ing = ingests(broker.url, db_url, workers=3).start()
    stream = events * 2
    random.Random(7).shuffle(stream)
    publisher.send_many(stream)
    wait_rows(db_url, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] == len(events))
    got = wait_rows(
        db_url,
        "SELECT device, ordinal, level, stage FROM incidents ORDER BY device, ordinal",
        lambda r: (
            len(r) == 24
            and all(
                x["ordinal"] == 1
                and x["stage"] == "closed"
                or x["ordinal"] == 2
                and x["stage"] == "acknowledged"
                for x in r
            )
        ),  # fmt: skip
    )
    assert {(r["ordinal"], r["level"], r["stage"]) for r in got} == {
        (1, "high", "closed"),
        (2, "low", "acknowledged"),
    }
    time.sleep(0.5)  # anything still on its way would show as a third incident or a 2nd copy
    assert rows(db_url, "SELECT count(*) AS n FROM incidents")[0]["n"] == 24
    assert rows(db_url, "SELECT count(*) AS n FROM rejected")[0]["n"] == 0
    assert ing.stop() == 0
    stored = [int(n) for n in re.findall(r"worker \d: stored (\d+) events", ing.output())]
    assert sum(stored) == len(events)
    assert sum(1 for n in stored if n) >= 2, ing.output()  # the workers did share the stream


def test_many_incidents_on_few_devices_across_four_workers(broker, db_url, ingests, publisher):
    """Contention: 3 devices, 10 alarms each handled to the end, every event three times,
    shuffled over 4 workers: the workers keep taking events of the same device at once."""
    events = [
        board_event("site-1", "kitchen-%d" % d, k, 3, 100 + 10 * n + i)
        for d in range(3)
        for n in range(10)
        for i, k in enumerate(KINDS)
    ]
    ingests(broker.url, db_url, workers=4).start()
    stream = events * 3
    random.Random(11).shuffle(stream)
    publisher.send_many(stream)
    wait_rows(db_url, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] == len(events))
    got = wait_rows(
        db_url,
        "SELECT device, ordinal, stage FROM incidents ORDER BY device, ordinal",
        lambda r: len(r) == 30 and all(x["stage"] == "closed" for x in r),
    )
    assert [(r["device"], r["ordinal"]) for r in got] == [
        ("kitchen-%d" % d, n + 1) for d in range(3) for n in range(10)
    ]


def test_rogue_messages_land_in_rejected_with_their_reason_and_ingest_goes_on(
    broker, db_url, ingests, publisher
):
    ing = ingests(broker.url, db_url, workers=2).start()
    topic, raw = board_event("site-1", "kitchen-1", "alarm.high", 1, 5, lel=62.5)
    good = json.loads(raw)

    def variant(**change) -> bytes:
        ce = json.loads(raw)
        for k, v in change.items():
            (ce["data"] if k.startswith("data_") else ce)[k.removeprefix("data_")] = v
        return json.dumps(ce).encode()

    state = cloudevents.device_state(
        "site-1", "kitchen-1", {"online": True, "last_seen": 1_760_000_000}, 1_760_000_000
    )
    rogue = {
        "nested deeper": (topic, b"[" * 16_000 + b"]" * 16_000),
        "dataschema": (topic, variant(dataschema=[])),
        "schema:": (topic, json.dumps(state).encode()),  # a state payload on an events topic
        "not a real UTC date": (topic, variant(time="2025-02-30T10:00:00Z")),
        "time must match": (topic, variant(time="2025-13-45T99:99:99Z")),
        "data.device": (cloudevents.topic_events("site-1", "kitchen-666"), raw),
        "id:": (topic, variant(id="kitchen-1:%s:1:4" % INSTANCE)),
        "size:": (topic, b" " * 40_000),
        "not UTF-8": (topic, b"\xff\x00\xfe"),
    }
    for t, payload in rogue.values():
        publisher.send(t, payload)
    publisher.send(topic, raw)  # and then a good one: ingest is still there to take it
    wait_rows(db_url, "SELECT id FROM events", lambda r: [x["id"] for x in r] == [good["id"]])
    rejected = wait_rows(
        db_url, "SELECT reason FROM rejected", lambda r: len(r) == len(rogue), timeout=10
    )
    reasons = [r["reason"] for r in rejected]
    for why in rogue:
        assert any(why in r for r in reasons), (why, reasons)
    assert ing.running()
    # and a restart over the same store does not trip over what it holds
    assert ing.stop() == 0
    assert "%d rejected" % len(rogue) in ing.output() or "rejected" in ing.output()
    ing.start()
    publisher.send(*board_event("site-1", "kitchen-1", "ack", 1, 6))
    wait_rows(db_url, "SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == 2)


def test_a_rogue_retained_message_is_one_row_however_often_it_comes(
    broker, db_url, ingests, publisher
):
    """A retained message comes again at every subscribe: each restart counts it, once."""
    topic = cloudevents.topic_state("site-1", "kitchen-1")
    publisher.send(topic, b'{"specversion": "1.0", "dataschema": []}', retain=True)
    ing = ingests(broker.url, db_url)
    for times in (1, 2, 3):
        ing.start()
        q = "SELECT topic, times FROM rejected"
        wait_rows(db_url, q, lambda r, n=times: r == [{"topic": topic, "times": n}])
        assert ing.stop() == 0


def test_dead_letters_are_ingested(broker, db_url, ingests, publisher):
    ingests(broker.url, db_url).start()
    dl = cloudevents.rejected(
        "site-1",
        "gw-1",
        "kitchen-1",
        "body: bad kind",
        b"\xa1\x01\x02",
        1_760_000_000,
        "gw-1:dl:1",
    )
    topic = cloudevents.topic_rejected("site-1", "gw-1")
    publisher.send(topic, json.dumps(dl))
    publisher.send(topic, json.dumps(dl))  # a retry after a lost PUBACK
    got = wait_rows(db_url, "SELECT device, reason, body_hex FROM dead_letters", lambda r: r)
    assert got == [{"device": "kitchen-1", "reason": "body: bad kind", "body_hex": "a10102"}]


def test_a_gateways_last_will_shows_its_site_offline_at_once(broker, db_url, ingests, publisher):
    ingests(broker.url, db_url, workers=2).start()
    site, gw = "site-4", "gw-4"
    topic = cloudevents.topic_gateway_status(site, gw)
    now = time.time()
    # the gateway's will is made when it connects: its time is older than the "online" after it
    will = json.dumps(cloudevents.gateway_status(site, gw, False, now, "1.0"))
    online = json.dumps(cloudevents.gateway_status(site, gw, True, now + 1, "1.0", 3))
    gateway = subprocess.Popen(
        ["mosquitto_sub", "-p", str(broker.port), "-h", "127.0.0.1", "-t", "none", "-i", gw,
         "--will-topic", topic, "--will-payload", will, "--will-retain", "--will-qos", "1"],
    )  # fmt: skip
    try:
        time.sleep(0.5)
        publisher.send(topic, online, retain=True)
        q = "SELECT online, devices_online FROM gateways WHERE site = '%s'" % site
        wait_rows(db_url, q, lambda r: r == [{"online": 1, "devices_online": 3}])
        gateway.kill()  # the gateway dies: the broker publishes its will
        t0 = time.monotonic()
        wait_rows(db_url, q, lambda r: r and r[0]["online"] == 0, timeout=5)
        assert time.monotonic() - t0 < 3
    finally:
        gateway.kill()
        gateway.wait()


def test_retained_state_and_status_are_read_by_a_restarted_ingest(
    broker, db_url, ingests, publisher
):
    st = cloudevents.device_state(
        "site-1", "kitchen-1",
        {"online": True, "last_seen": 1_760_000_000, "valve": "closed", "alarm": "high"},
        1_760_000_000,
    )  # fmt: skip
    publisher.send(cloudevents.topic_state("site-1", "kitchen-1"), json.dumps(st), retain=True)
    ingests(broker.url, db_url, workers=2).start()
    got = wait_rows(db_url, "SELECT online, valve, alarm FROM devices", lambda r: r)
    assert got == [{"online": 1, "valve": "closed", "alarm": "high"}]


def test_a_board_reflashed_under_the_same_device_id(broker, db_url, ingests, publisher):
    ingests(broker.url, db_url, workers=2).start()
    old = [board_event("site-1", "kitchen-1", k, 9, 50 + i, t=1_760_000_000 + i)
           for i, k in enumerate(KINDS)]  # fmt: skip
    new = [board_event("site-1", "kitchen-1", k, 1, 1 + i, inst=NEW_INSTANCE,
                       t=1_760_500_000 + i) for i, k in enumerate(KINDS[:3])]  # fmt: skip
    publisher.send_many(old)
    wait_rows(db_url, "SELECT stage FROM incidents", lambda r: r == [{"stage": "closed"}])
    publisher.send_many(new + old[::-1])  # the new board's alarm, then the old life again
    got = wait_rows(
        db_url,
        "SELECT ordinal, stage, open_event FROM incidents ORDER BY ordinal",
        lambda r: len(r) == 2 and r[1]["stage"] == "acknowledged",
    )
    assert got[0]["stage"] == "closed"
    assert got[1]["open_event"] == "kitchen-1:%s:1:1" % NEW_INSTANCE
    assert rows(db_url, "SELECT count(*) AS n FROM events")[0]["n"] == 8


def test_nothing_is_lost_when_ingest_is_killed_mid_stream(broker, db_url, ingests):
    """kill -9 the ingest (every worker) while events flow; restarted, it has them all, once:
    what was not committed was not acknowledged, and the broker sends it again."""
    events = [
        board_event("site-1", "kitchen-%d" % (i % 50), "selftest", 1, i) for i in range(3000)
    ]
    ing = ingests(broker.url, db_url, workers=2).start()
    pub = Publisher(broker.port, "bulk-publisher")
    try:
        pub.send_many(events[:1500])
        wait_rows(db_url, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] > 100)
        ing.crash()
        pub.send_many(events[1500:])  # queued by the broker in the workers' sessions
    finally:
        pub.close()
    ing.start()
    wait_rows(
        db_url, "SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == len(events), timeout=60
    )


def test_nothing_is_lost_while_postgresql_is_down(broker, ingests):
    """The database crashes mid-stream and comes back: the workers hold their batches
    unacknowledged, retry, and every event is stored once."""
    server = PostgresServer().start()  # its own: this one is stopped under the ingest
    try:
        db = server.create_database("restarts")
        ing = ingests(broker.url, db, workers=2).start()
        events = [board_event("site-1", "kitchen-%d" % (i % 20), "selftest", 1, i)
                  for i in range(1000)]  # fmt: skip
        pub = Publisher(broker.port, "bulk-publisher")
        try:
            pub.send_many(events[:300])
            wait_rows(db, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] == 300)
            server.halt()
            pub.send_many(events[300:])
            time.sleep(2.0)  # the workers find the database gone and retry
            assert ing.running(), ing.output()
            server.start()
        finally:
            pub.close()
        wait_rows(
            db, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] == 1000, timeout=60
        )
        assert "retrying" in ing.output()
        ing.stop()
    finally:
        server.stop()


def test_two_ingests_in_different_groups_both_get_everything(broker, db_url, tmp_path, ingests,
                                                            publisher):  # fmt: skip
    other = str(tmp_path / "other.db")
    ingests(broker.url, db_url, "--group", "city").start()
    ingests(broker.url, other, "--group", "district").start()
    events = site_events(2)
    publisher.send_many(events)
    for db in (db_url, other):
        wait_rows(db, "SELECT count(*) AS n FROM events", lambda r: r and r[0]["n"] == len(events))


def test_a_second_ingest_with_the_same_client_ids_refuses_to_start(broker, tmp_path, ingests):
    """Two ingests with one group on one machine would share client ids and knock each other
    off the broker every second: the second one says so and leaves the first alone."""
    db = str(tmp_path / "r.db")
    first = ingests(broker.url, db, "--group", "g1").start()
    second = ingests(broker.url, db, "--group", "g1").start(wait=False)
    assert second.proc.wait(30) == 2
    assert "already runs on this machine" in second.output()
    # another machine (node) in the group is welcome: it gets its own client ids
    other = ingests(broker.url, db, "--group", "g1", "--node", "other-host", "--no-retained")
    other.start()
    assert "gasguard-ingest-g1-other-host-0 to $share/g1/" in other.output()
    assert "/state" not in other.output()  # the first machine's worker 0 reads retained ones
    time.sleep(1.0)
    assert first.running() and "ended" not in first.output()


@pytest.mark.parametrize(
    "broker_url, db, code, says",
    [
        ("mqtt://127.0.0.1:1", "{tmp}/r.db", 3, "broker unreachable"),
        ("{broker}", "postgresql://postgres@127.0.0.1:1/x", 3, "database unreachable"),
        ("http://127.0.0.1", "{tmp}/r.db", 2, "--broker"),
        ("{broker}", "mysql://x/y", 2, "--db"),
        ("mqtt://203.0.113.9", "{tmp}/r.db", 2, "plaintext"),
    ],
)
def test_exit_codes(broker, tmp_path, broker_url, db, code, says):
    import sys

    argv = [sys.executable, "-m", "gasguard.regulator", "ingest",
            "--broker", broker_url.format(broker=broker.url),
            "--db", db.format(tmp=tmp_path)]  # fmt: skip
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert proc.returncode == code, proc.stderr
    assert says in proc.stderr


def test_workers_stop_when_the_ingest_process_is_killed(broker, tmp_path, ingests):
    """kill -9 of the parent alone frees its lock on the client ids: its workers must not stay
    behind holding them."""
    import os
    import signal

    ing = ingests(broker.url, str(tmp_path / "r.db"), workers=2).start()
    os.kill(ing.proc.pid, signal.SIGKILL)
    ing.proc.wait()
    deadline = time.monotonic() + 10
    while ing.output().count("the ingest process is gone: stopping") < 2:
        assert time.monotonic() < deadline, ing.output()
        time.sleep(0.1)
    ingests(broker.url, str(tmp_path / "r.db"), workers=2).start()  # the ids are free again


def test_fewer_workers_than_last_time_lose_nothing(broker, tmp_path, ingests):
    """3 workers, stopped; events published meanwhile queue in all three sessions (mosquitto
    shares them out to offline sessions too); restarted with 1 worker, and on another database
    (which has no memory of the 3), the ingest asks the broker, drains the two dropped
    sessions and ends them."""
    ingests(broker.url, str(tmp_path / "before.db"), workers=3).start().stop()
    pub = Publisher(broker.port, "bulk-publisher")
    try:
        pub.send_many([board_event("site-1", "kitchen-1", "selftest", 1, i) for i in range(300)])
    finally:
        pub.close()
    db = str(tmp_path / "r.db")
    ing = ingests(broker.url, db, workers=1).start()
    wait_rows(db, "SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == 300, timeout=30)
    deadline = time.monotonic() + 15
    while "sessions of workers no longer run are drained" not in ing.output():
        assert time.monotonic() < deadline, ing.output()
        time.sleep(0.1)
    assert "draining gasguard-ingest-" in ing.output()
    # the dropped sessions are gone: new events all reach the one worker left
    pub = Publisher(broker.port, "bulk-publisher")
    try:
        pub.send_many([board_event("site-1", "kitchen-1", "selftest", 2, i) for i in range(100)])
    finally:
        pub.close()
    wait_rows(db, "SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == 400, timeout=30)


def test_a_renamed_node_is_named_at_start_and_drain_node_recovers_its_share(
    broker, tmp_path, ingests
):
    """The machine's name changed (the default node is the host name): the old node's two
    sessions keep getting half of every event. The new node's start names the old one, silent
    for an hour; --drain-node takes its sessions over, stores what they hold and ends them;
    a node heard a minute ago cannot be drained (it may be running)."""
    import datetime

    from gasguard.regulator.store import open_store

    db = str(tmp_path / "r.db")
    ingests(broker.url, db, "--node", "oldhost", workers=2).start().stop()
    pub = Publisher(broker.port, "bulk-publisher")
    try:
        pub.send_many([board_event("site-1", "kitchen-1", "selftest", 1, i) for i in range(40)])
    finally:
        pub.close()
    store = open_store(db)
    key = "ingest:gasguard-ingest:oldhost"
    assert json.loads(store.meta(key))["workers"] == 2
    refused = subprocess.run(
        ingests(broker.url, db, "--node", "newhost", "--drain-node", "oldhost").argv,
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert refused.returncode == 2 and "stop it first" in refused.stderr
    hour_ago = datetime.datetime.now(datetime.UTC) - datetime.timedelta(hours=1)
    store.set_meta(key, json.dumps({"workers": 2, "seen": hour_ago.isoformat()}))
    store.close()
    named = ingests(broker.url, db, "--node", "newhost").start()
    assert "node oldhost of group gasguard-ingest last ran" in named.output()
    assert "--drain-node oldhost" in named.output()
    named.stop()
    ing = ingests(broker.url, db, "--node", "newhost", "--drain-node", "oldhost").start()
    wait_rows(db, "SELECT count(*) AS n FROM events", lambda r: r[0]["n"] == 40, timeout=30)
    deadline = time.monotonic() + 15
    while "sessions of workers no longer run are drained" not in ing.output():
        assert time.monotonic() < deadline, ing.output()
        time.sleep(0.1)
    assert "draining gasguard-ingest-gasguard-ingest-oldhost-1" in ing.output()
    assert rows(db, "SELECT value FROM regulator_meta WHERE key = ?", (key,)) == []
