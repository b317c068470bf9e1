"""What an outside attack on the web console found, each as the hostile input that broke it:
a mistyped deadline year that left every page a 500 for that browser, an outline file whose
altitude was 1e999 (the map's JSON then failed for everyone), account names that differ only
in case (one device cookie for both), a hazard number past what the database holds, a session
cookie a link from a chat would not carry, and cells a spreadsheet runs as formulas once it
trims them."""

from __future__ import annotations

import json

import pytest
from starlette.testclient import TestClient

from gasguard.regulator import export, geo
from gasguard.regulator.store import open_store
from gasguard.regulator.web import accounts
from gasguard.regulator.web.app import create_console

from .map_fixture import build_map_db, geojson_bytes
from .web_fixture import PASSWORD, build_console_db, csrf_in, hazard_of, log_in

PAGES = ("/hazards", "/alarms", "/overview", "/compliance", "/gateways", "/units/site-0000")


@pytest.fixture
def tom(tmp_path):
    db = str(tmp_path / "c.db")
    build_console_db(db)
    with TestClient(create_console(db)) as c:
        assert log_in(c, "tom").status_code == 303
        yield c, db


@pytest.mark.parametrize("deadline", [
    "0202-12-01T18:00", "0001-01-01T00:00", "9999-12-31T23:59-10:00", "2101-01-01T00:00",
])  # fmt: skip
def test_a_deadline_no_one_means_is_refused_once_and_every_page_still_opens(tom, deadline):
    client, db = tom
    h = hazard_of(db, "site-0001")
    r = client.post("/hazards/%d/dispatch" % h["id"], data={
        "to": "王师傅", "deadline": deadline, "csrf": csrf_in(client.get("/hazards").text)})
    assert r.status_code == 200 and "整改期限：请填写日期和时间" in r.text  # said once, in Chinese
    assert "整改期限：请填写日期和时间" not in client.get("/hazards").text
    assert hazard_of(db, "site-0001")["status"] == "open"
    for path in PAGES:
        assert client.get(path).status_code in (200, 404), path


def test_a_hazard_number_past_what_the_database_holds_is_not_found(tom):
    client, _ = tom
    token = csrf_in(client.get("/hazards").text)
    r = client.post("/hazards/9223372036854775808/close", data={"csrf": token})
    assert r.status_code == 404


def test_the_session_cookie_comes_with_a_link_from_another_site(tom):
    """SameSite=Strict sent no cookie on a link from a chat or an e-mail: the login page then
    answered with a new session, logging the user out. Forms keep their CSRF tokens."""
    client, _ = tom
    c = TestClient(client.app)
    r = c.post("/login", data={"name": "tom", "password": PASSWORD,
                               "csrf": csrf_in(c.get("/login").text)}, follow_redirects=False)
    cookies = r.headers.get_list("set-cookie")
    assert cookies and all("samesite=lax" in v.lower() for v in cookies)


def test_an_account_name_differing_only_in_case_or_width_is_refused(tmp_path):
    db = str(tmp_path / "c.db")
    build_console_db(db)
    store = open_store(db)
    try:
        for twin in ("Alice", "ALICE", "ａｌｉｃｅ"):
            with pytest.raises(ValueError, match="too like the account alice"):
                accounts.add(store, twin, "viewer", "minhang", PASSWORD, "test", "2026-11-30")
    finally:
        store.close()


def test_an_outline_with_an_infinite_altitude_or_extra_members_sends_only_lon_lat(tmp_path):
    doc = json.loads(geojson_bytes())
    g = doc["features"][0]["geometry"]
    ring = g["coordinates"][0] if g["type"] == "Polygon" else g["coordinates"][0][0]
    ring[0] = ring[-1] = [*ring[0][:2], "INF"]
    g["foreign"] = {"x": [[[1]]]}
    raw = json.dumps(doc).replace('"INF"', "1e999").encode()
    outlines = geo.parse(raw)
    first = outlines.features[0]["geometry"]
    assert set(first) == {"type", "coordinates"}
    db = str(tmp_path / "m.db")
    build_map_db(db)
    with TestClient(create_console(db, boundaries=outlines)) as c:
        assert log_in(c, "chen").status_code == 303
        r = c.get("/api/map")
        assert r.status_code == 200 and "Infinity" not in r.text


@pytest.mark.parametrize("cell", [" =cmd|' /C calc'!A0", "\n=1+1", "＝HYPERLINK(\"x\")",
                                  "\u3000@SUM(A1)"])  # fmt: skip
def test_a_cell_a_spreadsheet_runs_once_trimmed_is_written_as_text(cell):
    assert export.risky(cell)
    assert not export.risky("李四 = 张三的同事")  # an equals sign inside is text


def test_a_link_followed_before_logging_in_opens_its_page_after_the_login(tmp_path):
    """A robot's message links to a unit or a report: the login comes back to it."""
    db = str(tmp_path / "c.db")
    build_console_db(db)
    with TestClient(create_console(db)) as c:
        r = c.get("/units/site-0000?x=1", follow_redirects=False)
        assert r.status_code == 303
        assert r.headers["location"] == "/login?next=%2Funits%2Fsite-0000%3Fx%3D1"
        page = c.get(r.headers["location"]).text
        assert 'name="next" value="/units/site-0000?x=1"' in page
        r = c.post("/login", data={"name": "alice", "password": PASSWORD,
                                   "csrf": csrf_in(page), "next": "/units/site-0000?x=1"},
                   follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == "/units/site-0000?x=1"


@pytest.mark.parametrize("target", [
    "//evil.example/x", "/\\evil.example", "/x\\y", "https://evil.example/", "javascript:alert(1)",
    "/\t/evil.example", "/ /evil.example", "/x\r\nSet-Cookie: a=b", "/\x85x", "/login",
    "/logout", "", "evil", "/" + "a" * 2001,
])  # fmt: skip
def test_a_login_sends_nobody_to_another_site(tmp_path, target):
    db = str(tmp_path / "c.db")
    build_console_db(db)
    with TestClient(create_console(db)) as c:
        page = c.get("/login", params={"next": target}).text
        assert 'name="next"' not in page
        bad = c.post("/login", data={"name": "alice", "password": "wrong",
                                     "csrf": csrf_in(page), "next": target})  # fmt: skip
        assert bad.status_code == 401 and 'name="next"' not in bad.text
        r = c.post("/login", data={"name": "alice", "password": PASSWORD,
                                   "csrf": csrf_in(page), "next": target},
                   follow_redirects=False)  # fmt: skip
        assert r.status_code == 303 and r.headers["location"] == "/alarms"
