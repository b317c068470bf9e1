"""The console's city views (issue 24): the overview's chart and map data as JSON, and the
compliance board page. Under the console's login and scope like every page: the JSON through
the API's own checks (api.json_endpoint: unknown or repeated parameters, bad values → 400).

    GET /api/alarms/daily                      alarms per day, last 30 days, per district
    GET /api/map                               units with place and state; the outlines
    GET /api/compliance?district=&finding=&limit=&offset=
    GET /compliance?district=&finding=&page=   the board (500 units a page)
"""

from __future__ import annotations

import zoneinfo
from collections.abc import Callable
from typing import Any

from .. import api, board, trend, unitmap, views
from ..geo import Boundaries

PAGE_ROWS = 500  # as the console's other lists
PAGES_MAX = api.OFFSET_MAX // PAGE_ROWS
BOARD_PARAMS = ("district", "finding", "page")


def board_params(request: Any) -> dict[str, Any]:
    """The board page's query, checked as the API checks its own; an empty value (a filter
    form's "all") is no filter."""
    got: dict[str, str] = {}
    for key, value in request.query_params.multi_items():
        if key not in BOARD_PARAMS:
            raise api.BadRequest("unknown parameter %r (this page takes: %s)"
                                 % (key[: api.TEXT_MAX], ", ".join(BOARD_PARAMS)))  # fmt: skip
        if key in got:
            raise api.BadRequest("%s given twice" % key)
        got[key] = value
    out: dict[str, Any] = {k: api._text(k, v) for k, v in got.items() if v and k != "page"}
    out["page"] = api._int("page", got["page"], 1, PAGES_MAX) if got.get("page") else 1
    return out


def routes(readers: api.Stores, render: Callable[..., Any], zone: zoneinfo.ZoneInfo,
           boundaries: Boundaries | None) -> list[Any]:  # fmt: skip
    from starlette.concurrency import run_in_threadpool
    from starlette.routing import Route

    def daily(store: Any, _: Any, p: dict[str, Any]) -> dict[str, Any]:
        return trend.alarms_per_day(store, p["scope"], zone)

    def map_data(store: Any, _: Any, p: dict[str, Any]) -> dict[str, Any]:
        got = unitmap.unit_states(store, p["scope"])
        got["boundaries"] = (
            boundaries.seen_from(unitmap.nodes_seen(store, p["scope"]))
            if boundaries is not None
            else {"type": "FeatureCollection", "features": []}
        )
        return got

    def compliance(store: Any, _: Any, p: dict[str, Any]) -> dict[str, Any]:
        f = views.Filters(district=p.get("district"), state="all", scope=p["scope"])
        return board.board(store, f, p.get("finding"), p["limit"], p.get("offset", 0))

    async def board_page(request: Any) -> Any:
        scope = request.scope[api.SCOPE_KEY]
        try:
            q = board_params(request)
            f = views.Filters(district=q.get("district"), state="all", scope=scope)

            def read() -> tuple[dict[str, Any], list[dict[str, str]]]:
                store = readers.get()
                got = board.board(store, f, q.get("finding"), PAGE_ROWS,
                                  (q["page"] - 1) * PAGE_ROWS)  # fmt: skip
                return got, board.districts_seen(store, scope)

            b, districts = await run_in_threadpool(read)
        except ValueError as e:  # BadRequest, NoRegistry, a finding compliance.py does not name
            return render(request, "error.html", 400, message=str(e))
        pages = max(1, -(-b["total"] // PAGE_ROWS))
        return render(request, "compliance.html", b=b, districts=districts, q=q, pages=pages)

    return [
        Route("/api/alarms/daily", api.json_endpoint(readers, (), daily)),
        Route("/api/map", api.json_endpoint(readers, (), map_data)),
        Route("/api/compliance", api.json_endpoint(
            readers, ("district", "finding", "limit", "offset"), compliance)),
        Route("/compliance", board_page),
    ]  # fmt: skip
