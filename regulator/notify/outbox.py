"""The notification outbox: one row per message to one recipient on one channel.

enqueue() is called inside the transaction that decided the message; `key` names the decision
(for example "alarm:<site>/<device>/<open_event>:0:<channel>:<recipient>"), so the same decision
taken twice, by a replay or by two workers, is one row. The deliverer claims due rows, sends,
and records each attempt; a row is never deleted by delivery, only marked.
"""

from __future__ import annotations

import datetime
import json
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
    return cur.rowcount == 1
