"""`gasguard regulator api`: the store as read-only JSON over HTTP (Starlette), for the web
console (issue 24) and whatever else a city runs.

    GET /api/overview                          counts per district
    GET /api/sites?district=&limit=&offset=    sites with devices online and open incidents
    GET /api/sites/{site}?limit=               one site: unit, devices, gateways, incidents
    GET /api/incidents?state=&site=&district=&limit=
    GET /api/gateways?state=&site=&district=&limit=   trouble first: offline, deepest outbox
    GET /api/rejected?limit=                   what the ingest refused, latest first

A parameter the endpoint does not take, one given twice, a limit out of 1..1000 or text with
control characters is a 400 naming it; every value reaches SQL as a bound parameter. A database
that cannot be reached is a 503 (the next request tries again). No authentication of its own:
it listens on loopback unless told otherwise; put it behind the city's proxy and its logins.
"""

from __future__ import annotations

import contextlib
import sys
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any

from gasguard.tools import exitcodes

from . import views

PROG = "gasguard regulator api"
DEFAULT_LIMIT = 100
TEXT_MAX = 128  # a site id or district name is far shorter
OFFSET_MAX = 1_000_000


class BadRequest(ValueError):
    pass


def _text(name: str, value: str) -> str:
    if not value or len(value) > TEXT_MAX or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise BadRequest("%s: 1 to %d characters, no control characters" % (name, TEXT_MAX))
    return value


def _int(name: str, value: str, low: int, high: int) -> int:
    if not (value.isascii() and value.isdigit() and len(value) <= 8 and low <= int(value) <= high):
        raise BadRequest("%s: a whole number from %d to %d" % (name, low, high))
    return int(value)


def _params(request: Any, allowed: tuple[str, ...]) -> dict[str, Any]:
    """The query's parameters, checked: unknown or repeated ones are refused, not ignored."""
    got: dict[str, Any] = {}
    for key, value in request.query_params.multi_items():
        if key not in allowed:
            raise BadRequest("unknown parameter %r (this endpoint takes: %s)"
                             % (key[:TEXT_MAX], ", ".join(allowed) or "none"))  # fmt: skip
        if key in got:
            raise BadRequest("%s given twice" % key)
        if key == "limit":
            got[key] = _int(key, value, 1, views.LIMIT_MAX)
        elif key == "offset":
            got[key] = _int(key, value, 0, OFFSET_MAX)
        else:
            got[key] = _text(key, value)
    got.setdefault("limit", DEFAULT_LIMIT)
    return got


class Stores:
    """One connection per server thread (Starlette runs these sync handlers in a thread pool;
    neither driver's connection may be shared between threads), opened when first needed."""

    def __init__(self, url: str, opener: Callable[[str], Any] | None = None) -> None:
        self.url = url
        self.opener = opener or views.open_reader  # the console's writers pass open_store
        self.local = threading.local()
        self.opened: list[Any] = []
        self.lock = threading.Lock()

    def get(self) -> Any:
        store = getattr(self.local, "store", None)
        if store is None:
            store = self.local.store = self.opener(self.url)
            with self.lock:
                self.opened.append(store)
        return store

    def drop(self) -> None:
        """This thread's connection failed: the next request opens another."""
        store = getattr(self.local, "store", None)
        self.local.store = None
        if store is not None:
            with self.lock:
                self.opened.remove(store)
            try:
                store.close()
            except Exception:  # noqa: BLE001 - a dead connection may fail to close
                pass

    def close(self) -> None:
        with self.lock:
            for s in self.opened:
                # SQLite refuses a close from another thread than its own; such a connection
                # is closed when its thread's local storage goes
                with contextlib.suppress(Exception):
                    s.close()
            self.opened.clear()


SCOPE_KEY = "gasguard.scope"  # the console sets it (a node id) for a scoped account


class OutOfScope(LookupError):
    """What a scoped account may not read at all (the rejected messages have no site)."""


def json_endpoint(stores: Stores, allowed: tuple[str, ...],
             view: Callable[..., Any]) -> Callable[..., Any]:  # fmt: skip
    """A JSON endpoint: its parameters checked (allowed), the request's scope passed on, each
    refusal its status (400, 403, 404 for None, 503 for a lost database)."""
    from starlette.responses import JSONResponse

    from .store import NotOurDatabase, StoreUnreachable, transient

    def handle(request: Any) -> Any:
        try:
            params = _params(request, allowed)
            params["scope"] = request.scope.get(SCOPE_KEY)
            body = view(stores.get(), request.path_params, params)
        except OutOfScope as e:
            return JSONResponse({"error": str(e)}, status_code=403)
        except (BadRequest, views.NoRegistry) as e:
            return JSONResponse({"error": str(e)}, status_code=400)
        except ValueError as e:  # Filters: a state it does not know
            if isinstance(e, NotOurDatabase):
                return JSONResponse({"error": "not a regulator database"}, status_code=503)
            return JSONResponse({"error": str(e)}, status_code=400)
        except Exception as e:
            if isinstance(e, StoreUnreachable) or transient(e):
                stores.drop()
                return JSONResponse({"error": "database unavailable"}, status_code=503)
            raise
        if body is None:
            return JSONResponse({"error": "no such site"}, status_code=404)
        return JSONResponse(body)

    return handle


def routes(stores: Stores) -> list[Any]:
    """The API's routes over stores. A request whose ASGI scope carries SCOPE_KEY (the web
    console's logins put it there) sees only the units under that node."""
    from starlette.routing import Route

    def endpoint(allowed: tuple[str, ...], view: Callable[..., Any]) -> Callable[..., Any]:
        return json_endpoint(stores, allowed, view)

    def filters(p: dict[str, Any], state: str = "open") -> views.Filters:
        return views.Filters(site=p.get("site"), district=p.get("district"),
                             state=p.get("state", state), scope=p["scope"])  # fmt: skip

    return [
        Route("/api/overview", endpoint((), lambda s, _, p: views.overview(s, p["scope"]))),
        Route("/api/sites", endpoint(("district", "limit", "offset"), lambda s, _, p:
              views.sites(s, filters(p), p["limit"], p.get("offset", 0)))),
        Route("/api/sites/{site}", endpoint(("limit",), lambda s, path, p:
              views.site(s, _text("site", path["site"]), p["limit"], p["scope"]))),
        Route("/api/incidents", endpoint(("state", "site", "district", "limit"), lambda s, _, p:
              _incidents(s, filters(p), p["limit"]))),
        Route("/api/gateways", endpoint(("state", "site", "district", "limit"), lambda s, _, p:
              _gateways(s, p))),
        Route("/api/rejected", endpoint(("limit",), lambda s, _, p: _rejected(s, p))),
    ]  # fmt: skip


def create_app(store_url: str) -> Any:
    """The API over the store at store_url (checked at the first request, not here)."""
    from starlette.applications import Starlette

    stores = Stores(store_url)

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        stores.close()

    app = Starlette(routes=routes(stores), lifespan=lifespan)
    app.state.stores = stores
    return app


def _rejected(store: Any, p: dict[str, Any]) -> dict[str, Any]:
    if p["scope"] is not None:  # they name no site: only the whole city's accounts see them
        raise OutOfScope("the rejected messages are for accounts of the whole city")
    return views.rejected(store, p["limit"])


def _incidents(store: Any, f: views.Filters, limit: int) -> dict[str, Any]:
    listed, total = views.incidents(store, f, limit)
    return {"total": total, "incidents": listed}


def _gateways(store: Any, p: dict[str, Any]) -> dict[str, Any]:
    online = p.get("state", "all")
    if online not in views.GATEWAY_STATES:
        raise BadRequest("state: %s" % ", ".join(views.GATEWAY_STATES))
    f = views.Filters(
        site=p.get("site"), district=p.get("district"), state="all", scope=p["scope"]
    )
    return views.gateways(store, f, online, p["limit"])


def register_api(rs: Any) -> None:
    a = rs.add_parser(
        "api",
        help="read-only JSON API over --db (for the web console)",
        epilog="here:\n  2  --db is not a regulator database, or a bad --listen\n"
        "  3  the database cannot be reached at start",
    )
    a.add_argument("--db", required=True, help="postgresql://... or the ingest's SQLite file")
    a.add_argument("--listen", default="127.0.0.1:8023", help="HOST:PORT (default 127.0.0.1:8023)")
    a.set_defaults(run=main_api)


def split_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("--listen: HOST:PORT, e.g. 127.0.0.1:8023")
    return host, int(port)


def main_api(args: Any) -> int:
    from .store import NotOurDatabase, StoreUnreachable

    try:
        host, port = split_listen(args.listen)
        views.open_reader(args.db).close()  # say now, not at the first request
    except (ValueError, NotOurDatabase) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.UNREACHABLE
    import uvicorn

    print("%s: http://%s:%d/api/overview" % (PROG, host, port), flush=True)
    uvicorn.run(create_app(args.db), host=host, port=port, log_level="warning")
    return exitcodes.OK
