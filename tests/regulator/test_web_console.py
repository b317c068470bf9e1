"""The web console (regulator/web) through Starlette's TestClient on both backends: logins,
roles, scope (pages and the JSON API), CSRF, the hazard forms, the language switch, and the
`user` command. The browser tests (test_web_browser.py) drive the same pages in Chromium."""

from __future__ import annotations

import datetime
import re

import pytest
from starlette.testclient import TestClient

from gasguard.regulator import audit
from gasguard.regulator.store import open_store
from gasguard.regulator.web.app import create_console
from gasguard.tools.cli import main as cli

from .web_fixture import PASSWORD, SOON, build_console_db, csrf_in, hazard_of, log_in


@pytest.fixture
def console(db_url):
    build_console_db(db_url)
    with TestClient(create_console(db_url)) as client:
        yield client


@pytest.fixture
def as_user(db_url, console):
    """A logged-in client per account name (each its own cookies)."""
    made = []

    def make(name: str) -> TestClient:
        c = TestClient(console.app)
        c.__enter__()
        made.append(c)
        assert log_in(c, name).status_code == 303
        return c

    yield make
    for c in made:
        c.__exit__(None, None, None)


def test_nothing_without_a_login(console):
    r = console.get("/alarms", follow_redirects=False)
    assert r.status_code == 303 and r.headers["location"] == "/login?next=%2Falarms"
    for path in ("/api/overview", "/api/incidents", "/api/sites/site-0000", "/api/rejected"):
        assert console.get(path).status_code == 401, path
    assert console.get("/static/console.css").status_code == 200  # assets: no login


def test_wrong_password_unknown_name_and_disabled_account(console, db_url):
    assert log_in(console, "alice", "wrong password!").status_code == 401
    assert log_in(console, "nobody", PASSWORD).status_code == 401
    assert log_in(console, "alice", "x" * 100_000).status_code == 401  # no CPU burnt on it
    assert console.get("/alarms", follow_redirects=False).status_code == 303
    assert log_in(console, "alice").status_code == 303
    assert console.get("/alarms").status_code == 200
    store = open_store(db_url)
    from gasguard.regulator.web import accounts

    accounts.disable(store, "alice", "test", "2026-11-30T00:00:00.000Z")
    store.close()
    # the session is still signed, but the account is read again: out at the next request
    assert console.get("/alarms", follow_redirects=False).status_code == 303
    assert log_in(console, "alice").status_code == 401


def test_a_post_without_this_sessions_csrf_token_is_refused(console, as_user, db_url):
    assert console.post("/login", data={"name": "alice", "password": PASSWORD}).status_code == 403
    alice = as_user("alice")
    h = hazard_of(db_url, "site-0000")
    form = {"to": "王师傅", "deadline": SOON + "T18:00"}
    assert alice.post("/hazards/%d/dispatch" % h["id"], data=form).status_code == 403
    other = as_user("bob")  # a token, but another session's
    bad = dict(form, csrf=csrf_in(other.get("/hazards").text))
    assert alice.post("/hazards/%d/dispatch" % h["id"], data=bad).status_code == 403
    assert alice.post("/logout", data={}).status_code == 403
    assert hazard_of(db_url, "site-0000")["status"] == "open"


def test_a_dispatcher_dispatches_rectifies_and_someone_else_closes(as_user, db_url):
    alice, bob = as_user("alice"), as_user("bob")
    h = hazard_of(db_url, "site-0000")
    page = alice.get("/hazards").text
    assert 'action="/hazards/%d/dispatch"' % h["id"] in page
    token = csrf_in(page)

    def act(client, action, **data):
        return client.post("/hazards/%d/%s" % (h["id"], action),
                           data=dict(data, csrf=csrf_in(client.get("/hazards").text)))  # fmt: skip

    r = act(alice, "dispatch", to="王师傅", deadline=SOON + "T18:00")
    assert r.status_code == 200 and "隐患 %d 已派发" % h["id"] in r.text
    got = hazard_of(db_url, "site-0000")
    assert got["status"] == "dispatched" and got["responsible"] == "王师傅"
    assert got["deadline"] == SOON + "T10:00:00.000Z"  # 18:00 in Shanghai
    assert act(alice, "rectify", note="更换探测器").status_code == 200
    r = act(alice, "close", note="ok")  # whoever rectified it cannot sign it off
    assert "隐患 %d 由 alice 整改：验收签字须由他人进行" % h["id"] in r.text  # in Chinese
    alice.get("/lang/en")
    r = act(alice, "close", note="ok")
    assert "hazard %d was rectified by alice: whoever checks" % h["id"] in r.text
    assert hazard_of(db_url, "site-0000")["status"] == "rectified"
    r = act(bob, "close", note="现场核查合格")
    assert "已验收销号" in r.text
    got = hazard_of(db_url, "site-0000")
    assert got["status"] == "closed" and got["closed_by"] == "bob"
    store = open_store(db_url)
    log = audit.entries(store, "hazard:%d" % h["id"])
    store.close()
    assert [(e["actor"], e["action"]) for e in log][-3:] == [
        ("alice", "hazard.dispatch"),
        ("alice", "hazard.rectify"),
        ("bob", "hazard.close"),
    ]
    assert token  # the page carried one


def test_a_bad_deadline_or_unknown_action_changes_nothing(as_user, db_url):
    alice = as_user("alice")
    h = hazard_of(db_url, "site-0000")
    token = csrf_in(alice.get("/hazards").text)
    for deadline in ("tomorrow", "2000-01-01T00:00"):  # not a time; already past
        r = alice.post("/hazards/%d/dispatch" % h["id"],
                       data={"to": "王师傅", "deadline": deadline, "csrf": token})  # fmt: skip
        assert r.status_code == 200 and 'class="flash error"' in r.text
    r = alice.post("/hazards/%d/dispatch" % h["id"], data={"to": "", "csrf": token})
    assert 'class="flash error"' in r.text
    assert alice.post("/hazards/%d/delete" % h["id"], data={"csrf": token}).status_code == 404
    assert alice.post("/hazards/999999/close", data={"csrf": token}).status_code == 404
    assert hazard_of(db_url, "site-0000")["status"] == "open"


def test_a_viewer_sees_no_forms_and_its_post_is_403(as_user, db_url):
    vera = as_user("vera")
    page = vera.get("/hazards").text
    assert "site-0000" in page and '<form method="post" action="/hazards/' not in page
    h = hazard_of(db_url, "site-0000")
    r = vera.post("/hazards/%d/dispatch" % h["id"],
                  data={"to": "x", "csrf": csrf_in(page)})  # fmt: skip
    assert r.status_code == 403
    assert hazard_of(db_url, "site-0000")["status"] == "open"


def test_a_street_account_sees_its_street_only_in_pages_and_api(as_user, db_url):
    tom = as_user("tom")
    for path in ("/alarms", "/hazards?status=all", "/gateways"):
        page = tom.get(path).text
        assert "site-0001" in page, path
        for other in ("site-0000", "site-0002", "site-0003", "site-0005"):
            assert other not in page, (path, other)
    assert tom.get("/units/site-0001").status_code == 200
    assert tom.get("/units/site-0000").status_code == 404
    assert tom.get("/units/site-0006").status_code == 404  # no unit: the city's only
    assert tom.get("/units/site-0001%00").status_code == 404
    assert tom.get("/units/" + "x" * 5000).status_code == 404
    i = tom.get("/api/incidents", params={"state": "all"}).json()
    assert {x["site"] for x in i["incidents"]} == {"site-0001"} and i["total"] == 1
    assert [s["site"] for s in tom.get("/api/sites").json()["sites"]] == ["site-0001"]
    assert tom.get("/api/sites/site-0002").status_code == 404
    assert tom.get("/api/sites", params={"district": "minhang"}).json()["total"] == 0
    assert tom.get("/api/gateways").json()["total"] == 1
    assert tom.get("/api/rejected").status_code == 403
    o = tom.get("/api/overview").json()
    assert o["totals"]["units"] == 1 and o["totals"]["open_alarms"] == 1
    # the city's account sees every site, the unregistered ones too
    chen = as_user("chen")
    assert chen.get("/api/sites").json()["total"] == 8
    assert chen.get("/api/rejected").status_code == 200
    assert "site-0006" in chen.get("/gateways").text


def test_a_scoped_dispatcher_cannot_move_another_streets_hazard(as_user, db_url):
    tom = as_user("tom")
    h = hazard_of(db_url, "site-0002")
    token = csrf_in(tom.get("/hazards").text)
    r = tom.post("/hazards/%d/dispatch" % h["id"],
                 data={"to": "x", "deadline": SOON + "T00:00", "csrf": token})  # fmt: skip
    assert r.status_code == 404
    assert hazard_of(db_url, "site-0002")["status"] == "open"


def test_the_unit_page(as_user, db_url):
    store = open_store(db_url)
    with store.transaction():
        store.x("INSERT INTO unit_detectors (site, device, address, gas, location, "
                "calibration_due) VALUES ('site-0001', 'dev-00', 3, 'ng', '灶台上方', "
                "'2027-01-01')")  # fmt: skip
        store.x("INSERT INTO findings (site, subject, kind, detail, since) VALUES "
                "('site-0001', 'dev-00', 'wrong_position', 'too low', "
                "'2026-11-01T00:00:00.000Z')")  # fmt: skip
    store.close()
    page = as_user("tom").get("/units/site-0001").text
    assert "Restaurant site-0001" in page and "灶台上方" in page and "2027-01-01" in page
    assert "报警器安装位置不当" in page and "too low" in page
    assert "高报" in page and "未结束" in page  # its open high alarm, in the timeline


def test_chinese_first_english_on_switch(as_user):
    alice = as_user("alice")
    page = alice.get("/alarms").text
    assert '<html lang="zh-CN">' in page and "实时报警" in page and "高报" in page
    page = alice.get("/overview").text
    assert "合规率" in page and "超 5 分钟未确认" in page
    page = alice.get("/lang/en?next=/overview").text
    assert '<html lang="en">' in page and "City overview" in page and "全市概览" not in page
    assert "Compliance rate" in page and "Unacknowledged &gt; 5 min" in page
    assert alice.get("/lang/en?next=//evil.example/").headers.get("location") is None  # followed
    assert "/evil" not in str(alice.get("/lang/zh_CN?next=//evil.example/", follow_redirects=False)
                              .headers["location"])  # fmt: skip


def test_times_in_the_configured_zone(db_url):
    build_console_db(db_url)
    shown = {}
    for zone in ("UTC", "Asia/Shanghai"):
        with TestClient(create_console(db_url, zone=zone)) as c:
            log_in(c, "chen")
            page = c.get("/units/site-0004").text
        assert zone in page
        first = re.search(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", page).group(0)
        shown[zone] = datetime.datetime.fromisoformat(first)
    assert shown["Asia/Shanghai"] - shown["UTC"] == datetime.timedelta(hours=8)


def test_a_forged_or_foreign_session_cookie_is_no_login(console, db_url):
    import base64
    import json

    from itsdangerous import TimestampSigner

    body = base64.b64encode(json.dumps({"user": "chen", "csrf": "x"}).encode())
    forged = TimestampSigner("not the console's key").sign(body).decode()
    for cookie in (forged, "garbage", body.decode()):
        console.cookies.set("gasguard_console", cookie)
        assert console.get("/alarms", follow_redirects=False).status_code == 303
        assert console.get("/api/overview").status_code == 401
    console.cookies.clear()
    assert log_in(console, "chen\x00").status_code == 401
    assert log_in(console, "").status_code == 401


def test_hostile_form_values_change_nothing(as_user, db_url):
    alice = as_user("alice")
    h = hazard_of(db_url, "site-0000")
    token = csrf_in(alice.get("/hazards").text)
    url = "/hazards/%d/dispatch" % h["id"]
    for form in (
        {"to": "王师傅", "note": "x" * 100_000},  # a note is a paragraph, not a file
        {"to": "a\x00b"},
        {"to": "two\nlines"},
        {"to": "x" * 101},
        {"to": "王师傅", "deadline": "9999-99-99T99:99"},
    ):
        r = alice.post(url, data=dict(form, csrf=token))
        assert r.status_code == 200 and 'class="flash error"' in r.text, form
    assert alice.post("/hazards/abc/dispatch", data={"csrf": token}).status_code == 404
    assert alice.post("/hazards/%d/rectify" % h["id"], data={"csrf": token}).status_code == 200
    assert hazard_of(db_url, "site-0000")["status"] == "open"


def test_user_command(tmp_path, db_url, capsys):
    build_console_db(db_url)
    pw = tmp_path / "pw"
    pw.write_text("a long enough password\n")
    base = ["regulator", "user", "add", "--db", db_url, "--password-file", str(pw)]
    assert cli(base + ["--name", "li", "--role", "viewer", "--node", "minhang"]) == 0
    assert cli(base + ["--name", "li", "--role", "viewer", "--node", "minhang"]) == 2  # taken
    assert cli(base + ["--name", "wu", "--role", "viewer", "--node", "nowhere"]) == 2
    with pytest.raises(SystemExit):
        cli(base + ["--name", "wu", "--role", "root", "--node", "sh"])
    pw.write_text("short\n")
    assert cli(base + ["--name", "wu", "--role", "viewer", "--node", "sh"]) == 2
    assert cli(base[:-1] + [str(tmp_path / "none"), "--name", "wu", "--role", "viewer",
                            "--node", "sh"]) == 2  # fmt: skip
    err = capsys.readouterr().err
    assert "exists" in err and "no such node" in err and "password" in err
    store = open_store(db_url)
    (row,) = [e for e in audit.entries(store) if e["target"] == "user:li"]
    stored = store.rows("SELECT password FROM users WHERE name = 'li'")[0]["password"]
    store.close()
    assert row["action"] == "user.add" and row["after"]["role"] == "viewer"
    assert "password" not in row["after"] and stored.startswith("$argon2id$")
    assert cli(["regulator", "user", "list", "--db", db_url]) == 0
    assert "li" in capsys.readouterr().out


def test_every_refusal_the_console_can_show_is_in_the_chinese_catalog():
    """hazards.py's and opening.py's refusals reach the console's flash: each message id they
    raise has a Chinese translation with the same named values."""
    import ast
    from pathlib import Path

    from gasguard.regulator.web import i18n

    t = i18n.translations("zh_CN")
    root = Path(__file__).resolve().parents[2] / "regulator"
    raised = []
    for path in (root / "hazards.py", root / "opening.py", root / "web" / "app.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr",
                    None)) in ("WorkflowError", "Refusal") and node.args):  # fmt: skip
                raised.append(node.args[0].value)
    assert len(raised) >= 15
    for msgid in raised:
        said = t.gettext(msgid)
        assert said != msgid and re.search(r"[\u4e00-\u9fff]", said), msgid
        assert sorted(re.findall(r"%\((\w+)\)", said)) == sorted(
            re.findall(r"%\((\w+)\)", msgid)), msgid  # fmt: skip
