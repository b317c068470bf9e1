"""One connection's publishing: the outbox's rows and the retained device states sent through
the wire (gateway/mqttwire.py) within a window of QoS 1 publishes in flight, each PUBACK
matched to its row by message id, acknowledged rows deleted in batches; and the gateway's
retained status again when its counts changed (looked at every mqtt.status_every_s), after
the alarms, in a slot of its own beyond the window."""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from gasguard.protocol import cloudevents

from .mqttwire import RECEIVE_MAXIMUM, Connection, MqttError
from .outbox import ROUTINE, Row

if TYPE_CHECKING:
    from . import mqttproto
    from .publisher import Publisher

log = logging.getLogger("gasguard.gateway.mqtt")

DELETE_BATCH = 512
# publishes in flight beyond the window that only alarms may use: with the window full of
# routine events, an alarm would otherwise wait for a PUBACK before it could go. Alarms may use
# half of it, urgent ones all of it: a flood of gas alarms does not hold up a valve closing
ALARM_RESERVE = 16
RESERVE_SHARE = 4  # the reserve is at most a quarter of the broker's Receive Maximum
STATE_ROW_ID = 0  # a retained state is not an outbox row: nothing to delete once acknowledged
# a commissioning record (retained, gateway/records.py): not an outbox row either; its Row's
# ce_id holds its row id in records.sqlite, marked delivered at the PUBACK
RECORD_ROW_ID = -1
# one publish in flight beyond the window and the alarms' reserve, for the status: a backlog
# keeps the window full, and the status must still go (its outbox depth is the news then)
STATUS_SLOT = 1


class Pump:
    """Publishes until the connection is lost (then raises MqttError); what was in flight stays
    in the outbox and goes again after the next connect."""

    def __init__(self, pub: Publisher, conn: Connection | mqttproto.Connection) -> None:
        self.pub = pub
        self.conn = conn
        # routine rows get the window, alarms the reserve beyond it, together within the
        # broker's Receive Maximum
        limit = pub.receive_maximum or RECEIVE_MAXIMUM
        self.reserve = min(ALARM_RESERVE, limit // RESERVE_SHARE)
        self.window = pub.window = max(1, min(pub.cfg.window, limit - self.reserve - STATUS_SLOT))
        pub.inflight_peak = 0
        self.inflight: dict[int, Row] = {}  # mid -> row
        self.finished: list[Row] = []  # rows whose PUBACK came back
        self.acked: list[Row] = []  # finished rows not yet deleted
        self.queue = pub.queue
        self.refusals = pub.refusals
        self.spells = pub.refusals.spells  # topic -> its spell: a refused topic is held
        self.deleting: set[asyncio.Future] = set()
        self.loop = asyncio.get_running_loop()
        self.status_due = False  # time to look at the status's counts again
        self.status_mid: int | None = None  # the status publish awaiting its PUBACK
        self.status_timer: asyncio.TimerHandle | None = None

    # --- acks --------------------------------------------------------------------------------

    def on_ack(self, mid: int, refused: str | None) -> bool:
        row = self.inflight.pop(mid, None)
        if row is None:
            if mid != self.status_mid:
                return False  # the status at connect, published through the client itself
            self.status_mid = None
            if refused is not None:  # again at the next look; nothing is held for it
                self.pub.status_sent = None
                log.warning("broker refused the gateway status",
                            extra={"topic": self.pub.status_topic, "reason": refused})  # fmt: skip
            self.pub.wake.set()
            return True
        if refused is not None:
            self.refused(row, refused)
        else:
            self.finished.append(row)
            spells = self.spells
            if spells and row.topic in spells and self.refusals.accepted(row.topic):
                self.queue.release(row.topic)
        self.pub.wake.set()
        return True

    def refused(self, row: Row, reason: str) -> None:
        """Not published: the row stays in the outbox (a state stays pending) and its topic is
        held; the other topics go on."""
        if row.id > 0:
            self.queue.requeue(row)
            self.queue.hold(row.topic)
        elif row.id == RECORD_ROW_ID:  # a newer record taken meanwhile goes instead
            self.pub.pending_records.setdefault(row.device, (int(row.ce_id), row.payload))
        else:  # a newer state taken meanwhile goes instead
            self.pub.pending_states.setdefault(row.device, row.payload)
        delay = self.refusals.refused(row.topic, reason, row.id <= 0, row.ce_id)
        if delay is not None:
            self.loop.call_later(delay, self.pub.wake.set)

    # --- sends -------------------------------------------------------------------------------

    def send(self, topic: str, payload: bytes, retain: bool, row: Row) -> None:
        self.inflight[self.conn.publish(topic, payload, retain)] = row

    def send_ready(self) -> int:
        """Send the queued rows that fit in the window (alarms: in the window and half its
        reserve; urgent ones: all of it) and write them; how many went."""
        inflight = self.inflight
        room = self.window - len(inflight)
        reserve = self.reserve
        rows = self.queue.take(room, room + reserve // 2, room + reserve)
        for r in rows:
            self.send(r.topic, r.payload, False, r)
        if rows:
            self.conn.flush()
            if len(inflight) > self.pub.inflight_peak:
                self.pub.inflight_peak = len(inflight)
        return len(rows)

    def send_states(self, room: int) -> None:
        """Devices' retained states, each device's newest."""
        self._send_retained(self.pub.pending_states, cloudevents.topic_state, room,
                            lambda payload: (STATE_ROW_ID, "", payload))  # fmt: skip

    def send_records(self, room: int) -> None:
        """Commissioning records, retained on their device's topic: each device's newest."""
        self._send_retained(self.pub.pending_records, cloudevents.topic_commissioning, room,
                            lambda held: (RECORD_ROW_ID, str(held[0]), held[1]))  # fmt: skip

    def _send_retained(self, pending: dict, topic_of: Any, room: int, row_of: Any) -> None:
        """Up to `room` of a per-device map of retained messages, each taken off the map as it
        goes; a topic the broker refused is left for when its backoff is over."""
        sent = 0
        for dev in list(pending):
            if sent >= room:
                break
            topic = topic_of(self.pub.site, dev)
            if self.spells and self.refusals.held(topic):
                continue
            row_id, ce_id, payload = row_of(pending.pop(dev))
            row = Row(
                id=row_id, ce_id=ce_id, device=dev, topic=topic, payload=payload,
                created=0.0, priority=ROUTINE,
            )  # fmt: skip
            self.send(topic, payload, True, row)
            sent += 1
        if sent:
            self.conn.flush()

    def fill(self) -> None:
        """Rows just committed: sent at once if the window has room."""
        try:
            self.send_ready()
        except MqttError:
            # the connection is going: the pump sees it; an unsent row stays in the outbox
            self.pub.fill = None

    def _status_tick(self) -> None:
        self.status_due = True
        self.pub.wake.set()

    def send_status(self) -> None:
        """The retained status again if its counts changed since the last one. Behind the
        alarms: not while one waits for room (the next PUBACK brings us back), and in a slot of
        its own (not in self.inflight), so it takes no row's or alarm's room. Looked at once a
        period, whatever the counts do."""
        pub = self.pub
        if self.status_mid is not None or pub.stopping or self.queue.alarm_waiting():
            return
        self.status_due = False
        self.status_timer = self.loop.call_later(pub.cfg.status_every_s, self._status_tick)
        if pub.figures() == pub.status_sent:
            return
        self.status_mid = self.conn.publish(pub.status_topic, pub.online_status(), True)
        self.conn.flush()

    # --- deletes -----------------------------------------------------------------------------

    def delete(self, rows: list[Row]) -> None:
        """Not awaited: the pump goes on publishing while the writer thread deletes (after the
        group commits queued ahead of it)."""
        fut = self.pub.outbox.delete([r.id for r in rows])
        self.deleting.add(fut)
        n = len(rows)
        fut.add_done_callback(lambda f: self.deleted(f, n))

    def deleted(self, f: asyncio.Future, n: int) -> None:
        self.deleting.discard(f)
        err = "cancelled" if f.cancelled() else f.exception()
        if err is not None:
            # they stay in the outbox and go out again after the next reconnect
            log.error("outbox delete failed", extra={"error": repr(err)})
        else:
            self.pub.published += n

    def record(self, batch: list[Row]) -> None:
        """Acknowledged rows: their latency noted, queued for deletion."""
        pub = self.pub
        now = time.time()  # wall, as a row's created (it outlives a restart)
        dead = pub.dead_topic
        for r in batch:
            if r.id <= 0:
                if r.id == RECORD_ROW_ID:
                    pub.record_delivered(int(r.ce_id))
                continue
            self.acked.append(r)
            if r.topic == dead:  # a dead letter the broker took: the status counts them
                pub.dead_letters += 1
            ms = (now - r.created) * 1000
            pub.latency_ms.append(ms)
            if pub.on_latency is not None:
                pub.on_latency(ms)
            if r.priority:
                pub.alarm_latency_ms.append(ms)

    # --- run ---------------------------------------------------------------------------------

    def _on_lost(self, f: asyncio.Future) -> None:
        if not f.cancelled():
            f.exception()  # seen here: aiomqtt raises it from its own context as well
        self.pub.wake.set()

    async def run(self) -> None:
        pub = self.pub
        queue = self.queue
        queue.restart()  # everything not yet deleted, from each device's oldest row
        if not pub.scanned:
            queue.known(await pub.outbox.newest())
            pub.scanned = True
        await self.conn.attach(self.on_ack)
        lost = self.conn.lost
        lost.add_done_callback(self._on_lost)
        pub.pending_states = pub.take_states(True)  # the broker may have lost them
        pub.pending_records = dict(pub.records)  # each device's newest record: retained too
        pub.fill = self.fill
        self.status_timer = self.loop.call_later(pub.cfg.status_every_s, self._status_tick)
        wake = pub.wake
        inflight = self.inflight
        window = self.window
        try:
            while True:
                if lost.done():
                    raise MqttError("connection lost")
                wake.clear()  # before looking: a commit from now on wakes us again
                pub.pending_states.update(pub.take_states(False))
                room = window - len(inflight)
                if self.spells:
                    for topic in self.refusals.due():
                        queue.probe(topic)
                if pub.pending_states and room > 0:  # in the window too: within the cap
                    self.send_states(room)
                    room = window - len(inflight)
                if pub.pending_records and room > 0:
                    self.send_records(room)
                while True:
                    want = queue.wanted() if len(inflight) < window else None
                    if want:
                        queue.filled(await pub.outbox.fetch_devices(want, queue.batch))
                    if not self.send_ready():
                        break
                if self.status_due:  # after the rows: alarms go first
                    self.send_status()
                if not self.finished:
                    await wake.wait()
                    continue
                batch, self.finished[:] = self.finished[:], []
                self.record(batch)
                if self.acked and (
                    len(self.acked) >= DELETE_BATCH or len(inflight) < window // 2
                ):
                    self.delete(self.acked)
                    self.acked = []
        finally:
            await self.close()

    async def close(self) -> None:
        self.pub.fill = None
        if self.status_timer is not None:
            self.status_timer.cancel()
        self.conn.detach()
        self.inflight.clear()  # not PUBACKed: still in the outbox, sent again after a reconnect
        self.refusals.lost()
        # PUBACKed before the connection dropped (some maybe in the very read that saw the
        # broker close): do not send them again
        self.record(self.finished)
        self.finished.clear()
        if self.acked:
            self.delete(self.acked)
            self.acked = []
        # gone before the next connection reads the outbox again
        await asyncio.gather(*self.deleting, return_exceptions=True)
