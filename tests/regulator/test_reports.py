"""The weekly report per district (regulator/reports/): each figure from a ledger built with a
known week (report_ledger.py) on SQLite and PostgreSQL, the files (PDF drawn and read back,
XLSX opened), the command line, the schedule, and hostile names."""

from __future__ import annotations

import argparse
import datetime
import json
import re
from pathlib import Path

import pytest

from gasguard.regulator.reports import figures, render, schedule
from gasguard.regulator.reports.command import register_report
from gasguard.regulator.reports.week import Week, check_over, last_ended, parse
from gasguard.regulator.store import open_store

from .report_ledger import AS_OF, EMPTY, QUIET, WEEK, A, B, build, node, unit

H = 3600.0


@pytest.fixture
def store(db_url):
    s = open_store(db_url, create=True)
    build(s)
    yield s
    s.close()


def fake_pdf(html: str, out: Path) -> Path:
    """Chromium takes seconds a file: the tests that are not about the PDF write its HTML."""
    out.write_text(html, encoding="utf-8")
    return out


def report(store, district: str) -> figures.Report:
    return figures.compute(store, figures.find_district(store, district), WEEK, AS_OF)


# --- the figures -------------------------------------------------------------------------------


def test_figures_of_a_known_week(store):
    rep = report(store, A)
    f = rep.figures
    assert (f["alarms"].value, rep.levels) == (3, {"high": 2, "low": 1})
    assert (f["response"].value, f["response"].p90) == (360.0, pytest.approx(552.0))
    assert (f["response"].n, f["response"].missing) == (2, 1)
    assert (f["handling"].value, f["handling"].p90) == (129600.0, pytest.approx(164160.0))
    assert (f["handling"].n, f["handling"].missing) == (2, 1)
    assert (f["overdue_rate"].num, f["overdue_rate"].den) == (3, 5)
    assert (f["online_coverage"].num, f["online_coverage"].den) == (2, 5)
    assert (f["installation_coverage"].num, f["installation_coverage"].den) == (3, 5)
    assert f["offline_rate"].value == pytest.approx(36 / 576)
    assert (f["offline_rate"].num, f["offline_rate"].den) == (36 * H, 576 * H)
    assert (f["devices_offline"].num, f["devices_offline"].den) == (2, 4)
    assert [(s["street"], s["units"], s["high"], s["low"]) for s in rep.streets] == [
        ("天平路街道", 3, 0, 0), ("湖南路街道", 2, 2, 1)]  # fmt: skip
    # the week's bounds to the millisecond: 16:00:00.000Z on Sunday is Monday 00:00 in Shanghai
    assert [a["opened_at"].isoformat() for a in rep.alarms] == [
        "2026-11-22T16:00:00+00:00", "2026-11-25T04:00:00+00:00",
        "2026-11-29T15:59:59.999000+00:00"]  # fmt: skip
    by_site = {u["site"]: u for u in rep.units}
    assert by_site["s2"]["offline_s"] == 24 * H  # offline event and silence: counted once
    assert by_site["s5"]["watched_s"] == 72 * H  # from when it was first heard


def test_a_console_ack_before_a_board_clock_ahead_is_no_negative_response(store):
    """A board's time up to 5 minutes ahead is kept (boundary.FUTURE_SLACK_S), the console's
    ack is the server's: acknowledged 'before' the alarm, the week's median response read -90 s
    in a report sent to the district."""
    from .report_ledger import incident

    with store.transaction():
        for n in range(3):
            incident(store, "s2", "d3", "ahead%d" % n, "high", "2026-11-26T10:01:30.000Z")
            store.x("INSERT INTO alarm_acks VALUES (?,?,?,?,?,?)",
                    ("s2", "d3", "ahead%d" % n, "值班员", "2026-11-26T10:00:00.000Z", "console"))
    f = report(store, A).figures
    assert f["response"].value >= 0 and min(a["response_s"] for a in report(store, A).alarms
                                             if a["response_s"] is not None) >= 0  # fmt: skip


def test_scope_never_another_districts_units(store, tmp_path):
    import openpyxl

    a, b = report(store, A), report(store, B)
    assert {u["site"] for u in a.units} == {"s1", "s2", "s3", "s4", "s5"}
    assert {u["site"] for u in b.units} == {"s8", "s9"}
    assert [x["site"] for x in b.alarms] == ["s9"]
    assert "s9" not in {x["site"] for x in a.alarms}
    assert (b.figures["overdue_rate"].num, b.figures["overdue_rate"].den) == (1, 1)
    # d9 silent from its last state (8 h in), d8 offline from before the week until 48 h in
    assert b.figures["offline_rate"].value == pytest.approx((160 + 48) / 336)
    assert (b.figures["online_coverage"].num, b.figures["online_coverage"].den) == (1, 2)
    assert "别区饭店" not in render.html(a)
    book = openpyxl.load_workbook(render.write(a, tmp_path, printer=fake_pdf)[1])
    cells = {str(c) for ws in book for row in ws.iter_rows(values_only=True) for c in row}
    assert {"s1", "s5"} <= cells and not {"s8", "s9", "别区饭店", "d9"} & cells


def test_no_units_and_no_alarms_say_no_data(store):
    empty = report(store, EMPTY)
    assert empty.units == [] and empty.alarms == []
    assert empty.figures["alarms"].value == 0  # a count of none is a count
    for key in ("response", "handling", "overdue_rate", "online_coverage",
                "installation_coverage", "offline_rate", "devices_offline"):  # fmt: skip
        assert empty.figures[key].value is None, key
    lines = {ln["key"] + ln["en"]: ln["text"] for ln in render.summary(empty)}
    assert all(text.startswith("—") for k, text in lines.items() if not k.startswith("alarms"))
    quiet = report(store, QUIET)
    assert quiet.figures["alarms"].value == 0 and quiet.figures["response"].value is None
    assert quiet.figures["online_coverage"].value == 1.0
    assert quiet.figures["overdue_rate"].value is None  # no hazard due: no rate, not 0 %
    assert "—（n = 0" in render.html(quiet) and "None" not in render.html(empty)


def test_week_bounds_and_iso_week_53():
    w = parse("2026-W48")
    assert (w.start.isoformat(), w.end.isoformat()) == (
        "2026-11-23T00:00:00+08:00", "2026-11-30T00:00:00+08:00")  # fmt: skip
    w53 = parse("2026-W53")
    assert w53.start.date() == datetime.date(2026, 12, 28)
    assert w53.end.date() == datetime.date(2027, 1, 4)
    for bad in ("2027-W53", "2025-W53", "2026-W00", "2026-W54", "2026-48", "W48", "20260-W01"):
        with pytest.raises(ValueError):
            parse(bad)
    sunday_night = datetime.datetime(2027, 1, 3, 15, 59, 59, tzinfo=datetime.UTC)  # 23:59:59 +8
    assert last_ended(sunday_night) == Week(2026, 52)
    assert last_ended(sunday_night + datetime.timedelta(seconds=1)) == Week(2026, 53)
    with pytest.raises(ValueError, match="not over yet"):
        check_over(Week(2026, 49), AS_OF)
    check_over(WEEK, AS_OF)
    # Asia/Shanghai keeps no DST: every week of a decade is exactly seven days
    for y in range(2020, 2031):
        for n in range(1, datetime.date(y, 12, 28).isocalendar().week + 1):
            assert Week(y, n).end - Week(y, n).start == datetime.timedelta(days=7)
            assert Week(y, n).start.utcoffset() == datetime.timedelta(hours=8)


def test_week_53_from_the_ledger(store, tmp_path):
    from .report_ledger import incident

    with store.transaction():  # 2027-01-03 23:59:59.999 in Shanghai: the last of 2026-W53
        incident(store, "s1", "d1", "i53", "low", "2027-01-03T15:59:59.999Z")
        incident(store, "s1", "d1", "i1w", "low", "2027-01-03T16:00:00.000Z")  # 2027-W01
    monday = datetime.datetime(2027, 1, 4, 1, 0, tzinfo=datetime.UTC)
    district = figures.find_district(store, A)
    rep = figures.compute(store, district, Week(2026, 53), monday)
    assert [a["opened_at"].day for a in rep.alarms] == [3] and rep.levels["low"] == 1
    keys = schedule.enqueue_due(store, monday, [("email", "x@y")], tmp_path, printer=fake_pdf)
    assert len(keys) == 4 and all('"2026-W53"' in k for k in keys)


def test_median_and_p90():
    assert figures.median_p90([]) == (None, None)
    assert figures.median_p90([5.0]) == (5.0, 5.0)
    assert figures.median_p90([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, pytest.approx(61.6))


# --- the files ---------------------------------------------------------------------------------


def test_pdf_prints_both_languages(tmp_path):
    import pypdfium2 as pdfium
    s = open_store(str(tmp_path / "r.db"), create=True)
    build(s)
    rep = report(s, A)
    s.close()
    pdf, xlsx = render.write(rep, tmp_path)
    assert pdf.name == "燃气周报_上海市_徐汇区_2026-W48.pdf" and xlsx.suffix == ".xlsx"
    doc = pdfium.PdfDocument(pdf)
    page = doc[0]
    text = page.get_textpage().get_text_range()
    for words in ("燃气报警周报", "Weekly gas alarm report", "徐汇区", "响应时间", "Response time",
                  "湖南路街道", "Online coverage", "6 min 00 s", "40.0 % (2/5)"):  # fmt: skip
        assert words in text, words
    assert "None" not in text
    image = page.render(scale=1).to_pil().convert("L")
    dark = sum(image.histogram()[:128])
    assert dark > 0.005 * image.width * image.height  # text drawn, not a blank page
    assert all("\ufffd" not in doc[i].get_textpage().get_text_range() for i in range(len(doc)))


def test_xlsx_holds_the_figures(store, tmp_path):
    import openpyxl

    _, xlsx = render.write(report(store, A), tmp_path, printer=fake_pdf)
    wb = openpyxl.load_workbook(xlsx)
    assert wb.sheetnames == ["概要 Summary", "街道 Streets", "报警 Alarms", "单位 Units"]
    rows = {r[1]: r for r in wb["概要 Summary"].iter_rows(min_row=7, values_only=True)}
    assert rows["Alarms"][3] == 3
    assert rows["Response time, median"][3] == 6.0  # minutes
    assert rows["Overdue rate"][3:6] == (0.6, 3, 5)
    assert rows["Online coverage"][2] == "40.0 % (2/5)"
    assert rows["Offline (incl. unpowered) time"][3:6] == (pytest.approx(0.0625), 36, 576)
    assert wb["概要 Summary"]["D12"].number_format == "0.0%"  # the overdue rate, a ratio
    assert wb["概要 Summary"]["D8"].number_format != "0.0%"  # a time, in minutes
    alarms = list(wb["报警 Alarms"].iter_rows(min_row=2, values_only=True))
    assert [(a[0], a[7]) for a in alarms] == [("s1", 2.0), ("s1", 10.0), ("s2", "—")]
    empty = render.write(report(store, EMPTY), tmp_path, printer=fake_pdf)[1]
    summary = list(openpyxl.load_workbook(empty)["概要 Summary"].iter_rows(min_row=7,
                                                                           values_only=True))
    assert {r[3] for r in summary if r[1] != "Alarms"} == {"—"}


def test_files_never_overwritten_silently(store, tmp_path):
    tmp_path = tmp_path / "out"
    tmp_path.mkdir()
    rep = report(store, A)
    first = render.write(rep, tmp_path, printer=fake_pdf)
    before = first[1].read_bytes()
    with pytest.raises(render.ReportExists):
        render.write(rep, tmp_path, printer=fake_pdf)
    assert first[1].read_bytes() == before
    again = render.write(rep, tmp_path, replace=True, printer=fake_pdf)
    assert again == first
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(p.name for p in first)


def test_hostile_names(store, tmp_path):
    import openpyxl

    evil = '=HYPERLINK("x")<img src=x onerror=alert(1)>..\\..\\x'
    with store.transaction():
        node(store, "上海市/" + evil, "district")
        unit(store, "h1", "上海市/%s/+街道/@网格" % evil, ("dh",), name="=1+2")
    district = figures.find_district(store, evil)
    rep = figures.compute(store, district, WEEK, AS_OF)
    assert [u["name"] for u in rep.units] == ["=1+2"]
    page = render.html(rep)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    files = render.write(rep, tmp_path, printer=fake_pdf)
    for p in files:
        assert p.parent == tmp_path
        assert "/" not in p.name and "\\" not in p.name and ".." not in p.name
        assert not p.name.startswith(("=", "-", "."))
    named = r"燃气周报_上海市_HYPERLINK_[\w-]+_2026-W48_[0-9a-f]{8}\.pdf"
    assert re.fullmatch(named, files[0].name)
    wb = openpyxl.load_workbook(files[1])
    cell = wb["概要 Summary"]["B2"]
    assert cell.value == evil and cell.data_type == "s" and cell.quotePrefix
    units = wb["单位 Units"]
    assert (units["B2"].value, units["B2"].data_type, units["B2"].quotePrefix) == ("=1+2", "s",
                                                                                  True)
    assert units["C2"].value == "+街道" and units["C2"].quotePrefix


# --- the command -------------------------------------------------------------------------------


def run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="gasguard")
    rs = parser.add_subparsers(dest="command").add_parser("regulator").add_subparsers(
        dest="action", required=True)  # fmt: skip
    register_report(rs)
    args = parser.parse_args(["regulator", *argv])
    return args.run(args)


def test_command(db_url, tmp_path, monkeypatch, capsys):
    from gasguard.regulator import audit
    from gasguard.tools import pdf

    monkeypatch.setattr(pdf, "html_to_pdf", fake_pdf)
    s = open_store(db_url, create=True)
    build(s)
    s.close()
    out = tmp_path / "out"
    out.mkdir()
    assert run("report", "--db", db_url, "--district", "徐汇区", "--week", "2026-W48",
               "--out", str(out), "--json") == 0  # fmt: skip
    made = json.loads(capsys.readouterr().out)
    assert made["district"] == A and made["figures"]["Alarms"] == 3
    assert run("report", "--db", db_url, "--all", "--week", "2026-W48", "--out", str(out)) == 2
    assert "exists already" in capsys.readouterr().err
    assert run("report", "--db", db_url, "--all", "--week", "2026-W48", "--out", str(out),
               "--replace") == 0  # fmt: skip
    assert len(list(out.iterdir())) == 2 * 4  # 徐汇区, 静安区, 长宁区, 空区
    s = open_store(db_url)
    logged = [e for e in audit.entries(s) if e["action"] == "report.generate"]
    s.close()
    assert len(logged) == 5 and logged[0]["target"] == "report:%s/2026-W48" % A
    for bad in (["--district", "不存在区", "--week", "2026-W48"],
                ["--district", A, "--week", "2027-W53"],
                ["--district", A, "--week", "2100-W01"]):  # fmt: skip
        assert run("report", "--db", db_url, *bad, "--out", str(out), "--replace") == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "Traceback" not in err
    assert run("report", "--db", db_url, "--district", A, "--out", str(tmp_path / "no")) == 2
    capsys.readouterr()
    assert run("report", "--db", db_url, "--district", "<b>", "--out", str(out), "--json") == 2
    doc = json.loads(capsys.readouterr().out)
    assert doc["ok"] is False and doc["exit_code"] == 2 and "<b>" in doc["error"]

    def no_chromium(html: str, out: Path) -> Path:
        raise pdf.PdfError("no Chromium to print the PDF with")

    monkeypatch.setattr(pdf, "html_to_pdf", no_chromium)
    empty = tmp_path / "empty"
    empty.mkdir()
    assert run("report", "--db", db_url, "--district", A, "--week", "2026-W48",
               "--out", str(empty)) == 1  # fmt: skip
    assert list(empty.iterdir()) == []  # nothing half-made left behind
    assert run("report", "--db", "postgresql://127.0.0.1:1/none", "--district", A,
               "--week", "2026-W48", "--out", str(out)) == 3  # fmt: skip


# --- the schedule ------------------------------------------------------------------------------


def test_schedule_enqueues_once_per_recipient(db_url, tmp_path):
    s = open_store(db_url, create=True)
    build(s)
    printed: list[str] = []

    def printer(html: str, out: Path) -> Path:
        printed.append(html)
        return fake_pdf(html, out)

    now = datetime.datetime(2026, 11, 30, 1, 0, tzinfo=datetime.UTC)  # Monday 09:00 +08
    to = [("email", "a@district.example"), ("wecom", "ops:room")]
    first = schedule.enqueue_due(s, now, to, tmp_path, printer=printer)
    assert len(first) == 4 * 2 and len(printed) == 4
    assert schedule.enqueue_due(s, now, to, tmp_path, printer=printer) == []
    later = now + datetime.timedelta(days=3)  # still the same week due: nothing new
    assert schedule.enqueue_due(s, later, to + to, tmp_path, printer=printer) == []
    rows = s.rows("SELECT key, channel, recipient, kind, subject, site, body FROM notify_outbox "
                  "ORDER BY key")  # fmt: skip
    assert len(rows) == 8 and {r["kind"] for r in rows} == {"report"}
    mine = [r for r in rows if r["subject"] == "report:%s/2026-W48" % A]
    assert {(r["channel"], r["recipient"]) for r in mine} == set(to)
    body = json.loads(mine[0]["body"])
    assert set(body) == {"title", "text", "attachments", "sha256", "link"}
    assert mine[0]["site"] is None and body["link"] is None  # no console_url given
    assert "徐汇区" in body["title"] and "Alarms" in body["text"]
    assert all(Path(p).is_file() and Path(p).parent == tmp_path for p in body["attachments"])
    assert body["sha256"] == {Path(p).name: render.sha256(Path(p)) for p in body["attachments"]}
    kept = s.rows("SELECT * FROM weekly_reports WHERE district = ?", (A,))
    assert [(r["week"], r["pdf"], r["xlsx"]) for r in kept] == [("2026-W48", *body["attachments"])]
    # a recipient added later gets the files already made, nothing printed again
    more = schedule.enqueue_due(s, now, to + [("sms", "+8613800000000")], tmp_path,
                                printer=printer)  # fmt: skip
    assert len(more) == 4 and len(printed) == 4
    generated = s.x("SELECT count(*) FROM audit WHERE action = 'report.generate'").fetchone()[0]
    assert generated == 4
    # the next week is due the next Monday
    nxt = schedule.enqueue_due(s, now + datetime.timedelta(days=7), to[:1], tmp_path,
                               printer=printer)  # fmt: skip
    assert len(nxt) == 4 and all("2026-W49" in k for k in nxt)
    s.close()


def test_schedule_keys_cannot_collide():
    assert schedule.key("a:b", "2026-W48", "c", "d") != schedule.key("a", "b:2026-W48", "c", "d")
    assert schedule.key("x", "2026-W48", "e:f", "g") != schedule.key("x", "2026-W48", "e", "f:g")
