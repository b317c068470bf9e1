"""The MQTT wire: every use of aiomqtt and paho-mqtt, their private internals included, is here.

The publisher sees a small interface: connect() to a broker (with the gateway's will), then on
the Connection publish() -> message id, an on-ack callback per PUBACK, flush() to write what was
published, and publish_status() for the few publishes that may wait for their PUBACK.

aiomqtt owns the connection (connect, keepalive, the socket's callbacks in our event loop).
Publishing through it costs a task, an Event, a wait_for and a scan of its pending calls per
message, which made the publisher, not the broker, the gateway's limit; so the publish path goes
straight to paho, with three patches to paho's internals (BufferedReads, PlainPubacks, coalesce).
They were written against the versions in CHECKED; missing_internals() names any private
attribute they use that the installed versions lack (tests/gateway/test_mqttwire.py).
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import aiomqtt
from paho.mqtt import client as paho_client
from paho.mqtt.client import PUBLISH
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .config import MqttConfig

MqttError = aiomqtt.MqttError  # a lost or refused connection, whatever the client

# the versions the patches were read against: a newer one needs them read again
CHECKED = {"paho-mqtt": "2.2.0", "aiomqtt": "2.5.1"}
# the private attributes used here, of paho's Client and of aiomqtt's
PAHO_PRIVATE = (
    "_sock",  # BufferedReads: whether the connection is still open
    "_sock_recv",  # BufferedReads: the recv it buffers
    "_handle_pubackcomp",  # PlainPubacks: the decoder it shortcuts
    "_in_packet",  # PlainPubacks: the packet being handled
    "_out_message_mutex",  # PlainPubacks: guards _out_messages
    "_out_messages",  # PlainPubacks: messages awaiting their PUBACK
    "_do_on_publish",  # PlainPubacks: paho's own PUBACK step
    "_out_packet",  # coalesce: the packets queued for writing
)
AIOMQTT_PRIVATE = (
    "_client",  # the paho client under it
    "_disconnected",  # the future that fails when the connection is lost
)
PACKET_TYPE = 0xF0  # the packet type's bits of a fixed header's first byte
PUBACK_PLAIN_LEN = 2  # a PUBACK of only a message id: reason Success, no properties
RECEIVE_MAXIMUM = 65535  # MQTT 5's when the broker's CONNACK names none (§3.2.2.3.3)
CONNECT_TIMEOUT_S = 10
PENDING_SLACK = 64  # aiomqtt's own pending publishes beyond the window before it warns
QOS = 1


async def missing_internals() -> list[str]:
    """The private attributes this module relies on that the installed paho-mqtt and aiomqtt
    lack, as "Class.attribute" (needs a running event loop: aiomqtt's Client does)."""
    client = aiomqtt.Client("localhost")
    missing = ["aiomqtt.Client." + a for a in AIOMQTT_PRIVATE if not hasattr(client, a)]
    paho = getattr(client, "_client", None) or paho_client.Client(
        paho_client.CallbackAPIVersion.VERSION2
    )
    missing += ["paho.mqtt.client.Client." + a for a in PAHO_PRIVATE if not hasattr(paho, a)]
    return missing


def tls_context(cfg: MqttConfig) -> ssl.SSLContext | None:
    """Certificate validation and hostname check on; the system store unless ca_file is set."""
    if not cfg.tls:
        return None
    ctx = ssl.create_default_context(cafile=str(cfg.ca_file) if cfg.ca_file else None)
    if cfg.cert_file and cfg.key_file:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return ctx


class BufferedReads:
    """paho reads a packet in three recv() calls (type, length, the rest): with a PUBACK per
    event, reading them was ~14 % of the event loop's time in a profile, the recv calls alone
    5 %. This reads what the socket holds at once and
    serves paho's calls from it; loop_read goes on until the buffer is empty, since the
    selector only says when the socket has more.

    Installed on a connected client (its CONNACK read), one per connection: paho's own recv,
    with its TLS and error handling, still does the socket reads."""

    SIZE = 65536

    def __init__(self, paho: Any) -> None:
        self._recv = paho._sock_recv  # noqa: SLF001 - the method this one buffers
        self._loop_read = paho.loop_read
        self._paho = paho
        self._buf = b""
        self._pos = 0
        paho._sock_recv = self.recv  # noqa: SLF001
        paho.loop_read = self.loop_read

    def recv(self, n: int) -> bytes:
        buf, pos = self._buf, self._pos
        if pos >= len(buf):
            buf = self._recv(self.SIZE)  # BlockingIOError when there is nothing: paho's AGAIN
            if not buf:
                return buf  # closed by the broker
            self._buf, pos = buf, 0
        self._pos = pos + n
        return buf[pos : pos + n]

    def loop_read(self, max_packets: int = 1) -> int:
        rc = self._loop_read(max_packets)
        # paho stops after as many packets as it has messages in flight: more may be buffered
        while rc == 0 and self._pos < len(self._buf) and self._paho._sock is not None:  # noqa: SLF001
            rc = self._loop_read(max_packets)
        return rc


class PlainPubacks:
    """paho decodes every PUBACK into a fresh ReasonCode and Properties (MQTT 3.1.1 too): with
    one per event that was ~10 % of the event loop's time in a profile. A PUBACK of just a
    message id (MQTT 5 §3.4.2.1: reason Success, no properties; every MQTT 3.1.1 PUBACK) is
    handed to paho's own on_publish step with one shared Success and empty Properties; any
    other PUBACK (a refusal, properties) goes through paho's decoder as before."""

    def __init__(self, paho: Any) -> None:
        self._paho = paho
        self._decode = paho._handle_pubackcomp  # noqa: SLF001 - the method this one shortcuts
        self._success = ReasonCode(PacketTypes.PUBACK)
        self._props = Properties(PacketTypes.PUBACK)
        paho._handle_pubackcomp = self.handle  # noqa: SLF001

    def handle(self, cmd: str) -> Any:
        paho = self._paho
        packet = paho._in_packet["packet"]  # noqa: SLF001
        if cmd != "PUBACK" or len(packet) != PUBACK_PLAIN_LEN:
            return self._decode(cmd)
        mid = packet[0] << 8 | packet[1]
        with paho._out_message_mutex:  # noqa: SLF001
            if mid in paho._out_messages:  # noqa: SLF001
                return paho._do_on_publish(mid, self._success, self._props)  # noqa: SLF001
        return MQTTErrorCode.MQTT_ERR_SUCCESS


def coalesce(out_packets: deque) -> None:
    """Join paho's queued QoS 1 PUBLISH packets that have not started into one, in order, so
    that a pass's publishes leave in one send() instead of a send() each (paho writes packet by
    packet: a syscall per event, and a read per event for the broker). Such packets need
    nothing from paho once written (their PUBACK is what counts); anything else, or a packet
    partly sent, stays as it is."""
    if len(out_packets) < 2:  # nothing to join
        return
    merged: list[dict] = []
    run: list[dict] = []
    for p in [*out_packets, None]:
        unsent_publish = (
            p is not None and p["pos"] == 0 and p["qos"] > 0
            and p["command"] & PACKET_TYPE == PUBLISH
        )  # fmt: skip
        if unsent_publish:
            run.append(p)
            continue
        if len(run) > 1:
            data = b"".join(r["packet"] for r in run)
            merged.append(
                {"command": PUBLISH, "mid": 0, "qos": QOS, "pos": 0, "to_process": len(data),
                 "packet": data, "info": None}
            )  # fmt: skip
        else:
            merged += run
        run = []
        if p is not None:
            merged.append(p)
    if len(merged) < len(out_packets):
        out_packets.clear()
        out_packets.extend(merged)


OnAck = Callable[[int, "str | None"], bool]  # (mid, why refused or None) -> it was ours


class Connection:
    """A connected client. After attach(on_ack), publish() is one paho call and each PUBACK
    comes back through on_ack(mid, refused) in this event loop (paho's on_publish, run by
    aiomqtt's socket callbacks); PUBACKs on_ack says are not its own are aiomqtt's (the
    gateway status, published through it). A lost connection is seen at once through
    aiomqtt's disconnected future (`lost`) instead of at a publish timeout."""

    def __init__(self, client: aiomqtt.Client) -> None:
        self._client = client
        paho = self._paho = client._client  # noqa: SLF001
        BufferedReads(paho)
        PlainPubacks(paho)
        self.lost: asyncio.Future[None] = client._disconnected  # noqa: SLF001
        self._out_packets = paho._out_packet  # noqa: SLF001
        self._saved: tuple[Any, Any, Any] | None = None

    async def publish_status(self, topic: str, payload: bytes) -> None:
        """A retained QoS 1 publish through aiomqtt, waiting for its PUBACK."""
        await self._client.publish(topic, payload, qos=QOS, retain=True)

    async def attach(self, on_ack: OnAck) -> None:
        paho = self._paho
        aiomqtt_on_publish = paho.on_publish

        def on_publish(c, userdata, mid, reason_code, properties) -> None:
            refused = str(reason_code) if getattr(reason_code, "is_failure", False) else None
            if not on_ack(mid, refused):
                aiomqtt_on_publish(c, userdata, mid, reason_code, properties)

        # Writes. aiomqtt registers paho's socket for writing a turn of the loop later (through
        # call_soon_threadsafe: paho may call from its connect thread), and the packets go out
        # on the turn after that; under load an alarm waited two turns here. Attached, paho is
        # only called from this loop, so the publishes of a pass are written at its end
        # (flush) and the writer is added and removed at once, in step with paho's own flag:
        # a deferred add landing after paho's remove would leave a writer on a socket that
        # may be closed, and its fd number reused.
        loop = asyncio.get_running_loop()

        def register_write(c, userdata, sock) -> None:
            loop.add_writer(sock.fileno(), self.flush)

        def unregister_write(c, userdata, sock) -> None:
            loop.remove_writer(sock.fileno())

        self._saved = (
            aiomqtt_on_publish, paho.on_socket_register_write, paho.on_socket_unregister_write
        )  # fmt: skip
        paho.on_publish = on_publish
        await asyncio.sleep(0)  # a registration aiomqtt deferred before this has been done
        paho.on_socket_register_write = register_write
        paho.on_socket_unregister_write = unregister_write

    def detach(self) -> None:
        """aiomqtt's callbacks back, as before attach()."""
        if self._saved is not None:
            paho = self._paho
            (paho.on_publish, paho.on_socket_register_write,
             paho.on_socket_unregister_write) = self._saved  # fmt: skip
            self._saved = None

    def publish(self, topic: str, payload: bytes, retain: bool) -> int:
        """A QoS 1 publish, queued; its message id. Written by flush() (or when the socket
        next takes it)."""
        info = self._paho.publish(topic, payload, QOS, retain)
        if info.rc != 0:
            raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
        return info.mid

    def flush(self) -> None:
        """Write what is queued; what the socket does not take now goes when it is writable."""
        try:
            coalesce(self._out_packets)
            self._paho.loop_write()
        except Exception as e:  # noqa: BLE001 - a broken socket: as aiomqtt does
            if not self.lost.done():
                self.lost.set_exception(e)


@asynccontextmanager
async def connect(
    cfg: MqttConfig,
    will_topic: str,
    will: bytes,
    on_connack: Callable[[int | None], None],
) -> AsyncIterator[Connection]:
    """Connected to cfg's broker, with a retained QoS 1 will; on_connack(receive_maximum) at
    each CONNACK (MQTT 5: the broker may cap the QoS 1 publishes a client has in flight, EMQX's
    default is 32; one more is a protocol error it may disconnect for). Raises MqttError."""
    proto = aiomqtt.ProtocolVersion.V5 if cfg.protocol == "5" else aiomqtt.ProtocolVersion.V311
    client = aiomqtt.Client(
        cfg.host,
        cfg.port,
        username=cfg.username,
        password=cfg.password,
        identifier=cfg.client_id,
        protocol=proto,
        will=aiomqtt.Will(will_topic, will, qos=QOS, retain=True),
        tls_context=tls_context(cfg),
        keepalive=cfg.keepalive,
        # our window bounds what is in flight; paho keeping its own count costs O(window)
        # per PUBACK (it rescans its queue), so it is told "unlimited"
        max_inflight_messages=0,
        timeout=CONNECT_TIMEOUT_S,
    )
    client.pending_calls_threshold = cfg.window + PENDING_SLACK  # a full window is the plan
    paho = client._client  # noqa: SLF001
    aiomqtt_on_connect = paho.on_connect

    def on_connect(c, userdata, flags, reason, properties=None) -> None:
        on_connack(getattr(properties, "ReceiveMaximum", None))
        aiomqtt_on_connect(c, userdata, flags, reason, properties)

    paho.on_connect = on_connect
    async with client:
        yield Connection(client)
