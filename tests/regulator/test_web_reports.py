"""The console's weekly reports (regulator/web/reportpages.py) through Starlette's TestClient,
hostile first: a street account, another district's account, path traversal, weeks that are
not one, a file changed or gone on disk; then the district's and the city's accounts (a viewer
too) reading the list, the page the robots' link leads to, and both files as they were made.

    xuhui: alice (dispatcher), xv (viewer)    minhang: min (viewer)
    sh (the city): chen (admin), vera (viewer)    xuhui-tianping (a street): tom
"""

from __future__ import annotations

import datetime
import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from gasguard.regulator.notify import messages
from gasguard.regulator.reports import schedule
from gasguard.regulator.store import now, open_store
from gasguard.regulator.web import accounts
from gasguard.regulator.web.app import create_console

from .test_reports import fake_pdf
from .web_fixture import PASSWORD, build_console_db, log_in

BASE = "https://console.example.gov.cn"
NOW = datetime.datetime(2026, 11, 30, 1, 0, tzinfo=datetime.UTC)  # 2026-W48 just ended
XUHUI, MINHANG = "/reports/xuhui/2026-W48", "/reports/minhang/2026-W48"


@pytest.fixture
def console(db_url, tmp_path):
    build_console_db(db_url, sites=4)
    s = open_store(db_url)
    for name, node in (("xv", "xuhui"), ("min", "minhang")):
        accounts.add(s, name, "viewer", node, PASSWORD, "test", now())
    schedule.enqueue_due(s, NOW, [("wecom", "")], tmp_path / "reports", console_url=BASE,
                         printer=fake_pdf)  # fmt: skip
    links = {r["subject"]: json.loads(r["body"])["link"] for r in s.rows(
        "SELECT subject, body FROM notify_outbox")}  # fmt: skip
    files = {r["district"]: r for r in s.rows("SELECT * FROM weekly_reports")}
    s.close()
    app = create_console(db_url)
    made = []

    def user(name: str | None) -> TestClient:
        c = TestClient(app)
        c.__enter__()
        made.append(c)
        assert name is None or log_in(c, name).status_code == 303
        return c

    yield user, links, files
    for c in made:
        c.__exit__(None, None, None)


def test_a_street_account_reads_no_report_of_its_district(console):
    user, _, _ = console
    tom = user("tom")
    assert 'href="/reports"' not in tom.get("/alarms").text
    for path in ("/reports", XUHUI, XUHUI + ".pdf", XUHUI + ".xlsx", MINHANG + ".pdf"):
        assert tom.get(path).status_code == 404, path


def test_another_districts_account_gets_404(console):
    user, _, _ = console
    m = user("min")
    for path in (XUHUI, XUHUI + ".pdf", XUHUI + ".xlsx"):
        r = m.get(path)
        assert r.status_code == 404 and "没有此周报" in r.text, path
    listed = m.get("/reports").text
    assert MINHANG + ".pdf" in listed and XUHUI not in listed


REFUSED = [
    ("/reports/..%2F..%2Fetc/passwd.pdf", 400),  # "passwd" is no week
    ("/reports/xuhui%2F..%2F..%2F/2026-W48.pdf", 404),
    ("/reports/%2Fetc%2Fpasswd/2026-W48.pdf", 404),
    ("/reports/xuhui/2026-W48.pdf%2F..%2F..%2Fnotify.toml", 404),
    ("/reports/xu%00hui/2026-W48.pdf", 404),  # PostgreSQL refuses a NUL: never a 500
    ("/reports//2026-W48.pdf", 404),
    ("/reports/xuhui/2026-W48.PDF", 404),
    ("/reports/xuhui/2026-W48.html", 404),
    ("/reports/xuhui/2026-W48.pdf.exe", 404),
    ("/reports/xuhui/2026-W47.pdf", 404),  # a week no report was made for
    ("/reports/xuhui/2026-W99.pdf", 400),
    ("/reports/xuhui/2025-W53.xlsx", 400),  # 2025 has no week 53
    ("/reports/xuhui/2026-W4.pdf", 400),
    ("/reports/xuhui/%202026-W48.pdf", 400),  # parse() strips it: not this week's own name
    ("/reports/xuhui/%EF%BC%92%EF%BC%90%EF%BC%92%EF%BC%96-W48.pdf", 400),  # full-width digits
    ("/reports/xuhui/2026-w48", 400),
    ("/reports/xuhui/" + "9" * 5000 + ".pdf", 400),
]  # fmt: skip


def test_paths_that_are_not_a_report_are_refused(console):
    user, _, _ = console
    chen = user("chen")  # the city's: were any of these served, it would be to this account
    for path, status in REFUSED:
        r = chen.get(path)
        assert r.status_code == status, (path, r.text[:200])
        assert "attachment" not in r.headers.get("content-disposition", "")


def test_a_file_changed_or_gone_on_disk_is_not_served(console):
    user, _, files = console
    c = user("alice")
    pdf, xlsx = Path(files["xuhui"]["pdf"]), Path(files["xuhui"]["xlsx"])
    pdf.write_bytes(pdf.read_bytes() + b"<!-- altered -->")
    r = c.get(XUHUI + ".pdf")
    assert r.status_code == 410 and "不符" in r.text
    xlsx.unlink()
    r = c.get(XUHUI + ".xlsx")
    assert r.status_code == 410 and "已不在" in r.text


def test_not_logged_in_is_sent_to_the_login(console):
    user, _, _ = console
    anon = user(None)
    for path in ("/reports", XUHUI, XUHUI + ".pdf"):
        r = anon.get(path, follow_redirects=False)
        assert r.status_code == 303 and r.headers["location"].startswith("/login?next=")


@pytest.mark.parametrize("name", ["alice", "xv", "chen", "vera"])
def test_the_district_and_the_city_read_and_download_it(console, name):
    user, links, files = console
    c = user(name)
    assert 'href="/reports"' in c.get("/alarms").text  # in the navigation
    listed = c.get("/reports")
    assert listed.status_code == 200 and XUHUI + ".xlsx" in listed.text
    assert (MINHANG in listed.text) == (name in ("chen", "vera"))
    # the robots' link leads to the district week's page, which offers both files
    link = links["report:xuhui/2026-W48"]
    assert link == BASE + XUHUI
    page = c.get(urllib.parse.urlsplit(link).path)
    assert page.status_code == 200 and 'href="%s.pdf"' % XUHUI in page.text
    assert "Alarms" in page.text and "周报" in page.text
    for fmt, mime in (("pdf", "application/pdf"), ("xlsx", "application/vnd.openxmlformats-"
                                                   "officedocument.spreadsheetml.sheet")):
        r = c.get(XUHUI + "." + fmt)
        path = Path(files["xuhui"][fmt])
        assert r.status_code == 200 and r.content == path.read_bytes()
        assert hashlib.sha256(r.content).hexdigest() == files["xuhui"][fmt + "_sha256"]
        assert r.headers["content-type"].startswith(mime)
        assert r.headers["x-content-type-options"] == "nosniff"
        assert r.headers["content-disposition"] == (
            "attachment; filename=\"____%s\"; filename*=UTF-8''%s"
            % (path.name[4:], urllib.parse.quote(path.name)))
        assert path.name.startswith("燃气周报_")


def test_a_link_made_from_a_district_id_with_slashes_and_dots_is_one_segment():
    from gasguard.regulator.reports import made

    shanghai = urllib.parse.quote("上海市")
    assert made.page("上海市/..", "2026-W48") == "/reports/%s%%2F../2026-W48" % shanghai
    assert made.link(BASE + "/", "a/b", "2026-W48") == BASE + "/reports/a%2Fb/2026-W48"
    # what a robot shows: the link whole inside the markdown, its title made inert
    link = made.link(BASE, "a/b", "2026-W48")
    body = {"title": "周报 [x](http://evil)", "text": "t", "link": link}
    assert messages.markdown_of(body).endswith("](%s/reports/a%%2Fb/2026-W48)" % BASE)
    assert "[x]" not in messages.markdown_of(body)

