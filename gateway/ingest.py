"""Ingest: the messages of one read of one link become outbox items (events as CloudEvents,
health changes as the gateway's own events), handed to the committer; a link's acks wait until
the commits that made its events durable have ended, and go out in one write per link."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable
from typing import Any

from gasguard.gateway.session import DeviceState, LinkSession, Message, ack_frames
from gasguard.protocol import messages

from .committer import Committer
from .config import GatewayConfig
from .events import event_item
from .health import Health
from .logs import RateLimited
from .outbox import Item

log = logging.getLogger("gasguard.gateway")

Acks = dict[str, list[tuple[int, int]]]  # device -> the ids of its events to acknowledge


class Ingest:
    def __init__(
        self,
        cfg: GatewayConfig,
        clock: Callable[[], float],
        health: Health,
        committer: Committer,
        devices: dict[str, DeviceState],
        frames: Counter[str],
        rejected_log: RateLimited,
        mark: Callable[[str], None],
        gateway_event: Callable[[str, str, str], Item],
    ) -> None:
        """mark(device): its retained state changed; gateway_event(device, kind, detail): one
        of the gateway's own events about a device."""
        self.cfg = cfg
        self.clock = clock
        self.health = health
        self.committer = committer
        self.devices = devices
        self.frames = frames
        self.rejected_log = rejected_log
        self._mark = mark
        self._gateway_event = gateway_event
        self.events_in = 0
        # acks gathered from the batches of finished commits, per link: one write per link
        self._acks: dict[LinkSession, tuple[Callable[[bytes], Any], Acks]] = {}

    def handle(self, session: LinkSession, msgs: list[Message], send: Callable[[bytes], Any]):
        """Messages from one read of one link. Replies go out through send()."""
        items: list[Item] = []
        ids: Acks = {}
        now = self.clock()
        for m in msgs:
            try:
                self._message(m, items, ids, now)
            except Exception as e:  # noqa: BLE001 - one message must not stop the link
                self.frames["error"] += 1
                log.exception(
                    "device message not handled",
                    extra={"device": m.device, "type": m.name, "error": repr(e)},
                )
        if not items:
            return
        self.events_in += sum(len(v) for v in ids.values())

        def acknowledge() -> None:
            # durable now (or already were: a re-sent event is acknowledged again); sent with
            # the other batches' acks of this link that the same commits made durable
            pending = self._acks.get(session)
            if pending is None:
                pending = self._acks[session] = (send, {})
            for dev, evs in ids.items():
                pending[1].setdefault(dev, []).extend(evs)

        self.committer.submit(items, acknowledge)

    def _message(
        self, m: Message, items: list[Item], ids: Acks, now: float
    ) -> None:
        dev = m.device
        back = None if m.mtype == messages.BIRTH else self.health.seen(dev)
        if back:
            items.append(self._gateway_event(dev, "device.online", back))
            self._mark(dev)
        if m.mtype == messages.EVENT:
            items.append(self._event(m, now))
            ids.setdefault(dev, []).append((m.body["id"][0], m.body["id"][1]))
            if self.health.event(dev, m.body):
                self._mark(dev)
        elif m.mtype == messages.HEARTBEAT:
            if self.health.heartbeat(dev, m.body):
                self._mark(dev)
        elif m.mtype == messages.BIRTH:
            detail = self.health.birth(dev, m.boot, m.body)
            if detail:
                items.append(self._gateway_event(dev, "device.online", detail))
                log.info("device birth", extra={"device": dev, "detail": detail})
            self._mark(dev)
        elif m.mtype == messages.REPLY:
            log.info("device reply", extra={"device": dev, "reply": m.body})

    def _event(self, m: Message, now: float) -> Item:
        item, reason = event_item(
            self.cfg.site, self.cfg.gateway_id, m, self.devices[m.device].inst, now
        )
        if reason is not None:
            self.frames["rejected"] += 1
            self.rejected_log.warn(
                (m.device, "schema"), "event refused by schema: published as a dead letter",
                device=m.device, reason=reason, event=item.ce_id,
            )  # fmt: skip
        return item

    def send_acks(self) -> None:
        """A link's acks for several reads in one write, as few frames as MAX_ACKS allows: a
        read of a device sending at a steady rate holds an event or two, and a frame (signed)
        and a write each had become a seventh of the event loop's time."""
        acks, self._acks = self._acks, {}
        for session, (send, ids) in acks.items():
            send(b"".join(f for dev, evs in ids.items() for f in ack_frames(session, dev, evs)))
