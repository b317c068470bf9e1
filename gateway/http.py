"""The status endpoint: aiohttp's web server in the gateway's own event loop.

aiohttp rather than an ASGI app on uvicorn: the gateway is one asyncio process, and aiohttp's
AppRunner starts and stops inside it like any other server, with no second server framework
and no ASGI layer in between; its HTTP parser is the bounded, tested one (request line and
headers capped, bodies refused by size), and its router matches exact paths and methods.

Routes, GET only (anything else is 404 or 405; a request line or a header past its cap is 400):
  /status   the gateway's counters as JSON (`gasguard gateway status` reads it)
  /metrics  Prometheus text format (gateway/metrics.py)
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING

from aiohttp import web
from aiohttp.http_exceptions import HttpProcessingError

from .metrics import Metrics

if TYPE_CHECKING:
    from .service import Gateway

log = logging.getLogger("gasguard.gateway")

MAX_LINE = 2048  # request line: "GET /status HTTP/1.1" needs a few dozen bytes
MAX_FIELD = 4096  # one header
MAX_HEADERS = 32


class _BadRequests(logging.Filter):
    """aiohttp logs a request its parser refuses (a 70 KB request line) with a traceback at
    error level; it already answered 400, so one warning line without the traceback says it."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.exc_info = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
            record.msg, record.args = "bad HTTP request refused: %s", (exc.message[:120],)
        return True


def _route_aiohttp_logs() -> None:
    """aiohttp's server log into the gateway's JSON log lines, bad requests as warnings."""
    ours = logging.getLogger("gasguard")
    srv = logging.getLogger("aiohttp.server")
    srv.handlers[:] = ours.handlers
    srv.propagate = not ours.handlers
    if not any(isinstance(f, _BadRequests) for f in srv.filters):
        srv.addFilter(_BadRequests())


class StatusServer:
    def __init__(self, gw: Gateway) -> None:
        self.gw = gw
        self.metrics = Metrics(gw)
        self._runner: web.AppRunner | None = None

    def app(self) -> web.Application:
        app = web.Application(client_max_size=1024, handler_args={
            "max_line_size": MAX_LINE, "max_field_size": MAX_FIELD, "max_headers": MAX_HEADERS,
        })  # fmt: skip
        app.router.add_get("/status", self._status, allow_head=False)
        app.router.add_get("/metrics", self._metrics, allow_head=False)
        return app

    async def _status(self, request: web.Request) -> web.Response:
        return web.json_response(self.gw.status(), dumps=lambda o: json.dumps(o, indent=1))

    async def _metrics(self, request: web.Request) -> web.Response:
        body, ctype = self.metrics.render()
        return web.Response(body=body, headers={"Content-Type": ctype})

    async def start(self, host: str, port: int) -> int:
        from .exits import EX_OSERR, Fatal

        _route_aiohttp_logs()
        self._runner = web.AppRunner(self.app(), access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        try:
            await site.start()
        except OSError as e:
            msg = "cannot listen for status on %s:%d: %s" % (host, port, e)
            raise Fatal(EX_OSERR, msg) from None
        return self._runner.addresses[0][1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
