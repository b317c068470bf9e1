"""The hazard ledger page's filters, paging and its CSV/XLSX download (TestClient, both
backends): scoped to the account's node, the page's filters applied, hostile query strings
refused, never another street's rows."""

from __future__ import annotations

import csv
import io
import re
import urllib.parse

from gasguard.regulator import export

from .test_web_console import as_user, console  # noqa: F401 - the fixtures
from .web_fixture import SOON, csrf_in, hazard_of


def csv_rows(r) -> list[list[str]]:
    assert r.status_code == 200, r.text[:300]
    assert r.headers["content-type"].startswith("text/csv")
    assert r.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs for Chinese
    return list(csv.reader(io.StringIO(r.content.decode("utf-8-sig"))))


def xlsx_rows(r) -> list[list[str]]:
    from openpyxl import load_workbook

    assert r.status_code == 200, r.text[:300]
    assert "spreadsheetml" in r.headers["content-type"]
    ws = load_workbook(io.BytesIO(r.content), read_only=True).active
    return [[c if c is not None else "" for c in row] for row in ws.iter_rows(values_only=True)]


def test_a_street_account_downloads_its_own_streets_hazards_only(as_user):  # noqa: F811
    tom = as_user("tom")
    page = tom.get("/hazards?status=all").text
    assert 'id="export-csv" href="/hazards/export.csv?status=all"' in page
    for rows in (csv_rows(tom.get("/hazards/export.csv?status=all")),
                 xlsx_rows(tom.get("/hazards/export.xlsx?status=all"))):  # fmt: skip
        assert tuple(rows[0]) == export.HEADERS  # 序号, 隐患编号, 单位, ...
        assert len(rows) == 2 and rows[1][3] == "site-0001", rows
        assert rows[1][2] == "Restaurant site-0001" and rows[1][5] == "燃气泄漏报警"
    r = tom.get("/hazards/export.csv")
    assert "hazard-ledger-" in r.headers["content-disposition"]
    assert "filename*=UTF-8''%E9%9A%90%E6%82%A3%E5%8F%B0%E8%B4%A6-" in r.headers[
        "content-disposition"]  # 隐患台账-YYYYMMDD-HHMM.csv  # fmt: skip
    # the city's account: every site, the ones no unit names too
    sites = {row[3] for row in csv_rows(as_user("chen").get("/hazards/export.csv"))[1:]}
    assert sites == {"site-0000", "site-0001", "site-0002", "site-0003", "site-0004"}


def test_the_download_applies_the_pages_filters(as_user, db_url):  # noqa: F811
    alice = as_user("alice")  # xuhui: site-0000 and site-0001
    h = hazard_of(db_url, "site-0000")
    r = alice.post("/hazards/%d/dispatch" % h["id"], data={
        "to": "=HYPERLINK(\"http://x\")", "deadline": SOON + "T18:00",
        "csrf": csrf_in(alice.get("/hazards").text)})  # fmt: skip
    assert r.status_code == 200
    every = csv_rows(alice.get("/hazards/export.csv"))
    assert {row[3] for row in every[1:]} == {"site-0000", "site-0001"}
    dispatched = next(row for row in every if row[3] == "site-0000")
    assert dispatched[9] == "'=HYPERLINK(\"http://x\")"  # text, never a formula
    overdue = csv_rows(alice.get("/hazards/export.csv?overdue=1"))
    assert {row[3] for row in overdue[1:]} == {"site-0001"}  # site-0000's deadline is far off
    assert all(row[12] == "是" for row in overdue[1:])
    page = alice.get("/hazards?overdue=1").text
    assert "site-0001" in page and "/units/site-0000" not in page
    assert 'href="/hazards/export.xlsx?overdue=1"' in page


def test_the_ledger_pages_through_every_row(as_user, db_url):  # noqa: F811
    from gasguard.regulator.store import open_store

    from .city_registry import make_hazards

    store = open_store(db_url)
    with store.transaction():
        store.x("DELETE FROM hazards")
    store.close()
    store = open_store(db_url)
    make_hazards(store, [("site-0001", "open", "2999-01-01T00:00:%02d.000Z" % (n % 60))
                         for n in range(450)])  # fmt: skip
    store.close()
    tom = as_user("tom")
    seen = []
    link = "/hazards"
    while link:
        page = tom.get(link).text
        seen += [int(x) for x in re.findall(r'<tr id="hazard-(\d+)"', page)]
        nxt = re.search(r'id="next" href="([^"]+)"', page)
        link = nxt and nxt.group(1).replace("&amp;", "&")
    assert sorted(seen) == list(range(1, 451)) and len(seen) == 450  # each once
    assert "共 450 条" in tom.get("/hazards?page=3").text
    assert "<tr id=\"hazard-" not in tom.get("/hazards?page=4").text  # past the end: none
    assert len(csv_rows(tom.get("/hazards/export.csv"))) == 451  # the download: all of them


HOSTILE_EXPORT = ("status=junk", "overdue=0", "overdue=yes", "status=all&status=open",
                  "site=site-0002", "node=minhang", "district=minhang", "page=2",
                  "status=" + "x" * 10_000, "overdue=1%00")  # fmt: skip
HOSTILE_PAGE = ("page=0", "page=-1", "page=abc", "page=9999999", "page=1&page=2",
                "status=closed", "sort=site", "page=１")  # fmt: skip


def test_hostile_queries_a_login_and_the_format(console, as_user):  # noqa: F811
    """Junk, repeated or unknown parameters (another node's name among them) are a 400, not
    ignored, and never another street's rows."""
    r = console.get("/hazards/export.csv", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")
    tom = as_user("tom")
    for query in HOSTILE_EXPORT:
        for fmt in ("csv", "xlsx"):
            r = tom.get("/hazards/export.%s?%s" % (fmt, query))
            assert r.status_code == 400 and "site-0002" not in r.text, query
    for query in HOSTILE_PAGE:
        r = tom.get("/hazards?" + query)
        assert r.status_code == 400 and "site-0001" not in r.text, query
    vera = as_user("vera")  # a viewer reads the ledger, so it may download it
    assert vera.get("/hazards/export.csv").status_code == 200
    for fmt in ("pdf", "csv.exe", urllib.parse.quote("../../etc/passwd", safe="")):
        assert vera.get("/hazards/export." + fmt).status_code == 404, fmt
