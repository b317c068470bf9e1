"""The ingest's MQTT seam: every use of paho-mqtt is here (aiomqtt has no manual acknowledgement).

One Inbox is one MQTT 5 session: a stable client id, clean_start false, a week's session expiry,
QoS 1. paho's manual_ack holds each PUBACK back until the worker calls ack() after its batch
committed, so a message is never acknowledged before it is durable; a crash in between only
means the broker sends it again (ingest is idempotent by event id).

paho's network thread fills a queue; the worker drains it. Packet ids belong to one connection:
after a reconnect the broker re-sends what was unacknowledged under the same ids and may reuse
an id we acknowledged. So messages of an earlier connection are dropped from the queue and
never acknowledged (their re-sent copies come again), and ack() skips them.
"""

from __future__ import annotations

import queue
import ssl
import threading
import time
from dataclasses import dataclass

from paho.mqtt import client as paho
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.subscribeoptions import SubscribeOptions

SESSION_EXPIRY_S = 7 * 24 * 3600  # a worker away for a week finds its queue waiting
RECEIVE_MAXIMUM = 1000  # unacknowledged messages the broker may send us: bounds our queue
KEEPALIVE_S = 30
SESSION_TAKEN_OVER = 142  # MQTT 5 DISCONNECT reason: another client connected with our id


class BrokerUnreachable(RuntimeError):
    """No connection to the broker, or it refused ours (exit 3)."""


class SessionTakenOver(RuntimeError):
    """Another client connected with this worker's client id: stop rather than fight over it."""


@dataclass(frozen=True)
class Received:
    topic: str | None  # None: the topic was not UTF-8 (the broker should have refused it)
    payload: bytes
    mid: int
    qos: int
    connection: int  # which connection delivered it: its packet id means nothing on another


class Inbox:
    def __init__(
        self,
        host: str,
        port: int,
        client_id: str,
        topics: list[str],
        *,
        tls: ssl.SSLContext | None = None,
        username: str | None = None,
        password: str | None = None,
        drain: bool = False,
    ) -> None:
        """drain: the session of a worker no longer run; unsubscribe its topics and take only
        what already queued in it."""
        self.host, self.port, self.topics, self.drain = host, port, topics, drain
        self.queue: queue.Queue[Received] = queue.Queue()
        self.connection = 0
        self.connected = threading.Event()
        self.refused: str | None = None
        self.taken_over = False
        c = paho.Client(
            paho.CallbackAPIVersion.VERSION2,
            client_id=client_id,
            protocol=paho.MQTTv5,
            manual_ack=True,
        )
        if tls is not None:
            c.tls_set_context(tls)
        if username:
            c.username_pw_set(username, password)
        c.reconnect_delay_set(0.5, 30)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        self.client = c

    def start(self, timeout: float = 10.0) -> None:
        """Connect and subscribe, or raise BrokerUnreachable; then paho's thread keeps the
        connection (reconnecting with backoff) until close()."""
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S
        props.ReceiveMaximum = RECEIVE_MAXIMUM
        try:
            self.client.connect(
                self.host, self.port, KEEPALIVE_S, clean_start=False, properties=props
            )
        except (OSError, ssl.SSLError) as e:
            raise BrokerUnreachable("%s:%d: %s" % (self.host, self.port, e)) from None
        self.client.loop_start()
        if not self.connected.wait(timeout):
            self.close()
            raise BrokerUnreachable(
                "%s:%d: %s" % (self.host, self.port, self.refused or "no CONNACK in %gs" % timeout)
            )

    def _on_connect(self, client, userdata, flags, reason, properties) -> None:
        if reason.is_failure:
            self.refused = "refused: %s" % reason
            return
        self.connection += 1
        self._drop_queued()
        if self.drain:
            client.unsubscribe(self.topics)
        else:
            client.subscribe([(t, SubscribeOptions(qos=1)) for t in self.topics])
        self.connected.set()

    def _on_disconnect(self, client, userdata, flags, reason, properties) -> None:
        self.connected.clear()
        if getattr(reason, "value", None) == SESSION_TAKEN_OVER:
            self.taken_over = True
            client.disconnect()  # ends paho's reconnect loop: two owners would knock each other

    def _on_message(self, client, userdata, msg) -> None:
        try:
            topic: str | None = msg.topic
        except UnicodeDecodeError:
            topic = None
        self.queue.put(Received(topic, msg.payload, msg.mid, msg.qos, self.connection))

    def _drop_queued(self) -> None:
        try:
            while True:
                self.queue.get_nowait()
        except queue.Empty:
            pass

    def take(self, most: int, wait: float) -> list[Received]:
        """The messages waiting (at most `most`), after waiting up to `wait` s for the first."""
        if self.taken_over:
            raise SessionTakenOver("another client connected with this client id")
        try:
            out = [self.queue.get(timeout=wait)]
        except queue.Empty:
            return []
        while len(out) < most:
            try:
                out.append(self.queue.get_nowait())
            except queue.Empty:
                break
        return [m for m in out if m.connection == self.connection]

    def ack(self, messages: list[Received]) -> None:
        """PUBACK each (in the order received, as MQTT asks), unless its connection is gone."""
        for m in messages:
            if m.qos and m.connection == self.connection:
                self.client.ack(m.mid, m.qos)

    def close(self, forget: bool = False) -> None:
        """forget: end the session on the broker too (a drained worker's)."""
        props = None
        if forget:
            props = Properties(PacketTypes.DISCONNECT)
            props.SessionExpiryInterval = 0
        self.client.disconnect(properties=props)
        self.client.loop_stop()


def held_sessions(
    host: str,
    port: int,
    client_ids: list[str],
    *,
    tls: ssl.SSLContext | None = None,
    username: str | None = None,
    password: str | None = None,
    timeout: float = 5.0,
) -> list[str]:
    """Which of these client ids the broker keeps a session for (CONNACK's session present).
    A probe that finds none ends the session its own connection made; one that finds one
    leaves it as it was: what it was sent is not acknowledged, so the broker sends it again
    to whoever resumes the session. Raises BrokerUnreachable."""
    held = []
    for client_id in client_ids:
        got: dict[str, bool] = {}

        def on_connect(client, userdata, flags, reason, properties, got=got) -> None:
            got["ok"] = not reason.is_failure
            got["present"] = bool(flags.session_present)

        c = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id=client_id,
                        protocol=paho.MQTTv5, manual_ack=True)  # fmt: skip
        if tls is not None:
            c.tls_set_context(tls)
        if username:
            c.username_pw_set(username, password)
        c.on_connect = on_connect
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = SESSION_EXPIRY_S  # a held session keeps its expiry
        try:
            c.connect(host, port, KEEPALIVE_S, clean_start=False, properties=props)
        except (OSError, ssl.SSLError) as e:
            raise BrokerUnreachable("%s:%d: %s" % (host, port, e)) from None
        end = None
        try:
            end_at = time.monotonic() + timeout
            while "ok" not in got and time.monotonic() < end_at:
                c.loop(0.05)  # this thread: no network thread to start and stop per id
            if not got.get("ok"):
                raise BrokerUnreachable("%s:%d: no answer to a session probe as %s"
                                        % (host, port, client_id))  # fmt: skip
            if got["present"]:
                held.append(client_id)
            else:  # the session this probe made: gone with it
                end = Properties(PacketTypes.DISCONNECT)
                end.SessionExpiryInterval = 0
        finally:
            c.disconnect(properties=end)
            c.loop(0.05)  # writes the DISCONNECT, then paho closes the socket
    return held
