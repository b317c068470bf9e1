"""The compliance helper's `findings` table, as the shared contract gives it, made here only
where it is missing, so these tests run before that branch lands. Delete this file at the merge
(and its imports): the store will make the table itself."""

from __future__ import annotations

FINDINGS = """CREATE TABLE IF NOT EXISTS findings (
    site TEXT NOT NULL, subject TEXT NOT NULL DEFAULT '', kind TEXT NOT NULL, detail TEXT,
    since TEXT, cleared_at TEXT, PRIMARY KEY (site, subject, kind))"""


def ensure_findings(store) -> None:
    with store.transaction():
        store.x(FINDINGS)
