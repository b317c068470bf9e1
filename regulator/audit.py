"""The audit log: who changed what, when, with the row before and after, append-only.

Every change to the ledger calls record() inside the change's own transaction, so the change and
its audit row commit together or not at all. The database itself refuses UPDATE and DELETE on
`audit` (triggers on both backends, TRUNCATE too on PostgreSQL); the one DELETE it lets through is
the retention purge's, and only of rows older than RETENTION_DAYS by the database's own clock: the
purge marks its transaction with a row in `audit_purge`, which no other transaction sees.
What a trigger cannot stop: whoever owns the database can drop the trigger or the table. Give the
services a role that does not own the tables.
"""

from __future__ import annotations

import datetime
import json
import re
from typing import Any

# Kept at least six months (网络安全法 §21: network logs at least six months). No six calendar
# months are longer than 184 days (July to December), so 184 days keeps six months, however
# counted; 180 does not (any six calendar months hold at least 181 days).
RETENTION_DAYS = 184

TABLES = """
CREATE TABLE IF NOT EXISTS audit (
    id INTEGER PRIMARY KEY, at TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
    target TEXT NOT NULL, before TEXT, after TEXT);
CREATE INDEX IF NOT EXISTS audit_target ON audit (target, id);
CREATE TABLE IF NOT EXISTS audit_purge (started_at TEXT NOT NULL);
"""

_SQLITE_GUARD = f"""
CREATE TRIGGER IF NOT EXISTS audit_no_update BEFORE UPDATE ON audit
BEGIN SELECT RAISE(ABORT, 'audit is append-only: UPDATE refused'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_replace BEFORE INSERT ON audit
WHEN EXISTS (SELECT 1 FROM audit WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'audit is append-only: a row with this id exists'); END;
CREATE TRIGGER IF NOT EXISTS audit_no_delete BEFORE DELETE ON audit
WHEN NOT EXISTS (SELECT 1 FROM audit_purge)
    OR OLD.at >= strftime('%Y-%m-%dT%H:%M:%fZ', 'now', '-{RETENTION_DAYS} days')
BEGIN SELECT RAISE(ABORT,
    'audit is append-only: DELETE refused (a purge deletes only rows past {RETENTION_DAYS} days)');
END;
"""

# statements one by one: a plpgsql body holds semicolons (no % either: psycopg reads placeholders)
_POSTGRES_GUARD = [
    "CREATE SEQUENCE IF NOT EXISTS audit_id_seq OWNED BY audit.id",
    "ALTER TABLE audit ALTER COLUMN id SET DEFAULT nextval('audit_id_seq')",
    f"""CREATE OR REPLACE FUNCTION audit_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP = 'DELETE' THEN
        IF EXISTS (SELECT 1 FROM audit_purge) AND OLD.at < to_char(
                (now() AT TIME ZONE 'UTC') - interval '{RETENTION_DAYS} days',
                'YYYY-MM-DD"T"HH24:MI:SS.MS"Z"') THEN
            RETURN OLD;
        END IF;
        RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege', MESSAGE =
            'audit is append-only: DELETE refused (only the retention purge deletes, and only '
            || 'rows older than {RETENTION_DAYS} days)';
    END IF;
    RAISE EXCEPTION USING ERRCODE = 'insufficient_privilege',
        MESSAGE = 'audit is append-only: ' || TG_OP || ' refused';
END $$""",
    "DROP TRIGGER IF EXISTS audit_append_only ON audit",
    "CREATE TRIGGER audit_append_only BEFORE UPDATE OR DELETE ON audit "
    "FOR EACH ROW EXECUTE FUNCTION audit_append_only()",
    "DROP TRIGGER IF EXISTS audit_no_truncate ON audit",
    "CREATE TRIGGER audit_no_truncate BEFORE TRUNCATE ON audit "
    "FOR EACH STATEMENT EXECUTE FUNCTION audit_append_only()",
]


def dialect_ddl(store: Any, postgres: bool) -> None:
    """The guard triggers (and PostgreSQL's id sequence): each backend's own DDL, run by the
    store's prepare() in the transaction that makes the tables."""
    if postgres:
        from .hazards import _has_default

        present = store.x("SELECT 1 FROM pg_trigger WHERE tgname = 'audit_no_truncate' "
                          "AND tgrelid = 'audit'::regclass").fetchone()  # fmt: skip
        if present and _has_default(store, "audit"):
            return  # made before: ALTER TABLE would lock out the writers for nothing
        for stmt in _POSTGRES_GUARD:
            store.x(stmt)
    else:  # a trigger body's own semicolons: split at the END that closes each one
        for stmt in _SQLITE_GUARD.split("END;"):
            if stmt.strip():
                store.x(stmt + "END")


def _json(row: dict[str, Any] | None) -> str | None:
    return None if row is None else json.dumps(row, ensure_ascii=False, sort_keys=True)


def record(
    store: Any, at: str, actor: str, action: str, target: str,
    before: dict[str, Any] | None, after: dict[str, Any] | None,
) -> None:  # fmt: skip
    """Append one row. Call it inside the transaction that makes the change."""
    store.x(
        'INSERT INTO audit (at, actor, action, target, "before", "after") VALUES (?,?,?,?,?,?)',
        (at, actor, action, target, _json(before), _json(after)),
    )


def entries(store: Any, target: str | None = None) -> list[dict[str, Any]]:
    """The log, oldest first; before/after decoded."""
    sql = 'SELECT id, at, actor, action, target, "before", "after" FROM audit'
    rows = store.rows(sql + (" WHERE target = ?" if target else "") + " ORDER BY id",
                      (target,) if target else ())  # fmt: skip
    for r in rows:
        for k in ("before", "after"):
            r[k] = None if r[k] is None else json.loads(r[k])
    return rows


def retention_days(text: str) -> int:
    """--older-than: "200d" or "200" days; ValueError below the retention floor."""
    m = re.fullmatch(r"\s*(\d{1,6})\s*d?\s*", text)
    if not m:
        raise ValueError("--older-than %r: a number of days, e.g. %dd" % (text, RETENTION_DAYS))
    days = int(m.group(1))
    if days < RETENTION_DAYS:
        raise ValueError(
            "--older-than %dd: the audit log is kept at least six months; the purge deletes only "
            "rows older than %d days (no six calendar months are longer)" % (days, RETENTION_DAYS)
        )
    return days


def purge(store: Any, days: int, actor: str, now: datetime.datetime) -> int:
    """Delete the rows older than `days` (>= RETENTION_DAYS, which the database checks too) and
    record the purge itself. Returns how many rows went."""
    if days < RETENTION_DAYS:
        raise ValueError("purge: %d days is less than the %d kept" % (days, RETENTION_DAYS))
    cutoff = spell(now - datetime.timedelta(days=days))
    at = spell(now)
    with store.transaction():
        store.x("INSERT INTO audit_purge VALUES (?)", (at,))
        gone = store.x("DELETE FROM audit WHERE at < ?", (cutoff,)).rowcount
        store.x("DELETE FROM audit_purge")
        record(store, at, actor, "audit.purge", "audit", None,
               {"older_than_days": days, "before": cutoff, "deleted": gone})  # fmt: skip
    return gone


def spell(t: datetime.datetime) -> str:
    """The store's one spelling of a time (store.now()'s): UTC, milliseconds, Z; sorts as text."""
    t = t.astimezone(datetime.UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (t.microsecond // 1000)


# --- `gasguard regulator audit` ----------------------------------------------------------------


def register_audit(sub: Any) -> Any:
    """Add `audit` (list, purge) to the `regulator` command's subparsers."""
    from gasguard.tools.exitcodes import epilog

    p = sub.add_parser("audit", help="the ledger's audit log: read it, purge what is past keeping")
    acts = p.add_subparsers(dest="audit_action", required=True)
    ls = acts.add_parser("list", help="every change: who, when, what, before and after",
                         epilog=epilog("times are local, with the offset from UTC"))  # fmt: skip
    ls.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    ls.add_argument("--target", help="one thing's changes, e.g. hazard:12")
    ls.add_argument("--json", action="store_true", help="JSON lines, times in UTC")
    ls.set_defaults(run=main_list)
    pg = acts.add_parser(
        "purge",
        help="delete audit rows older than N days (at least %d: six months)" % RETENTION_DAYS,
        epilog=epilog("here:\n  2  also: --older-than keeps less than six months"),
    )
    pg.add_argument("--db", required=True, help="postgresql://... or a SQLite file path")
    pg.add_argument("--older-than", required=True, help="days, e.g. %dd" % RETENTION_DAYS)
    pg.add_argument("--by", required=True, help="who purges (recorded in the log)")
    pg.set_defaults(run=main_purge)
    return p


def main_list(args: Any) -> int:
    from .opening import guarded

    return guarded("gasguard regulator audit list", lambda: _list(args))


def _list(args: Any) -> int:
    from gasguard.tools import human

    from .opening import ledger

    with ledger(args.db) as store:
        rows = entries(store, args.target) if "audit" in store.table_names() else []
    if args.json:
        for r in rows:
            print(json.dumps(r, ensure_ascii=False))
        return 0
    print(human.table(
        ("#", "at", "actor", "action", "target", "change"),
        [(r["id"], human.local_time(r["at"]), r["actor"], r["action"], r["target"],
          changes(r["before"], r["after"])) for r in rows],
    ))  # fmt: skip
    return 0


def changes(before: dict[str, Any] | None, after: dict[str, Any] | None) -> str:
    """What a change changed, one field a line: "status: open → dispatched" (--json has all)."""
    if before is None or after is None:
        row = after if before is None else before
        kept = {k: v for k, v in (row or {}).items() if v is not None}  # what it was made with
        return "%s: %s" % ("new" if before is None else "gone", _text(kept, 200))
    keys = [k for k in after if before.get(k) != after[k]] + [k for k in before if k not in after]
    return (
        "\n".join("%s: %s → %s" % (k, _text(before.get(k)), _text(after.get(k))) for k in keys)
        or "(nothing)"
    )


def _text(v: Any, room: int = 60) -> str:
    s = "—" if v is None else v if isinstance(v, str) else json.dumps(v, ensure_ascii=False)
    return s if len(s) <= room else s[: room - 1] + "…"


def main_purge(args: Any) -> int:
    from .opening import guarded

    return guarded("gasguard regulator audit purge", lambda: _purge(args))


def _purge(args: Any) -> int:
    from .opening import actor, ledger

    days = retention_days(args.older_than)
    who = actor("--by", args.by)
    with ledger(args.db) as store:
        gone = purge(store, days, who, datetime.datetime.now(datetime.UTC))
    print("%d audit rows older than %d days deleted" % (gone, days))
    return 0
