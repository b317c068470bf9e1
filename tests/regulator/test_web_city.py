"""The city overview's chart and map data and the compliance board through Starlette's TestClient,
on both backends (one test city a module, map_fixture: these tests only read): what each view
holds, the street account's scope in pages and JSON, and hostile query strings. The browser
draws them in test_web_city_browser.py."""

from __future__ import annotations

import os
import re

import pytest
from starlette.testclient import TestClient

from gasguard.regulator import geo
from gasguard.regulator.compliance import KINDS
from gasguard.regulator.web import citypages, vendor
from gasguard.regulator.web.app import create_console

from .map_fixture import (
    GEOJSON,
    PLACES,
    RECENT,
    STATES,
    TOM,
    build_map_db,
    geojson_bytes,
    local_day,
    recent_times,
)
from .web_fixture import log_in

OTHERS = sorted(set(STATES) - TOM)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def city(request, tmp_path_factory):
    if request.param == "sqlite":
        db = str(tmp_path_factory.mktemp("city") / "ledger.db")
    else:
        db = request.getfixturevalue("postgres").create_database("city_%d" % os.getpid())
    at = build_map_db(db)
    app = create_console(db, boundaries=geo.parse(geojson_bytes()))
    with TestClient(app):  # its lifespan: the stores closed at the end
        yield app, at


@pytest.fixture(scope="module")
def user(city):
    """A logged-in client per account name, made once a module."""
    made: dict[str, TestClient] = {}

    def get(name: str) -> TestClient:
        if name not in made:
            made[name] = TestClient(city[0])
            assert log_in(made[name], name).status_code == 303
        return made[name]

    return get


def board_sites(html: str) -> list[str]:
    return re.findall(r'<tr data-site="([^"]+)"', html)


def test_the_map_data_puts_each_placed_unit_in_its_state_with_the_outlines(user):
    m = user("chen").get("/api/map").json()
    got = {s: state for state, c in m["states"].items() for s in c["site"]}
    assert got == {s: STATES[s] for s in PLACES}
    assert m["unplaced"] == 1 and m["counts"]["noncompliant"] == 3  # site-0009: no place
    alarm = m["states"]["alarm"]
    i = alarm["site"].index("site-0001")
    assert (alarm["lat"][i], alarm["lon"][i]) == PLACES["site-0001"]
    assert alarm["name"][i] == "Restaurant site-0001"
    assert m["boundaries"] == GEOJSON  # the whole city's account: every outline


def test_alarms_per_day_in_the_consoles_zone_per_district(user, city):
    d = user("chen").get("/api/alarms/daily").json()
    assert len(d["days"]) == 30 and d["days"][-1] == local_day(city[1])
    per = {x["district"]: x["counts"] for x in d["districts"]}
    assert set(per) == {"xuhui", "minhang"}  # build_city's older alarms are out of the window
    want: dict[str, dict[str, int]] = {"xuhui": {}, "minhang": {}}
    for site, t in recent_times(city[1]):
        district = "minhang" if site in ("site-0002", "site-0003") else "xuhui"
        want[district][local_day(t)] = want[district].get(local_day(t), 0) + 1
    for district, days in want.items():
        assert {d["days"][i]: n for i, n in enumerate(per[district]) if n} == days
    assert sum(d["total"]) == len(RECENT)
    assert [x["name"] for x in d["districts"]] == ["Minhang", "Xuhui"]


def test_the_board_most_kinds_then_longest_outstanding_filtered_and_paged(user, monkeypatch):
    chen = user("chen")
    b = chen.get("/api/compliance").json()
    order = ["site-0006", "site-0009", "site-0008", "site-0007", "site-0001"]
    assert [u["site"] for u in b["units"]] == order  # two kinds first, then the oldest
    assert b["total"] == 5 and b["units_total"] == 10 and b["kinds"] == list(KINDS)
    assert b["counts"] == {"no_detector": 2, "below_standard": 1, "wrong_gas": 1,
                           "wrong_position": 1, "not_working": 1}  # fmt: skip
    six = b["units"][0]  # its findings of a kind: the oldest first
    assert [f["subject"] for f in six["findings"]["below_standard"]] == ["dev-02", "dev-01"]
    assert six["district"] == "xuhui" and six["district_name"] == "Xuhui"
    assert board_sites(chen.get("/compliance").text) == order
    page = chen.get("/compliance", params={"finding": "no_detector"}).text
    assert board_sites(page) == ["site-0009", "site-0008"]
    for district in ("minhang", "Minhang"):  # its id or its name, as the other filters
        page = chen.get("/compliance", params={"finding": "no_detector", "district": district})
        assert board_sites(page.text) == ["site-0009"]
    page = chen.get("/compliance?district=&finding=&page=").text  # the form's "all"
    assert board_sites(page) == order
    got = chen.get("/api/compliance", params={"limit": 2, "offset": 2}).json()
    assert [u["site"] for u in got["units"]] == order[2:4] and got["total"] == 5
    monkeypatch.setattr(citypages, "PAGE_ROWS", 2)
    first = chen.get("/compliance").text
    assert board_sites(first) == order[:2] and "第 1 页，共 3 页" in first
    assert 'rel="next" href="/compliance?district=&amp;finding=&amp;page=2"' in first
    last = chen.get("/compliance", params={"page": 3}).text
    assert board_sites(last) == order[4:] and 'rel="prev"' in last and 'rel="next"' not in last
    assert board_sites(chen.get("/compliance", params={"page": 9}).text) == []  # past the end
    link = '<a href="/units/site-0006">'
    assert link in chen.get("/compliance", params={"district": "xuhui"}).text


def test_a_street_account_sees_only_its_street_on_the_board_the_map_and_the_chart(user):
    tom = user("tom")
    m = tom.get("/api/map").json()
    assert {s for c in m["states"].values() for s in c["site"]} == TOM
    assert {f["properties"]["node"] for f in m["boundaries"]["features"]} == {
        "xuhui", "xuhui-tianping"}  # fmt: skip (its own, and its district above; not Minhang)
    d = tom.get("/api/alarms/daily").json()
    assert [x["district"] for x in d["districts"]] == ["xuhui"] and sum(d["total"]) == 2
    b = tom.get("/api/compliance").json()
    assert [u["site"] for u in b["units"]] == ["site-0008", "site-0007", "site-0001"]
    assert b["units_total"] == 4 and b["counts"]["below_standard"] == 0
    for params in ({"district": "minhang"}, {"district": "xuhui", "finding": "wrong_gas"}):
        assert tom.get("/api/compliance", params=params).json()["units"] == []
        assert board_sites(tom.get("/compliance", params=params).text) == []
    for path in ("/compliance", "/compliance?finding=no_detector", "/overview", "/api/map",
                 "/api/alarms/daily", "/api/compliance?limit=1000"):  # fmt: skip
        body = tom.get(path).text
        assert not any(o in body for o in OTHERS), path
        assert "Minhang" not in body and "闵行" not in body, path
    assert '<option value="minhang"' not in tom.get("/compliance").text  # not offered either


@pytest.mark.parametrize(
    "path",
    [
        "/compliance?finding=drop_table",
        "/compliance?finding=no_detector&finding=wrong_gas",
        "/compliance?page=0",
        "/compliance?page=-1",
        "/compliance?page=abc",
        "/compliance?page=1e3",
        "/compliance?page=99999999999999999999",
        "/compliance?page=%d" % (citypages.PAGES_MAX + 1),
        "/compliance?district=" + "x" * 129,
        "/compliance?district=a%00b",
        "/compliance?district=%0a",
        "/compliance?sort=site",
        "/api/compliance?finding=NO_DETECTOR",
        "/api/compliance?limit=0",
        "/api/compliance?limit=1001",
        "/api/compliance?offset=-5",
        "/api/compliance?district=",
        "/api/map?district=xuhui",
        "/api/map?scope=sh",
        "/api/alarms/daily?days=365",
    ],
)
def test_hostile_query_strings_are_refused_with_400(user, path):
    r = user("tom").get(path)
    assert r.status_code == 400, r.text[:200]
    if path.startswith("/api/"):
        assert r.json()["error"]
    else:
        assert 'class="flash error"' in r.text


def test_an_unknown_district_is_an_empty_board_not_an_error(user):
    r = user("chen").get("/compliance", params={"district": "nowhere 不存在"})
    assert r.status_code == 200 and board_sites(r.text) == [] and "没有未消除的问题" in r.text


def test_nothing_without_a_login_but_plotly_is_kept_a_year(city):
    client = TestClient(city[0])
    for path in ("/api/map", "/api/alarms/daily", "/api/compliance"):
        assert client.get(path).status_code == 401, path
    r = client.get("/compliance", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Fcompliance"
    url = vendor.plotly_js()[0]
    r = client.get(url, headers={"Accept-Encoding": "gzip"})
    assert r.status_code == 200 and r.headers["content-encoding"] == "gzip"
    assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
    assert r.content.startswith(b"/**\n* plotly.js v")  # httpx unpacked it
    assert client.get(url, headers={"Accept-Encoding": "identity"}).headers.get(
        "content-encoding") is None  # fmt: skip


def test_every_string_the_templates_show_is_in_the_chinese_catalog():
    """Babel's own extraction over the templates (jinja2's extractor), and the names the pages
    translate at run time: the five findings, the map's five states."""
    from babel.messages.extract import extract_from_file
    from babel.messages.pofile import read_po

    from gasguard.regulator import unitmap
    from gasguard.regulator.web import i18n
    from gasguard.regulator.web.app import HERE

    with open(i18n.LOCALE_DIR / "zh_CN" / "LC_MESSAGES" / "messages.po", "rb") as f:
        catalog = read_po(f, locale="zh_CN")
    have = {(m.context, m.id) for m in catalog if m.id and m.string}
    wanted = {(None, k) for k in KINDS} | {("unit state", s) for s in unitmap.STATES}
    for template in sorted((HERE / "templates").glob("*.html")):
        for _, message, _, context in extract_from_file(
            "jinja2.ext:babel_extract", template, keywords={"_": None, "pgettext": ((1, "c"), 2)}
        ):  # fmt: skip
            wanted.add((context, message))
    assert sorted(wanted - have, key=str) == []


def test_the_board_in_english(user):
    page = user("vera").get("/lang/en?next=/compliance").text
    assert "<h1>Compliance board</h1>" in page and ">Wrong gas 1</a>" in page
    assert "<th>No detector</th>" in page and "未安装" not in page
