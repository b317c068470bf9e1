"""Issue 20, items 1-3, 7 and 9: what an authenticated but hostile or broken board sends must not
stop the gateway, reach the regulator as null, or be read more loosely than docs/protocol.md says;
a board with a wrong or missing key is named in the log. The real gateway process, mosquitto and
a regulator's subscriber."""

from __future__ import annotations

import asyncio
import json

from gasguard.protocol import cbor, frame, messages
from gasguard.tools.sim.syndevice import SynDevice, open_link

from .conftest import KEYS, Collector


def _alive(gw) -> None:
    assert gw.proc.poll() is None, "the gateway exited with %s" % gw.proc.returncode


async def _until_acked(dev: SynDevice, r: asyncio.StreamReader, n: int, timeout=10.0) -> None:
    async def read() -> None:
        while len(dev.acked) < n:
            data = await r.read(65536)
            assert data, "the gateway closed the link"
            dev.feed(data)

    await asyncio.wait_for(read(), timeout)


def test_a_heartbeat_with_an_absurd_reading_is_flagged_and_the_gateway_goes_on(
    mosquitto, gateways
):
    """Item 1: a heartbeat with %LEL -2^64 stopped the gateway (orjson raised on the state
    publish), exit code 0. Item 2: NaN was published as null."""
    gw = gateways.start(gateways.config(mosquitto))
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])

    async def scenario():
        async with Collector(mosquitto.port) as col:
            r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
            for lel in (-(2**64), float("nan"), (2**64) - 1, float("inf")):
                w.write(dev.heartbeat(alarm="high", valve="closed", lel=lel, lost=3))
                await w.drain()
                await asyncio.sleep(0.4)
                _alive(gw)
            _, f = dev.event("alarm.high", det=0, lel=55.0)
            w.write(f)
            await _until_acked(dev, r, 1)
            await col.wait(lambda: any(p["type"] == "gasguard.alarm.high" for p in col.events()))
            w.close()
            return [p for t, p, _ in col.messages if t.endswith("kitchen-1/state")]

    states = asyncio.run(scenario())
    _alive(gw)
    flagged = [s["data"]["detectors"][0] for s in states if "detectors" in s["data"]]
    assert flagged and all("lel" not in d and d["lel_invalid"] for d in flagged), flagged
    assert states[-1]["data"]["lost_events"] == 3
    assert "null" not in json.dumps(states)


def test_unusable_readings_and_clocks_are_flagged_and_every_event_is_acked(mosquitto, gateways):
    """Item 2: NaN %LEL reached the regulator as null and the alarm never reached the ledger.
    Item 9: events the schema refused (%LEL 1e308, a time in the year 36812) were never acked, so
    the board re-sent them for ever."""
    gw = gateways.start(gateways.config(mosquitto))
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
    year_36812 = 1099511627775  # the largest device time the catalogue allows

    async def scenario():
        async with Collector(mosquitto.port) as col:
            r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
            w.write(dev.event("alarm.high", det=0, lel=float("nan"))[1])
            w.write(dev.event("alarm.high", det=0, lel=1e308, over=True)[1])
            w.write(dev.event("alarm.low", det=0, lel=22.0, time=year_36812)[1])
            w.write(dev.event("events.lost", n=12)[1])
            await _until_acked(dev, r, 4)
            await col.wait(lambda: len([p for p in col.events() if "seq" in p["data"]]) >= 4)
            w.close()
            return [p for p in col.events() if "seq" in p["data"]]

    evs = asyncio.run(scenario())
    assert dev.unacked == {}
    nan, huge, late, lost = (e["data"] for e in evs)
    assert nan["kind"] == "alarm.high" and "lel" not in nan
    assert nan["lel_invalid"] == "not a number"
    assert huge["over_range"] is True and huge["lel_invalid"].startswith("out of range")
    assert late["device_time_invalid"] == year_36812 and "device_time" not in late
    assert lost["kind"] == "events.lost" and lost["count"] == 12
    assert all(e["id"].startswith("kitchen-1:%s:1:" % dev.inst) for e in evs)
    assert "null" not in json.dumps(evs)


def _signed(dev: SynDevice, mtype: int, body: bytes) -> bytes:
    return frame.encode(dev.signer, mtype, dev.boot, dev._next_seq(), dev.device, body)


def test_bodies_looser_than_the_protocol_are_dropped_at_the_boundary(mosquitto, gateways):
    """Item 3: cbor2 accepted duplicate keys (alarm.high then alarm.clear was published as
    alarm.clear), tags, trailing bytes and nesting past 16; self-referencing data produced
    logging tracebacks."""
    gw = gateways.start(gateways.config(mosquitto))
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
    ev = cbor.dumps(messages.event(1, 1, "alarm.high", 60, det=0, lel=70.0))
    clear = cbor.dumps({"kind": "alarm.clear"})[1:]  # one more "kind": a duplicate key
    selfref = cbor.dumps({"cmd": "identify", "ok": True, "ref": 0, "data": 0})[:-1]
    E, R = messages.EVENT, messages.REPLY
    hostile = [
        (E, bytes([ev[0] + 1]) + ev[1:] + clear),  # kind alarm.high, then kind alarm.clear
        (E, b"\xa1\x62id\xc1\x1a\x69\x24\x81\x00"),  # a tag
        (E, ev + b"\x00"),  # trailing bytes
        (E, b"\xa1\x64data" + b"\x81" * 40 + b"\x00"),  # nesting far past 16
        (R, selfref + bytes.fromhex("d81c81d81d00")),  # data refers to itself (tags 28, 29)
    ]

    async def scenario():
        async with Collector(mosquitto.port) as col:
            r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
            for mtype, body in hostile:
                w.write(_signed(dev, mtype, body))
            dev.event_seq = 1  # the event above took id 1 without being sent
            w.write(dev.event("alarm.low", det=0, lel=21.0)[1])  # the link still works
            await _until_acked(dev, r, 1)
            await col.wait(lambda: any(p["type"] == "gasguard.alarm.low" for p in col.events()))
            w.close()
            return col.events("kitchen-1")

    evs = asyncio.run(scenario())
    _alive(gw)
    types = [p["type"] for p in evs]
    assert "gasguard.alarm.clear" not in types and "gasguard.alarm.high" not in types
    assert gw.status()["frames"]["body"] == len(hostile)
    log = gw.log_path.read_text()
    assert "Traceback" not in log and "Circular" not in log


def test_boards_with_a_wrong_or_missing_key_are_logged_by_id_once_a_minute(mosquitto, gateways):
    """Item 8: a board with a wrong or missing key showed only as counters."""
    gw = gateways.start(gateways.config(mosquitto))
    wrong = SynDevice("kitchen-3", b"\x99" * 16)
    stranger = SynDevice("kitchen-99", KEYS["kitchen-1"])

    async def scenario():
        r, w = await asyncio.open_connection("127.0.0.1", gw.tcp_port)
        for _ in range(20):
            w.write(wrong.birth() + stranger.birth())
        await w.drain()
        await asyncio.sleep(1.0)
        w.close()

    asyncio.run(scenario())
    lines = [json.loads(x) for x in gw.log_path.read_text().splitlines() if x.startswith("{")]
    rejected = [x for x in lines if x["msg"] == "board rejected"]
    assert sorted((x["device"], x["reason"]) for x in rejected) == [
        ("kitchen-3", "auth"), ("kitchen-99", "unknown-device")
    ]  # fmt: skip
    frames = gw.status()["frames"]
    assert frames["auth"] == 20 and frames["unknown-device"] == 20
