"""The console's hazard ledger page: its filters (from the query string, checked), its rows a
page at a time, and the same rows as a CSV or XLSX download (regulator/export.py's columns and
cell rules, Chinese headers). Both read only the account's scope."""

from __future__ import annotations

import datetime
import tempfile
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import export, hazards, views

PAGE = 200  # rows a page shows; the export takes every row the filters match
PAGES_MAX = 100_000
FORMATS = {"csv": ("text/csv; charset=utf-8", export.write_csv),
           "xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    export.write_xlsx)}  # fmt: skip


class BadQuery(ValueError):
    """A query string the ledger does not take: 400, naming the parameter."""


@dataclass(frozen=True)
class Query:
    everything: bool = False  # closed hazards too
    overdue: bool = False  # only those past their deadline (never closed ones)
    page: int = 1

    def link(self, **change: Any) -> str:
        """This query with some values changed, as the page's links carry it."""
        q = {"status": "all" if self.everything else None, "overdue": 1 if self.overdue else None,
             "page": self.page if self.page > 1 else None}  # fmt: skip
        for k, v in change.items():
            q[k] = v
        return urllib.parse.urlencode({k: v for k, v in q.items() if v})


def parse(params: Any, paged: bool = True) -> Query:
    """status=all|open, overdue=1, page=N (the page only); anything else, or a value twice, is
    refused rather than ignored: a link that says more than it shows would mislead."""
    got: dict[str, str] = {}
    for key, value in params.multi_items():
        if key not in (("status", "overdue", "page") if paged else ("status", "overdue")):
            raise BadQuery("unknown parameter %r" % key[:40])
        if key in got:
            raise BadQuery("%s given twice" % key)
        got[key] = value
    if got.get("status", "open") not in ("open", "all"):
        raise BadQuery("status: open or all")
    if got.get("overdue", "1") != "1":
        raise BadQuery("overdue: 1 or absent")
    page = got.get("page", "1")
    if not (page.isascii() and page.isdigit() and len(page) <= 6 and 1 <= int(page) <= PAGES_MAX):
        raise BadQuery("page: a whole number from 1 to %d" % PAGES_MAX)
    return Query(got.get("status") == "all", "overdue" in got, int(page))


def rows(store: Any, f: views.Filters, q: Query, limit: int | None,
         offset: int = 0) -> tuple[list[dict[str, Any]], int]:  # fmt: skip
    """The hazards q asks for within f's scope, not closed first, then by deadline; how many
    match. limit None: all of them (the export)."""
    have = store.table_names()
    if "hazards" not in have:
        return [], 0
    where, params = f.where(views.has_registry(store, have))
    at = views.now()
    if not q.everything:
        where += " AND status <> 'closed'"
    if q.overdue:
        where += " AND status <> 'closed' AND deadline < ?"
        params.append(at)
    with views.snapshot_of(store):
        total = store.x("SELECT count(*) FROM hazards WHERE 1=1" + where, params).fetchone()[0]
        got = store.rows(
            "SELECT %s FROM hazards WHERE 1=1%s ORDER BY CASE status WHEN 'closed' THEN 1 "
            "ELSE 0 END, deadline, id%s" % (", ".join(hazards.COLS), where,
                                            "" if limit is None else " LIMIT ? OFFSET ?"),
            params if limit is None else [*params, limit, offset],
        )  # fmt: skip
    for r in got:
        r["overdue"] = r["status"] != "closed" and r["deadline"] < at
    return got, total


def download(store: Any, f: views.Filters, q: Query, fmt: str, zone: str) -> tuple[Path, str]:
    """The rows q and f select written as fmt into a temporary file: (its path, a file name
    for the download). The caller deletes the file's directory once sent."""
    import zoneinfo

    tz = zoneinfo.ZoneInfo(zone)
    listed, _ = rows(store, f, q, None)
    table = export.format_rows(store, listed, tz)
    out = Path(tempfile.mkdtemp(prefix="gasguard-export-")) / ("ledger." + fmt)
    FORMATS[fmt][1](out, table)
    stamp = datetime.datetime.now(tz).strftime("%Y%m%d-%H%M")
    return out, "隐患台账-%s.%s" % (stamp, fmt)


def disposition(name: str) -> str:
    """attachment; an ASCII name for old clients, the Chinese one (RFC 6266/5987) for the rest."""
    ascii_name = "hazard-ledger-" + name.split("-", 1)[1]
    return "attachment; filename=\"%s\"; filename*=UTF-8''%s" % (
        ascii_name, urllib.parse.quote(name))
