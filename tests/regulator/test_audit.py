"""The audit log on PostgreSQL and SQLite: a row for each change, in the change's transaction;
UPDATE, DELETE (and TRUNCATE) refused by the database itself; the purge only past six months."""

from __future__ import annotations

import datetime
import sqlite3

import pytest

from gasguard.regulator import audit, hazards
from gasguard.regulator.store import is_postgres

from .ledger_helpers import NOW, incident, made_store, run

OLD = "2025-01-01T00:00:00.000Z"  # well past six months before any run of these tests


@pytest.fixture
def store(db_url):
    s = made_store(db_url)
    yield s
    s.close()


def _refused(store, sql: str) -> str:
    """The database refuses sql: its message (the transaction rolled back)."""
    with pytest.raises(Exception) as e:  # noqa: PT011 - sqlite3 and psycopg errors differ
        with store.transaction():
            store.x(sql)
    assert isinstance(e.value, sqlite3.Error) or type(e.value).__module__.startswith("psycopg")
    return str(e.value)


def _count(store) -> int:
    return store.rows("SELECT COUNT(*) AS n FROM audit")[0]["n"]


def test_update_and_delete_of_audit_rows_are_refused_by_the_database(store, db_url):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    hazards.dispatch(store, hid, "张三", None, "李四", NOW)
    n = _count(store)
    assert "append-only" in _refused(store, "UPDATE audit SET actor = 'someone else'")
    assert "append-only" in _refused(store, 'UPDATE audit SET "after" = NULL WHERE id = 1')
    assert "append-only" in _refused(store, "DELETE FROM audit")
    assert "append-only" in _refused(store, "DELETE FROM audit WHERE actor = '李四'")
    if is_postgres(db_url):
        assert "append-only" in _refused(store, "TRUNCATE audit")
        conflict = "ON CONFLICT (id) DO UPDATE SET actor = 'nobody'"
        assert "append-only" in _refused(
            store, "INSERT INTO audit (id, at, actor, action, target) "
            "VALUES (1, 'x', 'nobody', 'nothing', 'hazard:1') " + conflict)  # fmt: skip
    else:  # SQLite's REPLACE deletes the old row without the delete trigger (found in an attack)
        assert "append-only" in _refused(
            store, "INSERT OR REPLACE INTO audit (id, at, actor, action, target) "
            "VALUES (1, 'x', 'nobody', 'nothing', 'hazard:1')")  # fmt: skip
    # the purge's mark alone does not open the door to recent rows
    with pytest.raises(Exception, match="append-only"):  # noqa: PT011
        with store.transaction():
            store.x("INSERT INTO audit_purge VALUES ('x')")
            store.x("DELETE FROM audit")
    assert _count(store) == n
    assert [e["actor"] for e in audit.entries(store)] == ["system:sync", "李四"]


def test_a_change_and_its_audit_row_commit_together_or_not_at_all(store):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    n = _count(store)
    with pytest.raises(RuntimeError):
        with store.transaction():
            audit.record(store, NOW, "x", "hazard.dispatch", "hazard:%d" % hid, None, {"a": 1})
            raise RuntimeError("the change failed after its audit row")
    assert _count(store) == n
    # a change the database refuses leaves no audit row either
    with pytest.raises(hazards.WorkflowError):
        hazards.rectify(store, hid, "fixed", "x", NOW)
    assert _count(store) == n


def test_purge_refuses_less_than_six_months(store, db_url, capsys):
    for text in ("180d", "183", "0d", "-5d", "6m", "", "184x", "99999999d"):
        with pytest.raises(ValueError, match="--older-than"):
            audit.retention_days(text)
    assert audit.retention_days("184d") == 184 and audit.retention_days(" 365 ") == 365
    assert run("audit", "purge", "--db", db_url, "--older-than", "180d", "--by", "管理员") == 2
    assert "six months" in capsys.readouterr().err
    with pytest.raises(ValueError):
        audit.purge(store, 30, "管理员", datetime.datetime.now(datetime.UTC))


def test_purge_deletes_only_what_is_past_keeping_and_logs_itself(store, db_url, capsys):
    with store.transaction():
        for n in range(3):
            audit.record(store, OLD, "old", "hazard.raise", "hazard:%d" % n, None, {"n": n})
        audit.record(store, audit.spell(datetime.datetime.now(datetime.UTC)), "new",
                     "hazard.raise", "hazard:9", None, {"n": 9})  # fmt: skip
    assert run("audit", "purge", "--db", db_url, "--older-than", "184d", "--by", "管理员") == 0
    assert "3 audit rows" in capsys.readouterr().out
    left = audit.entries(store)
    assert [e["actor"] for e in left] == ["new", "管理员"]
    assert left[-1]["action"] == "audit.purge" and left[-1]["after"]["deleted"] == 3
    assert not store.rows("SELECT * FROM audit_purge")  # the door is shut again
    # a purge asked for a longer keep than the rows' age deletes nothing
    assert audit.purge(store, 10_000, "管理员", datetime.datetime.now(datetime.UTC)) == 0


def test_a_backdated_purge_clock_cannot_delete_recent_rows(store):
    """The database checks the age by its own clock, not the one the purge was handed."""
    incident(store, "ev")
    hazards.sync(store, audit.spell(datetime.datetime.now(datetime.UTC)))
    future = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=3650)
    with pytest.raises(Exception, match="append-only"):  # noqa: PT011
        audit.purge(store, 184, "管理员", future)
    assert [e["action"] for e in audit.entries(store)] == ["hazard.raise"]


def test_audit_list_command(store, db_url, capsys):
    incident(store, "ev")
    (hid,) = hazards.sync(store, NOW)
    assert run("audit", "list", "--db", db_url, "--target", "hazard:%d" % hid, "--json") == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 1 and '"hazard.raise"' in out[0]
    assert run("audit", "list", "--db", db_url) == 0
    assert "system:sync" in capsys.readouterr().out
