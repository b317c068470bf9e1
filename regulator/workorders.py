"""Work orders (工单): how a hazard is rectified on site, one visit each (issue 25).

A hazard (regulator/hazards.py) has one or more work orders; each step of a work order moves
its hazard the hazard ledger's way, in the same transaction, so the ledger's rules hold:

    dispatched (to a responsible person, by a deadline)        hazard → dispatched
      → arrived (the inspector on site: the server's clock, never a photo's EXIF)
      → done (photos and the result; the work order closes)     hazard → rectified
      → passed (re-inspected by someone else)                   hazard → closed
      | failed (re-inspection found it not done: a new work order goes out at once)
    reassigned: the hazard went to someone else while this one was open

Whoever re-inspects must not be the responsible person, the inspector who arrived or whoever
reported the result (hazards.same_person: 谁检查、谁签名、谁负责). A hazard with a work order
moves only through it (the hazard CLI and page refuse, naming the work order).

overdue() is the escalation engine's provider (regulator/notify): open work orders past their
deadline.
"""

from __future__ import annotations

import datetime
from collections.abc import Callable, Iterable
from typing import Any

from . import audit, hazards
from .refusal import Refusal

Closed = Callable[[Any, int, str], None]  # hook(store, hazard_id, at)

TABLES = """
CREATE TABLE IF NOT EXISTS work_orders (
    id INTEGER PRIMARY KEY, hazard INTEGER NOT NULL, site TEXT NOT NULL, kind TEXT NOT NULL,
    status TEXT NOT NULL, responsible TEXT NOT NULL, deadline TEXT NOT NULL, note TEXT,
    dispatched_at TEXT NOT NULL, dispatched_by TEXT NOT NULL, arrived_at TEXT, arrived_by TEXT,
    result TEXT, done_at TEXT, done_by TEXT, checked_at TEXT, checked_by TEXT, check_note TEXT,
    closed_at TEXT,
    CHECK (kind IN ('rectify', 'maintenance')),
    CHECK (status IN ('dispatched', 'arrived', 'done', 'passed', 'failed', 'reassigned')));
CREATE INDEX IF NOT EXISTS work_orders_hazard ON work_orders (hazard, id);
CREATE INDEX IF NOT EXISTS work_orders_open ON work_orders (status, deadline);
CREATE INDEX IF NOT EXISTS work_orders_site ON work_orders (site, status);
"""
COLS = (
    "id", "hazard", "site", "kind", "status", "responsible", "deadline", "note",
    "dispatched_at", "dispatched_by", "arrived_at", "arrived_by", "result", "done_at",
    "done_by", "checked_at", "checked_by", "check_note", "closed_at",
)  # fmt: skip
KINDS = ("rectify", "maintenance")  # maintenance: triage found a device fault
OPEN = ("dispatched", "arrived")
STATUSES = ("dispatched", "arrived", "done", "passed", "failed", "reassigned")
ID_META = "work_order_last_id"  # regulator_meta: the last number given
RESULT_CHARS = 2000


class OrderError(Refusal):
    """A step the work order's state, the person or the form does not allow."""


def text(field: str, value: str | None, limit: int, required: bool = True) -> str | None:
    """A form's free text: trimmed, at most `limit` characters, lines and tabs allowed, no
    other control characters (a NUL, an escape sequence, a bidi override in a log)."""
    value = (value or "").strip()
    if not value:
        if required:
            raise OrderError("%(field)s: this is needed", field=field)
        return None
    if len(value) > limit:
        raise OrderError("%(field)s: at most %(n)d characters", field=field, n=limit)
    if any((ord(c) < 32 and c not in "\n\r\t") or 0x7F <= ord(c) < 0xA0
           or 0x202A <= ord(c) <= 0x202E or 0x2066 <= ord(c) <= 0x2069 for c in value):
        raise OrderError("%(field)s: holds control characters", field=field)
    return value.replace("\r\n", "\n")


def get(store: Any, order: int) -> dict[str, Any]:
    rows = store.rows("SELECT %s FROM work_orders WHERE id = ?" % ", ".join(COLS), (order,))
    if not rows:
        raise OrderError("work order %(id)d: no such work order", id=order)
    return rows[0]


def of_hazard(store: Any, hazard: int) -> list[dict[str, Any]]:
    return store.rows("SELECT %s FROM work_orders WHERE hazard = ? ORDER BY id"
                      % ", ".join(COLS), (hazard,))  # fmt: skip


def _next_id(store: Any) -> int:
    # a counter row, not a sequence: the same SQL on both databases, and its row lock orders
    # two dispatches at once on PostgreSQL (SQLite has one writer)
    row = store.x(
        "INSERT INTO regulator_meta (key, value) VALUES (?, '1') ON CONFLICT (key) DO UPDATE "
        "SET value = CAST(CAST(regulator_meta.value AS INTEGER) + 1 AS TEXT) RETURNING value",
        (ID_META,),
    ).fetchone()
    return int(row[0])


def _step(store: Any, order: int, action: str, frm: tuple[str, ...], sets: dict[str, Any],
          by: str, at: str) -> dict[str, Any]:  # fmt: skip
    """Inside the caller's transaction: one move of the work order, audited."""
    before = get(store, order)
    if before["status"] not in frm:
        raise OrderError("work order %(id)d is %(state)s: it cannot be %(step)s now", id=order,
                         state=before["status"], step=action)  # fmt: skip
    cur = store.x(
        "UPDATE work_orders SET %s WHERE id = ? AND status = ?"
        % ", ".join("%s = ?" % k for k in sets),
        (*sets.values(), order, before["status"]),
    )
    if cur.rowcount != 1:  # PostgreSQL: another transaction moved it first
        raise OrderError("work order %(id)d changed meanwhile: look again", id=order)
    after = get(store, order)
    audit.record(store, at, by, "workorder." + action, "workorder:%d" % order, before, after)
    return after


def dispatch(store: Any, hazard: int, to: str, deadline: str | None, by: str, at: str, *,
             kind: str = "rectify", note: str | None = None) -> dict[str, Any]:  # fmt: skip
    """A new work order for the hazard, to `to` by `deadline` (default: the hazard's); the
    hazard is dispatched with it (its checks: a deadline ahead, at most 365 days). An open work
    order of the hazard is reassigned."""
    if kind not in KINDS:
        raise OrderError("kind: one of %(kinds)s", kinds=", ".join(KINDS))
    with store.transaction():
        h = hazards.dispatch(store, hazard, to, deadline, by, at, note, via_order=True)
        for old in store.rows("SELECT id FROM work_orders WHERE hazard = ? AND status IN "
                              "('dispatched', 'arrived')", (hazard,)):  # fmt: skip
            _step(store, old["id"], "reassign", OPEN, {"status": "reassigned", "closed_at": at},
                  by, at)  # fmt: skip
        n = _next_id(store)
        store.x(
            "INSERT INTO work_orders (id, hazard, site, kind, status, responsible, deadline, "
            "note, dispatched_at, dispatched_by) VALUES (?,?,?,?,'dispatched',?,?,?,?,?)",
            (n, hazard, h["site"], kind, h["responsible"], h["deadline"], note, at, by),
        )
        made = get(store, n)
        audit.record(store, at, by, "workorder.dispatch", "workorder:%d" % n, None, made)
    return made


def redispatch(store: Any, order: int, to: str, deadline: str | None, by: str, at: str,
               note: str | None = None) -> dict[str, Any]:  # fmt: skip
    """An open work order to another person or by another deadline: it is reassigned and a new
    one goes out (the hazard's dispatch again, with its checks). Returns the new one."""
    note = text("note", note, RESULT_CHARS, required=False)
    with store.transaction():
        wo = get(store, order)
        if wo["status"] not in OPEN:
            raise OrderError("work order %(id)d is %(state)s: it cannot be %(step)s now",
                             id=order, state=wo["status"], step="reassign")  # fmt: skip
        return dispatch(store, wo["hazard"], to, deadline, by, at, kind=wo["kind"], note=note)


def arrive(store: Any, order: int, by: str, at: str) -> dict[str, Any]:
    """The inspector is on site: `at` is the server's clock when they said so."""
    with store.transaction():
        return _step(store, order, "arrive", ("dispatched",),
                     {"status": "arrived", "arrived_at": at, "arrived_by": by}, by, at)


def add_photos(store: Any, order: int, got: list[Any], by: str, at: str,
               keep: Callable[[], Any] | None = None) -> int:  # fmt: skip
    """Photos (photos.Photo, already checked) of the site, while the inspector is there; at
    most photos.PER_ORDER a work order. `keep` writes their files, once the work order has
    taken them and before their rows commit: a refused upload leaves no file behind. Returns
    how many were new."""
    from . import photos

    with store.transaction():
        wo = get(store, order)
        if wo["status"] != "arrived":
            raise OrderError("work order %(id)d is %(state)s: photos are taken on site, after "
                             "arriving", id=order, state=wo["status"])  # fmt: skip
        have = store.x("SELECT count(*) FROM work_order_photos WHERE work_order = ?",
                       (order,)).fetchone()[0]  # fmt: skip
        if have + len(got) > photos.PER_ORDER:
            raise OrderError("work order %(id)d: at most %(n)d photos", id=order,
                             n=photos.PER_ORDER)  # fmt: skip
        if keep is not None:
            keep()
        return sum(photos.attach(store, order, p, by, at) for p in got)


def report(store: Any, order: int, result: str, by: str, at: str) -> dict[str, Any]:
    """The result, after at least one photo: the work order closes, its hazard is rectified."""
    result = text("result", result, RESULT_CHARS) or ""
    with store.transaction():
        wo = get(store, order)
        if wo["status"] == "arrived" and not store.rows(
            "SELECT 1 FROM work_order_photos WHERE work_order = ?", (order,)
        ):
            raise OrderError("work order %(id)d: add at least one photo of the site first",
                             id=order)  # fmt: skip
        after = _step(store, order, "report", ("arrived",),
                      {"status": "done", "result": result, "done_at": at, "done_by": by,
                       "closed_at": at}, by, at)  # fmt: skip
        hazards.rectify(store, wo["hazard"], result, by, at, via_order=True)
    return after


def reinspect(store: Any, order: int, passed: bool, note: str | None, by: str, at: str, *,
              to: str | None = None, deadline: str | None = None,
              on_closed: Iterable[Closed] = ()) -> dict[str, Any]:  # fmt: skip
    """Re-inspection by someone else. Passed: the hazard closes, signed by `by`, and the
    on_closed hooks run (hook(store, hazard_id, at), inside the transaction: forwarding the
    closed hazard goes here; one that raises undoes the re-inspection). Failed: why, and a new
    work order to `to` (by `deadline`) in the same transaction. Returns the work order
    re-inspected (failed: with `next`, the new one)."""
    note = text("note", note, RESULT_CHARS, required=not passed)
    with store.transaction():
        wo = get(store, order)
        for who in (wo["responsible"], wo["arrived_by"], wo["done_by"]):
            if hazards.same_person(by, who):
                raise OrderError("work order %(id)d: %(by)s took part in it; the re-inspection "
                                 "is someone else's (谁检查、谁签名、谁负责)", id=order, by=by)
        if passed:
            after = _step(store, order, "pass", ("done",),
                          {"status": "passed", "checked_at": at, "checked_by": by,
                           "check_note": note}, by, at)  # fmt: skip
            hazards.close(store, wo["hazard"], by, at, note, via_order=True)
            for hook in on_closed:
                hook(store, wo["hazard"], at)
            return after
        if not to:
            raise OrderError("responsible: a failed re-inspection sends a new work order: name "
                             "who takes it")  # fmt: skip
        after = _step(store, order, "fail", ("done",),
                      {"status": "failed", "checked_at": at, "checked_by": by,
                       "check_note": note}, by, at)  # fmt: skip
        after["next"] = dispatch(store, wo["hazard"], to, deadline, by, at, kind=wo["kind"],
                                 note=note)  # fmt: skip
        return after


# --- reading ---------------------------------------------------------------------------------


def listing(store: Any, sites: set[str] | None, now: str, *, open_only: bool = False,
            limit: int = 500) -> list[dict[str, Any]]:  # fmt: skip
    """Work orders, the open ones first by deadline, then the rest newest first; `sites`: the
    reader's scope (None: every site)."""
    where, params = ["1=1"], []
    if sites is not None:
        sql, arg = store.in_list(sorted(sites))
        where.append("w.site IN " + sql)
        params.append(arg)
    if open_only:
        where.append("w.status IN ('dispatched', 'arrived')")
    rows = store.rows(
        "SELECT %s, h.severity, h.summary, h.subject FROM work_orders w JOIN hazards h "
        "ON h.id = w.hazard WHERE %s ORDER BY CASE WHEN w.status IN ('dispatched', 'arrived') "
        "THEN 0 ELSE 1 END, CASE WHEN w.status IN ('dispatched', 'arrived') THEN w.deadline "
        "ELSE '' END, w.id DESC LIMIT ?"
        % (", ".join("w." + c for c in COLS), " AND ".join(where)),
        [*params, limit],
    )
    for r in rows:
        r["overdue"] = r["status"] in OPEN and r["deadline"] < now
    return rows


def overdue(store: Any, now: datetime.datetime) -> list[dict[str, Any]]:
    """The escalation engine's provider: every open work order (dispatched, or arrived without
    a result) whose deadline has passed, oldest deadline first, as dicts of id (int), site,
    severity (its hazard's: high, low or normal), deadline (ISO UTC), responsible and closed_at
    (always None here: a work order leaves this list when its result is in, it is reassigned, or
    its hazard was closed)."""
    rows = store.rows(
        "SELECT w.id, w.site, h.severity, w.deadline, w.responsible, w.closed_at "
        "FROM work_orders w JOIN hazards h ON h.id = w.hazard "
        "WHERE w.status IN ('dispatched', 'arrived') AND h.status <> 'closed' "
        "AND w.deadline < ? ORDER BY w.deadline, w.id",
        (audit.spell(now),),
    )
    return rows
