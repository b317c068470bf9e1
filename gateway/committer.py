"""Group commits to the outbox on its writer thread: batches submitted while a commit runs go
into the next one, in arrival order, alarms ahead of other devices' events; a full disk holds
them (devices are not acknowledged) and a failed commit stops the gateway."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any

from .exits import EX_IOERR, Fatal
from .outbox import ROUTINE, Item, OutboxWorker, Row

log = logging.getLogger("gasguard.gateway")

MAX_PENDING = 50_000  # events accepted but not yet committed: links pause reading beyond this
DISK_FULL_RETRY_S = 1.0  # a commit refused for want of space is tried again this often


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
        self._alarm = ROUTINE  # the highest priority of any pending batch
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
            if self._alarm > ROUTINE:
                batch, self._pending = _alarm_first(self._pending, self._alarm)
                self._n = sum(len(items) for items, _ in self._pending)
                self._alarm = max(
                    [it.priority for items, _ in self._pending for it in items], default=ROUTINE
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
            rows = [  # positional: one Row per event (id, ce_id, device, topic, payload, ...)
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
