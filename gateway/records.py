"""The commissioning records this gateway carries (issue 26): `records.sqlite` in the state
directory, apart from the outbox (the outbox's damage checks and retention are about events;
a record is added by `gasguard gateway record add` from another process, with the gateway
running or not).

A record is accepted only once committed (synchronous=FULL): the command says so only then.
Per device the newest record (by its signed finished_at) is the one the device's retained topic
carries; an older one than held is refused at add, the same one again is a no-op. The running
gateway sees a commit by another process through PRAGMA data_version and publishes it; it
marks a record delivered at the broker's PUBACK, and publishes each device's newest record
again at every connect (a broker may have lost its retained messages; the regulator dedupes on
the record's digest). Every record added stays here: `record list` shows what was delivered and
what was replaced before it could be.
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any, NamedTuple

from .recordcheck import Checked, Refused

FILE = "records.sqlite"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    device TEXT NOT NULL, record_id TEXT NOT NULL, digest TEXT NOT NULL UNIQUE,
    finished REAL NOT NULL, finished_at TEXT NOT NULL, key_id TEXT NOT NULL,
    payload TEXT NOT NULL, added_at REAL NOT NULL, delivered_at REAL);
CREATE INDEX IF NOT EXISTS records_device ON records (device, finished, id);
"""


class Held(NamedTuple):
    id: int
    device: str
    record: str  # the record JSON, compact, as parsed (the envelope is made at publish)
    digest: str
    added_at: float  # when the gateway took it: the envelope's time, the same at every send


def _seconds(iso: str) -> float:
    return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


class Records:
    def __init__(self, state_dir: Path, clock=time.time) -> None:
        self.path = Path(state_dir) / FILE
        self.clock = clock
        self.lock = threading.Lock()  # one statement at a time from the gateway's threads
        self.db = self._connect()
        self._version: int | None = None

    def _connect(self) -> sqlite3.Connection:
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=30,
                             check_same_thread=False)  # fmt: skip
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # added means on disk
        db.executescript(_SCHEMA)
        self._inode = os.stat(self.path).st_ino
        return db

    def add(self, c: Checked, compact: str) -> str:
        """Commit a checked record; 'added' or 'already held'. Refused if a newer record, or
        another with the same finish time, is held for the device (a replay must not take the
        retained topic from the newer)."""
        finished = _seconds(c.finished_at)
        with self.lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                if self.db.execute("SELECT 1 FROM records WHERE digest = ?",
                                   (c.digest,)).fetchone():  # fmt: skip
                    self.db.execute("ROLLBACK")
                    return "already held"
                top = self.db.execute(
                    "SELECT finished_at, record_id FROM records WHERE device = ? "
                    "ORDER BY finished DESC, id DESC LIMIT 1", (c.device,)
                ).fetchone()  # fmt: skip
                if top is not None and _seconds(top[0]) >= finished:
                    raise Refused(
                        "the gateway holds a record for %s finished %s (%s); this one finished "
                        "%s: only a newer record replaces it" % (c.device, top[0], top[1],
                                                                 c.finished_at))  # fmt: skip
                self.db.execute(
                    "INSERT INTO records (device, record_id, digest, finished, finished_at, "
                    "key_id, payload, added_at) VALUES (?,?,?,?,?,?,?,?)",
                    (c.device, c.record_id, c.digest, finished, c.finished_at, c.key_id,
                     compact, self.clock()),
                )  # fmt: skip
                self.db.execute("COMMIT")
            except BaseException:
                if self.db.in_transaction:
                    self.db.execute("ROLLBACK")
                raise
        return "added"

    def changed(self) -> bool:
        """True when another connection committed since the last call (and at the first)."""
        with self.lock:
            try:
                gone = os.stat(self.path).st_ino != self._inode
            except FileNotFoundError:
                gone = True
            if gone:  # deleted (or replaced) under us: `record add` writes the file now there
                self.db.close()
                self.db = self._connect()
                self._version = None
            v = self.db.execute("PRAGMA data_version").fetchone()[0]
        was, self._version = self._version, v
        return was != v

    def newest(self, undelivered_only: bool) -> dict[str, Held]:
        """Each device's newest record (only those not yet delivered, if asked)."""
        q = ("SELECT r.id, r.device, r.payload, r.digest, r.added_at FROM records r WHERE r.id = "
             "(SELECT x.id FROM records x WHERE x.device = r.device "
             "ORDER BY x.finished DESC, x.id DESC LIMIT 1)")  # fmt: skip
        if undelivered_only:
            q += " AND r.delivered_at IS NULL"
        with self.lock:
            return {r[1]: Held(*r) for r in self.db.execute(q)}

    def delivered(self, row_id: int) -> None:
        with self.lock:
            self.db.execute("UPDATE records SET delivered_at = ? WHERE id = ? AND "
                            "delivered_at IS NULL", (self.clock(), row_id))  # fmt: skip

    def listing(self) -> list[dict[str, Any]]:
        """Every record held, newest first per device, with what became of it."""
        with self.lock:
            rows = self.db.execute(
                "SELECT device, record_id, digest, finished_at, key_id, added_at, delivered_at "
                "FROM records ORDER BY device, finished DESC, id DESC").fetchall()  # fmt: skip
        out, seen = [], set()
        for r in rows:
            newest = r[0] not in seen
            seen.add(r[0])
            state = ("delivered" if r[6] is not None else "waiting for the broker" if newest
                     else "replaced before delivery")  # fmt: skip
            out.append({"device": r[0], "record_id": r[1], "digest": r[2], "finished_at": r[3],
                        "key_id": r[4], "added_at": r[5], "delivered_at": r[6],
                        "state": state, "current": newest})  # fmt: skip
        return out

    def close(self) -> None:
        self.db.close()


def open_for_gateway(state_dir: Path, log: Any) -> Records:
    """The gateway's Records: a file that is not a database (a power cut, a bad card) is moved
    aside and a fresh one begun, as a damaged outbox is. These are papers, not the alarm path:
    the gateway must not stop for them (a delivered record stays retained at the broker; one
    not yet delivered is added again from its file)."""
    try:
        return Records(state_dir)
    except sqlite3.OperationalError:  # locked, no permission, a full disk: not damage
        raise
    except sqlite3.DatabaseError as e:
        path = Path(state_dir) / FILE
        aside = path.with_name("%s.damaged-%s" % (FILE, time.strftime("%Y%m%dT%H%M%S")))
        for suffix in ("", "-wal", "-shm"):
            if Path(str(path) + suffix).exists():
                os.replace(str(path) + suffix, str(aside) + suffix)
        log.error("commissioning records damaged: moved aside, a fresh file begun; add any "
                  "record not yet delivered again",
                  extra={"path": str(path), "moved_to": str(aside), "reason": str(e)})  # fmt: skip
        return Records(state_dir)
