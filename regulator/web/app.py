"""`gasguard regulator serve`: the web console (issue 24). Server-rendered pages (Jinja2), small
plain JavaScript, every asset from the package, live alarms by Server-Sent Events; the JSON API
(regulator/api.py) mounted behind the same login and scope.

Sessions are Starlette's signed cookie (itsdangerous); its key is made once and kept in the
database (regulator_meta), so a restart or a second server keeps everyone logged in. The cookie
holds the account's name, a CSRF token and the language; the account itself is read again on
every request, so a disabled account or a changed scope counts at once. Every POST carries the
session's CSRF token or is refused (403).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import hmac
import re
import secrets
import shutil
import sys
import zoneinfo
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from gasguard.tools import exitcodes

from .. import api, geo, hazards, triage, views, workorders
from ..refusal import Refusal
from . import accounts, citypages, i18n, ledger, reportpages, throttle, vendor, workpages

PROG = "gasguard regulator serve"
HERE = Path(__file__).parent
USER_KEY = "gasguard.user"
SECRET_META = "console_session_key"
OPEN_PATHS = ("/login", "/static/", "/lang/")
LIST_LIMIT = 500  # rows a page shows; the API pages through the rest


def session_key(url: str) -> str:
    from ..opening import open_ledger

    store = open_ledger(url)
    try:
        throttle.prepare(store)  # the failed logins' tables: the console's own, made here
        key = store.meta(SECRET_META)
        if key is None:
            store.set_meta(SECRET_META, secrets.token_urlsafe(48))
            key = store.meta(SECRET_META)  # a second server starting at once: one key wins
        return key
    finally:
        store.close()


FORM_MAX = 2 << 20  # a form: its longest field is 2,000 characters (a login name may be more)
UPLOADS = re.compile(r"/workorders/\d+/photos")  # bounded by their route (UPLOAD_MAX)


class BodyLimit:
    """ASGI: a request body over FORM_MAX is 413 before it is read. Starlette keeps an
    url-encoded form whole in memory: a gigabyte's login form, before any account, was read in
    full. Without a Content-Length the bytes are counted and the request cut off there."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        from starlette.exceptions import HTTPException
        from starlette.responses import Response

        if scope["type"] != "http" or UPLOADS.fullmatch(scope["path"]):
            return await self.app(scope, receive, send)
        length = dict(scope["headers"]).get(b"content-length")
        if length is not None and (not length.isdigit() or int(length) > FORM_MAX):
            return await Response("request body too large", 413)(scope, receive, send)
        seen = 0

        async def counted() -> dict:
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > FORM_MAX:  # the route's exception handling answers 413
                raise HTTPException(413, "request body too large")
            return message

        await self.app(scope, counted, send)


class Auth:
    """ASGI: the logged-in account into the request (and its scope for the API); no account:
    the API answers 401, a page sends to the login."""

    def __init__(self, app: Any, load: Callable[[str], dict[str, Any] | None]) -> None:
        self.app, self.load = app, load

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        from starlette.concurrency import run_in_threadpool
        from starlette.responses import JSONResponse, RedirectResponse

        session = scope.get("session", {})
        user = await run_in_threadpool(self.load, session["user"]) if "user" in session else None
        if user is None:
            session.pop("user", None)
            path = scope["path"]
            if path.startswith("/api/"):
                return await JSONResponse({"error": "log in first"}, 401)(scope, receive, send)
            if not any(path.startswith(p) for p in OPEN_PATHS):
                # back to the page asked for after the login (a robot's link to a unit or a
                # report); only a GET is worth coming back to
                back = path + ("?" + scope["query_string"].decode("latin-1")
                               if scope.get("query_string") else "")  # fmt: skip
                target = "/login"
                if scope.get("method") == "GET" and local_path(back):
                    target += "?" + urlencode({"next": back})
                return await RedirectResponse(target, 303)(scope, receive, send)
        else:
            scope[USER_KEY] = user
            scope[api.SCOPE_KEY] = user["scope"]
        await self.app(scope, receive, send)


NEXT_MAX = 2000  # characters of a page to come back to after the login


def local_path(v: Any) -> bool:
    """A path on this console to send a browser to, never another site's: one "/" then no
    second "/" or "\\" (a browser reads "//host" and "/\\host" as another host), no control or
    space characters, not the login or logout itself."""
    return (isinstance(v, str) and 1 <= len(v) <= NEXT_MAX and v.startswith("/")
            and v[1:2] not in ("/", "\\") and "\\" not in v
            and not any(c <= " " or "\x7f" <= c <= "\x9f" for c in v)
            and not v.startswith(("/login", "/logout")))  # fmt: skip


class Fingerprint:
    """views.fingerprint read at most once per poll_s however many pages listen: a hundred
    open alarm pages cost the database what one does."""

    def __init__(self, read: Callable[[], tuple], poll_s: float) -> None:
        self.read, self.poll_s = read, poll_s
        self.value: tuple | None = None
        self.at = float("-inf")
        self.lock: asyncio.Lock | None = None

    async def latest(self) -> tuple | None:
        from starlette.concurrency import run_in_threadpool

        self.lock = self.lock or asyncio.Lock()  # made in the server's loop, not at import
        async with self.lock:
            loop = asyncio.get_running_loop()
            if loop.time() - self.at >= self.poll_s:
                self.value = await run_in_threadpool(self.read)
                self.at = loop.time()
            return self.value


def create_console(url: str, *, zone: str = "Asia/Shanghai", stale_minutes: int = 5,
                   poll_s: float = 0.5, key: str | None = None, secure_cookies: bool = False,
                   boundaries: geo.Boundaries | None = None, photo_dir: str | Path | None = None,
                   on_confirmed: Sequence[triage.Confirmed] = (),
                   on_closed: Sequence[workorders.Closed] = ()) -> Any:  # fmt: skip
    """photo_dir: where work orders' photos are kept (None: uploads refused). on_confirmed:
    hooks run when an alarm is triaged real (regulator/triage.py), on_closed when a
    re-inspection closes a hazard (regulator/workorders.py), each inside its transaction:
    forwarding to upper platforms goes there (regulator/notify/hooks.py)."""
    from jinja2 import Environment, FileSystemLoader, select_autoescape
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.middleware.sessions import SessionMiddleware
    from starlette.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    from ..store import open_store

    tz = zoneinfo.ZoneInfo(zone)
    secret = key or session_key(url)
    if key:  # the key given: the failed logins' tables are still to be made where missing
        session_key(url)
    readers = api.Stores(url)
    writers = api.Stores(url, open_store)
    env = Environment(loader=FileSystemLoader(HERE / "templates"),
                      autoescape=select_autoescape(["html"]))  # fmt: skip

    def local(t: str | None, seconds: bool = True) -> str:
        if not t:
            return "—"
        when = datetime.datetime.fromisoformat(t.replace("Z", "+00:00")).astimezone(tz)
        return when.strftime("%Y-%m-%d %H:%M:%S" if seconds else "%Y-%m-%d %H:%M")

    def duration(s: float | None) -> str:
        if s is None:
            return "—"
        s = int(s)
        h, m = divmod(s // 60, 60)
        return "%d:%02d:%02d" % (h, m, s % 60) if h else "%d:%02d" % (m, s % 60)

    env.filters.update(local=local, duration=duration)
    env.globals["plotly_js"] = vendor.plotly_js()[0]  # its URL: the chart's and the map's

    def load_user(name: str) -> dict[str, Any] | None:
        store = readers.get()
        row = accounts.get(store, name)
        if row is None or row["disabled_at"] is not None:
            return None
        row.pop("password")
        row["scope"] = accounts.scope_of(store, row["node"])
        row["writer"] = row["role"] in accounts.WRITERS
        row["reports"] = reportpages.may_read(store, row["node"])
        return row

    def lang_of(request: Any) -> str:
        lang = request.session.get("lang", i18n.DEFAULT)
        return lang if lang in i18n.LANGS else i18n.DEFAULT

    def csrf_token(request: Any) -> str:
        if "csrf" not in request.session:
            request.session["csrf"] = secrets.token_urlsafe(32)
        return request.session["csrf"]

    def render(request: Any, name: str, status: int = 200, **ctx: Any) -> HTMLResponse:
        """A page; a fragment (alarm_rows) leaves the flash for the page it was meant for."""
        lang = lang_of(request)
        t = i18n.translations(lang)
        flash = None if name == "alarm_rows.html" else request.session.pop("flash", None)
        if flash and "msgid" in flash:  # a refusal, said in this page's language
            flash = {"error": True, "text": i18n.refusal(t, flash["msgid"], flash["params"],
                                                         local)}  # fmt: skip
        html = env.get_template(name).render(
            _=t.gettext, pgettext=t.pgettext, lang=lang, html_lang=i18n.html_lang(lang),
            langs=i18n.LANGS,
            user=request.scope.get(USER_KEY), csrf=csrf_token(request), zone=zone,
            flash=flash,
            path=request.url.path, **ctx,
        )  # fmt: skip
        return HTMLResponse(html, status)

    def csrf_ok(request: Any, sent: Any) -> bool:
        return isinstance(sent, str) and hmac.compare_digest(
            sent.encode(), request.session.get("csrf", "").encode() or b"\x00"
        )

    async def form_checked(request: Any) -> dict[str, str] | Response:
        """The form, if its CSRF token is this session's; else the 403 to answer."""
        form = await request.form()
        if not csrf_ok(request, form.get("csrf")):
            return Response("CSRF token missing or wrong: reload the page", 403)
        return {k: v for k, v in form.items() if isinstance(v, str)}

    def scoped(request: Any, **kw: Any) -> views.Filters:
        return views.Filters(scope=request.scope[USER_KEY]["scope"], **kw)

    # --- login --------------------------------------------------------------------------------

    async def login_page(request: Any) -> Response:
        if request.method == "GET":
            back = request.query_params.get("next")
            return render(request, "login.html", next=back if local_path(back) else None)
        form = await form_checked(request)
        if isinstance(form, Response):
            return form
        name = throttle.name_key(form.get("name", ""))
        client = throttle.client_key(request.client.host if request.client else None)
        device = throttle.device_of(secret, request.cookies.get(throttle.DEVICE_COOKIE), name)

        def attempt() -> tuple[dict[str, Any] | None, str | None]:
            """(the account, None), or (None, when a lock on this attempt ends, if any)."""
            now = datetime.datetime.now(datetime.UTC)
            until = throttle.locked_until(writers.get(), name, client, device, now)
            if until is not None:
                return None, until  # refused unread: no hash computed, nothing counted
            user = accounts.login(readers.get(), form.get("name", ""), form.get("password", ""))
            if user is None:
                return None, throttle.failed(writers.get(), name, client, device, now)
            throttle.succeeded(writers.get(), name, client, device)
            return user, None

        back = form.get("next") if local_path(form.get("next")) else None
        user, until = await run_in_threadpool(attempt)
        if until is not None:
            wait = datetime.datetime.fromisoformat(until.replace("Z", "+00:00")) - \
                datetime.datetime.now(datetime.UTC)  # fmt: skip
            page = render(request, "login.html", 429, locked=local(until, False), next=back)
            page.headers["Retry-After"] = str(max(1, int(wait.total_seconds())))
            return page
        if user is None:
            return render(request, "login.html", 401, failed=True, next=back)
        request.session.clear()
        request.session.update(user=user["name"], csrf=secrets.token_urlsafe(32),
                               lang=lang_of(request))  # fmt: skip
        done = RedirectResponse(back or "/alarms", 303)
        if device is None:  # this browser may log in to this account while it is under attack
            done.set_cookie(throttle.DEVICE_COOKIE, throttle.device_cookie(secret, name),
                            max_age=int(throttle.DEVICE_AGE.total_seconds()), httponly=True,
                            samesite="lax", secure=secure_cookies)  # fmt: skip
        return done

    async def logout(request: Any) -> Response:
        form = await form_checked(request)
        if isinstance(form, Response):
            return form
        request.session.clear()
        return RedirectResponse("/login", 303)

    async def switch_lang(request: Any) -> Response:
        lang = request.path_params["lang"]
        if lang in i18n.LANGS:
            request.session["lang"] = lang
        back = request.query_params.get("next", "/alarms")
        return RedirectResponse(back if back.startswith("/") and not back.startswith("//")
                                else "/alarms", 303)  # fmt: skip

    # --- live alarms --------------------------------------------------------------------------

    def open_alarms(f: views.Filters) -> tuple[list[dict[str, Any]], int]:
        listed, total = views.incidents(readers.get(), f, LIST_LIMIT, oldest_first=False,
                                        by_severity=False)  # fmt: skip
        verdicts = triage.of_sites(readers.get(), [(r["site"], r["device"], r["open_event"])
                                                   for r in listed])  # fmt: skip
        for r in listed:
            r["triage"] = verdicts.get((r["site"], r["device"], r["open_event"]))
            r["stale"] = r["acknowledged_at"] is None and r["triage"] is None and \
                (r["age_s"] or 0) > stale_minutes * 60  # fmt: skip
        return listed, total

    async def alarms(request: Any) -> Response:
        listed, total = await run_in_threadpool(open_alarms, scoped(request))
        return render(request, "alarms.html", alarms=listed, total=total, stale=stale_minutes)

    async def alarm_rows(request: Any) -> Response:
        listed, total = await run_in_threadpool(open_alarms, scoped(request))
        return render(request, "alarm_rows.html", alarms=listed, total=total)

    watch = Fingerprint(lambda: views.fingerprint(readers.get()), poll_s)

    async def events(request: Any) -> Response:
        """SSE: `change` whenever what the consoles show has changed; the page then fetches
        its rows (scoped, as the page is)."""

        async def stream() -> AsyncIterator[str]:
            last, quiet = None, 0.0
            yield "retry: 2000\n\n"
            while not await request.is_disconnected():
                fp = await watch.latest()
                if fp != last:
                    if last is not None:
                        yield "event: change\ndata: {}\n\n"
                    last, quiet = fp, 0.0
                elif quiet >= 15:
                    yield ": still here\n\n"  # proxies close an idle stream
                    quiet = 0.0
                await asyncio.sleep(poll_s)
                quiet += poll_s

        return StreamingResponse(stream(), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store"})  # fmt: skip

    # --- unit ---------------------------------------------------------------------------------

    async def unit(request: Any) -> Response:
        site_id = request.path_params["site"]
        me = request.scope[USER_KEY]

        def read() -> dict[str, Any] | None:
            store = readers.get()
            got = views.site(store, site_id, 100, me["scope"])
            have = store.table_names()
            if got is not None:
                got["triage"] = triage.of_sites(store, [(i["site"], i["device"], i["open_event"])
                                                        for i in got["incidents"]])  # fmt: skip
            if got is not None and "hazards" in have:
                got["hazards"] = hazards.listing(store, views.now(), site=site_id)
            if got is not None and "unit_detectors" in have:
                got["detectors"] = store.rows(
                    "SELECT device, address, gas, location, mount_height_m, life_end, "
                    "calibration_due FROM unit_detectors WHERE site = ? ORDER BY device, address",
                    (site_id,),
                )
            if got is not None and "findings" in have:
                got["findings"] = store.rows(
                    "SELECT subject, kind, detail, since FROM findings WHERE site = ? "
                    "AND cleared_at IS NULL ORDER BY since, kind",
                    (site_id,),
                )
            return got

        try:
            api._text("site", site_id)  # PostgreSQL refuses a NUL in a query's text at all
            got = await run_in_threadpool(read)
        except api.BadRequest:
            got = None
        if got is None:
            return render(request, "error.html", 404, message="no such unit")
        return render(request, "unit.html", s=got)

    # --- hazard ledger ------------------------------------------------------------------------

    async def hazard_ledger(request: Any) -> Response:
        try:
            q = ledger.parse(request.query_params)
        except ledger.BadQuery as e:
            return render(request, "error.html", 400, message=str(e))
        def read() -> tuple[list[dict[str, Any]], int, dict[int, int]]:
            store = readers.get()
            rows, total = ledger.rows(store, scoped(request, state="all"), q, ledger.PAGE,
                                      (q.page - 1) * ledger.PAGE)  # fmt: skip
            sql, arg = store.in_list([str(r["id"]) for r in rows])
            orders = {r["hazard"]: r["id"] for r in store.rows(
                "SELECT hazard, max(id) AS id FROM work_orders WHERE CAST(hazard AS TEXT) IN "
                + sql + " GROUP BY hazard", (arg,))} if rows else {}  # fmt: skip
            return rows, total, orders

        rows, total, orders = await run_in_threadpool(read)
        return render(request, "hazards.html", hazards=rows, total=total, q=q, page=ledger.PAGE,
                      everything=q.everything, orders=orders)  # fmt: skip

    async def hazard_export(request: Any) -> Response:
        from starlette.background import BackgroundTask
        from starlette.responses import FileResponse

        try:
            q = ledger.parse(request.query_params, paged=False)
        except ledger.BadQuery as e:
            return Response(str(e), 400)
        fmt = request.path_params["fmt"]
        if fmt not in ledger.FORMATS:
            return Response("no such format: csv or xlsx", 404)
        f = scoped(request, state="all")
        path, name = await run_in_threadpool(
            lambda: ledger.download(readers.get(), f, q, fmt, zone))
        return FileResponse(path, media_type=ledger.FORMATS[fmt][0],
                            headers={"Content-Disposition": ledger.disposition(name)},
                            background=BackgroundTask(shutil.rmtree, path.parent, True))

    def deadline_utc(text: str) -> str | None:
        if not text.strip():
            return None
        from ..audit import spell

        try:
            t = datetime.datetime.fromisoformat(text.strip())
            if not 2000 <= t.year <= 2100:  # 0202 for 2026: stored, it would not read back
                raise ValueError(t.year)
            if t.tzinfo is None:
                t = t.replace(tzinfo=tz)  # what the person sees on the wall, in the zone
            return spell(t)
        except (ValueError, OverflowError):  # 9999-12-31T23:59-10:00 overflows into UTC
            raise hazards.WorkflowError(
                "deadline: a date and time, e.g. 2026-12-01T18:00"
            ) from None

    async def hazard_action(request: Any) -> Response:
        me = request.scope[USER_KEY]
        if request.path_params["action"] not in ("dispatch", "rectify", "close"):
            return Response("no such action", 404)
        if not me["writer"]:
            return Response("a viewer's account cannot change the ledger", 403)
        form = await form_checked(request)
        if isinstance(form, Response):
            return form
        action = request.path_params["action"]
        hid = request.path_params["id"]
        if hid >= 2**31:  # no hazard has such a number (SQLite would overflow reading it)
            return render(request, "error.html", 404, message="no such hazard")

        def move() -> None:
            from ..opening import actor, note

            store = writers.get()
            h = store.rows("SELECT site FROM hazards WHERE id = ?", (hid,))
            if (
                not h
                or me["scope"] is not None
                and h[0]["site"] not in (views.scope_sites(store, me["scope"]) or set())
            ):
                raise LookupError
            at = views.now()
            if action == "dispatch":
                hazards.dispatch(store, hid, actor("responsible", form.get("to", "")),
                                 deadline_utc(form.get("deadline", "")), me["name"], at,
                                 note("note", form.get("note")))  # fmt: skip
            elif action == "rectify":
                hazards.rectify(store, hid, note("note", form.get("note")) or "", me["name"], at)
            else:
                hazards.close(store, hid, me["name"], at, note("note", form.get("note")))

        try:
            await run_in_threadpool(move)
        except LookupError:
            return render(request, "error.html", 404, message="no such hazard")
        except Refusal as e:  # hazards.WorkflowError, a bad name, note or deadline
            request.session["flash"] = {"msgid": e.msgid, "params": e.params}
        except ValueError as e:
            request.session["flash"] = {"error": True, "text": str(e)}
        else:
            request.session["flash"] = {"error": False, "done": action, "id": hid}
        return RedirectResponse("/hazards", 303)

    # --- overview, gateways -------------------------------------------------------------------

    async def overview(request: Any) -> Response:
        o = await run_in_threadpool(lambda: views.overview(
            readers.get(), request.scope[USER_KEY]["scope"], stale_minutes * 60))  # fmt: skip
        return render(request, "overview.html", o=o, stale=stale_minutes)

    async def gateway_list(request: Any) -> Response:
        g = await run_in_threadpool(lambda: views.gateways(readers.get(), scoped(request,
                                    state="all"), "all", LIST_LIMIT))  # fmt: skip
        return render(request, "gateways.html", g=g)

    async def home(request: Any) -> Response:
        return RedirectResponse("/alarms", 303)

    routes = [
        Route("/", home),
        Route("/login", login_page, methods=["GET", "POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/lang/{lang}", switch_lang),
        Route("/alarms", alarms),
        Route("/alarms/rows", alarm_rows),
        Route("/events", events),
        Route("/units/{site}", unit),
        Route("/hazards", hazard_ledger),
        Route("/hazards/export.{fmt}", hazard_export),
        Route("/hazards/{id:int}/{action:str}", hazard_action, methods=["POST"]),
        Route("/overview", overview),
        Route("/gateways", gateway_list),
        *vendor.routes(),
        *citypages.routes(readers, render, tz, boundaries),
        *reportpages.routes(readers, render, USER_KEY),
        *workpages.routes(workpages.Console(
            readers, writers, render, csrf_ok, deadline_utc, USER_KEY,
            Path(photo_dir) if photo_dir else None, tuple(on_confirmed), tuple(on_closed))),
        Mount("/static", StaticFiles(directory=HERE / "static"), name="static"),
        *api.routes(readers),
    ]

    @contextlib.asynccontextmanager
    async def lifespan(app: Any) -> AsyncIterator[None]:
        yield
        readers.close()
        writers.close()

    middleware = [
        Middleware(BodyLimit),
        Middleware(
            SessionMiddleware,
            secret_key=secret,
            session_cookie="gasguard_console",
            same_site="lax",
            https_only=secure_cookies,  # --secure-cookies: the cookie's Secure flag
            max_age=12 * 3600,
        ),  # fmt: skip
        Middleware(Auth, load=load_user),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan)
    app.state.readers = readers
    return app


# --- `gasguard regulator serve` ------------------------------------------------------------------


def register_serve(rs: Any) -> Any:
    from gasguard.tools.exitcodes import epilog

    p = rs.add_parser(
        "serve", help="the web console over --db (accounts: `gasguard regulator user add`)",
        epilog=epilog("here:\n  2  --db is not a regulator database, a bad --listen or --zone,\n"
                      "     a --geojson file refused (it says why)\n"
                      "  3  the database cannot be reached at start"),
    )  # fmt: skip
    p.add_argument("--db", required=True, help="postgresql://... or the ingest's SQLite file")
    p.add_argument("--listen", default="127.0.0.1:8024", help="HOST:PORT (default 127.0.0.1:8024)")
    p.add_argument("--zone", default="Asia/Shanghai", help="times shown in this IANA zone")
    p.add_argument(
        "--stale-minutes",
        type=int,
        default=5,
        help="an unacknowledged alarm older than this is highlighted (default 5)",
    )
    p.add_argument(
        "--geojson",
        metavar="FILE",
        help="district (street, grid) outlines for the map: a GeoJSON FeatureCollection of "
        "polygons, each feature's properties.node naming its node of the tree",
    )
    p.add_argument(
        "--secure-cookies",
        action="store_true",
        help="mark the session cookie Secure (the console is served over HTTPS)",
    )
    p.add_argument(
        "--photo-dir",
        metavar="DIR",
        help="where work orders' photos are kept, by their SHA-256 (default: beside a SQLite "
        "--db, <db>-photos; with PostgreSQL, give one, or uploads are refused)",
    )
    p.add_argument(
        "--notify-config",
        metavar="FILE",
        help="notify.toml (`regulator notify`'s): an alarm triaged real, and its hazard when a "
        "re-inspection closes it, are forwarded to its forward channels",
    )
    p.set_defaults(run=main_serve)
    return p


def main_serve(args: Any) -> int:
    from ..store import NotOurDatabase, StoreUnreachable

    try:
        host, port = api.split_listen(args.listen)
        zoneinfo.ZoneInfo(args.zone)
        if not 1 <= args.stale_minutes <= 1440:
            raise ValueError("--stale-minutes: 1 to 1440")
        boundaries = geo.load(args.geojson) if args.geojson else None
        vendor.plotly_js()  # the regulator extra's plotly: said now if it is missing
        key = session_key(args.db)
        hooks: tuple[list[Any], list[Any]] = ([], [])
        if args.notify_config:
            from ..notify import config as notify_config
            from ..notify.hooks import console_hooks

            hooks = console_hooks(notify_config.load(args.notify_config))  # its line, exit 2
    except (ValueError, vendor.NoPlotly, NotOurDatabase, zoneinfo.ZoneInfoNotFoundError) as e:
        print("%s: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.BAD_INPUT
    except StoreUnreachable as e:
        print("%s: database unreachable: %s" % (PROG, e), file=sys.stderr)
        return exitcodes.UNREACHABLE
    import uvicorn

    from ..store import is_postgres

    photo_dir = args.photo_dir or (None if is_postgres(args.db) else args.db + "-photos")
    app = create_console(args.db, zone=args.zone, stale_minutes=args.stale_minutes, key=key,
                         secure_cookies=args.secure_cookies, boundaries=boundaries,
                         photo_dir=photo_dir, on_confirmed=hooks[0], on_closed=hooks[1])
    print("%s: http://%s:%d/" % (PROG, host, port), flush=True)
    uvicorn.run(app, host=host, port=port, log_level="warning", timeout_graceful_shutdown=2)
    return exitcodes.OK
