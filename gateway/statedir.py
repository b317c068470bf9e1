"""The state directory at start: usable (or the gateway says which path is not, and exits 73),
and an outbox that passes SQLite's check (or it is moved aside, a fresh one started, and what was
lost said in a gateway.data_lost event) and holds every commit its high-water mark says was made
(or the shortfall is said the same way: a damaged or truncated WAL, highwater.py)."""

from __future__ import annotations

import logging
import os
import sqlite3
import time
from pathlib import Path

from . import highwater
from .exits import EX_CANTCREAT, EX_IOERR, Fatal
from .outbox import Outbox

log = logging.getLogger("gasguard.gateway")

OUTBOX = "outbox.sqlite"


def prepare(state_dir: Path) -> None:
    """Create the directory and prove it writable, naming the path when it is not (SQLite
    would only say "unable to open database file")."""
    probe = state_dir / ".write-test"
    try:
        state_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise Fatal(
            EX_CANTCREAT, "state directory %s is not writable: %s" % (state_dir, e.strerror)
        ) from None


def _check(path: Path) -> str | None:
    """None when the outbox passes SQLite's quick_check, else what is wrong."""
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            rows = db.execute("PRAGMA quick_check").fetchall()
            db.execute("SELECT count(*) FROM outbox").fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        return str(e)
    bad = [r[0] for r in rows if r[0] != "ok"]
    return "; ".join(bad)[:300] if bad else None


def _shortfall(path: Path) -> str | None:
    """None unless the outbox's log ends before commits its high-water mark recorded."""
    mark = highwater.read(path)
    if mark is None:
        return None  # a first start, an older gateway's outbox, or a mark not whole
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            row = db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'").fetchone()
        finally:
            db.close()
    except sqlite3.Error as e:
        return "outbox counter unreadable (%s)" % e
    seq = row[0] if row else 0
    if seq >= mark:
        return None
    return (
        "outbox log (WAL) damaged or truncated: rows %d-%d gone, up to %d events acked to"
        " boards lost (some may have been published)" % (seq + 1, mark, mark - seq)
    )


def _count(path: Path) -> int | None:
    """Unpublished events in a damaged outbox, if SQLite can still count them."""
    try:
        db = sqlite3.connect("file:%s?mode=ro" % path, uri=True)
        try:
            return db.execute("SELECT count(*) FROM outbox").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return None


def open_outbox(state_dir: Path, max_events: int, max_age_s: float) -> tuple[Outbox, str | None]:
    """The outbox, checked; and, when a damaged one was moved aside, what to report as lost."""
    path = state_dir / OUTBOX
    lost = None
    if path.exists():
        why = _check(path)
        if why is not None:
            n = _count(path)
            aside = path.with_name("%s.damaged-%s" % (OUTBOX, time.strftime("%Y%m%dT%H%M%S")))
            for suffix in ("", "-wal", "-shm", highwater.SUFFIX):
                src = Path(str(path) + suffix)
                if src.exists():
                    os.replace(src, Path(str(aside) + suffix))
            lost = "outbox damaged (%s): moved aside to %s; %s unpublished events in it lost" % (
                why, aside.name, "its" if n is None else n
            )  # fmt: skip
            log.error(
                "outbox damaged: moved aside, a fresh one started",
                extra={"path": str(path), "moved_to": str(aside), "reason": why,
                       "unpublished": n},
            )  # fmt: skip
        else:
            lost = _shortfall(path)
            if lost is not None:
                log.error("outbox lost commits: events acked to boards may be lost",
                          extra={"path": str(path), "detail": lost})  # fmt: skip
    try:
        return Outbox(path, max_events, max_age_s), lost  # the mark begins again at the log's
    except (sqlite3.Error, OSError) as e:
        raise Fatal(EX_IOERR, "outbox %s cannot be opened: %s" % (path, e)) from None
