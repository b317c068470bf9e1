"""The notification outbox: one row per message to one recipient on one channel.

enqueue() is called inside the transaction that decided the message; `key` names the decision
(for example "alarm:<site>/<device>/<open_event>:0:<channel>:<recipient>"), so the same decision
taken twice, by a replay or by two workers, is one row. The deliverer claims due rows, sends,
and records each attempt; a row is never deleted by delivery, only marked.
"""

from __future__ import annotations

import datetime
import json
import uuid
from typing import Any

TABLES = """
CREATE TABLE IF NOT EXISTS notify_outbox (
    key TEXT PRIMARY KEY, channel TEXT NOT NULL, recipient TEXT NOT NULL, kind TEXT NOT NULL,
    subject TEXT NOT NULL, site TEXT, body TEXT NOT NULL, created_at TEXT NOT NULL,
    due_at TEXT NOT NULL, attempts INTEGER NOT NULL DEFAULT 0,
    status TEXT NOT NULL DEFAULT 'pending', sent_at TEXT, last_error TEXT,
    CHECK (status IN ('pending', 'sent', 'failed')));
CREATE INDEX IF NOT EXISTS notify_outbox_due ON notify_outbox (status, due_at);
CREATE INDEX IF NOT EXISTS notify_outbox_subject ON notify_outbox (subject);
CREATE TABLE IF NOT EXISTS notify_attempts (
    key TEXT NOT NULL, at TEXT NOT NULL, ok INTEGER NOT NULL, detail TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS notify_attempts_key ON notify_attempts (key, at);
"""

KINDS = ("alarm", "escalation", "workorder", "report", "forward")
MAX_BODY = 64 * 1024  # a message's fields; a report's file is referenced, not embedded


def _at(t: datetime.datetime | str) -> str:
    if isinstance(t, str):
        return t
    return t.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def enqueue(
    store: Any, *, key: str, channel: str, recipient: str, kind: str, subject: str,
    site: str | None, body: dict[str, Any], at: datetime.datetime | str,
    due_at: datetime.datetime | str | None = None,
) -> bool:  # fmt: skip
    """Add one message (inside the caller's transaction). True if new, False if this key was
    already decided (nothing changes then)."""
    if kind not in KINDS:
        raise ValueError("notify kind %r, not one of %s" % (kind, ", ".join(KINDS)))
    text = json.dumps(body, ensure_ascii=False, sort_keys=True, allow_nan=False)
    if len(text.encode()) > MAX_BODY:
        raise ValueError("notify body of %d bytes: more than %d" % (len(text.encode()), MAX_BODY))
    cur = store.x(
        "INSERT INTO notify_outbox (key, channel, recipient, kind, subject, site, body, "
        "created_at, due_at) VALUES (?,?,?,?,?,?,?,?,?) ON CONFLICT (key) DO NOTHING",
        (key, channel, recipient, kind, subject, site, text, _at(at), _at(due_at or at)),
    )
    if cur.rowcount == 1 and store.placeholder == "%s":
        store.x("NOTIFY " + WAKE)  # PostgreSQL: delivered to LISTENers at commit, once
    return cur.rowcount == 1


# --- delivery (regulator/notify/deliver.py) --------------------------------------------------
# A row is claimed by pushing its due_at a lease ahead (and counting the attempt) in one
# statement: another deliverer skips it (PostgreSQL: FOR UPDATE SKIP LOCKED; SQLite: one
# writer), and a deliverer that dies mid-send leaves it due again when the lease ends. So
# delivery is at least once: the receiver deduplicates by message_id(key), which is stable.

WAKE = "gasguard_notify"  # PostgreSQL NOTIFY channel: a row was enqueued (sent at commit)
COLS = ("key", "channel", "recipient", "kind", "subject", "site", "body", "created_at",
        "attempts")  # fmt: skip
_NS = uuid.UUID("6f1c1a52-4e0e-5a2b-9a43-7d1c25a0e0b1")


def message_id(key: str) -> str:
    """The message's idempotency key for receivers: the same for every attempt at one row."""
    return str(uuid.uuid5(_NS, key))


# Which due rows go first: a high incident's messages (its key names the level:
# escalate.fire), then other alarms, then work orders and forwards, reports last. By due_at
# alone, a flood of 10,000 low alarms held a high alarm's first message back for minutes.
RANK = ("CASE WHEN kind IN ('alarm', 'escalation') AND key LIKE ? THEN 0 WHEN kind IN "
        "('alarm', 'escalation') THEN 1 WHEN kind = 'report' THEN 3 ELSE 2 END")  # fmt: skip
HIGH = "incident:%:high:%"


def claim(store: Any, now: datetime.datetime, limit: int, lease_s: float,
          room: dict[str, int] | None = None,
          horizon_s: float | None = None) -> list[dict[str, Any]]:  # fmt: skip
    """Take up to `limit` due pending rows (in its own transaction) for lease_s seconds, most
    urgent first (RANK); a week's reports never hold an alarm back a batch. `room`: how many
    more rows of each channel named this deliverer may take (the deliverer's share per
    channel), so a receiver that hangs holds its share of the slots and not all of them.
    `horizon_s`: no lease or backoff reaches further ahead, so a row due later was leased or
    retried by a clock that jumped ahead and came back: it is due now, not in a year."""
    lock = " FOR UPDATE SKIP LOCKED" if store.placeholder == "%s" else ""
    until = _at(now + datetime.timedelta(seconds=lease_s))
    far = _at(now + datetime.timedelta(seconds=horizon_s or 1e9))
    due = "status = 'pending' AND (due_at <= ? OR due_at > ?)"
    if not store.x("SELECT 1 FROM notify_outbox WHERE %s LIMIT 1" % due,
                   (_at(now), far)).fetchone():  # fmt: skip
        return []  # a read: SQLite's write lock only when something is due
    left = dict(room or {})
    full = sorted(ch for ch, n in left.items() if n <= 0)
    where, args = "", [_at(now), far]
    if full:
        sql, arg = store.in_list(full)
        where, args = " AND channel NOT IN " + sql, [*args, arg]
    with store.transaction():
        keys = []
        for c in store.rows(
            "SELECT key, channel FROM notify_outbox WHERE %s%s ORDER BY %s, due_at LIMIT ?%s"
            % (due, where, RANK, lock),
            (*args, HIGH, limit),
        ):
            if left.get(c["channel"], 1) > 0:
                keys.append(c["key"])
                if c["channel"] in left:
                    left[c["channel"]] -= 1
        if not keys:
            return []
        sql, arg = store.in_list(keys)
        rows = store.rows(
            "UPDATE notify_outbox SET due_at = ?, attempts = attempts + 1 WHERE key IN %s "
            "AND status = 'pending' RETURNING %s" % (sql, ", ".join(COLS)),
            (until, arg),
        )
    for r in rows:
        r["body"] = json.loads(r["body"])
        r["message_id"] = message_id(r["key"])
    return rows


def attempt(store: Any, key: str, at: datetime.datetime, ok: bool, detail: str) -> None:
    store.x("INSERT INTO notify_attempts (key, at, ok, detail) VALUES (?,?,?,?)",
            (key, _at(at), int(ok), detail[:500]))  # fmt: skip


def sent(store: Any, key: str, at: datetime.datetime, detail: str) -> None:
    """A receiver took it: never sent again by us (a pending row only: a failed one stays)."""
    with store.transaction():
        attempt(store, key, at, True, detail)
        store.x("UPDATE notify_outbox SET status = 'sent', sent_at = ?, last_error = NULL "
                "WHERE key = ? AND status = 'pending'", (_at(at), key))  # fmt: skip


def retry(store: Any, key: str, at: datetime.datetime, due: datetime.datetime,
          detail: str) -> None:  # fmt: skip
    with store.transaction():
        attempt(store, key, at, False, detail)
        store.x("UPDATE notify_outbox SET due_at = ?, last_error = ? WHERE key = ? AND "
                "status = 'pending'", (_at(due), detail[:500], key))  # fmt: skip


def give_up(store: Any, key: str, at: datetime.datetime, detail: str) -> bool:
    """Mark failed and audit it (never silent): counted by counts(), listed in the audit."""
    from .. import audit

    with store.transaction():
        attempt(store, key, at, False, detail)
        cur = store.x("UPDATE notify_outbox SET status = 'failed', last_error = ? WHERE key = ? "
                      "AND status = 'pending'", (detail[:500], key))  # fmt: skip
        if cur.rowcount == 1:
            row = store.rows("SELECT channel, recipient, kind, subject, attempts FROM "
                             "notify_outbox WHERE key = ?", (key,))[0]  # fmt: skip
            audit.record(store, _at(at), "notify", "notify.failed", row["subject"], None,
                         {**row, "key": key, "error": detail[:200]})  # fmt: skip
    return cur.rowcount == 1


def counts(store: Any) -> dict[str, int]:
    """Rows by status: pending, sent, failed; and untold, escalation steps that had nobody to
    tell (regulator/notify/escalate.fire). A failed or untold count above 0 needs a person."""
    out = {"pending": 0, "sent": 0, "failed": 0}
    for status, n in store.x(
        "SELECT status, count(*) FROM notify_outbox GROUP BY status"
    ).fetchall():
        out[status] = n
    out["untold"] = store.x("SELECT count(*) FROM notify_steps WHERE recipients = 0").fetchone()[0]
    return out
