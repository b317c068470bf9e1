"""`gasguard regulator export` on PostgreSQL and SQLite: the ledger read back from CSV and XLSX
with its Chinese headers, a formula in a summary written as text, a foreign database refused and
left as it was, an existing file kept unless --force."""

from __future__ import annotations

import csv
import hashlib
import sqlite3

import pytest
from openpyxl import load_workbook

from gasguard.regulator import hazards
from gasguard.regulator.export import HEADERS
from gasguard.regulator.store import SCHEMA_MARK

from .ledger_helpers import NOW, finding, incident, made_store, run

EVIL = "=cmd|' /C calc'!A0"


@pytest.fixture
def store(db_url):
    s = made_store(db_url)
    yield s
    s.close()


def _ledger(store) -> None:
    incident(store, "ev-1", site="s1", device="d1", opened_at="2026-11-30T08:00:00.000Z")
    finding(store, "s2", "no_detector", detail=EVIL, since="2026-11-01T00:00:00.000Z")
    finding(store, "s3", "wrong_position", subject="@d7", detail="+1 metre too high")
    hazards.sync(store, NOW)
    hid = store.rows("SELECT id FROM hazards WHERE source = 'incident:s1/ev-1'")[0]["id"]
    hazards.dispatch(store, hid, "张三", None, "李四", NOW)
    hazards.rectify(store, hid, "-换了软管", "张三", NOW)
    hazards.close(store, hid, "检查员王", NOW, "现场复查合格")


def _csv(path) -> list[list[str]]:
    raw = path.read_bytes()
    assert raw.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    return list(csv.reader(raw.decode("utf-8-sig").splitlines()))


def test_csv_has_chinese_headers_and_escapes_formulas(store, db_url, tmp_path, capsys):
    _ledger(store)
    out = tmp_path / "台账.csv"
    assert run("export", "--db", db_url, "--out", str(out)) == 0
    assert "3 hazards" in capsys.readouterr().out
    rows = _csv(out)
    assert tuple(rows[0]) == HEADERS and rows[0][:3] == ["序号", "隐患编号", "单位"]
    body = [dict(zip(HEADERS, r, strict=True)) for r in rows[1:]]
    assert [b["序号"] for b in body] == ["1", "2", "3"]
    by_site = {b["站点编号"]: b for b in body}
    assert by_site["s2"]["隐患描述"] == "'" + EVIL  # text, never a formula
    assert by_site["s2"]["隐患类型"] == "未安装可燃气体报警器"
    assert by_site["s2"]["是否逾期"] == "是"
    assert by_site["s3"]["设备"] == "'@d7" and by_site["s3"]["隐患描述"] == "'+1 metre too high"
    done = by_site["s1"]
    assert (done["状态"], done["整改责任人"], done["核查人"], done["核查意见"]) == (
        "已销号", "张三", "检查员王", "现场复查合格")  # fmt: skip
    assert done["整改情况"] == "'-换了软管" and done["严重程度"] == "高限报警"
    assert done["发现时间"][:4] == "2026" and done["销号时间"][-6] in "+-"  # local, with offset
    for b in body:
        assert not any(c.startswith(("=", "+", "-", "@")) for c in b.values())


def test_xlsx_reads_back_with_the_formula_as_text(store, db_url, tmp_path):
    _ledger(store)
    out = tmp_path / "ledger.xlsx"
    assert run("export", "--db", db_url, "--out", str(out), "--overdue") == 0
    ws = load_workbook(out).active
    rows = list(ws.iter_rows(values_only=True))
    assert rows[0] == HEADERS
    assert len(rows) == 3  # the closed one is not overdue
    cell = next(c for r in ws.iter_rows(min_row=2) for c in r if c.value == EVIL)
    assert cell.data_type == "s" and cell.quotePrefix  # a string cell, not a formula
    raw = load_workbook(out, data_only=False).active
    assert not any(c.data_type == "f" for r in raw.iter_rows() for c in r)


def test_an_empty_ledger_exports_just_the_headers(store, db_url, tmp_path):
    out = tmp_path / "empty.csv"
    assert run("export", "--db", db_url, "--out", str(out)) == 0
    assert _csv(out) == [list(HEADERS)]


def test_existing_output_is_kept_unless_force(store, db_url, tmp_path, capsys):
    _ledger(store)
    out = tmp_path / "ledger.csv"
    out.write_text("precious")
    assert run("export", "--db", db_url, "--out", str(out)) == 2
    assert "--force" in capsys.readouterr().err and out.read_text() == "precious"
    assert run("export", "--db", db_url, "--out", str(out), "--force") == 0
    assert len(_csv(out)) == 4
    assert run("export", "--db", db_url, "--out", str(tmp_path / "x.pdf")) == 2
    assert run("export", "--db", db_url, "--out", str(tmp_path / "no" / "x.csv")) == 2
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []
    capsys.readouterr()
    # a place no file can be written: one line and exit 1, no traceback
    assert run("export", "--db", db_url, "--out", "/proc/ledger.csv") == 1
    err = capsys.readouterr().err
    assert "/proc/ledger.csv" in err and "Traceback" not in err


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_database_that_is_not_a_regulator_ledger_is_refused_and_left_unchanged(tmp_path, capsys):
    other = tmp_path / "shop.db"
    db = sqlite3.connect(other)
    db.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, item TEXT)")
    db.execute("INSERT INTO orders (item) VALUES ('noodles')")
    db.commit()
    db.close()
    before = _digest(other)
    out = tmp_path / "ledger.csv"
    assert run("export", "--db", str(other), "--out", str(out)) == 2
    assert "not a regulator database" in capsys.readouterr().err
    assert _digest(other) == before and not out.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["shop.db"]  # no -wal, no -shm
    db = sqlite3.connect(other)
    assert [r[0] for r in db.execute("SELECT name FROM sqlite_master")] == ["orders"]
    db.close()
    missing = tmp_path / "nope.db"
    assert run("export", "--db", str(missing), "--out", str(out)) == 2
    assert not missing.exists()


def test_a_postgres_database_that_is_not_ours_is_refused_without_creating_tables(
    postgres, tmp_path
):
    import psycopg

    url = postgres.create_database("shop_export")
    with psycopg.connect(url, autocommit=True) as c:
        c.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    assert run("export", "--db", url, "--out", str(tmp_path / "x.csv")) == 2
    empty = postgres.create_database("empty_export")
    assert run("export", "--db", empty, "--out", str(tmp_path / "x.csv")) == 2
    for u, want in ((url, ["orders"]), (empty, [])):
        with psycopg.connect(u) as c:
            got = c.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
            assert [r[0] for r in got] == want


@pytest.mark.parametrize("made", ["schema 1", "half made"])
def test_an_older_or_half_made_regulator_database_is_refused_and_left_as_it_was(
    tmp_path, capsys, made
):
    """A database of the previous schema (events unique by id alone), or one of this schema
    whose tables were dropped or never made: every command says which, exit 2, no traceback,
    and the file is byte for byte as it was (no table added, not switched to WAL)."""
    old = tmp_path / "old.db"
    db = sqlite3.connect(old)
    db.execute("CREATE TABLE regulator_meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
    mark = "gasguard-regulator 1" if made == "schema 1" else SCHEMA_MARK
    db.execute("INSERT INTO regulator_meta VALUES ('schema', ?)", (mark,))
    db.execute("CREATE TABLE incidents (open_event TEXT PRIMARY KEY)")
    db.commit()
    db.close()
    before = old.read_bytes()
    says = "schema 'gasguard-regulator 1'" if made == "schema 1" else "without its tables"
    for argv in (["export", "--db", str(old), "--out", str(tmp_path / "x.csv")],
                 ["hazards", "list", "--db", str(old)]):  # fmt: skip
        assert run(*argv) == 2
        err = capsys.readouterr().err
        assert says in err and "Traceback" not in err
    assert old.read_bytes() == before
    assert not (tmp_path / "x.csv").exists()
