"""The gateway end to end against real brokers: what a regulator receives, and what survives a
gateway SIGKILL and a broker outage."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
import jsonschema
import pytest

from gasguard.gateway import schemas
from gasguard.gateway.publisher import CLIENT_ENV
from gasguard.tools.sim.brokers import Mosquitto
from gasguard.tools.sim.syndevice import SynDevice, open_link, run_tcp

from .conftest import KEYS, Collector

V5 = aiomqtt.ProtocolVersion.V5
V311 = aiomqtt.ProtocolVersion.V311


def _validator(name: str):
    return jsonschema.Draft202012Validator(schemas.load(name))


EVENT_SCHEMA = _validator("event.schema.json")
STATE_SCHEMA = _validator("state.schema.json")
STATUS_SCHEMA = _validator("gateway-status.schema.json")


def _seqs(col: Collector, device: str) -> list[int]:
    return [p["data"]["seq"] for p in col.events(device) if "seq" in p["data"]]


def _assert_complete_in_order(col: Collector, dev: SynDevice) -> None:
    """Every event the device had acknowledged arrived; first arrivals keep the device's order;
    dedup by CloudEvents id gives each exactly once."""
    evs = [p for p in col.events(dev.device) if "seq" in p["data"]]
    firsts: list[int] = []
    seen: set[str] = set()
    for p in evs:
        if p["id"] not in seen:
            seen.add(p["id"])
            firsts.append(p["data"]["seq"])
    want = sorted(s for _, s in dev.acked)
    assert firsts == want, "lost or reordered: %d of %d" % (len(firsts), len(want))


@pytest.mark.parametrize(
    "broker_kind,protocol,client",
    [("mosquitto", "5", "paho"), ("mosquitto", "3.1.1", "paho"), ("amqtt", "3.1.1", "paho"),
     ("mosquitto", "5", "asyncio"), ("mosquitto", "3.1.1", "asyncio")],
)  # fmt: skip
def test_every_event_reaches_the_regulator_as_a_valid_cloudevent(
    request, gateways, monkeypatch, broker_kind, protocol, client
):
    monkeypatch.setenv(CLIENT_ENV, client)  # the gateway's MQTT client (publisher.py)
    broker = request.getfixturevalue("mosquitto" if broker_kind == "mosquitto" else "amqtt_broker")
    gw = gateways.start(gateways.config(broker, protocol=protocol))

    async def scenario():
        async with Collector(broker.port, V5 if protocol == "5" else V311) as col:
            devs = [SynDevice(d, k) for d, k in KEYS.items()]
            await asyncio.gather(*[run_tcp(d, "127.0.0.1", gw.tcp_port, 150) for d in devs])
            for d in devs:
                await col.wait(lambda d=d: len(set(_seqs(col, d.device))) >= 150, what=d.device)
                _assert_complete_in_order(col, d)
            await col.wait(
                lambda: any(t.endswith("/state") for t, _, _ in col.messages), what="a state"
            )
            return col.messages

    msgs = asyncio.run(scenario())
    kinds = {}
    for topic, p, _ in msgs:
        if topic.endswith("/events"):
            EVENT_SCHEMA.validate(p)
            assert topic == "gasguard/v1/site-9/%s/events" % p["data"]["device"]
            kinds[p["type"]] = kinds.get(p["type"], 0) + 1
        elif topic.endswith("/state"):
            STATE_SCHEMA.validate(p)
            assert p["data"]["online"] is True
        else:
            assert topic == "gasguard/v1/site-9/gateway/gw-1/status"
            STATUS_SCHEMA.validate(p)
    assert kinds["gasguard.alarm.low"] == 3 * 75
    assert kinds["gasguard.device.online"] == 3  # one session began per device
    st = gw.status()
    assert st["events"]["committed"] >= 450 and st["outbox"]["depth"] == 0
    assert st["devices_online"] == 3


def test_publishes_in_flight_stay_within_an_mqtt5_brokers_receive_maximum(gateways):
    # mosquitto announces max_inflight_messages as its Receive Maximum in the CONNACK; EMQX
    # announces 32 by default and may disconnect a client that sends more
    with Mosquitto(extra_conf="max_inflight_messages 20\n") as broker:
        gw = gateways.start(gateways.config(broker, protocol="5", window=64))
        devs = [SynDevice(d, k) for d, k in KEYS.items()]

        async def scenario():
            async with Collector(broker.port, V5) as col:
                await asyncio.gather(*[run_tcp(d, "127.0.0.1", gw.tcp_port, 1000) for d in devs])
                for d in devs:
                    await col.wait(
                        lambda d=d: len(set(_seqs(col, d.device))) >= 1000, 60, what=d.device
                    )
                    _assert_complete_in_order(col, d)

        asyncio.run(scenario())
        st = gw.status()["broker"]
    assert st["receive_maximum"] == 20
    assert st["window"] == 14  # 5 of the 20 kept for alarms, 1 for the gateway's status
    assert 10 <= st["inflight_peak"] <= 20  # the window filled, and never past the cap


def test_forged_replayed_and_impersonating_frames_are_dropped_and_the_link_stays_up(
    mosquitto, gateways
):
    gw = gateways.start(gateways.config(mosquitto))
    dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
    thief = SynDevice("kitchen-2", KEYS["kitchen-1"])  # claims kitchen-2, holds kitchen-1's key
    wrong = SynDevice("kitchen-3", b"\x99" * 16)

    async def scenario():
        async with Collector(mosquitto.port) as col:
            r, w = await open_link(dev, "127.0.0.1", gw.tcp_port)
            _, good = dev.event("alarm.high", det=0, lel=61.0)
            w.write(good)
            w.write(good)  # replayed frame
            forged = bytearray(dev.event("alarm.clear", det=0, lel=0.0)[1])
            forged[10] ^= 0x01  # one bit changed in flight
            w.write(bytes(forged))
            w.write(thief.event("valve.closed", valve="closed")[1])
            w.write(wrong.event("alarm.high", det=0, lel=70.0)[1])
            w.write(b"\x00garbage that is no frame at all\x00")
            _, after = dev.event("alarm.low", det=0, lel=22.0)
            w.write(after)  # the link still works after all that
            await w.drain()
            deadline = time.monotonic() + 10
            while len(dev.acked) < 2 and time.monotonic() < deadline:
                dev.feed(await asyncio.wait_for(r.read(4096), 10))
            await col.wait(lambda: len(col.events("kitchen-1")) >= 3, what="kitchen-1 events")
            await asyncio.sleep(0.5)
            w.close()
            return col

    col = asyncio.run(scenario())
    assert sorted(dev.acked) == [(1, 1), (1, 3)]  # the forged (1, 2) was never accepted
    assert col.events("kitchen-2") == [] and col.events("kitchen-3") == []
    types = [p["type"] for p in col.events("kitchen-1")]
    assert types == ["gasguard.device.online", "gasguard.alarm.high", "gasguard.alarm.low"]
    frames = gw.status()["frames"]
    assert frames["replay"] == 1
    assert frames["auth"] >= 2  # the impersonation and the wrong key
    assert sum(n for r, n in frames.items() if r not in ("ok", "replay")) >= 4  # + bit, junk


def test_sigkill_mid_stream_loses_nothing_and_keeps_order(mosquitto, gateways):
    cfg = gateways.config(mosquitto)
    gw = gateways.start(cfg)
    devs = [SynDevice(d, k) for d, k in KEYS.items()]

    async def scenario():
        async with Collector(mosquitto.port) as col:
            sending = asyncio.gather(
                *[run_tcp(d, "127.0.0.1", gw.tcp_port, 1500, rate=600) for d in devs]
            )
            await asyncio.sleep(1.2)
            gw.kill()  # mid-stream: events in flight, rows committed but not yet published
            acked_at_kill = sum(len(d.acked) for d in devs)
            await asyncio.sleep(0.5)
            gw2 = gateways.start(cfg)
            assert gw2.tcp_port == gw.tcp_port
            await sending
            for d in devs:
                await col.wait(
                    lambda d=d: len(set(_seqs(col, d.device))) >= 1500, 60, what=d.device
                )
            return col, acked_at_kill, gw2

    col, acked_at_kill, gw2 = asyncio.run(scenario())
    assert 0 < acked_at_kill < 4500  # the kill really was mid-stream
    for d in devs:
        assert len(d.acked) == 1500
        _assert_complete_in_order(col, d)
    assert gw2.status()["boot"] == 2


class Uplink:
    """A TCP hop between the gateway and the broker that can be cut. The broker stays up, and so
    does the regulator's session on it: only the gateway loses its broker. (Stopping mosquitto
    itself also drops QoS 1 messages it had in flight to subscribers at that moment, a broker
    matter; the fault matrix and `bench recovery` restart a real broker.)"""

    def __init__(self, port: int) -> None:
        self.target = port
        self.port = 0
        self.cut = False
        self.writers: list[asyncio.StreamWriter] = []

    async def start(self) -> Uplink:
        self.server = await asyncio.start_server(self._client, "127.0.0.1", self.port)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def _client(self, r: asyncio.StreamReader, w: asyncio.StreamWriter) -> None:
        if self.cut:
            w.close()
            return
        ur, uw = await asyncio.open_connection("127.0.0.1", self.target)
        self.writers += [w, uw]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            except (ConnectionError, OSError):
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(r, uw), pipe(ur, w))

    def down(self) -> None:
        self.cut = True
        for w in self.writers:
            w.transport.abort()  # the line drops: nothing more gets through either way
        self.writers = []


def test_broker_outage_loses_nothing_and_dedup_gives_each_event_once(mosquitto, gateways):
    devs = [SynDevice(d, k) for d, k in KEYS.items()]
    gw = None

    async def scenario():
        nonlocal gw
        uplink = await Uplink(mosquitto.port).start()
        hop = type("Hop", (), {"url": "mqtt://127.0.0.1:%d" % uplink.port})()
        gw = gateways.start(gateways.config(hop))
        async with Collector(mosquitto.port) as col:
            sending = asyncio.gather(
                *[run_tcp(d, "127.0.0.1", gw.tcp_port, 900, rate=300) for d in devs]
            )
            await asyncio.sleep(0.8)
            uplink.down()
            await asyncio.sleep(2.5)
            depth = gw.status()["outbox"]["depth"]
            assert not gw.status()["broker"]["connected"]
            uplink.cut = False
            await sending
            for d in devs:
                try:
                    await col.wait(lambda d=d: len(set(_seqs(col, d.device))) >= 900, 60)
                except TimeoutError:
                    got = set(_seqs(col, d.device))
                    missing = sorted(set(range(1, 901)) - got)
                    raise AssertionError(
                        "%s: %d events never reached the regulator (first %s); the device had "
                        "%d acknowledged; gateway status %s"
                        % (d.device, len(missing), missing[:20], len(d.acked), gw.status())
                    ) from None
            # the last PUBACKs come back through the uplink a moment after the regulator has
            # the events: it must stay up until their rows are deleted
            deadline = time.monotonic() + 10
            while gw.status()["outbox"]["depth"] and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
            return col, depth

    col, depth = asyncio.run(scenario())
    assert depth > 500  # the outbox held the events while the broker was away
    for d in devs:
        _assert_complete_in_order(col, d)
    ids = [p["id"] for p in col.events()]
    assert len(set(ids)) == len({i for i in ids})  # dedup by id is all a regulator needs
    st = gw.status()
    assert st["broker"]["connects"] >= 2 and st["outbox"]["depth"] == 0, json.dumps(st)


def test_silent_device_goes_offline_and_the_gateway_will_says_offline(mosquitto, gateways):
    gw = gateways.start(gateways.config(mosquitto, heartbeat_s=1))

    async def scenario():
        async with Collector(mosquitto.port) as col:
            dev = SynDevice("kitchen-1", KEYS["kitchen-1"])
            r, s = await open_link(dev, "127.0.0.1", gw.tcp_port)
            s.write(dev.heartbeat(valve="open"))
            await col.wait(
                lambda: any(p["type"] == "gasguard.device.online" for p in col.events())
            )
            # silence: after 3 missed heartbeats the regulator hears it is offline
            await col.wait(
                lambda: any(p["type"] == "gasguard.device.offline" for p in col.events()), 10
            )
            states = [p for t, p, _ in col.messages if t.endswith("kitchen-1/state")]
            assert states[-1]["data"]["online"] is False
            s.close()
            gw.kill()  # no clean goodbye: the broker publishes the last will
            await col.wait(
                lambda: any(
                    t.endswith("/status") and p["data"]["status"] == "offline"
                    for t, p, _ in col.messages
                ),
                10,
                what="the gateway's last will",
            )
            return col, dev

    col, dev = asyncio.run(scenario())
    off = [p for p in col.events() if p["type"] == "gasguard.device.offline"][0]
    assert "session kitchen-1:%s:1 ended" % dev.inst in off["data"]["detail"]


def test_a_virtual_board_on_a_serial_link_reports_a_leak_to_the_regulator(
    mosquitto, gateways, tmp_path
):
    """The real firmware (MicroPython VM) -> UART link (pty) -> gateway serial link -> MQTT."""
    import json as _json
    from pathlib import Path

    from gasguard.tools.device import read_device_config
    from gasguard.tools.sim.gwrun import write_config
    from gasguard.tools.sim.vboard_service import VboardService

    cfg, key = read_device_config(Path(__file__).parents[2] / "hil_tests" / "board-config.json")
    with VboardService(cfg, key, flash=tmp_path / "flash") as board:
        link = board.endpoints()["link"]
        gw_cfg = write_config(
            tmp_path / "gw", {cfg["device_id"]: key}, mosquitto.url, site="site-9", serial=[link]
        )
        gw = gateways.start(gw_cfg)

        async def scenario():
            async with Collector(mosquitto.port) as col:
                await col.wait(lambda: any("boot" in p["type"] for p in col.events()), 20)
                assert board.detectors is not None
                for _ in range(10):  # staff reset once the detectors have answered
                    board.board.press("reset", 0.6)
                    try:
                        board.board.wait_output("valve", 1, 2)
                        break
                    except TimeoutError:
                        pass
                board.detectors[1].set(lel=60.0)
                await col.wait(
                    lambda: any(p["type"] == "gasguard.valve.closed" for p in col.events()), 10
                )
                return col

        col = asyncio.run(scenario())
    types = [p["type"] for p in col.events()]
    assert "gasguard.alarm.high" in types and types.index("gasguard.device.boot") < types.index(
        "gasguard.alarm.high"
    )
    high = next(p for p in col.events() if p["type"] == "gasguard.alarm.high")
    assert high["data"]["lel"] == 60.0 and high["data"]["device"] == "hil-board-1"
    assert "device_time" in high["data"]  # the gateway's time sync reached the firmware
    st = gw.status()
    assert st["frames"]["ok"] > 0 and st["devices"]["hil-board-1"]["online"]
    _json.dumps(st)
