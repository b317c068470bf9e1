"""The reports made, as the ledger keeps them: one row per district and week naming its two
files and their SHA-256, so the console and the e-mail find a report through the ledger (never
through a path built from a URL) and never hand out a file changed since it was made.

A table rather than the `report.generate` audit rows alone: the audit log is purged after
audit.RETENTION_DAYS, a district's reports are kept for as long as their files are. The row is
written with the audit row, in its transaction (schedule.record); a report made again replaces
it (the latest made is the one served, as the audit log's last row says).
"""

from __future__ import annotations

import hashlib
import urllib.parse
from pathlib import Path
from typing import Any

TABLES = """
CREATE TABLE IF NOT EXISTS weekly_reports (
    district TEXT NOT NULL, week TEXT NOT NULL, name TEXT NOT NULL, title TEXT NOT NULL,
    text TEXT NOT NULL, as_of TEXT NOT NULL, made_at TEXT NOT NULL,
    pdf TEXT NOT NULL, pdf_sha256 TEXT NOT NULL, xlsx TEXT NOT NULL, xlsx_sha256 TEXT NOT NULL,
    PRIMARY KEY (district, week));
"""
MIME = {"pdf": "application/pdf",
        "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"}  # fmt: skip
READ_MAX = 64 << 20  # no report is near this; a file grown past it is not the one made
COLS = ("district", "week", "name", "title", "text", "as_of", "made_at", "pdf", "pdf_sha256",
        "xlsx", "xlsx_sha256")  # fmt: skip


class FileMissing(LookupError):
    """The report's file is not on disk (moved, deleted, another machine's disk)."""


class FileChanged(ValueError):
    """The file on disk is not the one the report recorded (its SHA-256 differs)."""


def put(store: Any, made: dict[str, Any], at: str) -> None:
    """The report's row from what its audit row recorded (inside the caller's transaction)."""
    files = {Path(p).suffix.lstrip("."): p for p in made["files"]}
    digest = made["sha256"]
    row = (made["district"], made["week"], made["name"], made["title"], made["text"],
           made["as_of"], at, files["pdf"], digest[Path(files["pdf"]).name], files["xlsx"],
           digest[Path(files["xlsx"]).name])  # fmt: skip
    store.x("INSERT INTO weekly_reports (%s) VALUES (%s) ON CONFLICT (district, week) DO UPDATE "
            "SET %s" % (", ".join(COLS), ", ".join("?" * len(COLS)), ", ".join(
                "%s = excluded.%s" % (c, c) for c in COLS[2:])), row)  # fmt: skip


def find(store: Any, district: str, week: str) -> dict[str, Any] | None:
    rows = store.rows("SELECT * FROM weekly_reports WHERE district = ? AND week = ?",
                      (district, week))  # fmt: skip
    return rows[0] if rows else None


def of_districts(store: Any, districts: list[str], limit: int) -> list[dict[str, Any]]:
    """The reports of these districts, the latest week first."""
    sql, param = store.in_list(districts)
    return store.rows("SELECT * FROM weekly_reports WHERE district IN %s ORDER BY week DESC, "
                      "district LIMIT ?" % sql, (param, limit))  # fmt: skip


def page(district: str, week: str) -> str:
    """The console's page of a district's week (regulator/web/reportpages.py). The id is one
    path segment (its / as %2F): a place named ".." cannot become a dot segment a browser
    would fold away."""
    return "/reports/%s/%s" % (urllib.parse.quote(district, safe=""), week)


def link(base_url: str | None, district: str, week: str) -> str | None:
    return None if base_url is None else base_url.rstrip("/") + page(district, week)


def read(path: str | Path, sha256: str | None, limit: int = READ_MAX) -> bytes:
    """The file's bytes if they are the ones recorded; FileMissing or FileChanged otherwise
    (no digest recorded counts as changed: nothing unverified goes out as the report). Read
    once and checked in memory: what is sent is what was hashed."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise FileMissing(str(path)) from None
    except OSError as e:  # unreadable: said as missing, never retried for ever
        raise FileMissing("%s: %s" % (path, e.strerror)) from None
    if len(data) > limit or not sha256 or hashlib.sha256(data).hexdigest() != sha256:
        raise FileChanged(str(path))
    return data
