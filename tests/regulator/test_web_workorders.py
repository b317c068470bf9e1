"""The console's triage and work-order pages (regulator/web/workpages.py) through Starlette's
TestClient, hostile first: forms with missing, oversized, control-character and script values,
replayed and CSRF-less posts, uploads that are not photos, a street account reaching for another
street's work order, photo or alarm by id, a viewer posting. What a user notices: the page's
message (in Chinese), the ledger unchanged, the photo's headers."""

from __future__ import annotations

import contextlib
import io
import re

import pytest
from PIL import Image
from starlette.testclient import TestClient

from gasguard.regulator.store import open_store
from gasguard.regulator.web.app import create_console

from .web_fixture import SOON, build_console_db, csrf_in, log_in

EV0 = "dev-00:000000000000a000:1:1"  # site-0000 (xuhui): alice, bob, chen; not tom
EV1 = "dev-00:000000000000a001:1:1"  # site-0001 (tom's street)


def jpeg(size=(64, 48)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 40, 40)).save(buf, "JPEG")
    return buf.getvalue()


@contextlib.contextmanager
def logged_in_users(db_url, tmp_path, **console_kw):
    """user(name): a client of one console over the sample city, logged in as name, with its
    CSRF token; every client closed at the end."""
    build_console_db(db_url)
    app = create_console(db_url, photo_dir=tmp_path / "photos", **console_kw)
    made = []

    def user(name: str) -> TestClient:
        c = TestClient(app)
        c.__enter__()
        made.append(c)
        assert log_in(c, name).status_code == 303
        c.token = csrf_in(c.get("/alarms").text)
        return c

    try:
        yield user
    finally:
        for c in made:
            c.__exit__(None, None, None)


@pytest.fixture
def console(db_url, tmp_path):
    with logged_in_users(db_url, tmp_path) as user:
        yield user, db_url, tmp_path / "photos"


def q(db: str, sql: str, params=()) -> list[dict]:
    s = open_store(db)
    try:
        return s.rows(sql, params)
    finally:
        s.close()


def triage_form(c, event=EV0, site="site-0000", **kw) -> dict:
    form = {"csrf": c.token, "site": site, "device": "dev-00", "event": event, "verdict": "real",
            "reason": "现场有燃气味", "to": "王师傅", "deadline": SOON + "T18:00"}  # fmt: skip
    form.update(kw)
    return {k: v for k, v in form.items() if v is not None}


def dispatched(c, event=EV0, site="site-0000") -> int:
    r = c.post("/triage", data=triage_form(c, event, site), follow_redirects=False)
    assert r.status_code == 303, r.text
    return int(r.headers["location"].rsplit("/", 1)[1])


def arrived_with_photo(c, wo: int) -> str:
    assert c.post("/workorders/%d/arrive" % wo, data={"csrf": c.token}).status_code == 200
    r = c.post("/workorders/%d/photos" % wo, data={"csrf": c.token},
               files=[("photo", ("x.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert "照片已上传" in r.text
    return re.search(r"/photos/([0-9a-f]{64})", r.text).group(1)


def test_the_alarm_page_offers_triage_and_shows_the_verdict(console):
    user, db, _ = console
    alice = user("alice")
    assert "/triage?site=site-0000" in alice.get("/alarms").text
    wo = dispatched(alice)
    page = alice.get("/workorders/%d" % wo).text
    assert "报警已研判" in page and "王师傅" in page and "已派发" in page
    rows = alice.get("/alarms").text
    assert "真实泄漏" in rows and 'href="/workorders/%d"' % wo in rows
    assert "工单" in alice.get("/hazards").text
    assert q(db, "SELECT via FROM alarm_acks WHERE site = 'site-0000'") == [{"via": "triage"}]


@pytest.mark.parametrize("change, says", [
    ({"verdict": "leak"}, "研判结果：请选择"),
    ({"verdict": None}, "研判结果：请选择"),
    ({"reason": ""}, "研判理由：必须填写"),
    ({"reason": "x" * 501}, "研判理由：最多 500 个字符"),
    ({"reason": "a\x00b"}, "研判理由：含有控制字符"),
    ({"to": ""}, "请填写接单人"),
    ({"to": "王" * 101}, "整改责任人"),
    ({"deadline": "2020-01-01T00:00"}, "已过"),
    ({"deadline": "2099-01-01T00:00"}, "365"),
    ({"deadline": "not a time"}, "请填写日期和时间"),
])  # fmt: skip
def test_a_bad_triage_form_is_said_in_chinese_and_changes_nothing(console, change, says):
    user, db, _ = console
    alice = user("alice")
    r = alice.post("/triage", data=triage_form(alice, **change))
    assert r.status_code == 200 and says in r.text, r.text[-1500:]
    assert q(db, "SELECT * FROM alarm_triage") == [] and q(db, "SELECT * FROM work_orders") == []


def test_script_in_a_reason_or_result_is_shown_as_text(console):
    user, _, _ = console
    alice, bob = user("alice"), user("bob")
    xss = '<script>alert("x")</script><img src=x onerror=alert(1)>'
    r = alice.post("/triage", data=triage_form(alice, reason=xss, verdict="fault"))
    assert "<script>alert" not in r.text and "&lt;script&gt;" in r.text
    wo = int(str(r.url).rsplit("/", 1)[1])
    arrived_with_photo(bob, wo)
    bob.post("/workorders/%d/report" % wo, data={"csrf": bob.token, "result": xss})
    page = alice.get("/workorders/%d" % wo).text
    assert "<img src=x" not in page and page.count("&lt;script&gt;") == 2


def test_a_replayed_triage_or_step_is_refused_once_said(console):
    user, db, _ = console
    alice = user("alice")
    wo = dispatched(alice)
    r = alice.post("/triage", data=triage_form(alice, verdict="false"))
    assert "已由 alice" in r.text and "研判为“真实泄漏”" in r.text
    alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    r = alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    assert "当前为“已到场”，现在不能登记到场" in r.text
    assert len(q(db, "SELECT 1 FROM audit WHERE action = 'workorder.arrive'")) == 1


def test_the_same_person_cannot_re_inspect_however_spelt(console):
    user, db, _ = console
    alice, bob, chen = user("alice"), user("bob"), user("chen")
    wo = dispatched(chen)  # to 王师傅
    arrived_with_photo(alice, wo)
    alice.post("/workorders/%d/report" % wo, data={"csrf": alice.token, "result": "已修复"})
    r = alice.post("/workorders/%d/reinspect" % wo, data={"csrf": alice.token, "outcome": "pass"})
    assert "须由他人复核" in r.text
    assert q(db, "SELECT status FROM work_orders") == [{"status": "done"}]
    r = bob.post("/workorders/%d/reinspect" % wo, data={"csrf": bob.token, "outcome": "maybe"})
    assert "复核结论" in r.text
    r = bob.post("/workorders/%d/reinspect" % wo, data={"csrf": bob.token, "outcome": "pass"})
    assert "复核合格，隐患已销号" in r.text
    assert q(db, "SELECT h.status, h.closed_by FROM hazards h JOIN work_orders w "
                 "ON w.hazard = h.id") == [{"status": "closed", "closed_by": "bob"}]  # fmt: skip


def test_without_the_csrf_token_or_as_a_viewer_nothing_changes(console):
    user, db, _ = console
    alice, vera = user("alice"), user("vera")
    form = triage_form(alice)
    form.pop("csrf")
    assert alice.post("/triage", data=form).status_code == 403
    assert vera.post("/triage", data=triage_form(vera)).status_code == 403
    wo = dispatched(alice)
    for step in ("arrive", "report", "reinspect"):
        assert alice.post("/workorders/%d/%s" % (wo, step), data={}).status_code == 403
        assert vera.post("/workorders/%d/%s" % (wo, step),
                         data={"csrf": vera.token}).status_code == 403  # fmt: skip
    files = [("photo", ("x.jpg", jpeg(), "image/jpeg"))]
    assert alice.post("/workorders/%d/photos" % wo, files=files).status_code == 403
    assert vera.post("/workorders/%d/photos" % wo, data={"csrf": vera.token},
                     files=files).status_code == 403  # fmt: skip
    page = vera.get("/workorders/%d/phone" % wo).text
    assert "<form method=\"post\" action=\"/workorders" not in page  # she reads, no forms
    assert q(db, "SELECT status FROM work_orders") == [{"status": "dispatched"}]


def test_a_street_account_reaches_no_other_streets_alarm_work_order_or_photo(console):
    user, db, _ = console
    alice, tom = user("alice"), user("tom")
    wo = dispatched(alice)  # site-0000: not tom's street
    sha = arrived_with_photo(alice, wo)
    for path in ("/workorders/%d" % wo, "/workorders/%d/phone" % wo,
                 "/workorders/%d/photos/%s" % (wo, sha),
                 "/triage?site=site-0000&device=dev-00&event=" + EV0):  # fmt: skip
        assert tom.get(path).status_code == 404, path
    assert "site-0000" not in tom.get("/workorders").text
    for n in ("9223372036854775808", "0", "-1"):  # past what the database holds, or none
        assert alice.get("/workorders/%s" % n).status_code == 404
    assert tom.post("/triage", data=triage_form(tom, verdict="false")).status_code == 404
    for step in ("arrive", "report", "reinspect"):
        assert tom.post("/workorders/%d/%s" % (wo, step),
                        data={"csrf": tom.token, "result": "x"}).status_code == 404  # fmt: skip
    assert tom.post("/workorders/%d/photos" % wo, data={"csrf": tom.token},
                    files=[("photo", ("x.jpg", jpeg((9, 9)), "image/jpeg"))]
                    ).status_code == 404  # fmt: skip
    assert len(q(db, "SELECT 1 FROM work_order_photos")) == 1
    mine = dispatched(tom, EV1, "site-0001")  # his own street's alarm he may
    assert tom.get("/workorders/%d" % mine).status_code == 200


def test_a_photo_comes_back_as_an_image_that_is_never_sniffed(console):
    user, db, photo_dir = console
    alice = user("alice")
    wo = dispatched(alice)
    sha = arrived_with_photo(alice, wo)
    r = alice.get("/workorders/%d/photos/%s" % (wo, sha))
    assert r.status_code == 200 and r.content == jpeg()
    assert r.headers["content-type"] == "image/jpeg"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert (photo_dir / sha[:2] / sha).read_bytes() == jpeg()
    entry = q(db, "SELECT after FROM audit WHERE action = 'workorder.photo'")[0]["after"]
    assert sha in entry
    for bad in ("../../../etc/passwd", "%2e%2e%2f%2e%2e%2fetc%2fpasswd", "A" * 64, sha[:63]):
        assert alice.get("/workorders/%d/photos/%s" % (wo, bad)).status_code == 404, bad
    assert alice.get("/workorders/%d/photos/%s" % (wo + 1, sha)).status_code == 404


@pytest.mark.parametrize("files, says", [
    ([("photo", ("a.jpg", b"", "image/jpeg"))], "照片：文件为空"),
    ([("photo", ("a.svg", b'<svg onload="alert(1)"/>', "image/svg+xml"))], "不是 JPEG"),
    ([("photo", ("a.jpg", b"<html><script>alert(1)</script>", "image/jpeg"))], "不是 JPEG"),
    ([("photo", ("a.jpg", jpeg() + b"<script>alert(1)</script>", "image/jpeg"))], "夹带网页标记"),
    ([("photo", ("a.jpg", jpeg((300, 200))[:400], "image/jpeg"))], "已损坏或不完整"),
    ([("photo", ("../../../../tmp/evil.php", b"<?php system($_GET[c]); ?>", "image/jpeg"))],
     "不是 JPEG"),
    ([], "请先拍照或选择照片"),
])  # fmt: skip
def test_an_upload_that_is_not_a_photo_is_refused_and_nothing_is_kept(console, files, says):
    user, db, photo_dir = console
    alice = user("alice")
    wo = dispatched(alice)
    alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    r = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token}, files=files or None)
    assert r.status_code == 200 and says in r.text
    assert q(db, "SELECT * FROM work_order_photos") == []
    assert not photo_dir.exists() or not any(p.is_file() for p in photo_dir.rglob("*"))


def test_too_many_or_too_large_uploads_are_refused_before_they_are_read(console):
    user, db, photo_dir = console
    alice = user("alice")
    wo = dispatched(alice)
    r = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token},
                   files=[("photo", ("p.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert "须在到场登记后于现场拍摄" in r.text  # not on site yet: refused, no file left
    assert not photo_dir.exists() or not any(p.is_file() for p in photo_dir.rglob("*"))
    alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    five = [("photo", ("%d.jpg" % i, jpeg((10 + i, 10)), "image/jpeg")) for i in range(5)]
    r = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token}, files=five)
    assert r.status_code == 400
    r = alice.post("/workorders/%d/photos" % wo, content=b"x" * 10,
                   headers={"Content-Length": str(40 * 2**20),
                            "Content-Type": "multipart/form-data; boundary=b"})  # fmt: skip
    assert r.status_code == 413
    assert q(db, "SELECT * FROM work_order_photos") == []


def test_the_result_needs_a_photo_and_a_failed_re_inspection_sends_a_new_order(console):
    user, db, _ = console
    alice, bob = user("alice"), user("bob")
    wo = dispatched(alice)
    alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    r = alice.post("/workorders/%d/report" % wo, data={"csrf": alice.token, "result": "好了"})
    assert "请先上传至少一张现场照片" in r.text
    arrived_photo = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token},
                               files=[("photo", ("p.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert "照片已上传" in arrived_photo.text
    alice.post("/workorders/%d/report" % wo, data={"csrf": alice.token, "result": "好了"})
    r = bob.post("/workorders/%d/reinspect" % wo, data={
        "csrf": bob.token, "outcome": "fail", "note": "仍有泄漏", "to": "李四",
        "deadline": SOON + "T12:00"})  # fmt: skip
    assert "复核不合格，已重新派发工单" in r.text and "李四" in r.text
    assert [r["status"] for r in q(db, "SELECT status FROM work_orders ORDER BY id")] == [
        "failed", "dispatched"]  # fmt: skip


def test_every_refusal_of_triage_and_work_orders_is_in_the_chinese_catalog():
    """What triage.py, workorders.py, photos.py and the pages raise reaches the flash: each
    message id has a Chinese translation with the same named values, and each value the page
    translates (a verdict, a work order's state, a step, a field) has one too."""
    import ast
    from pathlib import Path

    from gasguard.regulator import photos, triage, workorders
    from gasguard.regulator.web import i18n

    t = i18n.translations("zh_CN")
    root = Path(__file__).resolve().parents[2] / "regulator"
    raised = []
    for path in ("triage.py", "workorders.py", "photos.py", "web/workpages.py", "hazards.py"):
        for node in ast.walk(ast.parse((root / path).read_text())):
            if (isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr",
                    None)) in ("OrderError", "TriageError", "PhotoError", "WorkflowError")
                    and node.args and isinstance(node.args[0], ast.Constant)):  # fmt: skip
                raised.append(node.args[0].value)
    assert len(raised) >= 30
    for msgid in raised:
        said = t.gettext(msgid)
        assert said != msgid and re.search(r"[\u4e00-\u9fff]", said), msgid
        assert sorted(re.findall(r"%\((\w+)\)", said)) == sorted(
            re.findall(r"%\((\w+)\)", msgid)), msgid  # fmt: skip
    named = [("verdict", v) for v in triage.VERDICTS]
    named += [("work order", s) for s in workorders.STATUSES]
    named += [("work order kind", k) for k in workorders.KINDS]
    named += [("step", s) for s in ("arrive", "report", "pass", "fail", "reassign")]
    named += [("field", f) for f in ("reason", "result", "note", "responsible", "photo")]
    for context, word in named:
        assert re.search(r"[\u4e00-\u9fff]", t.pgettext(context, word)), (context, word)
    assert photos.PER_POST <= photos.PER_ORDER


def test_an_open_work_order_goes_to_someone_else_and_the_old_one_is_reassigned(console):
    user, db, _ = console
    alice, tom = user("alice"), user("tom")
    wo = dispatched(alice)
    r = alice.post("/workorders/%d/redispatch" % wo, data={"csrf": alice.token, "to": "",
                                                           "deadline": ""})  # fmt: skip
    assert "整改责任人" in r.text
    assert tom.post("/workorders/%d/redispatch" % wo, data={
        "csrf": tom.token, "to": "x"}).status_code == 404  # fmt: skip
    r = alice.post("/workorders/%d/redispatch" % wo, data={
        "csrf": alice.token, "to": "李四", "deadline": SOON + "T09:00"})  # fmt: skip
    assert "已派发新工单，原工单已改派" in r.text and "李四" in r.text
    assert [(o["status"], o["responsible"]) for o in q(
        db, "SELECT status, responsible FROM work_orders ORDER BY id")] == [
        ("reassigned", "王师傅"), ("dispatched", "李四")]  # fmt: skip
    r = alice.post("/workorders/%d/redispatch" % wo, data={"csrf": alice.token, "to": "赵六"})
    assert "现在不能改派" in r.text


def test_a_photos_exif_is_kept_as_sent_but_its_time_is_never_believed(console):
    user, db, photo_dir = console
    alice = user("alice")
    wo = dispatched(alice)
    alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token})
    exif = Image.Exif()
    exif[0x0132] = "2001:01:01 08:00:00"  # DateTime: a camera's clock, or anyone's claim
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), (9, 9, 9)).save(buf, "JPEG", exif=exif.tobytes())
    sent = buf.getvalue()
    r = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token},
                   files=[("photo", ("IMG_0001.JPG", sent, "application/octet-stream"))])
    assert "照片已上传" in r.text
    row = q(db, "SELECT sha256, uploaded_at, mime FROM work_order_photos")[0]
    assert not row["uploaded_at"].startswith("2001") and row["mime"] == "image/jpeg"
    assert (photo_dir / row["sha256"][:2] / row["sha256"]).read_bytes() == sent  # unstripped
    assert "2001" not in alice.get("/workorders/%d" % wo).text
    unit = alice.get("/units/site-0000").text
    assert "真实泄漏" in unit and 'href="/workorders/%d"' % wo in unit


def test_a_photo_directory_that_cannot_be_written_is_said_not_a_500(console):
    # the disk full or the directory gone bad (here: a file where the directory should be):
    # the inspector on site got "Internal Server Error" and no idea whether the photo was kept
    user, db, photo_dir = console
    photo_dir.write_bytes(b"not a directory")
    alice = user("alice")
    wo = dispatched(alice)
    assert alice.post("/workorders/%d/arrive" % wo, data={"csrf": alice.token}).status_code == 200
    r = alice.post("/workorders/%d/photos" % wo, data={"csrf": alice.token},
                   files=[("photo", ("x.jpg", jpeg(), "image/jpeg"))])  # fmt: skip
    assert r.status_code == 200 and "照片未能保存" in r.text
    assert q(db, "SELECT count(*) AS n FROM work_order_photos") == [{"n": 0}]


@pytest.mark.parametrize("path", ["/login", "/triage", "/workorders/1/arrive"])
def test_a_form_post_of_megabytes_is_refused_before_it_is_read(console, path):
    # Starlette keeps an url-encoded form whole in memory: a 40 MB "reason" (or a login
    # form, before any account) was read in full, as many at once as a client cared to send
    user, db, _ = console
    alice = user("alice")
    body = b"csrf=" + alice.token.encode() + b"&reason=" + b"x" * (40 << 20)
    r = alice.post(path, content=body,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 413
    chunks = iter([b"csrf=x&reason=", *[b"y" * (1 << 20)] * 8])  # no Content-Length: counted
    r = alice.post(path, content=chunks,
                   headers={"Content-Type": "application/x-www-form-urlencoded"})  # fmt: skip
    assert r.status_code == 413
    assert q(db, "SELECT count(*) AS n FROM alarm_triage") == [{"n": 0}]
