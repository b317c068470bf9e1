"""The gateway service: device links -> sessions -> durable outbox -> publisher, plus health.

Data flows one way. A link's bytes go through its LinkSession (auth, the session handshake,
the strict body boundary); events become CloudEvents, checked against the schemas and committed
to the outbox in group commits; only then does the device get its ack. An event the schema
refuses is acknowledged too and goes to the dead-letter topic with its raw body. The link
reader never waits on the disk: batches are handed to the committer in arrival order, which is
also the order rows are published in.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from typing import Any

import serial_asyncio_fast

from gasguard.gateway.session import DeviceState, LinkSession, Message, ack_frames
from gasguard.protocol import VERSION, cloudevents, messages
from gasguard.protocol.auth import Signer

from . import identity, limits, schemas, statedir
from .config import GatewayConfig, SerialLink
from .events import event_item
from .exits import EX_CANTCREAT, EX_IOERR, EX_OSERR, EX_SOFTWARE, RESTART_WINDOW_S, RESTARTS, Fatal
from .health import Health
from .http import StatusServer
from .links import LinkTable
from .logs import RateLimited
from .outbox import ROUTINE, Item, OutboxWorker, Row
from .publisher import Publisher, dumps

log = logging.getLogger("gasguard.gateway")

MAX_PENDING = 50_000  # events accepted but not yet committed: links pause reading beyond this
STATE_REFRESH_S = 60.0
RETENTION_EVERY_S = 30.0
GIL_SWITCH_S = 0.0002
REJECT_LOG_EVERY_S = 60.0
STOP_PUBLISH_S = 2.0  # at shutdown, for the broker to acknowledge the "offline" status
STOP_TASKS_S = 5.0  # for the tasks to end once cancelled
DISK_FULL_RETRY_S = 1.0  # a commit refused for want of space is tried again this often
LINK_READ = 2048  # bytes per turn of a link: short turns, so no link holds the loop for long


def percentile(xs: Any, q: float) -> float | None:
    xs = sorted(xs)
    if not xs:
        return None
    return round(xs[min(len(xs) - 1, int(q * len(xs)))], 2)


def _disk_full(e: sqlite3.OperationalError) -> bool:
    return getattr(e, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "is full" in str(e)


def _alarm_first(pending: list[tuple[list[Item], Any]], level: int) -> tuple[list, list]:
    """Split pending batches into those of every device with an alarm of this priority (or
    higher) pending, and the rest.

    Each device's batches stay in order and go together (a device's events are published in
    row id order), and so do those of any device sharing a batch with them (a serial line's
    read may hold several devices), until the set of devices is closed."""
    devs = [{it.device for it in items} for items, _ in pending]
    want = {it.device for items, _ in pending for it in items if it.priority >= level}
    while True:
        grown = set(want)
        for d in devs:
            if not want.isdisjoint(d):
                grown |= d
        if grown == want:
            break
        want = grown
    take, keep = [], []
    for p, d in zip(pending, devs, strict=True):
        (keep if want.isdisjoint(d) else take).append(p)
    return take, keep


class Committer:
    """Group commit: batches submitted while a commit runs go into the next one, in order.

    The writer thread chains the commits itself: each one starts as soon as the last has ended,
    not a turn of the busy event loop later. A finished commit (acks to send, rows for the
    publisher) is handed back through a deque that the loop drains at its next chance, which
    includes the link handlers between two reads (finish()), so an alarm's path to the broker
    is not held up behind every other link's turn."""

    def __init__(
        self,
        outbox: OutboxWorker,
        on_commit: Callable[[list[Row]], None],
        after: Callable[[], None] | None = None,
    ) -> None:
        """on_commit(rows) for each finished commit, then its batches' done callbacks, then
        after() (the gateway sends the acks those gathered)."""
        self.outbox = outbox
        self.on_commit = on_commit
        self.after = after
        self._lock = threading.Lock()  # _pending, _n and _running, shared with the writer
        self._pending: list[tuple[list[Item], Callable[[], None] | None]] = []
        self._n = 0
        self._running = False
        self._alarm = 0  # the highest priority of any pending batch
        self._finished: deque[tuple[list, list[Item], Any, float, float]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._failed: asyncio.Future[None] | None = None
        self._room = asyncio.Event()
        self._room.set()
        self.committed = 0
        self.duplicates = 0
        self.blocked: str | None = None  # why nothing is being committed (a full disk)
        self.commit_ms: deque[float] = deque(maxlen=2000)  # recent group commits, start to end

    def submit(self, items: list[Item], done: Callable[[], None] | None = None) -> None:
        """Queue items for the next group commit; done() runs once they are durable (or were
        already: a duplicate). A batch holding an alarm goes into the next commit with only
        its devices' pending batches: it does not wait behind every other link's events (nor,
        if it is urgent, behind other devices' lesser alarms)."""
        prio = max([it.priority for it in items], default=ROUTINE)
        with self._lock:
            self._pending.append((items, done))
            self._n += len(items)
            if prio > self._alarm:
                self._alarm = prio
            if self._n >= MAX_PENDING:
                self._room.clear()
            start, self._running = not self._running, True
        if start:
            self._loop = asyncio.get_running_loop()  # where finished commits are handed back
            self.outbox.write_soon(self._commit_next)

    async def room(self) -> None:
        await self._room.wait()

    def has_room(self) -> bool:
        return self._room.is_set()

    def _commit_next(self) -> None:
        """On the writer thread: commit everything pending, then queue the next round (behind
        any delete the publisher queued meanwhile)."""
        with self._lock:
            if self._alarm:
                batch, self._pending = _alarm_first(self._pending, self._alarm)
                self._n = sum(len(items) for items, _ in self._pending)
                self._alarm = max(
                    [it.priority for items, _ in self._pending for it in items], default=0
                )  # a lesser alarm left behind goes first next time
            else:
                batch, self._pending, self._n = self._pending, [], 0
            if not batch:
                self._running = False
                return
        flat = [it for items, _ in batch for it in items]
        t0 = time.perf_counter()
        created = time.time()  # as the outbox records it, to within the call
        try:
            new: Any = self.outbox.outbox.add(flat)
        except sqlite3.OperationalError as e:
            if not _disk_full(e):
                new = e
            else:  # kept, not acknowledged: the devices keep their events; tried again
                with self._lock:
                    self._pending[:0] = batch
                    self._n += len(flat)
                    self._alarm = max(self._alarm, max(it.priority for it in flat))
                assert self._loop is not None
                self._loop.call_soon_threadsafe(self._full, str(e))
                return
        except Exception as e:  # noqa: BLE001 - handed to the loop, which stops the gateway
            new = e
        self._finished.append((batch, flat, new, created, (time.perf_counter() - t0) * 1000))
        assert self._loop is not None
        self._loop.call_soon_threadsafe(self.finish)
        if not self.outbox.write_soon(self._commit_next):  # shutting down
            with self._lock:
                self._running = False

    def _full(self, error: str) -> None:
        """On the loop: the disk is full. Say so (once), try again in a while."""
        if self.blocked is None:
            log.error(
                "outbox: disk full, devices are not acknowledged until there is space",
                extra={"path": str(self.outbox.outbox.path), "error": error},
            )
        self.blocked = "disk full (%s): devices not acknowledged" % error
        assert self._loop is not None

        def again() -> None:
            if not self.outbox.write_soon(self._commit_next):
                with self._lock:
                    self._running = False

        self._loop.call_later(DISK_FULL_RETRY_S, again)

    def finish(self) -> None:
        """On the loop: hand finished commits on (rows to the publisher, then the acks)."""
        while self._finished:
            batch, flat, new, created, ms = self._finished.popleft()
            if isinstance(new, Exception):
                log.error("outbox commit failed", extra={"error": repr(new)})
                if self._failed is not None and not self._failed.done():
                    self._failed.set_exception(
                        Fatal(EX_IOERR, "outbox %s: commit failed: %s"
                              % (self.outbox.outbox.path, new))
                    )  # fmt: skip
                return
            if self.blocked is not None:
                log.warning("outbox: space again, devices acknowledged")
                self.blocked = None
            self.commit_ms.append(ms)
            rows = [
                Row(rid, it.ce_id, it.device, it.topic, it.payload, created, it.priority)
                for it, rid in zip(flat, new, strict=True)
                if rid
            ]
            self.committed += len(rows)
            self.duplicates += len(new) - len(rows)
            self.on_commit(rows)
            for _, done in batch:
                if done is not None:
                    done()
            if self.after is not None:
                self.after()
        if self._n < MAX_PENDING:
            self._room.set()

    async def run(self) -> None:
        """Until a commit fails (then raises it, which stops the gateway: nothing is acked)."""
        self._failed = asyncio.get_running_loop().create_future()
        await self._failed


class LinkProtocol(asyncio.BufferedProtocol):
    """One device link (a TCP connection or a serial port): bytes -> session -> Gateway.handle,
    in the event loop's read callback itself (no stream and task in between: under load each
    of those hops waited for a turn of the loop, and an alarm made several), LINK_READ bytes
    at most per read so that no link holds the loop for long. Reading pauses while the
    committer is full. A TCP link must carry a valid frame (one its session accepts) within
    hello_s, and one that carries none for idle_s is closed (bytes that are not valid frames,
    recorded frames included, do not count: gateway/links.py)."""

    _buf = bytearray(LINK_READ)  # shared: every read is consumed at once, on the one loop

    def __init__(
        self, gw: Gateway, name: str, idle_s: float | None, hello_s: float | None = None
    ) -> None:
        self.gw = gw
        self.name = name
        self.idle_s = idle_s
        self.hello_s = hello_s
        self.session = gw.session()
        self.transport: asyncio.Transport | None = None
        self.closed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.valid_at = 0.0  # when it last carried a valid frame
        self.devices: set[str] = set()
        self._opened = time.monotonic()
        self._idle: asyncio.TimerHandle | None = None
        self._reason = "closed by peer"

    @property
    def tcp(self) -> bool:
        return self.name.startswith("tcp")

    def connection_made(self, transport) -> None:  # type: ignore[override]
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if self.name == "tcp" and peer:
            self.name = "tcp:%s:%s" % (peer[0], peer[1])
        self.gw.links_up[self.name] = True
        if self.tcp:
            self.gw.links.opened(self)
        first = self.hello_s if self.hello_s is not None else self.idle_s
        if first is not None:
            self._idle = asyncio.get_running_loop().call_later(first, self._check_idle)

    def shed(self, reason: str) -> None:
        """Closed by the connection policy (gateway/links.py)."""
        self._reason = "shed: " + reason
        if self.transport is not None:
            self.transport.abort()

    def get_buffer(self, sizehint: int) -> bytearray:
        return self._buf

    def buffer_updated(self, nbytes: int) -> None:  # TCP: read into our LINK_READ buffer
        self._feed(bytes(memoryview(self._buf)[:nbytes]))

    def data_received(self, data: bytes) -> None:  # serial transports call this one
        self._feed(bytes(data))

    def _feed(self, data: bytes) -> None:
        gw = self.gw
        session = self.session
        try:
            msgs = session.feed(data)
        except Exception as e:  # noqa: BLE001 - a bug must not take the link, or the loop, down
            gw.frames["error"] += 1
            log.exception("link input not handled", extra={"link": self.name, "error": repr(e)})
            msgs = []
        if self.transport is None:
            return
        if session.valid_at > self.valid_at:
            self.valid_at = session.valid_at
            if len(session.devices_seen) > len(self.devices):
                for d in session.devices_seen - self.devices:
                    self.devices.add(d)
                    if self.tcp:
                        gw.links.seen(self, d)
                if self.transport is None:
                    return
        if session.replies:  # the handshake's time frames
            self.transport.write(session.take_replies())
        if msgs:
            gw.handle(session, msgs, self.transport.write)
        gw.committer.finish()  # commits that ended meanwhile: publish, acknowledge
        if not gw.committer.has_room() and self.transport is not None:
            self.transport.pause_reading()
            asyncio.ensure_future(self._resume())

    async def _resume(self) -> None:
        await self.gw.committer.room()
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _check_idle(self) -> None:
        if self.transport is None:
            return
        now = time.monotonic()
        if not self.valid_at:  # no valid frame since it opened
            if self.hello_s is not None:
                self._reason = "no valid frame within %.0f s" % self.hello_s
                self.transport.abort()
                return
            deadline = self._opened + (self.idle_s or 0)
        else:
            deadline = self.valid_at + (self.idle_s or 0)
        if self.idle_s is not None and deadline <= now:
            self._reason = "idle: no valid frame for %.0f s" % self.idle_s
            self.transport.abort()
            return
        if self.idle_s is not None:
            self._idle = asyncio.get_running_loop().call_later(deadline - now, self._check_idle)

    def connection_lost(self, exc: Exception | None) -> None:
        if self._idle is not None:
            self._idle.cancel()
        reason = type(exc).__name__ if exc is not None else self._reason
        log.info("link closed", extra={"link": self.name, "reason": reason})
        if self.tcp:
            self.gw.links_up.pop(self.name, None)
            self.gw.links.closed(self)
        else:
            self.gw.links_up[self.name] = False
        self.transport = None
        if not self.closed.done():
            self.closed.set_result(None)


class Gateway:
    def __init__(self, cfg: GatewayConfig, clock: Callable[[], float] = time.time) -> None:
        """clock: the wall clock, for the times the gateway publishes; every duration and
        deadline is on time.monotonic (a clock stepped by NTP moves neither)."""
        self.cfg = cfg
        self.clock = clock
        statedir.prepare(cfg.state_dir)  # Fatal(73) naming the path if it is not usable
        try:
            ident = identity.next_boot(cfg.state_dir)
        except OSError as e:
            raise Fatal(
                EX_CANTCREAT, "gateway identity in %s: %s" % (cfg.state_dir, e.strerror)
            ) from None
        self.outbox, self.data_lost = statedir.open_outbox(
            cfg.state_dir, cfg.outbox_max_events, cfg.outbox_max_age_s
        )
        self.boot, self.instance = ident.boot, ident.instance
        # one Signer per device for every link (each link building its own was most of a
        # link's memory: ~250 KB a link with a site's keys)
        self.signers = {d: Signer(k) for d, k in cfg.keys.items()}
        self.worker = OutboxWorker(self.outbox)
        self.devices: dict[str, DeviceState] = {}
        self.frames: Counter[str] = Counter()  # by result, over every link
        self.health = Health(cfg.site, cfg.offline_after_s, clock)
        self._dirty: set[str] = set()
        self.committer = Committer(self.worker, self._committed, self._send_acks)
        # acks gathered from the batches of finished commits, per link: one write per link
        self._acks: dict[LinkSession, tuple[Callable[[bytes], Any], dict[str, list]]] = {}
        self.publisher = Publisher(
            cfg.mqtt,
            cfg.site,
            cfg.gateway_id,
            VERSION,
            self.worker,
            self._take_states,
            self.health.online_count,
        )
        # a board with a wrong or missing key, or events the schema refuses: by device, not
        # a line per frame
        self.rejected_log = RateLimited(log, REJECT_LOG_EVERY_S)
        self.events_in = 0
        self.dropped_by_retention = 0
        self.links_up: dict[str, bool] = {}
        self.started = time.monotonic()
        self.tcp_port: int | None = None
        self.status_port: int | None = None
        self.publisher.identity = (self.instance, self.boot)
        self.http = StatusServer(self)
        self.links = LinkTable(cfg.tcp.max_links if cfg.tcp is not None else 1)
        self._tasks: list[asyncio.Task] = []
        self.task_failures: Counter[str] = Counter()
        self._switch_interval = sys.getswitchinterval()

    # --- sessions ------------------------------------------------------------------------------

    def session(self) -> LinkSession:
        s = LinkSession(self.signers, self.boot, devices=self.devices, wall=self.clock)
        s.counts = self.frames  # one set of counters for the status page
        s.on_reject = self._rejected_board
        return s

    def _rejected_board(self, reason: str, device: str) -> None:
        """A frame intact on the line but from a device we hold no key for, or whose tag does
        not verify with its key: the installer needs the device id to find the board."""
        why = {"auth": "wrong key (the frame's tag does not verify)",
               "unknown-device": "no key for this device id"}.get(reason, reason)  # fmt: skip
        self.rejected_log.warn(
            (device, reason), "board rejected", device=device, reason=reason, detail=why
        )

    def _committed(self, rows: list[Row]) -> None:
        self.publisher.committed(rows)

    def _take_states(self, everything: bool) -> dict[str, bytes]:
        devs = set(self.health.devices) if everything else self._dirty
        self._dirty = set()
        out = {}
        for d in devs:
            try:
                out[d] = dumps(schemas.check(self.health.state_event(d)))
            except schemas.SchemaError as e:
                log.error("state not published", extra={"device": d, "error": str(e)})
        return out

    def _mark(self, device: str) -> None:
        self._dirty.add(device)
        self.publisher.wake.set()

    def _gateway_event(self, device: str, kind: str, detail: str) -> Item:
        now = self.clock()
        # unique for ever: this gateway's instance and boot, and the time in microseconds
        ce_id = "%s:%s:%s:%d:%d" % (
            device, kind.split(".")[-1], self.instance, self.boot, int(now * 1e6)
        )  # fmt: skip
        ce = schemas.check(
            cloudevents.gateway_event(self.cfg.site, device, kind, ce_id, now, detail)
        )
        return Item(ce_id, device, cloudevents.topic_events(self.cfg.site, device), dumps(ce))

    def handle(self, session: LinkSession, msgs: list[Message], send: Callable[[bytes], Any]):
        """Messages from one read of one link. Replies go out through send()."""
        items: list[Item] = []
        ids: dict[str, list[tuple[int, int]]] = {}
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
        self, m: Message, items: list[Item], ids: dict[str, list[tuple[int, int]]], now: float
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

    def _send_acks(self) -> None:
        """A link's acks for several reads in one write, as few frames as MAX_ACKS allows: a
        read of a device sending at a steady rate holds an event or two, and a frame (signed)
        and a write each had become a seventh of the event loop's time."""
        acks, self._acks = self._acks, {}
        for session, (send, ids) in acks.items():
            send(b"".join(f for dev, evs in ids.items() for f in ack_frames(session, dev, evs)))

    # --- links ---------------------------------------------------------------------------------

    def _link(
        self, name: str, idle_s: float | None, hello_s: float | None = None
    ) -> LinkProtocol:
        return LinkProtocol(self, name, idle_s, hello_s)

    async def _serial(self, link: SerialLink) -> None:
        name = "serial:%s" % link.port
        backoff = 0.5
        loop = asyncio.get_running_loop()
        while True:
            try:
                _, proto = await serial_asyncio_fast.create_serial_connection(
                    loop, lambda: self._link(name, None), link.port, baudrate=link.baud
                )
            except (OSError, ValueError) as e:
                self.links_up[name] = False
                log.warning("serial port unavailable", extra={"port": link.port, "error": str(e)})
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            backoff = 0.5
            log.info("serial link open", extra={"port": link.port, "baud": link.baud})
            await proto.closed
            await asyncio.sleep(0.5)

    # --- housekeeping --------------------------------------------------------------------------

    async def _watch_health(self) -> None:
        last_refresh = time.monotonic()
        while True:
            await asyncio.sleep(min(1.0, self.cfg.heartbeat_s / 2))
            items = [
                self._gateway_event(dev, "device.offline", detail)
                for dev, detail in self.health.expire()
            ]
            for it in items:
                log.warning("device offline", extra={"device": it.device})
                self._mark(it.device)
            if items:
                self.committer.submit(items)
            if time.monotonic() - last_refresh > STATE_REFRESH_S:
                last_refresh = time.monotonic()
                for dev, d in self.health.devices.items():
                    if d["online"]:
                        self._mark(dev)

    async def _retention(self) -> None:
        while True:
            dropped = await self.worker.enforce_retention()
            if dropped:
                n = sum(dropped.values())
                self.dropped_by_retention += n
                detail = "outbox retention bound hit: dropped the oldest %d events (%s)" % (
                    n,
                    ", ".join("%s %d" % kv for kv in sorted(dropped.items())),
                )
                log.error("outbox dropped events", extra={"dropped": dict(dropped)})
                self.committer.submit(
                    [self._gateway_event(self.cfg.gateway_id, "outbox.dropped", detail[:200])]
                )
            await asyncio.sleep(RETENTION_EVERY_S)

    def status(self) -> dict[str, Any]:
        p = self.publisher
        return {
            "gateway": self.cfg.gateway_id,
            "site": self.cfg.site,
            "version": VERSION,
            "boot": self.boot,
            "instance": self.instance,
            "uptime_s": round(time.monotonic() - self.started, 1),
            "broker": {
                "url": p.cfg.url,
                "connected": p.connected,
                "connects": p.connects,
                "last_error": p.last_error,
                "receive_maximum": p.receive_maximum,
                "window": p.window,
                "inflight_peak": p.inflight_peak,
                "refused_topics": sorted(p.refusals.spells),  # held: the last try was refused
            },  # fmt: skip
            "states": {"refused": p.refusals.states},  # retained device states
            "frames": dict(self.frames),
            "events": {
                "received": self.events_in,
                "committed": self.committer.committed,
                "duplicates": self.committer.duplicates,
                "published": p.published,
                "refused": p.refusals.events,
                "refused_by_reason": dict(p.refusals.by_reason),
                "dropped_by_retention": self.dropped_by_retention,
            },
            "outbox": {
                "depth": self.outbox.depth(),
                "state": self.committer.blocked or "ok",
                "data_lost": self.data_lost,  # at this start: a damaged outbox or lost commits
                "commit_ms": {
                    "p50": percentile(self.committer.commit_ms, 0.5),
                    "p99": percentile(self.committer.commit_ms, 0.99),
                },
            },
            "publish_latency_ms": {
                "p50": percentile(p.latency_ms, 0.5),
                "p99": percentile(p.latency_ms, 0.99),
                "alarm_p99": percentile(p.alarm_latency_ms, 0.99),
            },
            "devices": {
                d: {
                    "online": s["online"],
                    "session": s.get("session"),
                    "instance": s.get("instance"),
                    "valve": s.get("valve"),
                    "alarm": s.get("alarm"),
                    "pending": s.get("pending_events"),
                    "lost": s.get("lost_events"),  # the board's heartbeat "lost"
                }
                for d, s in sorted(self.health.devices.items())
            },
            "devices_online": self.health.online_count(),
            "links": dict(self.links_up),
            "links_open": sum(1 for up in self.links_up.values() if up),
            "links_unauthenticated": len(self.links.unauth),
            "links_shed": dict(self.links.shed_count),
            "task_failures": dict(self.task_failures),
        }

    # --- run -----------------------------------------------------------------------------------

    async def _supervised(self, name: str, run: Callable[[], Any]) -> None:
        """Run a task for ever: a failure is logged with its cause, counted (status, metrics)
        and the task started again after a pause; RESTARTS failures within RESTART_WINDOW_S
        are a bug that restarting does not mend (exit 70). Fatal passes through."""
        failed: deque[float] = deque(maxlen=RESTARTS)
        while True:
            try:
                await run()
                if self.publisher.closing:
                    return  # stopping
                raise RuntimeError("ended by itself")
            except (asyncio.CancelledError, Fatal):
                raise
            except Exception as e:  # noqa: BLE001 - whatever it was, the gateway goes on
                self.task_failures[name] += 1
                log.exception("task failed: restarting", extra={"task": name, "error": repr(e)})
                now = time.monotonic()
                failed.append(now)
                if len(failed) == RESTARTS and now - failed[0] < RESTART_WINDOW_S:
                    raise Fatal(
                        EX_SOFTWARE, "task %s failed %d times within %.0f s: %r"
                        % (name, RESTARTS, RESTART_WINDOW_S, e)
                    ) from e  # fmt: skip
                await asyncio.sleep(min(10.0, 0.5 * len(failed)))

    async def _listen(self, what: str, factory: Callable[[], Any], host: str, port: int, **kw):
        try:
            return await asyncio.get_running_loop().create_server(factory, host, port, **kw)
        except OSError as e:
            msg = "cannot listen for %s on %s:%d: %s" % (what, host, port, e)
            raise Fatal(EX_OSERR, msg) from None

    async def start(self) -> None:
        # the outbox threads hand the GIL back and forth on every SQLite step; at the default
        # 5 ms a busy event loop made each step of a group commit wait that long for it
        sys.setswitchinterval(GIL_SWITCH_S)  # stop() puts back the one found in __init__
        limits.raise_open_files()
        spawn = self._tasks.append

        def supervised(name: str, run: Callable[[], Any]) -> None:
            spawn(asyncio.create_task(self._supervised(name, run), name=name))

        spawn(asyncio.create_task(self.committer.run(), name="committer"))  # fails: Fatal
        supervised("publisher", self.publisher.run)
        supervised("health", self._watch_health)
        supervised("retention", self._retention)
        for link in self.cfg.serial:
            supervised("serial " + link.port, lambda link=link: self._serial(link))
        if self.cfg.tcp is not None:
            # a Wi-Fi board heartbeats; a silent connection is dead (half-open after a power cut)
            srv = await self._listen(
                "boards",
                lambda: self._link("tcp", self.cfg.offline_after_s, self.cfg.tcp.hello_s),
                self.cfg.tcp.host, self.cfg.tcp.port, backlog=self.cfg.tcp.backlog,
            )  # fmt: skip
            self.tcp_port = srv.sockets[0].getsockname()[1]
            supervised("tcp", srv.serve_forever)
        if self.cfg.status is not None:
            self.status_port = await self.http.start(self.cfg.status.host, self.cfg.status.port)
        if self.data_lost:
            self.committer.submit(
                # the schema's 200 characters (the log line has it whole)
                [self._gateway_event(self.cfg.gateway_id, "gateway.data_lost",
                                     self.data_lost[:200])]  # fmt: skip
            )
        # what start made lives as long as the gateway: out of the collector's generations, so
        # a full collection under load scans only what came since
        gc.freeze()
        log.info(
            "gateway started",
            extra={"boot": self.boot, "instance": self.instance, "tcp_port": self.tcp_port,
                   "status_port": self.status_port, "outbox_depth": self.outbox.depth(),
                   "broker": self.cfg.mqtt.url},
        )  # fmt: skip

    async def stop(self) -> None:
        try:  # say offline ourselves, if the broker answers soon; the will says it otherwise
            await asyncio.wait_for(self.publisher.stop(), STOP_PUBLISH_S)
        except TimeoutError:
            pass
        await self.http.stop()
        self.publisher.closing = True  # a cancel that lands in a connect may be taken for an
        for t in self._tasks:  # MQTT error by aiomqtt: the flag ends its reconnect loop anyway
            t.cancel()
        if self._tasks:
            _, stuck = await asyncio.wait(self._tasks, timeout=STOP_TASKS_S)
            for t in stuck:
                log.error("task did not stop", extra={"task": t.get_name()})
        for t in self._tasks:
            if t.done() and not t.cancelled():
                t.exception()  # retrieved: reported by run_until_signalled, not by asyncio
        self.worker.close()
        sys.setswitchinterval(self._switch_interval)

    async def run_until_signalled(self, ready: Callable[[Gateway], None] | None = None) -> None:
        """Until SIGTERM or SIGINT; raises Fatal when something cannot be survived."""
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):  # before anyone is told we are up
            loop.add_signal_handler(sig, stop.set)
        try:
            await self.start()
        except BaseException:
            await self.stop()
            raise
        if ready:
            ready(self)
        waiter = asyncio.create_task(stop.wait())
        await asyncio.wait([waiter, *self._tasks], return_when=asyncio.FIRST_COMPLETED)
        fatal = None
        for t in self._tasks:
            if t.done() and not t.cancelled():
                e = t.exception()
                fatal = e if isinstance(e, Fatal) else Fatal(
                    EX_SOFTWARE, "task %s ended: %r" % (t.get_name(), e)
                )  # fmt: skip
        await self.stop()
        if fatal is not None:
            raise fatal
