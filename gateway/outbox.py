"""The durable outbox: every regulator-bound event is a row in SQLite (WAL, synchronous=FULL)
before the device is acknowledged, and leaves only after the broker's PUBACK.

Rows are published in id order, which is arrival order, so each device's events keep their order.
`seen` remembers recently committed CloudEvents ids, so an event a device re-sends (our ack was
lost) is acknowledged again but not queued twice. When the retention bound (rows or age) is hit,
the oldest rows are dropped and the caller is told how many, per device, to report it.

All methods are blocking and meant to run on one worker thread (OutboxWorker), never on the
event loop.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, NamedTuple, TypeVar

T = TypeVar("T")

SEEN_KEEP_S = 7 * 86400.0  # a device re-sends within minutes; a week is ample


class Item(NamedTuple):
    ce_id: str
    device: str
    topic: str
    payload: bytes
    alarm: bool = False


class Row(NamedTuple):
    id: int
    ce_id: str
    device: str
    topic: str
    payload: bytes
    created: float
    alarm: bool


_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    ce_id TEXT NOT NULL,
    device TEXT NOT NULL,
    topic TEXT NOT NULL,
    payload BLOB NOT NULL,
    created REAL NOT NULL,
    alarm INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox(created);
CREATE TABLE IF NOT EXISTS seen (ce_id TEXT PRIMARY KEY, at REAL NOT NULL) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS seen_at ON seen(at);
CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v TEXT NOT NULL);
"""


class Outbox:
    def __init__(
        self,
        path: Path,
        max_events: int = 1_000_000,
        max_age_s: float = 30 * 86400.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.max_events = max_events
        self.max_age_s = max_age_s
        self.clock = clock
        self.db = sqlite3.connect(str(self.path), isolation_level=None, check_same_thread=False)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")  # a commit survives a power cut
        self.db.executescript(_SCHEMA)
        self._count = self.db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    # --- gateway identity ----------------------------------------------------------------------

    def next_boot(self) -> int:
        """The gateway's boot counter: grows on every start, so devices see fresh (boot, seq)."""
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            row = self.db.execute("SELECT v FROM meta WHERE k='boot'").fetchone()
            boot = (int(row[0]) if row else 0) + 1
            self.db.execute("INSERT OR REPLACE INTO meta VALUES ('boot', ?)", (str(boot),))
        return boot

    # --- in ------------------------------------------------------------------------------------

    def add(self, items: Sequence[Item]) -> list[bool]:
        """Commit items in one transaction; returns, per item, whether it was new (False: a
        duplicate of an event already committed, which is not queued again)."""
        now = self.clock()
        new = []
        db = self.db
        db.execute("BEGIN IMMEDIATE")
        try:
            for it in items:
                cur = db.execute("INSERT OR IGNORE INTO seen VALUES (?, ?)", (it.ce_id, now))
                if cur.rowcount == 1:
                    db.execute(
                        "INSERT INTO outbox (ce_id, device, topic, payload, created, alarm)"
                        " VALUES (?, ?, ?, ?, ?, ?)",
                        (it.ce_id, it.device, it.topic, it.payload, now, int(it.alarm)),
                    )
                    new.append(True)
                else:
                    new.append(False)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._count += sum(new)
        return new

    # --- out -----------------------------------------------------------------------------------

    def fetch(self, after_id: int, limit: int) -> list[Row]:
        rows = self.db.execute(
            "SELECT id, ce_id, device, topic, payload, created, alarm FROM outbox"
            " WHERE id > ? ORDER BY id LIMIT ?",
            (after_id, limit),
        ).fetchall()
        return [Row(*r[:6], bool(r[6])) for r in rows]

    def delete(self, ids: Sequence[int]) -> None:
        """Rows the broker acknowledged."""
        if not ids:
            return
        with self.db:
            self.db.execute("BEGIN")
            cur = self.db.executemany("DELETE FROM outbox WHERE id = ?", [(i,) for i in ids])
        self._count -= cur.rowcount

    def depth(self) -> int:
        return self._count

    def oldest_age(self) -> float:
        row = self.db.execute("SELECT min(created) FROM outbox").fetchone()
        return 0.0 if row[0] is None else max(0.0, self.clock() - row[0])

    # --- bounds --------------------------------------------------------------------------------

    def enforce_retention(self) -> Counter[str]:
        """Drop the oldest rows beyond max_events or older than max_age_s; forget old seen ids.
        Returns the number of dropped events per device."""
        now = self.clock()
        dropped: Counter[str] = Counter()
        with self.db:
            self.db.execute("BEGIN IMMEDIATE")
            over = self._count - self.max_events
            victims = []
            if over > 0:
                victims += self.db.execute(
                    "SELECT id, device FROM outbox ORDER BY id LIMIT ?", (over,)
                ).fetchall()
            victims += self.db.execute(
                "SELECT id, device FROM outbox WHERE created < ? AND id > ? ORDER BY id",
                (now - self.max_age_s, victims[-1][0] if victims else 0),
            ).fetchall()
            if victims:
                self.db.executemany("DELETE FROM outbox WHERE id = ?", [(v[0],) for v in victims])
                dropped.update(v[1] for v in victims)
            self.db.execute("DELETE FROM seen WHERE at < ?", (now - SEEN_KEEP_S,))
        self._count -= sum(dropped.values())
        return dropped

    def close(self) -> None:
        self.db.close()


class OutboxWorker:
    """Runs every Outbox call on one thread, so SQLite (and its fsync) never blocks the loop."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="outbox")

    async def call(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=True)
        self.outbox.close()
