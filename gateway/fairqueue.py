"""Which outbox rows the publisher sends next: fair between devices, alarms first, each device's
own rows strictly in order.

A single queue in arrival order made one chatty device (or a backlog after an outage) delay every
other device's alarm by the whole backlog. Here each device has a cursor (the last row id it has
buffered) and a short buffer of rows not yet sent; the publisher takes rows one per device in
turn, and a device whose next row is an alarm goes before the others (an urgent one, where the
valve closed or must close, before any other alarm).

Rows just committed go straight into their device's buffer while the device is caught up (no
read back from SQLite on the way to the broker). A device with more rows in the outbox than its
buffer holds (a backlog, or everything after a reconnect) is read from the outbox, a batch at a
time, once its buffer is empty; so at most `cap` rows per device are held in memory.

A topic the broker refuses is held (hold()): a device whose next row is on it leaves the turn
(its later rows wait too, in order) and the others go on; probe() lets one row of it go,
release() all. A refused row is put back in its place (requeue()).

Plain bookkeeping, no I/O: the publisher does the reading (Outbox.fetch_devices) and the sending.
"""

from __future__ import annotations

from collections import deque

from .outbox import URGENT, Row

BATCH = 32  # rows read per device per query
CAP = 256  # rows buffered per device


class FairQueue:
    def __init__(self, batch: int = BATCH, cap: int = CAP) -> None:
        self.batch = batch
        self.cap = max(cap, batch)
        self._newest: dict[str, int] = {}  # device -> highest row id committed
        self._cursor: dict[str, int] = {}  # device -> highest row id read
        self._due: set[str] = set()  # devices with rows beyond their cursor
        self._buf: dict[str, deque[Row]] = {}  # device -> rows read, not yet taken
        self._turn: deque[str] = deque()  # devices with buffered rows, round-robin order
        self._asked: dict[str, int] = {}  # device -> newest id known when it was last read
        self._held: set[str] = set()  # topics whose rows may not go
        self._probing: set[str] = set()  # held topics of which one row may go
        self._parked: dict[str, str] = {}  # device out of the turn -> the held topic it waits on

    def known(self, newest: dict[str, int]) -> None:
        """Rows up to these ids are in the outbox (a scan at start): read them from there.

        A device's fresh rows may have been handed over (committed()) while the scan ran, and
        the scan may even include them; the rows left from before are older, so the device is
        read from its oldest row again and what was buffered is dropped, to be read in order."""
        for dev, rid in newest.items():
            self._newest[dev] = max(rid, self._newest.get(dev, 0))
            self._cursor.pop(dev, None)
            if self._buf.pop(dev, None) and self._parked.pop(dev, None) is None:
                self._turn.remove(dev)
            self._due.add(dev)

    def committed(self, rows: list[Row]) -> None:
        """Rows just committed, in id order: buffered at once where their device is caught up
        and has room, otherwise left in the outbox to be read when the device's turn comes."""
        due, bufs, newest = self._due, self._buf, self._newest
        for r in rows:
            dev = r.device
            newest[dev] = r.id
            buf = bufs.get(dev)
            if dev in due or (buf is not None and len(buf) >= self.cap):
                due.add(dev)
                continue
            if buf is None:
                buf = bufs[dev] = deque()
            if not buf:
                self._turn.append(dev)
            buf.append(r)
            self._cursor[dev] = r.id

    def restart(self) -> None:
        """After a reconnect: everything still in the outbox is to be sent again, from the
        oldest row of each device."""
        self._cursor.clear()
        self._buf.clear()
        self._turn.clear()
        self._parked.clear()
        self._asked = {}
        self._due = set(self._newest)

    def hold(self, topic: str) -> None:
        self._held.add(topic)
        self._probing.discard(topic)

    def probe(self, topic: str) -> None:
        """One more row of a held topic may go."""
        if topic in self._held:
            self._held.discard(topic)
            self._probing.add(topic)
            self._unpark(topic)

    def release(self, topic: str) -> None:
        self._held.discard(topic)
        self._probing.discard(topic)
        self._unpark(topic)

    def _unpark(self, topic: str) -> None:
        for dev in [d for d, t in self._parked.items() if t == topic]:
            del self._parked[dev]
            self._turn.append(dev)

    def requeue(self, row: Row) -> None:
        """A row taken but not published (refused): back in front of its device's later rows."""
        dev = row.device
        buf = self._buf.get(dev)
        if buf is None:
            buf = self._buf[dev] = deque()
        if not buf:
            self._turn.append(dev)
        i = 0
        while i < len(buf) and buf[i].id < row.id:  # only rows in flight were ahead of it
            i += 1
        buf.insert(i, row)

    def wanted(self) -> dict[str, int]:
        """Devices to read from the outbox now, with their cursors: rows beyond the cursor exist
        and none is buffered. Then give filled() what was read."""
        buf, newest = self._buf, self._newest
        self._asked = {dev: newest[dev] for dev in self._due if not buf.get(dev)}
        cur = self._cursor
        return {dev: cur.get(dev, 0) for dev in self._asked}

    def filled(self, got: dict[str, list[Row]]) -> None:
        """Rows read for the last wanted() answer. A device that returned fewer than a batch
        was read to its end, which is at least the newest id known when it was asked (rows up
        to there may have gone since: dropped by retention, or deleted after a PUBACK)."""
        # devices join the turn oldest row first
        for dev, newest in sorted(self._asked.items(), key=lambda kv: _first_id(got, kv[0])):
            rows = got.get(dev, [])
            if rows:
                buf = self._buf.get(dev)
                if buf is None:
                    buf = self._buf[dev] = deque()
                if not buf:
                    self._turn.append(dev)
                buf.extend(rows)
                self._cursor[dev] = rows[-1].id
            if len(rows) < self.batch:
                self._cursor[dev] = max(self._cursor.get(dev, 0), newest)
            if self._cursor.get(dev, 0) >= self._newest[dev]:
                self._due.discard(dev)
        self._asked = {}

    def take(self, n: int, alarms: int | None = None, urgent: int | None = None) -> list[Row]:
        """Up to n rows; past n, up to `alarms` rows when they are alarms and `urgent` when
        urgent (the caller keeps room in flight for those beyond its window; both default to
        the one before). First one row from each device whose next row is an alarm, urgent
        ones first, then one row per device in turn. A device's rows come out in their order."""
        out: list[Row] = []
        turn, buf = self._turn, self._buf
        alarms = n if alarms is None else alarms
        urgent = alarms if urgent is None else urgent
        if not turn or max(n, alarms, urgent) <= 0:
            return out
        held = self._held
        if held:
            self._park()
        heads = [d for d in turn if buf[d][0].priority]
        if heads:
            heads.sort(key=lambda d: -buf[d][0].priority)  # stable: in turn within a level
            for dev in heads:
                b = buf[dev]
                if len(out) >= (urgent if b[0].priority >= URGENT else alarms):
                    continue
                out.append(self._pop(b))
                if not b:
                    turn.remove(dev)
        while turn and len(out) < n:
            dev = turn.popleft()
            b = buf[dev]
            if held and b[0].topic in held:  # a probe went, its topic held again
                self._parked[dev] = b[0].topic
                continue
            out.append(self._pop(b))
            if b:
                turn.append(dev)
        return out

    def alarm_waiting(self) -> bool:
        """A device's next buffered row is an alarm: one take() found no room for."""
        buf = self._buf
        return any(buf[d][0].priority for d in self._turn)

    def _pop(self, b: deque[Row]) -> Row:
        r = b.popleft()
        if self._probing and r.topic in self._probing:  # the probe: the rest waits for it
            self._probing.discard(r.topic)
            self._held.add(r.topic)
        return r

    def _park(self) -> None:
        """Devices whose next row is on a held topic leave the turn."""
        buf, held, turn = self._buf, self._held, self._turn
        parked = {d: buf[d][0].topic for d in turn if buf[d][0].topic in held}
        if parked:
            self._parked.update(parked)
            keep = [d for d in turn if d not in parked]
            turn.clear()
            turn.extend(keep)


def _first_id(got: dict[str, list[Row]], dev: str) -> int:
    rows = got.get(dev)
    return rows[0].id if rows else 0
