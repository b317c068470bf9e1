"""A weekly report by e-mail (regulator/notify/attach.py, channels/smtp.py), hostile first: a
file changed on disk after the report was made, a file missing, a pair over the size cap, a
path that is not a report's; then the whole way, scheduled report → outbox → deliverer →
aiosmtpd, both files attached and equal to the ones made, on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime
import hashlib
import json
import urllib.parse
from pathlib import Path

import pytest

from gasguard.regulator.notify import config, outbox
from gasguard.regulator.notify.channels import Outgoing
from gasguard.regulator.notify.channels.smtp import Smtp as SmtpAdapter
from gasguard.regulator.reports import schedule
from gasguard.regulator.store import open_store

from .notify_fixture import Running, Smtp, wait
from .report_ledger import A, build
from .test_reports import fake_pdf

BASE = "https://console.example.gov.cn"
NOW = datetime.datetime(2026, 11, 30, 1, 0, tzinfo=datetime.UTC)  # 2026-W48 just ended
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
PDF_NAME = "燃气周报_上海市_徐汇区_2026-W48.pdf"


def cfg(port: int, cap_mb: float | None = None) -> config.Config:
    cap = "" if cap_mb is None else "attach_max_mb = %s\n" % cap_mb
    return config.parse(f"""base_url = "{BASE}"
[delivery]
backoff_s = 0.2
timeout_s = 5
[channels.mail]
type = "smtp"
host = "127.0.0.1"
port = {port}
security = "none"
sender = "gasguard@example.gov.cn"
{cap}""")


def report_body(tmp_path: Path) -> dict:
    """A report's outbox body as the schedule makes it, files in tmp_path (a small SQLite
    ledger: what the body says is the schedule's business, tested on both backends below)."""
    s = open_store(str(tmp_path / "r.db"), create=True)
    build(s)
    schedule.enqueue_due(s, NOW, [("mail", "d@x")], tmp_path / "out", console_url=BASE,
                         printer=fake_pdf)  # fmt: skip
    row = s.rows("SELECT body FROM notify_outbox WHERE subject = ?", ("report:%s/2026-W48" % A,))
    s.close()
    return json.loads(row[0]["body"])


def send(port: int, body: dict, cap_mb: float | None = None) -> None:
    adapter = SmtpAdapter(cfg(port, cap_mb).channels["mail"])
    msg = Outgoing("k", "m-1", "mail", "district@example.gov.cn", "report", None, body, 1)
    asyncio.run(adapter.send(msg))


def attachments(mail) -> dict[str, tuple[str, bytes]]:
    return {p.get_filename(): (p.get_content_type(), p.get_content())
            for p in mail.iter_attachments()}  # fmt: skip


def test_a_file_changed_after_the_report_was_made_is_not_attached(tmp_path):
    body = report_body(tmp_path)
    pdf, xlsx = (Path(p) for p in body["attachments"])
    pdf.write_bytes(pdf.read_bytes().replace("徐汇区".encode(), "静安区".encode()))
    with Smtp() as (box, port):
        send(port, body)
    ((_, mail),) = box.got
    got = attachments(mail)
    assert list(got) == [xlsx.name] and got[xlsx.name][1] == xlsx.read_bytes()
    text = mail.get_body(("plain",)).get_content()
    assert "SHA-256" in text and PDF_NAME in text and "未附上" in text
    assert body["link"] in text and str(tmp_path) not in text  # no path on the regulator's disk


def test_a_missing_file_still_sends_the_message_with_the_link(tmp_path):
    body = report_body(tmp_path)
    for p in body["attachments"]:
        Path(p).unlink()
    with Smtp() as (box, port):
        send(port, body)  # once, no exception: nothing to retry
    ((_, mail),) = box.got
    assert attachments(mail) == {}
    text = mail.get_body(("plain",)).get_content()
    assert text.count("文件缺失") == 2 and "File missing" in text and body["link"] in text


def test_a_pair_over_the_cap_goes_as_the_link_only(tmp_path):
    body = report_body(tmp_path)
    total = sum(Path(p).stat().st_size for p in body["attachments"])
    with Smtp() as (box, port):
        send(port, body, cap_mb=(total - 1) / (1 << 20))
        send(port, body, cap_mb=0)  # 0: never attached
    for _, mail in box.got:
        assert attachments(mail) == {}
        text = mail.get_body(("plain",)).get_content()
        assert "上限" in text and "over the" in text and body["link"] in text


def test_only_the_recorded_files_of_a_report_go(tmp_path):
    """A body naming another file (a forged row), or one without the recorded digests (made
    before they were recorded): nothing goes unverified."""
    body = report_body(tmp_path)
    secret = tmp_path / "notify.toml"
    secret.write_text("password = 'x'")
    forged = dict(body, attachments=[str(secret), *body["attachments"]])
    with Smtp() as (box, port):
        send(port, forged)
        send(port, {k: v for k, v in body.items() if k != "sha256"})
    first, second = (m for _, m in box.got)
    assert set(attachments(first)) == {Path(p).name for p in body["attachments"]}
    assert "not attached: notify.toml" in first.get_body(("plain",)).get_content()
    assert "password" not in first.as_string()
    assert attachments(second) == {}
    assert second.get_body(("plain",)).get_content().count("(SHA-256), not attached") == 2


def test_the_scheduled_report_arrives_with_both_files(db_url, tmp_path):
    s = open_store(db_url, create=True)
    build(s)
    out = tmp_path / "reports"
    keys = schedule.enqueue_due(s, NOW, [("mail", "xuhui@district.example")], out,
                                console_url=BASE, printer=fake_pdf)  # fmt: skip
    assert len(keys) == 4
    with Smtp() as (box, port), Running(db_url, cfg(port)):
        wait(lambda: len(box.got) == 4)
    assert outbox.counts(s) == {"pending": 0, "sent": 4, "failed": 0, "untold": 0}
    row = s.rows("SELECT * FROM weekly_reports WHERE district = ?", (A,))[0]
    s.close()
    (mail,) = [m for _, m in box.got if "徐汇区" in m["Subject"]]
    got = attachments(mail)
    pdf, xlsx = Path(row["pdf"]), Path(row["xlsx"])
    assert pdf.name == PDF_NAME and set(got) == {pdf.name, xlsx.name}
    assert got[pdf.name] == ("application/pdf", pdf.read_bytes())
    assert got[xlsx.name] == (XLSX, xlsx.read_bytes())
    assert hashlib.sha256(got[xlsx.name][1]).hexdigest() == row["xlsx_sha256"]
    raw = mail.as_string()
    assert "filename*" in raw and "utf-8''" in raw.lower()  # RFC 2231, not a raw UTF-8 header
    text = mail.get_body(("plain",)).get_content()
    link = BASE + "/reports/" + urllib.parse.quote(A, safe="") + "/2026-W48"
    assert link in text and "Attached" in text and str(out) not in text


@pytest.mark.parametrize("cap", [-1, 51, "10", True])
def test_the_cap_is_checked_with_the_config(cap):
    bad = 'base_url = "%s"\n[channels.mail]\ntype = "smtp"\nhost = "127.0.0.1"\nsecurity = ' \
        '"none"\nsender = "a@b"\nattach_max_mb = %s\n' % (BASE, json.dumps(cap))  # fmt: skip
    with pytest.raises(config.ConfigError, match="attach_max_mb"):
        config.parse(bad)
