"""The web console in a real browser: Debian's chromium, headless, driven by Playwright (never
`playwright install`: no browser is downloaded). One browser for the session (conftest.py), one
console and one ingest for the module; each account its own browser context (its own cookies).

A new alarm goes the ingest's way: published to a real mosquitto, stored by a running ingest,
then on the live-alarm page by SSE, without a reload, within 2 s."""

from __future__ import annotations

import contextlib
import itertools
import os
import shutil
import threading
import time

import pytest

from gasguard.tools.sim.brokers import Mosquitto, free_port

from .conftest import Ingest, Publisher, board_event
from .web_fixture import PASSWORD, SOON, build_console_db, hazard_of

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip


_groups = itertools.count(1)


@contextlib.contextmanager
def serving(db: str):
    """The console on a ledger that a running ingest writes to: (base URL, db, broker)."""
    import uvicorn

    from gasguard.regulator.web.app import create_console

    build_console_db(db)
    with Mosquitto() as broker:
        # a group of its own: another ingest on this machine (a parallel test run) is no clash
        group = "console-test-%d-%d" % (os.getpid(), next(_groups))
        ingest = Ingest(broker.url, db, "--group", group, "--node", group).start()
        port = free_port()
        server = uvicorn.Server(uvicorn.Config(create_console(db, poll_s=0.2), host="127.0.0.1",
                                               port=port, log_level="warning",
                                               timeout_graceful_shutdown=1))  # fmt: skip
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            assert time.monotonic() < deadline, "the console did not start"
            time.sleep(0.05)
        try:
            yield "http://127.0.0.1:%d" % port, db, broker
        finally:
            server.should_exit = True
            thread.join(10)
            ingest.stop()


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    """On SQLite, for every test here; the live path runs on PostgreSQL too (pg_site)."""
    with serving(str(tmp_path_factory.mktemp("console") / "ledger.db")) as s:
        yield s


@pytest.fixture(scope="module")
def pg_site(postgres):
    with serving(postgres.create_database("console_%d" % os.getpid())) as s:
        yield s


def logged_in(browser, base: str, name: str):
    ctx = browser.new_context(base_url=base, locale="zh-CN")
    page = ctx.new_page()
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/alarms")
    return page


def post_from(page, path: str, fields: dict) -> int:
    """A form POST from inside the page (its cookies), as a hand-made request would be."""
    return page.evaluate(
        "async ([path, fields]) => (await fetch(path, {method: 'POST', body: new "
        "URLSearchParams(fields), redirect: 'manual'})).status",
        [path, fields],
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_new_alarm_appears_on_the_live_page_within_2s_without_a_reload(
    browser, backend, request
):
    base, db, broker = request.getfixturevalue("site" if backend == "sqlite" else "pg_site")
    page = logged_in(browser, base, "chen")
    page.wait_for_selector("#live:text('实时')")  # the SSE stream is open
    before = page.locator("#alarm-rows tr[data-event]").count()
    page.evaluate("window.notReloaded = true")
    pub = Publisher(broker.port, "browser-test")
    try:
        pub.send(*board_event("site-0001", "dev-07", "alarm.high", 1, 1, lel=71.0,
                              inst="00000000000000b7"))  # fmt: skip
        sent = time.monotonic()
        row = page.locator("#alarm-rows tr[data-event]", has_text="dev-07")
        row.wait_for(timeout=2000)
        took = time.monotonic() - sent
    finally:
        pub.close()
    assert took < 2.0
    assert page.evaluate("window.notReloaded") is True
    assert page.locator("#alarm-rows tr[data-event]").count() == before + 1
    assert "site-0001" in row.inner_text() and "高报" in row.inner_text()
    assert page.locator("body").get_attribute("data-beeps") == "1"  # the cue, not muted
    page.click("#mute")
    assert page.locator("#mute").get_attribute("aria-pressed") == "true"
    row.locator("a[href^='/units/']").click()  # the unit; the other link is triage
    page.wait_for_url("**/units/site-0001")
    assert page.locator("#incidents tbody tr").count() >= 2
    page.context.close()


def test_a_dispatcher_dispatches_and_closes_through_the_forms(browser, site):
    base, db, _ = site
    h = hazard_of(db, "site-0000")
    alice = logged_in(browser, base, "alice")
    alice.goto("/hazards")
    row = alice.locator("#hazard-%d" % h["id"])
    row.locator("form.dispatch input[name=to]").fill("王师傅")
    row.locator("form.dispatch input[name=deadline]").fill(SOON + "T18:00")
    row.locator("form.dispatch button").click()
    alice.wait_for_selector(".flash:text('已派发')")
    assert "整改中" in row.locator(".status").inner_text()
    assert "王师傅" in row.inner_text()
    row.locator("form.rectify input[name=note]").fill("更换探测器")
    row.locator("form.rectify button").click()
    alice.wait_for_selector(".flash:text('已标记整改')")
    row.locator("form.close button").click()  # alice rectified it: she may not sign it off
    alice.wait_for_selector(".flash.error")
    assert "待验收" in row.locator(".status").inner_text()
    bob = logged_in(browser, base, "bob")
    bob.goto("/hazards")
    row = bob.locator("#hazard-%d" % h["id"])
    row.locator("form.close input[name=note]").fill("现场核查合格")
    row.locator("form.close button").click()
    bob.wait_for_selector(".flash:text('已验收销号')")
    assert bob.locator("#hazard-%d" % h["id"]).count() == 0  # closed: off the default list
    bob.goto("/hazards?status=all")
    assert "已销号" in bob.locator("#hazard-%d .status" % h["id"]).inner_text()
    assert hazard_of(db, "site-0000")["closed_by"] == "bob"
    alice.context.close()
    bob.context.close()


def test_a_viewer_sees_no_forms_and_cannot_post(browser, site):
    base, db, _ = site
    vera = logged_in(browser, base, "vera")
    vera.goto("/hazards")
    assert vera.locator("#hazards tbody tr").count() > 0
    assert vera.locator("#hazards form").count() == 0
    h = hazard_of(db, "site-0003")
    token = vera.locator("input[name=csrf]").first.get_attribute("value")
    fields = {"csrf": token, "to": "x", "deadline": SOON + "T00:00"}
    assert post_from(vera, "/hazards/%d/dispatch" % h["id"], fields) == 403
    assert hazard_of(db, "site-0003")["status"] == "open"
    vera.context.close()


def test_a_post_without_the_csrf_token_is_refused(browser, site):
    base, db, _ = site
    chen = logged_in(browser, base, "chen")
    h = hazard_of(db, "site-0003")
    assert post_from(chen, "/hazards/%d/dispatch" % h["id"],
                     {"to": "x", "deadline": SOON + "T00:00"}) == 403  # fmt: skip
    assert hazard_of(db, "site-0003")["status"] == "open"
    chen.context.close()


def test_a_street_account_never_sees_another_streets_units(browser, site):
    base, _, _ = site
    tom = logged_in(browser, base, "tom")
    others = ("site-0000", "site-0002", "site-0003", "site-0005")
    for path in ("/alarms", "/hazards?status=all", "/overview", "/gateways"):
        tom.goto(path)
        text = tom.locator("main").inner_text()
        assert not any(o in text for o in others), path
    tom.goto("/alarms")
    assert "site-0001" in tom.locator("#alarm-rows").inner_text()
    assert tom.goto("/units/site-0000").status == 404
    assert tom.goto("/api/sites/site-0002").status == 404
    r = tom.goto("/api/incidents?state=all")
    assert {i["site"] for i in r.json()["incidents"]} == {"site-0001"}
    assert tom.goto("/api/rejected").status == 403
    tom.context.close()


def test_the_english_switch(browser, site):
    base, _, _ = site
    page = logged_in(browser, base, "vera")
    assert page.locator("h1").inner_text() == "实时报警"
    page.click("#lang-en")
    page.wait_for_selector("h1:text('Live alarms')")
    assert page.locator("html").get_attribute("lang") == "en"
    page.goto("/hazards")
    assert page.locator("h1").inner_text() == "Hazard ledger"
    page.click("#lang-zh_CN")
    page.wait_for_selector("h1:text('隐患台账')")
    page.set_viewport_size({"width": 375, "height": 700})  # a phone: nothing wider than it
    page.goto("/alarms")
    assert page.evaluate("document.documentElement.scrollWidth") <= 375
    page.context.close()
