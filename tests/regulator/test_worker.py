"""A worker's batch: what the database refuses for one message costs that message alone."""

from __future__ import annotations

from gasguard.regulator import boundary
from gasguard.regulator.store import SqliteStore, open_store
from gasguard.regulator.worker import Config, Worker

from .conftest import board_event


class RefusesOne(SqliteStore):
    """A real SQLite store that refuses one event the way a database refuses a value."""

    def _insert_events(self, msgs, at):
        if any(m.payload["id"].endswith(":1:13") for m in msgs):
            raise ValueError("value out of range for this column")
        return super()._insert_events(msgs, at)


def test_a_message_the_database_refuses_is_rejected_alone(tmp_path):
    db = str(tmp_path / "r.db")
    open_store(db, create=True).close()
    cfg = Config("127.0.0.1", 1883, False, db, "g", "n", 1)
    logged: list[str] = []
    w = Worker(cfg, 0, log=logged.append)
    w.store = RefusesOne(db)
    items = [boundary.check(*board_event("site-1", "kitchen-1", "selftest", 1, s))
             for s in (12, 13, 14)]  # fmt: skip
    written = w.commit(items)
    assert (written.events, written.rejected) == (2, 1)
    w.store.close()
    store = open_store(db)
    assert [r["id"][-4:] for r in store.rows("SELECT id FROM events ORDER BY id")] == [
        "1:12",
        "1:14",
    ]
    (rej,) = store.rows("SELECT topic, reason FROM rejected")
    assert rej["topic"] == "gasguard/v1/site-1/kitchen-1/events"
    assert rej["reason"] == "store: ValueError: value out of range for this column"
    store.close()
