"""The city overview's chart and map and the compliance board in Debian's chromium (the session's
one browser, conftest.py), on the map's test city (map_fixture): what a person sees drawn, in
the colours the states have, filtered as they asked, and nothing from outside."""

from __future__ import annotations

import base64
import contextlib
import shutil

import pytest

from gasguard.regulator import geo

from .map_fixture import (
    MARKUP_NAME,
    PLACES,
    STATES,
    TOM,
    build_map_db,
    geojson_bytes,
    local_day,
    recent_times,
)
from .test_web_browser import logged_in

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip

COLORS = {"alarm": (0xD3, 0x2F, 0x2F), "offline": (0x75, 0x75, 0x75),
          "fault": (0xF5, 0x7C, 0x00), "noncompliant": (0xFB, 0xC0, 0x2D),
          "normal": (0x2E, 0x7D, 0x32)}  # fmt: skip (overview.js draws them so)


@contextlib.contextmanager
def console_at(db: str, **kw):
    from gasguard.regulator.web import serving
    from gasguard.regulator.web.app import create_console

    with serving.in_thread(create_console(db, **kw)) as base:
        yield base


@pytest.fixture(scope="module")
def city(tmp_path_factory):
    db = str(tmp_path_factory.mktemp("city") / "ledger.db")
    at = build_map_db(db)
    with console_at(db, boundaries=geo.parse(geojson_bytes())) as base:
        yield base, at


@pytest.fixture(scope="module")
def chen(browser, city):
    """The city's account, logged in once for the module (its browser cache keeps plotly.js)."""
    page = logged_in(browser, city[0], "chen")
    yield page
    page.context.close()


def colours_at(page, points: list[tuple[float, float]]) -> list[tuple[int, int, int]]:
    """The colours on screen at these page coordinates: one screenshot, read back through a 2D
    canvas (the browser decodes its own PNG)."""
    png = base64.b64encode(page.screenshot(full_page=True)).decode()
    return [tuple(c) for c in page.evaluate("""async ([png, points]) => {
        const img = new Image();
        img.src = 'data:image/png;base64,' + png;
        await img.decode();
        const c = document.createElement('canvas');
        c.width = img.width; c.height = img.height;
        const g = c.getContext('2d');
        g.drawImage(img, 0, 0);
        return points.map(([x, y]) => [...g.getImageData(Math.round(x), Math.round(y), 1, 1)
            .data.slice(0, 3)]);
    }""", [png, points])]  # fmt: skip


def close_to(got, want, tolerance=40) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(got, want, strict=True))


# what MapLibre has drawn of the units: a point's or a cluster's count of units (1 for a point)
DRAWN = """() => document.getElementById('unit-map')._fullLayout.map._subplot.map
    .queryRenderedFeatures().filter(f => f.layer.type === 'circle')
    .map(f => f.properties.point_count || 1)"""


def open_overview(page, units: int):
    """The overview, once its chart is drawn and its map shows `units` points or clusters."""
    page.goto("/overview")
    page.wait_for_selector("#alarm-chart[data-ready=district]")
    page.wait_for_selector("#unit-map[data-ready]")
    page.wait_for_function("(%s)().length === %d" % (DRAWN, units))


def texts(page, selector: str) -> list[str]:
    """The text of SVG elements (plotly's legend and ticks: not HTML, no inner_text)."""
    return page.evaluate("s => [...document.querySelectorAll(s)].map(e => e.textContent)",
                         selector)  # fmt: skip


def bars(page) -> list[float]:
    """Heights of the bars a person sees (a zero day draws none)."""
    return page.evaluate("""() => [...document.querySelectorAll('#alarm-chart .barlayer path')]
        .map(p => p.getBoundingClientRect().height).filter(h => h > 0.5)""")


def map_at(page, lon: float, lat: float) -> tuple[float, float]:
    """Where (lon, lat) is drawn, in page coordinates (MapLibre's own projection)."""
    return tuple(page.evaluate("""([lon, lat]) => {
        const gd = document.getElementById('unit-map');
        const p = gd._fullLayout.map._subplot.map.project([lon, lat]);
        const r = gd.querySelector('canvas').getBoundingClientRect();
        return [r.left + window.scrollX + p.x, r.top + window.scrollY + p.y];
    }""", [lon, lat]))  # fmt: skip


def hover(page, lon: float, lat: float) -> tuple[str, int]:
    """The mouse over (lon, lat): the hover label's text and how many links plotly made in it."""
    page.locator("#unit-map").scroll_into_view_if_needed()
    x, y = page.evaluate("""([lon, lat]) => {
        const gd = document.getElementById('unit-map');
        const p = gd._fullLayout.map._subplot.map.project([lon, lat]);
        const r = gd.querySelector('canvas').getBoundingClientRect();
        return [r.left + p.x, r.top + p.y];
    }""", [lon, lat])  # fmt: skip
    page.mouse.move(x, y)
    label = page.wait_for_selector("#unit-map .hoverlayer .hovertext")
    return label.text_content(), page.locator("#unit-map .hoverlayer a").count()


def test_the_chart_draws_alarms_per_day_by_district_and_in_total(chen, city):
    page, at = chen, city[1]
    open_overview(page, len(PLACES))
    # two days ago: Xuhui 3 (site-0000, site-0001 twice) and Minhang 1; five days ago: Minhang 1
    assert len(bars(page)) == 3
    assert sorted(texts(page, "#alarm-chart .legendtext")) == ["Minhang", "Xuhui"]
    ticks = texts(page, "#alarm-chart .xtick")
    days = {local_day(t)[5:] for _, t in recent_times(at)}
    assert days <= set(ticks) or len(ticks) < 30  # plotly thins the ticks on a narrow chart
    page.click("button[data-split=total]")
    page.wait_for_selector("#alarm-chart[data-ready=total]")
    heights = sorted(bars(page))
    assert len(heights) == 2 and heights[1] / heights[0] == pytest.approx(4, rel=0.05)


def test_the_map_shows_each_unit_in_its_states_colour_and_clusters_zoomed_out(chen, city):
    page, base = chen, city[0]
    outside = []

    def watch(r):
        if not r.url.startswith((base, "blob:", "data:")):
            outside.append(r.url)

    page.on("request", watch)
    open_overview(page, len(PLACES))
    legend = texts(page, "#unit-map .legendtext")
    assert set(legend) == {"报警 4", "离线 1", "故障 1", "不合规 2", "正常 1"}
    sites = sorted(PLACES)
    seen = colours_at(page, [map_at(page, PLACES[s][1], PLACES[s][0]) for s in sites])
    for site, got in zip(sites, seen, strict=True):
        assert close_to(got, COLORS[STATES[site]]), (site, STATES[site], got)
    assert "1 家单位" in page.locator("#map-note").inner_text()  # site-0009 has no place
    lat, lon = PLACES["site-0005"]
    text, links = hover(page, lon, lat)
    assert MARKUP_NAME in text and links == 0  # its registry name as written, no link made
    assert page.evaluate(DRAWN) == [1] * len(PLACES)  # each unit its own point
    page.evaluate("Plotly.relayout('unit-map', {'map.zoom': 6})")
    page.wait_for_function("(%s)().includes(4)" % DRAWN)  # the four alarms: one red circle
    assert sorted(page.evaluate(DRAWN)) == [1, 1, 1, 2, 4]  # and the two not compliant
    page.remove_listener("request", watch)
    assert outside == []  # no tiles, fonts or scripts from anywhere else


def test_a_street_account_sees_only_its_units_on_the_chart_the_map_and_the_board(browser, city):
    base, _ = city
    page = logged_in(browser, base, "tom")
    open_overview(page, len(TOM))
    assert len(bars(page)) == 1  # site-0001's two alarms, one bar
    drawn = page.evaluate("""() => document.getElementById('unit-map').data
        .flatMap(t => t.customdata)""")
    assert set(drawn) == TOM
    outline = page.evaluate("""() => document.getElementById('unit-map')._fullLayout.map
        .layers.map(l => l.source.features.map(f => f.properties.node))""")
    assert {n for layer in outline for n in layer} == {"xuhui", "xuhui-tianping"}
    page.goto("/compliance")
    assert set(page.locator("#board tbody tr").evaluate_all(
        "rows => rows.map(r => r.dataset.site)")) == {"site-0001", "site-0007", "site-0008"}
    text = page.locator("main").inner_text()
    assert not any(s in text for s in STATES if s not in TOM)
    page.context.close()


def test_the_board_filters_by_finding_and_district_and_links_to_the_unit(chen):
    page = chen
    page.goto("/compliance")

    def sites():
        return page.locator("#board tbody tr[data-site]").evaluate_all(
            "rows => rows.map(r => r.dataset.site)")

    assert sites()[0] == "site-0006"  # two kinds of finding: first
    assert set(sites()) == {"site-0001", "site-0006", "site-0007", "site-0008", "site-0009"}
    page.select_option("select[name=finding]", "no_detector")
    page.click("#board-filter button")
    page.wait_for_url("**finding=no_detector**")
    assert set(sites()) == {"site-0008", "site-0009"}
    page.select_option("select[name=district]", "minhang")
    page.click("#board-filter button")
    page.wait_for_url("**district=minhang**")
    assert sites() == ["site-0009"]
    assert page.locator("select[name=finding]").input_value() == "no_detector"  # kept
    page.locator("#board td.finding summary").first.click()
    assert "no_detector found" in page.locator("#board td.finding details").first.inner_text()
    page.click("#board a[href='/units/site-0009']")
    page.wait_for_url("**/units/site-0009")
    page.set_viewport_size({"width": 375, "height": 700})  # a phone: no sideways page scroll
    try:
        for path in ("/compliance", "/overview"):
            page.goto(path)
            if path == "/overview":
                page.wait_for_selector("#unit-map[data-ready]")
            assert page.evaluate("document.documentElement.scrollWidth") <= 375, path
    finally:
        page.set_viewport_size({"width": 1280, "height": 720})
