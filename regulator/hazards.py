"""The hazard ledger (隐患台账): every incident and compliance finding becomes a hazard with a
responsible person and a deadline, and is closed by whoever checked it.

    open → dispatched (to a responsible person, with a deadline) → rectified (what was done)
         → closed (verified and signed by someone other than who rectified it, and other than the
           responsible person: 谁检查、谁签名、谁负责)

A dispatched hazard may be dispatched again (another person, another deadline), and so may a
rectified one whose check failed; a closed hazard is final. Every change is one transaction with
its audit row (regulator/audit.py). A hazard that has a work order (regulator/workorders.py)
moves only through it (via_order); one closed at triage as a false or test alarm is dismissed
(dismiss). sync() raises hazards idempotently: `source` is unique, so
an incident or finding seen twice, or by two syncs at once, is one hazard.
"""

from __future__ import annotations

import datetime
import re
import tomllib
import unicodedata
from pathlib import Path
from typing import Any

from . import audit
from .refusal import Refusal

TABLES = """
CREATE TABLE IF NOT EXISTS hazards (
    id INTEGER PRIMARY KEY, source TEXT NOT NULL UNIQUE, site TEXT NOT NULL,
    subject TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL, severity TEXT NOT NULL,
    summary TEXT NOT NULL, status TEXT NOT NULL DEFAULT 'open', responsible TEXT,
    deadline TEXT NOT NULL, opened_at TEXT NOT NULL, dispatched_at TEXT, rectified_at TEXT,
    rectified_by TEXT, verified_by TEXT, closed_at TEXT, closed_by TEXT, note TEXT,
    check_note TEXT,
    CHECK (status IN ('open', 'dispatched', 'rectified', 'closed')),
    CHECK (status <> 'closed' OR (closed_by <> rectified_by AND closed_by <> responsible)));
CREATE INDEX IF NOT EXISTS hazards_site ON hazards (site, status);
CREATE INDEX IF NOT EXISTS hazards_deadline ON hazards (status, deadline);
"""

COLS = (
    "id", "source", "site", "subject", "kind", "severity", "summary", "status", "responsible",
    "deadline", "opened_at", "dispatched_at", "rectified_at", "rectified_by", "verified_by",
    "closed_at", "closed_by", "note", "check_note",
)  # fmt: skip
SYNC_ACTOR = "system:sync"

# Severity: an incident's alarm level; a compliance finding is "normal". The deadline counts from
# when the hazard was found (the incident opened, the finding first held).
MAX_DEADLINE = datetime.timedelta(days=365)  # the latest a dispatch may put a deadline
DEADLINES = {
    "high": datetime.timedelta(hours=24),  # a high alarm: gas near the explosive range
    "low": datetime.timedelta(hours=72),  # a low alarm
    "normal": datetime.timedelta(days=7),  # a compliance finding (no alarm, wrong gas, ...)
}

# what each action may start from
FROM = {
    "dispatch": ("open", "dispatched", "rectified"),
    "rectify": ("dispatched",),
    "close": ("rectified",),
    "dismiss": ("open",),  # triage found no hazard: a false or test alarm (regulator/triage.py)
}


class WorkflowError(Refusal):
    """An action the hazard's state, or the person, does not allow (exit 2). Its message has
    named values so the console can show it translated (the catalog holds each msgid)."""


def dialect_ddl(store: Any, postgres: bool) -> None:
    # SQLite numbers an INTEGER PRIMARY KEY itself. Only when missing: ALTER TABLE locks the
    # table, and every ingest start runs this while syncs may be writing
    if postgres and not _has_default(store, "hazards"):
        store.x("CREATE SEQUENCE IF NOT EXISTS hazards_id_seq OWNED BY hazards.id")
        store.x("ALTER TABLE hazards ALTER COLUMN id SET DEFAULT nextval('hazards_id_seq')")


def _has_default(store: Any, table: str) -> bool:
    row = store.x(
        "SELECT column_default FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND table_name = ? AND column_name = 'id'",
        (table,),
    ).fetchone()
    return row is not None and row[0] is not None


def load_deadlines(path: str | Path) -> dict[str, datetime.timedelta]:
    """A TOML file: [deadlines] high = "24h", low = "72h", normal = "7d" (any of them)."""
    try:
        doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as e:
        raise ValueError("--deadlines %s: %s" % (path, e)) from None
    table = doc.get("deadlines")
    if not isinstance(table, dict) or set(doc) != {"deadlines"}:
        raise ValueError("--deadlines %s: one [deadlines] table, nothing else" % path)
    out = dict(DEADLINES)
    for key, value in table.items():
        if key not in DEADLINES:
            raise ValueError(
                "--deadlines %s: %r is not one of %s" % (path, key, ", ".join(DEADLINES))
            )
        m = re.fullmatch(r"(\d{1,4})([hd])", value) if isinstance(value, str) else None
        if m is None or int(m.group(1)) == 0:
            raise ValueError('--deadlines %s: %s = %r: hours or days, e.g. "24h" or "7d"'
                             % (path, key, value))  # fmt: skip
        n = int(m.group(1))
        period = datetime.timedelta(hours=n) if m.group(2) == "h" else datetime.timedelta(days=n)
        if period > MAX_DEADLINE:  # the cap a dispatch has: a config file must not lift it
            raise ValueError("--deadlines %s: %s = %r: at most %d days"
                             % (path, key, value, MAX_DEADLINE.days))  # fmt: skip
        out[key] = period
    return out


def _parse(t: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(t.replace("Z", "+00:00"))


def _due(found: str, period: datetime.timedelta) -> str:
    return audit.spell(_parse(found) + period)


# --- raising hazards -------------------------------------------------------------------------


def incident_source(site: str, open_event: str) -> str:
    """A hazard's source names what raised it, once: "/" is in no site, device or event id
    (topics split on it), so no two sites' sources can be spelled alike."""
    return "incident:%s/%s" % (site, open_event)


def finding_source(site: str, subject: str, kind: str) -> str:
    return "finding:%s/%s/%s" % (site, subject, kind)


def _raise(store: Any, now: str, h: dict[str, Any]) -> int | None:
    row = store.x(
        "INSERT INTO hazards (source, site, subject, kind, severity, summary, status, deadline, "
        "opened_at) VALUES (?,?,?,?,?,?,'open',?,?) ON CONFLICT (source) DO NOTHING RETURNING id",
        (h["source"], h["site"], h["subject"], h["kind"], h["severity"], h["summary"],
         h["deadline"], h["opened_at"]),
    ).fetchone()  # fmt: skip
    if row is None:
        return None  # another sync raised it meanwhile
    audit.record(store, now, SYNC_ACTOR, "hazard.raise", "hazard:%d" % row[0], None,
                 get(store, row[0]))  # fmt: skip
    return row[0]


def for_incident(store: Any, site: str, device: str, open_event: str, now: str,
                 deadlines: dict[str, datetime.timedelta] = DEADLINES) -> dict[str, Any] | None:
    """The incident's hazard, raised now if sync has not yet (triage may come first); None if
    there is no such incident. Inside the caller's transaction."""
    source = incident_source(site, open_event)
    got = store.rows("SELECT id FROM hazards WHERE source = ?", (source,))
    if not got:
        inc = store.rows(
            "SELECT level, opened_at, peak_lel FROM incidents WHERE site = ? AND device = ? "
            "AND open_event = ?", (site, device, open_event))  # fmt: skip
        if not inc:
            return None
        i = inc[0]
        severity = "high" if i["level"] == "high" else "low"
        _raise(store, now, {
            "source": source, "site": site, "subject": device, "kind": "alarm",
            "severity": severity, "summary": _incident_summary(i["level"], i["peak_lel"]),
            "deadline": _due(i["opened_at"], deadlines[severity]), "opened_at": i["opened_at"],
        })  # fmt: skip
        got = store.rows("SELECT id FROM hazards WHERE source = ?", (source,))
    return get(store, got[0]["id"])


def _incident_summary(level: str, peak: float | None) -> str:
    peak_text = "" if peak is None else ", peak %.1f %%LEL" % peak
    return "%s gas alarm%s" % (level, peak_text)


def sync(store: Any, now: str, deadlines: dict[str, datetime.timedelta] = DEADLINES) -> list[int]:
    """Raise a hazard for each incident and current finding that has none; raise a low alarm's
    hazard to high when its incident did (the shorter deadline). Returns the new ids."""
    new: list[int] = []
    with store.transaction():
        found = store.rows(
            "SELECT i.open_event, i.site, i.device, i.level, i.opened_at, i.peak_lel "
            "FROM incidents i LEFT JOIN hazards h "
            "ON h.source = 'incident:' || i.site || '/' || i.open_event "
            "WHERE h.id IS NULL ORDER BY i.opened_at, i.open_event"
        )
        for i in found:
            severity = "high" if i["level"] == "high" else "low"
            hid = _raise(store, now, {
                "source": incident_source(i["site"], i["open_event"]), "site": i["site"],
                "subject": i["device"], "kind": "alarm", "severity": severity,
                "summary": _incident_summary(i["level"], i["peak_lel"]),
                "deadline": _due(i["opened_at"], deadlines[severity]),
                "opened_at": i["opened_at"],
            })  # fmt: skip
            new += [hid] if hid else []
        if "findings" in store.table_names():  # the compliance checks' table
            for f in store.rows(
                "SELECT f.site, f.subject, f.kind, f.detail, f.since FROM findings f "
                "LEFT JOIN hazards h "
                "ON h.source = 'finding:' || f.site || '/' || f.subject || '/' || f.kind "
                "WHERE h.id IS NULL AND f.cleared_at IS NULL ORDER BY f.since, f.site"
            ):
                since = f["since"] or now
                hid = _raise(store, now, {
                    "source": finding_source(f["site"], f["subject"], f["kind"]),
                    "site": f["site"], "subject": f["subject"], "kind": f["kind"],
                    "severity": "normal", "summary": f["detail"] or f["kind"],
                    "deadline": _due(since, deadlines["normal"]), "opened_at": since,
                })  # fmt: skip
                new += [hid] if hid else []
        _escalate(store, now, deadlines)
        _orphans(store, now)
    return new


ORPHAN_NOTE = " — its alarm is now part of an earlier incident of this device"


def _orphans(store: Any, now: str) -> None:
    """A hazard raised for an incident that is gone: a late event (another worker's, a late
    delivery) showed its alarm was part of an earlier incident, which the store rebuilt. Said
    in its summary, once, for whoever closes it as a duplicate; it is not closed for them."""
    for r in store.rows(
        "SELECT h.id FROM hazards h WHERE h.kind = 'alarm' AND h.status <> 'closed' "
        "AND NOT EXISTS (SELECT 1 FROM incidents i WHERE i.site = h.site "
        "AND i.device = h.subject AND h.source = 'incident:' || i.site || '/' || i.open_event)"
    ):
        before = get(store, r["id"])
        if before["summary"].endswith(ORPHAN_NOTE):
            continue
        store.x("UPDATE hazards SET summary = ? WHERE id = ?",
                (before["summary"] + ORPHAN_NOTE, r["id"]))  # fmt: skip
        audit.record(store, now, SYNC_ACTOR, "hazard.orphaned", "hazard:%d" % r["id"], before,
                     get(store, r["id"]))  # fmt: skip


def _escalate(store: Any, now: str, deadlines: dict[str, datetime.timedelta]) -> None:
    for r in store.rows(
        "SELECT h.id, i.peak_lel FROM hazards h JOIN incidents i "
        "ON h.source = 'incident:' || i.site || '/' || i.open_event "
        "WHERE h.severity = 'low' AND i.level = 'high' AND h.status <> 'closed'"
    ):
        before = get(store, r["id"])
        due = min(before["deadline"], _due(before["opened_at"], deadlines["high"]))
        store.x(
            "UPDATE hazards SET severity = 'high', deadline = ?, summary = ? WHERE id = ?",
            (due, _incident_summary("high", r["peak_lel"]), r["id"]),
        )
        audit.record(store, now, SYNC_ACTOR, "hazard.escalate", "hazard:%d" % r["id"], before,
                     get(store, r["id"]))  # fmt: skip


# --- the workflow ----------------------------------------------------------------------------


def get(store: Any, hazard: int) -> dict[str, Any]:
    rows = store.rows("SELECT %s FROM hazards WHERE id = ?" % ", ".join(COLS), (hazard,))
    if not rows:
        raise WorkflowError("hazard %(id)d: no such hazard", id=hazard)
    return rows[0]


def _refuse(action: str, h: dict[str, Any]) -> WorkflowError:
    n, status = h["id"], h["status"]
    if status == "closed":
        return WorkflowError("hazard %(id)d was closed by %(by)s at %(closed_at)s: a closed "
                             "hazard is final", id=n, by=h["closed_by"],
                             closed_at=h["closed_at"])  # fmt: skip
    if action == "dismiss":
        return WorkflowError("hazard %(id)d is %(status)s: it has gone out as a work order; it "
                             "closes at its re-inspection", id=n, status=status)  # fmt: skip
    if action == "rectify" and status == "open":
        return WorkflowError("hazard %(id)d is open: dispatch it to a responsible person first",
                             id=n)  # fmt: skip
    if action == "rectify":
        return WorkflowError("hazard %(id)d is already rectified (by %(by)s): it waits for its "
                             "check", id=n, by=h["rectified_by"])  # fmt: skip
    return WorkflowError("hazard %(id)d is %(status)s: only a rectified hazard can be checked "
                         "and closed", id=n, status=status)  # fmt: skip


def _move(store: Any, hazard: int, action: str, by: str, at: str, sets: dict[str, Any],
          check=None, via_order: bool = False) -> dict[str, Any]:  # fmt: skip
    with store.transaction():
        before = get(store, hazard)
        if before["status"] not in FROM[action]:
            raise _refuse(action, before)
        order = store.x("SELECT max(id) FROM work_orders WHERE hazard = ?", (hazard,)).fetchone()
        if not via_order and order[0] is not None:  # its work order's steps move it, or none
            raise WorkflowError("hazard %(id)d goes by its work order %(order)d: dispatch, "
                                "report and re-inspect it there", id=hazard, order=order[0])
        if check:
            check(before)
        cur = store.x(
            "UPDATE hazards SET %s WHERE id = ? AND status = ?"
            % ", ".join("%s = ?" % k for k in sets),
            (*sets.values(), hazard, before["status"]),
        )
        if cur.rowcount != 1:  # PostgreSQL: another transaction moved it first
            raise WorkflowError("hazard %(id)d changed meanwhile: look again", id=hazard)
        after = get(store, hazard)
        audit.record(store, at, by, "hazard." + action, "hazard:%d" % hazard, before, after)
    return after


def same_person(a: str | None, b: str | None) -> bool:
    """Names as people type them: "Li Wei", "liwei", "李 伟" and full-width "Ｌｉ Ｗｅｉ" are
    one person, who must not sign off their own work by spelling their name another way:
    compared after NFKC, case folded, without spaces or invisible characters (zero-width
    space, soft hyphen, BOM). Not caught: a traditional for a simplified character (李偉 for
    李伟) or a look-alike letter from another script; the audit log shows both names."""
    if a is None or b is None:
        return False
    return spelling(a) == spelling(b)


def spelling(name: str) -> str:
    """A name's letters alone, for comparing people."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    return "".join(c for c in folded if not c.isspace() and unicodedata.category(c) != "Cf")


def dispatch(store: Any, hazard: int, to: str, deadline: str | None, by: str, at: str,
             note: str | None = None, *, via_order: bool = False) -> dict[str, Any]:  # fmt: skip
    """To a responsible person, by a deadline (default: the one its severity gave). Again from
    dispatched (another person or deadline) or rectified (the check found it not done)."""

    def check(h: dict[str, Any]) -> None:
        if (deadline or h["deadline"]) <= at:
            raise WorkflowError("hazard %(id)d: deadline %(deadline)s has already passed: give "
                                "a later one", id=hazard, deadline=deadline or h["deadline"])
        if deadline and deadline > _due(at, MAX_DEADLINE):
            raise WorkflowError("hazard %(id)d: deadline %(deadline)s is more than %(days)d days "
                                "away: a hazard is rectified within a deadline (限期整改), "
                                "not put off", id=hazard, deadline=deadline,
                                days=MAX_DEADLINE.days)  # fmt: skip

    sets: dict[str, Any] = {"status": "dispatched", "responsible": to, "dispatched_at": at,
                            "rectified_at": None, "rectified_by": None}  # fmt: skip
    if deadline:
        sets["deadline"] = deadline
    if note:
        sets["check_note"] = note
    return _move(store, hazard, "dispatch", by, at, sets, check, via_order)


def rectify(store: Any, hazard: int, note: str, by: str, at: str, *,
            via_order: bool = False) -> dict[str, Any]:  # fmt: skip
    """What was done about it (整改情况); by whoever reports it."""
    if not note.strip():
        raise WorkflowError("--note: say what was done to rectify it")
    sets = {"status": "rectified", "rectified_at": at, "rectified_by": by, "note": note.strip()}
    return _move(store, hazard, "rectify", by, at, sets, None, via_order)


def close(store: Any, hazard: int, by: str, at: str, note: str | None = None, *,
          via_order: bool = False) -> dict[str, Any]:  # fmt: skip
    """Verified on site and closed (销号) by `by`, who signs for it: not whoever rectified it
    and not the responsible person."""

    def check(h: dict[str, Any]) -> None:
        if same_person(by, h["rectified_by"]):
            raise WorkflowError("hazard %(id)d was rectified by %(by)s: whoever checks and signs "
                                "must be someone else (谁检查、谁签名、谁负责)", id=hazard, by=by)
        if same_person(by, h["responsible"]):
            raise WorkflowError("hazard %(id)d: %(by)s is responsible for it: whoever checks and "
                                "signs must be someone else (谁检查、谁签名、谁负责)", id=hazard,
                                by=by)  # fmt: skip

    sets = {"status": "closed", "verified_by": by, "closed_by": by, "closed_at": at,
            "check_note": note.strip() if note else None}  # fmt: skip
    return _move(store, hazard, "close", by, at, sets, check, via_order)


def dismiss(store: Any, hazard: int, reason: str, by: str, at: str) -> dict[str, Any]:
    """Closed at triage, never dispatched: the alarm was false or a test (regulator/triage.py).
    Nothing was rectified and no one was made responsible, so the sign-off rule has no one to
    keep apart: whoever triaged it checks and signs (closed_by, verified_by), the reason is the
    check's note, and the audit row says so (hazard.dismiss)."""
    if not reason.strip():
        raise WorkflowError("reason: say why the alarm needs no rectification")
    sets = {"status": "closed", "verified_by": by, "closed_by": by, "closed_at": at,
            "check_note": reason.strip()}  # fmt: skip
    return _move(store, hazard, "dismiss", by, at, sets)


# --- reading ---------------------------------------------------------------------------------


def listing(store: Any, now: str, *, overdue: bool = False, site: str | None = None,
            status: str | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Hazards by deadline; overdue: past their deadline and not closed."""
    where, params = [], []
    if overdue:
        where.append("status <> 'closed' AND deadline < ?")
        params.append(now)
    if site:
        where.append("site = ?")
        params.append(site)
    if status:
        where.append("status = ?")
        params.append(status)
    rows = store.rows(
        "SELECT %s FROM hazards%s ORDER BY deadline, id"
        % (", ".join(COLS), " WHERE " + " AND ".join(where) if where else ""),
        params,
    )
    for r in rows:
        r["overdue"] = r["status"] != "closed" and r["deadline"] < now
    return rows
