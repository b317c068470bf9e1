"""The console's triage and work-order pages (issue 25). Under the console's login, roles, scope
and CSRF like every page: a viewer reads, a dispatcher or admin acts; a unit outside the
account's scope is "not found", whatever id is typed.

    GET  /triage?site=&device=&event=      the alarm and its triage form (or its verdict)
    POST /triage                           verdict, reason; responsible and deadline (real, fault)
    GET  /workorders                       work orders in scope, open ones first
    GET  /workorders/{id}                  one work order: timeline, photos, re-inspection
    GET  /workorders/{id}/phone            the inspector's page: arrived, photos, result
    POST /workorders/{id}/arrive|report|reinspect|redispatch
    POST /workorders/{id}/photos           multipart, up to photos.PER_POST images
    GET  /workorders/{id}/photos/{sha256}  a photo, from the ledger's hash only
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .. import api, photos, triage, views, workorders
from ..refusal import Refusal

UPLOAD_MAX = photos.PER_POST * photos.MAX_BYTES + 64 * 1024  # the files and the form around them
ACTIONS = ("arrive", "report", "reinspect", "redispatch")


@dataclass
class Console:
    """What these pages need of the console (regulator/web/app.py)."""

    readers: Any
    writers: Any
    render: Callable[..., Any]
    csrf_ok: Callable[[Any, Any], bool]
    deadline_utc: Callable[[str], str | None]
    user_key: str
    photo_dir: Path | None
    on_confirmed: Sequence[triage.Confirmed]
    on_closed: Sequence[workorders.Closed] = ()


def routes(c: Console) -> list[Any]:
    from starlette.concurrency import run_in_threadpool
    from starlette.responses import FileResponse, RedirectResponse, Response
    from starlette.routing import Route

    def me(request: Any) -> dict[str, Any]:
        return request.scope[c.user_key]

    def in_scope(store: Any, user: dict[str, Any], site: str) -> bool:
        sites = views.scope_sites(store, user["scope"])
        return sites is None or site in sites

    def not_found(request: Any) -> Response:
        return c.render(request, "error.html", 404, message="no such work order")

    def refused(request: Any, e: Exception) -> None:
        if isinstance(e, Refusal):
            request.session["flash"] = {"msgid": e.msgid, "params": e.params}
        else:
            request.session["flash"] = {"error": True, "text": str(e)}

    async def form_of(request: Any, **limits: Any) -> Any:
        """The form if its CSRF token is this session's; else the 403 to answer."""
        form = await request.form(**limits)
        if not c.csrf_ok(request, form.get("csrf")):
            return Response("CSRF token missing or wrong: reload the page", 403)
        return form

    def field(form: Any, name: str) -> str:
        v = form.get(name, "")
        return v if isinstance(v, str) else ""

    # --- triage -------------------------------------------------------------------------------

    def alarm_of(store: Any, user: dict[str, Any], site: str, device: str, event: str
                 ) -> dict[str, Any] | None:  # fmt: skip
        for name, v in (("site", site), ("device", device), ("event", event)):
            api._text(name, v)  # NUL, length: PostgreSQL refuses a NUL in a query at all
        rows = store.rows("SELECT %s FROM incidents WHERE site = ? AND device = ? AND "
                          "open_event = ?" % views.INCIDENT_FIELDS, (site, device, event))
        if not rows or not in_scope(store, user, site):
            return None
        return views.incident_row(rows[0], views.now())

    async def triage_page(request: Any) -> Response:
        q = request.query_params
        user = me(request)

        def read() -> dict[str, Any] | None:
            store = c.readers.get()
            a = alarm_of(store, user, q.get("site", ""), q.get("device", ""), q.get("event", ""))
            if a is not None:
                a["triage"] = triage.get(store, a["site"], a["device"], a["open_event"])
            return a

        try:
            a = await run_in_threadpool(read)
        except api.BadRequest:
            a = None
        if a is None:
            return c.render(request, "error.html", 404, message="no such alarm")
        return c.render(request, "triage.html", a=a, verdicts=triage.VERDICTS)

    async def triage_post(request: Any) -> Response:
        user = me(request)
        if not user["writer"]:
            return Response("a viewer's account cannot triage", 403)
        form = await form_of(request, max_files=0, max_fields=12)
        if isinstance(form, Response):
            return form
        site, device, event = field(form, "site"), field(form, "device"), field(form, "event")

        def act() -> dict[str, Any]:
            from ..opening import actor

            store = c.writers.get()
            if alarm_of(store, user, site, device, event) is None:
                raise LookupError
            to = field(form, "to")
            return triage.triage(
                store, site, device, event, field(form, "verdict"), field(form, "reason"),
                user["name"], views.now(), to=actor("responsible", to) if to.strip() else None,
                deadline=c.deadline_utc(field(form, "deadline")), on_confirmed=c.on_confirmed,
            )  # fmt: skip

        try:
            row = await run_in_threadpool(act)
        except (LookupError, api.BadRequest):
            return c.render(request, "error.html", 404, message="no such alarm")
        except ValueError as e:  # a Refusal: the verdict, the reason, a deadline, a race
            refused(request, e)
            return RedirectResponse("/triage?" + _query(site, device, event), 303)
        request.session["flash"] = {"wo": "triaged", "verdict": row["verdict"],
                                    "id": row["work_order"] or 0}  # fmt: skip
        if row["work_order"]:
            return RedirectResponse("/workorders/%d" % row["work_order"], 303)
        return RedirectResponse("/alarms", 303)

    # --- work orders --------------------------------------------------------------------------

    def order_in_scope(store: Any, user: dict[str, Any], n: int) -> dict[str, Any] | None:
        if not 1 <= n < 2**31:
            return None
        rows = store.rows("SELECT %s FROM work_orders WHERE id = ?"
                          % ", ".join(workorders.COLS), (n,))  # fmt: skip
        if not rows or not in_scope(store, user, rows[0]["site"]):
            return None
        return rows[0]

    def read_order(n: int, user: dict[str, Any]) -> dict[str, Any] | None:
        from .. import hazards

        store = c.readers.get()
        wo = order_in_scope(store, user, n)
        if wo is None:
            return None
        wo["hazard_row"] = hazards.get(store, wo["hazard"])
        wo["photos"] = photos.of_order(store, n)
        wo["others"] = [o for o in workorders.of_hazard(store, wo["hazard"]) if o["id"] != n]
        wo["overdue"] = wo["status"] in workorders.OPEN and wo["deadline"] < views.now()
        return wo

    async def order_list(request: Any) -> Response:
        user = me(request)

        def read() -> list[dict[str, Any]]:
            store = c.readers.get()
            return workorders.listing(store, views.scope_sites(store, user["scope"]),
                                      views.now())  # fmt: skip

        return c.render(request, "workorders.html", orders=await run_in_threadpool(read))

    async def order_page(request: Any) -> Response:
        wo = await run_in_threadpool(read_order, request.path_params["id"], me(request))
        if wo is None:
            return not_found(request)
        return c.render(request, "workorder.html", wo=wo)

    async def phone_page(request: Any) -> Response:
        wo = await run_in_threadpool(read_order, request.path_params["id"], me(request))
        if wo is None:
            return not_found(request)
        return c.render(request, "phone.html", wo=wo, per_post=photos.PER_POST,
                        max_mb=photos.MAX_BYTES // (1024 * 1024))  # fmt: skip

    async def order_action(request: Any) -> Response:
        user, n, action = me(request), request.path_params["id"], request.path_params["action"]
        if action not in ACTIONS:
            return Response("no such action", 404)
        if not user["writer"]:
            return Response("a viewer's account cannot change a work order", 403)
        form = await form_of(request, max_files=0, max_fields=12)
        if isinstance(form, Response):
            return form

        def act() -> dict[str, Any]:
            from ..opening import actor

            store = c.writers.get()
            if order_in_scope(store, user, n) is None:
                raise LookupError
            at = views.now()
            if action == "arrive":
                return workorders.arrive(store, n, user["name"], at)
            if action == "report":
                return workorders.report(store, n, field(form, "result"), user["name"], at)
            to = field(form, "to")
            if action == "redispatch":  # another person or deadline: a new work order
                return {"next": workorders.redispatch(
                    store, n, actor("responsible", to), c.deadline_utc(field(form, "deadline")),
                    user["name"], at, field(form, "note"))}  # fmt: skip
            outcome = field(form, "outcome")
            if outcome not in ("pass", "fail"):
                raise workorders.OrderError("outcome: passed or failed")
            return workorders.reinspect(
                store, n, outcome == "pass", field(form, "note"), user["name"], at,
                to=actor("responsible", to) if to.strip() else None,
                deadline=c.deadline_utc(field(form, "deadline")), on_closed=c.on_closed,
            )  # fmt: skip

        try:
            got = await run_in_threadpool(act)
        except LookupError:
            return not_found(request)
        except ValueError as e:
            refused(request, e)
        else:
            nxt = got.get("next")
            said = action if not nxt else ("failed" if action == "reinspect" else action)
            request.session["flash"] = {"wo": said, "id": n,
                                        "next": nxt["id"] if nxt else 0}  # fmt: skip
            if nxt:
                return RedirectResponse("/workorders/%d" % nxt["id"], 303)
        back = "/workorders/%d/phone" if action in ("arrive", "report") else "/workorders/%d"
        return RedirectResponse(back % n, 303)

    async def photo_upload(request: Any) -> Response:
        user, n = me(request), request.path_params["id"]
        if not user["writer"]:
            return Response("a viewer's account cannot change a work order", 403)
        length = request.headers.get("content-length")
        if length is None:  # no length, no knowing the size before reading it all
            return Response("Content-Length required", 411)
        if not length.isdigit() or int(length) > UPLOAD_MAX:
            return Response("upload too large: at most %d photos of %d MB"
                            % (photos.PER_POST, photos.MAX_BYTES // 2**20), 413)
        from starlette.datastructures import UploadFile

        try:
            form = await form_of(request, max_files=photos.PER_POST, max_fields=4)
        except Exception as e:  # noqa: BLE001 - the parser's refusal (too many files, bad body)
            return Response("upload refused: %s" % str(e)[:200], 400)
        if isinstance(form, Response):
            return form
        files = [f for f in form.getlist("photo") if isinstance(f, UploadFile)]

        def act() -> int:
            store = c.writers.get()
            if order_in_scope(store, user, n) is None:
                raise LookupError
            if c.photo_dir is None:
                raise photos.PhotoError("photo: this console keeps no photos (serve "
                                        "--photo-dir)")  # fmt: skip
            if not files:
                raise photos.PhotoError("photo: choose or take a photo first")
            checked = []
            for f in files:  # the name and content type the browser sent are not used
                data = f.file.read(photos.MAX_BYTES + 1)
                checked.append((data, photos.check(data)))
            root = c.photo_dir

            def keep() -> None:
                for data, p in checked:
                    photos.keep(root, data, p)

            return workorders.add_photos(store, n, [p for _, p in checked], user["name"],
                                         views.now(), keep)  # fmt: skip

        try:
            added = await run_in_threadpool(act)
        except LookupError:
            return not_found(request)
        except ValueError as e:
            refused(request, e)
        else:
            request.session["flash"] = {"wo": "photos", "id": n, "count": added}
        finally:
            for f in files:
                await f.close()
        return RedirectResponse("/workorders/%d/phone" % n, 303)

    async def photo(request: Any) -> Response:
        user, n, sha = me(request), request.path_params["id"], request.path_params["sha"]
        if c.photo_dir is None or not photos.HEX64.fullmatch(sha):
            return Response("no such photo", 404)

        def find() -> dict[str, Any] | None:
            store = c.readers.get()
            if order_in_scope(store, user, n) is None:
                return None
            rows = store.rows("SELECT sha256, mime FROM work_order_photos WHERE work_order = ? "
                              "AND sha256 = ?", (n, sha))  # fmt: skip
            return rows[0] if rows else None

        row = await run_in_threadpool(find)
        if row is None or row["mime"] not in photos.MIME.values():
            return Response("no such photo", 404)
        path = photos.path_of(c.photo_dir, row["sha256"])  # the ledger's hash, not the URL's
        if not path.is_file():
            return Response("the photo's file is missing from the photo directory", 410)
        return FileResponse(path, media_type=row["mime"], headers={
            "X-Content-Type-Options": "nosniff", "Cache-Control": "private, max-age=3600",
            "Content-Security-Policy": "default-src 'none'", "Content-Disposition": "inline",
        })  # fmt: skip

    return [
        Route("/triage", triage_page),
        Route("/triage", triage_post, methods=["POST"]),
        Route("/workorders", order_list),
        Route("/workorders/{id:int}", order_page),
        Route("/workorders/{id:int}/phone", phone_page),
        Route("/workorders/{id:int}/photos", photo_upload, methods=["POST"]),
        Route("/workorders/{id:int}/photos/{sha:str}", photo),
        Route("/workorders/{id:int}/{action:str}", order_action, methods=["POST"]),
    ]


def _query(site: str, device: str, event: str) -> str:
    from urllib.parse import urlencode

    return urlencode({"site": site, "device": device, "event": event})
