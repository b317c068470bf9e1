"""The alternative MQTT wire (gateway/mqttproto.py) on its own: packets split anywhere by the
socket are read whole, a refused PUBACK names its reason, the CONNECT carries the will."""

from __future__ import annotations

import asyncio

from gasguard.gateway import config, mqttproto


def _acks(chunks: list[bytes], v5: bool = True) -> list[tuple[int, str | None]]:
    async def run() -> list[tuple[int, str | None]]:
        wire = mqttproto._Wire(v5)  # noqa: SLF001
        conn = mqttproto.Connection(wire, keepalive=0)
        got: list[tuple[int, str | None]] = []
        await conn.attach(lambda mid, refused: got.append((mid, refused)) or True)
        wire.data_received(b"\x20\x02\x00\x00")  # the CONNACK
        for c in chunks:
            wire.data_received(c)
        assert wire.connack.done()
        return got

    return asyncio.run(run())


def test_pubacks_split_anywhere_by_the_socket_are_read_whole():
    stream = b"\x40\x02\x00\x01" + b"\x40\x03\x00\x02\x87" + b"\xd0\x00" + b"\x40\x02\x01\x00"
    want = [(1, None), (2, "Not authorized"), (256, None)]
    assert _acks([stream]) == want
    assert _acks([bytes((b,)) for b in stream]) == want
    assert _acks([stream[:5], stream[5:11], stream[11:]]) == want


def test_a_success_reason_below_0x80_is_not_a_refusal():
    assert _acks([b"\x40\x03\x00\x05\x10"]) == [(5, None)]  # no matching subscribers


def test_publish_and_connect_packets():
    async def run() -> bytes:
        conn = mqttproto.Connection(mqttproto._Wire(True), keepalive=0)  # noqa: SLF001
        assert conn.publish("a/b", b"xy", True) == 1
        return b"".join(conn._out)  # noqa: SLF001

    assert asyncio.run(run()) == b"\x33\x0a\x00\x03a/b\x00\x01\x00xy"  # QoS 1, retained
    cfg = config.MqttConfig(
        host="h", port=1883, tls=False, client_id="gw", username="u", password="p"
    )
    pkt = mqttproto._connect_packet(cfg, False, "w/t", b"off")  # noqa: SLF001
    assert pkt[0] == 0x10 and pkt[2:8] == b"\x00\x04MQTT" and pkt[8] == 4  # MQTT 3.1.1
    assert pkt[9] == 0x80 | 0x40 | 0x20 | 0x08 | 0x04 | 0x02  # user, password, retained will
    assert pkt.endswith(b"\x00\x02gw\x00\x03w/t\x00\x03off\x00\x01u\x00\x01p")
