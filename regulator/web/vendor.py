"""plotly.js, the console's chart and map library, served from the plotly package installed with
the regulator extra (its package_data/plotly.min.js): no CDN, nothing fetched from outside.

Its URL carries a digest of the file, so browsers keep it a year (immutable) and an upgrade is a
new URL. Sent gzipped where the browser takes it (4.8 MB is 1.4 MB so), compressed once."""

from __future__ import annotations

import functools
import gzip
import hashlib
import importlib.util
from pathlib import Path
from typing import Any

CACHE = "public, max-age=31536000, immutable"


class NoPlotly(RuntimeError):
    """plotly is not installed (the regulator extra brings it)."""


@functools.cache
def plotly_js() -> tuple[str, bytes, bytes]:
    """(URL path, the file, the file gzipped). NoPlotly when plotly is not installed."""
    spec = importlib.util.find_spec("plotly")  # its location, without importing the package
    if spec is None or not spec.submodule_search_locations:
        raise NoPlotly("the console's charts need plotly: pip install 'gasguard[regulator]'")
    path = Path(list(spec.submodule_search_locations)[0]) / "package_data" / "plotly.min.js"
    body = path.read_bytes()
    digest = hashlib.sha256(body).hexdigest()[:16]
    return "/static/plotly-%s.min.js" % digest, body, gzip.compress(body, 6, mtime=0)


def routes() -> list[Any]:
    from starlette.responses import Response
    from starlette.routing import Route

    url, body, packed = plotly_js()

    async def serve(request: Any) -> Response:
        headers = {"Cache-Control": CACHE, "Vary": "Accept-Encoding"}
        if "gzip" in request.headers.get("accept-encoding", ""):
            headers["Content-Encoding"] = "gzip"
            return Response(packed, media_type="text/javascript", headers=headers)
        return Response(body, media_type="text/javascript", headers=headers)

    return [Route(url, serve)]
