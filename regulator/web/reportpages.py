"""The console's weekly reports (issue 25): the list, a district week's page, its two files.

    GET /reports                                  the reports the account may read
    GET /reports/{district}/{week}                one district week: its summary, its files
    GET /reports/{district}/{week}.{pdf|xlsx}     a file, as the report recorded it

Only an account whose node is the district or above it (the district's, the city's) reads a
district's report: a street's account may not, the report holds the other streets' figures.
Any role may (a viewer reads). The file is found through the ledger's weekly_reports row
(regulator/reports/made.py), never through a path built from the URL, and sent only if its
SHA-256 is the recorded one. Anything not readable by the account, or not there, is 404; a
week not spelled as an ISO week is 400; a file missing or changed on disk is 410.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from .. import api
from ..reports import made
from ..reports.week import parse

LIST_MAX = 500  # rows the list shows: 16 districts' ten years are 8,320; the newest first
LEVELS = ("city", "district")  # an account at these levels reads the districts at or below


def covered(store: Any, node: str) -> list[str]:
    """The districts an account at node reads: the node itself, or the districts under it."""
    return [r[0] for r in store.x(
        "WITH RECURSIVE under_node(id) AS (SELECT id FROM nodes WHERE id = ? UNION "
        "SELECT n.id FROM nodes n JOIN under_node u ON n.parent = u.id) "
        "SELECT n.id FROM nodes n JOIN under_node u ON n.id = u.id WHERE n.level = 'district' "
        "ORDER BY n.id", (node,)).fetchall()]  # fmt: skip


def may_read(store: Any, node: str) -> bool:
    """Whether the account's node is one whose reports it reads (the navigation's link)."""
    row = store.x("SELECT level FROM nodes WHERE id = ?", (node,)).fetchone()
    return row is not None and row[0] in LEVELS


def disposition(name: str) -> str:
    """attachment; an ASCII fallback for old clients, the UTF-8 name (RFC 6266/5987)."""
    fallback = "".join(c if c.isascii() and (c.isalnum() or c in "-_.") else "_" for c in name)
    return "attachment; filename=\"%s\"; filename*=UTF-8''%s" % (
        fallback, urllib.parse.quote(name, safe=""))


def routes(readers: Any, render: Callable[..., Any], user_key: str) -> list[Any]:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import Response
    from starlette.routing import Route

    def not_found(request: Any) -> Response:
        return render(request, "error.html", 404, message="no such report")

    def readable(request: Any) -> tuple[str, str] | Response:
        """(district, week) from the path if the week is one; else the 400 or 404 to answer."""
        district, week = request.path_params["district"], request.path_params["week"]
        try:
            if parse(week).name != week:  # " 2026-W48", full-width digits: not this week's name
                raise ValueError(week)
            api._text("district", district)  # PostgreSQL refuses a NUL in a query's text at all
        except api.BadRequest:
            return not_found(request)
        except ValueError:
            return render(request, "error.html", 400, message="not an ISO week, e.g. 2026-W48")
        return district, week

    def one(request: Any, district: str, week: str) -> dict[str, Any] | None:
        store = readers.get()
        if district not in covered(store, request.scope[user_key]["node"]):
            return None
        return made.find(store, district, week)

    async def listing(request: Any) -> Response:
        if not request.scope[user_key]["reports"]:  # a street's or a grid's account
            return not_found(request)

        def read() -> list[dict[str, Any]]:
            store = readers.get()
            return made.of_districts(store, covered(store, request.scope[user_key]["node"]),
                                     LIST_MAX)  # fmt: skip

        rows = await run_in_threadpool(read)
        return render(request, "reports.html", reports=rows, page=made.page, limit=LIST_MAX)

    async def week_page(request: Any) -> Response:
        got = readable(request)
        if isinstance(got, Response):
            return got
        row = await run_in_threadpool(one, request, *got)
        if row is None:
            return not_found(request)
        return render(request, "report.html", r=row, page=made.page(row["district"], row["week"]))

    async def download(request: Any) -> Response:
        fmt = request.path_params["fmt"]
        got = readable(request) if fmt in made.MIME else not_found(request)
        if isinstance(got, Response):
            return got

        def read() -> tuple[str, bytes] | None | str:
            row = one(request, *got)
            if row is None:
                return None
            try:
                return Path(row[fmt]).name, made.read(row[fmt], row[fmt + "_sha256"])
            except made.FileMissing:
                return "the report's file is missing from the reports directory"
            except made.FileChanged:
                return "the report's file on disk is not the one the report recorded"

        sent = await run_in_threadpool(read)
        if sent is None:
            return not_found(request)
        if isinstance(sent, str):
            return render(request, "error.html", 410, message=sent)
        name, data = sent
        return Response(data, media_type=made.MIME[fmt], headers={
            "Content-Disposition": disposition(name), "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store", "Content-Security-Policy": "default-src 'none'",
        })  # fmt: skip

    return [
        Route("/reports", listing),
        Route("/reports/{district:path}/{week}.{fmt}", download),
        Route("/reports/{district:path}/{week}", week_page),
    ]
