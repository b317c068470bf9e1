"""Opening the regulator's database for a command that reads or edits the ledger, and the
command-line checks those commands share (who acts, what time they mean).

Unlike the ingest, these never make a database: a SQLite path that does not exist, or a file
that is not a regulator database, is refused before anything is written to it (opening it the
store's way would create the file, or switch a foreign file to WAL).
"""

from __future__ import annotations

import datetime
import os
import sqlite3
import sys
import unicodedata
import urllib.parse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from .refusal import Refusal

NAME_CHARS = 100
NOTE_CHARS = 2000  # a note is a paragraph for the ledger, not a report: attach those elsewhere


def _check_sqlite(path: str) -> None:
    from .store import NotOurDatabase

    if not os.path.isfile(path):
        raise NotOurDatabase("--db %s: no such database file" % path)
    try:  # read-only: a foreign file stays byte for byte as it was
        db = sqlite3.connect("file:%s?mode=ro" % urllib.parse.quote(path), uri=True)
        try:
            names = {r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        finally:
            db.close()
    except sqlite3.DatabaseError as e:
        raise NotOurDatabase("--db %s: %s" % (path, e)) from None
    if "regulator_meta" not in names:
        raise NotOurDatabase("--db %s: not a regulator database (no regulator_meta)" % path)


def open_ledger(url: str) -> Any:
    """The store of an existing regulator database, of this version's schema and with all its
    tables (NotOurDatabase: exit 2; StoreUnreachable: exit 3)."""
    from .store import check_url, is_postgres, open_store

    check_url(url)
    if not is_postgres(url):
        _check_sqlite(url)
    return open_store(url)


@contextmanager
def ledger(url: str) -> Iterator[Any]:
    store = open_ledger(url)
    try:
        yield store
    finally:
        store.close()


def guarded(prog: str, body: Callable[[], int]) -> int:
    """Run a command's body: a refusal is one line on stderr and exit 2, an unreachable
    database exit 3."""
    from .store import StoreUnreachable

    try:
        return body()
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (prog, e), file=sys.stderr)
        return 3
    except ValueError as e:  # bad input, not our database, an illegal transition
        print("%s: %s" % (prog, e), file=sys.stderr)
        return 2


def actor(option: str, name: str) -> str:
    """A person's name as given (--by, --to): one line, not too long, in one spelling (NFKC:
    full-width letters and digits as ASCII; runs of spaces as one; invisible characters such as
    a zero-width space dropped), not empty."""
    _encodable(option, name)
    if any(c < " " or c == "\x7f" for c in name.strip()):
        raise Refusal("%(field)s: one line of at most %(n)d characters", field=option,
                      n=NAME_CHARS)  # fmt: skip
    name = unicodedata.normalize("NFKC", name)
    name = " ".join("".join(c for c in name if unicodedata.category(c) != "Cf").split())
    if not name:
        raise Refusal("%(field)s: a name is needed", field=option)
    if len(name) > NAME_CHARS:
        raise Refusal("%(field)s: one line of at most %(n)d characters", field=option,
                      n=NAME_CHARS)  # fmt: skip
    return name


def _encodable(option: str, text: str) -> None:
    try:  # what the shell passed may be bytes that are not UTF-8 (surrogate escapes)
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise Refusal("%(field)s: not UTF-8 text", field=option) from None
    if "\x00" in text:
        raise Refusal("%(field)s: holds a NUL character", field=option)


def note(option: str, text: str | None) -> str | None:
    """A free-text note: trimmed, at most NOTE_CHARS, UTF-8, lines allowed."""
    if text is None or not text.strip():
        return None
    _encodable(option, text)
    if len(text.strip()) > NOTE_CHARS:
        raise Refusal("%(field)s: at most %(n)d characters", field=option, n=NOTE_CHARS)
    return text.strip()


def hazard_id(text: str) -> int:
    """argparse type for a hazard's number: a positive integer the database can hold."""
    import argparse

    if not text.isdigit() or not 1 <= int(text) < 2**31:
        raise argparse.ArgumentTypeError("%r is not a hazard number" % text)
    return int(text)


def when(option: str, text: str) -> datetime.datetime:
    """An ISO 8601 time from the command line. Without an offset it is this machine's local
    time (what the person sees on the wall); a date alone means the end of that day."""
    try:
        t = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            "%s %r: not an ISO 8601 time (e.g. 2026-12-01T18:00 or 2026-12-01)" % (option, text)
        ) from None
    if len(text.strip()) == 10:  # YYYY-MM-DD
        t = t.replace(hour=23, minute=59, second=59)
    if t.tzinfo is None:
        t = t.astimezone()  # local
    if not 2000 <= t.year <= 2100:
        raise ValueError("%s %r: not a plausible date" % (option, text))
    return t
