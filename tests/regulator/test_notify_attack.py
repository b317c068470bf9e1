"""An outside attack on the notification core (issue 25): hostile notify.toml values, an alarm
that opens and clears in one batch, steps that tell nobody; SQLite and PostgreSQL (db_url)."""

from __future__ import annotations

import datetime
import time

import pytest

from gasguard.regulator import boundary
from gasguard.regulator.notify import config, escalate, outbox

from .conftest import board_event
from .notify_fixture import Receiver, Running, Server, Smtp, wait
from .test_notify import DEV, SITE, hooked, make_store, secrets, toml  # noqa: F401

URLS = {n: "http://127.0.0.1:9/" + n for n in ("wecom", "ding", "feishu", "sms", "forward")}


@pytest.mark.parametrize("after", ["99999999999999h", "999999999h", "600000m"])
def test_a_step_delay_beyond_any_city_is_refused_with_its_line(after):
    # 999999999h parsed, then `since + after` overflowed in every tick: no step of any
    # incident fired again; 99999999999999h crashed parse() with an OverflowError
    chain = ('[escalation.high]\nsteps = [{after = "0s", roles = ["owner"]}, '
             '{after = "%s", roles = ["street"]}]\n' % after)  # fmt: skip
    with pytest.raises(config.ConfigError, match=r"line \d+: .*after"):
        config.parse(toml(URLS, chain=chain))


def test_an_alarm_opened_and_cleared_in_one_batch_is_told(db_url):
    # a gateway back from an outage hands over alarm and clear together: the incident is
    # cleared when the ingest sees it, and nobody was ever told (the valve may be shut)
    cfg = config.parse(toml(URLS))
    store = hooked(make_store(db_url), cfg)
    store.write([boundary.check(*board_event(SITE, DEV, "alarm.high", 1, 1, lel=60)),
                 boundary.check(*board_event(SITE, DEV, "alarm.clear", 1, 2))])  # fmt: skip
    assert store.rows("SELECT cleared_at FROM incidents")[0]["cleared_at"]
    n = store.x("SELECT count(*) FROM notify_outbox WHERE kind = 'alarm'").fetchone()[0]
    assert n == 6  # step 0, as for an alarm still open; no escalation after it
    now = datetime.datetime.now(datetime.UTC) + datetime.timedelta(hours=1)
    assert escalate.tick(store, cfg, now) == 0
    # the same batch again (a replay) tells nobody twice
    store.write([boundary.check(*board_event(SITE, DEV, "alarm.high", 1, 1, lel=60))])
    assert outbox.counts(store)["pending"] == 6
    store.close()


def test_a_step_that_tells_nobody_is_counted_not_silent(db_url):
    # a unit at a node nobody at or above holds a contact for, its owner without a phone: its high
    # alarm's step 0 fired, told nobody, and only an audit row's empty list said so
    cfg = config.parse(toml(URLS))
    store = hooked(make_store(db_url), cfg)
    with store.transaction():
        store.x("UPDATE units SET node = '徐州市', phone = '' WHERE site = ?", (SITE,))
    store.write([boundary.check(*board_event(SITE, DEV, "alarm.high", 1, 1, lel=60))])
    assert store.rows("SELECT recipients FROM notify_steps") == [{"recipients": 0}]
    assert outbox.counts(store) == {"pending": 0, "sent": 0, "failed": 0, "untold": 1}
    told = store.rows("SELECT action FROM audit WHERE actor = 'notify'")
    assert [r["action"] for r in told] == ["notify.untold"]
    store.close()


def test_a_high_alarm_is_claimed_before_a_flood_of_low_ones_and_forwards(db_url):
    # 10,000 units' low alarms (and forwards, work orders) queued first: a high alarm's step 0
    # waited behind all of them, by due_at alone (a city-wide sensor fault is such a flood)
    store = make_store(db_url)
    t0 = datetime.datetime(2026, 11, 30, 8, tzinfo=datetime.UTC)
    body = {"title": "t", "text": "x"}

    def add(key, kind, at):
        outbox.enqueue(store, key=key, channel="sms", recipient="+86139", kind=kind,
                       subject=key, site=SITE, body=body, at=at)  # fmt: skip

    with store.transaction():
        for i in range(300):
            at = t0 + datetime.timedelta(milliseconds=i)
            add("incident:s%d/d1/e1:low:0:sms:+86139" % i, "alarm", at)
            add("forward:alarm:s%d/d1/e1:real:city" % i, "forward", at)
            add("workorder:%d:0:sms:+86139" % i, "workorder", at)
        add("incident:s9/d1/e9:high:1:sms:+86139", "escalation", t0 + datetime.timedelta(1))
        add("incident:s9/d1/e9:high:0:sms:+86139", "alarm", t0 + datetime.timedelta(seconds=2))
    now = t0 + datetime.timedelta(days=2)
    got = sorted(r["key"] for r in outbox.claim(store, now, 3, 60))  # one batch, sent at once
    assert got == [
        "incident:s0/d1/e1:low:0:sms:+86139",  # then alarms before the others
        "incident:s9/d1/e9:high:0:sms:+86139",
        "incident:s9/d1/e9:high:1:sms:+86139",
    ]
    got = {r["kind"] for r in outbox.claim(store, now, 299, 60)}
    assert got == {"alarm"}
    store.close()


def test_a_hanging_receiver_does_not_starve_a_live_one(tmp_path):
    # the grid robot hangs (a slow loris): every slot went to its queued messages, each held
    # to its timeout, while the owner's SMS, queued just behind, waited ten rounds of them
    db = str(tmp_path / "r.db")
    with Server(Receiver(mode="slow")) as dead, Server(Receiver()) as live:
        cfg = config.parse(
            toml({**URLS, "wecom": dead.url("/w"), "sms": live.url("/s")}).replace(
                "timeout_s = 2", "timeout_s = 1\nconcurrency = 4"
            )
        )
        store = make_store(db)
        t0 = datetime.datetime.now(datetime.UTC) - datetime.timedelta(seconds=10)
        with store.transaction():
            for i in range(40):
                outbox.enqueue(store, key="incident:s%d/d/e:low:0:wecom:" % i, channel="wecom",
                               recipient="wecom", kind="alarm", subject="x", site=SITE,
                               body={"title": "t", "text": "x"},
                               at=t0 + datetime.timedelta(milliseconds=i))  # fmt: skip
            outbox.enqueue(
                store,
                key="incident:s99/d/e:low:0:sms:+86139",
                channel="sms",
                recipient="+86139",
                kind="alarm",
                subject="x",
                site=SITE,
                body={"title": "t", "text": "x"},
                at=t0 + datetime.timedelta(seconds=1),
            )
        started = time.monotonic()
        with Running(db, cfg):
            wait(lambda: live.got, timeout=15)
            took = time.monotonic() - started
            dead.closing = True
        assert took < 3, took  # half the slots at most for one channel: the SMS goes at once
        store.close()


def test_a_clock_that_jumped_ahead_and_back_does_not_park_messages(tmp_path):
    # NTP steps the clock a year ahead and back: a retry decided meanwhile was due a year on,
    # and the owner's SMS stayed pending (not failed, not counted) for that year
    db = str(tmp_path / "r.db")
    jump = [datetime.timedelta(days=365)]

    def clock():
        return datetime.datetime.now(datetime.UTC) + jump[0]

    with Server(Receiver(mode="fail")) as sms:
        cfg = config.parse(toml({**URLS, "sms": sms.url("/s")}))
        store = make_store(db)
        with store.transaction():
            outbox.enqueue(store, key="incident:s1/d/e:high:0:sms:+86139", channel="sms",
                           recipient="+86139", kind="alarm", subject="x", site=SITE,
                           body={"title": "t", "text": "x"}, at=clock())  # fmt: skip
        with Running(db, cfg, clock=clock):
            wait(lambda: sms.got, timeout=10)  # tried at the jumped time, refused: a retry
            time.sleep(0.5)
            jump[0] = datetime.timedelta(0)  # the clock put right
            sms.mode = "ok"
            wait(lambda: outbox.counts(store)["sent"] == 1, timeout=10)
        store.close()


def test_a_contact_at_a_node_the_registry_lacks_is_said_at_start(db_url):
    # a typo in a contact's node ("彭城街" for "彭城街道") matched no unit: that street was never
    # told, and nothing said so while the grid and the owner were told beside it
    import asyncio

    from gasguard.regulator.notify.deliver import Deliverer
    from gasguard.regulator.store import open_store

    text = toml(URLS).replace(
        'node = "徐州市/云龙区/彭城街道"\n', 'node = "徐州市/云龙区/彭城街"\n'
    )
    cfg = config.parse(text)
    make_store(db_url).close()
    said: list[str] = []
    d = Deliverer(lambda: open_store(db_url), cfg, log=said.append, adapters={})

    async def briefly():
        stop = asyncio.Event()
        asyncio.get_running_loop().call_later(0.3, stop.set)
        await d.run(stop)

    asyncio.run(briefly())
    assert any("徐州市/云龙区/彭城街" in s and "not in the registry" in s for s in said), said
    assert not any("网格1" in s and "not in the registry" in s for s in said)


def test_a_unit_name_with_a_c1_line_break_still_mails(tmp_path):
    # the registry refuses C0 controls, not NEL (U+0085): in a unit's name it reached the
    # e-mail's Subject, which the mail library refuses to build, so every attempt failed
    # until the alarm's e-mail was given up
    db = str(tmp_path / "r.db")
    with Smtp() as (box, port):
        cfg = config.parse(toml(URLS, port))
        store = hooked(make_store(db, "老王饭店\x85Bcc: evil@example.com\x9b"), cfg)
        store.write([boundary.check(*board_event(SITE, DEV, "alarm.high", 1, 1, lel=60))])
        with Running(db, cfg):
            wait(lambda: box.got, timeout=10)
        to, mail = box.got[0]
        assert to == ["grid@example.gov.cn"]
        assert mail["Subject"] == "【燃气高报警】老王饭店 Bcc: evil@example.com"
        assert mail["Bcc"] is None
        store.close()


SLOW = '[channels.slow]\ntype = "sms"\nurl = "https://sms.example.cn"\ntimeout_s = 60\n'


@pytest.mark.parametrize("delivery, channel", [("lease_s = 1\ntimeout_s = 10", ""),
                                               ("lease_s = 12\ntimeout_s = 10", ""),
                                               ("lease_s = 30", SLOW)])  # fmt: skip
def test_a_lease_shorter_than_a_send_is_refused(delivery, channel):
    # lease_s = 1 with timeout_s = 10 validated: a send still waiting on its receiver was due
    # again after 1 s, claimed again (by this deliverer or another) and sent twice at once
    text = toml(URLS).replace("lease_s = 5\n", "").replace("timeout_s = 2\n", "")
    text = text.replace("[delivery]\n", "[delivery]\n" + delivery + "\n", 1) + channel
    with pytest.raises(config.ConfigError, match=r"line \d+: .*lease_s"):
        config.parse(text)


def test_concurrent_republishes_share_one_mqtt_connection(broker):
    # a flood's first forwards reached the bridge adapter together: each saw no connection,
    # each made one, and all but the last were left open at the city's broker for ever
    import asyncio

    from gasguard.regulator.notify.channels import Outgoing, mqtt

    text = toml(URLS) + (f'[channels.bridge]\ntype = "mqtt"\nurl = "mqtt://127.0.0.1:'
                         f'{broker.port}"\ntopic = "city/alarms"\n')  # fmt: skip
    a = mqtt.Republish(config.parse(text).channels["bridge"])
    made = []
    connect = a._connect

    async def counted():
        made.append(1)
        return await connect()

    a._connect = counted

    async def flood():
        msgs = [Outgoing("k%d" % i, "m%d" % i, "bridge", "bridge", "forward", SITE,
                         {"payload": {"n": i}}, 1) for i in range(12)]  # fmt: skip
        try:
            return await asyncio.gather(*(a.send(m) for m in msgs))
        finally:
            await a.close()

    assert asyncio.run(flood()) == ["mqtt ok"] * 12
    assert len(made) == 1
