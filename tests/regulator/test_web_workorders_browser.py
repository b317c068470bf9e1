"""Issue 25's acceptance in a real browser (Debian's chromium through the session's `browser`
fixture, never `playwright install`): a dispatcher triages an alarm from the live page and
dispatches a work order, the inspector records the arrival and uploads a photo from a
phone-sized page (390×844, touch, `capture`), reports the result, and someone else re-inspects
and closes it. On SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import threading
import time

import pytest
from PIL import Image

from gasguard.tools.sim.brokers import free_port

from .web_fixture import PASSWORD, SOON, build_console_db

pytestmark = pytest.mark.skipif(not shutil.which("chromium"), reason="chromium not installed "
                                "(scripts/setup.sh installs it)")  # fmt: skip

EV = "dev-00:000000000000a000:1:1"


@contextlib.contextmanager
def serving(db: str, photo_dir):
    import uvicorn

    from gasguard.regulator.web.app import create_console

    build_console_db(db)
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_console(db, photo_dir=photo_dir),
                                           host="127.0.0.1", port=port, log_level="warning",
                                           timeout_graceful_shutdown=1))  # fmt: skip
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "the console did not start"
        time.sleep(0.05)
    try:
        yield "http://127.0.0.1:%d" % port
    finally:
        server.should_exit = True
        thread.join(10)


def log_in(browser, base: str, name: str, **context):
    ctx = browser.new_context(base_url=base, locale="zh-CN", **context)
    page = ctx.new_page()
    page.goto("/login")
    page.fill("input[name=name]", name)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/alarms")
    return page


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_triage_dispatch_phone_upload_result_and_re_inspection(browser, backend, request,
                                                               tmp_path):  # fmt: skip
    if backend == "sqlite":
        db = str(tmp_path / "ledger.db")
    else:
        db = request.getfixturevalue("postgres").create_database("wo_%d" % os.getpid())
    photo = tmp_path / "site.jpg"
    buf = io.BytesIO()
    Image.new("RGB", (640, 480), (40, 120, 200)).save(buf, "JPEG")
    photo.write_bytes(buf.getvalue())
    with serving(db, tmp_path / "photos") as base:
        # the duty dispatcher triages the alarm from the live page
        alice = log_in(browser, base, "alice")
        row = alice.locator("#alarm-rows tr[data-event='%s']" % EV)
        row.locator("a.triage-link").click()
        alice.wait_for_url("**/triage?**")
        alice.check("input[name=verdict][value=real]")
        alice.fill("textarea[name=reason]", "现场确认燃气味，探测器读数持续上升")
        alice.fill("input[name=to]", "王师傅")
        alice.fill("input[name=deadline]", SOON + "T18:00")
        alice.click("#triage button")
        alice.wait_for_selector(".flash:text('报警已研判')")
        assert "已派发" in alice.locator("#order .status").inner_text()
        assert "王师傅" in alice.locator("#order .responsible").inner_text()
        order_url = alice.url
        alice.goto("/alarms")
        assert "真实泄漏" in alice.locator("#alarm-rows tr[data-event='%s']" % EV).inner_text()

        # the inspector on a phone: arrival, a photo from the camera input, the result
        phone = log_in(browser, base, "chen", viewport={"width": 390, "height": 844},
                       device_scale_factor=3, is_mobile=True, has_touch=True)  # fmt: skip
        phone.goto(order_url + "/phone")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390
        phone.click("#arrive button")
        phone.wait_for_selector(".flash:text('已记录到场时间')")
        assert "已到场" in phone.locator(".status").inner_text()
        file_input = phone.locator("#upload input[type=file]")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390  # the upload form
        assert file_input.get_attribute("accept") == "image/*"
        assert file_input.get_attribute("capture") is not None
        file_input.set_input_files(str(photo))
        phone.click("#upload button")
        phone.wait_for_selector(".flash:text('照片已上传')")
        img = phone.locator("#photos img").first
        img.wait_for()
        phone.wait_for_function("img => img.complete && img.naturalWidth === 640",
                                arg=img.element_handle())  # fmt: skip
        phone.fill("#report textarea[name=result]", "关闭总阀，更换老化软管，复测无泄漏")
        phone.click("#report button")
        phone.wait_for_selector(".flash:text('处置结果已提交，等待复核')")
        assert phone.evaluate("document.documentElement.scrollWidth") <= 390

        # chen reported the result: he may not re-inspect it; bob, who took no part, may
        phone.goto(order_url)
        phone.check("input[name=outcome][value=pass]")
        phone.click("#reinspect button")
        phone.wait_for_selector(".flash.error:text('须由他人复核')")
        bob = log_in(browser, base, "bob")
        bob.goto(order_url)
        assert bob.locator("#photos img").count() == 1
        bob.check("input[name=outcome][value=pass]")
        bob.fill("#reinspect textarea[name=note]", "现场复核合格")
        bob.click("#reinspect button")
        bob.wait_for_selector(".flash:text('复核合格，隐患已销号')")
        assert "复核合格" in bob.locator("#order .status").inner_text()
        assert "已销号" in bob.locator("#order").inner_text()
        assert "bob" in bob.locator("#order .checked").inner_text()
        for page in (alice, phone, bob):
            page.context.close()
