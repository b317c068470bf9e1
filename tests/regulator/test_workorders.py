"""Triage and work orders in the ledger (regulator/triage.py, workorders.py, photos.py) on both
databases: each verdict does what it says, a work order moves its hazard, the sign-off rule and
the deadline cap hold, overdue work orders are listed for escalation, and photos are checked at
the boundary. The console's forms: test_web_workorders.py; the browser: *_browser.py."""

from __future__ import annotations

import datetime
import io
import threading

import pytest
from PIL import Image

from gasguard.regulator import audit, hazards, photos, triage, views, workorders
from gasguard.regulator.store import now, open_store

from .web_fixture import SOON, build_console_db

EV = "dev-00:000000000000a00%d:1:1"  # the fixture's incident on site-000N
DUE = SOON + "T10:00:00.000Z"


@pytest.fixture
def store(db_url):
    build_console_db(db_url)
    s = open_store(db_url)
    yield s
    s.close()


def alarm(n: int) -> tuple[str, str, str]:
    return "site-000%d" % n, "dev-00", EV % n


def jpeg(size=(64, 48), quality=85) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", size, (180, 40, 40)).save(buf, "JPEG", quality=quality)
    return buf.getvalue()


def png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (20, 20), (0, 90, 0)).save(buf, "PNG")
    return buf.getvalue()


def hazard(store, n: int) -> dict:
    return store.rows("SELECT * FROM hazards WHERE site = ?", ("site-000%d" % n,))[0]


def to_done(store, wo: int, by: str = "王师傅") -> None:
    workorders.arrive(store, wo, by, now())
    workorders.add_photos(store, wo, [photos.check(jpeg())], by, now())
    workorders.report(store, wo, "更换软管，复测正常", by, now())


def test_false_and_test_alarms_close_their_hazard_with_the_reason_and_stop_escalation(store):
    for n, verdict in ((0, "false"), (1, "test")):
        seen = views.fingerprint(store)
        t = triage.triage(store, *alarm(n), verdict, "厨师误触\n已核实", "alice", now())
        assert views.fingerprint(store) != seen  # the live pages hear of it
        h = hazard(store, n)
        assert t["verdict"] == verdict and t["work_order"] is None
        assert h["status"] == "closed" and h["closed_by"] == "alice"
        assert h["check_note"] == "%s: 厨师误触\n已核实" % verdict
        assert store.rows("SELECT via FROM alarm_acks WHERE site = ?", (alarm(n)[0],)) == [
            {"via": "triage"}]  # fmt: skip
        actions = [e["action"] for e in audit.entries(store)]
        assert "hazard.dismiss" in actions and "alarm.triage" in actions


def test_a_device_fault_opens_a_maintenance_work_order(store):
    t = triage.triage(store, *alarm(2), "fault", "探头漂移", "alice", now(), to="维保李工",
                      deadline=DUE)  # fmt: skip
    wo = workorders.get(store, t["work_order"])
    assert (wo["kind"], wo["status"]) == ("maintenance", "dispatched")
    assert wo["responsible"] == "维保李工"
    assert hazard(store, 2)["status"] == "dispatched"


def test_a_real_alarm_dispatches_and_runs_the_on_confirmed_hooks_in_its_transaction(store):
    called = []

    def hook(s, site, device, open_event, verdict, at):
        called.append((site, device, open_event, verdict))
        s.x("INSERT INTO regulator_meta VALUES ('hook-ran', ?)", (at,))  # the same transaction

    t = triage.triage(store, *alarm(0), "real", "现场有气味", "alice", now(), to="王师傅",
                      deadline=DUE, on_confirmed=[hook])  # fmt: skip
    assert called == [(*alarm(0), "real")] and store.meta("hook-ran")
    assert workorders.get(store, t["work_order"])["kind"] == "rectify"

    def broken(*_):
        raise RuntimeError("the forwarder failed")

    with pytest.raises(RuntimeError):  # the hook fails: nothing of this triage remains
        triage.triage(store, *alarm(1), "real", "x", "alice", now(), to="王师傅", deadline=DUE,
                      on_confirmed=[broken])  # fmt: skip
    assert triage.get(store, *alarm(1)) is None and hazard(store, 1)["status"] == "open"
    assert not store.rows("SELECT 1 FROM alarm_acks WHERE site = 'site-0001'")


@pytest.mark.parametrize("verdict, reason, kw, says", [
    ("leak", "x", {}, "verdict"),
    ("false", "  ", {}, "reason: this is needed"),
    ("false", "x" * 501, {}, "at most 500"),
    ("false", "ok\x1b[31m", {}, "control characters"),
    ("false", "ok\u202e", {}, "control characters"),
    ("real", "x", {}, "name who takes it"),
    ("real", "x", {"to": "王师傅", "deadline": "2020-01-01T00:00:00.000Z"}, "already passed"),
    ("real", "x", {"to": "王师傅", "deadline": "2099-01-01T00:00:00.000Z"}, "365 days"),
])  # fmt: skip
def test_a_bad_triage_changes_nothing(store, verdict, reason, kw, says):
    with pytest.raises(ValueError, match=says):
        triage.triage(store, *alarm(0), verdict, reason, "alice", now(), **kw)
    assert triage.get(store, *alarm(0)) is None and hazard(store, 0)["status"] == "open"
    assert not store.rows("SELECT 1 FROM work_orders")


def test_an_alarm_is_triaged_once_even_by_two_at_the_same_moment(store, db_url):
    results: list[object] = []

    def one(name: str) -> None:
        s = open_store(db_url)
        try:
            results.append(triage.triage(s, *alarm(0), "false", "误报", name, now()))
        except ValueError as e:
            results.append(e)
        finally:
            s.close()

    threads = [threading.Thread(target=one, args=(n,)) for n in ("alice", "bob")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    refused = [r for r in results if isinstance(r, ValueError)]
    assert len(refused) == 1 and "was triaged as false by" in str(refused[0])
    assert len(store.rows("SELECT 1 FROM audit WHERE action = 'alarm.triage'")) == 1
    with pytest.raises(ValueError, match="was triaged"):  # a replayed form: the same
        triage.triage(store, *alarm(0), "real", "x", "chen", now(), to="王师傅", deadline=DUE)


def test_no_triage_of_an_alarm_that_does_not_exist_or_went_out_already(store):
    with pytest.raises(ValueError, match="no such alarm"):
        triage.triage(store, "site-0000", "dev-00", "nope", "false", "x", "alice", now())
    h = hazard(store, 3)
    hazards.dispatch(store, h["id"], "王师傅", DUE, "alice", now())  # the old hazard page's way
    with pytest.raises(ValueError, match="triage comes before dispatch"):
        triage.triage(store, *alarm(3), "false", "x", "bob", now())
    assert triage.get(store, *alarm(3)) is None


def test_a_work_order_moves_its_hazard_and_someone_else_re_inspects(store):
    t = triage.triage(store, *alarm(0), "real", "泄漏", "alice", now(), to="王师傅", deadline=DUE)
    wo = t["work_order"]
    with pytest.raises(ValueError, match="photos are taken on site"):
        workorders.add_photos(store, wo, [photos.check(jpeg())], "王师傅", now())
    with pytest.raises(ValueError, match="cannot be report"):
        workorders.report(store, wo, "x", "王师傅", now())
    workorders.arrive(store, wo, "张三", now())
    with pytest.raises(ValueError, match="at least one photo"):
        workorders.report(store, wo, "done", "张三", now())
    assert workorders.add_photos(store, wo, [photos.check(jpeg()), photos.check(png())], "张三",
                                 now()) == 2  # fmt: skip
    assert workorders.add_photos(store, wo, [photos.check(jpeg())], "张三", now()) == 0  # again
    workorders.report(store, wo, "更换软管", "张三", now())
    h = hazard(store, 0)
    assert (h["status"], h["rectified_by"], h["note"]) == ("rectified", "张三", "更换软管")
    # the hazard page and CLI cannot go round the work order
    with pytest.raises(ValueError, match="goes by its work order"):
        hazards.close(store, h["id"], "chen", now())
    for who in ("王师傅", "张 三", "张\u200b三"):  # responsible; inspector, respelled
        with pytest.raises(ValueError, match="took part in it"):
            workorders.reinspect(store, wo, True, None, who, now())
    done = workorders.reinspect(store, wo, True, "复核合格", "bob", now())
    assert done["status"] == "passed" and done["checked_by"] == "bob"
    h = hazard(store, 0)
    assert (h["status"], h["closed_by"], h["check_note"]) == ("closed", "bob", "复核合格")
    trail = [e["action"] for e in audit.entries(store, "workorder:%d" % wo)]
    assert trail == ["workorder.dispatch", "workorder.arrive", "workorder.photo",
                     "workorder.photo", "workorder.report", "workorder.pass"]  # fmt: skip
    with pytest.raises(ValueError, match="cannot be pass"):  # replayed
        workorders.reinspect(store, wo, True, None, "chen", now())


def test_a_failed_re_inspection_sends_a_new_work_order(store):
    t = triage.triage(store, *alarm(0), "real", "泄漏", "alice", now(), to="王师傅", deadline=DUE)
    to_done(store, t["work_order"])
    with pytest.raises(ValueError, match="note: this is needed"):
        workorders.reinspect(store, t["work_order"], False, "", "bob", now(), to="李四")
    with pytest.raises(ValueError, match="name who takes it"):
        workorders.reinspect(store, t["work_order"], False, "阀门仍漏", "bob", now())
    got = workorders.reinspect(store, t["work_order"], False, "阀门仍漏", "bob", now(),
                               to="李四", deadline=DUE)  # fmt: skip
    assert got["status"] == "failed" and got["next"]["responsible"] == "李四"
    assert hazard(store, 0)["status"] == "dispatched"
    assert [o["status"] for o in workorders.of_hazard(store, hazard(store, 0)["id"])] == [
        "failed", "dispatched"]  # fmt: skip


def test_overdue_lists_open_work_orders_past_their_deadline(store):
    t = triage.triage(store, *alarm(0), "real", "泄漏", "alice", now(), to="王师傅", deadline=DUE)
    f = triage.triage(store, *alarm(2), "fault", "故障", "alice", now(), to="李工", deadline=DUE)
    to_done(store, f["work_order"])  # its result is in: not overdue
    later = datetime.datetime.fromisoformat(SOON) + datetime.timedelta(days=1)
    later = later.replace(tzinfo=datetime.UTC)
    got = workorders.overdue(store, later)
    assert got == [{"id": t["work_order"], "site": "site-0000", "severity": "high",
                    "deadline": DUE, "responsible": "王师傅", "closed_at": None}]  # fmt: skip
    assert workorders.overdue(store, datetime.datetime.now(datetime.UTC)) == []


# --- photos at the boundary --------------------------------------------------------------------


def test_a_jpeg_png_or_webp_is_kept_under_its_hash(tmp_path):
    buf = io.BytesIO()
    Image.new("RGB", (10, 10)).save(buf, "WEBP")
    for data, mime in ((jpeg(), "image/jpeg"), (png(), "image/png"), (buf.getvalue(),
                                                                       "image/webp")):  # fmt: skip
        p = photos.check(data)
        assert p.mime == mime and len(p.sha256) == 64
        path = photos.keep(tmp_path, data, p)
        assert path == tmp_path / p.sha256[:2] / p.sha256 and path.read_bytes() == data
    with pytest.raises(ValueError):
        photos.path_of(tmp_path, "../../etc/passwd")


@pytest.mark.parametrize("data, says", [
    (b"", "empty"),
    (b"\xff\xd8\xff" + b"\0" * (photos.MAX_BYTES + 1), "more than 8 MB"),
    (b"GIF89a" + b"\0" * 100, "not a JPEG"),
    (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "not a JPEG"),
    (b"<html><script>alert(1)</script>", "not a JPEG"),
    (None, "markup"),  # a JPEG with a page appended: a polyglot
    ("cut", "damaged or cut short"),
    (b"\xff\xd8\xff\xe0" + b"junk" * 50, "damaged"),
    (b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "damaged"),
])  # fmt: skip
def test_what_is_not_a_photo_is_refused(data, says):
    if data is None:
        data = jpeg() + b"<html><body><script>fetch('/x')</script>"
    elif data == "cut":
        whole = jpeg((400, 300), 95)
        data = whole[: len(whole) // 2]
    with pytest.raises(photos.PhotoError, match=says):
        photos.check(data)


def test_a_decompression_bomb_is_refused():
    buf = io.BytesIO()
    Image.new("1", (10_000, 6_000)).save(buf, "PNG")  # 60 Mpx of one bit: a small file
    with pytest.raises(photos.PhotoError, match="megapixels"):
        photos.check(buf.getvalue())


def test_a_work_order_keeps_at_most_a_dozen_photos(store):
    t = triage.triage(store, *alarm(0), "real", "泄漏", "alice", now(), to="王师傅", deadline=DUE)
    workorders.arrive(store, t["work_order"], "张三", now())
    many = [photos.check(jpeg((8 + i, 8))) for i in range(photos.PER_ORDER + 1)]
    with pytest.raises(ValueError, match="at most 12 photos"):
        workorders.add_photos(store, t["work_order"], many, "张三", now())
    assert photos.of_order(store, t["work_order"]) == []


def test_pixels_that_happen_to_spell_markup_are_a_photo():
    # the markup scan read the compressed pixels too, which are as good as random: "<svg" turns
    # up in about one 6 MB phone photo in a hundred, refused as "holds markup or script". Here
    # a PNG stored uncompressed whose first pixels are the bytes "<svg" and "<html"
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))  # fmt: skip

    rows = (b"\0" + b"<svg<html" + bytes(23)) * 4  # filter 0, then 32 grey pixels a row
    data = (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 32, 4, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(rows, 0)) + chunk(b"IEND", b""))  # fmt: skip
    assert b"<svg" in data
    assert photos.check(data).mime == "image/png"
    # markup outside the pixels still is refused: a text chunk, or a page after the image
    from PIL import PngImagePlugin

    info = PngImagePlugin.PngInfo()
    info.add_text("Comment", "<script>alert(1)</script>")
    buf = io.BytesIO()
    Image.new("L", (8, 8)).save(buf, "PNG", pnginfo=info)
    for bad in (buf.getvalue(), data + b"<html><script>x</script>"):
        with pytest.raises(photos.PhotoError, match="markup"):
            photos.check(bad)


def test_a_jpeg_comment_with_markup_is_still_refused():
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "JPEG", comment=b"<svg onload=alert(1)>")
    with pytest.raises(photos.PhotoError, match="markup"):
        photos.check(buf.getvalue())
    assert photos.check(jpeg()).mime == "image/jpeg"
