"""The MQTT wire's patches to paho's internals, each on its own, and the private attributes they
rely on checked against the installed paho-mqtt and aiomqtt."""

from __future__ import annotations

import asyncio
import threading
from importlib.metadata import version

import pytest
from paho.mqtt.enums import MQTTErrorCode

from gasguard.gateway import mqttwire
from gasguard.gateway.mqttwire import PAHO_PRIVATE, BufferedReads, PlainPubacks


def test_every_private_attribute_the_wire_relies_on_is_there():
    missing = asyncio.run(mqttwire.missing_internals())
    assert not missing, "gone from the installed %s: %s (the patches were read against %s)" % (
        {p: version(p) for p in mqttwire.CHECKED}, ", ".join(missing), mqttwire.CHECKED
    )


def test_the_internals_check_names_an_attribute_that_is_gone(monkeypatch):
    monkeypatch.setattr(mqttwire, "PAHO_PRIVATE", (*PAHO_PRIVATE, "_no_such_thing"))
    missing = asyncio.run(mqttwire.missing_internals())
    assert missing == ["paho.mqtt.client.Client._no_such_thing"]


class FakeSocketPaho:
    """paho as BufferedReads sees it: _sock_recv over a list of socket reads, and a loop_read
    that reads one packet of the test's own framing (a length byte, then that many bytes)."""

    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks
        self.recv_sizes: list[int] = []
        self.packets: list[bytes] = []
        self._sock = object()

    def _sock_recv(self, n: int) -> bytes:
        self.recv_sizes.append(n)
        if not self.chunks:
            raise BlockingIOError
        return self.chunks.pop(0)

    def loop_read(self, max_packets: int = 1) -> int:
        try:
            n = self._sock_recv(1)[0]
        except BlockingIOError:
            return 1  # paho's "again"
        self.packets.append(self._sock_recv(n))
        return 0


def test_buffered_reads_serve_paho_from_one_socket_read_and_read_every_packet_it_holds():
    paho = FakeSocketPaho([b"\x02ab\x03cde\x01f", b"\x01g"])
    reads = BufferedReads(paho)
    assert paho.loop_read() == 0  # one call of paho's loop_read: all three packets read
    assert paho.packets == [b"ab", b"cde", b"f"]
    assert paho.recv_sizes == [BufferedReads.SIZE]  # one read of the socket for all of them
    assert reads.loop_read() == 0
    assert paho.packets[-1] == b"g"
    assert paho.loop_read() == 1  # nothing more: paho's own "try again"


def test_buffered_reads_pass_on_the_broker_closing_the_connection():
    paho = FakeSocketPaho([b""])
    BufferedReads(paho)
    assert paho._sock_recv(1) == b""  # noqa: SLF001 - as paho reads it: closed


class FakePubackPaho:
    """paho as PlainPubacks sees it."""

    def __init__(self, packet: bytes, mids: set[int]) -> None:
        self._in_packet = {"packet": packet}
        self._out_message_mutex = threading.Lock()
        self._out_messages = dict.fromkeys(mids)
        self.decoded: list[str] = []
        self.published: list[tuple] = []

    def _handle_pubackcomp(self, cmd: str) -> MQTTErrorCode:
        self.decoded.append(cmd)
        return MQTTErrorCode.MQTT_ERR_SUCCESS

    def _do_on_publish(self, mid, reason, props) -> MQTTErrorCode:
        self.published.append((mid, reason, props))
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def test_a_plain_puback_skips_paho_s_decoder_with_one_shared_success():
    paho = FakePubackPaho(b"\x01\x02", {0x0102})
    patch = PlainPubacks(paho)
    paho._handle_pubackcomp("PUBACK")  # noqa: SLF001 - as paho's packet handler calls it
    paho._handle_pubackcomp("PUBACK")  # noqa: SLF001
    assert paho.decoded == []
    (mid, reason, props), (_, reason2, _) = paho.published
    assert mid == 0x0102 and not reason.is_failure and reason.getName() == "Success"
    assert reason is reason2 is patch._success  # noqa: SLF001 - no fresh object per PUBACK
    assert props is patch._props  # noqa: SLF001


@pytest.mark.parametrize(
    ("cmd", "packet"),
    [("PUBACK", b"\x01\x02\x87"), ("PUBACK", b"\x01\x02\x00\x00"), ("PUBCOMP", b"\x01\x02")],
    ids=["refused", "with-properties", "pubcomp"],
)
def test_any_other_puback_goes_through_paho_s_decoder(cmd, packet):
    paho = FakePubackPaho(packet, {0x0102})
    PlainPubacks(paho)
    paho._handle_pubackcomp(cmd)  # noqa: SLF001
    assert paho.decoded == [cmd] and paho.published == []


def test_a_plain_puback_for_no_message_of_ours_is_ignored():
    paho = FakePubackPaho(b"\x00\x07", {0x0102})
    PlainPubacks(paho)
    assert paho._handle_pubackcomp("PUBACK") == MQTTErrorCode.MQTT_ERR_SUCCESS  # noqa: SLF001
    assert paho.decoded == [] and paho.published == []
