"""The gateway's parts on their own: config refusals, the SQLite outbox, health, the schemas."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections import deque
from pathlib import Path

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gasguard.gateway import config, identity, schemas
from gasguard.gateway.committer import Committer, _alarm_first
from gasguard.gateway.fairqueue import FairQueue
from gasguard.gateway.health import Health
from gasguard.gateway.mqttwire import coalesce
from gasguard.gateway.outbox import ALARM, ROUTINE, URGENT, Item, Outbox, OutboxWorker, Row
from gasguard.protocol import cloudevents, messages

SCHEMAS = Path(__file__).parents[2] / "protocol" / "schemas"

GOOD = """
[gateway]
site = "site-9"
id = "gw-1"
keys = "keys.toml"

[links.tcp]
port = 7700

[mqtt]
url = "mqtt://127.0.0.1:1883"
"""


def _write(tmp: Path, text: str, keys: str = '[keys]\nkitchen-1 = "%s"\n' % ("ab" * 16)) -> Path:
    (tmp / "keys.toml").write_text(keys)
    p = tmp / "gw.toml"
    p.write_text(text)
    return p


def test_a_good_config_loads_and_hides_its_secrets(tmp_path, monkeypatch):
    monkeypatch.setenv(config.PASSWORD_ENV, "s3cret-pw")
    cfg = config.load(_write(tmp_path, GOOD))
    assert cfg.keys == {"kitchen-1": b"\xab" * 16}
    assert cfg.mqtt.password == "s3cret-pw" and not cfg.mqtt.tls
    assert cfg.offline_after_s == 30
    text = repr(cfg)
    assert "s3cret-pw" not in text and "abab" not in text and "171" not in text


@pytest.mark.parametrize(
    "change,field,reason",
    [
        (('site = "site-9"', 'site = "site 9"'), "gateway.site", "must be 1-32"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://broker.example.cn"'), "mqtt.url",
         "plaintext MQTT"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "http://x"'), "mqtt.url", "must be mqtt://"),
        (("port = 7700", "port = 70000"), "links.tcp.port", "must be 0..65535"),
        (("[links.tcp]\nport = 7700", ""), "links", "no device link"),
        (('id = "gw-1"', 'id = "gw-1"\ncolour = "red"'), "gateway.colour", "unknown setting"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtts://b.example"\ncert_file = "nope.pem"'),
         "mqtt.cert_file", "no such file"),
        (('url = "mqtt://127.0.0.1:1883"', 'url = "mqtt://127.0.0.1:1883"\nstatus_every_s = 0.5'),
         "mqtt.status_every_s", "must be 1..3600"),
    ],
)  # fmt: skip
def test_bad_configs_are_refused_with_the_field_and_the_reason(tmp_path, change, field, reason):
    with pytest.raises(config.ConfigError) as e:
        config.load(_write(tmp_path, GOOD.replace(*change)))
    assert e.value.field == field
    assert reason in e.value.reason


def test_a_bad_key_is_refused_without_echoing_it(tmp_path):
    with pytest.raises(config.ConfigError) as e:
        config.load(_write(tmp_path, GOOD, '[keys]\nkitchen-1 = "zz%s"\n' % ("cd" * 15)))
    assert e.value.field == "keys.kitchen-1" and "cdcd" not in str(e.value)
    with pytest.raises(config.ConfigError, match="16..64 bytes"):
        config.load(_write(tmp_path, GOOD, '[keys]\nkitchen-1 = "abcd"\n'))


def _item(i: int, dev: str = "d1", priority: int = ROUTINE) -> Item:
    return Item("%s:1:%d" % (dev, i), dev, "t/%s" % dev, b"payload %d" % i, priority)


def _ce_ids(ob: Outbox) -> list[str]:
    """Everything in the outbox, device by device, each device's rows in order."""
    got = ob.fetch_devices(dict.fromkeys(ob.newest(), 0), 100)
    return [r.ce_id for dev in sorted(got) for r in got[dev]]


def test_outbox_keeps_order_dedups_and_survives_reopening(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    ids = ob.add([_item(1), _item(2), _item(1, "d2")])
    assert all(ids) and ids == sorted(ids)  # row ids in arrival order
    # a re-sent event is not queued twice, nor a copy within one batch; the new one gets its id
    again = ob.add([_item(2), _item(3), _item(3)])
    assert again[0] == 0 and again[1] > max(ids) and again[2] == 0
    assert _ce_ids(ob) == ["d1:1:1", "d1:1:2", "d1:1:3", "d2:1:1"]
    rows = ob.fetch_devices({"d1": 0, "d2": 0}, 10)
    assert [r.id for r in rows["d1"]] == [ids[0], ids[1], again[1]]
    ob.delete([rows["d1"][0].id, rows["d2"][0].id])
    ob.close()
    ob = Outbox(tmp_path / "o.sqlite")  # a restart
    assert _ce_ids(ob) == ["d1:1:2", "d1:1:3"]
    assert ob.depth() == 2
    assert ob.add([_item(1)]) == [0]  # published and deleted, still remembered as seen


def test_outbox_retention_drops_the_oldest_and_says_how_many(tmp_path):
    now = [1000.0]
    ob = Outbox(tmp_path / "o.sqlite", max_events=5, max_age_s=100, clock=lambda: now[0])
    ob.add([_item(i) for i in range(1, 4)])
    now[0] += 150  # these three are now too old
    ob.add([_item(i, "d2") for i in range(1, 8)])
    dropped = ob.enforce_retention()
    assert dropped == {"d1": 3, "d2": 2}
    assert _ce_ids(ob) == ["d2:1:%d" % i for i in range(3, 8)]


def _drain(q: FairQueue, ob: Outbox, per_take: int) -> list[str]:
    """What the publisher does: read what the queue wants, take, 'publish' and delete."""
    out = []
    while True:
        want = q.wanted()
        if want:
            q.filled(ob.fetch_devices(want, q.batch))
        rows = q.take(per_take)
        if not rows:
            return out
        out += [r.ce_id for r in rows]
        ob.delete([r.id for r in rows])


def test_fair_queue_puts_a_quiet_devices_alarm_ahead_of_a_backlog(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=4)
    ob.add([_item(i, "chatty") for i in range(1, 201)])
    q.known(ob.newest())
    q.filled(ob.fetch_devices(q.wanted(), 4))
    first = q.take(2)
    assert [r.ce_id for r in first] == ["chatty:1:1", "chatty:1:2"]
    ob.delete([r.id for r in first])
    ob.add([_item(1, "quiet", priority=ALARM)])
    q.known(ob.newest())
    out = _drain(q, ob, 2)
    # behind 198 rows in arrival order, it goes out with the very next publishes
    assert "quiet:1:1" in out[:2]
    assert [c for c in out if c.startswith("chatty")] == ["chatty:1:%d" % i for i in range(3, 201)]
    assert ob.depth() == 0


def test_fair_queue_gives_devices_turns_and_alarms_first(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=3)
    ob.add(
        [_item(i, "a") for i in range(1, 6)]
        + [_item(i, "b") for i in range(1, 6)]
        + [_item(1, "c"), _item(2, "c", priority=ALARM)]
    )
    q.known(ob.newest())
    out = _drain(q, ob, 4)
    # one each in turn (oldest first); c's next row is an alarm, so it goes first next time
    assert out[:6] == ["a:1:1", "b:1:1", "c:1:1", "a:1:2", "c:1:2", "b:1:2"]
    for dev, n in (("a", 5), ("b", 5), ("c", 2)):  # each device's own order holds
        assert [c for c in out if c.startswith(dev + ":")] == [
            "%s:1:%d" % (dev, i) for i in range(1, n + 1)
        ]
    # an alarm at the head of a device's rows goes before the turn order
    ob.add([_item(6, "a"), _item(7, "a"), _item(3, "c", priority=ALARM)])
    q.known(ob.newest())
    assert _drain(q, ob, 1)[0] == "c:1:3"


def test_fair_queue_reads_rows_left_from_before_a_restart_committed_during_its_scan(tmp_path):
    """A gateway restart: rows left in the outbox by the killed process, and a device's fresh
    commit that lands while the publisher's start-up scan of the outbox is running. The old
    rows must still go out, before the fresh one (CI caught them left behind once)."""
    ob = Outbox(tmp_path / "o.sqlite")
    ob.add([_item(i, "a") for i in range(1, 4)])  # left by the killed gateway
    q = FairQueue(batch=8)
    q.restart()  # the publisher connects
    scan = ob.newest()  # its start-up scan...
    ids = ob.add([_item(4, "a")])  # ...while a fresh commit lands and is handed over
    q.committed([Row(ids[0], "a:1:4", "a", "t", b"{}", 0.0, ROUTINE)])
    q.known(scan)
    assert _drain(q, ob, 2) == ["a:1:%d" % i for i in range(1, 5)]


def test_fair_queue_lets_alarms_past_a_full_window(tmp_path):
    """The publisher's window is full of routine rows: no more of those go, but alarms may
    still use the room it keeps for them (and only that)."""
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=8)
    ob.add(
        [_item(i, "busy") for i in range(1, 6)]
        + [_item(1, "a", priority=ALARM), _item(1, "b", priority=ALARM)]
        + [_item(2, "b", priority=ALARM), _item(1, "c")]
    )
    q.known(ob.newest())
    q.filled(ob.fetch_devices(q.wanted(), 8))
    assert q.take(0, 0) == []  # window full, the alarm room used up
    assert [r.ce_id for r in q.take(0, 2)] == ["a:1:1", "b:1:1"]  # alarms only
    assert [r.ce_id for r in q.take(-3, 1)] == ["b:1:2"]  # the window overfull: still alarms
    assert [r.ce_id for r in q.take(2, 5)] == ["busy:1:1", "c:1:1"]  # room again: in turn


def test_fair_queue_sends_an_urgent_row_past_a_flood_of_alarms(tmp_path):
    """Low alarms from every kitchen have used up the room kept for alarms: a valve closing
    (urgent) still goes, ahead of them, in the part of the room only urgent rows may use."""
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=8)
    ob.add(
        [_item(1, "a", priority=ALARM), _item(1, "b", priority=ALARM), _item(1, "busy")]
        + [_item(1, "valve", priority=URGENT), _item(2, "a", priority=ALARM)]
    )
    q.known(ob.newest())
    q.filled(ob.fetch_devices(q.wanted(), 8))
    assert [r.ce_id for r in q.take(0, 1, 2)] == ["valve:1:1"]  # first, and past the alarms
    assert [r.ce_id for r in q.take(0, 0, 1)] == []  # none urgent left: alarms wait
    assert [r.ce_id for r in q.take(0, 2, 2)] == ["a:1:1", "b:1:1"]
    assert [r.ce_id for r in q.take(5)] == ["a:1:2", "busy:1:1"]  # an alarm, then in turn


def test_fair_queue_sends_everything_again_after_a_reconnect(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    ob.add([_item(i, "a") for i in range(1, 4)] + [_item(i, "b") for i in range(1, 3)])
    q = FairQueue(batch=2)
    q.known(ob.newest())  # a gateway start: the rows left from before
    q.filled(ob.fetch_devices(q.wanted(), 2))
    sent = q.take(3)  # in flight when the connection drops: not PUBACKed, not deleted
    assert [r.ce_id for r in sent] == ["a:1:1", "b:1:1", "a:1:2"]
    q.restart()
    assert sorted(_drain(q, ob, 10)) == sorted(
        "%s:1:%d" % (d, i) for d, i in [("a", 1), ("a", 2), ("a", 3), ("b", 1), ("b", 2)]
    )


def test_fair_queue_hands_fresh_rows_over_and_reads_the_overflow_in_order(tmp_path):
    ob = Outbox(tmp_path / "o.sqlite")
    q = FairQueue(batch=2, cap=3)

    def commit(items):
        ids = ob.add(items)
        q.committed([Row(i, it.ce_id, it.device, it.topic, it.payload, 0.0, it.priority)
                     for it, i in zip(items, ids, strict=True) if i])  # fmt: skip

    commit([_item(i, "a") for i in range(1, 3)])
    assert q.wanted() == {}  # caught up: nothing to read back from the outbox
    assert [r.ce_id for r in q.take(1)] == ["a:1:1"]
    commit([_item(i, "a") for i in range(3, 9)])  # more than the buffer holds
    out = ["a:1:1"] + _drain(q, ob, 2)
    assert out == ["a:1:%d" % i for i in range(1, 9)]
    commit([_item(9, "a")])  # caught up again: straight to the buffer
    assert q.wanted() == {} and [r.ce_id for r in q.take(5)] == ["a:1:9"]


def _ev(dev: str, seq: int, priority: int = ROUTINE) -> Item:
    return Item("%s:1:%d" % (dev, seq), dev, "t/" + dev, b"{}", priority)


def test_an_alarm_is_committed_ahead_of_other_devices_earlier_events(tmp_path):
    """A commit is running (the writer thread is held); routine batches from two kitchens and
    then an alarm queue behind it. The alarm's device goes into the next commit on its own,
    with its own earlier event first, and is acknowledged before the others; then the rest."""

    async def scenario():
        worker = OutboxWorker(Outbox(tmp_path / "o.sqlite"))
        commits: list[list[tuple[int, str]]] = []
        acks: list[str] = []
        com = Committer(worker, lambda rows: commits.append([(r.id, r.ce_id) for r in rows]))
        task = asyncio.create_task(com.run())
        held, release = threading.Event(), threading.Event()
        worker.write_soon(lambda: (held.set(), release.wait(5)))
        await asyncio.to_thread(held.wait, 5)
        com.submit([_ev("k-1", 1)], lambda: acks.append("k-1:1"))
        com.submit([_ev("k-2", 1), _ev("k-2", 2)], lambda: acks.append("k-2:1-2"))
        com.submit([_ev("k-3", 1)], lambda: acks.append("k-3:1"))  # k-3 earlier event
        com.submit([_ev("k-2", 3)], lambda: acks.append("k-2:3"))
        com.submit([_ev("k-3", 2, priority=ALARM)], lambda: acks.append("k-3:2 alarm"))
        release.set()
        for _ in range(200):
            if len(acks) == 5:
                break
            await asyncio.sleep(0.01)
        com.finish()
        task.cancel()
        worker.close()
        return commits, acks

    commits, acks = asyncio.run(scenario())
    assert acks == ["k-3:1", "k-3:2 alarm", "k-1:1", "k-2:1-2", "k-2:3"]
    assert [c for _, c in commits[0]] == ["k-3:1:1", "k-3:1:2"]
    rest = [c for rows in commits[1:] for _, c in rows]
    assert rest == ["k-1:1:1", "k-2:1:1", "k-2:1:2", "k-2:1:3"]  # each device in its order
    ids = [i for rows in commits for i, _ in rows]
    assert ids == sorted(ids)  # row ids follow the commits


def test_an_urgent_event_is_committed_ahead_of_lesser_alarms(tmp_path):
    """Kitchen 1's low alarm and kitchen 2's routine event wait behind a running commit when
    kitchen 3's valve closes: the valve goes into the next commit on its own, then the low
    alarm, then the rest."""

    async def scenario():
        worker = OutboxWorker(Outbox(tmp_path / "o.sqlite"))
        commits: list[list[str]] = []
        com = Committer(worker, lambda rows: commits.append([r.ce_id for r in rows]))
        task = asyncio.create_task(com.run())
        held, release = threading.Event(), threading.Event()
        worker.write_soon(lambda: (held.set(), release.wait(5)))
        await asyncio.to_thread(held.wait, 5)
        com.submit([_ev("k-1", 1, ALARM)])
        com.submit([_ev("k-2", 1)])
        com.submit([_ev("k-3", 1, URGENT)])
        release.set()
        for _ in range(200):
            if sum(map(len, commits)) == 3:
                break
            await asyncio.sleep(0.01)
            com.finish()
        task.cancel()
        worker.close()
        return commits

    assert asyncio.run(scenario()) == [["k-3:1:1"], ["k-1:1:1"], ["k-2:1:1"]]


def test_an_alarm_takes_along_every_device_it_shares_a_batch_with():
    """A serial line's read may hold several devices: the alarm's batch takes the earlier
    batches of every device in it, transitively, so no device's events change order."""
    pending = [
        ([_ev("a", 1)], "a1"),
        ([_ev("b", 1)], "b1"),
        ([_ev("c", 1)], "c1"),
        ([_ev("b", 2), _ev("c", 2)], "b2c2"),  # one read, two devices
        ([_ev("d", 1)], "d1"),
        ([_ev("c", 3, priority=ALARM)], "c3"),
    ]
    take, keep = _alarm_first(pending, ALARM)
    assert [t for _, t in take] == ["b1", "c1", "b2c2", "c3"]
    assert [t for _, t in keep] == ["a1", "d1"]


def _pkt(command: int, qos: int, data: bytes, pos: int = 0) -> dict:
    return {"command": command, "mid": 1, "qos": qos, "pos": pos,
            "to_process": len(data) - pos, "packet": data, "info": None}  # fmt: skip


def test_queued_publishes_go_out_joined_in_order_around_anything_else():
    q = deque(
        [_pkt(0x32, 1, b"part", 2), _pkt(0x32, 1, b"A"), _pkt(0x33, 1, b"B"),
         _pkt(0xC0, 0, b"ping"), _pkt(0x32, 1, b"C"), _pkt(0x30, 0, b"qos0"),
         _pkt(0x32, 1, b"D"), _pkt(0x32, 1, b"E"), _pkt(0x32, 1, b"F")]
    )  # fmt: skip
    coalesce(q)
    # the same bytes in the same order; a packet partly written, a PINGREQ and a QoS 0
    # publish (paho reports it once written) are left alone
    assert [p["packet"] for p in q] == [b"part", b"AB", b"ping", b"C", b"qos0", b"DEF"]
    assert [(p["pos"], p["to_process"]) for p in q] == [(2, 2), (0, 2), (0, 4), (0, 1),
                                                        (0, 4), (0, 3)]  # fmt: skip
    assert q[1]["qos"] == 1 and q[1]["command"] & 0xF0 == 0x30


def test_the_gateway_identity_is_kept_apart_written_whole_and_begun_anew_when_damaged(tmp_path):
    first = identity.next_boot(tmp_path)
    again = identity.next_boot(tmp_path)
    assert (again.instance, again.boot) == (first.instance, 2)
    assert not list(tmp_path.glob("*.tmp"))  # written through a temporary file, renamed
    (tmp_path / identity.FILE).write_text('{"instance": "nonsense", "boot": -1}')
    fresh = identity.next_boot(tmp_path)
    assert fresh.boot == 1 and fresh.instance != first.instance
    assert (tmp_path / (identity.FILE + ".damaged")).exists()


def test_health_sessions_and_offline():
    now = [100.0]
    h = Health("site-9", offline_after_s=30, clock=lambda: now[0], monotonic=lambda: now[0])
    dets = [{"addr": 1, "gas": "methane", "profile": "generic-x10"}]
    birth = messages.birth("k1", "00000000000000aa", "0.1.0", "abcd", "wdt", "nc", dets)
    assert "session k1:00000000000000aa:4 began (reset cause wdt)" in h.birth("k1", 4, birth)
    assert h.birth("k1", 4, birth) is None  # a repeated birth is the same session
    loop = {"period_ms": 20, "mean_us": 1, "max_us": 2, "overruns": 0}
    hb = messages.heartbeat(5, "open", "none", loop, 60000, 0, [{"state": "ok", "errors": 0}])
    assert h.heartbeat("k1", hb) is True
    assert h.heartbeat("k1", hb) is False  # nothing a regulator watches changed
    now[0] += 31
    assert h.expire() == [("k1", "no frame for 31 s; session k1:00000000000000aa:4 ended")]
    assert h.expire() == []
    assert h.seen("k1") == "frames again (session k1:00000000000000aa:4)"
    ev = h.state_event("k1")
    jsonschema.Draft202012Validator(json.loads((SCHEMAS / "state.schema.json").read_text())
                                    ).validate(ev)  # fmt: skip
    assert ev["data"]["detectors"][0] == {"index": 0, "state": "ok", "errors": 0,
                                          "gas": "methane", "address": 1}  # fmt: skip


EVENT_REF = jsonschema.Draft202012Validator(
    json.loads((SCHEMAS / "event.schema.json").read_text())
)


@settings(max_examples=300, deadline=None)
@given(
    kind=st.sampled_from(messages.EVENT_KINDS),
    dev=st.from_regex(r"[A-Za-z0-9_.:-]{1,40}", fullmatch=True),
    lel=st.one_of(st.none(), st.floats(allow_nan=True, allow_infinity=True, width=32)),
    detail=st.one_of(st.none(), st.text(max_size=120)),
    seq=st.integers(0, 1 << 32),
)
def test_the_fast_validator_agrees_with_the_reference_one(kind, dev, lel, detail, seq):
    body = {"id": [1, seq], "kind": kind, "up": 5}
    if lel is not None:
        body["lel"] = lel
    if detail is not None:
        body["detail"] = detail
    try:
        ce = cloudevents.device_event("site-9", dev, "00000000000000aa", body, time.time())
    except (ValueError, OverflowError):
        return
    ref_ok = EVENT_REF.is_valid(json.loads(json.dumps(ce)))
    try:
        schemas.check(json.loads(json.dumps(ce)))
        fast_ok = True
    except schemas.SchemaError:
        fast_ok = False
    assert fast_ok == ref_ok


@pytest.mark.parametrize("dataschema", [[], {}, None, 7, "https://example.org/other"])
def test_a_payload_naming_no_known_schema_is_a_schema_error_not_a_crash(dataschema):
    # `"dataschema": []` once raised TypeError (unhashable) out of the regulator's console
    with pytest.raises(schemas.SchemaError, match="dataschema"):
        schemas.check({"dataschema": dataschema})


@pytest.mark.parametrize("kind", ["fifo", "device", "nested", "huge"])
def test_a_keys_file_that_is_no_small_regular_file_is_a_config_error_not_a_hang(tmp_path, kind):
    import os

    from gasguard.gateway import config as gwconfig

    keys = tmp_path / "keys.toml"
    if kind == "fifo":
        os.mkfifo(keys)  # nobody writes: reading it would wait for ever
    elif kind == "device":
        keys.symlink_to("/dev/zero")  # endless: reading it would exhaust memory
    elif kind == "nested":
        keys.write_text("a = " + "[" * 50000 + "]" * 50000)
    else:
        keys.write_bytes(b"#" * (gwconfig.MAX_FILE_BYTES + 1))
    with pytest.raises(gwconfig.ConfigError, match="gateway.keys"):
        gwconfig.load_keys(keys)
