"""MQTT to the regulator (aiomqtt): the outbox drained with a window of QoS 1 publishes in
flight, each device's rows in order, devices in turn and alarms first (FairQueue), a row deleted
only after its PUBACK; retained device states; the gateway's retained status with a last will;
reconnect at once, then with a short capped backoff and jitter.

After a reconnect everything still in the outbox is sent again from the oldest row, so a publish
whose PUBACK was lost arrives twice at worst, with the same CloudEvents id (regulators dedupe).

A publish the broker refuses (an MQTT 5 PUBACK with a failure reason code: an ACL, a quota) is
not published: its row stays in the outbox (a retained state stays pending) and its topic is held
while the other topics go on; one publish to it is tried again after a backoff (refusals.py).
MQTT 3.1.1 has no way to say so: a 3.1.1 broker acknowledges a publish it drops (mosquitto) or
closes the connection, so only MQTT 5 can keep a refused event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import ssl
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import aiomqtt
import orjson
from paho.mqtt.client import PUBLISH
from paho.mqtt.enums import MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from gasguard.protocol import cloudevents

from . import schemas
from .config import MqttConfig
from .fairqueue import FairQueue
from .outbox import OutboxWorker, Row
from .refusals import Refusals

log = logging.getLogger("gasguard.gateway.mqtt")

# Reconnect: the first attempt at once, then a backoff from BACKOFF_MIN_S doubling to
# BACKOFF_MAX_S, each delay drawn between half and all of it (jitter). A broker that comes back
# gets the backlog within BACKOFF_MAX_S (the issue asks for about 2 s). The cost: while a broker
# is down every gateway tries it about once a second (a refused TCP connect is cheap), and when a
# broker restarts under N gateways they arrive spread over half a second to a second, not at once;
# a city's broker behind a load balancer takes thousands of connects a second. mqtt.reconnect_max_s
# raises the cap where a broker needs gentler treatment.
BACKOFF_MIN_S = 0.1
BACKOFF_MAX_S = 1.0
STABLE_S = 5.0  # a connection up this long resets the backoff (one dropped at once does not)
DELETE_BATCH = 512
# publishes in flight beyond the window that only alarms may use: with the window full of
# routine events, an alarm would otherwise wait for a PUBACK before it could go. Alarms may use
# half of it, urgent ones all of it: a flood of gas alarms does not hold up a valve closing
ALARM_RESERVE = 16


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
        if cmd != "PUBACK" or len(packet) != 2:
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
    if len(out_packets) < 2:
        return
    merged: list[dict] = []
    run: list[dict] = []
    for p in [*out_packets, None]:
        if p is not None and p["pos"] == 0 and p["qos"] > 0 and p["command"] & 0xF0 == PUBLISH:
            run.append(p)
            continue
        if len(run) > 1:
            data = b"".join(r["packet"] for r in run)
            merged.append(
                {"command": PUBLISH, "mid": 0, "qos": 1, "pos": 0, "to_process": len(data),
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


def dumps(payload: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON (orjson: the encoding was a tenth of the gateway's CPU per event)."""
    return orjson.dumps(payload)


class Publisher:
    def __init__(
        self,
        cfg: MqttConfig,
        site: str,
        gateway_id: str,
        version: str,
        outbox: OutboxWorker,
        states: Callable[[bool], dict[str, bytes]],
        devices_online: Callable[[], int],
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.gateway_id = gateway_id
        self.version = version
        self.outbox = outbox
        self.take_states = states  # (all) -> {device: retained state payload} changed or all
        self.devices_online = devices_online
        self.identity: tuple[str, int] | None = None  # the gateway's instance id and boot
        self.closing = False  # the gateway is stopping: no more reconnects
        self.status_topic = cloudevents.topic_gateway_status(site, gateway_id)
        self.wake = asyncio.Event()
        self.connected = False
        self.published = 0
        self.refusals = Refusals()  # topics the broker refuses (MQTT 5), across connections
        self.on_latency: Callable[[float], None] | None = None  # ms, for the metrics
        self.connects = 0
        self.last_error: str | None = None
        self.latency_ms: deque[float] = deque(maxlen=2000)  # commit -> PUBACK, recent rows
        self.alarm_latency_ms: deque[float] = deque(maxlen=2000)
        self._client: aiomqtt.Client | None = None
        self._pending_states: dict[str, bytes] = {}
        self.queue = FairQueue()
        self._fill: Callable[[], None] | None = None  # while connected: send what fits now
        self._scanned = False  # the outbox's rows from before this start are known
        self.receive_maximum: int | None = None  # the broker's, from its CONNACK (MQTT 5)
        self.window = cfg.window  # in use: the configured one within the broker's cap
        self.inflight_peak = 0  # most publishes in flight at once, this connection

    def committed(self, rows: list[Row]) -> None:
        """Rows just committed to the outbox, in id order: sent at once if the window has room
        (a turn of the event loop sooner than waking the pump)."""
        self.queue.committed(rows)
        if self._fill is not None:
            self._fill()
        self.wake.set()

    def _status(self, online: bool) -> bytes:
        ce = cloudevents.gateway_status(
            self.site,
            self.gateway_id,
            online,
            time.time(),
            self.version,
            self.devices_online() if online else 0,
        )
        if self.identity is not None:  # for diagnosis (docs/gateway.md)
            ce["data"]["instance"], ce["data"]["boot"] = self.identity
        return dumps(schemas.check(ce))

    def _client_for(self) -> aiomqtt.Client:
        c = self.cfg
        proto = aiomqtt.ProtocolVersion.V5 if c.protocol == "5" else aiomqtt.ProtocolVersion.V311
        client = aiomqtt.Client(
            c.host,
            c.port,
            username=c.username,
            password=c.password,
            identifier=c.client_id,
            protocol=proto,
            will=aiomqtt.Will(self.status_topic, self._status(False), qos=1, retain=True),
            tls_context=tls_context(c),
            keepalive=c.keepalive,
            # our window bounds what is in flight; paho keeping its own count costs O(window)
            # per PUBACK (it rescans its queue), so it is told "unlimited"
            max_inflight_messages=0,
            timeout=10,
        )
        client.pending_calls_threshold = c.window + 64  # a full window is the plan, not a jam
        paho = client._client  # noqa: SLF001
        aiomqtt_on_connect = paho.on_connect

        def on_connect(c, userdata, flags, reason, properties=None) -> None:
            # MQTT 5: the broker may cap the QoS 1 publishes a client has in flight (EMQX's
            # default is 32); one more is a protocol error it may disconnect for
            self.receive_maximum = getattr(properties, "ReceiveMaximum", None)
            aiomqtt_on_connect(c, userdata, flags, reason, properties)

        paho.on_connect = on_connect
        return client

    async def run(self) -> None:
        backoff = 0.0  # the first reconnect at once
        cap = self.cfg.reconnect_max_s
        while not self.closing:
            up_at = None
            try:
                async with self._client_for() as client:
                    BufferedReads(client._client)  # noqa: SLF001
                    PlainPubacks(client._client)  # noqa: SLF001
                    self._client = client
                    self.connected = True
                    self.connects += 1
                    self.last_error = None
                    up_at = time.monotonic()
                    log.info("connected", extra={"broker": self.cfg.url})
                    await client.publish(self.status_topic, self._status(True), qos=1, retain=True)
                    await self._pump(client)
            except aiomqtt.MqttError as e:
                self.last_error = str(e)
                if self.connected:
                    log.warning("broker connection lost", extra={"error": str(e)})
            finally:
                self.connected = False
                self._client = None
            if up_at is not None and time.monotonic() - up_at >= STABLE_S:
                backoff = 0.0  # it was up a while: this loss is news, try again at once
            # jitter: many gateways reconnecting after a broker restart spread out
            delay = random.uniform(backoff / 2, backoff)
            log.info("reconnecting", extra={"in_s": round(delay, 2), "broker": self.cfg.url})
            await asyncio.sleep(delay)
            backoff = min(max(backoff * 2, BACKOFF_MIN_S), cap)

    async def stop(self) -> None:
        """Clean shutdown: say offline ourselves (the will is only for a lost connection)."""
        c = self._client
        if c is not None and self.connected:
            try:
                await c.publish(self.status_topic, self._status(False), qos=1, retain=True)
            except aiomqtt.MqttError:
                pass

    async def _pump(self, client: aiomqtt.Client) -> None:
        """Publish straight through paho and match PUBACKs by message id.

        aiomqtt's publish() costs a task, an Event, a wait_for and a scan of its pending calls
        per message, which made the publisher, not the broker, the gateway's limit. Here a
        publish is one paho call and a dict entry; paho's on_publish (run in this event loop by
        aiomqtt's socket callbacks) hands the row back. A lost connection is seen at once
        through aiomqtt's disconnected future instead of at a publish timeout.
        """
        # routine rows get the window, alarms the reserve beyond it, together within the
        # broker's Receive Maximum (65,535 when it names none)
        limit = self.receive_maximum or 65535
        reserve = min(ALARM_RESERVE, limit // 4)
        window = self.window = max(1, min(self.cfg.window, limit - reserve))
        self.inflight_peak = 0
        paho = client._client  # noqa: SLF001 - the fast path needs paho's publish and mids
        disconnected = client._disconnected  # noqa: SLF001
        inflight: dict[int, Row] = {}  # mid -> row
        finished: list[Row] = []  # rows whose PUBACK came back
        acked: list[Row] = []
        queue = self.queue
        refusals = self.refusals
        spells = refusals.spells  # topic -> its spell: a topic the broker refuses is held
        queue.restart()  # everything not yet deleted, from each device's oldest row
        if not self._scanned:
            queue.known(await self.outbox.newest())
            self._scanned = True
        wake = self.wake
        aiomqtt_on_publish = paho.on_publish

        def on_publish(c, userdata, mid, reason_code, properties) -> None:
            row = inflight.pop(mid, None)
            if row is None:  # the gateway status, published through aiomqtt
                aiomqtt_on_publish(c, userdata, mid, reason_code, properties)
                return
            if getattr(reason_code, "is_failure", False):
                refused(row, str(reason_code))
            else:
                finished.append(row)
                if spells and row.topic in spells and refusals.accepted(row.topic):
                    queue.release(row.topic)
            wake.set()

        def refused(row: Row, reason: str) -> None:
            """Not published: the row stays in the outbox (a state stays pending) and its topic
            is held; the other topics go on."""
            if row.id:
                queue.requeue(row)
                queue.hold(row.topic)
            else:  # a newer state taken meanwhile goes instead
                self._pending_states.setdefault(row.device, row.payload)
            delay = refusals.refused(row.topic, reason, not row.id, row.ce_id)
            if delay is not None:
                loop.call_later(delay, wake.set)

        def send(topic: str, payload: bytes, retain: bool, row: Row) -> None:
            info = paho.publish(topic, payload, 1, retain)
            if info.rc != 0:
                raise aiomqtt.MqttCodeError(info.rc, "Could not publish message")
            inflight[info.mid] = row

        paho.on_publish = on_publish

        # Writes. aiomqtt registers paho's socket for writing a turn of the loop later (through
        # call_soon_threadsafe: paho may call from its connect thread), and the packets go out
        # on the turn after that; under load an alarm waited two turns here. In the pump paho
        # is only called from this loop, so the publishes of a pass are written at its end
        # (flush) and the writer is added and removed at once, in step with paho's own flag:
        # a deferred add landing after paho's remove would leave a writer on a socket that
        # may be closed, and its fd number reused.
        loop = asyncio.get_running_loop()
        aiomqtt_register = paho.on_socket_register_write
        aiomqtt_unregister = paho.on_socket_unregister_write

        out_packets = paho._out_packet  # noqa: SLF001

        def writable() -> None:
            try:
                coalesce(out_packets)
                paho.loop_write()
            except Exception as e:  # noqa: BLE001 - a broken socket: as aiomqtt does
                if not disconnected.done():
                    disconnected.set_exception(e)

        def register_write(c, userdata, sock) -> None:
            loop.add_writer(sock.fileno(), writable)

        def unregister_write(c, userdata, sock) -> None:
            loop.remove_writer(sock.fileno())

        await asyncio.sleep(0)  # a registration aiomqtt deferred before this has been done
        paho.on_socket_register_write = register_write
        paho.on_socket_unregister_write = unregister_write

        def send_ready() -> int:
            """Send the queued rows that fit in the window (alarms: in the window and half
            its reserve; urgent ones: all of it) and write them; how many went."""
            room = window - len(inflight)
            rows = queue.take(room, room + reserve // 2, room + reserve)
            for r in rows:
                send(r.topic, r.payload, False, r)
            if rows:
                writable()  # what the socket does not take now goes when it is writable
                if len(inflight) > self.inflight_peak:
                    self.inflight_peak = len(inflight)
            return len(rows)

        def send_states(room: int) -> None:
            states = self._pending_states
            sent = 0
            for dev in list(states):
                if sent >= room:
                    break
                topic = cloudevents.topic_state(self.site, dev)
                if spells and refusals.held(topic):
                    continue  # refused: tried again when its backoff is over
                payload = states.pop(dev)
                send(topic, payload, True, Row(0, "", dev, topic, payload, 0.0, 0))
                sent += 1
            if sent:
                writable()

        def fill() -> None:
            try:
                send_ready()
            except aiomqtt.MqttError:
                # the connection is going: the pump sees it; an unsent row stays in the outbox
                self._fill = None

        deleting: set[asyncio.Future] = set()

        def delete(rows: list[Row]) -> None:
            """Not awaited: the pump goes on publishing while the writer thread deletes (after
            the group commits queued ahead of it)."""
            fut = self.outbox.delete([r.id for r in rows])
            deleting.add(fut)
            n = len(rows)
            fut.add_done_callback(lambda f: deleted(f, n))

        def deleted(f: asyncio.Future, n: int) -> None:
            deleting.discard(f)
            err = "cancelled" if f.cancelled() else f.exception()
            if err is not None:
                # they stay in the outbox and go out again after the next reconnect
                log.error("outbox delete failed", extra={"error": repr(err)})
            else:
                self.published += n

        def on_disconnect(f: asyncio.Future) -> None:
            if not f.cancelled():
                f.exception()  # seen here: aiomqtt raises it from its own context as well
            wake.set()

        disconnected.add_done_callback(on_disconnect)
        self._pending_states = self.take_states(True)  # the broker may have lost them
        self._fill = fill
        try:
            while True:
                if disconnected.done():
                    raise aiomqtt.MqttError("connection lost")
                wake.clear()  # before looking: a commit from now on wakes us again
                self._pending_states.update(self.take_states(False))
                room = window - len(inflight)
                if spells:
                    for topic in refusals.due():
                        queue.probe(topic)
                if self._pending_states and room > 0:  # in the window too: within the cap
                    send_states(room)
                while True:
                    want = queue.wanted() if len(inflight) < window else None
                    if want:
                        queue.filled(await self.outbox.fetch_devices(want, queue.batch))
                    if not send_ready():
                        break
                if not finished:
                    await wake.wait()
                    continue
                now = time.time()  # wall, as a row's created (it outlives a restart)
                batch, finished[:] = finished[:], []
                for r in batch:
                    if r.id == 0:
                        continue
                    acked.append(r)
                    ms = (now - r.created) * 1000
                    self.latency_ms.append(ms)
                    if self.on_latency is not None:
                        self.on_latency(ms)
                    if r.priority:
                        self.alarm_latency_ms.append(ms)
                if acked and (len(acked) >= DELETE_BATCH or len(inflight) < window // 2):
                    delete(acked)
                    acked = []
        finally:
            self._fill = None
            paho.on_publish = aiomqtt_on_publish
            paho.on_socket_register_write = aiomqtt_register
            paho.on_socket_unregister_write = aiomqtt_unregister
            inflight.clear()  # not PUBACKed: still in the outbox, sent again after a reconnect
            refusals.lost()
            # PUBACKed before the connection dropped (some maybe in the very read that saw the
            # broker close): do not send them again
            acked += [r for r in finished if r.id]
            finished.clear()
            if acked:
                delete(acked)
            # gone before the next connection reads the outbox again
            await asyncio.gather(*deleting, return_exceptions=True)
