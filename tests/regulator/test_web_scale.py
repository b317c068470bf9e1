"""The console at a city's scale in the real browser: 50,000 units seeded once per backend for
the module (tools/bench/city_rows.py, bulk inserts), the pages a city's account and a street's
open show the whole city's counts, page through the ledger, and a street sees its street only.
How fast they load is `gasguard bench web`'s to measure (docs/bench/web.json), not a test's:
test_bench_web.py runs that command small."""

from __future__ import annotations

import contextlib
import csv
import io
import os
import re
import shutil

import pytest

from gasguard.regulator.store import open_store
from gasguard.regulator.web import serving
from gasguard.regulator.web.app import LIST_LIMIT, create_console
from gasguard.regulator.web.ledger import PAGE
from gasguard.tools.bench import city_rows

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip
UNITS = 50_000


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def city(request, tmp_path_factory):
    """(base URL, what was seeded, the street account's sites), the console serving it."""
    if request.param == "sqlite":
        url = str(tmp_path_factory.mktemp("city") / "city.db")
    else:
        url = request.getfixturevalue("postgres").create_database("scale_%d" % os.getpid())
    store = open_store(url, create=True)
    try:
        seeded = city_rows.seed(store, UNITS)
        street = {r[0] for r in store.x("SELECT site FROM units WHERE node LIKE ?",
                                        (city_rows.node_path(0, 0) + "/%",)).fetchall()}
        hazards = store.x("SELECT count(*) FROM hazards WHERE status <> 'closed'").fetchone()[0]
    finally:
        store.close()
    with serving.in_thread(create_console(url)) as base:
        yield base, dict(seeded, open_hazards=hazards), street


@contextlib.contextmanager
def logged_in(browser, base: str, name: str):
    ctx = browser.new_context(base_url=base, locale="zh-CN")
    page = ctx.new_page()
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", city_rows.PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/alarms")
    try:
        yield page
    finally:
        ctx.close()


def number(text: str) -> int:
    return int(text.replace(",", "").strip())


def test_the_city_account_sees_the_whole_city(browser, city):
    base, seeded, _ = city
    with logged_in(browser, base, city_rows.CITY_ACCOUNT) as page:
        assert page.locator("#alarm-rows tr[data-event]").count() == min(seeded["open_alarms"],
                                                                         LIST_LIMIT)
        page.goto("/overview")
        foot = page.locator("#overview tfoot th").all_inner_texts()
        assert number(foot[1]) == UNITS and number(foot[2]) == 2 * UNITS
        assert number(foot[4]) == seeded["open_alarms"]
        assert page.locator("#overview tbody tr").count() == city_rows.DISTRICTS
        page.goto("/gateways")
        assert number(page.locator("h1 small").inner_text()) == UNITS
        assert page.locator("#gateways tbody tr").count() == LIST_LIMIT
        page.goto("/hazards")  # the ledger: its total, a page of it, and the next page
        assert number(page.locator("#total").inner_text()) == seeded["open_hazards"]
        first = page.locator("#hazards tbody tr").evaluate_all("rs => rs.map(r => r.id)")
        assert len(first) == PAGE
        page.click("#next")
        page.wait_for_url("**/hazards?page=2")
        second = page.locator("#hazards tbody tr").evaluate_all("rs => rs.map(r => r.id)")
        assert len(second) == PAGE and not set(first) & set(second)
        r = page.request.get("/hazards/export.csv")
        rows = list(csv.reader(io.StringIO(r.body().decode("utf-8-sig"))))
        assert len(rows) - 1 == seeded["open_hazards"]


def test_a_street_account_sees_its_street_only_at_scale(browser, city):
    base, _, street = city
    with logged_in(browser, base, city_rows.STREET_ACCOUNT) as page:
        for path in ("/alarms", "/hazards?status=all", "/gateways"):
            page.goto(path)
            linked = set(re.findall(r'href="/units/([^"]+)"', page.content()))
            assert linked and linked <= street, path
        page.goto("/overview")
        assert number(page.locator("#overview tfoot th").nth(1).inner_text()) == len(street)
        r = page.request.get("/hazards/export.csv?status=all")
        sites = {row[3] for row in csv.reader(io.StringIO(r.body().decode("utf-8-sig")))}
        assert sites - {"站点编号"} <= street
        assert page.goto("/units/" + city_rows.site_of(8)).status == 404  # the next street's
