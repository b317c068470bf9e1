"""An alternative MQTT wire that needs no patching: an asyncio Protocol of our own speaking the
little of MQTT 3.1.1 and 5 the gateway uses (CONNECT with a will, QoS 1 PUBLISH, PUBACK,
keepalive, DISCONNECT), with paho-mqtt's public Properties and ReasonCode for the MQTT 5 fields.

Same interface as gateway/mqttwire.py (connect -> Connection: publish -> message id, on-ack,
flush, publish_status, lost); chosen with GASGUARD_MQTT_CLIENT=asyncio (publisher.py). Reads
are parsed straight from what the socket gave, a plain PUBACK costs a slice and a dict pop, and
a pass's publishes leave in one write: what the patches buy from paho, by construction.
"""

from __future__ import annotations

import asyncio
import struct
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from .config import MqttConfig
from .mqttwire import CONNECT_TIMEOUT_S, PUBACK_PLAIN_LEN, MqttError, OnAck, tls_context

CONNECT, CONNACK, PUBLISH, PUBACK = 0x10, 0x20, 0x30, 0x40
PINGREQ, PINGRESP, DISCONNECT = 0xC0, 0xD0, 0xE0
PACKET_TYPE = 0xF0  # the packet type's bits of a fixed header's first byte
QOS1 = 0x02  # PUBLISH flags: QoS 1
RETAIN = 0x01
CLEAN, WILL, WILL_QOS1, WILL_RETAIN = 0x02, 0x04, 0x08, 0x20  # CONNECT flags
PASSWORD, USERNAME = 0x40, 0x80
NO_PROPERTIES = b"\x00"  # MQTT 5: a property length of 0
MAX_MID = 65535
FAILURE = 0x80  # MQTT 5 reason codes from this one up are failures; 3.1.1 CONNACK: not 0


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _str(s: str | bytes) -> bytes:
    b = s.encode() if isinstance(s, str) else s
    return struct.pack(">H", len(b)) + b


def _packet(first: int, body: bytes) -> bytes:
    return bytes((first,)) + _varint(len(body)) + body


class _Wire(asyncio.Protocol):
    """The socket's bytes into packets; packets to the Connection."""

    def __init__(self, v5: bool) -> None:
        self.v5 = v5
        self.buf = b""
        self.transport: asyncio.Transport | None = None
        self.connack: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.on_packet: Callable[[int, bytes], None] | None = None
        self.received_at = time.monotonic()

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        buf = self.buf + data if self.buf else data
        pos, end = 0, len(buf)
        self.received_at = time.monotonic()
        while end - pos >= 2:
            first = buf[pos]
            n, shift, i = 0, 0, pos + 1
            while True:  # the remaining length, a variable byte integer
                if i >= end:
                    self.buf = buf[pos:]
                    return
                b = buf[i]
                n |= (b & 0x7F) << shift
                i += 1
                if not b & 0x80:
                    break
                shift += 7
            if end - i < n:
                break
            self._packet(first, buf[i : i + n])
            pos = i + n
        self.buf = buf[pos:]

    def _packet(self, first: int, body: bytes) -> None:
        kind = first & PACKET_TYPE
        if kind == CONNACK:
            if not self.connack.done():
                self.connack.set_result(body)
        elif self.on_packet is not None:
            self.on_packet(kind, body)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        err = MqttError("connection lost" + (": %r" % exc if exc else ""))
        for fut in (self.connack, self.lost):
            if not fut.done():
                fut.set_exception(err)


class Connection:
    """A connected client: the same calls as mqttwire.Connection."""

    def __init__(self, wire: _Wire, keepalive: int) -> None:
        self._wire = wire
        self.lost = wire.lost
        self._v5 = wire.v5
        self._out: list[bytes] = []
        self._mid = 0
        self._on_ack: OnAck | None = None
        self._waiting: dict[int, asyncio.Future[None]] = {}  # publish_status's PUBACKs
        self._keepalive = keepalive
        self._sent_at = time.monotonic()
        self._ping_at: float | None = None  # a PINGREQ not answered yet, sent then
        self._timer: asyncio.TimerHandle | None = None
        wire.on_packet = self._packet
        lost = self.lost
        lost.add_done_callback(self._on_lost)
        if keepalive:
            self._timer = asyncio.get_running_loop().call_later(keepalive / 2, self._tick)

    def _on_lost(self, f: asyncio.Future) -> None:
        if not f.cancelled():
            err = f.exception()
            for w in self._waiting.values():
                if not w.done():
                    w.set_exception(err or MqttError("connection lost"))
        if self._timer is not None:
            self._timer.cancel()

    def _tick(self) -> None:
        """Keepalive: a PINGREQ when we have been quiet for half of it; no answer within it
        is a dead connection (as paho judges)."""
        now = time.monotonic()
        if self._ping_at is not None and now - self._ping_at >= self._keepalive:
            self._fail(MqttError("no PINGRESP within the keepalive"))
            return
        if self._ping_at is None and now - self._sent_at >= self._keepalive / 2:
            self._ping_at = now
            self._out.append(bytes((PINGREQ, 0)))
            self.flush()
        self._timer = asyncio.get_running_loop().call_later(self._keepalive / 2, self._tick)

    def _fail(self, err: Exception) -> None:
        if not self.lost.done():
            self.lost.set_exception(err)
        t = self._wire.transport
        if t is not None:
            t.abort()

    def _packet(self, kind: int, body: bytes) -> None:
        if kind == PUBACK:
            mid = body[0] << 8 | body[1]
            refused = None
            if len(body) > PUBACK_PLAIN_LEN and body[2] >= FAILURE:
                refused = str(ReasonCode(PacketTypes.PUBACK, identifier=body[2]))
            if self._on_ack is None or not self._on_ack(mid, refused):
                w = self._waiting.pop(mid, None)
                if w is not None and not w.done():
                    if refused:
                        w.set_exception(MqttError("publish refused: %s" % refused))
                    else:
                        w.set_result(None)
        elif kind == PINGRESP:
            self._ping_at = None
        elif kind == DISCONNECT:
            self._fail(MqttError("disconnected by the broker"))

    async def publish_status(self, topic: str, payload: bytes) -> None:
        mid = self.publish(topic, payload, True)
        fut = self._waiting[mid] = asyncio.get_running_loop().create_future()
        self.flush()
        await fut

    async def attach(self, on_ack: OnAck) -> None:
        self._on_ack = on_ack

    def detach(self) -> None:
        self._on_ack = None

    def publish(self, topic: str, payload: bytes, retain: bool) -> int:
        if self.lost.done():
            raise MqttError("connection lost")
        mid = self._mid % MAX_MID + 1
        self._mid = mid
        head = _str(topic) + struct.pack(">H", mid) + (NO_PROPERTIES if self._v5 else b"")
        self._out.append(
            bytes((PUBLISH | QOS1 | (RETAIN if retain else 0),))
            + _varint(len(head) + len(payload)) + head + payload
        )  # fmt: skip
        return mid

    def flush(self) -> None:
        if not self._out:
            return
        t = self._wire.transport
        if t is None:
            self._out.clear()
            return
        data = b"".join(self._out)
        self._out.clear()
        t.write(data)
        self._sent_at = time.monotonic()

    def disconnect(self) -> None:
        t = self._wire.transport
        if self._timer is not None:
            self._timer.cancel()
        if t is not None and not t.is_closing():
            self.flush()
            t.write(bytes((DISCONNECT, 0)))
            t.close()


def _connect_packet(cfg: MqttConfig, v5: bool, will_topic: str, will: bytes) -> bytes:
    flags = CLEAN | WILL | WILL_QOS1 | WILL_RETAIN
    if cfg.username is not None:
        flags |= USERNAME
    if cfg.password is not None:
        flags |= PASSWORD
    body = _str("MQTT") + bytes((5 if v5 else 4, flags)) + struct.pack(">H", cfg.keepalive)
    if v5:
        body += NO_PROPERTIES
    body += _str(cfg.client_id or "")
    if v5:
        body += NO_PROPERTIES  # the will's
    body += _str(will_topic) + _str(will)
    if cfg.username is not None:
        body += _str(cfg.username)
    if cfg.password is not None:
        body += _str(cfg.password)
    return _packet(CONNECT, body)


@asynccontextmanager
async def connect(
    cfg: MqttConfig,
    will_topic: str,
    will: bytes,
    on_connack: Callable[[int | None], None],
) -> AsyncIterator[Connection]:
    """As mqttwire.connect: connected to cfg's broker with a retained QoS 1 will."""
    v5 = cfg.protocol == "5"
    loop = asyncio.get_running_loop()
    ctx = tls_context(cfg)
    wire: _Wire | None = None
    try:
        async with asyncio.timeout(CONNECT_TIMEOUT_S):
            _, wire = await loop.create_connection(
                lambda: _Wire(v5), cfg.host, cfg.port, ssl=ctx,
                server_hostname=cfg.host if ctx is not None else None,
            )  # fmt: skip
            assert wire.transport is not None
            wire.transport.write(_connect_packet(cfg, v5, will_topic, will))
            ack = await wire.connack
    except (OSError, TimeoutError, MqttError) as e:
        if wire is not None:
            if wire.transport is not None:
                wire.transport.abort()
            if wire.lost.done():
                wire.lost.exception()  # retrieved: the error raised here says it
        if isinstance(e, MqttError):
            raise
        raise MqttError("connect to %s:%s: %r" % (cfg.host, cfg.port, e)) from None
    if len(ack) < 2 or (ack[1] >= FAILURE if v5 else ack[1] != 0):
        if wire.transport is not None:
            wire.transport.abort()
        why = str(ReasonCode(PacketTypes.CONNACK, identifier=ack[1])) if v5 else ack[1]
        raise MqttError("connection refused: %s" % why)
    receive_maximum = None
    if v5 and len(ack) > 2:
        props = Properties(PacketTypes.CONNACK)
        props.unpack(ack[2:])
        receive_maximum = getattr(props, "ReceiveMaximum", None)
    on_connack(receive_maximum)
    conn = Connection(wire, cfg.keepalive)
    try:
        yield conn
    finally:
        conn.disconnect()
