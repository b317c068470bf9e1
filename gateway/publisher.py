"""MQTT to the regulator: the outbox drained with a window of QoS 1 publishes in
flight, each device's rows in order, devices in turn and alarms first (FairQueue), a row deleted
only after its PUBACK; retained device states; the gateway's retained status with a last will;
reconnect at once, then with a short capped backoff and jitter.

After a reconnect everything still in the outbox is sent again from the oldest row, so a publish
whose PUBACK was lost arrives twice at worst, with the same CloudEvents id (regulators dedupe).

The retained status (online, with a last will saying offline) is published at each connect and
again, by the pump, when its counts (boards online, outbox depth, refused frames, dead letters)
changed: they are looked at every mqtt.status_every_s, so at most one status a period, and it
goes behind alarms (pump.py).

A publish the broker refuses (an MQTT 5 PUBACK with a failure reason code: an ACL, a quota) is
not published: its row stays in the outbox (a retained state stays pending) and its topic is held
while the other topics go on; one publish to it is tried again after a backoff (refusals.py).
MQTT 3.1.1 has no way to say so: a 3.1.1 broker acknowledges a publish it drops (mosquitto) or
closes the connection, so only MQTT 5 can keep a refused event.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import time
from collections import deque
from collections.abc import Callable
from typing import Any

import orjson

from gasguard.protocol import cloudevents

from . import mqttproto, mqttwire, schemas
from .config import MqttConfig
from .fairqueue import FairQueue
from .mqttwire import MqttError
from .outbox import OutboxWorker, Row
from .pump import Pump
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
# the MQTT client: aiomqtt on paho with its patches (mqttwire), or our own asyncio protocol
# (mqttproto), measured against each other on gateway-throughput (docs/design.md)
CLIENTS = {"paho": mqttwire.connect, "asyncio": mqttproto.connect}
CLIENT_ENV = "GASGUARD_MQTT_CLIENT"


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
        figures: Callable[[], dict[str, int]],
    ) -> None:
        self.cfg = cfg
        self.site = site
        self.gateway_id = gateway_id
        self.version = version
        self.outbox = outbox
        self.take_states = states  # (all) -> {device: retained state payload} changed or all
        # () -> {devices_online, outbox, refused}: the gateway's counts for its status
        self.take_figures = figures
        self.dead_letters = 0  # dead letters the broker acknowledged, since start
        self.dead_topic = cloudevents.topic_rejected(site, gateway_id)
        self.status_sent: dict[str, int] | None = None  # the counts in the last online status
        self.statuses = 0  # online statuses published, at connects and when counts changed
        self.identity: tuple[str, int] | None = None  # the gateway's instance id and boot
        self.closing = False  # the gateway is stopping: no more reconnects
        self.stopping = False  # "offline" said: no online status may follow it
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
        client = os.environ.get(CLIENT_ENV) or "paho"
        if client not in CLIENTS:
            raise ValueError("%s=%s: one of %s" % (CLIENT_ENV, client, ", ".join(CLIENTS)))
        self._connect = CLIENTS[client]
        self._conn: mqttwire.Connection | mqttproto.Connection | None = None
        self.pending_states: dict[str, bytes] = {}  # device -> retained state, not sent yet
        # commissioning records (gateway/records.py): device -> (row id, payload), the newest
        # of each device (sent again at every connect) and those not sent on this connection
        self.records: dict[str, tuple[int, bytes]] = {}
        self.pending_records: dict[str, tuple[int, bytes]] = {}
        self.on_record_delivered: Callable[[int], None] | None = None
        self.records_published = 0  # records the broker acknowledged, since start
        self.queue = FairQueue()
        self.fill: Callable[[], None] | None = None  # while connected: send what fits now
        self.scanned = False  # the outbox's rows from before this start are known
        self.receive_maximum: int | None = None  # the broker's, from its CONNACK (MQTT 5)
        self.window = cfg.window  # in use: the configured one within the broker's cap
        self.inflight_peak = 0  # most publishes in flight at once, this connection

    def committed(self, rows: list[Row]) -> None:
        """Rows just committed to the outbox, in id order: sent at once if the window has room
        (a turn of the event loop sooner than waking the pump)."""
        self.queue.committed(rows)
        if self.fill is not None:
            self.fill()
        self.wake.set()

    def offer_record(self, device: str, row_id: int, payload: bytes) -> None:
        """A device's newest commissioning record: on its retained topic now, and at every
        connect from now on."""
        self.records[device] = self.pending_records[device] = (row_id, payload)
        self.wake.set()

    def record_delivered(self, row_id: int) -> None:
        self.records_published += 1
        if self.on_record_delivered is not None:
            self.on_record_delivered(row_id)

    def figures(self) -> dict[str, int]:
        """The counts the retained status carries."""
        f = self.take_figures()
        f["dead_letters"] = self.dead_letters
        return f

    def _status(self, online: bool, figures: dict[str, int] | None = None) -> bytes:
        """figures None: the last will's status, made at connect, so without counts (they
        would be stale when the broker sends it); a regulator keeps the last ones it had."""
        f = figures or {}
        ce = cloudevents.gateway_status(
            self.site,
            self.gateway_id,
            online,
            time.time(),
            self.version,
            f.get("devices_online", 0) if online else 0,
            f,
        )
        if self.identity is not None:  # for diagnosis (docs/gateway.md)
            ce["data"]["instance"], ce["data"]["boot"] = self.identity
        return dumps(schemas.check(ce))

    def online_status(self) -> bytes:
        """The online status with the counts as they are now (remembered: the pump publishes
        it again only once they changed)."""
        figures = self.figures()
        payload = self._status(True, figures)
        self.status_sent = figures
        self.statuses += 1
        return payload

    def _connack(self, receive_maximum: int | None) -> None:
        self.receive_maximum = receive_maximum  # the broker's cap on QoS 1 publishes in flight

    async def run(self) -> None:
        backoff = 0.0  # the first reconnect at once
        cap = self.cfg.reconnect_max_s
        while not self.closing:
            up_at = None
            try:
                async with self._connect(
                    self.cfg, self.status_topic, self._status(False), self._connack
                ) as conn:
                    self._conn = conn
                    self.connected = True
                    self.connects += 1
                    self.last_error = None
                    up_at = time.monotonic()
                    log.info("connected", extra={"broker": self.cfg.url})
                    await conn.publish_status(self.status_topic, self.online_status())
                    await Pump(self, conn).run()
            except MqttError as e:
                self.last_error = str(e)
                if self.connected:
                    log.warning("broker connection lost", extra={"error": str(e)})
            finally:
                self.connected = False
                self._conn = None
            if up_at is not None and time.monotonic() - up_at >= STABLE_S:
                backoff = 0.0  # it was up a while: this loss is news, try again at once
            # jitter: many gateways reconnecting after a broker restart spread out
            delay = random.uniform(backoff / 2, backoff)
            log.info("reconnecting", extra={"in_s": round(delay, 2), "broker": self.cfg.url})
            await asyncio.sleep(delay)
            backoff = min(max(backoff * 2, BACKOFF_MIN_S), cap)

    async def stop(self) -> None:
        """Clean shutdown: say offline ourselves (the will is only for a lost connection)."""
        c = self._conn
        self.stopping = True
        if c is not None and self.connected:
            try:
                # offline, with the counts it leaves behind (its outbox waits for the next start)
                await c.publish_status(self.status_topic, self._status(False, self.figures()))
            except MqttError:
                pass
