"""A broker that refuses one board's topics (an MQTT 5 ACL) must not hold up the other boards.

mosquitto 2.0 with tools/sim/brokers.py's max_queued_messages 0 answers a refused QoS 1 publish
with PUBACK 0x87 and then closes the connection: every try of a refused row costs a reconnect. Real
mosquitto, the real gateway process."""

from __future__ import annotations

import asyncio
import getpass
import json
import signal

import aiomqtt

from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.syndevice import SynDevice, run_tcp

from .conftest import KEYS, Collector, until

EVERYTHING = "topic readwrite gasguard/v1/#\n"
K1_EVENTS = "gasguard/v1/site-9/kitchen-1/events"
K1_STATE = "gasguard/v1/site-9/kitchen-1/state"


def acl_broker(tmp_path, rules: str) -> tuple[Mosquitto, object]:
    acl = tmp_path / "acl"
    acl.write_text(rules + "topic readwrite gasguard/v1/+/gateway/#\ntopic read gasguard/v1/#\n")
    # run as whoever runs the test (as root mosquitto would drop to a user that cannot read it)
    conf = "allow_anonymous true\nacl_file %s\nuser %s\n" % (acl, getpass.getuser())
    return Mosquitto(extra_conf=conf), acl


def log_lines(gw, text: str) -> list[dict]:
    return [json.loads(x) for x in gw.log_path.read_text().splitlines() if text in x]


def high(col: Collector, dev: str) -> int:
    return sum(p["type"] == "gasguard.alarm.high" for p in col.events(dev))


def test_a_board_the_broker_refuses_does_not_hold_up_another_boards_alarms(gateways, tmp_path):
    """The attack report: with kitchen-1's topics refused, the gateway sent kitchen-1's oldest
    row (or its retained state) first on every reconnect, the broker closed, and none of
    kitchen-2's alarms got through; the refused state was neither counted nor logged."""
    broker, acl = acl_broker(tmp_path, "topic readwrite gasguard/v1/site-9/kitchen-2/#\n")
    with broker:
        gw = gateways.start(gateways.config(broker, protocol="5"))
        d1 = SynDevice("kitchen-1", KEYS["kitchen-1"])
        d2 = SynDevice("kitchen-2", KEYS["kitchen-2"])

        async def scenario():
            async with Collector(broker.port, aiomqtt.ProtocolVersion.V5) as col:
                await run_tcp(d1, "127.0.0.1", gw.tcp_port, 3, kinds=("alarm.low",))
                await run_tcp(d2, "127.0.0.1", gw.tcp_port, 5, kinds=("alarm.high",))
                first = await until(lambda: high(col, "kitchen-2") >= 5, 5)
                await asyncio.sleep(5)  # kitchen-1 is tried again meanwhile (reconnects)
                await run_tcp(d2, "127.0.0.1", gw.tcp_port, 3, kinds=("alarm.high",))
                later = await until(lambda: high(col, "kitchen-2") >= 8, 5)
                # and they left the outbox, counted as published (not sent again and again)
                await until(lambda: gw.status()["events"]["published"] >= 8, 5)
                during = gw.status()
                k1_during = col.events("kitchen-1")
                acl.write_text(EVERYTHING)  # the operator mends the ACL
                broker.proc.send_signal(signal.SIGHUP)
                mended = await until(
                    lambda: (
                        sum(p["type"] == "gasguard.alarm.low" for p in col.events("kitchen-1"))
                        >= 3
                    ),
                    40,
                )
                # the user-visible end: nothing waits, everything counted as published
                drained = await until(lambda: gw.status()["outbox"]["depth"] == 0, 10)
                # the state's own probe comes on its own backoff
                await until(lambda: len(log_lines(gw, '"broker accepts')) >= 2, 40)
                return first, later, during, k1_during, mended, drained

        first, later, during, k1_during, mended, drained = asyncio.run(scenario())
    assert first, "kitchen-2's alarms did not get past kitchen-1's refused topics"
    assert later, "kitchen-2's later alarms were held up after reconnects"
    assert k1_during == []
    ev = during["events"]
    assert ev["published"] >= 8
    assert ev["refused"] >= 2  # tried again, not given up
    assert during["outbox"]["depth"] >= 3  # kitchen-1's rows kept
    assert during["states"]["refused"] >= 1
    assert K1_EVENTS in during["broker"]["refused_topics"]
    assert mended and drained
    refusals = log_lines(gw, '"broker refused')
    # once per spell and topic, not once per try
    assert sorted(x["topic"] for x in refusals) == [K1_EVENTS, K1_STATE]
    assert all(x["level"] == "error" for x in refusals)
    assert {x["topic"] for x in log_lines(gw, '"broker accepts')} == {K1_EVENTS, K1_STATE}


def test_a_refused_retained_state_is_counted_logged_and_holds_up_nothing(gateways, tmp_path):
    """The attack report: with only kitchen-1's state topic refused, no event got through at
    all (the state goes first on every connection) and the status said nothing."""
    broker, _ = acl_broker(tmp_path, "topic readwrite %s\n" % K1_EVENTS)
    with broker:
        gw = gateways.start(gateways.config(broker, protocol="5"))
        dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

        async def scenario():
            async with Collector(broker.port, aiomqtt.ProtocolVersion.V5) as col:
                await run_tcp(dev, "127.0.0.1", gw.tcp_port, 3, kinds=("alarm.high",))
                ok = await until(lambda: high(col, "kitchen-1") >= 3, 5)
                await asyncio.sleep(4)  # a few more tries of the state
                return ok, col

        ok, col = asyncio.run(scenario())
        st = gw.status()
    assert ok, "kitchen-1's alarms were held up behind its refused state"
    assert st["states"]["refused"] >= 2 and st["broker"]["refused_topics"] == [K1_STATE]
    assert not [t for t, _, _ in col.messages if t == K1_STATE]
    refusals = log_lines(gw, '"broker refused')
    assert [x["topic"] for x in refusals] == [K1_STATE]
